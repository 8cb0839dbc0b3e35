//! The SVID request this crate builds, checked by this crate, by rustls-webpki and by the
//! openssl CLI.

use std::fmt::Write as _;
use std::process::Command;

use nico_csr::{
    EcCurve, ExtendedKeyUsage, KeyAlgorithm, KeyUsage, ParsedCsr, PrivateKey, PublicKeyAlgorithm,
    San, build_spiffe_csr, key_matches_certificate, parse_certificate, parse_csr, spki_matches,
    split_chain,
};
use nico_spiffe_id::SpiffeId;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage as WebpkiUsage, anchor_from_trusted_cert};

use crate::support::{Scratch, intermediate, root, sign_csr};

const ID: &str = "spiffe://nico.local/demo/sa/web";

fn svid_request() -> (PrivateKey, String) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = build_spiffe_csr(&key, &SpiffeId::parse(ID).unwrap()).unwrap();
    (key, csr)
}

/// The stable parts of a parsed CSR, one per line, for snapshots.
fn render(csr: &ParsedCsr) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "none".into()
        } else {
            items.join(", ")
        }
    };
    let mut out = String::new();
    let subject = csr.subject().to_string();
    writeln!(
        out,
        "subject: {}",
        if subject.is_empty() {
            "(empty)"
        } else {
            &subject
        }
    )
    .unwrap();
    writeln!(
        out,
        "sans: {}",
        list(csr.sans().iter().map(|s| s.to_string()).collect())
    )
    .unwrap();
    writeln!(out, "san critical: {:?}", csr.san_critical()).unwrap();
    let ku = csr.key_usages().iter().map(|u| u.to_string()).collect();
    writeln!(out, "key usages: {}", list(ku)).unwrap();
    let eku = csr
        .extended_key_usages()
        .iter()
        .map(|u| u.to_string())
        .collect();
    writeln!(out, "extended key usages: {}", list(eku)).unwrap();
    writeln!(out, "basic constraints: {:?}", csr.basic_constraints()).unwrap();
    let other = csr
        .other_extensions()
        .iter()
        .map(|e| e.to_string())
        .collect();
    writeln!(out, "other extensions: {}", list(other)).unwrap();
    writeln!(
        out,
        "other attributes: {}",
        list(csr.other_attributes().to_vec())
    )
    .unwrap();
    writeln!(out, "public key: {}", csr.public_key().algorithm()).unwrap();
    writeln!(out, "spki length: {}", csr.public_key().spki_der().len()).unwrap();
    out
}

#[test]
fn the_request_has_the_svid_shape_and_nothing_else() {
    let (key, pem) = svid_request();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    let csr = parse_csr(pem.as_bytes()).unwrap();

    assert!(csr.subject().is_empty());
    assert_eq!(csr.sans(), [San::Uri(ID.into())]);
    assert_eq!(csr.uri_sans().collect::<Vec<_>>(), [ID]);
    // rcgen marks the SAN critical because the subject is empty; RFC 5280 requires it.
    assert_eq!(csr.san_critical(), Some(true));
    assert_eq!(
        csr.key_usages().iter().copied().collect::<Vec<_>>(),
        [KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
    );
    assert_eq!(
        csr.extended_key_usages()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        [ExtendedKeyUsage::ServerAuth, ExtendedKeyUsage::ClientAuth]
    );
    assert_eq!(csr.basic_constraints(), None);
    assert!(!csr.is_ca());
    assert!(csr.other_extensions().is_empty());
    assert!(csr.other_attributes().is_empty());
    assert_eq!(
        csr.public_key().algorithm(),
        &PublicKeyAlgorithm::Ec {
            curve: EcCurve::P256
        }
    );
    assert_eq!(
        csr.public_key().algorithm().key_algorithm(),
        Some(KeyAlgorithm::EcdsaP256)
    );
    assert_eq!(csr.public_key().spki_der(), key.spki_der());

    // DER input gives the same result as PEM input.
    let again = parse_csr(csr.der()).unwrap();
    assert_eq!(again, csr);

    insta::assert_snapshot!("svid_csr", render(&csr));
}

#[test]
fn trust_domain_ids_are_refused() {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let err = build_spiffe_csr(&key, &SpiffeId::parse("spiffe://nico.local").unwrap());
    assert_eq!(
        err.unwrap_err().to_string(),
        "spiffe id spiffe://nico.local has no path: only a workload ID can go into a certificate"
    );
}

#[test]
fn independent_verifiers_accept_the_issued_chain() {
    let (key, csr_pem) = svid_request();
    let root = root("nico test root");
    let issuing = intermediate("nico test intermediate", &root);
    let leaf = sign_csr(&csr_pem, &issuing);

    // Hand the CA's certificates over in a scrambled order with a duplicate.
    let chain = split_chain(vec![
        root.der.clone(),
        leaf.clone(),
        issuing.der.clone(),
        leaf.clone(),
    ])
    .unwrap();
    assert_eq!(chain.leaf, leaf);
    assert_eq!(chain.intermediates, vec![issuing.der.clone()]);
    assert_eq!(chain.roots, vec![root.der.clone()]);

    assert!(key_matches_certificate(&key, &leaf).unwrap());
    let stranger = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    assert!(!key_matches_certificate(&stranger, &leaf).unwrap());
    assert!(spki_matches(&key.spki_der(), &leaf).unwrap());

    let info = parse_certificate(&leaf).unwrap();
    assert_eq!(info.uri_sans().collect::<Vec<_>>(), [ID]);
    assert_eq!(info.dns_sans().count() + info.ip_sans().count(), 0);
    assert!(!info.is_ca() && !info.is_self_signed());
    assert!(info.subject().is_empty());
    assert!(info.not_before() < info.not_after());
    assert_eq!(info.spki_der(), key.spki_der());
    assert!(!info.serial_hex().is_empty());
    assert!(
        info.serial_hex()
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    let root_info = parse_certificate(&root.der).unwrap();
    assert!(root_info.is_ca() && root_info.is_self_signed());
    assert_eq!(root_info.subject_der(), root_info.issuer_der());
    assert_eq!(
        info.issuer_der(),
        parse_certificate(&issuing.der).unwrap().subject_der()
    );

    verify_with_webpki(&chain.leaf, &chain.intermediates, &chain.roots[0]);
    verify_with_openssl(&csr_pem, &chain);
}

/// The aws-lc-rs implementations, named one by one so the test cannot silently pick up
/// another provider's.
const AWS_LC_RS_ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ED25519,
];

fn verify_with_webpki(leaf: &[u8], intermediates: &[Vec<u8>], root: &[u8]) {
    let root = CertificateDer::from(root);
    let anchors = [anchor_from_trusted_cert(&root).unwrap()];
    let leaf = CertificateDer::from(leaf);
    let intermediates: Vec<_> = intermediates
        .iter()
        .map(|d| CertificateDer::from(&d[..]))
        .collect();
    let end_entity = EndEntityCert::try_from(&leaf).unwrap();
    for usage in [WebpkiUsage::server_auth(), WebpkiUsage::client_auth()] {
        end_entity
            .verify_for_usage(
                AWS_LC_RS_ALGORITHMS,
                &anchors,
                &intermediates,
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .unwrap();
    }
}

fn openssl(args: &[&str]) -> String {
    let output = Command::new("/usr/bin/openssl")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "openssl {args:?} failed:\n{text}");
    text
}

fn verify_with_openssl(csr_pem: &str, chain: &nico_csr::Chain) {
    let dir = Scratch::new("openssl");
    let csr = dir.write("request.pem", csr_pem);
    let ca = dir.write("ca.crt", chain.roots_pem());
    let tls = dir.write("tls.crt", chain.certificate_chain_pem());
    let leaf = dir.write("leaf.pem", nico_csr::ders_to_pem(&[&chain.leaf]));
    let untrusted = dir.write("untrusted.pem", nico_csr::ders_to_pem(&chain.intermediates));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let verified = openssl(&["req", "-verify", "-noout", "-in", &path(&csr)]);
    assert!(verified.contains("verify OK"), "{verified}");
    let text = openssl(&["req", "-noout", "-text", "-in", &path(&csr)]);
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert!(text.contains(&format!("URI:{ID}")), "{text}");

    let ok = openssl(&[
        "verify",
        "-CAfile",
        &path(&ca),
        "-untrusted",
        &path(&untrusted),
        &path(&leaf),
    ]);
    assert!(ok.contains(": OK"), "{ok}");
    // tls.crt is leaf first then intermediates; openssl takes the first as the subject.
    let ok = openssl(&[
        "verify",
        "-CAfile",
        &path(&ca),
        "-untrusted",
        &path(&tls),
        &path(&tls),
    ]);
    assert!(ok.contains(": OK"), "{ok}");
    assert!(dir.path().exists());
}

#[test]
fn every_key_algorithm_makes_a_csr_that_verifies_and_names_its_algorithm() {
    let id = nico_spiffe_id::SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
    for &algorithm in nico_csr::KeyAlgorithm::ALL {
        let key = nico_csr::PrivateKey::generate(algorithm).unwrap();
        let pem = nico_csr::build_spiffe_csr(&key, &id).unwrap();
        let csr =
            nico_csr::parse_csr(pem.as_bytes()).unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        assert_eq!(
            csr.public_key().algorithm().key_algorithm(),
            Some(algorithm)
        );
        assert_eq!(csr.public_key().spki_der(), key.spki_der().as_slice());
    }
}
