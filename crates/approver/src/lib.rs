//! The approver: decides every CertificateRequest it is responsible for and records the
//! decision as an `Approved` or `Denied` condition, once.
//!
//! SPIFFE requests (the identity annotation, the SPIFFE issuer, or a URI of our trust
//! domain in the CSR) are judged by the pure rules of `nico-policy`, with the pod the
//! requester's token is bound to read from the API server. Other requests follow the
//! compatibility switch: CertificateRequestPolicies (`nico-request-policy`, with RBAC `use`
//! checked by SubjectAccessReview), left alone, or approved when they carry no SPIFFE ID.
//!
//! Every verdict is written with a `PUT /status` carrying the resourceVersion judged, so it
//! is written at most once and never over a newer object, whatever the number of replicas;
//! with leader election (a Lease), one replica acts at a time.

mod cluster;
mod config;
mod controller;
mod judge;
mod metrics;
mod policies;
mod route;

pub use config::{Config, ConfigError, IssuerConfig, NonSpiffeMode, RequesterKind, Settings};
pub use controller::{RunError, run};
