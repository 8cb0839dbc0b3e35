//! Approver throughput on the dev cluster, as a bench command (numbers go to
//! BENCHMARKS.md). The requests are created first, as a burst of pods or Certificates would
//! create them; then one approver starts and the clock runs until every request carries a
//! verdict.
//!
//! - `spiffe`: SVID requests made with a pod-bound token; each verdict reads the pod.
//! - `policy`: service TLS requests judged by the seed's CertificateRequestPolicy; each
//!   verdict asks a SubjectAccessReview and lists the namespace's Services.
//!
//! `cargo bench -p nico-approver --bench throughput -- [spiffe|policy] [--requests N]`

#[path = "../tests/dev_cluster/harness.rs"]
#[allow(dead_code, reason = "the bench uses only part of the tests' harness")]
mod harness;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use harness::{Harness, approver_config, csr, request, svid_request, verdict_of};
use kube::api::{Api, ListParams, PostParams};
use nico_k8s_types::CertificateRequest;
use serde_json::json;

const SEED: &str = include_str!("../../../config/policies/service-tls.yaml");

#[allow(clippy::print_stdout, reason = "a bench command reports on stdout")]
fn report(line: &str) {
    println!("{line}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .map_or(1000, |n| n.parse().expect("--requests takes a number"));
    let modes = ["spiffe", "policy"];
    let wanted = |name: &str| {
        !args.iter().any(|a| modes.contains(&a.as_str())) || args.iter().any(|a| a == name)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        if wanted("spiffe") {
            spiffe(requests).await;
        }
        if wanted("policy") {
            policy(requests).await;
        }
    });
}

/// Creates the requests as `client`, a few at a time.
async fn create_all(client: &kube::Client, requests: Vec<CertificateRequest>) {
    futures::stream::iter(requests)
        .for_each_concurrent(8, |cr| {
            let api: Api<CertificateRequest> = Api::namespaced(client.clone(), "demo");
            async move {
                api.create(&PostParams::default(), &cr)
                    .await
                    .expect("a request is created");
            }
        })
        .await;
}

/// Starts an approver and times it until every request in `demo` has a verdict.
async fn time_approver(h: &Harness, mode: &str, count: usize) {
    let approver = h
        .approver("bench", approver_config(|c| c.leader_election = false))
        .await;
    let started = Instant::now();
    let api: Api<CertificateRequest> = Api::namespaced(h.admin.clone(), "demo");
    let (approved, elapsed) = loop {
        let listed = api.list(&ListParams::default()).await.expect("a list");
        let verdicts: Vec<_> = listed.items.iter().map(verdict_of).collect();
        let decided = verdicts
            .iter()
            .filter(|v| **v != harness::Verdict::None)
            .count();
        if decided == count {
            let approved = verdicts
                .iter()
                .filter(|v| matches!(v, harness::Verdict::Approved(_)))
                .count();
            break (approved, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{decided}/{count} decided"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rules = if mode == "spiffe" { "spiffe" } else { "policy" };
    let sum = approver
        .metric(&format!(
            "nico_identity_approver_evaluation_duration_seconds_sum{{rules=\"{rules}\"}}"
        ))
        .await;
    let judged = approver
        .metric(&format!(
            "nico_identity_approver_evaluation_duration_seconds_count{{rules=\"{rules}\"}}"
        ))
        .await;
    report(&format!(
        "{mode}: {count} requests ({approved} approved) decided in {:.2} s: {:.0} decisions/s; \
         mean time to judge one (with its reads) {:.0} µs",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        sum / judged.max(1.0) * 1e6
    ));
    approver.stop().await;
}

async fn spiffe(count: usize) {
    let h = Harness::start().await;
    h.namespace("demo", json!({})).await;
    h.requester("demo", "web").await;
    let uid = h.pod("demo", "web-0", "web", "node-1").await;
    let client = h.client_as(&h.token("demo", "web", Some(("web-0", &uid))).await);
    let requests = (0..count)
        .map(|i| {
            svid_request(
                &format!("svid-{i}"),
                "demo",
                "spiffe://nico.local/demo/sa/web",
            )
        })
        .collect();
    create_all(&client, requests).await;
    time_approver(&h, "spiffe", count).await;
    h.stop().await;
}

async fn policy(count: usize) {
    let h = Harness::start().await;
    h.namespace("demo", json!({})).await;
    h.namespace("cert-manager", json!({})).await;
    h.requester("cert-manager", "cert-manager").await;
    h.may_request("demo", "cert-manager", "cert-manager").await;
    for i in 0..99 {
        h.apply(json!({"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": format!("service-{i}"), "namespace": "demo"},
            "spec": {"ports": [{"port": 443}]}}))
            .await;
    }
    h.apply(json!({"kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "webhook", "namespace": "demo"},
        "spec": {"ports": [{"port": 443}]}}))
        .await;
    h.apply_yaml(SEED).await;
    let client = h.client_as(&h.token("cert-manager", "cert-manager", None).await);
    let requests = (0..count)
        .map(|i| {
            let dns = ["webhook.demo.svc", "webhook.demo.svc.cluster.local"];
            let mut cr = request(
                &format!("tls-{i}"),
                "demo",
                "nico-service-tls",
                csr(&dns, &[]),
            );
            cr.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
            cr.spec.duration = Some("2160h".into());
            cr
        })
        .collect();
    create_all(&client, requests).await;
    time_approver(&h, "policy", count).await;
    h.stop().await;
}
