//! Kubernetes types shared by the nico-identity roles.
//!
//! The cert-manager `CertificateRequest` is typed here by hand rather than generated: real
//! clusters hold conditions without `lastTransitionTime` and other fields generators mark as
//! required, and one undecodable object must never break a watch. Every field that cert-manager
//! does not strictly require is therefore optional.

mod certificate_request;
mod conditions;

pub use certificate_request::{
    CertificateRequest, CertificateRequestSpec, CertificateRequestStatus, IDENTITY_ANNOTATION,
    IssuerRef, POD_NAME_ANNOTATION, POD_UID_ANNOTATION, SPIFFE_USAGES,
};
pub use conditions::{Condition, ConditionStatus, ConditionType, RequestState};
