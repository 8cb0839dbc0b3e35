//! The policy, one row per case: each row changes one thing about a good request and names
//! the field and message the requester must see.

use std::fmt::Write as _;
use std::net::IpAddr;

use nico_csr::{KeyAlgorithm, PrivateKey, build_spiffe_csr};
use nico_policy::{Decision, Field, SpiffePolicy, SpiffeRequest};
use nico_spiffe_id::{CERT_MANAGER_TEMPLATE, IdTemplate, SpiffeId, TrustDomain};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};

const ID: &str = "spiffe://nico.local/demo/sa/web";
const USER: &str = "system:serviceaccount:demo:web";

/// An owned request; each row starts from [`Case::good`] and changes one thing.
#[derive(Clone)]
struct Case {
    namespace: String,
    csr: String,
    duration: Option<String>,
    is_ca: bool,
    usages: Vec<String>,
    username: String,
    annotation: Option<String>,
}

impl Case {
    fn good() -> Self {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = build_spiffe_csr(&key, &SpiffeId::parse(ID).unwrap()).unwrap();
        Self::with_csr(csr)
    }

    fn with_csr(csr: String) -> Self {
        Self {
            namespace: "demo".into(),
            csr,
            duration: Some("1h".into()),
            is_ca: false,
            usages: [
                "digital signature",
                "key encipherment",
                "server auth",
                "client auth",
            ]
            .map(String::from)
            .to_vec(),
            username: USER.into(),
            annotation: Some(ID.into()),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    fn evaluate(&self, policy: &SpiffePolicy) -> Decision {
        policy.evaluate(&SpiffeRequest {
            namespace: &self.namespace,
            request: self.csr.as_bytes(),
            duration: self.duration.as_deref(),
            is_ca: self.is_ca,
            usages: &self.usages,
            username: &self.username,
            identity_annotation: self.annotation.as_deref(),
        })
    }
}

fn uri(text: &str) -> SanType {
    SanType::URI(Ia5String::try_from(text).unwrap())
}

/// An SVID-shaped CSR built with rcgen directly, changed by `change` before signing, so
/// that requests nico-csr would never produce can be made.
fn rcgen_csr(change: impl FnOnce(&mut CertificateParams)) -> String {
    rcgen_csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, change)
}

fn rcgen_csr_with(
    algorithm: &'static SignatureAlgorithm,
    change: impl FnOnce(&mut CertificateParams),
) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri(ID)];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    change(&mut params);
    let key = KeyPair::generate_for(algorithm).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn csr_for(id: &str) -> String {
    rcgen_csr(|p| p.subject_alt_names = vec![uri(id)])
}

/// A good CSR with one bit of its signature flipped.
fn bad_signature() -> String {
    let block = pem::parse(Case::good().csr).unwrap();
    let mut der = block.contents().to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

/// The SAN extension, hand-encoded and not marked critical, with an empty subject.
fn non_critical_san() -> String {
    rcgen_csr(|p| {
        p.subject_alt_names = vec![];
        let id = ID.as_bytes();
        let mut content = vec![0x30, id.len() as u8 + 2, 0x86, id.len() as u8];
        content.extend_from_slice(id);
        let mut san = CustomExtension::from_oid_content(&[2, 5, 29, 17], content);
        san.set_criticality(false);
        p.custom_extensions = vec![san];
    })
}

fn rows() -> Vec<(&'static str, Case, Field, &'static str)> {
    let good = Case::good();
    let csr = |pem: String| Case::with_csr(pem);
    vec![
        (
            "garbage request",
            good.clone().with(|c| c.csr = "hello".into()),
            Field::SpecRequest,
            "certificate signing request is not PEM",
        ),
        (
            "bad signature",
            csr(bad_signature()),
            Field::SpecRequest,
            "signature of the certificate signing request does not verify",
        ),
        (
            "missing duration",
            good.clone().with(|c| c.duration = None),
            Field::SpecDuration,
            "no duration requested: expected a duration between 10m0s and 24h0m0s",
        ),
        (
            "unparsable duration",
            good.clone().with(|c| c.duration = Some("1d".into())),
            Field::SpecDuration,
            "unknown unit \"d\" in duration \"1d\"",
        ),
        (
            "negative duration",
            good.clone().with(|c| c.duration = Some("-1h".into())),
            Field::SpecDuration,
            "is negative",
        ),
        (
            "duration too long",
            good.clone().with(|c| c.duration = Some("48h".into())),
            Field::SpecDuration,
            "requested duration 48h0m0s is longer than the maximum 24h0m0s",
        ),
        (
            "duration too short",
            good.clone().with(|c| c.duration = Some("5m".into())),
            Field::SpecDuration,
            "requested duration 5m0s is shorter than the minimum 10m0s",
        ),
        (
            "common name",
            csr(rcgen_csr(|p| {
                p.distinguished_name.push(DnType::CommonName, "web")
            })),
            Field::CsrSubject,
            "subject must be empty, presented CN=web",
        ),
        (
            "organisation only",
            csr(rcgen_csr(|p| {
                p.distinguished_name.push(DnType::OrganizationName, "acme")
            })),
            Field::CsrSubject,
            "presented O=acme",
        ),
        (
            "dns san",
            csr(rcgen_csr(|p| {
                p.subject_alt_names
                    .push(SanType::DnsName("web.demo.svc".try_into().unwrap()));
            })),
            Field::CsrSubjectAltName,
            "only URI SANs are allowed, presented DNS name web.demo.svc",
        ),
        (
            "ip san",
            csr(rcgen_csr(|p| {
                p.subject_alt_names
                    .push(SanType::IpAddress(IpAddr::from([10, 0, 0, 1])));
            })),
            Field::CsrSubjectAltName,
            "presented IP address 10.0.0.1",
        ),
        (
            "email san",
            csr(rcgen_csr(|p| {
                p.subject_alt_names
                    .push(SanType::Rfc822Name("a@demo.test".try_into().unwrap()));
            })),
            Field::CsrSubjectAltName,
            "presented e-mail address a@demo.test",
        ),
        (
            "basic constraints",
            csr(rcgen_csr(|p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
            })),
            Field::CsrExtensions,
            "only subjectAltName, keyUsage and extendedKeyUsage extensions are allowed, \
             presented basicConstraints (CA:TRUE)",
        ),
        (
            "unknown extension",
            csr(rcgen_csr(|p| {
                p.custom_extensions = vec![CustomExtension::from_oid_content(
                    &[1, 2, 3, 4],
                    vec![0x05, 0x00],
                )];
            })),
            Field::CsrExtensions,
            "presented 1.2.3.4",
        ),
        (
            "key cert sign",
            csr(rcgen_csr(|p| {
                p.key_usages.push(KeyUsagePurpose::KeyCertSign)
            })),
            Field::CsrKeyUsage,
            "keyCertSign is not allowed: expected only digitalSignature and keyEncipherment",
        ),
        (
            "code signing",
            csr(rcgen_csr(|p| {
                p.extended_key_usages
                    .push(ExtendedKeyUsagePurpose::CodeSigning)
            })),
            Field::CsrExtendedKeyUsage,
            "codeSigning is not allowed: expected only serverAuth and clientAuth",
        ),
        (
            "non-critical san",
            csr(non_critical_san()),
            Field::CsrSubjectAltName,
            "the subjectAltName extension is not marked critical",
        ),
        (
            "p-384 key",
            csr(rcgen_csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, |_| {})),
            Field::CsrPublicKey,
            "key algorithm EC P-384 is not allowed: expected ecdsa-p256",
        ),
        (
            "rsa key",
            csr(rcgen_csr_with(&rcgen::PKCS_RSA_SHA256, |_| {})),
            Field::CsrPublicKey,
            "key algorithm RSA 2048 bits is not allowed: expected ecdsa-p256",
        ),
        (
            "is ca",
            good.clone().with(|c| c.is_ca = true),
            Field::SpecIsCa,
            "a CA certificate was requested: expected isCA to be false",
        ),
        (
            "usage missing",
            good.clone()
                .with(|c| c.usages.retain(|u| u != "client auth")),
            Field::SpecUsages,
            "expected exactly the usages digital signature, key encipherment, server auth, \
             client auth; missing: client auth",
        ),
        (
            "usage extra",
            good.clone().with(|c| c.usages.push("cert sign".into())),
            Field::SpecUsages,
            "; not allowed: cert sign",
        ),
        (
            "username not a service account",
            good.clone().with(|c| c.username = "alice".into()),
            Field::SpecUsername,
            "requester \"alice\" is not a service account: expected \
             system:serviceaccount:<namespace>:<name>",
        ),
        (
            "namespace mismatch",
            good.clone().with(|c| c.namespace = "other".into()),
            Field::MetadataNamespace,
            "request is in namespace \"other\" but requester system:serviceaccount:demo:web \
             belongs to namespace \"demo\"",
        ),
        (
            "no san",
            csr(rcgen_csr(|p| p.subject_alt_names = vec![])),
            Field::CsrSubjectAltName,
            "expected exactly one URI SAN, presented none",
        ),
        (
            "two uri sans",
            csr(rcgen_csr(|p| {
                p.subject_alt_names
                    .push(uri("spiffe://nico.local/demo/sa/db"))
            })),
            Field::CsrSubjectAltName,
            "expected exactly one URI SAN, presented 2: spiffe://nico.local/demo/sa/web, \
             spiffe://nico.local/demo/sa/db",
        ),
        (
            "percent-encoded path",
            csr(csr_for("spiffe://nico.local/demo/sa/w%65b")),
            Field::CsrSubjectAltName,
            "URI SAN \"spiffe://nico.local/demo/sa/w%65b\" is not a valid SPIFFE ID: invalid \
             character '%' at byte 10 of path \"/demo/sa/w%65b\": percent-encoding is not allowed",
        ),
        (
            "dot-dot path",
            csr(csr_for("spiffe://nico.local/demo/sa/x/../web")),
            Field::CsrSubjectAltName,
            "'.' and '..' segments are not allowed",
        ),
        (
            "upper-case trust domain",
            csr(csr_for("spiffe://NICO.local/demo/sa/web")),
            Field::CsrSubjectAltName,
            "upper case is not allowed in a trust domain",
        ),
        (
            "not a spiffe uri",
            csr(csr_for("https://nico.local/demo/sa/web")),
            Field::CsrSubjectAltName,
            "is not a valid SPIFFE ID",
        ),
        (
            "another trust domain",
            csr(csr_for("spiffe://other.test/demo/sa/web")),
            Field::CsrSubjectAltName,
            "SPIFFE ID spiffe://other.test/demo/sa/web is in trust domain other.test, \
             expected nico.local",
        ),
        (
            "another service account",
            good.clone()
                .with(|c| c.username = "system:serviceaccount:demo:other".into()),
            Field::SpecUsername,
            "SPIFFE ID spiffe://nico.local/demo/sa/web does not match requester \
             system:serviceaccount:demo:other (expected spiffe://nico.local/demo/sa/other)",
        ),
        (
            "cert-manager shaped id",
            csr(csr_for("spiffe://nico.local/ns/demo/sa/web")),
            Field::SpecUsername,
            "(expected spiffe://nico.local/demo/sa/web)",
        ),
        (
            "trust domain id",
            csr(csr_for("spiffe://nico.local")),
            Field::SpecUsername,
            "SPIFFE ID spiffe://nico.local does not match requester",
        ),
        (
            "annotation mismatch",
            good.clone()
                .with(|c| c.annotation = Some("spiffe://nico.local/demo/sa/db".into())),
            Field::IdentityAnnotation,
            "annotation value \"spiffe://nico.local/demo/sa/db\" does not match the SPIFFE ID \
             spiffe://nico.local/demo/sa/web requested in the CSR",
        ),
    ]
}

#[test]
fn each_row_is_denied_on_its_field() {
    let policy = SpiffePolicy::default();
    let mut snapshot = String::new();
    for (name, case, field, fragment) in rows() {
        let decision = case.evaluate(&policy);
        let Some(denial) = decision.denial() else {
            panic!("{name}: approved, expected a denial on {field}");
        };
        assert_eq!(denial.field(), field, "{name}: {denial}");
        assert!(denial.reason().contains(fragment), "{name}: {denial}");
        assert!(denial.message().starts_with(&format!("{field}: ")));
        writeln!(snapshot, "{name}\n  {denial}").unwrap();
    }
    insta::assert_snapshot!("denials", snapshot);
}

#[test]
fn good_requests_are_approved() {
    let policy = SpiffePolicy::default();
    let approved = [
        ("built by nico-csr", Case::good()),
        ("built by rcgen", Case::with_csr(rcgen_csr(|_| {}))),
        ("no annotation", Case::good().with(|c| c.annotation = None)),
        (
            "minimum duration",
            Case::good().with(|c| c.duration = Some("10m".into())),
        ),
        (
            "maximum duration",
            Case::good().with(|c| c.duration = Some("24h".into())),
        ),
        (
            "composite duration",
            Case::good().with(|c| c.duration = Some("1h30m".into())),
        ),
        (
            "seconds",
            Case::good().with(|c| c.duration = Some("3600s".into())),
        ),
        (
            "usages repeated and reordered",
            Case::good().with(|c| {
                c.usages.reverse();
                c.usages.push("server auth".into());
            }),
        ),
        (
            "no key usage requested",
            Case::with_csr(rcgen_csr(|p| {
                p.key_usages.clear();
                p.extended_key_usages.clear();
            })),
        ),
    ];
    for (name, case) in approved {
        assert_eq!(case.evaluate(&policy), Decision::Approve, "{name}");
    }
}

#[test]
fn checks_run_in_the_documented_order() {
    let policy = SpiffePolicy::default();
    // A bad signature wins over everything else that is wrong.
    let everything_wrong = Case::with_csr(bad_signature()).with(|c| {
        c.duration = None;
        c.is_ca = true;
        c.username = "alice".into();
    });
    let first = everything_wrong.evaluate(&policy);
    assert_eq!(first.denial().unwrap().field(), Field::SpecRequest);
    // Then the duration, before the CSR contents.
    let cn_and_no_duration = Case::with_csr(rcgen_csr(|p| {
        p.distinguished_name.push(DnType::CommonName, "web")
    }))
    .with(|c| c.duration = None);
    assert_eq!(
        cn_and_no_duration
            .evaluate(&policy)
            .denial()
            .unwrap()
            .field(),
        Field::SpecDuration
    );
    // Then the CSR contents, before the spec.
    let cn_and_ca = Case::with_csr(rcgen_csr(|p| {
        p.distinguished_name.push(DnType::CommonName, "x")
    }))
    .with(|c| c.is_ca = true);
    assert_eq!(
        cn_and_ca.evaluate(&policy).denial().unwrap().field(),
        Field::CsrSubject
    );
    // Then the spec, before the identity.
    let ca_and_stranger = Case::good().with(|c| {
        c.is_ca = true;
        c.username = "alice".into();
    });
    assert_eq!(
        ca_and_stranger.evaluate(&policy).denial().unwrap().field(),
        Field::SpecIsCa
    );
}

#[test]
fn the_template_and_bounds_are_honoured() {
    let td = TrustDomain::parse("nico.local").unwrap();
    let template = IdTemplate::parse(CERT_MANAGER_TEMPLATE).unwrap();
    let policy = SpiffePolicy::new(td, template).unwrap();
    let cm_id = "spiffe://nico.local/ns/demo/sa/web";
    let case = Case::with_csr(csr_for(cm_id)).with(|c| c.annotation = Some(cm_id.into()));
    assert_eq!(case.evaluate(&policy), Decision::Approve);
    let nico_shaped = Case::good().evaluate(&policy);
    assert!(
        nico_shaped
            .denial()
            .unwrap()
            .reason()
            .contains("(expected spiffe://nico.local/ns/demo/sa/web)")
    );

    let hour = std::time::Duration::from_secs(3600);
    let exact = SpiffePolicy::default()
        .with_durations(nico_policy::DurationBounds::new(hour, hour).unwrap());
    assert_eq!(Case::good().evaluate(&exact), Decision::Approve);
    let other = Case::good()
        .with(|c| c.duration = Some("59m".into()))
        .evaluate(&exact);
    assert_eq!(
        other.denial().unwrap().reason(),
        "requested duration 59m0s is shorter than the minimum 1h0m0s: expected a duration \
         between 1h0m0s and 1h0m0s"
    );
}

#[test]
fn the_request_debug_output_hides_the_csr() {
    let case = Case::good();
    let request = SpiffeRequest {
        namespace: &case.namespace,
        request: case.csr.as_bytes(),
        duration: case.duration.as_deref(),
        is_ca: case.is_ca,
        usages: &case.usages,
        username: &case.username,
        identity_annotation: case.annotation.as_deref(),
    };
    let debug = format!("{request:?}");
    assert!(!debug.contains("BEGIN"), "{debug}");
    assert!(debug.contains("request_len"), "{debug}");
}
