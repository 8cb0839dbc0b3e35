//! Judging one request, without the cluster: the SPIFFE rules and the seed's
//! CertificateRequestPolicy, each including the CSR parse and signature check a real request
//! costs (criterion; numbers go to BENCHMARKS.md).
//!
//! `cargo bench -p nico-approver --bench evaluation`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nico_csr::{KeyAlgorithm, PrivateKey, build_spiffe_csr, parse_csr_pem};
use nico_policy::{
    EXTRA_POD_NAME, EXTRA_POD_UID, IssuerName, PodFacts, SpiffePolicy, SpiffeRequest,
};
use nico_request_policy::{ClusterFacts, Limits, PolicyRequest, RequestPolicy};
use nico_spiffe_id::SpiffeId;
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

const SEED: &str = include_str!("../../../config/policies/service-tls.yaml");

fn spiffe(c: &mut Criterion) {
    let policy = SpiffePolicy::default();
    let id = SpiffeId::parse("spiffe://nico.local/demo/sa/web").expect("a valid ID");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key");
    let csr = build_spiffe_csr(&key, &id).expect("a CSR");
    let issuer = policy.issuer().clone();
    let usages: Vec<String> = nico_policy::REQUIRED_USAGES
        .iter()
        .map(|u| (*u).to_owned())
        .collect();
    let extra = BTreeMap::from([
        (EXTRA_POD_NAME.to_owned(), vec!["web-0".to_owned()]),
        (EXTRA_POD_UID.to_owned(), vec!["uid-0".to_owned()]),
    ]);
    let pod = PodFacts {
        namespace: "demo".into(),
        name: "web-0".into(),
        uid: "uid-0".into(),
        service_account: "web".into(),
        node_name: "node-1".into(),
    };
    let request = SpiffeRequest {
        namespace: "demo",
        request: csr.as_bytes(),
        issuer: &issuer,
        duration: Some("1h"),
        is_ca: false,
        usages: &usages,
        username: "system:serviceaccount:demo:web",
        extra: &extra,
        pod_name_annotation: None,
        pod_uid_annotation: None,
        identity_annotation: Some(id.as_str()),
    };
    assert!(policy.evaluate(&request, Some(&pod)).is_approved());
    c.bench_function("spiffe: parse and verify the CSR, judge, approve", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&request), Some(&pod))))
    });
}

fn seed_policy() -> RequestPolicy {
    let first = SEED.split("\n---\n").next().expect("a first document");
    let object: serde_json::Value = serde_saphyr::from_str(first).expect("YAML");
    RequestPolicy::from_json("service-tls", &object["spec"], Limits::default())
        .expect("the seed policy loads")
}

fn policies(c: &mut Criterion) {
    let policy = seed_policy();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = ["webhook.infra.svc", "webhook.infra.svc.cluster.local"]
        .iter()
        .map(|d| SanType::DnsName(Ia5String::try_from(*d).expect("IA5")))
        .collect();
    let key = KeyPair::generate().expect("a key");
    let pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .expect("a CSR");
    // The webhook's Service among a hundred in the namespace.
    let services: Vec<String> = (0..99)
        .map(|i| format!("service-{i}"))
        .chain(["webhook".to_owned()])
        .collect();
    let issuer = IssuerName::new("nico-service-tls", Some("ClusterIssuer"), None);
    let usages = vec!["digital signature".to_owned(), "server auth".to_owned()];
    let groups = vec!["system:serviceaccounts".to_owned()];
    let facts = ClusterFacts {
        services: Some(&services),
    };
    let judge = |pem: &[u8]| {
        let csr = parse_csr_pem(pem).expect("a valid CSR");
        let request = PolicyRequest {
            name: "webhook-tls-1",
            namespace: "infra",
            username: "system:serviceaccount:cert-manager:cert-manager",
            groups: &groups,
            issuer: &issuer,
            duration: Some("2160h"),
            is_ca: false,
            usages: &usages,
            csr: &csr,
        };
        policy.evaluate(&request, &facts)
    };
    assert_eq!(judge(pem.as_bytes()), Ok(()));
    c.bench_function(
        "policy: parse and verify the CSR, judge by the seed policy, 100 Services",
        |b| b.iter(|| black_box(judge(black_box(pem.as_bytes())))),
    );
    c.bench_function("policy: load the seed policy (compile, cost, trial)", |b| {
        b.iter(|| black_box(seed_policy()))
    });
}

fn config() -> Criterion {
    // A shared 2-core machine: fewer, shorter samples.
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = spiffe, policies
}
criterion_main!(benches);
