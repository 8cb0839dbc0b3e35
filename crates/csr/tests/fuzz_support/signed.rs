//! An independent reading of a CSR's signed envelope, for the fuzz targets of nico-csr and
//! nico-policy (each includes this file with `#[path]`): a minimal DER walker, a signature
//! check written straight against aws-lc-rs, and re-signing of a changed
//! `CertificationRequestInfo` so mutations reach the code behind the signature check.
//!
//! None of this uses nico-csr or x509-parser, so it can judge what they accept.

#![allow(
    dead_code,
    reason = "each crate's fuzz tests use their own subset of the helpers"
)]

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rcgen::SigningKey;

/// Tags used below.
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OID: u8 = 0x06;

/// One DER element: its tag, its whole encoding and its contents.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Element<'a> {
    pub(crate) tag: u8,
    pub(crate) raw: &'a [u8],
    pub(crate) contents: &'a [u8],
}

/// The first element of `input` (definite lengths of at most four bytes, low tag numbers)
/// and what follows it.
pub(crate) fn element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let element = Element {
        tag,
        raw: &input[..header + len],
        contents: &rest[..len],
    };
    Some((element, &rest[len..]))
}

/// Every element of `contents`, or `None` when they do not tile it exactly.
pub(crate) fn children(contents: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    let mut rest = contents;
    while !rest.is_empty() {
        let (child, tail) = element(rest)?;
        out.push(child);
        rest = tail;
    }
    Some(out)
}

/// The DER encoding of `contents` under `tag`.
pub(crate) fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&byte| byte == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// A CSR's envelope: `SEQUENCE { info, signatureAlgorithm, BIT STRING signature }`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Envelope<'a> {
    /// The signed `CertificationRequestInfo`, whole.
    pub(crate) info: Element<'a>,
    /// The `AlgorithmIdentifier` of the signature, whole.
    pub(crate) algorithm: Element<'a>,
    /// The signature bytes (after the unused-bits octet, whose count is ignored as
    /// x509-parser ignores it).
    pub(crate) signature: &'a [u8],
}

/// The envelope of a DER CSR with nothing after it.
pub(crate) fn envelope(der: &[u8]) -> Option<Envelope<'_>> {
    let (outer, rest) = element(der)?;
    if outer.tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let parts = children(outer.contents)?;
    let [info, algorithm, signature] = parts.as_slice() else {
        return None;
    };
    let (_, bits) = signature.contents.split_first()?;
    (info.tag == SEQUENCE && algorithm.tag == SEQUENCE && signature.tag == BIT_STRING).then_some(
        Envelope {
            info: *info,
            algorithm: *algorithm,
            signature: bits,
        },
    )
}

/// The `SubjectPublicKeyInfo` of a `CertificationRequestInfo`: its third element. What
/// follows it is not read (x509-parser tolerates a truncated attributes header there, which
/// hides nothing the signature does not cover).
pub(crate) fn info_spki<'a>(info: &Element<'a>) -> Option<Element<'a>> {
    let (_version, rest) = element(info.contents)?;
    let (_subject, rest) = element(rest)?;
    let (spki, _) = element(rest)?;
    (spki.tag == SEQUENCE).then_some(spki)
}

/// The OID contents of an `AlgorithmIdentifier` and its parameters' encoding (empty when
/// absent).
fn algorithm_parts<'a>(algorithm: &Element<'a>) -> Option<(&'a [u8], &'a [u8])> {
    let parts = children(algorithm.contents)?;
    match parts.as_slice() {
        [oid] if oid.tag == OID => Some((oid.contents, &[])),
        [oid, parameters] if oid.tag == OID => Some((oid.contents, parameters.raw)),
        _ => None,
    }
}

// OID contents, written out from the RFCs rather than taken from any parser.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const RSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const RSA_SHA1_OIW: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1d];
const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// `id-sha256` as a whole encoding; `id-sha384` and `id-sha512` differ in the last byte.
const SHA256_ENCODED: [u8; 11] = [
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];

/// The hash an RSA-PSS parameter block names, by the last byte of its `id-sha*` OID.
fn pss_hash(parameters: &[u8]) -> Option<u8> {
    let prefix = &SHA256_ENCODED[..10];
    parameters
        .windows(SHA256_ENCODED.len())
        .find(|window| window.starts_with(prefix))
        .map(|window| window[10])
}

/// The one verification algorithm that fits both the key the SPKI declares and the
/// signature algorithm: an EC key signs with ECDSA on its own curve, an RSA key with
/// PKCS#1 v1.5 or PSS (SHA-1 only with PKCS#1 v1.5, which Go's x509 and so cert-manager
/// still accept in CSRs), an Ed25519 key with Ed25519. Mixed pairs fit nothing.
fn fitting(
    key_oid: &[u8],
    key_parameters: &[u8],
    signature_oid: &[u8],
    signature_parameters: &[u8],
) -> Option<&'static dyn VerificationAlgorithm> {
    let algorithm: &'static dyn VerificationAlgorithm = match (key_oid, signature_oid) {
        (EC_PUBLIC_KEY, ECDSA_SHA256) if key_parameters == P256 => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        (EC_PUBLIC_KEY, ECDSA_SHA384) if key_parameters == P256 => {
            &signature::ECDSA_P256_SHA384_ASN1
        }
        (EC_PUBLIC_KEY, ECDSA_SHA256) if key_parameters == P384 => {
            &signature::ECDSA_P384_SHA256_ASN1
        }
        (EC_PUBLIC_KEY, ECDSA_SHA384) if key_parameters == P384 => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        (RSA_ENCRYPTION, RSA_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (RSA_ENCRYPTION, RSA_SHA384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (RSA_ENCRYPTION, RSA_SHA512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (RSA_ENCRYPTION, RSA_SHA1 | RSA_SHA1_OIW) => {
            &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        (RSA_ENCRYPTION, RSA_PSS) => match pss_hash(signature_parameters)? {
            0x01 => &signature::RSA_PSS_2048_8192_SHA256,
            0x02 => &signature::RSA_PSS_2048_8192_SHA384,
            0x03 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        },
        (ED25519, ED25519) if key_parameters.is_empty() => &signature::ED25519,
        _ => return None,
    };
    Some(algorithm)
}

/// Whether a DER CSR is signed by the key it carries, with an algorithm that fits that key,
/// judged without nico-csr.
pub(crate) fn verifies(der: &[u8]) -> bool {
    let check = || -> Option<bool> {
        let envelope = envelope(der)?;
        let spki = info_spki(&envelope.info)?;
        let spki_parts = children(spki.contents)?;
        let [key_algorithm, key] = spki_parts.as_slice() else {
            return None;
        };
        // The unused-bits count is ignored, as x509-parser ignores it: the bytes signed
        // with are the bytes described.
        let (_, key_bits) = key.contents.split_first()?;
        if key.tag != BIT_STRING {
            return None;
        }
        let (key_oid, key_parameters) = algorithm_parts(key_algorithm)?;
        let (signature_oid, signature_parameters) = algorithm_parts(&envelope.algorithm)?;
        let algorithm = fitting(key_oid, key_parameters, signature_oid, signature_parameters)?;
        let key = UnparsedPublicKey::new(algorithm, key_bits);
        Some(key.verify(envelope.info.raw, envelope.signature).is_ok())
    };
    check().unwrap_or(false)
}

/// The DER `SubjectPublicKeyInfo` inside a DER CSR's signed part.
pub(crate) fn spki_of(der: &[u8]) -> Option<Vec<u8>> {
    let envelope = envelope(der)?;
    Some(info_spki(&envelope.info)?.raw.to_vec())
}

/// A CSR around `info` (a whole `CertificationRequestInfo` encoding, valid or not), signed
/// by `key` under the algorithm identifier `algorithm` (a whole encoding).
pub(crate) fn sign(info: &[u8], algorithm: &[u8], key: &impl SigningKey) -> Vec<u8> {
    // invariant: the test keys are rcgen's own, which sign any message.
    let signature = key.sign(info).expect("a test key signs");
    let mut bits = vec![0];
    bits.extend(signature);
    let mut contents = info.to_vec();
    contents.extend_from_slice(algorithm);
    contents.extend(encode(BIT_STRING, &bits));
    encode(SEQUENCE, &contents)
}

/// `info` with its SPKI replaced by `spki`: a corpus CSR's contents made signable by a
/// fresh test key.
pub(crate) fn with_spki(info: &Element<'_>, spki: &[u8]) -> Option<Vec<u8>> {
    let fields = children(info.contents)?;
    let mut contents = Vec::new();
    for (at, field) in fields.iter().enumerate() {
        contents.extend_from_slice(if at == 2 { spki } else { field.raw });
    }
    (fields.len() >= 3).then(|| encode(SEQUENCE, &contents))
}
