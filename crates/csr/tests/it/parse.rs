//! `parse_csr` on everything but the happy path: odd but valid requests are described
//! faithfully, broken or hostile bytes give a clear error and never a panic.

use std::net::IpAddr;

use nico_csr::{
    CsrError, EcCurve, ExtendedKeyUsage, KeyAlgorithm, KeyUsage, MAX_CSR_LEN, PrivateKey,
    PublicKeyAlgorithm, San, build_spiffe_csr, parse_csr, parse_csr_pem,
};
use nico_spiffe_id::SpiffeId;
use proptest::prelude::*;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, OtherNameValue, SanType,
    SignatureAlgorithm,
};

fn uri(text: &str) -> SanType {
    SanType::URI(Ia5String::try_from(text).unwrap())
}

fn bare() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
}

fn request(params: &CertificateParams, alg: &'static SignatureAlgorithm) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn good_der() -> Vec<u8> {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let id = SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
    let pem = build_spiffe_csr(&key, &id).unwrap();
    parse_csr(pem.as_bytes()).unwrap().der().to_vec()
}

fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

#[test]
fn a_request_full_of_things_is_described_faithfully() {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "web");
    name.push(DnType::OrganizationName, "acme");
    name.push(DnType::OrganizationalUnitName, "ops");
    params.distinguished_name = name;
    params.subject_alt_names = vec![
        SanType::DnsName(Ia5String::try_from("web.example").unwrap()),
        SanType::IpAddress(IpAddr::from([10, 0, 0, 1])),
        SanType::Rfc822Name(Ia5String::try_from("ops@example.test").unwrap()),
        uri("spiffe://nico.local/a/sa/b"),
        SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            OtherNameValue::Utf8String("upn".into()),
        )),
    ];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(2));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::CodeSigning,
        ExtendedKeyUsagePurpose::Other(vec![1, 2, 3, 4, 5]),
    ];
    let mut custom = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
    custom.set_criticality(true);
    params.custom_extensions = vec![custom];

    let csr = parse_csr(request(&params, &rcgen::PKCS_ECDSA_P384_SHA384).as_bytes()).unwrap();
    assert_eq!(csr.subject().to_string(), "CN=web, O=acme, OU=ops");
    assert_eq!(csr.subject().attributes()[1].kind, "O");
    assert_eq!(
        csr.sans(),
        [
            San::Dns("web.example".into()),
            San::Ip(IpAddr::from([10, 0, 0, 1])),
            San::Email("ops@example.test".into()),
            San::Uri("spiffe://nico.local/a/sa/b".into()),
            San::Other("otherName 1.3.6.1.4.1.311.20.2.3".into()),
        ]
    );
    // A subject is present, so nothing forces the SAN to be critical.
    assert_eq!(csr.san_critical(), Some(false));
    assert_eq!(
        csr.key_usages().iter().copied().collect::<Vec<_>>(),
        [KeyUsage::DigitalSignature, KeyUsage::KeyCertSign]
    );
    assert_eq!(
        csr.extended_key_usages()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        [
            ExtendedKeyUsage::CodeSigning,
            ExtendedKeyUsage::Other("1.2.3.4.5".into())
        ]
    );
    assert!(csr.is_ca());
    assert_eq!(csr.basic_constraints().unwrap().path_len, Some(2));
    let other = csr.other_extensions();
    assert_eq!(other.len(), 1);
    assert_eq!(
        (other[0].oid.as_str(), other[0].critical),
        ("1.2.3.4", true)
    );
    assert_eq!(
        csr.public_key().algorithm(),
        &PublicKeyAlgorithm::Ec {
            curve: EcCurve::P384
        }
    );
    assert_eq!(
        csr.public_key().algorithm().key_algorithm(),
        Some(nico_csr::KeyAlgorithm::EcdsaP384)
    );
}

#[test]
fn key_algorithms_are_told_apart() {
    let params = {
        let mut p = bare();
        p.subject_alt_names = vec![uri("spiffe://td/a/sa/b")];
        p
    };
    let cases: &[(&'static SignatureAlgorithm, PublicKeyAlgorithm)] = &[
        (
            &rcgen::PKCS_ECDSA_P256_SHA256,
            PublicKeyAlgorithm::Ec {
                curve: EcCurve::P256,
            },
        ),
        (
            &rcgen::PKCS_ECDSA_P384_SHA384,
            PublicKeyAlgorithm::Ec {
                curve: EcCurve::P384,
            },
        ),
        (&rcgen::PKCS_ED25519, PublicKeyAlgorithm::Ed25519),
        (
            &rcgen::PKCS_RSA_SHA256,
            PublicKeyAlgorithm::Rsa { modulus_bits: 2048 },
        ),
    ];
    for (alg, expected) in cases {
        let csr = parse_csr(request(&params, alg).as_bytes()).unwrap();
        assert_eq!(csr.public_key().algorithm(), expected);
    }
}

/// One row per refusal: the input, the variant, and the message the requester reads.
#[test]
fn hostile_inputs_are_refused_with_a_clear_error() {
    let der = good_der();
    let pem = to_pem("CERTIFICATE REQUEST", &der);
    let mut bad_signature = der.clone();
    *bad_signature.last_mut().unwrap() ^= 0x01;
    let mut trailing = der.clone();
    trailing.push(0);

    let mut duplicate_san = bare();
    duplicate_san.subject_alt_names = vec![uri("spiffe://td/a/sa/b")];
    // A second SAN extension, hand-encoded: SEQUENCE { [6] "spiffe://td/x/sa/y" }.
    let second: &[u8] = b"spiffe://td/x/sa/y";
    let mut content = vec![0x30, second.len() as u8 + 2, 0x86, second.len() as u8];
    content.extend_from_slice(second);
    duplicate_san.custom_extensions =
        vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], content)];

    let mut broken_ku = bare();
    broken_ku.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 15],
        vec![0xff, 0xff],
    )];

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "certificate signing request is empty"),
        (
            "huge",
            vec![b'A'; MAX_CSR_LEN + 1],
            "certificate signing request is 65537 bytes long: at most 65536 are accepted",
        ),
        (
            "text",
            b"hello".to_vec(),
            "certificate signing request is neither PEM nor DER",
        ),
        (
            "certificate label",
            to_pem("CERTIFICATE", &der).into_bytes(),
            "PEM block is labelled \"CERTIFICATE\": expected CERTIFICATE REQUEST",
        ),
        (
            "two blocks",
            format!("{pem}{pem}").into_bytes(),
            "found 2 PEM blocks: expected exactly one CERTIFICATE REQUEST",
        ),
        (
            "no end line",
            b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n".to_vec(),
            "failed to decode the PEM block of the certificate signing request",
        ),
        (
            "bad base64",
            b"-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"
                .to_vec(),
            "failed to decode the PEM block of the certificate signing request",
        ),
        (
            "der garbage",
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
            "failed to parse the certificate signing request: not a valid PKCS#10 structure",
        ),
        (
            "truncated",
            der[..der.len() / 2].to_vec(),
            "not a valid PKCS#10 structure",
        ),
        (
            "trailing",
            trailing,
            "1 unexpected bytes follow the certificate signing request",
        ),
        (
            "bad signature",
            bad_signature,
            "signature of the certificate signing request does not verify with its public key",
        ),
        (
            "duplicate san",
            request(&duplicate_san, &rcgen::PKCS_ECDSA_P256_SHA256).into_bytes(),
            "extension subjectAltName is requested more than once",
        ),
        (
            "broken key usage",
            request(&broken_ku, &rcgen::PKCS_ECDSA_P256_SHA256).into_bytes(),
            "extension keyUsage is malformed",
        ),
    ];
    for (name, input, message) in cases {
        let err = parse_csr(&input).expect_err(name);
        assert!(err.to_string().contains(message), "{name}: {err}");
    }
    assert!(matches!(parse_csr_pem(&der), Err(CsrError::NotPem)));
    assert!(parse_csr_pem(pem.as_bytes()).is_ok());
    let legacy = to_pem("NEW CERTIFICATE REQUEST", &der);
    assert!(parse_csr_pem(legacy.as_bytes()).is_ok());
}

#[test]
fn every_truncation_is_refused() {
    let der = good_der();
    for len in 0..der.len() {
        assert!(
            parse_csr(&der[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_csr(&input);
    }

    #[test]
    fn der_shaped_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = vec![0x30, 0x82, 0x01, 0x00];
        input.extend(tail);
        let _ = parse_csr(&input);
    }

    #[test]
    fn pem_shaped_text_never_panics(body in "[A-Za-z0-9+/=\n -]{0,400}") {
        let text = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
        );
        let _ = parse_csr(text.as_bytes());
    }

    /// Any single-byte change that still parses must still describe the same request: the
    /// signature protects every field the policy reads.
    #[test]
    fn mutations_never_change_what_verifies(index in any::<prop::sample::Index>(), flip in 1u8..) {
        let der = good_der();
        let original = parse_csr(&der).unwrap();
        let mut mutated = der.clone();
        let at = index.index(mutated.len());
        mutated[at] ^= flip;
        if let Ok(parsed) = parse_csr(&mutated) {
            prop_assert_eq!(parsed.sans(), original.sans());
            prop_assert_eq!(parsed.subject(), original.subject());
            prop_assert_eq!(parsed.public_key(), original.public_key());
            prop_assert_eq!(parsed.key_usages(), original.key_usages());
            prop_assert_eq!(parsed.extended_key_usages(), original.extended_key_usages());
        }
    }
}
