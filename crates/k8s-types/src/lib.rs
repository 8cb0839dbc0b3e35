//! Kubernetes types shared by the nico-identity roles.
//!
//! The cert-manager `CertificateRequest` is typed here by hand rather than generated: real
//! clusters hold conditions without `lastTransitionTime` and other fields generators mark as
//! required, and one undecodable object must never break a watch. Every field that cert-manager
//! does not strictly require is therefore optional.
//!
//! The approver-policy `CertificateRequestPolicy` keeps its `spec` as JSON for the same
//! reason: `nico-request-policy` reads it, and a spec it cannot read marks that one policy
//! not ready instead of making the list of policies unreadable.

mod certificate_request;
mod certificate_request_policy;
mod conditions;

pub use certificate_request::{
    CertificateRequest, CertificateRequestSpec, CertificateRequestStatus, IDENTITY_ANNOTATION,
    IssuerRef, POD_NAME_ANNOTATION, POD_UID_ANNOTATION, SPIFFE_USAGES,
};
pub use certificate_request_policy::{
    CertificateRequestPolicy, CertificateRequestPolicyStatus, POLICY_GROUP, POLICY_READY,
    POLICY_RESOURCE, POLICY_USE_VERB, POLICY_VERSION,
};
pub use conditions::{Condition, ConditionStatus, ConditionType, RequestState};
