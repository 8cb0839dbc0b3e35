//! The approver against the dev cluster over the real kube client: SPIFFE requests made
//! with pod tokens, CertificateRequestPolicies with RBAC `use` bindings and the seed's
//! sample, the start-up race, and several replicas.

mod harness;
mod policies;
mod replicas;
mod spiffe;
