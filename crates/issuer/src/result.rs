//! Checking what a backend returned before anything is written to a CertificateRequest.
//!
//! The order of the response does not matter: the certificates are sorted into leaf,
//! intermediates and root by who signed whom. The leaf must carry the CSR's key and exactly
//! its SANs, must not be a CA, and must live no longer than approved (plus the back-dating
//! backends do) and no shorter than the configured floor.

use std::time::Duration;

use nico_csr::{ChainError, ParsedCsr, San};
use time::OffsetDateTime;

use crate::local_ca::Issued;

/// How far a backend may back-date `notBefore` (Vault does by 30 s by default, and so does
/// the local CA) on top of the approved lifetime.
pub(crate) const BACKDATE_ALLOWANCE: Duration = Duration::from_secs(120);

/// What was wrong with a backend's answer. Shown in the request's `Failed` condition; never
/// contains key material.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The certificates do not form one chain.
    #[error("the signed certificates do not form a chain: {0}")]
    Chain(#[source] ChainError),
    /// The leaf does not parse.
    #[error("failed to parse the signed certificate: {0}")]
    Leaf(#[source] nico_csr::CertificateError),
    /// The leaf certifies another key than the CSR's.
    #[error("the signed certificate does not carry the public key of spec.request")]
    KeyMismatch,
    /// The SANs differ from the approved ones.
    #[error("the signed certificate's SANs are {presented}: spec.request asked for {expected}")]
    SanMismatch {
        /// What the CSR asked for.
        expected: String,
        /// What the certificate holds.
        presented: String,
    },
    /// The leaf is a CA certificate.
    #[error("the signed certificate is a CA certificate: spec.isCA was not approved")]
    LeafIsCa,
    /// Longer than approved.
    #[error(
        "the signed certificate lives {issued_secs}s: longer than the {approved_secs}s of \
         spec.duration"
    )]
    TooLong {
        /// Its lifetime.
        issued_secs: i64,
        /// The approved lifetime.
        approved_secs: u64,
    },
    /// Shorter than the floor, or already over.
    #[error(
        "the signed certificate has {remaining_secs}s left: less than the {floor_secs}s \
         minimum (check the backend's maximum TTL)"
    )]
    TooShort {
        /// Seconds left from now.
        remaining_secs: i64,
        /// The configured floor.
        floor_secs: u64,
    },
    /// Not valid yet.
    #[error("the signed certificate is not valid before {0}")]
    NotYetValid(OffsetDateTime),
}

/// A checked answer, ready for `status.certificate` and `status.ca`.
#[derive(Clone, Debug)]
pub struct Checked {
    /// Leaf then intermediates, PEM.
    pub certificate_pem: String,
    /// The root(s), PEM.
    pub ca_pem: String,
    /// Leaf serial, lower-case hex.
    pub serial: String,
    /// Leaf expiry.
    pub not_after: OffsetDateTime,
}

/// What the request approved.
#[derive(Debug)]
pub struct Approved<'a> {
    /// The CSR (its key and SANs).
    pub csr: &'a ParsedCsr,
    /// The approved lifetime.
    pub duration: Duration,
    /// The shortest remaining lifetime accepted.
    pub min_lifetime: Duration,
}

/// Checks `issued` against what was approved.
pub fn check(
    issued: Issued,
    approved: &Approved<'_>,
    now: OffsetDateTime,
) -> Result<Checked, ResultError> {
    let chain = nico_csr::split_chain(issued.certificates).map_err(ResultError::Chain)?;
    let leaf = nico_csr::parse_certificate(&chain.leaf).map_err(ResultError::Leaf)?;
    if leaf.spki_der() != approved.csr.public_key().spki_der() {
        return Err(ResultError::KeyMismatch);
    }
    if !same_names(leaf.sans(), approved.csr.sans()) {
        return Err(ResultError::SanMismatch {
            expected: describe(approved.csr.sans()),
            presented: describe(leaf.sans()),
        });
    }
    if leaf.is_ca() {
        return Err(ResultError::LeafIsCa);
    }
    let (not_before, not_after) = (leaf.not_before(), leaf.not_after());
    if not_before > now + BACKDATE_ALLOWANCE {
        return Err(ResultError::NotYetValid(not_before));
    }
    let lifetime = (not_after - not_before).whole_seconds();
    let allowed = approved
        .duration
        .saturating_add(BACKDATE_ALLOWANCE)
        .as_secs();
    if lifetime > i64::try_from(allowed).unwrap_or(i64::MAX) {
        return Err(ResultError::TooLong {
            issued_secs: lifetime,
            approved_secs: approved.duration.as_secs(),
        });
    }
    let remaining = (not_after - now).whole_seconds();
    // Never more than half the approved duration: a certificate of exactly the approved
    // lifetime has already lost a second or so by the time it is checked.
    let floor = approved.min_lifetime.min(approved.duration / 2);
    if remaining <= 0 || remaining < i64::try_from(floor.as_secs()).unwrap_or(i64::MAX) {
        return Err(ResultError::TooShort {
            remaining_secs: remaining,
            floor_secs: floor.as_secs(),
        });
    }
    let mut roots = chain.roots.clone();
    for root in issued.extra_roots {
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    if roots.is_empty() {
        // No self-signed root was returned: publish the top of the chain, as the issuing
        // authority the pod should trust (what cert-manager does for such Vault answers).
        let top = chain.intermediates.last().unwrap_or(&chain.leaf);
        if top != &chain.leaf {
            roots.push(top.clone());
        }
    }
    Ok(Checked {
        certificate_pem: chain.certificate_chain_pem(),
        ca_pem: nico_csr::ders_to_pem(&roots),
        serial: leaf.serial_hex().to_owned(),
        not_after,
    })
}

/// Whether two SAN lists hold the same names, ignoring order and repetition.
fn same_names(left: &[San], right: &[San]) -> bool {
    let key = |names: &[San]| {
        let mut names: Vec<String> = names.iter().map(|n| format!("{n}")).collect();
        names.sort();
        names.dedup();
        names
    };
    key(left) == key(right)
}

fn describe(names: &[San]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let parts: Vec<String> = names.iter().map(|n| format!("{n}")).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_ca::{CaMaterial, LocalCa, SignRequest};
    use nico_csr::{KeyAlgorithm, PrivateKey};
    use nico_spiffe_id::SpiffeId;
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

    const HOUR: Duration = Duration::from_secs(3600);

    struct Fixture {
        root_pem: String,
        root_der: Vec<u8>,
        root: Issuer<'static, KeyPair>,
        intermediate_der: Vec<u8>,
        intermediate: Issuer<'static, KeyPair>,
        csr: ParsedCsr,
        key: PrivateKey,
    }

    fn fixture() -> Fixture {
        let now = OffsetDateTime::now_utc();
        let root_material = LocalCa::generate(24 * HOUR, now).unwrap();
        let root_der = nico_csr::pem_to_ders(root_material.certificate_pem.as_bytes())
            .unwrap()
            .remove(0);
        let root_key = KeyPair::from_pem(&root_material.key_pem).unwrap();
        let root = Issuer::from_ca_cert_der(&root_der.clone().into(), root_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "int");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let intermediate_cert = params.signed_by(&key, &root).unwrap();
        let intermediate_der = intermediate_cert.der().to_vec();
        let intermediate = Issuer::new(params, key);
        let private = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let id = SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
        let pem = nico_csr::build_spiffe_csr(&private, &id).unwrap();
        Fixture {
            root_pem: root_material.certificate_pem,
            root_der,
            root,
            intermediate_der,
            intermediate,
            csr: nico_csr::parse_csr(pem.as_bytes()).unwrap(),
            key: private,
        }
    }

    /// A leaf for the CSR's key (or another), signed by `issuer`.
    fn leaf(
        f: &Fixture,
        issuer: &Issuer<'_, KeyPair>,
        edit: impl FnOnce(&mut CertificateParams),
        other_key: bool,
    ) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://nico.local/demo/sa/web".try_into().unwrap(),
        )];
        params.not_before = now - Duration::from_secs(30);
        params.not_after = now + HOUR;
        edit(&mut params);
        let spki = if other_key {
            PrivateKey::generate(KeyAlgorithm::EcdsaP256)
                .unwrap()
                .spki_der()
        } else {
            f.key.spki_der()
        };
        let public = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        params.signed_by(&public, issuer).unwrap().der().to_vec()
    }

    fn approved(f: &Fixture) -> Approved<'_> {
        Approved {
            csr: &f.csr,
            duration: HOUR,
            min_lifetime: Duration::from_secs(600),
        }
    }

    fn issued(certificates: Vec<Vec<u8>>) -> Issued {
        Issued {
            certificates,
            extra_roots: Vec::new(),
        }
    }

    #[test]
    fn chains_are_sorted_by_linkage_whatever_the_response_order() {
        let f = fixture();
        let leaf = leaf(&f, &f.intermediate, |_| {}, false);
        let now = OffsetDateTime::now_utc();
        let orders = [
            vec![leaf.clone(), f.intermediate_der.clone(), f.root_der.clone()],
            vec![f.root_der.clone(), leaf.clone(), f.intermediate_der.clone()],
            vec![
                f.intermediate_der.clone(),
                leaf.clone(),
                f.root_der.clone(),
                f.intermediate_der.clone(),
                leaf.clone(),
            ],
        ];
        for order in orders {
            let checked = check(issued(order), &approved(&f), now).unwrap();
            let certs = nico_csr::pem_to_ders(checked.certificate_pem.as_bytes()).unwrap();
            assert_eq!(certs, vec![leaf.clone(), f.intermediate_der.clone()]);
            assert_eq!(checked.ca_pem, f.root_pem);
        }
        // Without the root, the top of the chain is what the pod is told to trust.
        let checked = check(
            issued(vec![f.intermediate_der.clone(), leaf.clone()]),
            &approved(&f),
            now,
        )
        .unwrap();
        assert_eq!(
            nico_csr::pem_to_ders(checked.ca_pem.as_bytes()).unwrap(),
            vec![f.intermediate_der.clone()]
        );
        // Extra roots (a rotation) are published beside the chain's own, once.
        let old = LocalCa::generate(HOUR, now).unwrap();
        let old_der = nico_csr::pem_to_ders(old.certificate_pem.as_bytes()).unwrap();
        let with_extra = Issued {
            certificates: vec![leaf.clone(), f.intermediate_der.clone(), f.root_der.clone()],
            extra_roots: vec![f.root_der.clone(), old_der[0].clone()],
        };
        let checked = check(with_extra, &approved(&f), now).unwrap();
        assert_eq!(
            nico_csr::pem_to_ders(checked.ca_pem.as_bytes()).unwrap(),
            vec![f.root_der.clone(), old_der[0].clone()]
        );
    }

    #[test]
    fn wrong_results_fail_with_the_reason() {
        let f = fixture();
        let now = OffsetDateTime::now_utc();
        let direct = |edit: fn(&mut CertificateParams), other_key: bool| {
            vec![leaf(&f, &f.root, edit, other_key), f.root_der.clone()]
        };
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (direct(|_| {}, true), "public key of spec.request"),
            (
                direct(
                    |p| {
                        p.subject_alt_names
                            .push(SanType::DnsName("extra.example".try_into().unwrap()))
                    },
                    false,
                ),
                "SANs are [URI spiffe://nico.local/demo/sa/web, DNS name extra.example]",
            ),
            (
                direct(|p| p.not_after = p.not_before + 3 * HOUR, false),
                "longer than the 3600s",
            ),
            (
                direct(
                    |p| p.not_after = OffsetDateTime::now_utc() + Duration::from_secs(60),
                    false,
                ),
                "less than the 600s minimum",
            ),
            (
                direct(
                    |p| {
                        let now = OffsetDateTime::now_utc();
                        p.not_before = now - Duration::from_secs(1800);
                        p.not_after = now - Duration::from_secs(1);
                    },
                    false,
                ),
                "less than the 600s minimum",
            ),
            (
                direct(
                    |p| p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
                    false,
                ),
                "is a CA certificate",
            ),
            (
                // The intermediate is missing between the leaf and the root.
                vec![leaf(&f, &f.intermediate, |_| {}, false), f.root_der.clone()],
                "do not form a chain",
            ),
        ];
        for (certificates, expected) in cases {
            let error = check(issued(certificates), &approved(&f), now).unwrap_err();
            assert!(error.to_string().contains(expected), "{error} / {expected}");
        }
    }

    #[test]
    fn the_local_ca_passes_its_own_checks() {
        let f = fixture();
        let now = OffsetDateTime::now_utc();
        let material: CaMaterial = LocalCa::generate(24 * HOUR, now).unwrap();
        let ca = LocalCa::from_material(&material, "test").unwrap();
        let usages = vec!["digital signature".to_owned()];
        let issued = ca
            .sign(
                &SignRequest {
                    csr_pem: b"",
                    csr: &f.csr,
                    duration: HOUR,
                    usages: &usages,
                    is_ca: false,
                },
                now,
            )
            .unwrap();
        let checked = check(issued, &approved(&f), now).unwrap();
        assert_eq!(checked.ca_pem, material.certificate_pem);
    }
}
