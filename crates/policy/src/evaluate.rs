//! The checks, in the order a requester should fix things: the CSR must be readable, the
//! duration sane, the CSR an SVID request, the spec consistent with it, and the identity
//! the one the requester is entitled to.

use std::collections::BTreeSet;

use nico_csr::{ExtendedKeyUsage, KeyUsage, ParsedCsr, San, parse_csr_pem};
use nico_spiffe_id::SpiffeId;

use crate::duration::{format_go_duration, parse_go_duration};
use crate::{Decision, Denial, Field, REQUIRED_USAGES, SpiffePolicy, SpiffeRequest};

/// Longest piece of requester-supplied text repeated in a message.
const SHOWN: usize = 256;

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

const ALLOWED_KEY_USAGES: [KeyUsage; 2] = [KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment];

impl SpiffePolicy {
    /// Judges one request. Checks run in a fixed order and the first failure decides:
    ///
    /// 1. `spec.request` is a PEM CSR whose signature verifies;
    /// 2. `spec.duration` is present, parses and lies within the bounds;
    /// 3. the CSR has an empty subject, only URI SANs, only SAN/KU/EKU extensions, key
    ///    usages within digitalSignature and keyEncipherment, extended key usages within
    ///    serverAuth and clientAuth, a critical SAN extension and an allowed key algorithm;
    /// 4. `spec.isCA` is false and `spec.usages` is exactly the four SVID usages;
    /// 5. `spec.username` is a service account of the request's namespace, the CSR holds
    ///    exactly one URI SAN, a SPIFFE ID of our trust domain equal to the ID rendered
    ///    from the template for that account, and the identity annotation, if present,
    ///    equals it.
    pub fn evaluate(&self, request: &SpiffeRequest<'_>) -> Decision {
        match self.check(request) {
            Ok(()) => Decision::Approve,
            Err(denial) => Decision::Deny(denial),
        }
    }

    fn check(&self, request: &SpiffeRequest<'_>) -> Result<(), Denial> {
        let csr = parse_csr_pem(request.request)
            .map_err(|err| Denial::new(Field::SpecRequest, err.to_string()))?;
        self.check_duration(request.duration)?;
        self.check_csr(&csr)?;
        check_spec(request)?;
        self.check_identity(request, &csr)
    }

    fn check_duration(&self, duration: Option<&str>) -> Result<(), Denial> {
        let (min, max) = (self.durations.min(), self.durations.max());
        let range = || {
            format!(
                "between {} and {}",
                format_go_duration(min),
                format_go_duration(max)
            )
        };
        let Some(text) = duration else {
            let reason = format!("no duration requested: expected a duration {}", range());
            return Err(Denial::new(Field::SpecDuration, reason));
        };
        let requested = parse_go_duration(text)
            .map_err(|err| Denial::new(Field::SpecDuration, err.to_string()))?;
        let presented = format_go_duration(requested);
        if requested < min {
            let reason = format!(
                "requested duration {presented} is shorter than the minimum {}: expected a \
                 duration {}",
                format_go_duration(min),
                range()
            );
            return Err(Denial::new(Field::SpecDuration, reason));
        }
        if requested > max {
            let reason = format!(
                "requested duration {presented} is longer than the maximum {}: expected a \
                 duration {}",
                format_go_duration(max),
                range()
            );
            return Err(Denial::new(Field::SpecDuration, reason));
        }
        Ok(())
    }

    fn check_csr(&self, csr: &ParsedCsr) -> Result<(), Denial> {
        if !csr.subject().is_empty() {
            let reason = format!(
                "subject must be empty, presented {}",
                clip(&csr.subject().to_string())
            );
            return Err(Denial::new(Field::CsrSubject, reason));
        }

        let not_uri: Vec<String> = csr
            .sans()
            .iter()
            .filter(|san| !matches!(san, San::Uri(_)))
            .map(San::to_string)
            .collect();
        if !not_uri.is_empty() {
            let reason = format!(
                "only URI SANs are allowed, presented {}",
                clip(&not_uri.join(", "))
            );
            return Err(Denial::new(Field::CsrSubjectAltName, reason));
        }

        let mut extra: Vec<String> = Vec::new();
        if let Some(bc) = csr.basic_constraints() {
            extra.push(format!(
                "basicConstraints (CA:{})",
                if bc.is_ca { "TRUE" } else { "FALSE" }
            ));
        }
        extra.extend(csr.other_extensions().iter().map(ToString::to_string));
        if !extra.is_empty() {
            let reason = format!(
                "only subjectAltName, keyUsage and extendedKeyUsage extensions are allowed, \
                 presented {}",
                clip(&extra.join(", "))
            );
            return Err(Denial::new(Field::CsrExtensions, reason));
        }

        let bad_ku: Vec<String> = csr
            .key_usages()
            .iter()
            .filter(|usage| !ALLOWED_KEY_USAGES.contains(usage))
            .map(ToString::to_string)
            .collect();
        if !bad_ku.is_empty() {
            let reason = format!(
                "{} not allowed: expected only digitalSignature and keyEncipherment",
                is_or_are(&bad_ku)
            );
            return Err(Denial::new(Field::CsrKeyUsage, reason));
        }

        let bad_eku: Vec<String> = csr
            .extended_key_usages()
            .iter()
            .filter(|usage| {
                !matches!(
                    usage,
                    ExtendedKeyUsage::ServerAuth | ExtendedKeyUsage::ClientAuth
                )
            })
            .map(ToString::to_string)
            .collect();
        if !bad_eku.is_empty() {
            let reason = format!(
                "{} not allowed: expected only serverAuth and clientAuth",
                is_or_are(&bad_eku)
            );
            return Err(Denial::new(Field::CsrExtendedKeyUsage, reason));
        }

        if csr.san_critical() == Some(false) {
            let reason = "the subjectAltName extension is not marked critical: it must be, \
                          because the subject is empty";
            return Err(Denial::new(Field::CsrSubjectAltName, reason));
        }

        let algorithm = csr.public_key().algorithm();
        let allowed = algorithm
            .key_algorithm()
            .is_some_and(|alg| self.key_algorithms.contains(&alg));
        if !allowed {
            let expected: Vec<&str> = self.key_algorithms.iter().map(|alg| alg.as_str()).collect();
            let reason = format!(
                "key algorithm {algorithm} is not allowed: expected {}",
                expected.join(" or ")
            );
            return Err(Denial::new(Field::CsrPublicKey, reason));
        }
        Ok(())
    }

    fn check_identity(&self, request: &SpiffeRequest<'_>, csr: &ParsedCsr) -> Result<(), Denial> {
        let username = request.username;
        let Some((namespace, account)) = service_account(username) else {
            let reason = format!(
                "requester {:?} is not a service account: expected \
                 system:serviceaccount:<namespace>:<name>",
                clip(username)
            );
            return Err(Denial::new(Field::SpecUsername, reason));
        };
        if request.namespace != namespace {
            let reason = format!(
                "request is in namespace {:?} but requester {} belongs to namespace {:?}",
                clip(request.namespace),
                clip(username),
                clip(namespace)
            );
            return Err(Denial::new(Field::MetadataNamespace, reason));
        }

        let uris: Vec<&str> = csr.uri_sans().collect();
        let uri = match uris.as_slice() {
            [uri] => *uri,
            [] => {
                let reason = "expected exactly one URI SAN, presented none";
                return Err(Denial::new(Field::CsrSubjectAltName, reason));
            }
            several => {
                let reason = format!(
                    "expected exactly one URI SAN, presented {}: {}",
                    several.len(),
                    clip(&several.join(", "))
                );
                return Err(Denial::new(Field::CsrSubjectAltName, reason));
            }
        };
        let id = SpiffeId::parse(uri).map_err(|err| {
            let reason = format!("URI SAN {:?} is not a valid SPIFFE ID: {err}", clip(uri));
            Denial::new(Field::CsrSubjectAltName, reason)
        })?;
        if id.trust_domain() != &self.trust_domain {
            let reason = format!(
                "SPIFFE ID {id} is in trust domain {}, expected {}",
                id.trust_domain(),
                self.trust_domain
            );
            return Err(Denial::new(Field::CsrSubjectAltName, reason));
        }

        let expected = self
            .template
            .render(&self.trust_domain, namespace, account)
            .map_err(|err| {
                let reason = format!(
                    "cannot derive a SPIFFE ID for requester {}: {err}",
                    clip(username)
                );
                Denial::new(Field::SpecUsername, reason)
            })?;
        if id != expected {
            let reason = format!(
                "SPIFFE ID {id} does not match requester {} (expected {expected})",
                clip(username)
            );
            return Err(Denial::new(Field::SpecUsername, reason));
        }

        if let Some(annotation) = request.identity_annotation
            && annotation != id.as_str()
        {
            let reason = format!(
                "annotation value {:?} does not match the SPIFFE ID {id} requested in the CSR",
                clip(annotation)
            );
            return Err(Denial::new(Field::IdentityAnnotation, reason));
        }
        Ok(())
    }
}

fn check_spec(request: &SpiffeRequest<'_>) -> Result<(), Denial> {
    if request.is_ca {
        let reason = "a CA certificate was requested: expected isCA to be false";
        return Err(Denial::new(Field::SpecIsCa, reason));
    }
    let presented: BTreeSet<&str> = request.usages.iter().map(String::as_str).collect();
    let missing: Vec<&str> = REQUIRED_USAGES
        .iter()
        .copied()
        .filter(|usage| !presented.contains(usage))
        .collect();
    let extra: Vec<&str> = presented
        .iter()
        .copied()
        .filter(|usage| !REQUIRED_USAGES.contains(usage))
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut reason = format!("expected exactly the usages {}", REQUIRED_USAGES.join(", "));
        if !missing.is_empty() {
            reason.push_str(&format!("; missing: {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            reason.push_str(&format!("; not allowed: {}", clip(&extra.join(", "))));
        }
        return Err(Denial::new(Field::SpecUsages, reason));
    }
    Ok(())
}

/// Splits `system:serviceaccount:<namespace>:<name>` into its two names.
fn service_account(username: &str) -> Option<(&str, &str)> {
    let (namespace, name) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)?
        .split_once(':')?;
    let valid = !namespace.is_empty() && !name.is_empty() && !name.contains(':');
    valid.then_some((namespace, name))
}

/// `x is` or `x, y are`, for lists of refused values.
fn is_or_are(items: &[String]) -> String {
    match items {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

/// Requester-supplied text, cut to a bounded length on a character boundary.
fn clip(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account("system:serviceaccount:demo:web"),
            Some(("demo", "web"))
        );
        for bad in [
            "system:serviceaccount:demo",
            "system:serviceaccount::web",
            "system:serviceaccount:demo:",
            "system:serviceaccount:demo:web:x",
            "system:serviceaccounts:demo",
            "alice",
            "",
        ] {
            assert_eq!(service_account(bad), None, "{bad}");
        }
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(SHOWN + 10);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), SHOWN + 3);
        assert!(clipped.ends_with("..."));
    }
}
