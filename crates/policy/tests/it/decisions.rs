//! The policy, one row per case: each row changes one thing about a good request and names
//! the field and message the requester must see.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use nico_csr::{KeyAlgorithm, PrivateKey, build_spiffe_csr};
use nico_policy::{
    AllowedKey, Decision, EXTRA_NODE_NAME, EXTRA_POD_NAME, EXTRA_POD_UID, Field, IssuerName,
    PodFacts, RequesterMode, SpiffePolicy, SpiffeRequest,
};
use nico_spiffe_id::{CERT_MANAGER_TEMPLATE, IdTemplate, SpiffeId, TrustDomain};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};

const ID: &str = "spiffe://nico.local/demo/sa/web";
const USER: &str = "system:serviceaccount:demo:web";
const POD_UID: &str = "0b5e7c1a-pod-web-0";
const DRIVER: &str = "system:serviceaccount:nico-identity:csi-node";

/// An owned request and the pod the caller found for it; each row starts from
/// [`Case::good`] and changes one thing.
#[derive(Clone)]
struct Case {
    namespace: String,
    csr: String,
    issuer: IssuerName,
    duration: Option<String>,
    is_ca: bool,
    usages: Vec<String>,
    username: String,
    extra: BTreeMap<String, Vec<String>>,
    pod_annotations: Option<(String, String)>,
    annotation: Option<String>,
    pod: Option<PodFacts>,
}

fn web_pod() -> PodFacts {
    PodFacts {
        namespace: "demo".into(),
        name: "web-0".into(),
        uid: POD_UID.into(),
        service_account: "web".into(),
        node_name: "node-1".into(),
    }
}

fn extra(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
        .collect()
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
            issuer: SpiffePolicy::default().issuer().clone(),
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
            extra: extra(&[
                (EXTRA_POD_NAME, "web-0"),
                (EXTRA_POD_UID, POD_UID),
                (EXTRA_NODE_NAME, "node-1"),
            ]),
            pod_annotations: None,
            annotation: Some(ID.into()),
            pod: Some(web_pod()),
        }
    }

    /// The same request made by the CSI driver's own account on the pod's behalf.
    fn by_driver(self) -> Self {
        self.with(|c| {
            c.username = DRIVER.into();
            c.pod_annotations = Some(("web-0".into(), POD_UID.into()));
            c.extra = extra(&[
                (EXTRA_POD_NAME, "csi-node-x7"),
                (EXTRA_POD_UID, "driver-pod-uid"),
                (EXTRA_NODE_NAME, "node-1"),
            ]);
        })
    }

    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    fn request(&self) -> SpiffeRequest<'_> {
        SpiffeRequest {
            namespace: &self.namespace,
            request: self.csr.as_bytes(),
            issuer: &self.issuer,
            duration: self.duration.as_deref(),
            is_ca: self.is_ca,
            usages: &self.usages,
            username: &self.username,
            extra: &self.extra,
            pod_name_annotation: self.pod_annotations.as_ref().map(|(n, _)| n.as_str()),
            pod_uid_annotation: self.pod_annotations.as_ref().map(|(_, u)| u.as_str()),
            identity_annotation: self.annotation.as_deref(),
        }
    }

    /// Judges the request as the approver does: the pod the policy asks for is handed over
    /// only if it is the one the case holds.
    fn evaluate(&self, policy: &SpiffePolicy) -> Decision {
        let request = self.request();
        let wanted = policy.pod_to_look_up(&request);
        let pod = self
            .pod
            .as_ref()
            .filter(|pod| wanted.is_some_and(|query| query.name == pod.name));
        policy.evaluate(&request, pod)
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
            "another issuer",
            good.clone()
                .with(|c| c.issuer = IssuerName::new("other", None, None)),
            Field::SpecIssuerRef,
            "issuer Issuer.cert-manager.io/other is not the SPIFFE issuer: expected \
             ClusterIssuer.cert-manager.io/nico-identity",
        ),
        (
            "issuer of another kind",
            good.clone()
                .with(|c| c.issuer = IssuerName::new("nico-identity", None, None)),
            Field::SpecIssuerRef,
            "issuer Issuer.cert-manager.io/nico-identity is not the SPIFFE issuer",
        ),
        (
            "issuer of another group",
            good.clone().with(|c| {
                c.issuer = IssuerName::new("nico-identity", Some("ClusterIssuer"), Some("x.io"))
            }),
            Field::SpecIssuerRef,
            "issuer ClusterIssuer.x.io/nico-identity is not the SPIFFE issuer",
        ),
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
            good.clone().with(|c| {
                c.username = "system:serviceaccount:demo:other".into();
                c.pod.as_mut().unwrap().service_account = "other".into();
            }),
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
            "bound pod missing",
            good.clone().with(|c| c.pod = None),
            Field::SpecExtraPodName,
            "pod demo/web-0 that the requester's token is bound to does not exist",
        ),
        (
            "bound pod replaced",
            good.clone()
                .with(|c| c.pod.as_mut().unwrap().uid = "new-uid".into()),
            Field::SpecExtraPodUid,
            "pod demo/web-0 has uid new-uid, but the token is bound to uid 0b5e7c1a-pod-web-0 \
             (the pod was replaced)",
        ),
        (
            "bound pod runs as another account",
            good.clone()
                .with(|c| c.pod.as_mut().unwrap().service_account = "db".into()),
            Field::SpecExtraPodName,
            "pod demo/web-0 runs as service account \"db\", not \"web\"",
        ),
        (
            "bound pod in another namespace",
            good.clone()
                .with(|c| c.pod.as_mut().unwrap().namespace = "other".into()),
            Field::SpecExtraPodName,
            "does not exist",
        ),
        (
            "pod name without uid",
            good.clone().with(|c| {
                c.extra.remove(EXTRA_POD_UID);
            }),
            Field::SpecExtraPodUid,
            "the requester's token is bound to pod \"web-0\" but carries no pod uid",
        ),
        (
            "two pod names",
            good.clone().with(|c| {
                c.extra
                    .insert(EXTRA_POD_NAME.into(), vec!["web-0".into(), "web-1".into()]);
            }),
            Field::SpecExtraPodName,
            "authentication.kubernetes.io/pod-name has 2 values: expected exactly one",
        ),
        (
            "empty pod name",
            good.clone().with(|c| {
                c.extra.insert(EXTRA_POD_NAME.into(), vec![String::new()]);
            }),
            Field::SpecExtraPodName,
            "authentication.kubernetes.io/pod-name is empty",
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
    let debug = format!("{:?}", case.request());
    assert!(!debug.contains("BEGIN"), "{debug}");
    assert!(debug.contains("request_len"), "{debug}");
}

#[test]
fn pod_binding_is_checked_when_present_and_required_when_configured() {
    let unbound = Case::good().with(|c| {
        c.extra.clear();
        c.pod = None;
    });
    assert_eq!(
        unbound.evaluate(&SpiffePolicy::default()),
        Decision::Approve
    );

    let strict = SpiffePolicy::default()
        .with_requester(RequesterMode::PodAccount {
            require_pod_bound: true,
        })
        .unwrap();
    let denial = unbound.evaluate(&strict);
    let denial = denial.denial().unwrap();
    assert_eq!(denial.field(), Field::SpecExtraPodName);
    assert!(denial.reason().contains("not bound to a pod"), "{denial}");
    assert_eq!(Case::good().evaluate(&strict), Decision::Approve);
}

#[test]
fn the_key_allow_list_names_algorithm_and_size() {
    let policy = SpiffePolicy::default()
        .with_allowed_keys([AllowedKey::EcdsaP384, AllowedKey::Rsa(2048)])
        .unwrap();
    let p384 = Case::with_csr(rcgen_csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, |_| {}));
    let rsa = Case::with_csr(rcgen_csr_with(&rcgen::PKCS_RSA_SHA256, |_| {}));
    assert_eq!(p384.evaluate(&policy), Decision::Approve);
    assert_eq!(rsa.evaluate(&policy), Decision::Approve);
    let denial = Case::good().evaluate(&policy);
    assert_eq!(
        denial.denial().unwrap().to_string(),
        "csr.publicKey: key algorithm EC P-256 is not allowed: expected ecdsa-p384 or rsa-2048"
    );

    let bigger = SpiffePolicy::default()
        .with_allowed_keys([AllowedKey::Rsa(4096)])
        .unwrap();
    let denial = rsa.evaluate(&bigger);
    assert_eq!(
        denial.denial().unwrap().reason(),
        "key algorithm RSA 2048 bits is not allowed: expected rsa-4096"
    );
}

#[test]
fn the_issuer_is_compared_after_defaults() {
    let policy = SpiffePolicy::default().with_issuer(IssuerName::new("ca", None, Some("")));
    let spelled_out = Case::good()
        .with(|c| c.issuer = IssuerName::new("ca", Some("Issuer"), Some("cert-manager.io")));
    assert_eq!(spelled_out.evaluate(&policy), Decision::Approve);
    let cluster =
        Case::good().with(|c| c.issuer = IssuerName::new("ca", Some("ClusterIssuer"), None));
    assert_eq!(
        cluster.evaluate(&policy).denial().unwrap().field(),
        Field::SpecIssuerRef
    );
}

fn driver_policy() -> SpiffePolicy {
    SpiffePolicy::default()
        .with_requester(RequesterMode::DriverAccount {
            accounts: [DRIVER.to_owned()].into(),
        })
        .unwrap()
}

#[test]
fn driver_account_mode_denies_each_hostile_request_on_its_field() {
    let policy = driver_policy();
    let good = Case::good().by_driver();
    assert_eq!(good.evaluate(&policy), Decision::Approve);
    // The pod's own account is not a driver account in this mode.
    assert_eq!(
        Case::good().evaluate(&policy).denial().unwrap().field(),
        Field::SpecUsername
    );

    let rows: Vec<(&str, Case, Field, &str)> = vec![
        (
            "not the driver",
            good.clone()
                .with(|c| c.username = "system:serviceaccount:nico-identity:other".into()),
            Field::SpecUsername,
            "requester \"system:serviceaccount:nico-identity:other\" is not a CSI driver \
             account: expected system:serviceaccount:nico-identity:csi-node",
        ),
        (
            "token without node",
            good.clone().with(|c| {
                c.extra.remove(EXTRA_NODE_NAME);
            }),
            Field::SpecExtraNodeName,
            "the driver's token is not bound to a node",
        ),
        (
            "no pod named",
            good.clone().with(|c| c.pod_annotations = None),
            Field::PodNameAnnotation,
            "no pod named: expected the name of the pod the certificate is for",
        ),
        (
            "no pod uid",
            good.clone()
                .with(|c| c.pod_annotations.as_mut().unwrap().1 = String::new()),
            Field::PodUidAnnotation,
            "no pod uid",
        ),
        (
            "named pod missing",
            good.clone().with(|c| c.pod = None),
            Field::PodNameAnnotation,
            "pod demo/web-0 does not exist",
        ),
        (
            "named pod replaced",
            good.clone()
                .with(|c| c.pod_annotations.as_mut().unwrap().1 = "old".into()),
            Field::PodUidAnnotation,
            "pod demo/web-0 has uid 0b5e7c1a-pod-web-0, but the request names uid old",
        ),
        (
            "pod on another node",
            good.clone()
                .with(|c| c.pod.as_mut().unwrap().node_name = "node-2".into()),
            Field::PodNameAnnotation,
            "pod demo/web-0 runs on node \"node-2\", but the driver's token is bound to node \
             \"node-1\"",
        ),
        (
            "id of another account",
            good.clone()
                .with(|c| c.pod.as_mut().unwrap().service_account = "db".into()),
            Field::CsrSubjectAltName,
            "SPIFFE ID spiffe://nico.local/demo/sa/web does not match pod demo/web-0 running \
             as service account \"db\" (expected spiffe://nico.local/demo/sa/db)",
        ),
    ];
    for (name, case, field, fragment) in rows {
        let decision = case.evaluate(&policy);
        let Some(denial) = decision.denial() else {
            panic!("{name}: approved, expected a denial on {field}");
        };
        assert_eq!(denial.field(), field, "{name}: {denial}");
        assert!(denial.reason().contains(fragment), "{name}: {denial}");
    }
}
