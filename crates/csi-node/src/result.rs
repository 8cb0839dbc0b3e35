//! Checking what an issuer returned before any of it reaches a pod.
//!
//! A certificate is only written when the chain links up, the leaf is first, carries our key
//! and exactly the SPIFFE ID we asked for, is valid now, and lives no longer than requested.

use std::time::Duration;

use nico_csr::{CertificateError, ChainError, PrivateKey, San};
use nico_spiffe_id::SpiffeId;
use time::OffsetDateTime;

/// How far an issuer may back-date `notBefore` (Vault and cert-manager do, to absorb clock
/// skew) on top of the requested lifetime.
pub(crate) const BACKDATE_ALLOWANCE: Duration = Duration::from_secs(120);

/// What was wrong with an issuer's answer. Shown to operators; never contains key material.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResultError {
    #[error("status.certificate is not a PEM certificate bundle: {0}")]
    CertificatePem(#[source] CertificateError),
    #[error("status.ca is not a PEM certificate bundle: {0}")]
    CaPem(#[source] CertificateError),
    #[error("the returned certificates do not form a chain: {0}")]
    Chain(#[source] ChainError),
    #[error("the first certificate of status.certificate is not the leaf of the chain")]
    LeafNotFirst,
    #[error("the leaf certificate does not carry the key this node generated")]
    KeyMismatch,
    #[error("the leaf certificate's SANs are {presented}: expected exactly URI {expected}")]
    SanMismatch { expected: String, presented: String },
    #[error("the leaf certificate is a CA certificate")]
    LeafIsCa,
    #[error("the leaf certificate expired at {not_after}")]
    Expired { not_after: OffsetDateTime },
    #[error("the leaf certificate is not valid before {not_before}")]
    NotYetValid { not_before: OffsetDateTime },
    #[error(
        "the leaf certificate lives {issued_secs}s: longer than the {requested_secs}s requested"
    )]
    TooLong {
        issued_secs: i64,
        requested_secs: u64,
    },
    #[error(
        "the leaf certificate has {issued_secs}s left: less than the {minimum_secs}s minimum \
         (csi_node.min_lifetime)"
    )]
    TooShort { issued_secs: i64, minimum_secs: u64 },
    #[error("the issuer returned no root certificate (status.ca is empty)")]
    NoRoot,
    #[error("no root in status.ca issued the chain in status.certificate")]
    Unanchored,
    #[error("failed to parse the leaf certificate: {0}")]
    Leaf(#[source] CertificateError),
}

/// The lifetime bounds an answer must meet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    /// What was requested; the certificate may not live longer (back-dating aside).
    pub(crate) requested: Duration,
    /// The shortest lifetime accepted: shorter certificates would renew in a storm.
    pub(crate) minimum: Duration,
}

/// A checked answer, ready to be written.
#[derive(Clone, Debug)]
pub(crate) struct CheckedChain {
    pub(crate) certificate_chain_pem: String,
    pub(crate) ca_pem: String,
    pub(crate) serial: String,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

/// Checks an issuer's `status.certificate` and `status.ca` against what was requested.
pub(crate) fn check_issued(
    key: &PrivateKey,
    id: &SpiffeId,
    lifetimes: Lifetimes,
    certificate: &[u8],
    ca: &[u8],
    now: OffsetDateTime,
) -> Result<CheckedChain, ResultError> {
    let issued = nico_csr::pem_to_ders(certificate).map_err(ResultError::CertificatePem)?;
    let roots = if ca.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        nico_csr::pem_to_ders(ca).map_err(ResultError::CaPem)?
    };
    let first = issued.first().cloned().ok_or(ResultError::LeafNotFirst)?;
    // The chain is built from status.certificate alone; status.ca may hold several roots
    // (old and new during a CA rotation), and all of them go into ca.crt.
    let chain = nico_csr::split_chain(issued).map_err(ResultError::Chain)?;
    if chain.leaf != first {
        return Err(ResultError::LeafNotFirst);
    }
    let mut bundle = roots;
    for root in &chain.roots {
        if !bundle.contains(root) {
            bundle.push(root.clone());
        }
    }
    if bundle.is_empty() {
        return Err(ResultError::NoRoot);
    }
    if chain.roots.is_empty() {
        let top = chain.intermediates.last().unwrap_or(&chain.leaf);
        let anchored = bundle
            .iter()
            .any(|root| nico_csr::split_chain(vec![top.clone(), root.clone()]).is_ok());
        if !anchored {
            return Err(ResultError::Unanchored);
        }
    }
    let leaf = nico_csr::parse_certificate(&chain.leaf).map_err(ResultError::Leaf)?;
    if leaf.spki_der() != key.spki_der().as_slice() {
        return Err(ResultError::KeyMismatch);
    }
    let exact = matches!(leaf.sans(), [San::Uri(uri)] if uri == id.as_str());
    if !exact {
        return Err(ResultError::SanMismatch {
            expected: id.to_string(),
            presented: describe_sans(leaf.sans()),
        });
    }
    if leaf.is_ca() {
        return Err(ResultError::LeafIsCa);
    }
    let (not_before, not_after) = (leaf.not_before(), leaf.not_after());
    if not_after <= now {
        return Err(ResultError::Expired { not_after });
    }
    if not_before > now + BACKDATE_ALLOWANCE {
        return Err(ResultError::NotYetValid { not_before });
    }
    let lifetime = (not_after - not_before).whole_seconds();
    let allowed = lifetimes.requested + BACKDATE_ALLOWANCE;
    if lifetime > i64::try_from(allowed.as_secs()).unwrap_or(i64::MAX) {
        return Err(ResultError::TooLong {
            issued_secs: lifetime,
            requested_secs: lifetimes.requested.as_secs(),
        });
    }
    // Measured from now, so an answer already mostly spent counts as short too.
    let remaining = (not_after - now).whole_seconds();
    if remaining < i64::try_from(lifetimes.minimum.as_secs()).unwrap_or(i64::MAX) {
        return Err(ResultError::TooShort {
            issued_secs: remaining,
            minimum_secs: lifetimes.minimum.as_secs(),
        });
    }
    Ok(CheckedChain {
        certificate_chain_pem: chain.certificate_chain_pem(),
        ca_pem: nico_csr::ders_to_pem(&bundle),
        serial: leaf.serial_hex().to_owned(),
        not_before,
        not_after,
    })
}

fn describe_sans(sans: &[San]) -> String {
    if sans.is_empty() {
        return "empty".to_owned();
    }
    let parts: Vec<String> = sans.iter().map(|san| format!("{san}")).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair, SanType,
    };

    const HOUR: Lifetimes = Lifetimes {
        requested: Duration::from_secs(3600),
        minimum: Duration::from_secs(300),
    };

    struct Ca {
        cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn make_ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, spki_key: &PrivateKey, uris: &[&str], lifetime: time::Duration) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(30);
        params.not_after = params.not_before + lifetime;
        let public = rcgen::SubjectPublicKeyInfo::from_der(&spki_key.spki_der()).unwrap();
        params.signed_by(&public, &ca.issuer).unwrap().pem()
    }

    fn id() -> SpiffeId {
        SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap()
    }

    fn key() -> PrivateKey {
        PrivateKey::generate(nico_csr::KeyAlgorithm::EcdsaP256).unwrap()
    }

    #[test]
    fn a_good_answer_passes_in_any_order() {
        let (ca, key) = (make_ca("root"), key());
        let cert = leaf(&ca, &key, &[id().as_str()], time::Duration::hours(1));
        let checked = check_issued(
            &key,
            &id(),
            HOUR,
            cert.as_bytes(),
            ca.cert_pem.as_bytes(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert!(checked.certificate_chain_pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(checked.ca_pem.matches("BEGIN CERTIFICATE").count(), 1);
        // The root inside status.certificate instead of status.ca is found by linkage.
        let both = format!("{cert}{}", ca.cert_pem);
        let checked = check_issued(
            &key,
            &id(),
            HOUR,
            both.as_bytes(),
            b"",
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(
            checked
                .certificate_chain_pem
                .matches("BEGIN CERTIFICATE")
                .count(),
            1
        );
    }

    #[test]
    fn every_root_of_a_rotating_ca_reaches_ca_crt() {
        let (old, new, key) = (make_ca("old root"), make_ca("new root"), key());
        let cert = leaf(&new, &key, &[id().as_str()], time::Duration::hours(1));
        let bundle = format!("{}{}", old.cert_pem, new.cert_pem);
        let now = OffsetDateTime::now_utc();
        let checked =
            check_issued(&key, &id(), HOUR, cert.as_bytes(), bundle.as_bytes(), now).unwrap();
        assert_eq!(checked.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn every_bad_answer_is_refused() {
        let (ca, key, other_key) = (make_ca("root"), key(), self::key());
        let now = OffsetDateTime::now_utc();
        let good = leaf(&ca, &key, &[id().as_str()], time::Duration::hours(1));
        let check = |cert: &str, ca_pem: &str, now| {
            check_issued(&key, &id(), HOUR, cert.as_bytes(), ca_pem.as_bytes(), now)
        };
        let cases = [
            (
                check("garbage", &ca.cert_pem, now).unwrap_err(),
                "status.certificate",
            ),
            (
                check(
                    &leaf(&ca, &other_key, &[id().as_str()], time::Duration::hours(1)),
                    &ca.cert_pem,
                    now,
                )
                .unwrap_err(),
                "key this node generated",
            ),
            (
                check(
                    &leaf(
                        &ca,
                        &key,
                        &["spiffe://nico.local/demo/sa/other"],
                        time::Duration::hours(1),
                    ),
                    &ca.cert_pem,
                    now,
                )
                .unwrap_err(),
                "expected exactly URI spiffe://nico.local/demo/sa/web",
            ),
            (
                check(
                    &leaf(
                        &ca,
                        &key,
                        &[id().as_str(), "spiffe://nico.local/x"],
                        time::Duration::hours(1),
                    ),
                    &ca.cert_pem,
                    now,
                )
                .unwrap_err(),
                "SANs are [",
            ),
            (
                check(
                    &leaf(&ca, &key, &[id().as_str()], time::Duration::hours(5)),
                    &ca.cert_pem,
                    now,
                )
                .unwrap_err(),
                "longer than the 3600s requested",
            ),
            (
                check(&good, &ca.cert_pem, now + time::Duration::hours(2)).unwrap_err(),
                "expired",
            ),
            (
                check(
                    &leaf(&ca, &key, &[id().as_str()], time::Duration::seconds(90)),
                    &ca.cert_pem,
                    now,
                )
                .unwrap_err(),
                "less than the 300s minimum",
            ),
            (
                check(&good, &make_ca("other root").cert_pem, now).unwrap_err(),
                "no root in status.ca",
            ),
            (
                check(
                    &format!("{good}{}", make_ca("stray").cert_pem),
                    &ca.cert_pem,
                    now,
                )
                .unwrap_err(),
                "do not form a chain",
            ),
            (check(&good, "", now).unwrap_err(), "no root"),
            (
                check(&format!("{}{good}", ca.cert_pem), "", now).unwrap_err(),
                "not the leaf",
            ),
        ];
        for (err, fragment) in cases {
            assert!(
                err.to_string().contains(fragment),
                "{err} lacks {fragment:?}"
            );
        }
    }
}
