//! SPIFFE requests made as the pod, as the node driver makes them.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

use crate::harness::{
    Approver, Harness, Verdict, approver_config, create, eventually, svid_request,
};

const WEB: &str = "spiffe://nico.local/demo/sa/web";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_are_approved_for_the_bound_pod_and_hostile_requests_denied_on_their_field() {
    let h = Harness::start().await;
    h.namespace("demo", json!({})).await;
    h.requester("demo", "web").await;
    h.requester("demo", "db").await;
    let web_uid = h.pod("demo", "web-0", "web", "node-1").await;
    let db_uid = h.pod("demo", "db-0", "db", "node-1").await;
    let approver = h
        .approver("approver-0", approver_config(|c| c.leader_election = false))
        .await;

    let as_web = h.client_as(&h.token("demo", "web", Some(("web-0", &web_uid))).await);
    let as_db = h.client_as(&h.token("demo", "db", Some(("db-0", &db_uid))).await);
    let unbound_web = h.client_as(&h.token("demo", "web", None).await);

    let mut rows = vec![
        (
            "good",
            as_web.clone(),
            svid_request("good", "demo", WEB),
            None,
        ),
        (
            "no-pod-binding",
            unbound_web.clone(),
            svid_request("no-pod-binding", "demo", WEB),
            None,
        ),
        (
            "another-account",
            as_db.clone(),
            svid_request("another-account", "demo", WEB),
            Some(
                "spec.username: SPIFFE ID spiffe://nico.local/demo/sa/web does not match \
                 requester system:serviceaccount:demo:db",
            ),
        ),
    ];
    let mut other_issuer = svid_request("other-issuer", "demo", WEB);
    other_issuer.spec.issuer_ref.name = "another-ca".into();
    rows.push((
        "other-issuer",
        as_web.clone(),
        other_issuer,
        Some("spec.issuerRef: issuer ClusterIssuer.cert-manager.io/another-ca"),
    ));
    let mut default_kind = svid_request("default-kind", "demo", WEB);
    default_kind.spec.issuer_ref.kind = None;
    rows.push((
        "default-kind",
        as_web.clone(),
        default_kind,
        Some(
            "spec.issuerRef: issuer Issuer.cert-manager.io/nico-identity is not the SPIFFE issuer",
        ),
    ));
    let mut long = svid_request("too-long", "demo", WEB);
    long.spec.duration = Some("48h".into());
    rows.push((
        "too-long",
        as_web.clone(),
        long,
        Some("spec.duration: requested duration 48h0m0s is longer than the maximum 24h0m0s"),
    ));
    let mut annotated = svid_request("annotation", "demo", WEB);
    annotated.metadata.annotations.as_mut().unwrap().insert(
        nico_k8s_types::IDENTITY_ANNOTATION.into(),
        "spiffe://nico.local/demo/sa/db".into(),
    );
    rows.push((
        "annotation",
        as_web.clone(),
        annotated,
        Some("metadata.annotations[spiffe.csi.cert-manager.io/identity]"),
    ));

    for (_, client, cr, _) in &rows {
        create(client, cr).await;
    }
    for (name, _, _, expected) in &rows {
        let verdict = h.verdict("demo", name).await;
        match expected {
            None => assert!(
                matches!(verdict, Verdict::Approved(_)),
                "{name}: {verdict:?}"
            ),
            Some(fragment) => match &verdict {
                Verdict::Denied(message) => {
                    assert!(message.starts_with(fragment), "{name}: {message}")
                }
                other => panic!("{name}: expected a denial, got {other:?}"),
            },
        }
    }

    ready(&approver).await;
    let metric = |result: &str| {
        format!("nico_identity_approver_decisions_total{{namespace=\"demo\",result=\"{result}\"}}")
    };
    assert_eq!(approver.metric(&metric("approved")).await, 2.0);
    assert_eq!(approver.metric(&metric("denied")).await, 5.0);
    let judged = approver
        .metric("nico_identity_approver_evaluation_duration_seconds_count{rules=\"spiffe\"}")
        .await;
    assert_eq!(judged, 7.0);

    // A request whose pod is gone by the time it is judged: a pod-bound token stops working
    // with its pod, so the request is made first and the pod deleted before the approver
    // sees it.
    approver.stop().await;
    let late = svid_request("pod-gone", "demo", WEB);
    create(&as_web, &late).await;
    Api::<Pod>::namespaced(h.admin.clone(), "demo")
        .delete("web-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let approver = h
        .approver("approver-1", approver_config(|c| c.leader_election = false))
        .await;
    let Verdict::Denied(message) = h.verdict("demo", "pod-gone").await else {
        panic!("a request for a deleted pod was approved");
    };
    assert!(
        message.starts_with(
            "spec.extra[authentication.kubernetes.io/pod-name]: pod demo/web-0 that the \
             requester's token is bound to does not exist"
        ),
        "{message}"
    );

    // Each verdict carries an Event from the replica that wrote it.
    let events: Api<Event> = Api::namespaced(h.admin.clone(), "demo");
    let listed = eventually("an event per verdict", || async {
        let events = events.list(&ListParams::default()).await.unwrap().items;
        // One per row and one for the request whose pod was gone.
        (events.len() > rows.len()).then_some(events)
    })
    .await;
    let of = |name: &str| -> Vec<&Event> {
        listed
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    };
    let good = of("good");
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].reason.as_deref(), Some("Approved"));
    assert_eq!(
        good[0].reporting_controller.as_deref(),
        Some("nico-identity-approver")
    );
    assert_eq!(good[0].reporting_instance.as_deref(), Some("approver-0"));
    let denied = of("too-long");
    assert_eq!(denied[0].reason.as_deref(), Some("Denied"));
    assert_eq!(denied[0].type_.as_deref(), Some("Warning"));
    assert!(
        denied[0]
            .note
            .as_deref()
            .unwrap()
            .starts_with("spec.duration:")
    );
    assert_eq!(
        of("pod-gone")[0].reporting_instance.as_deref(),
        Some("approver-1")
    );

    ready(&approver).await;
    let denials = approver.metric(&metric("denied")).await;
    assert_eq!(denials, 1.0, "approver-1 denied pod-gone and nothing else");
    approver.stop().await;
    h.stop().await;
}

/// Waits for `/readyz` to answer 200: the caches are synced.
async fn ready(approver: &Approver) {
    eventually("/readyz to answer 200", || async {
        (approver.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
}
