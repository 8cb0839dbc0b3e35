//! Judging against a cluster held in memory: routing, the pod lookup, the compatibility
//! switches, and policies (selection, the RBAC `use` binding, the start-up race, policies
//! that do not load).

use std::collections::BTreeMap;
use std::sync::Mutex;

use nico_k8s_types::{CertificateRequest, CertificateRequestPolicy, CertificateRequestSpec};
use nico_k8s_types::{IDENTITY_ANNOTATION, IssuerRef};
use nico_policy::{EXTRA_POD_NAME, EXTRA_POD_UID, PodFacts};
use nico_request_policy::Limits;
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::policies::PolicyCache;

const APP: &str = "system:serviceaccount:demo:web";
const CERT_MANAGER: &str = "system:serviceaccount:cert-manager:cert-manager";

/// A cluster in memory that records the access reviews it answers.
#[derive(Default)]
struct FakeCluster {
    pods: Vec<PodFacts>,
    services: BTreeMap<String, Vec<String>>,
    labels: BTreeMap<String, BTreeMap<String, String>>,
    /// (user, policy) pairs bound by RBAC.
    grants: Vec<(String, String)>,
    reviews: Mutex<Vec<(String, String, String)>>,
}

impl Cluster for FakeCluster {
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodFacts>, ClusterError> {
        Ok(self
            .pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .cloned())
    }

    async fn service_names(&self, namespace: &str) -> Result<Vec<String>, ClusterError> {
        Ok(self.services.get(namespace).cloned().unwrap_or_default())
    }

    async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, ClusterError> {
        Ok(self.labels.get(namespace).cloned().unwrap_or_default())
    }

    async fn may_use_policy(
        &self,
        requester: &Requester,
        policy: &str,
        namespace: &str,
    ) -> Result<bool, ClusterError> {
        self.reviews.lock().unwrap().push((
            requester.username.clone(),
            policy.to_owned(),
            namespace.to_owned(),
        ));
        Ok(self
            .grants
            .iter()
            .any(|(user, p)| *user == requester.username && p == policy))
    }
}

fn csr(dns: &[&str], uris: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let ia5 = |s: &&str| Ia5String::try_from(*s).unwrap();
    params.subject_alt_names = dns
        .iter()
        .map(|d| SanType::DnsName(ia5(d)))
        .chain(uris.iter().map(|u| SanType::URI(ia5(u))))
        .collect();
    let key = KeyPair::generate().unwrap();
    params
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

fn request(issuer: &str, kind: &str, dns: &[&str], uris: &[&str]) -> CertificateRequest {
    let mut cr = CertificateRequest::new(
        "cr-1",
        CertificateRequestSpec {
            request: csr(dns, uris),
            issuer_ref: IssuerRef {
                name: issuer.into(),
                kind: Some(kind.into()),
                group: None,
            },
            duration: Some("1h".into()),
            usages: Some(
                nico_k8s_types::SPIFFE_USAGES
                    .iter()
                    .map(|u| (*u).to_owned())
                    .collect(),
            ),
            is_ca: Some(false),
            username: Some(APP.into()),
            groups: Some(vec!["system:authenticated".into()]),
            ..CertificateRequestSpec::default()
        },
    );
    cr.metadata.namespace = Some("demo".into());
    cr
}

/// What the node driver sends for pod demo/web-0.
fn svid_request() -> CertificateRequest {
    let id = "spiffe://nico.local/demo/sa/web";
    let mut cr = request("nico-identity", "ClusterIssuer", &[], &[id]);
    cr.metadata.annotations = Some([(IDENTITY_ANNOTATION.to_owned(), id.to_owned())].into());
    cr.spec.extra = Some(
        [
            (EXTRA_POD_NAME.to_owned(), vec!["web-0".to_owned()]),
            (EXTRA_POD_UID.to_owned(), vec!["uid-web-0".to_owned()]),
        ]
        .into(),
    );
    cr
}

/// A service TLS request made by cert-manager.
fn service_request(dns: &[&str]) -> CertificateRequest {
    let mut cr = request("service-ca", "ClusterIssuer", dns, &[]);
    cr.spec.username = Some(CERT_MANAGER.into());
    cr.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
    cr
}

fn web_pod() -> PodFacts {
    PodFacts {
        namespace: "demo".into(),
        name: "web-0".into(),
        uid: "uid-web-0".into(),
        service_account: "web".into(),
        node_name: "node-1".into(),
    }
}

fn settings(non_spiffe: NonSpiffeMode) -> Settings {
    Config {
        non_spiffe,
        ..Config::default()
    }
    .validate()
    .unwrap()
}

fn policy(name: &str, spec: serde_json::Value) -> CertificateRequestPolicy {
    CertificateRequestPolicy::new(name, spec)
}

/// Allows DNS names under `.svc` of existing Services, through the service CA.
fn service_policy() -> CertificateRequestPolicy {
    policy(
        "service-tls",
        json!({
            "selector": {"issuerRef": {"name": "service-ca", "kind": "ClusterIssuer"}},
            "allowed": {
                "dnsNames": {"values": ["*.svc"], "validations": [
                    {"rule": "services.exists(s, self == s + '.' + cr.namespace + '.svc')"}
                ]},
                "usages": ["digital signature", "server auth"]
            }
        }),
    )
}

fn deny_all() -> CertificateRequestPolicy {
    policy("deny-all", json!({"selector": {"issuerRef": {}}}))
}

fn view(policies: Vec<CertificateRequestPolicy>) -> PolicyView {
    PolicyCache::fixed(policies, Limits::default())
        .view()
        .unwrap()
}

fn granted(pairs: &[(&str, &str)]) -> FakeCluster {
    FakeCluster {
        pods: vec![web_pod()],
        services: [("demo".to_owned(), vec!["web".to_owned()])].into(),
        grants: pairs
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect(),
        ..FakeCluster::default()
    }
}

async fn verdict(
    cr: &CertificateRequest,
    mode: NonSpiffeMode,
    policies: Option<&PolicyView>,
    cluster: &FakeCluster,
) -> Judgement {
    judge(cr, &settings(mode), policies, cluster).await.unwrap()
}

fn denied_with(judgement: &Judgement, fragment: &str) -> bool {
    matches!(judgement, Judgement::Deny { message, .. } if message.contains(fragment))
}

#[tokio::test]
async fn svid_requests_are_judged_with_the_bound_pod() {
    let cluster = granted(&[]);
    let good = verdict(&svid_request(), NonSpiffeMode::Ignore, None, &cluster).await;
    assert!(
        matches!(
            good,
            Judgement::Approve {
                rules: Rules::Spiffe,
                ..
            }
        ),
        "{good:?}"
    );

    let gone = FakeCluster::default();
    let judgement = verdict(&svid_request(), NonSpiffeMode::Ignore, None, &gone).await;
    assert!(
        denied_with(
            &judgement,
            "spec.extra[authentication.kubernetes.io/pod-name]: pod demo/web-0"
        ),
        "{judgement:?}"
    );
}

#[tokio::test]
async fn requests_are_routed_to_the_spiffe_rules_by_annotation_issuer_or_trust_domain() {
    let cluster = granted(&[]);
    // No annotation, but aimed at the SPIFFE issuer: still the SPIFFE rules (and denied for
    // the DNS name).
    let to_spiffe_issuer = request("nico-identity", "ClusterIssuer", &["web.demo.svc"], &[]);
    let judgement = verdict(&to_spiffe_issuer, NonSpiffeMode::Approve, None, &cluster).await;
    assert!(
        denied_with(&judgement, "only URI SANs are allowed"),
        "{judgement:?}"
    );

    // An ID of our trust domain aimed at another issuer, annotation left out.
    let smuggled = request(
        "other-ca",
        "ClusterIssuer",
        &[],
        &["SPIFFE://nico.local/demo/sa/web"],
    );
    let judgement = verdict(&smuggled, NonSpiffeMode::Approve, None, &cluster).await;
    assert!(
        denied_with(
            &judgement,
            "spec.issuerRef: issuer ClusterIssuer.cert-manager.io/other-ca"
        ),
        "{judgement:?}"
    );

    // The annotation with another issuer.
    let mut annotated = svid_request();
    annotated.spec.issuer_ref.name = "other-ca".into();
    let judgement = verdict(&annotated, NonSpiffeMode::Approve, None, &cluster).await;
    assert!(denied_with(&judgement, "spec.issuerRef"), "{judgement:?}");
}

#[tokio::test]
async fn the_compatibility_switches() {
    let cluster = granted(&[]);
    let plain = service_request(&["web.demo.svc"]);
    assert_eq!(
        verdict(&plain, NonSpiffeMode::Ignore, None, &cluster).await,
        Judgement::Leave(Leave::NotOurs)
    );
    let approved = verdict(&plain, NonSpiffeMode::Approve, None, &cluster).await;
    assert!(
        matches!(
            approved,
            Judgement::Approve {
                rules: Rules::Auto,
                ..
            }
        ),
        "{approved:?}"
    );
    // A SPIFFE ID of another trust domain is still a SPIFFE ID.
    let foreign = request("other-ca", "Issuer", &[], &["spiffe://other.test/x"]);
    let judgement = verdict(&foreign, NonSpiffeMode::Approve, None, &cluster).await;
    assert!(denied_with(
        &judgement,
        "csr.subjectAltName: a SPIFFE ID may only be requested"
    ));
    let mut garbage = plain.clone();
    garbage.spec.request = b"not a csr".to_vec();
    let judgement = verdict(&garbage, NonSpiffeMode::Approve, None, &cluster).await;
    assert!(denied_with(&judgement, "spec.request"), "{judgement:?}");
}

#[tokio::test]
async fn requests_wait_until_every_policy_is_listed() {
    // The start-up race: with the deny-all policy listed and the allow policy not yet, the
    // request would be denied for good. Until the listing is complete it is left alone.
    let cluster = granted(&[(CERT_MANAGER, "deny-all"), (CERT_MANAGER, "service-tls")]);
    let cr = service_request(&["web.demo.svc"]);
    let unsynced = PolicyCache::unsynced(Limits::default());
    assert_eq!(
        verdict(
            &cr,
            NonSpiffeMode::Policy,
            unsynced.view().as_ref(),
            &cluster
        )
        .await,
        Judgement::Leave(Leave::PoliciesLoading)
    );
    // SPIFFE requests do not wait for policies.
    let svid = verdict(&svid_request(), NonSpiffeMode::Policy, None, &cluster).await;
    assert!(matches!(svid, Judgement::Approve { .. }));
    // Once both are listed, the allow policy wins.
    let both = view(vec![deny_all(), service_policy()]);
    let judgement = verdict(&cr, NonSpiffeMode::Policy, Some(&both), &cluster).await;
    assert_eq!(
        judgement,
        Judgement::Approve {
            rules: Rules::Policy,
            message: "approved by CertificateRequestPolicy \"service-tls\"".into()
        }
    );
}

#[tokio::test]
async fn a_policy_applies_only_to_requesters_bound_by_rbac() {
    let cr = service_request(&["web.demo.svc"]);
    let policies = view(vec![service_policy()]);

    let unbound = granted(&[("system:serviceaccount:demo:other", "service-tls")]);
    let judgement = verdict(&cr, NonSpiffeMode::Policy, Some(&policies), &unbound).await;
    assert_eq!(judgement, Judgement::Leave(Leave::NoPolicy));
    assert_eq!(
        unbound.reviews.lock().unwrap().as_slice(),
        [(
            CERT_MANAGER.to_owned(),
            "service-tls".to_owned(),
            "demo".to_owned()
        )],
        "one review: the requester, the policy, the request's namespace"
    );

    let bound = granted(&[(CERT_MANAGER, "service-tls")]);
    let judgement = verdict(&cr, NonSpiffeMode::Policy, Some(&policies), &bound).await;
    assert!(
        matches!(judgement, Judgement::Approve { .. }),
        "{judgement:?}"
    );

    // A policy that does not select the request is not even reviewed.
    let elsewhere = service_request(&["web.demo.svc"]);
    let mut elsewhere = elsewhere;
    elsewhere.spec.issuer_ref.name = "another-ca".into();
    let bound = granted(&[(CERT_MANAGER, "service-tls")]);
    let judgement = verdict(&elsewhere, NonSpiffeMode::Policy, Some(&policies), &bound).await;
    assert_eq!(judgement, Judgement::Leave(Leave::NoPolicy));
    assert!(bound.reviews.lock().unwrap().is_empty());
}

#[tokio::test]
async fn denials_carry_every_applicable_policys_reasons() {
    let cluster = granted(&[(CERT_MANAGER, "deny-all"), (CERT_MANAGER, "service-tls")]);
    let policies = view(vec![deny_all(), service_policy()]);
    let cr = service_request(&["db.demo.svc"]);
    let judgement = verdict(&cr, NonSpiffeMode::Policy, Some(&policies), &cluster).await;
    let Judgement::Deny { message, rules } = judgement else {
        panic!("expected a denial, got {judgement:?}");
    };
    assert_eq!(rules, Rules::Policy);
    assert!(message.starts_with("no CertificateRequestPolicy approved this request: [deny-all]"));
    assert!(
        message.contains(
            "[service-tls] csr.subjectAltName.dnsNames: DNS name \"db.demo.svc\" failed \
             spec.allowed.dnsNames.validations[0]"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn namespace_labels_select_policies() {
    let labelled = policy(
        "labelled",
        json!({
            "selector": {"namespace": {"matchLabels": {"tls": "service"}}},
            "allowed": {"dnsNames": {"values": ["*"]},
                        "usages": ["digital signature", "server auth"]}
        }),
    );
    let policies = view(vec![labelled]);
    let cr = service_request(&["anything.example.com"]);
    let mut cluster = granted(&[(CERT_MANAGER, "labelled")]);
    let judgement = verdict(&cr, NonSpiffeMode::Policy, Some(&policies), &cluster).await;
    assert_eq!(judgement, Judgement::Leave(Leave::NoPolicy));
    cluster.labels = [(
        "demo".to_owned(),
        [("tls".to_owned(), "service".to_owned())].into(),
    )]
    .into();
    let judgement = verdict(&cr, NonSpiffeMode::Policy, Some(&policies), &cluster).await;
    assert!(
        matches!(judgement, Judgement::Approve { .. }),
        "{judgement:?}"
    );
}

#[tokio::test]
async fn a_policy_that_does_not_load_holds_a_denial_back_but_not_an_approval() {
    let broken = policy(
        "broken",
        json!({"selector": {"issuerRef": {}}, "allowed": {"dnsNames": {"validations": [
            {"rule": "nosuch(self)"}
        ]}}}),
    );
    let cluster = granted(&[
        (CERT_MANAGER, "broken"),
        (CERT_MANAGER, "deny-all"),
        (CERT_MANAGER, "service-tls"),
    ]);
    let policies = view(vec![broken.clone(), deny_all()]);
    let cr = service_request(&["web.demo.svc"]);
    assert_eq!(
        verdict(&cr, NonSpiffeMode::Policy, Some(&policies), &cluster).await,
        Judgement::Leave(Leave::PolicyNotReady("broken".into()))
    );
    let policies = view(vec![broken, deny_all(), service_policy()]);
    let judgement = verdict(&cr, NonSpiffeMode::Policy, Some(&policies), &cluster).await;
    assert!(
        matches!(judgement, Judgement::Approve { .. }),
        "{judgement:?}"
    );
}
