//! Fuzz targets: the SPIFFE policy on hostile requests. Nothing panics, and whatever it
//! approves satisfies the SPIFFE rules as restated here from the CSR's bytes (read with a
//! small DER walker, not nico-csr): a signature by the request's own key, an empty subject,
//! exactly one critical SAN extension holding exactly one URI equal to the ID of the
//! entitled account, only key usages, extended key usages and SANs that an SVID may carry,
//! an allowed key, and a spec (issuer, duration, usages, isCA, requester, pod, annotation)
//! that entitles the requester to that ID.
//!
//! - `fuzz_policy` builds requests from parts (each mostly right, sometimes wrong, the CSR
//!   encoded here and signed with a test key, its signed part sometimes mutated and signed
//!   again), so approvals are common and every check is reached;
//! - `fuzz_policy_csr` feeds mutated corpus CSRs (`tests/corpus/spiffe_request/`) in an
//!   otherwise good request.
//!
//! `cargo xtask fuzz --target policy` runs these for longer.

#[path = "../../../tests/support/fuzzing.rs"]
mod fuzzing;
#[path = "../../csr/tests/fuzz_support/signed.rs"]
mod signed;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nico_policy::{
    AllowedKey, Decision, EXTRA_NODE_NAME, EXTRA_POD_NAME, EXTRA_POD_UID, IssuerName, PodFacts,
    REQUIRED_USAGES, RequesterMode, SpiffePolicy, SpiffeRequest,
};
use proptest::prelude::*;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SignatureAlgorithm};
use signed::{BIT_STRING, OID, SEQUENCE, encode};

const TRUST_DOMAIN: &str = "nico.local";
const DRIVER: &str = "system:serviceaccount:nico-identity:csi-node";
const POD_UID: &str = "uid-web-0";
const NODE: &str = "node-1";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/spiffe_request")
}

// ---- CSRs encoded here -------------------------------------------------------------------

const SAN: &[u8] = &[0x55, 0x1d, 0x11];
const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A subject alternative name, by its GeneralName tag and value.
#[derive(Clone, Debug, PartialEq)]
enum Name {
    Uri(String),
    Dns(String),
    Ip([u8; 4]),
    Email(String),
}

impl Name {
    fn encode(&self) -> Vec<u8> {
        match self {
            Self::Uri(uri) => encode(0x86, uri.as_bytes()),
            Self::Dns(dns) => encode(0x82, dns.as_bytes()),
            Self::Ip(ip) => encode(0x87, ip),
            Self::Email(email) => encode(0x81, email.as_bytes()),
        }
    }
}

/// A CSR described part by part.
#[derive(Clone, Debug)]
struct CsrShape {
    key: usize,
    common_name: Option<String>,
    /// SAN extensions (a second one is a duplicate), each with its criticality.
    sans: Vec<(bool, Vec<Name>)>,
    key_usage: Option<u16>,
    extended_key_usages: Option<Vec<&'static [u8]>>,
    basic_constraints: Option<bool>,
    unknown_extension: Option<bool>,
    mutation: Option<fuzzing::Mutation>,
}

fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut contents = encode(OID, oid);
    if critical {
        contents.extend([0x01, 0x01, 0xff]);
    }
    contents.extend(encode(0x04, value));
    encode(SEQUENCE, &contents)
}

impl CsrShape {
    fn der(&self) -> Vec<u8> {
        let key = &test_keys()[self.key];
        let subject = match &self.common_name {
            None => encode(SEQUENCE, &[]),
            Some(name) => {
                let attribute = [encode(OID, COMMON_NAME), encode(0x0c, name.as_bytes())];
                let set = encode(0x31, &encode(SEQUENCE, &attribute.concat()));
                encode(SEQUENCE, &set)
            }
        };
        let mut extensions = Vec::new();
        for (critical, names) in &self.sans {
            let names: Vec<u8> = names.iter().flat_map(Name::encode).collect();
            extensions.extend(extension(SAN, *critical, &encode(SEQUENCE, &names)));
        }
        if let Some(bits) = self.key_usage {
            let [high, low] = bits.to_be_bytes();
            extensions.extend(extension(
                KEY_USAGE,
                true,
                &encode(BIT_STRING, &[0, high, low]),
            ));
        }
        if let Some(purposes) = &self.extended_key_usages {
            let oids: Vec<u8> = purposes.iter().flat_map(|oid| encode(OID, oid)).collect();
            extensions.extend(extension(EXT_KEY_USAGE, false, &encode(SEQUENCE, &oids)));
        }
        if let Some(ca) = self.basic_constraints {
            let value = if ca { vec![0x01, 0x01, 0xff] } else { vec![] };
            let value = encode(SEQUENCE, &value);
            extensions.extend(extension(BASIC_CONSTRAINTS, true, &value));
        }
        if let Some(critical) = self.unknown_extension {
            let oid = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x01];
            extensions.extend(extension(&oid, critical, &[0x05, 0x00]));
        }
        let attributes = if extensions.is_empty() {
            vec![]
        } else {
            let request = [
                encode(OID, EXTENSION_REQUEST),
                encode(0x31, &encode(SEQUENCE, &extensions)),
            ];
            encode(SEQUENCE, &request.concat())
        };
        let mut contents = encode(0x02, &[0]);
        contents.extend(subject);
        contents.extend_from_slice(&key.spki);
        contents.extend(encode(0xa0, &attributes));
        if let Some(mutation) = &self.mutation {
            contents = mutation.apply(contents.clone(), &[contents]);
        }
        signed::sign(&encode(SEQUENCE, &contents), &key.algorithm, &key.key)
    }

    fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", self.der()))
    }
}

/// A test key, the algorithm identifier it signs under and its SPKI.
struct TestKey {
    key: KeyPair,
    algorithm: Vec<u8>,
    spki: Vec<u8>,
    allowed: AllowedKey,
}

/// One key per algorithm, made once.
fn test_keys() -> &'static [TestKey] {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let algorithms: [(&'static SignatureAlgorithm, AllowedKey); 3] = [
            (&rcgen::PKCS_ECDSA_P256_SHA256, AllowedKey::EcdsaP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, AllowedKey::EcdsaP384),
            (&rcgen::PKCS_ED25519, AllowedKey::Ed25519),
        ];
        algorithms
            .into_iter()
            .map(|(algorithm, allowed)| {
                let key = KeyPair::generate_for(algorithm).unwrap();
                let mut params = CertificateParams::default();
                params.distinguished_name = DistinguishedName::new();
                let request = params.serialize_request(&key).unwrap();
                let envelope = signed::envelope(request.der()).unwrap();
                TestKey {
                    algorithm: envelope.algorithm.raw.to_vec(),
                    spki: key.subject_public_key_info(),
                    key,
                    allowed,
                }
            })
            .collect()
    })
}

// ---- Requests --------------------------------------------------------------------------

/// A whole request and the policy judging it.
#[derive(Clone, Debug)]
struct Case {
    requester: RequesterMode,
    allowed_keys: BTreeSet<AllowedKey>,
    csr: String,
    namespace: String,
    issuer: IssuerName,
    duration: Option<String>,
    is_ca: bool,
    usages: Vec<String>,
    username: String,
    extra: BTreeMap<String, Vec<String>>,
    pod_annotations: Option<(String, String)>,
    identity_annotation: Option<String>,
    pod: Option<PodFacts>,
}

fn web_pod() -> PodFacts {
    PodFacts {
        namespace: "demo".into(),
        name: "web-0".into(),
        uid: POD_UID.into(),
        service_account: "web".into(),
        node_name: NODE.into(),
    }
}

fn pod_bound_extra(name: &str, uid: &str) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        (EXTRA_POD_NAME.to_owned(), vec![name.to_owned()]),
        (EXTRA_POD_UID.to_owned(), vec![uid.to_owned()]),
        (EXTRA_NODE_NAME.to_owned(), vec![NODE.to_owned()]),
    ])
}

impl Case {
    /// A request that the default policy approves, around `csr`.
    fn good(csr: String) -> Self {
        Self {
            requester: RequesterMode::default(),
            allowed_keys: test_keys().iter().map(|key| key.allowed).collect(),
            csr,
            namespace: "demo".into(),
            issuer: SpiffePolicy::default().issuer().clone(),
            duration: Some("1h".into()),
            is_ca: false,
            usages: REQUIRED_USAGES.map(String::from).to_vec(),
            username: "system:serviceaccount:demo:web".into(),
            extra: pod_bound_extra("web-0", POD_UID),
            pod_annotations: None,
            identity_annotation: Some(format!("spiffe://{TRUST_DOMAIN}/demo/sa/web")),
            pod: Some(web_pod()),
        }
    }

    fn policy(&self) -> SpiffePolicy {
        SpiffePolicy::default()
            .with_requester(self.requester.clone())
            .unwrap()
            .with_allowed_keys(self.allowed_keys.iter().copied())
            .unwrap()
    }

    /// Judges the request as the approver does: the pod is handed over only if it is the
    /// one the policy asks for.
    fn decide(&self) -> Decision {
        let policy = self.policy();
        let request = SpiffeRequest {
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
            identity_annotation: self.identity_annotation.as_deref(),
        };
        let wanted = policy.pod_to_look_up(&request);
        let pod = self
            .pod
            .as_ref()
            .filter(|pod| wanted.is_some_and(|query| query.name == pod.name));
        policy.evaluate(&request, pod)
    }
}

// ---- The rules, restated -----------------------------------------------------------------

/// What the CSR asks for, read with the DER walker.
struct Requested {
    subject_empty: bool,
    /// (OID, critical, value) of every requested extension, in order.
    extensions: Vec<(Vec<u8>, bool, Vec<u8>)>,
    key: Option<AllowedKey>,
}

fn read_requested(der: &[u8]) -> Option<Requested> {
    let envelope = signed::envelope(der)?;
    let fields = signed::children(envelope.info.contents)?;
    let [_version, subject, spki, rest @ ..] = fields.as_slice() else {
        return None;
    };
    let mut extensions = Vec::new();
    for attributes in rest.iter().filter(|field| field.tag == 0xa0) {
        for attribute in signed::children(attributes.contents)? {
            let parts = signed::children(attribute.contents)?;
            if parts.first()?.contents != EXTENSION_REQUEST {
                continue;
            }
            for set in &parts[1..] {
                for list in signed::children(set.contents)? {
                    for ext in signed::children(list.contents)? {
                        let parts = signed::children(ext.contents)?;
                        let (oid, critical, value) = match parts.as_slice() {
                            [oid, value] => (oid, false, value),
                            [oid, flag, value] => (oid, flag.contents == [0xff], value),
                            _ => return None,
                        };
                        extensions.push((oid.contents.to_vec(), critical, value.contents.to_vec()));
                    }
                }
            }
        }
    }
    let key_parts = signed::children(spki.contents)?;
    let algorithm = signed::children(key_parts.first()?.contents)?;
    let key = match algorithm.as_slice() {
        [oid, curve] if oid.contents == EC_PUBLIC_KEY && curve.contents == P256 => {
            Some(AllowedKey::EcdsaP256)
        }
        [oid, curve] if oid.contents == EC_PUBLIC_KEY && curve.contents == P384 => {
            Some(AllowedKey::EcdsaP384)
        }
        [oid] if oid.contents == ED25519 => Some(AllowedKey::Ed25519),
        _ => None,
    };
    Some(Requested {
        subject_empty: subject.raw == [SEQUENCE, 0],
        extensions,
        key,
    })
}

/// The durations the generator writes that lie within the default 10m to 24h.
fn duration_in_bounds(text: &str) -> bool {
    matches!(text, "1h" | "10m" | "24h" | "1h0m0s" | "90m" | "600s")
}

/// An approval must satisfy every rule; each failure is named.
fn check_approval(case: &Case) -> Result<(), TestCaseError> {
    if !case.decide().is_approved() {
        return Ok(());
    }
    let der = pem::parse(case.csr.as_bytes())
        .map(pem::Pem::into_contents)
        .map_err(|e| TestCaseError::fail(format!("approved a request that is not PEM: {e}")))?;
    prop_assert!(
        signed::verifies(&der),
        "approved a CSR its key did not sign"
    );
    let requested = read_requested(&der).ok_or_else(|| {
        let hex: String = der.iter().map(|byte| format!("{byte:02x}")).collect();
        TestCaseError::fail(format!("approved a CSR the DER walker cannot read: {hex}"))
    })?;
    prop_assert!(requested.subject_empty, "approved a non-empty subject");

    // Extensions: SAN (once, critical), key usage and extended key usage only.
    let mut seen = BTreeSet::new();
    for (oid, _, _) in &requested.extensions {
        prop_assert!(
            seen.insert(oid.clone()),
            "approved a repeated extension {:02x?}",
            oid
        );
        prop_assert!(
            [SAN, KEY_USAGE, EXT_KEY_USAGE].contains(&oid.as_slice()),
            "approved extension {:02x?}",
            oid
        );
    }
    let find = |wanted: &[u8]| requested.extensions.iter().find(|(oid, ..)| oid == wanted);
    let (_, critical, names) =
        find(SAN).ok_or_else(|| TestCaseError::fail("approved a CSR without a SAN"))?;
    prop_assert!(
        *critical,
        "approved a non-critical SAN with an empty subject"
    );
    let (names, rest) =
        signed::element(names).ok_or_else(|| TestCaseError::fail("approved an unreadable SAN"))?;
    prop_assert!(rest.is_empty());
    let names = signed::children(names.contents)
        .ok_or_else(|| TestCaseError::fail("approved an unreadable SAN"))?;
    let [uri] = names.as_slice() else {
        return Err(TestCaseError::fail(format!(
            "approved {} SANs",
            names.len()
        )));
    };
    prop_assert_eq!(uri.tag, 0x86, "approved a SAN that is not a URI");

    if let Some((_, _, bits)) = find(KEY_USAGE) {
        // RFC 5280 defines nine bits (the first byte and the top bit of the second); of
        // those, only digitalSignature (first) and keyEncipherment (third) may be set.
        // Bits past the ninth name no usage.
        let (bits, _) = signed::element(bits).ok_or_else(|| TestCaseError::fail("bad KU"))?;
        let forbidden = [0b0101_1111u8, 0b1000_0000];
        for (byte, mask) in bits.contents.iter().skip(1).zip(forbidden) {
            prop_assert_eq!(
                byte & mask,
                0,
                "approved key usage bits {:02x?}",
                bits.contents
            );
        }
    }
    if let Some((_, _, purposes)) = find(EXT_KEY_USAGE) {
        let (list, _) = signed::element(purposes).ok_or_else(|| TestCaseError::fail("EKU"))?;
        for purpose in signed::children(list.contents).unwrap_or_default() {
            prop_assert!(
                [SERVER_AUTH, CLIENT_AUTH].contains(&purpose.contents),
                "approved extended key usage {:02x?}",
                purpose.contents
            );
        }
    }
    let key = requested
        .key
        .ok_or_else(|| TestCaseError::fail("approved an unknown key"))?;
    prop_assert!(
        case.allowed_keys.contains(&key),
        "approved key {key} not allowed"
    );

    // The spec.
    prop_assert_eq!(&case.issuer, &SpiffePolicy::default().issuer().clone());
    prop_assert!(!case.is_ca, "approved isCA");
    let usages: BTreeSet<&str> = case.usages.iter().map(String::as_str).collect();
    prop_assert_eq!(
        usages,
        BTreeSet::from(REQUIRED_USAGES),
        "approved other usages"
    );
    let duration = case.duration.as_deref().unwrap_or("none");
    prop_assert!(duration_in_bounds(duration), "approved duration {duration}");

    // The requester and the ID it is entitled to.
    let account = entitled_account(case)?;
    let expected = format!("spiffe://{TRUST_DOMAIN}/{}/sa/{}", account.0, account.1);
    prop_assert_eq!(
        std::str::from_utf8(uri.contents).ok(),
        Some(expected.as_str()),
        "approved an ID that is not the entitled account's"
    );
    if let Some(annotation) = &case.identity_annotation {
        prop_assert_eq!(
            annotation,
            &expected,
            "approved a differing identity annotation"
        );
    }
    Ok(())
}

/// The namespace and account the requester may ask an ID for, or why it may ask for none.
fn entitled_account(case: &Case) -> Result<(String, String), TestCaseError> {
    let one = |key: &str| match case.extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Some(value.clone()),
        _ => None,
    };
    match &case.requester {
        RequesterMode::PodAccount { require_pod_bound } => {
            let rest = case.username.strip_prefix("system:serviceaccount:");
            let Some((namespace, account)) = rest.and_then(|r| r.split_once(':')) else {
                return Err(TestCaseError::fail(
                    "approved a requester that is no account",
                ));
            };
            prop_assert_eq!(
                namespace,
                case.namespace.as_str(),
                "approved another namespace"
            );
            match one(EXTRA_POD_NAME) {
                None => prop_assert!(!require_pod_bound, "approved an unbound token"),
                Some(name) => {
                    let pod = case.pod.as_ref().filter(|p| p.name == name);
                    let pod = pod.ok_or_else(|| TestCaseError::fail("approved, no pod"))?;
                    prop_assert_eq!(Some(pod.uid.clone()), one(EXTRA_POD_UID));
                    prop_assert_eq!(&pod.service_account, account);
                    prop_assert_eq!(&pod.namespace, namespace);
                }
            }
            Ok((namespace.to_owned(), account.to_owned()))
        }
        RequesterMode::DriverAccount { accounts } => {
            prop_assert!(accounts.contains(&case.username), "approved a non-driver");
            let (name, uid) = case
                .pod_annotations
                .clone()
                .ok_or_else(|| TestCaseError::fail("approved without pod annotations"))?;
            let pod = case.pod.as_ref().filter(|p| p.name == name);
            let pod = pod.ok_or_else(|| TestCaseError::fail("approved, no pod"))?;
            prop_assert_eq!(&pod.uid, &uid);
            prop_assert_eq!(Some(pod.node_name.clone()), one(EXTRA_NODE_NAME));
            prop_assert_eq!(&pod.namespace, &case.namespace);
            Ok((pod.namespace.clone(), pod.service_account.clone()))
        }
    }
}

// ---- Strategies --------------------------------------------------------------------------

/// Mostly `good`, sometimes one of `bad`: with about fifteen parts, one request in five is
/// approved and every wrong value still leads a denial now and then.
fn mostly<T: Clone + std::fmt::Debug + 'static>(good: T, bad: Vec<T>) -> BoxedStrategy<T> {
    prop_oneof![8 => Just(good), 1 => prop::sample::select(bad)].boxed()
}

fn id(namespace: &str, account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/{namespace}/sa/{account}")
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        6 => Just(Name::Uri(id("demo", "web"))),
        1 => prop::sample::select(vec![
            Name::Uri(id("demo", "admin")),
            Name::Uri(id("other", "web")),
            Name::Uri("spiffe://other.test/demo/sa/web".into()),
            Name::Uri(format!("{}/x", id("demo", "web"))),
            Name::Uri("SPIFFE://nico.local/demo/sa/web".into()),
            Name::Uri("spiffe://nico.local/demo/sa/web/".into()),
            Name::Uri("spiffe://nico.local/demo/sa/../sa/web".into()),
            Name::Uri("https://nico.local/demo/sa/web".into()),
            Name::Dns("web.demo.svc".into()),
            Name::Ip([10, 0, 0, 1]),
            Name::Email("web@demo".into()),
        ]),
    ]
}

fn csr_shape() -> impl Strategy<Value = CsrShape> {
    let sans = prop_oneof![
        8 => prop::collection::vec(name(), 1..2).prop_map(|names| vec![(true, names)]),
        1 => prop::collection::vec(name(), 0..4).prop_map(|names| vec![(true, names)]),
        1 => prop::collection::vec(name(), 1..2).prop_map(|names| vec![(false, names)]),
        1 => Just(vec![]),
        1 => (name(), name()).prop_map(|(a, b)| vec![(true, vec![a]), (true, vec![b])]),
    ];
    let key_usage = prop_oneof![
        3 => Just(Some(0b1010_0000_0000_0000u16)),
        1 => Just(None),
        1 => any::<u16>().prop_map(Some),
    ];
    let purposes = prop_oneof![
        3 => Just(Some(vec![SERVER_AUTH, CLIENT_AUTH])),
        1 => Just(None),
        1 => prop::sample::subsequence(vec![SERVER_AUTH, CLIENT_AUTH, CODE_SIGNING], 0..3)
            .prop_map(Some),
    ];
    (
        0..3usize,
        mostly(None, vec![Some("web".to_owned()), Some(String::new())]),
        sans,
        key_usage,
        purposes,
        mostly(None, vec![Some(false), Some(true)]),
        mostly(None, vec![Some(false), Some(true)]),
        prop::option::weighted(0.1, fuzzing::mutation()),
    )
        .prop_map(
            |(key, common_name, sans, key_usage, purposes, bc, unknown, mutation)| CsrShape {
                key,
                common_name,
                sans,
                key_usage,
                extended_key_usages: purposes,
                basic_constraints: bc,
                unknown_extension: unknown,
                mutation,
            },
        )
}

fn requester_mode() -> impl Strategy<Value = RequesterMode> {
    prop::sample::select(vec![
        RequesterMode::PodAccount {
            require_pod_bound: false,
        },
        RequesterMode::PodAccount {
            require_pod_bound: true,
        },
        RequesterMode::DriverAccount {
            accounts: BTreeSet::from([DRIVER.to_owned()]),
        },
    ])
}

fn case() -> impl Strategy<Value = Case> {
    let usages = REQUIRED_USAGES.map(String::from).to_vec();
    let mut reordered = usages.clone();
    reordered.reverse();
    let mut doubled = usages.clone();
    doubled.push(usages[0].clone());
    let mut extra_usage = usages.clone();
    extra_usage.push("cert sign".into());
    let spec = (
        mostly("demo".to_owned(), vec!["other".into(), String::new()]),
        mostly(
            SpiffePolicy::default().issuer().clone(),
            vec![
                IssuerName::new("nico-identity", None, None),
                IssuerName::new("other", Some("ClusterIssuer"), None),
            ],
        ),
        mostly(
            Some("1h".to_owned()),
            [
                "5m", "48h", "10m", "24h", "1h0m0s", "90m", "600s", "-1h", "1x", "",
            ]
            .map(|d| Some(d.to_owned()))
            .into_iter()
            .chain([None])
            .collect(),
        ),
        mostly(false, vec![true]),
        mostly(
            usages.clone(),
            vec![
                reordered,
                doubled,
                extra_usage,
                usages[1..].to_vec(),
                vec![],
            ],
        ),
    );
    let who = (
        mostly(
            "system:serviceaccount:demo:web".to_owned(),
            vec![
                "system:serviceaccount:demo:admin".into(),
                "system:serviceaccount:other:web".into(),
                "system:serviceaccount:demo:web:x".into(),
                "alice".into(),
                DRIVER.into(),
            ],
        ),
        mostly(
            pod_bound_extra("web-0", POD_UID),
            vec![
                BTreeMap::new(),
                pod_bound_extra("web-0", "uid-old"),
                pod_bound_extra("web-1", POD_UID),
                pod_bound_extra("web-0", ""),
                BTreeMap::from([(
                    EXTRA_POD_NAME.to_owned(),
                    vec!["web-0".to_owned(), "web-1".to_owned()],
                )]),
            ],
        ),
        mostly(
            None,
            vec![
                Some(("web-0".to_owned(), POD_UID.to_owned())),
                Some(("web-0".to_owned(), "uid-old".to_owned())),
                Some((String::new(), String::new())),
            ],
        ),
        mostly(
            Some(id("demo", "web")),
            vec![None, Some(id("demo", "admin")), Some(String::new())],
        ),
        mostly(
            Some(web_pod()),
            vec![
                None,
                Some(PodFacts {
                    uid: "uid-old".into(),
                    ..web_pod()
                }),
                Some(PodFacts {
                    service_account: "admin".into(),
                    ..web_pod()
                }),
                Some(PodFacts {
                    node_name: "node-2".into(),
                    ..web_pod()
                }),
            ],
        ),
    );
    let all_keys: Vec<AllowedKey> = test_keys().iter().map(|k| k.allowed).collect();
    let keys = prop::sample::subsequence(all_keys, 1..4);
    (requester_mode(), keys, csr_shape(), spec, who).prop_map(
        |(requester, keys, shape, spec, who)| {
            let (namespace, issuer, duration, is_ca, usages) = spec;
            let (username, extra, pod_annotations, identity_annotation, pod) = who;
            // In driver mode the driver asks, with the pod named in annotations.
            let driver = matches!(requester, RequesterMode::DriverAccount { .. });
            Case {
                username: if driver { DRIVER.to_owned() } else { username },
                pod_annotations: if driver && pod_annotations.is_none() {
                    Some(("web-0".to_owned(), POD_UID.to_owned()))
                } else {
                    pod_annotations
                },
                requester,
                allowed_keys: keys.into_iter().collect(),
                csr: shape.pem(),
                namespace,
                issuer,
                duration,
                is_ca,
                usages,
                extra,
                identity_annotation,
                pod,
            }
        },
    )
}

// ---- Targets ---------------------------------------------------------------------------

/// Every corpus CSR in an otherwise good request; the `svid-*` entries must be approved (so
/// the property above is ever exercised), the rest judged by it.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let mut failures = Vec::new();
    for (name, bytes) in fuzzing::corpus(&corpus_dir()) {
        let case = Case::good(String::from_utf8_lossy(&bytes).into_owned());
        if name.starts_with("svid-") && !case.decide().is_approved() {
            failures.push(format!("{name}: {:?}", case.decide()));
        }
        if let Err(failure) = check_approval(&case) {
            failures.push(format!("{name}: {failure}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The generator's good request is approved: the structured target reaches approvals.
#[test]
fn the_structured_good_request_is_approved() {
    let shape = CsrShape {
        key: 0,
        common_name: None,
        sans: vec![(true, vec![Name::Uri(id("demo", "web"))])],
        key_usage: Some(0b1010_0000_0000_0000),
        extended_key_usages: Some(vec![SERVER_AUTH, CLIENT_AUTH]),
        basic_constraints: None,
        unknown_extension: None,
        mutation: None,
    };
    let case = Case::good(shape.pem());
    assert_eq!(case.decide(), Decision::Approve);
    check_approval(&case).unwrap();
}

proptest! {
    #![proptest_config(fuzzing::config(2000))]

    #[test]
    fn fuzz_policy(case in case()) {
        check_approval(&case)?;
    }

    #[test]
    fn fuzz_policy_csr(input in fuzzing::inputs(fuzzing::seeds(&corpus_dir()), 2048)) {
        check_approval(&Case::good(String::from_utf8_lossy(&input).into_owned()))?;
    }
}
