//! `nico-identity inspect <dir>`: what a mounted volume holds, checked the way a peer would.

use std::path::Path;

use nico_csr::PrivateKey;
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

use crate::config::FileNames;
use crate::files;

/// What is in a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// URI SANs of the leaf (one SPIFFE ID for a healthy volume).
    pub spiffe_ids: Vec<String>,
    /// Serial of the leaf, lower-case hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// When the driver renews it (two thirds of the lifetime, before jitter).
    pub renews_at: OffsetDateTime,
    /// Whether `tls.key` belongs to the leaf.
    pub key_matches: bool,
    /// `Ok` when the chain verifies up to `ca.crt` for TLS client and server use now, else why
    /// not.
    pub chain: Result<(), String>,
}

impl Inspection {
    /// Whether the volume is fit for use.
    pub fn healthy(&self) -> bool {
        self.key_matches && self.chain.is_ok() && self.spiffe_ids.len() == 1
    }
}

/// Why a volume could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The files could not be read.
    #[error("failed to read the volume at {path}: {source}")]
    Read {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory does not hold the three files.
    #[error("{0} does not hold tls.crt, tls.key and ca.crt (or the configured names)")]
    Missing(String),
    /// The certificate does not parse.
    #[error("the certificate in {path} is unreadable: {reason}")]
    Certificate {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Reads and checks a volume's files.
pub fn inspect(dir: &Path, names: &FileNames) -> Result<Inspection, InspectError> {
    let path = dir.display().to_string();
    let current = files::read_current(dir, names).map_err(|source| InspectError::Read {
        path: path.clone(),
        source,
    })?;
    // Volumes written by other drivers have no `..data`: read the plain files then.
    let current = match current {
        Some(current) => current,
        None => {
            let read = |name: &str| std::fs::read(dir.join(name)).ok();
            match (read(&names.certificate), read(&names.key), read(&names.ca)) {
                (Some(certificate_chain), Some(key), Some(ca)) => files::CurrentFiles {
                    certificate_chain,
                    key,
                    ca,
                },
                _ => return Err(InspectError::Missing(path)),
            }
        }
    };
    let bad = |reason: String| InspectError::Certificate {
        path: path.clone(),
        reason,
    };
    let chain =
        nico_csr::pem_to_ders(&current.certificate_chain).map_err(|e| bad(e.to_string()))?;
    let leaf_der = chain.first().ok_or_else(|| bad("no certificate".into()))?;
    let leaf = nico_csr::parse_certificate(leaf_der).map_err(|e| bad(e.to_string()))?;
    let key_matches = std::str::from_utf8(&current.key)
        .ok()
        .and_then(|pem| PrivateKey::from_pkcs8_pem(pem).ok())
        .and_then(|key| nico_csr::key_matches_certificate(&key, leaf_der).ok())
        .unwrap_or(false);
    let lifetime = leaf.not_after() - leaf.not_before();
    Ok(Inspection {
        spiffe_ids: leaf.uri_sans().map(str::to_owned).collect(),
        serial: leaf.serial_hex().to_owned(),
        not_before: leaf.not_before(),
        not_after: leaf.not_after(),
        renews_at: leaf.not_before() + lifetime * 2 / 3,
        key_matches,
        chain: verify(&chain, &current.ca),
    })
}

/// Verifies with rustls-webpki, as a TLS peer of the pod would.
fn verify(chain: &[Vec<u8>], ca: &[u8]) -> Result<(), String> {
    let roots = nico_csr::pem_to_ders(ca).map_err(|e| format!("ca.crt: {e}"))?;
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .map(|der| webpki::anchor_from_trusted_cert(der).map_err(|e| format!("ca.crt: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let (leaf, intermediates) = chain.split_first().ok_or("tls.crt holds no certificate")?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let leaf = CertificateDer::from(leaf.as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("tls.crt: {e}"))?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map_err(|e| format!("{e}"))?;
    }
    Ok(())
}
