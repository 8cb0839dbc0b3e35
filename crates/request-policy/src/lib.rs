//! CertificateRequestPolicy (`policy.cert-manager.io/v1alpha1`) as pure code: load a
//! policy, decide which requests it is for, judge them, and combine the answers.
//!
//! - [`PolicySpec`] is a policy's `spec` as written; [`RequestPolicy::load`] checks it
//!   (selector, durations, key constraints, usages) and compiles, costs and trial-evaluates
//!   every CEL rule, reporting each problem as a [`LoadError`] naming the policy field.
//! - [`RequestPolicy::selects`] matches the issuer (after cert-manager's defaults, with `*`
//!   patterns) and the namespace (names with `*`, or labels).
//! - [`RequestPolicy::evaluate`] judges a [`PolicyRequest`] whose SANs and subject come from
//!   the parsed CSR, returning every [`Violation`] with the request field to fix.
//! - [`Verdict::combine`] turns the results of the applicable policies into approve, deny
//!   (with each policy's reasons) or "no policy applies".
//!
//! Whether a requester may use a policy (RBAC `use`) is asked of the API server by the
//! caller; nothing here performs I/O, reads the clock or logs.

mod cel;
mod evaluate;
mod policy;
mod request;
mod selector;
mod spec;
mod verdict;
mod wildcard;

pub use cel::{DEFAULT_COST_LIMIT, MAX_LIST_ITEMS, MAX_RULE_LEN};
pub use policy::{Limits, LoadError, LoadErrors, RequestPolicy};
pub use request::{ClusterFacts, PolicyRequest, Violation};
pub use spec::{
    AllowedSpec, AllowedString, AllowedStrings, AllowedSubject, ConstraintsSpec,
    IssuerRefSelectorSpec, NamespaceSelectorSpec, PolicySpec, PrivateKeySpec, SelectorSpec,
    SpecError, ValidationRule,
};
pub use verdict::{MAX_MESSAGE_LEN, Verdict};
