//! Strict SPIFFE ID parsing and ID templates (no Kubernetes, gRPC or HTTP dependencies).
//!
//! - [`SpiffeId`] and [`TrustDomain`] are valid by construction and keep the exact bytes
//!   they were parsed from: nothing is decoded, folded or normalised, and anything that would
//!   need it is refused with a [`SpiffeIdError`] that says why.
//! - [`IdTemplate`] maps a namespace and service account to an ID ([`IdTemplate::render`])
//!   and back ([`IdTemplate::match_id`]).

mod error;
mod id;
mod template;
mod trust_domain;

pub use error::SpiffeIdError;
pub use id::SpiffeId;
pub use template::{
    CERT_MANAGER_TEMPLATE, DEFAULT_TEMPLATE, IdTemplate, Placeholder, RenderError, TemplateError,
    WorkloadRef,
};
pub use trust_domain::TrustDomain;

/// The trust domain nico-identity uses when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "nico.local";

/// The only accepted scheme prefix, lower case with both slashes.
pub const SCHEME: &str = "spiffe://";

/// The longest accepted SPIFFE ID, in bytes.
pub const MAX_ID_LEN: usize = 2048;

/// The longest accepted trust domain, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_trust_domain_parses() {
        assert_eq!(
            TrustDomain::parse(DEFAULT_TRUST_DOMAIN).unwrap().as_str(),
            "nico.local"
        );
    }
}
