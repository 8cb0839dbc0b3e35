//! Parsing CSRs from untrusted bytes into a [`ParsedCsr`] whose signature has been verified.
//!
//! Whatever arrives in `spec.request` is hostile until proven otherwise: sizes are bounded
//! before any decoding, every failure is an error value (never a panic), and the contents
//! are exposed only after the self-signature checks out.

use std::collections::BTreeSet;
use std::fmt;

use x509_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::error::X509Error;
use x509_parser::extensions::{
    ExtendedKeyUsage as X509Eku, KeyUsage as X509KeyUsage, ParsedExtension, X509Extension,
};
use x509_parser::objects::oid_registry;
use x509_parser::oid_registry::{
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA1WITHRSA, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA, OID_PKCS9_EXTENSION_REQUEST, OID_SHA1_WITH_RSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME, Oid,
};
use x509_parser::prelude::FromDer;

use crate::input::{self, Decoded};
use crate::model::{PublicKeyAlgorithm, PublicKeyInfo, San, Subject};

/// The largest CSR accepted, in bytes of input (PEM or DER). An SVID request is well under
/// 1 KiB; this leaves room for RSA keys and long names while bounding the parser's work.
pub const MAX_CSR_LEN: usize = 64 * 1024;

const PEM_LABELS: &[&str] = &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// Deepest nesting of DER elements accepted; an SVID request nests six deep.
const MAX_DEPTH: usize = 32;

/// Longest piece of the input (a PEM label, an OID) repeated in an error message: messages
/// reach conditions and admission answers, which must not grow with hostile input.
const SHOWN: usize = 64;

/// Why bytes were not accepted as a certificate signing request.
///
/// Messages describe the input only and are safe to show to the requester.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// No bytes at all.
    #[error("certificate signing request is empty")]
    Empty,

    /// More than [`MAX_CSR_LEN`] bytes.
    #[error("certificate signing request is {len} bytes long: at most {MAX_CSR_LEN} are accepted")]
    TooLarge {
        /// Length of the input.
        len: usize,
    },

    /// PEM was required and the input has no PEM block.
    #[error("certificate signing request is not PEM: expected a CERTIFICATE REQUEST block")]
    NotPem,

    /// The input is neither a PEM block nor DER.
    #[error("certificate signing request is neither PEM nor DER")]
    NotPemOrDer,

    /// The PEM framing or its base64 is broken.
    #[error("failed to decode the PEM block of the certificate signing request")]
    Pem {
        /// The PEM decoder's error.
        #[source]
        cause: pem::PemError,
    },

    /// A single PEM block was expected.
    #[error("found {count} PEM blocks: expected exactly one CERTIFICATE REQUEST")]
    SeveralPemBlocks {
        /// Number of blocks found.
        count: usize,
    },

    /// The PEM block holds something else, e.g. a certificate or a key.
    #[error("PEM block is labelled {label:?}: expected CERTIFICATE REQUEST")]
    WrongPemLabel {
        /// The label found.
        label: String,
    },

    /// The DER is not a PKCS#10 structure.
    #[error("failed to parse the certificate signing request: not a valid PKCS#10 structure")]
    Malformed {
        /// The parser's error.
        #[source]
        cause: X509Error,
    },

    /// Bytes follow the DER structure.
    #[error("{len} unexpected bytes follow the certificate signing request")]
    TrailingData {
        /// How many bytes follow.
        len: usize,
    },

    /// The version field is not v1 (0), the only PKCS#10 version.
    #[error("certificate signing request has version {version}: expected 0")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },

    /// The signature algorithm is not one the verifier supports.
    #[error("signature algorithm {oid} of the certificate signing request is not supported")]
    UnsupportedSignatureAlgorithm {
        /// Dotted OID of the signature algorithm.
        oid: String,
    },

    /// The signature does not verify with the request's own public key.
    #[error("signature of the certificate signing request does not verify with its public key")]
    BadSignature,

    /// The signature algorithm is not one the declared key signs with (e.g. an Ed25519
    /// signature under a key declared as EC P-256).
    #[error(
        "signature algorithm {signature} of the certificate signing request does not fit its \
         {key} key"
    )]
    SignatureKeyMismatch {
        /// Dotted OID of the signature algorithm.
        signature: String,
        /// The key's algorithm as declared.
        key: String,
    },

    /// More than one extensionRequest attribute.
    #[error("certificate signing request has several extensionRequest attributes")]
    SeveralExtensionRequests,

    /// An extension appears twice, which could let two readers see different values.
    #[error("extension {name} is requested more than once")]
    DuplicateExtension {
        /// Name or dotted OID of the extension.
        name: String,
    },

    /// A known extension's value does not decode.
    #[error("extension {name} is malformed")]
    MalformedExtension {
        /// Name or dotted OID of the extension.
        name: String,
    },
}

/// A key usage bit (RFC 5280, section 4.2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyUsage {
    /// `digitalSignature`.
    DigitalSignature,
    /// `nonRepudiation`, also called contentCommitment.
    NonRepudiation,
    /// `keyEncipherment`.
    KeyEncipherment,
    /// `dataEncipherment`.
    DataEncipherment,
    /// `keyAgreement`.
    KeyAgreement,
    /// `keyCertSign`.
    KeyCertSign,
    /// `cRLSign`.
    CrlSign,
    /// `encipherOnly`.
    EncipherOnly,
    /// `decipherOnly`.
    DecipherOnly,
}

impl KeyUsage {
    /// The RFC 5280 name, e.g. `digitalSignature`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DigitalSignature => "digitalSignature",
            Self::NonRepudiation => "nonRepudiation",
            Self::KeyEncipherment => "keyEncipherment",
            Self::DataEncipherment => "dataEncipherment",
            Self::KeyAgreement => "keyAgreement",
            Self::KeyCertSign => "keyCertSign",
            Self::CrlSign => "cRLSign",
            Self::EncipherOnly => "encipherOnly",
            Self::DecipherOnly => "decipherOnly",
        }
    }

    fn set_from(bits: &X509KeyUsage) -> BTreeSet<Self> {
        let all = [
            (bits.digital_signature(), Self::DigitalSignature),
            (bits.non_repudiation(), Self::NonRepudiation),
            (bits.key_encipherment(), Self::KeyEncipherment),
            (bits.data_encipherment(), Self::DataEncipherment),
            (bits.key_agreement(), Self::KeyAgreement),
            (bits.key_cert_sign(), Self::KeyCertSign),
            (bits.crl_sign(), Self::CrlSign),
            (bits.encipher_only(), Self::EncipherOnly),
            (bits.decipher_only(), Self::DecipherOnly),
        ];
        all.into_iter()
            .filter(|(set, _)| *set)
            .map(|(_, usage)| usage)
            .collect()
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An extended key usage purpose (RFC 5280, section 4.2.1.12).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExtendedKeyUsage {
    /// `serverAuth`.
    ServerAuth,
    /// `clientAuth`.
    ClientAuth,
    /// `codeSigning`.
    CodeSigning,
    /// `emailProtection`.
    EmailProtection,
    /// `timeStamping`.
    TimeStamping,
    /// `OCSPSigning`.
    OcspSigning,
    /// `anyExtendedKeyUsage`.
    Any,
    /// Any other purpose, by dotted OID.
    Other(String),
}

impl ExtendedKeyUsage {
    fn set_from(eku: &X509Eku<'_>) -> BTreeSet<Self> {
        let known = [
            (eku.server_auth, Self::ServerAuth),
            (eku.client_auth, Self::ClientAuth),
            (eku.code_signing, Self::CodeSigning),
            (eku.email_protection, Self::EmailProtection),
            (eku.time_stamping, Self::TimeStamping),
            (eku.ocsp_signing, Self::OcspSigning),
            (eku.any, Self::Any),
        ];
        let known = known
            .into_iter()
            .filter(|(set, _)| *set)
            .map(|(_, eku)| eku);
        let other = eku.other.iter().map(|oid| Self::Other(oid.to_id_string()));
        known.chain(other).collect()
    }
}

impl fmt::Display for ExtendedKeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ServerAuth => "serverAuth",
            Self::ClientAuth => "clientAuth",
            Self::CodeSigning => "codeSigning",
            Self::EmailProtection => "emailProtection",
            Self::TimeStamping => "timeStamping",
            Self::OcspSigning => "OCSPSigning",
            Self::Any => "anyExtendedKeyUsage",
            Self::Other(oid) => oid,
        })
    }
}

/// The basicConstraints extension as requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BasicConstraints {
    /// Whether a CA certificate is requested.
    pub is_ca: bool,
    /// The requested path length limit, if any.
    pub path_len: Option<u32>,
}

/// A requested extension other than SAN, key usage, extended key usage and basic
/// constraints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OtherExtension {
    /// Dotted OID.
    pub oid: String,
    /// Short name when the OID is well known, e.g. `nameConstraints`.
    pub name: Option<String>,
    /// Whether it is marked critical.
    pub critical: bool,
}

impl fmt::Display for OtherExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.oid),
            None => f.write_str(&self.oid),
        }
    }
}

/// A certificate signing request whose signature has been verified, with its contents laid
/// out plainly. Only [`parse_csr`] and [`parse_csr_pem`] make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCsr {
    der: Vec<u8>,
    subject: Subject,
    sans: Vec<San>,
    san_critical: Option<bool>,
    key_usages: BTreeSet<KeyUsage>,
    extended_key_usages: BTreeSet<ExtendedKeyUsage>,
    basic_constraints: Option<BasicConstraints>,
    other_extensions: Vec<OtherExtension>,
    other_attributes: Vec<String>,
    public_key: PublicKeyInfo,
}

impl ParsedCsr {
    /// The DER encoding of the request.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject name; an SVID request has an empty one.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Every requested subject alternative name, in encoding order.
    pub fn sans(&self) -> &[San] {
        &self.sans
    }

    /// The URI SANs only, in encoding order.
    pub fn uri_sans(&self) -> impl Iterator<Item = &str> {
        self.sans.iter().filter_map(|san| match san {
            San::Uri(uri) => Some(uri.as_str()),
            _ => None,
        })
    }

    /// Whether the SAN extension is marked critical; `None` when there is no SAN extension.
    pub fn san_critical(&self) -> Option<bool> {
        self.san_critical
    }

    /// Requested key usages; empty when the extension is absent.
    pub fn key_usages(&self) -> &BTreeSet<KeyUsage> {
        &self.key_usages
    }

    /// Requested extended key usages; empty when the extension is absent.
    pub fn extended_key_usages(&self) -> &BTreeSet<ExtendedKeyUsage> {
        &self.extended_key_usages
    }

    /// The basicConstraints extension, when requested.
    pub fn basic_constraints(&self) -> Option<BasicConstraints> {
        self.basic_constraints
    }

    /// Whether a CA certificate is requested through basicConstraints.
    pub fn is_ca(&self) -> bool {
        self.basic_constraints.is_some_and(|bc| bc.is_ca)
    }

    /// Requested extensions other than SAN, key usage, extended key usage and basic
    /// constraints, in encoding order.
    pub fn other_extensions(&self) -> &[OtherExtension] {
        &self.other_extensions
    }

    /// Dotted OIDs of CSR attributes other than extensionRequest (e.g. challengePassword).
    pub fn other_attributes(&self) -> &[String] {
        &self.other_attributes
    }

    /// The public key to be certified.
    pub fn public_key(&self) -> &PublicKeyInfo {
        &self.public_key
    }
}

/// Parses and verifies a CSR given as one PEM block or as DER.
pub fn parse_csr(pem_or_der: &[u8]) -> Result<ParsedCsr, CsrError> {
    check_size(pem_or_der)?;
    // DER is tried first because its first byte is fixed; PEM may carry text in front.
    if input::looks_like_der(pem_or_der) {
        parse_der(pem_or_der.to_vec())
    } else if input::looks_like_pem(pem_or_der) {
        parse_csr_pem(pem_or_der)
    } else {
        Err(CsrError::NotPemOrDer)
    }
}

/// Parses and verifies a CSR that must be exactly one PEM `CERTIFICATE REQUEST` block, as
/// cert-manager's `spec.request` carries it.
pub fn parse_csr_pem(pem: &[u8]) -> Result<ParsedCsr, CsrError> {
    check_size(pem)?;
    let der = match input::decode_single_pem(pem, PEM_LABELS) {
        Decoded::Der(der) => der,
        Decoded::NotPem => return Err(CsrError::NotPem),
        Decoded::Invalid(cause) => return Err(CsrError::Pem { cause }),
        Decoded::Several(count) => return Err(CsrError::SeveralPemBlocks { count }),
        Decoded::WrongLabel(label) => {
            return Err(CsrError::WrongPemLabel {
                label: clip(&label),
            });
        }
    };
    parse_der(der)
}

fn check_size(input: &[u8]) -> Result<(), CsrError> {
    match input.len() {
        0 => Err(CsrError::Empty),
        len if len > MAX_CSR_LEN => Err(CsrError::TooLarge { len }),
        _ => Ok(()),
    }
}

fn parse_der(der: Vec<u8>) -> Result<ParsedCsr, CsrError> {
    if !well_framed_request(&der) {
        return Err(CsrError::Malformed {
            cause: X509Error::Generic,
        });
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|err| CsrError::Malformed {
            cause: input::x509_error(err),
        })?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData { len: rest.len() });
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(CsrError::UnsupportedVersion {
            version: info.version.0,
        });
    }
    if !strict_shape(&der) {
        return Err(CsrError::Malformed {
            cause: X509Error::InvalidSPKI,
        });
    }
    let signature_oid = &csr.signature_algorithm.algorithm;
    csr.verify_signature().map_err(|err| match err {
        X509Error::SignatureUnsupportedAlgorithm => CsrError::UnsupportedSignatureAlgorithm {
            oid: clip(&signature_oid.to_id_string()),
        },
        _ => CsrError::BadSignature,
    })?;
    // x509-parser picks the verifier from the signature algorithm (and an ECDSA curve from
    // the key's parameters), not from the key's declared algorithm.
    let key = PublicKeyAlgorithm::from_spki(&info.subject_pki);
    let ed25519_parameters =
        key == PublicKeyAlgorithm::Ed25519 && info.subject_pki.algorithm.parameters.is_some();
    if !signature_fits_key(signature_oid, &key) || ed25519_parameters {
        return Err(CsrError::SignatureKeyMismatch {
            signature: clip(&signature_oid.to_id_string()),
            key: clip(&key.to_string()),
        });
    }

    let mut extensions: Option<&[X509Extension<'_>]> = None;
    let mut other_attributes = Vec::new();
    for attribute in info.iter_attributes() {
        match attribute.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(request) => {
                if extensions.replace(&request.extensions).is_some() {
                    return Err(CsrError::SeveralExtensionRequests);
                }
            }
            // The parser only yields ExtensionRequest for the extensionRequest OID; anything
            // else is reported by OID for the policy to judge.
            _ if attribute.oid == OID_PKCS9_EXTENSION_REQUEST => {
                return Err(CsrError::MalformedExtension {
                    name: "extensionRequest".into(),
                });
            }
            _ => other_attributes.push(attribute.oid.to_id_string()),
        }
    }

    let mut parsed = ParsedCsr {
        der: Vec::new(),
        subject: Subject::from_name(&info.subject),
        sans: Vec::new(),
        san_critical: None,
        key_usages: BTreeSet::new(),
        extended_key_usages: BTreeSet::new(),
        basic_constraints: None,
        other_extensions: Vec::new(),
        other_attributes,
        public_key: PublicKeyInfo::from_spki(&info.subject_pki),
    };
    let mut seen = BTreeSet::new();
    for extension in extensions.unwrap_or_default() {
        let name = extension_name(extension);
        if !seen.insert(extension.oid.to_id_string()) {
            return Err(CsrError::DuplicateExtension { name });
        }
        record_extension(&mut parsed, extension, name)?;
    }
    parsed.der = der;
    Ok(parsed)
}

/// Whether a signature algorithm belongs to the family of the declared key: ECDSA for an
/// EC key, PKCS#1 v1.5 or PSS for RSA (SHA-1 included: Go's x509, and so cert-manager,
/// still accept it in CSRs), Ed25519 for Ed25519.
fn signature_fits_key(signature: &Oid<'_>, key: &PublicKeyAlgorithm) -> bool {
    let any = |oids: &[Oid<'_>]| oids.contains(signature);
    match key {
        PublicKeyAlgorithm::Ec { .. } => {
            any(&[OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384])
        }
        PublicKeyAlgorithm::Rsa { .. } => any(&[
            OID_PKCS1_SHA1WITHRSA,
            OID_SHA1_WITH_RSA,
            OID_PKCS1_SHA256WITHRSA,
            OID_PKCS1_SHA384WITHRSA,
            OID_PKCS1_SHA512WITHRSA,
            OID_PKCS1_RSASSAPSS,
        ]),
        PublicKeyAlgorithm::Ed25519 => *signature == OID_SIG_ED25519,
        PublicKeyAlgorithm::Unknown { .. } => false,
    }
}

/// Whether the parts a verdict rests on are spelled with the tags DER requires: the
/// envelope `SEQUENCE { info, algorithm, BIT STRING }`, the info `SEQUENCE { INTEGER,
/// SEQUENCE, key, [0] attributes }`, the key `SEQUENCE { algorithm, BIT STRING }` and both
/// algorithm identifiers `SEQUENCE { OID, OID or NULL or nothing }`. x509-parser reads
/// these parts whatever their tags, so a malformed request (which Go's x509, and so Vault,
/// refuses) would otherwise be described, judged and signed as a well-formed one.
fn strict_shape(der: &[u8]) -> bool {
    let check = || -> Option<bool> {
        let (_, envelope) = Any::from_der(der).ok()?;
        let [info, signature_algorithm, signature] = elements(envelope.data)?;
        let [version, subject, spki, attributes] = elements(info.data)?;
        let [key_algorithm, key] = elements(spki.data)?;
        let attributes_ok = attributes.header.class() == Class::ContextSpecific
            && attributes.tag() == Tag(0)
            && attributes.header.is_constructed();
        Some(
            is(&envelope, Tag::Sequence)
                && is(&info, Tag::Sequence)
                && is(&version, Tag::Integer)
                && is(&subject, Tag::Sequence)
                && is(&spki, Tag::Sequence)
                && attributes_ok
                && strict_algorithm(&signature_algorithm)?
                && is(&signature, Tag::BitString)
                && strict_algorithm(&key_algorithm)?
                && is(&key, Tag::BitString),
        )
    };
    check().unwrap_or(false)
}

/// [`well_framed`] for the request's outer element; what follows it is reported as trailing
/// data, and an outer element that does not decode is left to x509-parser to describe.
fn well_framed_request(der: &[u8]) -> bool {
    match Any::from_der(der) {
        Ok((_, outer)) => !outer.header.is_constructed() || well_framed(outer.data, 1),
        Err(_) => true,
    }
}

/// Whether `data` is a run of DER elements and every constructed one, all the way down (at
/// most [`MAX_DEPTH`] levels), is filled exactly by its children, BOOLEANs spelled as DER
/// spells them. x509-parser reads a CSR's attributes past the length their `[0]` element
/// declares, so a request Go's x509 refuses would otherwise be judged on bytes outside the
/// element they claim to be in.
fn well_framed(mut data: &[u8], depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    while !data.is_empty() {
        let Ok((rest, element)) = Any::from_der(data) else {
            return false;
        };
        if element.header.is_constructed() && !well_framed(element.data, depth + 1) {
            return false;
        }
        // DER spells a BOOLEAN one way: x509-parser, like OpenSSL, reads any non-zero byte
        // as true (an extension's `critical` among them), Go's x509 refuses it.
        let boolean = element.header.class() == Class::Universal && element.tag() == Tag::Boolean;
        if boolean && !matches!(element.data, [0x00] | [0xff]) {
            return false;
        }
        data = rest;
    }
    true
}

/// `SEQUENCE { OID, OID or NULL or nothing }`.
fn strict_algorithm(algorithm: &Any<'_>) -> Option<bool> {
    let (parameters, oid) = Any::from_der(algorithm.data).ok()?;
    let parameters_ok = match parameters {
        [] => true,
        bytes => {
            let (rest, parameters) = Any::from_der(bytes).ok()?;
            rest.is_empty() && (is(&parameters, Tag::Oid) || is(&parameters, Tag::Null))
        }
    };
    Some(is(algorithm, Tag::Sequence) && is(&oid, Tag::Oid) && parameters_ok)
}

/// Exactly `N` elements filling `data`.
fn elements<const N: usize>(mut data: &[u8]) -> Option<[Any<'_>; N]> {
    let mut found = Vec::with_capacity(N);
    while !data.is_empty() {
        let (rest, element) = Any::from_der(data).ok()?;
        found.push(element);
        data = rest;
    }
    found.try_into().ok()
}

/// Whether an element carries the universal `tag`, constructed exactly when it is a
/// SEQUENCE.
fn is(element: &Any<'_>, tag: Tag) -> bool {
    element.header.class() == Class::Universal
        && element.tag() == tag
        && element.header.is_constructed() == (tag == Tag::Sequence)
}

/// Input text cut to [`SHOWN`] characters for a message.
fn clip(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

fn record_extension(
    parsed: &mut ParsedCsr,
    extension: &X509Extension<'_>,
    name: String,
) -> Result<(), CsrError> {
    let oid = &extension.oid;
    let known = *oid == OID_X509_EXT_SUBJECT_ALT_NAME
        || *oid == OID_X509_EXT_KEY_USAGE
        || *oid == OID_X509_EXT_EXTENDED_KEY_USAGE
        || *oid == OID_X509_EXT_BASIC_CONSTRAINTS;
    match extension.parsed_extension() {
        ParsedExtension::SubjectAlternativeName(san) => {
            parsed.sans = san
                .general_names
                .iter()
                .map(San::from_general_name)
                .collect();
            parsed.san_critical = Some(extension.critical);
        }
        ParsedExtension::KeyUsage(bits) => parsed.key_usages = KeyUsage::set_from(bits),
        ParsedExtension::ExtendedKeyUsage(eku) => {
            parsed.extended_key_usages = ExtendedKeyUsage::set_from(eku);
        }
        ParsedExtension::BasicConstraints(bc) => {
            parsed.basic_constraints = Some(BasicConstraints {
                is_ca: bc.ca,
                path_len: bc.path_len_constraint,
            });
        }
        // A known OID that did not decode into its type is malformed, whatever the parser
        // chose to call it; an unknown OID is merely "other".
        _ if known => return Err(CsrError::MalformedExtension { name }),
        ParsedExtension::ParseError { .. } => return Err(CsrError::MalformedExtension { name }),
        _ => parsed.other_extensions.push(OtherExtension {
            oid: oid.to_id_string(),
            name: registry_name(extension),
            critical: extension.critical,
        }),
    }
    Ok(())
}

fn registry_name(extension: &X509Extension<'_>) -> Option<String> {
    oid_registry()
        .get(&extension.oid)
        .map(|entry| entry.sn().to_owned())
}

fn extension_name(extension: &X509Extension<'_>) -> String {
    registry_name(extension).unwrap_or_else(|| clip(&extension.oid.to_id_string()))
}
