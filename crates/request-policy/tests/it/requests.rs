//! Policies judging requests, one row per case: each row changes one thing about a request
//! the policy permits and names the request field the requester must fix.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use nico_csr::{ParsedCsr, parse_csr_pem};
use nico_policy::IssuerName;
use nico_request_policy::{ClusterFacts, Limits, PolicyRequest, RequestPolicy, Verdict};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
    SignatureAlgorithm,
};
use serde_json::json;

/// A request and the cluster facts it is judged with.
#[derive(Clone)]
struct Case {
    name: String,
    namespace: String,
    username: String,
    groups: Vec<String>,
    issuer: IssuerName,
    duration: Option<String>,
    is_ca: bool,
    usages: Vec<String>,
    csr: CsrShape,
    services: Option<Vec<String>>,
}

/// What the CSR holds; built into a real, signed CSR for each evaluation.
#[derive(Clone)]
struct CsrShape {
    algorithm: &'static SignatureAlgorithm,
    subject: Vec<(DnType, String)>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    uris: Vec<String>,
    emails: Vec<String>,
    ca: bool,
}

impl CsrShape {
    fn build(&self) -> ParsedCsr {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (kind, value) in &self.subject {
            dn.push(kind.clone(), value.as_str());
        }
        params.distinguished_name = dn;
        let ia5 = |s: &String| Ia5String::try_from(s.as_str()).unwrap();
        params.subject_alt_names = self
            .dns
            .iter()
            .map(|d| SanType::DnsName(ia5(d)))
            .chain(self.ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .chain(self.uris.iter().map(|u| SanType::URI(ia5(u))))
            .chain(self.emails.iter().map(|e| SanType::Rfc822Name(ia5(e))))
            .collect();
        if self.ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let key = KeyPair::generate_for(self.algorithm).unwrap();
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        parse_csr_pem(pem.as_bytes()).unwrap()
    }
}

impl Case {
    fn good() -> Self {
        Self {
            name: "web-tls-1".into(),
            namespace: "demo".into(),
            username: "system:serviceaccount:cert-manager:cert-manager".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
            issuer: IssuerName::new("service-ca", Some("ClusterIssuer"), None),
            duration: Some("24h".into()),
            is_ca: false,
            usages: vec!["digital signature".into(), "server auth".into()],
            csr: CsrShape {
                algorithm: &rcgen::PKCS_ECDSA_P256_SHA256,
                subject: vec![(DnType::CommonName, "web.demo.svc".into())],
                dns: vec!["web.demo.svc".into(), "web.demo.svc.cluster.local".into()],
                ips: vec![],
                uris: vec![],
                emails: vec![],
                ca: false,
            },
            services: Some(vec!["web".into(), "db".into()]),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    fn evaluate(&self, policy: &RequestPolicy) -> Result<(), Vec<nico_request_policy::Violation>> {
        let csr = self.csr.build();
        let request = PolicyRequest {
            name: &self.name,
            namespace: &self.namespace,
            username: &self.username,
            groups: &self.groups,
            issuer: &self.issuer,
            duration: self.duration.as_deref(),
            is_ca: self.is_ca,
            usages: &self.usages,
            csr: &csr,
        };
        let facts = ClusterFacts {
            services: self.services.as_deref(),
        };
        policy.evaluate(&request, &facts)
    }
}

fn policy(spec: serde_json::Value) -> RequestPolicy {
    RequestPolicy::from_json("test", &spec, Limits::default()).unwrap()
}

/// The policy every row is judged by: what [`Case::good`] asks for and little more.
fn web_policy() -> RequestPolicy {
    policy(json!({
        "selector": {"issuerRef": {"name": "service-ca", "kind": "ClusterIssuer"}},
        "allowed": {
            "commonName": {"value": "*.svc"},
            "dnsNames": {
                "required": true,
                "values": ["*.svc", "*.svc.cluster.local"],
                "validations": [{
                    "rule": "services.exists(s, self.startsWith(s + '.' + cr.namespace + '.'))",
                    "message": "must name a Service of the request's namespace"
                }]
            },
            "ipAddresses": {"values": ["10.0.0.*"]},
            "subject": {"organizations": {"values": ["Example *"]}},
            "usages": ["digital signature", "key encipherment", "server auth"]
        },
        "constraints": {
            "minDuration": "1h", "maxDuration": "720h",
            "privateKey": {"algorithm": "ECDSA", "maxSize": 256}
        }
    }))
}

fn rows() -> Vec<(&'static str, Case, &'static str, &'static str)> {
    let good = Case::good();
    vec![
        (
            "dns name outside the patterns",
            good.clone()
                .with(|c| c.csr.dns.push("web.example.com".into())),
            "csr.subjectAltName.dnsNames",
            "DNS name \"web.example.com\" not allowed by spec.allowed.dnsNames.values: expected \
             *.svc, *.svc.cluster.local",
        ),
        (
            "dns name of a service that does not exist",
            good.clone()
                .with(|c| c.csr.dns.push("cache.demo.svc".into())),
            "csr.subjectAltName.dnsNames",
            "DNS name \"cache.demo.svc\" failed spec.allowed.dnsNames.validations[0]: must name \
             a Service of the request's namespace",
        ),
        (
            "dns name of another namespace",
            good.clone()
                .with(|c| c.csr.dns.push("web.other.svc".into())),
            "csr.subjectAltName.dnsNames",
            "\"web.other.svc\" failed spec.allowed.dnsNames.validations[0]",
        ),
        (
            "no dns name",
            good.clone().with(|c| {
                c.csr.dns.clear();
                c.csr.subject.clear();
            }),
            "csr.subjectAltName.dnsNames",
            "a DNS name is required by spec.allowed.dnsNames.required",
        ),
        (
            "uri san",
            good.clone()
                .with(|c| c.csr.uris.push("spiffe://nico.local/demo/sa/web".into())),
            "csr.subjectAltName.uris",
            "URI \"spiffe://nico.local/demo/sa/web\" not allowed: the policy allows none",
        ),
        (
            "email san",
            good.clone()
                .with(|c| c.csr.emails.push("ops@example.com".into())),
            "csr.subjectAltName.emailAddresses",
            "not allowed: the policy allows none",
        ),
        (
            "ip outside the pattern",
            good.clone()
                .with(|c| c.csr.ips.push(IpAddr::from([10, 0, 1, 5]))),
            "csr.subjectAltName.ipAddresses",
            "IP address \"10.0.1.5\" not allowed by spec.allowed.ipAddresses.values",
        ),
        (
            "common name outside the pattern",
            good.clone()
                .with(|c| c.csr.subject = vec![(DnType::CommonName, "admin".into())]),
            "csr.subject.commonName",
            "common name \"admin\" not allowed by spec.allowed.commonName.value: expected *.svc",
        ),
        (
            "two common names",
            good.clone().with(|c| {
                // The same OID under another key: rcgen keeps one value per DnType.
                let cn = DnType::CustomDnType(vec![2, 5, 4, 3]);
                c.csr.subject.push((cn, "db.demo.svc".into()));
            }),
            "csr.subject.commonName",
            "2 common names presented, at most one is allowed",
        ),
        (
            "organization outside the pattern",
            good.clone().with(|c| {
                c.csr
                    .subject
                    .push((DnType::OrganizationName, "Evil Corp".into()));
            }),
            "csr.subject.organizations",
            "organization \"Evil Corp\" not allowed by spec.allowed.subject.organizations.value",
        ),
        (
            "country not allowed at all",
            good.clone()
                .with(|c| c.csr.subject.push((DnType::CountryName, "DE".into()))),
            "csr.subject.countries",
            "country \"DE\" not allowed: the policy allows none",
        ),
        (
            "serial number not allowed at all",
            good.clone().with(|c| {
                c.csr
                    .subject
                    .push((DnType::CustomDnType(vec![2, 5, 4, 5]), "42".into()));
            }),
            "csr.subject.serialNumber",
            "serial number \"42\" not allowed: the policy allows none",
        ),
        (
            "unknown subject attribute",
            good.clone().with(|c| {
                c.csr.subject.push((
                    DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                    "x".into(),
                ));
            }),
            "csr.subject",
            "DC=x not allowed",
        ),
        (
            "ca requested in the spec",
            good.clone().with(|c| c.is_ca = true),
            "spec.isCA",
            "a CA certificate was requested, but spec.allowed.isCA is not true",
        ),
        (
            "ca requested only in the csr",
            good.clone().with(|c| c.csr.ca = true),
            "csr.basicConstraints",
            "the CSR asks for a CA certificate",
        ),
        (
            "usage not allowed",
            good.clone().with(|c| c.usages.push("client auth".into())),
            "spec.usages",
            "client auth not allowed by spec.allowed.usages: expected only digital signature, \
             key encipherment, server auth",
        ),
        (
            "no duration",
            good.clone().with(|c| c.duration = None),
            "spec.duration",
            "no duration requested",
        ),
        (
            "duration too short",
            good.clone().with(|c| c.duration = Some("30m".into())),
            "spec.duration",
            "requested duration 30m0s is shorter than spec.constraints.minDuration 1h0m0s",
        ),
        (
            "duration too long",
            good.clone().with(|c| c.duration = Some("2160h".into())),
            "spec.duration",
            "requested duration 2160h0m0s is longer than spec.constraints.maxDuration 720h0m0s",
        ),
        (
            "rsa key",
            good.clone()
                .with(|c| c.csr.algorithm = &rcgen::PKCS_RSA_SHA256),
            "csr.publicKey",
            "key algorithm RSA 2048 bits is not allowed: spec.constraints.privateKey.algorithm \
             is ECDSA",
        ),
        (
            "key too large",
            good.clone()
                .with(|c| c.csr.algorithm = &rcgen::PKCS_ECDSA_P384_SHA384),
            "csr.publicKey",
            "key size 384 is larger than spec.constraints.privateKey.maxSize 256",
        ),
    ]
}

#[test]
fn each_row_is_denied_on_its_field_and_the_good_request_is_approved() {
    let policy = web_policy();
    assert_eq!(Case::good().evaluate(&policy), Ok(()));
    let mut snapshot = String::new();
    for (name, case, field, fragment) in rows() {
        let violations = case.evaluate(&policy).err().unwrap_or_else(|| {
            panic!("{name}: approved, expected a violation on {field}");
        });
        let hit = violations
            .iter()
            .find(|v| v.field() == field && v.reason().contains(fragment));
        assert!(hit.is_some(), "{name}: {violations:?}");
        writeln!(snapshot, "{name}").unwrap();
        for v in &violations {
            writeln!(snapshot, "  {v}").unwrap();
        }
    }
    insta::assert_snapshot!("violations", snapshot);
}

#[test]
fn good_variations_are_approved() {
    let policy = web_policy();
    let approved = [
        (
            "no common name",
            Case::good().with(|c| c.csr.subject.clear()),
        ),
        (
            "ip inside the pattern",
            Case::good().with(|c| c.csr.ips.push(IpAddr::from([10, 0, 0, 9]))),
        ),
        (
            "allowed organization",
            Case::good().with(|c| {
                c.csr
                    .subject
                    .push((DnType::OrganizationName, "Example Inc".into()));
            }),
        ),
        ("fewer usages", Case::good().with(|c| c.usages.truncate(1))),
        ("no usages", Case::good().with(|c| c.usages.clear())),
        (
            "shortest",
            Case::good().with(|c| c.duration = Some("1h".into())),
        ),
        (
            "longest",
            Case::good().with(|c| c.duration = Some("720h".into())),
        ),
    ];
    for (name, case) in approved {
        assert_eq!(case.evaluate(&policy), Ok(()), "{name}");
    }
}

#[test]
fn cel_rules_see_every_variable() {
    let rule = |rule: &str| {
        policy(json!({
            "selector": {"issuerRef": {}},
            "allowed": {
                "dnsNames": {"validations": [{"rule": rule}]},
                "commonName": {"value": "*"},
                "usages": ["digital signature", "server auth"]
            },
        }))
    };
    let good = Case::good();
    let rows = [
        ("self.endsWith('.svc') || self.endsWith('.local')", true),
        ("cr.name == 'web-tls-1'", true),
        ("cr.name == 'other'", false),
        ("self.split('.')[1] == cr.namespace", true),
        ("cr.namespace == 'prod'", false),
        (
            "cr.username == 'system:serviceaccount:cert-manager:cert-manager'",
            true,
        ),
        (
            "cr.username.startsWith('system:serviceaccount:demo:')",
            false,
        ),
        ("'system:authenticated' in cr.groups", true),
        ("'system:masters' in cr.groups", false),
        ("self.split('.')[0] in services", true),
        ("services.size() == 0", false),
    ];
    for (source, expected) in rows {
        let result = good.evaluate(&rule(source));
        assert_eq!(result.is_ok(), expected, "{source}: {result:?}");
    }
}

#[test]
fn omitted_fields_allow_nothing_and_an_empty_entry_allows_nothing_either() {
    let bare = policy(json!({"selector": {"issuerRef": {}}}));
    let violations = Case::good().evaluate(&bare).unwrap_err();
    let fields: Vec<&str> = violations.iter().map(|v| v.field()).collect();
    assert_eq!(
        fields,
        [
            "csr.subjectAltName.dnsNames",
            "csr.subject.commonName",
            "spec.usages"
        ]
    );
    let empty_entry = policy(json!({
        "selector": {"issuerRef": {}},
        "allowed": {"dnsNames": {}, "commonName": {},
                    "usages": ["digital signature", "server auth"]}
    }));
    let violations = Case::good().evaluate(&empty_entry).unwrap_err();
    assert!(
        violations[0]
            .reason()
            .contains("spec.allowed.dnsNames sets neither values nor validations"),
        "{violations:?}"
    );
    let anything = policy(json!({
        "selector": {"issuerRef": {}},
        "allowed": {"dnsNames": {"values": ["*"]}, "commonName": {"value": "*"},
                    "usages": ["digital signature", "server auth"]}
    }));
    assert_eq!(Case::good().evaluate(&anything), Ok(()));
}

#[test]
fn key_constraints_read_the_csr() {
    let rsa_only = policy(json!({
        "selector": {"issuerRef": {}},
        "allowed": {"dnsNames": {"values": ["*"]}, "commonName": {"value": "*"},
                    "usages": ["digital signature", "server auth"]},
        "constraints": {"privateKey": {"algorithm": "RSA", "minSize": 3072}}
    }));
    let rsa = Case::good().with(|c| c.csr.algorithm = &rcgen::PKCS_RSA_SHA256);
    let violations = rsa.evaluate(&rsa_only).unwrap_err();
    assert_eq!(
        violations[0].to_string(),
        "csr.publicKey: key size 2048 is smaller than spec.constraints.privateKey.minSize 3072"
    );
    let ed = Case::good().with(|c| c.csr.algorithm = &rcgen::PKCS_ED25519);
    let violations = ed.evaluate(&rsa_only).unwrap_err();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].reason().contains("algorithm is RSA"));
}

#[test]
fn verdicts_combine_policies() {
    let strict = web_policy();
    let lenient = policy(json!({
        "selector": {"issuerRef": {}},
        "allowed": {"dnsNames": {"values": ["*"]}, "commonName": {"value": "*"},
                    "uris": {"values": ["spiffe://*"]},
                    "usages": ["digital signature", "server auth"]}
    }));
    let with_uri = Case::good().with(|c| c.csr.uris.push("spiffe://x/y".into()));
    let verdict = Verdict::combine([
        ("strict", with_uri.evaluate(&strict)),
        ("lenient", with_uri.evaluate(&lenient)),
    ]);
    assert_eq!(
        verdict,
        Verdict::Approve {
            policy: "lenient".into()
        }
    );
    let bad = with_uri.with(|c| c.usages.push("cert sign".into()));
    let Verdict::Deny { message } = Verdict::combine([
        ("lenient", bad.evaluate(&lenient)),
        ("strict", bad.evaluate(&strict)),
    ]) else {
        panic!("expected a denial");
    };
    assert!(message.contains("[lenient] spec.usages"), "{message}");
    assert!(
        message.contains("[strict] csr.subjectAltName.uris"),
        "{message}"
    );
}

#[test]
fn selection_uses_the_issuer_after_defaults_and_the_namespace() {
    let p = policy(json!({
        "selector": {"issuerRef": {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"},
                     "namespace": {"matchNames": ["team-*"]}}
    }));
    let bare = IssuerName::new("ca", None, None);
    assert!(p.selects(&bare, "team-a", None));
    assert!(!p.selects(&bare, "demo", None));
    let labelled = policy(json!({
        "selector": {"namespace": {"matchLabels": {"tls": "service"}}}
    }));
    let labels = BTreeMap::from([("tls".to_owned(), "service".to_owned())]);
    assert!(labelled.selects(&bare, "any", Some(&labels)));
    assert!(!labelled.selects(&bare, "any", Some(&BTreeMap::new())));
}
