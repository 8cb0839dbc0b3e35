//! Reading issued certificates: a small summary of each, PEM bundles, and key matching.

use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::prelude::FromDer;

use crate::PrivateKey;
use crate::input;
use crate::model::{PublicKeyInfo, San, Subject, hex};

/// The largest PEM bundle [`pem_to_ders`] reads, in bytes. A CA response with a deep chain
/// is a few KiB; this bounds the work done on hostile input.
pub const MAX_BUNDLE_LEN: usize = 1024 * 1024;

/// Why bytes were not accepted as certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The DER is not an X.509 certificate.
    #[error("failed to parse the certificate: not a valid X.509 structure")]
    Malformed {
        /// The parser's error.
        #[source]
        cause: X509Error,
    },

    /// Bytes follow the DER structure.
    #[error("{len} unexpected bytes follow the certificate")]
    TrailingData {
        /// How many bytes follow.
        len: usize,
    },

    /// An extension the summary relies on is duplicated or does not decode.
    #[error("certificate extension {name} is malformed or duplicated")]
    MalformedExtension {
        /// Which extension.
        name: &'static str,
    },

    /// A PEM bundle is larger than [`MAX_BUNDLE_LEN`].
    #[error("certificate bundle is {len} bytes long: at most {MAX_BUNDLE_LEN} are accepted")]
    TooLarge {
        /// Length of the input.
        len: usize,
    },

    /// The PEM framing or its base64 is broken.
    #[error("failed to decode the PEM certificate bundle")]
    Pem {
        /// The PEM decoder's error.
        #[source]
        cause: pem::PemError,
    },

    /// A PEM block in the bundle is not a certificate.
    #[error("PEM block {index} is labelled {label:?}: expected CERTIFICATE")]
    WrongPemLabel {
        /// Zero-based position of the block.
        index: usize,
        /// The label found.
        label: String,
    },

    /// The bundle holds no PEM block.
    #[error("no CERTIFICATE PEM block found")]
    NoCertificates,
}

/// A summary of one certificate: what the issuer and the node driver check before use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    der: Vec<u8>,
    serial_hex: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    sans: Vec<San>,
    subject: Subject,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    public_key: PublicKeyInfo,
    is_ca: bool,
    self_signed: bool,
}

impl CertificateInfo {
    /// The certificate's DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The serial number as lower-case hex, whole bytes, without leading zero bytes
    /// (`"00"` for zero).
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Every subject alternative name, in encoding order.
    pub fn sans(&self) -> &[San] {
        &self.sans
    }

    /// The URI SANs.
    pub fn uri_sans(&self) -> impl Iterator<Item = &str> {
        self.sans.iter().filter_map(|san| match san {
            San::Uri(uri) => Some(uri.as_str()),
            _ => None,
        })
    }

    /// The DNS SANs.
    pub fn dns_sans(&self) -> impl Iterator<Item = &str> {
        self.sans.iter().filter_map(|san| match san {
            San::Dns(dns) => Some(dns.as_str()),
            _ => None,
        })
    }

    /// The IP address SANs.
    pub fn ip_sans(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.sans.iter().filter_map(|san| match san {
            San::Ip(ip) => Some(*ip),
            _ => None,
        })
    }

    /// The subject, attribute by attribute.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The subject name as DER.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The issuer name as DER.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// The certified public key.
    pub fn public_key(&self) -> &PublicKeyInfo {
        &self.public_key
    }

    /// The certified public key as DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        self.public_key.spki_der()
    }

    /// Whether basicConstraints says CA:TRUE.
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// Whether issuer equals subject and the signature verifies with the certificate's own
    /// key.
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }
}

/// Summarises one DER certificate. The signature is checked only against the certificate's
/// own key, to tell whether it is self-signed; chains are [`crate::split_chain`]'s job.
pub fn parse_certificate(der: &[u8]) -> Result<CertificateInfo, CertificateError> {
    let cert = parse_x509(der)?;
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .map(San::from_general_name)
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => {
            return Err(CertificateError::MalformedExtension {
                name: "subjectAltName",
            });
        }
    };
    let is_ca = match cert.basic_constraints() {
        Ok(bc) => bc.is_some_and(|bc| bc.value.ca),
        Err(_) => {
            return Err(CertificateError::MalformedExtension {
                name: "basicConstraints",
            });
        }
    };
    Ok(CertificateInfo {
        der: der.to_vec(),
        serial_hex: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        sans,
        subject: Subject::from_name(cert.subject()),
        subject_der: cert.subject().as_raw().to_vec(),
        issuer_der: cert.issuer().as_raw().to_vec(),
        public_key: PublicKeyInfo::from_spki(cert.public_key()),
        is_ca,
        self_signed: is_self_signed(&cert),
    })
}

/// Parses DER that must be exactly one certificate.
pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|err| CertificateError::Malformed {
            cause: input::x509_error(err),
        })?;
    if !rest.is_empty() {
        return Err(CertificateError::TrailingData { len: rest.len() });
    }
    Ok(cert)
}

pub(crate) fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == cert.subject().as_raw() && cert.verify_signature(None).is_ok()
}

fn serial_hex(raw: &[u8]) -> String {
    match raw.iter().position(|&b| b != 0) {
        Some(first) => hex(&raw[first..]),
        None => "00".to_owned(),
    }
}

/// Splits a bundle of concatenated `CERTIFICATE` PEM blocks into DER certificates, in
/// order. Text around the blocks is ignored; a block of any other kind is an error.
pub fn pem_to_ders(pem: &[u8]) -> Result<Vec<Vec<u8>>, CertificateError> {
    if pem.len() > MAX_BUNDLE_LEN {
        return Err(CertificateError::TooLarge { len: pem.len() });
    }
    let blocks = pem::parse_many(pem).map_err(|cause| CertificateError::Pem { cause })?;
    if blocks.is_empty() {
        return Err(CertificateError::NoCertificates);
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(index, block)| {
            if block.tag() == "CERTIFICATE" {
                Ok(block.into_contents())
            } else {
                Err(CertificateError::WrongPemLabel {
                    index,
                    label: block.tag().to_owned(),
                })
            }
        })
        .collect()
}

/// Encodes DER certificates as concatenated `CERTIFICATE` PEM blocks.
pub fn ders_to_pem<D: AsRef<[u8]>>(ders: &[D]) -> String {
    let blocks: Vec<_> = ders
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.as_ref()))
        .collect();
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_many_config(&blocks, config)
}

/// Whether the certificate certifies this private key's public key.
pub fn key_matches_certificate(
    key: &PrivateKey,
    cert_der: &[u8],
) -> Result<bool, CertificateError> {
    spki_matches(&key.spki_der(), cert_der)
}

/// Whether the certificate's `SubjectPublicKeyInfo` equals `spki_der`, byte for byte.
pub fn spki_matches(spki_der: &[u8], cert_der: &[u8]) -> Result<bool, CertificateError> {
    let cert = parse_x509(cert_der)?;
    Ok(cert.public_key().raw == spki_der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_formatting() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x12]), "12");
    }

    #[test]
    fn bundles() {
        assert!(matches!(
            pem_to_ders(b""),
            Err(CertificateError::NoCertificates)
        ));
        assert!(matches!(
            pem_to_ders(b"junk"),
            Err(CertificateError::NoCertificates)
        ));
        let mixed = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                     -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = pem_to_ders(mixed.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PEM block 1 is labelled \"PRIVATE KEY\": expected CERTIFICATE"
        );
        let two = ders_to_pem(&[vec![1, 2, 3], vec![4, 5]]);
        assert_eq!(
            pem_to_ders(two.as_bytes()).unwrap(),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        let huge = vec![b'a'; MAX_BUNDLE_LEN + 1];
        assert!(matches!(
            pem_to_ders(&huge),
            Err(CertificateError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        for input in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", b"hello"] {
            assert!(parse_certificate(input).is_err(), "{input:?}");
            assert!(spki_matches(b"", input).is_err());
        }
    }
}
