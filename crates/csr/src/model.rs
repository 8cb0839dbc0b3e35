//! Plain descriptions of X.509 values shared by CSRs and certificates: names, SANs, keys.
//!
//! These own their data and hide x509-parser's borrowed types, so the policy and the roles
//! can hold and compare them without lifetimes or a parser dependency.

use std::fmt;
use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use crate::KeyAlgorithm;

/// One subject alternative name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum San {
    /// A `uniformResourceIdentifier`, e.g. a SPIFFE ID.
    Uri(String),
    /// A `dNSName`.
    Dns(String),
    /// An `iPAddress` of 4 or 16 bytes.
    Ip(IpAddr),
    /// An `rfc822Name` (e-mail address).
    Email(String),
    /// Any other kind of name, described in words (kind and, where short, value).
    Other(String),
}

impl San {
    pub(crate) fn from_general_name(name: &GeneralName<'_>) -> Self {
        match name {
            GeneralName::URI(uri) => Self::Uri((*uri).to_owned()),
            GeneralName::DNSName(dns) => Self::Dns((*dns).to_owned()),
            GeneralName::RFC822Name(email) => Self::Email((*email).to_owned()),
            GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                Some(ip) => Self::Ip(ip),
                None => Self::Other(format!("iPAddress of {} bytes", bytes.len())),
            },
            GeneralName::OtherName(oid, _) => Self::Other(format!("otherName {oid}")),
            GeneralName::DirectoryName(name) => Self::Other(format!("directoryName {name}")),
            GeneralName::RegisteredID(oid) => Self::Other(format!("registeredID {oid}")),
            GeneralName::X400Address(_) => Self::Other("x400Address".to_owned()),
            GeneralName::EDIPartyName(_) => Self::Other("ediPartyName".to_owned()),
            GeneralName::Invalid(tag, _) => {
                Self::Other(format!("undecodable name with tag {}", tag.0))
            }
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(uri) => write!(f, "URI {uri}"),
            Self::Dns(dns) => write!(f, "DNS name {dns}"),
            Self::Ip(ip) => write!(f, "IP address {ip}"),
            Self::Email(email) => write!(f, "e-mail address {email}"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

/// One attribute of a subject name, e.g. `CN=web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubjectAttribute {
    /// Short type name (`CN`, `O`, `OU`, `C`, `L`, `ST`, `DC`, ...) or the dotted OID.
    pub kind: String,
    /// The value as text; values that are not strings are shown as `#` and hex bytes.
    pub value: String,
}

impl fmt::Display for SubjectAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.kind, self.value)
    }
}

/// A subject name, attribute by attribute in encoding order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subject {
    attributes: Vec<SubjectAttribute>,
}

impl Subject {
    pub(crate) fn from_name(name: &X509Name<'_>) -> Self {
        let attributes = name
            .iter_attributes()
            .map(|attr| SubjectAttribute {
                kind: oid2abbrev(attr.attr_type(), oid_registry())
                    .map(str::to_owned)
                    .unwrap_or_else(|_| attr.attr_type().to_id_string()),
                value: match attr.as_str() {
                    Ok(text) => text.to_owned(),
                    Err(_) => format!("#{}", hex(attr.as_slice())),
                },
            })
            .collect();
        Self { attributes }
    }

    /// Whether the name has no attribute at all.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// The attributes in encoding order.
    pub fn attributes(&self) -> &[SubjectAttribute] {
        &self.attributes
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, attr) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{attr}")?;
        }
        Ok(())
    }
}

/// The named curve of an EC public key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (prime256v1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
    /// Another named curve, by dotted OID.
    Other(String),
    /// No named curve: absent or explicit parameters.
    Unnamed,
}

impl fmt::Display for EcCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::P256 => f.write_str("P-256"),
            Self::P384 => f.write_str("P-384"),
            Self::P521 => f.write_str("P-521"),
            Self::Other(oid) => write!(f, "curve {oid}"),
            Self::Unnamed => f.write_str("an unnamed curve"),
        }
    }
}

/// The algorithm of a public key, with the detail that decides whether it is acceptable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublicKeyAlgorithm {
    /// An elliptic curve key (`id-ecPublicKey`).
    Ec {
        /// Its curve.
        curve: EcCurve,
    },
    /// An RSA key.
    Rsa {
        /// Size of the modulus in bits, leading zero bits not counted; 0 when the key does
        /// not decode (a CSR with such a key never passes signature verification).
        modulus_bits: usize,
    },
    /// An Ed25519 key.
    Ed25519,
    /// Anything else, by dotted OID.
    Unknown {
        /// The algorithm OID.
        oid: String,
    },
}

impl PublicKeyAlgorithm {
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Self {
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let named = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let curve = match named {
                None => EcCurve::Unnamed,
                Some(curve) if curve == OID_EC_P256 => EcCurve::P256,
                Some(curve) if curve == OID_NIST_EC_P384 => EcCurve::P384,
                Some(curve) if curve == OID_NIST_EC_P521 => EcCurve::P521,
                Some(curve) => EcCurve::Other(curve.to_id_string()),
            };
            Self::Ec { curve }
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            let modulus_bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => significant_bits(rsa.modulus),
                _ => 0,
            };
            Self::Rsa { modulus_bits }
        } else if *oid == OID_SIG_ED25519 {
            Self::Ed25519
        } else {
            Self::Unknown {
                oid: oid.to_id_string(),
            }
        }
    }

    /// The nico-identity algorithm this key belongs to, if it is one we generate.
    pub fn key_algorithm(&self) -> Option<KeyAlgorithm> {
        match self {
            Self::Ec {
                curve: EcCurve::P256,
            } => Some(KeyAlgorithm::EcdsaP256),
            Self::Ec {
                curve: EcCurve::P384,
            } => Some(KeyAlgorithm::EcdsaP384),
            Self::Ed25519 => Some(KeyAlgorithm::Ed25519),
            Self::Rsa { modulus_bits: 2048 } => Some(KeyAlgorithm::Rsa2048),
            Self::Rsa { modulus_bits: 3072 } => Some(KeyAlgorithm::Rsa3072),
            Self::Rsa { modulus_bits: 4096 } => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        }
    }
}

impl fmt::Display for PublicKeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ec { curve } => write!(f, "EC {curve}"),
            Self::Rsa { modulus_bits } => write!(f, "RSA {modulus_bits} bits"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Unknown { oid } => write!(f, "unknown algorithm {oid}"),
        }
    }
}

/// The algorithm of a DER `SubjectPublicKeyInfo`, if it decodes.
pub(crate) fn spki_algorithm(spki_der: &[u8]) -> Option<PublicKeyAlgorithm> {
    use x509_parser::prelude::FromDer as _;
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    rest.is_empty()
        .then(|| PublicKeyAlgorithm::from_spki(&spki))
}

/// A public key: its algorithm and its DER `SubjectPublicKeyInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublicKeyInfo {
    algorithm: PublicKeyAlgorithm,
    spki_der: Vec<u8>,
}

impl PublicKeyInfo {
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Self {
        Self {
            algorithm: PublicKeyAlgorithm::from_spki(spki),
            spki_der: spki.raw.to_vec(),
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> &PublicKeyAlgorithm {
        &self.algorithm
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Number of bits in a big-endian unsigned integer, leading zeros not counted.
fn significant_bits(bytes: &[u8]) -> usize {
    let trimmed: &[u8] = match bytes.iter().position(|&b| b != 0) {
        Some(first) => &bytes[first..],
        None => return 0,
    };
    let top = trimmed[0];
    (trimmed.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
}

/// Lower-case hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // invariant: writing to a String cannot fail.
        write!(out, "{byte:02x}").expect("writing to a String");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_counting() {
        assert_eq!(significant_bits(&[]), 0);
        assert_eq!(significant_bits(&[0, 0]), 0);
        assert_eq!(significant_bits(&[1]), 1);
        assert_eq!(significant_bits(&[0, 0x80, 0]), 16);
        assert_eq!(significant_bits(&[0x7f, 0xff]), 15);
    }

    #[test]
    fn ip_lengths() {
        assert_eq!(
            ip_from_bytes(&[127, 0, 0, 1]),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert!(ip_from_bytes(&[0; 16]).is_some());
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x1f]), "00ab1f");
    }
}
