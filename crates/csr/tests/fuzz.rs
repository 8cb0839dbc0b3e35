//! Fuzz targets: CSR parsing and signature verification (`parse_csr`, `parse_csr_pem`) on
//! hostile DER and PEM, judged against an independent reading of the signed envelope.
//!
//! Corpus: `tests/corpus/csr/` (valid requests of every key type and odd shape, from the
//! crate's own builder, rcgen and the `openssl` CLI, and hostile ones: broken framing, huge
//! lengths and names, mismatched keys, SHA-1). Besides plain mutations, `fuzz_csr_resigned`
//! changes a corpus request's signed part and signs it again with a test key, so mutations
//! get past the signature check into the extension and name parsing behind it. See
//! `tests/support/fuzzing.rs` at the workspace root for replay and mutation;
//! `cargo xtask fuzz --target csr` runs these for longer.

#[path = "../../../tests/support/fuzzing.rs"]
mod fuzzing;
#[path = "fuzz_support/signed.rs"]
mod signed;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nico_csr::{CsrError, ParsedCsr, parse_csr, parse_csr_pem};
use proptest::prelude::*;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SignatureAlgorithm};

/// The longest error message a requester may be shown: messages repeat bits of the input
/// (labels, OIDs), and a condition or an admission answer must not grow with it.
const MAX_MESSAGE_LEN: usize = 512;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/csr")
}

/// The DER a PEM or DER input holds, decoded without nico-csr (`None` when it is neither).
fn der_of(input: &[u8]) -> Option<Vec<u8>> {
    if input.first() == Some(&signed::SEQUENCE) {
        return Some(input.to_vec());
    }
    pem::parse(input).ok().map(pem::Pem::into_contents)
}

/// What must hold for any input: an error is short and says something; an accepted request
/// is the DER it was given, signed by its own key with a fitting algorithm (checked without
/// nico-csr), and reads the same again from its DER and from PEM.
fn check_parse(input: &[u8]) -> Result<Option<ParsedCsr>, TestCaseError> {
    let csr = match parse_csr(input) {
        Ok(csr) => csr,
        Err(err) => {
            check_error(&err)?;
            return Ok(None);
        }
    };
    let der = csr.der();
    let given = der_of(input);
    prop_assert_eq!(
        Some(der),
        given.as_deref(),
        "the DER kept is not the input's"
    );
    prop_assert!(
        signed::verifies(der),
        "accepted a request that an independent check does not find signed by its own key: \
         {}",
        hex(der)
    );
    let signed_key = signed::spki_of(der);
    prop_assert_eq!(
        Some(csr.public_key().spki_der()),
        signed_key.as_deref(),
        "the key described is not the key signed"
    );
    prop_assert_eq!(&parse_csr(der).map_err(|e| e.to_string()), &Ok(csr.clone()));
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.to_vec()));
    prop_assert_eq!(
        &parse_csr_pem(pem.as_bytes()).map_err(|e| e.to_string()),
        &Ok(csr.clone())
    );
    prop_assert!(csr.uri_sans().count() <= csr.sans().len());
    Ok(Some(csr))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn check_error(err: &CsrError) -> Result<(), TestCaseError> {
    let message = err.to_string();
    prop_assert!(!message.is_empty());
    prop_assert!(
        message.len() <= MAX_MESSAGE_LEN,
        "a {}-byte message: {}...",
        message.len(),
        message.chars().take(120).collect::<String>()
    );
    Ok(())
}

/// A test key, the algorithm identifier it signs under and its SPKI.
struct TestKey {
    key: KeyPair,
    algorithm: Vec<u8>,
    spki: Vec<u8>,
}

/// One key per algorithm the driver may use, made once: key generation per case would
/// dominate the run.
fn test_keys() -> &'static [TestKey] {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let algorithms: [&'static SignatureAlgorithm; 4] = [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_RSA_SHA256,
        ];
        algorithms
            .into_iter()
            .map(|algorithm| {
                let key = KeyPair::generate_for(algorithm).unwrap();
                let mut params = CertificateParams::default();
                params.distinguished_name = DistinguishedName::new();
                let request = params.serialize_request(&key).unwrap();
                let envelope = signed::envelope(request.der()).unwrap();
                let spki = key.subject_public_key_info();
                assert_eq!(signed::info_spki(&envelope.info).unwrap().raw, spki);
                TestKey {
                    algorithm: envelope.algorithm.raw.to_vec(),
                    spki,
                    key,
                }
            })
            .collect()
    })
}

/// The signed parts of the corpus entries that have one, as DER `CertificationRequestInfo`s.
fn signed_parts() -> Vec<Vec<u8>> {
    fuzzing::seeds(&corpus_dir())
        .iter()
        .filter_map(|input| der_of(input))
        .filter_map(|der| signed::envelope(&der).map(|e| e.info.raw.to_vec()))
        .collect()
}

/// `info` with `key`'s SPKI, its contents changed by `mutation` (the outer length kept
/// right, so the change lands inside), signed by `key`.
fn resigned(info: &[u8], key: &TestKey, mutation: Option<&fuzzing::Mutation>) -> Vec<u8> {
    let Some((element, _)) = signed::element(info) else {
        return signed::sign(info, &key.algorithm, &key.key);
    };
    let info = signed::with_spki(&element, &key.spki).unwrap_or_else(|| info.to_vec());
    let info = match mutation {
        None => info,
        Some(mutation) => {
            let (element, _) = signed::element(&info).expect("just encoded");
            let changed = mutation.apply(element.contents.to_vec(), &[element.contents.to_vec()]);
            signed::encode(signed::SEQUENCE, &changed)
        }
    };
    signed::sign(&info, &key.algorithm, &key.key)
}

/// Every corpus entry, and its signed part signed again by each test key: the re-signed
/// twin of an accepted request reads the same but for the key, since the signature check
/// is the only thing the re-signing target gets past. Every failure is listed.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let mut failures = Vec::new();
    for (name, input) in fuzzing::corpus(&corpus_dir()) {
        match check_parse(&input) {
            Err(failure) => failures.push(format!("csr/{name}: {failure}")),
            Ok(None) => {}
            Ok(Some(original)) => {
                if let Err(failure) = check_twins(&original) {
                    failures.push(format!("csr/{name} re-signed: {failure}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_twins(original: &ParsedCsr) -> Result<(), TestCaseError> {
    let info = signed::envelope(original.der())
        .ok_or_else(|| TestCaseError::fail("no envelope"))?
        .info
        .raw
        .to_vec();
    for key in test_keys() {
        let twin = check_parse(&resigned(&info, key, None))?
            .ok_or_else(|| TestCaseError::fail("the re-signed twin is refused"))?;
        prop_assert_eq!(twin.sans(), original.sans());
        prop_assert_eq!(twin.subject(), original.subject());
        prop_assert_eq!(twin.other_extensions(), original.other_extensions());
        prop_assert_eq!(twin.key_usages(), original.key_usages());
        prop_assert_eq!(twin.public_key().spki_der(), key.spki.as_slice());
    }
    Ok(())
}

fn corpus_entry(name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(name)).unwrap()
}

/// Found by this target: x509-parser chooses the verifier from the signature algorithm, so
/// an Ed25519 key declared as a P-256 key (and signed with Ed25519) was accepted and
/// described as P-256, which the policy allows.
#[test]
fn regression_a_key_declared_as_another_algorithm_is_refused() {
    let err = parse_csr(&corpus_entry("key-algorithm-mismatch.pem")).unwrap_err();
    assert!(
        matches!(err, CsrError::SignatureKeyMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "signature algorithm 1.3.101.112 of the certificate signing request does not fit its \
         EC P-256 key"
    );
}

/// Found by this target: a 30,000-character PEM label or a 10,000-arc signature OID was
/// repeated whole in the message that becomes a Denied condition or an admission answer.
#[test]
fn regression_messages_do_not_repeat_long_input() {
    for (name, start) in [
        ("long-pem-label.pem", "PEM block is labelled \"XXXX"),
        ("long-signature-oid.der", "signature algorithm 1.2.1.1"),
    ] {
        let message = parse_csr(&corpus_entry(name)).unwrap_err().to_string();
        assert!(message.starts_with(start), "{name}: {message}");
        assert!(message.len() < 200, "{name}: {} bytes", message.len());
    }
}

/// Found by this target: x509-parser reads the key, its algorithm identifier and the
/// signature algorithm whatever their tags, so requests whose key algorithm was tagged 0,
/// whose key was an application-class element or whose signature algorithm was a
/// private-class element, or whose attributes ran past their declared length, were
/// accepted and described as well-formed (Go's x509, and so
/// Vault, refuse them).
#[test]
fn regression_parts_with_wrong_tags_are_refused() {
    for name in [
        "key-algorithm-wrong-tag.der",
        "key-curve-wrong-tag.der",
        "key-wrong-class.der",
        "signature-algorithm-wrong-class.der",
        // Found through the policy's target: x509-parser read attributes past the length
        // of their `[0]` element.
        "attributes-longer-than-declared.der",
        // Found through the policy's target in `cargo xtask fuzz`: a SAN's `critical` spelled
        // 0x01 (BER, not DER) read as true.
        "critical-spelled-ber.pem",
        // Found by `cargo xtask fuzz`: the version tagged [APPLICATION 2], not INTEGER.
        "version-wrong-tag.der",
    ] {
        let err = parse_csr(&corpus_entry(name)).unwrap_err();
        assert!(matches!(err, CsrError::Malformed { .. }), "{name}: {err:?}");
    }
}

proptest! {
    #![proptest_config(fuzzing::config(1000))]

    #[test]
    fn fuzz_csr(input in fuzzing::inputs(fuzzing::seeds(&corpus_dir()), 2048)) {
        check_parse(&input)?;
    }

    #[test]
    fn fuzz_csr_resigned(
        info in prop::sample::select(signed_parts()),
        key in 0..4usize,
        mutation in prop::option::weighted(0.9, fuzzing::mutation()),
    ) {
        let der = resigned(&info, &test_keys()[key], mutation.as_ref());
        check_parse(&der)?;
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        check_parse(pem.as_bytes())?;
    }
}
