//! Several approvers against one cluster: however they interleave, each request ends with
//! exactly one verdict condition, one verdict event, and one counted decision.

use std::collections::BTreeMap;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use nico_approver::NonSpiffeMode;
use serde_json::json;

use crate::harness::{
    Approver, Harness, Verdict, approver_config, create, csr, eventually, request,
};

const REQUESTS: usize = 60;

/// Creates `REQUESTS` requests, every third one carrying a foreign SPIFFE ID (denied by the
/// auto-approval switch), and returns the expected verdicts.
async fn flood(h: &Harness) -> BTreeMap<String, bool> {
    let mut expected = BTreeMap::new();
    for i in 0..REQUESTS {
        let name = format!("cr-{i:03}");
        let deny = i % 3 == 0;
        let uris: &[&str] = if deny {
            &["spiffe://other.test/x"]
        } else {
            &[]
        };
        let cr = request(&name, "demo", "any-ca", csr(&["web.demo.svc"], uris));
        create(&h.admin, &cr).await;
        expected.insert(name, !deny);
    }
    expected
}

/// Checks every request's single verdict and events, and returns the events.
async fn check(h: &Harness, expected: &BTreeMap<String, bool>) -> Vec<Event> {
    for (name, approve) in expected {
        let verdict = h.verdict("demo", name).await;
        assert_eq!(
            matches!(verdict, Verdict::Approved(_)),
            *approve,
            "{name}: {verdict:?}"
        );
    }
    let events: Api<Event> = Api::namespaced(h.admin.clone(), "demo");
    let listed = eventually("an event per verdict", || async {
        let items = events.list(&ListParams::default()).await.unwrap().items;
        (items.len() >= expected.len()).then_some(items)
    })
    .await;
    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for event in &listed {
        let name = event
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap();
        *per_request.entry(name).or_default() += 1;
    }
    for name in expected.keys() {
        assert_eq!(per_request.get(name), Some(&1), "events for {name}");
    }
    // Judged again from scratch, nothing changes.
    for name in expected.keys() {
        let _ = crate::harness::verdict_of(&h.get("demo", name).await);
    }
    listed
}

async fn decisions(approver: &Approver) -> f64 {
    let metric = |result: &str| {
        format!("nico_identity_approver_decisions_total{{namespace=\"demo\",result=\"{result}\"}}")
    };
    approver.metric(&metric("approved")).await + approver.metric(&metric("denied")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_acting_at_once_write_exactly_one_verdict_per_request() {
    let h = Harness::start().await;
    h.namespace("demo", json!({})).await;
    let config = || {
        approver_config(|c| {
            c.leader_election = false;
            c.non_spiffe = NonSpiffeMode::Approve;
        })
    };
    // Without leader election both replicas judge every request; only the resourceVersion
    // on each write keeps them from overwriting each other.
    let a = h.approver("replica-a", config()).await;
    let b = h.approver("replica-b", config()).await;
    let expected = flood(&h).await;
    check(&h, &expected).await;
    let total = decisions(&a).await + decisions(&b).await;
    assert_eq!(
        total, REQUESTS as f64,
        "every verdict counted once across replicas"
    );
    a.stop().await;
    b.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_one_replica_acts() {
    let h = Harness::start().await;
    h.namespace("demo", json!({})).await;
    let config = || approver_config(|c| c.non_spiffe = NonSpiffeMode::Approve);
    let a = h.approver("replica-a", config()).await;
    let b = h.approver("replica-b", config()).await;
    let expected = flood(&h).await;
    let events = check(&h, &expected).await;
    let reporters: std::collections::BTreeSet<_> = events
        .iter()
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    assert_eq!(
        reporters.len(),
        1,
        "one leader wrote everything: {reporters:?}"
    );
    let (da, db) = (decisions(&a).await, decisions(&b).await);
    assert_eq!(da + db, REQUESTS as f64);
    assert!(da == 0.0 || db == 0.0, "both replicas acted: {da} and {db}");
    a.stop().await;
    b.stop().await;
    h.stop().await;
}
