//! The webhook's own certificates: the CA every replica shares, the serving certificates
//! it signs, the CA bundle the API server trusts, and the resolver that hands rustls the
//! current serving certificate on every handshake.
//!
//! Nothing here performs I/O; `ca_store` keeps the CA in a Secret and `bootstrap` decides
//! when to rotate.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// How far `notBefore` is set back, for API servers whose clock runs behind ours.
const BACKDATE: Duration = Duration::from_secs(60);

/// The CA's common name.
const CA_NAME: &str = "nico-identity-webhook-ca";

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key generation or signing failed.
    #[error("failed to {action}: {source}")]
    Build {
        /// What was being made.
        action: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// Stored material is not a usable CA.
    #[error("CA material is unusable: {0}")]
    Unusable(String),
    /// rustls refused the serving key.
    #[error("failed to load the serving key into rustls: {0}")]
    Key(#[source] rustls::Error),
}

fn build(action: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Build { action, source }
}

/// A random positive serial number of 16 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A failing system RNG leaves a fixed pattern; fastrand still differs per call.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The CA: its certificate and key. `Debug` hides the key.
pub(crate) struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Ca {
    /// A new CA living `validity` from `now`.
    pub(crate) fn generate(validity: Duration, now: OffsetDateTime) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(build("generate the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let cert = params
            .self_signed(&key)
            .map_err(build("sign the CA certificate"))?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The CA stored as a PEM certificate and a PEM PKCS#8 key.
    pub(crate) fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let unusable = |what: &str| PkiError::Unusable(what.to_owned());
        let ders = nico_csr::pem_to_ders(cert_pem.as_bytes())
            .map_err(|e| PkiError::Unusable(format!("tls.crt: {e}")))?;
        let [cert_der] = ders.as_slice() else {
            return Err(unusable("tls.crt must hold exactly one certificate"));
        };
        let info = nico_csr::parse_certificate(cert_der)
            .map_err(|e| PkiError::Unusable(format!("tls.crt: {e}")))?;
        if !info.is_ca() {
            return Err(unusable("tls.crt is not a CA certificate"));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|_| unusable("tls.key is not a PEM key"))?;
        let matches = nico_csr::spki_matches(&key.subject_public_key_info(), cert_der)
            .map_err(|e| PkiError::Unusable(format!("tls.crt: {e}")))?;
        if !matches {
            return Err(unusable("tls.key does not belong to tls.crt"));
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), key)
            .map_err(|_| unusable("tls.crt cannot sign"))?;
        Ok(Ca {
            cert_pem: nico_csr::ders_to_pem(&[cert_der]),
            cert_der: cert_der.clone(),
            key_pem: key_pem.to_owned(),
            issuer,
            not_before: info.not_before(),
            not_after: info.not_after(),
        })
    }

    /// The certificate, PEM.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate, DER.
    pub(crate) fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The key, PEM PKCS#8; only for storing it in the Secret.
    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// When the CA expires.
    pub(crate) fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Whether less than a third of its life is left at `now`.
    pub(crate) fn due_for_rotation(&self, now: OffsetDateTime) -> bool {
        let life = self.not_after - self.not_before;
        self.not_after - now < life / 3
    }

    /// A serving certificate for `dns_names`, living `validity` from `now` but never past
    /// the CA.
    pub(crate) fn issue(
        &self,
        dns_names: &[String],
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<Serving, PkiError> {
        let key = KeyPair::generate().map_err(build("generate the serving key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.subject_alt_names = dns_names
            .iter()
            .map(|name| {
                name.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(build("put a DNS name in the serving certificate"))
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = now - BACKDATE;
        params.not_after = (now + validity).min(self.not_after);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(build("sign the serving certificate"))?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing =
            rustls::crypto::aws_lc_rs::sign::any_supported_type(&private).map_err(PkiError::Key)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| hex(&s.to_bytes()))
            .unwrap_or_default();
        let life = params.not_after - now;
        Ok(Serving {
            certified: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)),
            cert_pem: cert.pem(),
            serial,
            ca_der: self.cert_der.clone(),
            not_after: params.not_after,
            renew_at: now + life * 2 / 3,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A serving certificate and its key, ready for rustls.
pub(crate) struct Serving {
    certified: Arc<CertifiedKey>,
    cert_pem: String,
    serial: String,
    ca_der: Vec<u8>,
    not_after: OffsetDateTime,
    renew_at: OffsetDateTime,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Serving {
    /// The serial number, lower-case hex.
    pub(crate) fn serial(&self) -> &str {
        &self.serial
    }

    /// Whether `ca` signed it.
    pub(crate) fn signed_by(&self, ca: &Ca) -> bool {
        self.ca_der == ca.cert_der
    }

    /// When it expires.
    pub(crate) fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// When two thirds of its life have passed.
    pub(crate) fn renew_at(&self) -> OffsetDateTime {
        self.renew_at
    }

    /// The certificate, PEM.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// The CA certificates the API server trusts, newest first, without duplicates or expired
/// ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bundle {
    ders: Vec<Vec<u8>>,
}

impl Bundle {
    /// Reads PEM certificates; non-CA certificates and those expired at `now` are left out,
    /// and text that is not a list of PEM certificates reads as an empty bundle.
    pub(crate) fn from_pem(pem: &[u8], now: OffsetDateTime) -> Bundle {
        let mut bundle = Bundle::default();
        for der in nico_csr::pem_to_ders(pem).unwrap_or_default() {
            bundle.push(der, now);
        }
        bundle
    }

    /// Adds a certificate at the end unless it is present, expired or not a CA.
    pub(crate) fn push(&mut self, der: Vec<u8>, now: OffsetDateTime) {
        let usable = nico_csr::parse_certificate(&der)
            .is_ok_and(|info| info.is_ca() && info.not_after() > now);
        if usable && !self.ders.contains(&der) {
            self.ders.push(der);
        }
    }

    /// `first`, then this bundle's certificates.
    pub(crate) fn led_by(&self, first: &[u8], now: OffsetDateTime) -> Bundle {
        let mut bundle = Bundle::default();
        bundle.push(first.to_vec(), now);
        for der in &self.ders {
            bundle.push(der.clone(), now);
        }
        bundle
    }

    /// Whether `der` is in the bundle.
    #[cfg(test)]
    pub(crate) fn contains(&self, der: &[u8]) -> bool {
        self.ders.iter().any(|d| d == der)
    }

    /// The bundle, PEM.
    pub(crate) fn to_pem(&self) -> String {
        nico_csr::ders_to_pem(&self.ders)
    }
}

/// Hands rustls the current serving certificate on every handshake, so a renewed one is
/// used from the next connection on while open connections keep theirs.
#[derive(Debug, Default)]
pub(crate) struct ServingResolver {
    current: RwLock<Option<Arc<Serving>>>,
}

impl ServingResolver {
    /// Replaces the serving certificate.
    pub(crate) fn set(&self, serving: Serving) {
        // Each critical section is one assignment: a poisoned lock holds a whole value.
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(serving));
    }

    /// The current serving certificate, if one was set.
    pub(crate) fn current(&self) -> Option<Arc<Serving>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ServingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current().map(|serving| Arc::clone(&serving.certified))
    }
}

/// The TLS configuration of the webhook server: TLS 1.2 and 1.3 on aws-lc-rs, HTTP/2 and
/// HTTP/1.1, certificates from `resolver`.
pub(crate) fn server_config(
    resolver: Arc<ServingResolver>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::UnixTime;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    /// Verifies `serving` for `name` under `bundle` with rustls-webpki at `at`.
    fn verify(serving: &Serving, bundle: &Bundle, name: &str, at: OffsetDateTime) -> bool {
        let leaf = nico_csr::pem_to_ders(serving.cert_pem().as_bytes()).unwrap();
        let leaf = CertificateDer::from(leaf[0].clone());
        let anchors: Vec<CertificateDer<'_>> = nico_csr::pem_to_ders(bundle.to_pem().as_bytes())
            .unwrap()
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let anchors: Vec<_> = anchors
            .iter()
            .map(|a| webpki::anchor_from_trusted_cert(a).unwrap())
            .collect();
        let cert = webpki::EndEntityCert::try_from(&leaf).unwrap();
        let time = UnixTime::since_unix_epoch(Duration::from_secs(at.unix_timestamp() as u64));
        let chain = cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        );
        let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
        chain.is_ok() && cert.verify_is_valid_for_subject_name(&server_name).is_ok()
    }

    #[test]
    fn a_serving_certificate_verifies_under_its_ca_for_every_service_name() {
        let ca = Ca::generate(300 * DAY, now()).unwrap();
        let names = vec!["hook.nico.svc".to_owned(), "hook".to_owned()];
        let serving = ca.issue(&names, DAY, now()).unwrap();
        let bundle = Bundle::default().led_by(ca.cert_der(), now());
        assert!(verify(&serving, &bundle, "hook.nico.svc", now()));
        assert!(verify(&serving, &bundle, "hook", now()));
        assert!(!verify(&serving, &bundle, "other.nico.svc", now()));
        let stranger = Ca::generate(300 * DAY, now()).unwrap();
        let foreign = Bundle::default().led_by(stranger.cert_der(), now());
        assert!(!verify(&serving, &foreign, "hook.nico.svc", now()));
        assert!(serving.signed_by(&ca) && !serving.signed_by(&stranger));
    }

    #[test]
    fn renewal_falls_at_two_thirds_and_nothing_outlives_the_ca() {
        let start = now();
        let ca = Ca::generate(30 * DAY, start).unwrap();
        let serving = ca.issue(&["a.b.svc".to_owned()], 3 * DAY, start).unwrap();
        assert_eq!(serving.renew_at(), start + 2 * DAY);
        let late = start + 29 * DAY;
        let capped = ca.issue(&["a.b.svc".to_owned()], 3 * DAY, late).unwrap();
        assert_eq!(capped.not_after(), ca.not_after());
        assert!(!ca.due_for_rotation(start + 19 * DAY));
        assert!(ca.due_for_rotation(start + 21 * DAY));
    }

    #[test]
    fn the_ca_round_trips_through_pem_and_refuses_mismatches() {
        let ca = Ca::generate(10 * DAY, now()).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        assert!(format!("{again:?}").contains("<redacted>"));
        assert!(!format!("{again:?}").contains("PRIVATE"));
        let other = Ca::generate(10 * DAY, now()).unwrap();
        let cases = [
            (ca.cert_pem(), other.key_pem(), "does not belong"),
            (ca.cert_pem(), "junk", "not a PEM key"),
            ("junk", ca.key_pem(), "tls.crt"),
        ];
        for (cert, key, expected) in cases {
            let err = Ca::from_pem(cert, key).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        let serving = ca.issue(&["x.y.svc".into()], DAY, now()).unwrap();
        let err = Ca::from_pem(serving.cert_pem(), ca.key_pem()).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn bundles_drop_duplicates_expired_and_non_ca_certificates() {
        let start = now();
        let old = Ca::generate(DAY, start).unwrap();
        let new = Ca::generate(10 * DAY, start).unwrap();
        let leaf = new.issue(&["x.y.svc".into()], DAY, start).unwrap();
        let pem = format!(
            "{}{}{}{}",
            old.cert_pem(),
            leaf.cert_pem(),
            old.cert_pem(),
            "not pem"
        );
        let bundle = Bundle::from_pem(pem.as_bytes(), start);
        let led = bundle.led_by(new.cert_der(), start);
        let ders = |bundle: &Bundle| nico_csr::pem_to_ders(bundle.to_pem().as_bytes()).unwrap();
        assert_eq!(ders(&led), [new.cert_der(), old.cert_der()]);
        let later = Bundle::from_pem(led.to_pem().as_bytes(), start + 2 * DAY);
        assert_eq!(ders(&later), [new.cert_der()]);
        assert!(later.contains(new.cert_der()) && !later.contains(old.cert_der()));
    }

    #[test]
    fn the_resolver_serves_whatever_was_set_last() {
        let resolver = ServingResolver::default();
        assert!(resolver.current().is_none());
        let ca = Ca::generate(10 * DAY, now()).unwrap();
        let first = ca.issue(&["x.y.svc".into()], DAY, now()).unwrap();
        let second = ca.issue(&["x.y.svc".into()], DAY, now()).unwrap();
        let (first_serial, second_serial) = (first.serial().to_owned(), second.serial().to_owned());
        resolver.set(first);
        assert_eq!(resolver.current().unwrap().serial(), first_serial);
        resolver.set(second);
        assert_eq!(resolver.current().unwrap().serial(), second_serial);
        assert_ne!(first_serial, second_serial);
    }
}
