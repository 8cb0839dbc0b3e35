//! TLS on both sides: the API is served with a CA and a serving certificate made at start,
//! and admission webhooks are called trusting nothing but their `caBundle`.
//!
//! Both sides use the aws-lc-rs provider explicitly rather than the process default, so the
//! dev cluster works the same whether or not its host installed one.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// rcgen refused to make a key or a certificate.
    #[error("failed to generate the {what}")]
    Generate {
        /// The CA or the serving certificate.
        what: &'static str,
        /// What rcgen said.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the configuration.
    #[error("failed to build the TLS configuration")]
    Config(#[source] rustls::Error),
    /// A `caBundle` holds no usable certificate.
    #[error("the caBundle holds no PEM certificate")]
    EmptyBundle,
}

/// How long the generated certificates are valid: long enough for any dev session.
const VALIDITY_DAYS: i64 = 365;

/// The aws-lc-rs provider, named so that no other can be picked up by accident.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The dev cluster's CA and the server configuration presenting its serving certificate.
#[derive(Debug, Clone)]
pub(crate) struct ServingTls {
    /// The CA certificate, PEM: what clients must trust.
    pub(crate) ca_pem: String,
    pub(crate) config: Arc<ServerConfig>,
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack before now, for clocks a few minutes apart.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

impl ServingTls {
    /// Makes a CA and a serving certificate for `127.0.0.1` and `localhost`.
    pub(crate) fn generate() -> Result<ServingTls, TlsError> {
        let ca_error = |source| TlsError::Generate {
            what: "dev cluster CA",
            source,
        };
        let leaf_error = |source| TlsError::Generate {
            what: "dev cluster serving certificate",
            source,
        };
        let ca_key = KeyPair::generate().map_err(ca_error)?;
        let mut ca_params = CertificateParams::default();
        let mut ca_name = DistinguishedName::new();
        // A name of its own, so that two dev clusters' CAs are never taken for each other.
        let unique = crate::util::new_uid();
        ca_name.push(
            DnType::CommonName,
            format!("nico-dev-cluster-ca-{}", &unique[..8]),
        );
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca_params);
        let ca_cert = ca_params.self_signed(&ca_key).map_err(ca_error)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().map_err(leaf_error)?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned()]).map_err(leaf_error)?;
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mut leaf_name = DistinguishedName::new();
        leaf_name.push(DnType::CommonName, "nico-dev-cluster");
        leaf_params.distinguished_name = leaf_name;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut leaf_params);
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(leaf_error)?;

        let chain = vec![leaf_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Config)?;
        // Watches are chunked HTTP/1.1 streams; offering h2 would change how they look.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServingTls {
            ca_pem: ca_cert.pem(),
            config: Arc::new(config),
        })
    }
}

/// A client configuration trusting exactly the certificates of a PEM bundle.
pub(crate) fn client_config(bundle_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem).flatten() {
        // A certificate webpki cannot use as an anchor is skipped, as Go skips it.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsError::EmptyBundle);
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, ServerConnection};
    use rustls_pki_types::ServerName;

    /// Runs a TLS handshake in memory between a client trusting `bundle` and the server.
    fn handshake(tls: &ServingTls, bundle: &[u8], name: &str) -> Result<(), rustls::Error> {
        let client_config = client_config(bundle).expect("a usable bundle");
        let name = ServerName::try_from(name.to_owned()).expect("a valid server name");
        let mut client = ClientConnection::new(client_config, name)?;
        let mut server = ServerConnection::new(Arc::clone(&tls.config))?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).expect("in-memory write");
            server
                .read_tls(&mut buf.as_slice())
                .expect("in-memory read");
            server.process_new_packets()?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).expect("in-memory write");
            client
                .read_tls(&mut buf.as_slice())
                .expect("in-memory read");
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn the_serving_certificate_is_trusted_through_the_ca_for_its_names_only() {
        let tls = ServingTls::generate().expect("certificates are made");
        for name in ["127.0.0.1", "localhost"] {
            handshake(&tls, tls.ca_pem.as_bytes(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = handshake(&tls, tls.ca_pem.as_bytes(), "example.com").expect_err("wrong name");
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn another_ca_is_not_trusted() {
        let tls = ServingTls::generate().expect("certificates are made");
        let other = ServingTls::generate().expect("certificates are made");
        let err = handshake(&tls, other.ca_pem.as_bytes(), "127.0.0.1").expect_err("untrusted");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert!(matches!(
            client_config(b"not a pem"),
            Err(TlsError::EmptyBundle)
        ));
    }
}
