//! Pure approval policy for SPIFFE CertificateRequests: a plain request in, Approve or Deny
//! out.
//!
//! [`SpiffePolicy::evaluate`] takes a [`SpiffeRequest`] (borrowed strings and bytes, no
//! Kubernetes types) and, when the request names a pod ([`SpiffePolicy::pod_to_look_up`]),
//! the [`PodFacts`] the caller read for it, and returns a [`Decision`]. A [`Denial`] names
//! the [`Field`] to fix and says what was expected and what was presented, in words fit for
//! a `Denied` condition.
//! Nothing here performs I/O, reads the clock or logs; the approver does that around it.
//!
//! [`IssuerName`] (issuer references with cert-manager's defaults) and [`AllowedKey`] (key
//! allow-lists) are shared with the CertificateRequestPolicy engine. [`duration`] parses and
//! formats Go duration strings for every crate that meets them.

mod config;
mod decision;
pub mod duration;
mod evaluate;
mod issuer;
mod keys;
mod pod;
mod request;

pub use config::{ConfigError, DEFAULT_SPIFFE_ISSUER, DurationBounds, SpiffePolicy};
pub use decision::{Decision, Denial, Field};
pub use issuer::{DEFAULT_ISSUER_GROUP, DEFAULT_ISSUER_KIND, IssuerName};
pub use keys::{AllowedKey, AllowedKeyError, MAX_RSA_BITS, MIN_RSA_BITS};
pub use pod::{
    EXTRA_NODE_NAME, EXTRA_POD_NAME, EXTRA_POD_UID, POD_NAME_ANNOTATION, POD_UID_ANNOTATION,
    PodFacts, PodQuery, RequesterMode,
};
pub use request::{IDENTITY_ANNOTATION, REQUIRED_USAGES, SpiffeRequest};
