//! Which rules judge a request: the SPIFFE rules, or whatever the non-SPIFFE switch says.

use nico_csr::{CsrError, ParsedCsr, parse_csr_pem};
use nico_k8s_types::{CertificateRequest, ConditionType, IDENTITY_ANNOTATION};
use nico_policy::{IssuerName, SpiffePolicy};

/// The rules a request falls under.
#[derive(Debug)]
pub(crate) enum Route {
    /// The SPIFFE rules of `nico-policy` (which read the CSR themselves).
    Spiffe,
    /// Not a SPIFFE request; the CSR as parsed to find that out.
    Other(Box<Result<ParsedCsr, CsrError>>),
}

/// The request's issuer with cert-manager's defaults.
pub(crate) fn issuer_of(cr: &CertificateRequest) -> IssuerName {
    let issuer = &cr.spec.issuer_ref;
    IssuerName::new(
        issuer.name.clone(),
        issuer.kind.as_deref(),
        issuer.group.as_deref(),
    )
}

/// Whether an approver already decided: either condition, whatever its status, means the
/// verdict is written and must never change.
pub(crate) fn decided(cr: &CertificateRequest) -> bool {
    cr.condition(ConditionType::Approved).is_some() || cr.condition(ConditionType::Denied).is_some()
}

/// A request is a SPIFFE request when it carries the identity annotation, names the SPIFFE
/// issuer, or its CSR asks for any URI in our trust domain (so an ID of ours cannot be
/// obtained from another issuer by leaving the annotation out).
pub(crate) fn route(cr: &CertificateRequest, policy: &SpiffePolicy) -> Route {
    let annotated = cr
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(IDENTITY_ANNOTATION));
    if annotated || issuer_of(cr) == *policy.issuer() {
        return Route::Spiffe;
    }
    // An unreadable CSR is left to the other rules, which refuse it there.
    let csr = parse_csr_pem(&cr.spec.request);
    let ours = csr.as_ref().is_ok_and(|csr| {
        csr.uri_sans()
            .any(|uri| in_trust_domain(uri, policy.trust_domain().as_str()))
    });
    if ours {
        Route::Spiffe
    } else {
        Route::Other(Box::new(csr))
    }
}

/// Whether `uri` is a SPIFFE URI (scheme compared without regard to case, as URI schemes
/// are) of the trust domain `td` (compared without regard to case, as host names are).
pub(crate) fn in_trust_domain(uri: &str, td: &str) -> bool {
    let Some(rest) = strip_spiffe_scheme(uri) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.eq_ignore_ascii_case(td)
}

/// `uri` after `spiffe://`, if it is a SPIFFE URI in any spelling of the scheme.
pub(crate) fn strip_spiffe_scheme(uri: &str) -> Option<&str> {
    let scheme = uri.get(..9)?;
    scheme.eq_ignore_ascii_case("spiffe://").then(|| &uri[9..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_membership_ignores_case_of_scheme_and_host() {
        let rows = [
            ("spiffe://nico.local/demo/sa/web", true),
            ("SPIFFE://nico.local/demo/sa/web", true),
            ("spiffe://NICO.local/x", true),
            ("spiffe://nico.local", true),
            ("spiffe://nico.local?x", true),
            ("spiffe://nico.local.evil/x", false),
            ("spiffe://other.test/x", false),
            ("https://nico.local/x", false),
            ("spiffe:", false),
            ("", false),
        ];
        for (uri, expected) in rows {
            assert_eq!(in_trust_domain(uri, "nico.local"), expected, "{uri}");
        }
        assert_eq!(strip_spiffe_scheme("Spiffe://x/y"), Some("x/y"));
        assert_eq!(strip_spiffe_scheme("spiffé://x"), None);
    }
}
