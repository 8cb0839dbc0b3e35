//! The real kube client against the dev cluster: typed CRUD, watchers (including recovery
//! from 410), status writes with merge and JSON patches, and service-account tokens from
//! TokenRequest used to create CertificateRequests, with RBAC granting the account what it
//! does. Everything goes over HTTPS, the client trusting the dev cluster's CA from its
//! kubeconfig.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::watcher;
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use serde_json::json;

use common::{admin, with_token};

async fn start(config: DevClusterConfig) -> DevCluster {
    common::install_provider();
    DevCluster::start(config).await.expect("dev cluster starts")
}

fn cr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

fn cr(name: &str, extra_spec: serde_json::Value) -> DynamicObject {
    let mut spec = json!({
        "request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K",
        "issuerRef": {"name": "spiffe", "kind": "ClusterIssuer", "group": "cert-manager.io"},
        "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
        "duration": "1h",
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    let mut obj = DynamicObject::new(name, &cr_resource());
    obj.data = json!({"spec": spec});
    obj
}

fn pod(name: &str, sa: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "spec": {"serviceAccountName": sa, "nodeName": node,
                 "containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }))
    .expect("pod json")
}

#[tokio::test]
async fn typed_crud_on_built_in_kinds() {
    let cluster = start(DevClusterConfig::default()).await;
    let client = admin(&cluster).await;

    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let sa = sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).expect("sa"),
        )
        .await
        .expect("create sa");
    assert!(sa.metadata.uid.is_some());
    let names: Vec<String> = sas
        .list(&ListParams::default())
        .await
        .expect("list sas")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert_eq!(names, ["app", "default"]);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("p1", "app", ""))
        .await
        .expect("create pod");
    assert_eq!(created.metadata.generation, Some(1));
    let spec = created.spec.expect("spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    let err = pods
        .create(&PostParams::default(), &pod("p1", "app", ""))
        .await
        .expect_err("exists");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c", "labels": {"a": "1"}},
        "data": {"k": "v"}}))
        .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create cm");
    let mut got = cms.get("c").await.expect("get cm");
    got.data
        .get_or_insert_default()
        .insert("k2".into(), "v2".into());
    let replaced = cms
        .replace("c", &PostParams::default(), &got)
        .await
        .expect("replace cm");
    assert_ne!(
        replaced.metadata.resource_version,
        got.metadata.resource_version
    );
    let stale = cms
        .replace("c", &PostParams::default(), &got)
        .await
        .expect_err("stale rv");
    assert!(matches!(stale, kube::Error::Api(ref s) if s.code == 409));
    let selected = cms
        .list(&ListParams::default().labels("a=1"))
        .await
        .expect("list");
    assert_eq!(selected.items.len(), 1);
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "2"}}})),
    )
    .await
    .expect("merge patch");
    assert!(
        cms.list(&ListParams::default().labels("a=1"))
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let deleted = cms
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete cm");
    assert!(
        deleted.is_right(),
        "a configmap goes at once and answers a Status"
    );
    assert!(cms.get_opt("c").await.expect("get_opt").is_none());

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                jiff::Timestamp::now(),
            )),
            ..Default::default()
        }),
    };
    let mut lease = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    lease.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    let lease = leases
        .replace("leader", &PostParams::default(), &lease)
        .await
        .expect("renew");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );

    let applied = cms
        .patch(
            "applied",
            &PatchParams::apply("nico-test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "applied"}, "data": {"x": "1"}})),
        )
        .await
        .expect("server-side apply creates");
    assert_eq!(
        applied.data.and_then(|d| d.get("x").cloned()).as_deref(),
        Some("1")
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn watcher_sees_changes_and_recovers_from_410() {
    let cluster = start(DevClusterConfig {
        watch_history: 3,
        ..DevClusterConfig::default()
    })
    .await;
    let client = admin(&cluster).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut events = watcher(cms.clone(), watcher::Config::default().timeout(2)).boxed();

    let mut seen = Vec::new();
    let make = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm")
    };
    // Drain the initial list.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await {
            Ok(Ok(Some(watcher::Event::InitDone))) => break,
            Ok(Ok(Some(_))) => {}
            other => panic!("initial list: {other:?}"),
        }
    }
    cms.create(&PostParams::default(), &make("one"))
        .await
        .expect("create");
    cms.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .expect("patch");
    cms.delete("one", &DeleteParams::default())
        .await
        .expect("delete");
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await {
            Ok(Ok(Some(watcher::Event::Apply(cm)))) => {
                seen.push(("apply", cm.data.map(|d| d.len()).unwrap_or(0)));
            }
            Ok(Ok(Some(watcher::Event::Delete(_)))) => seen.push(("delete", 0)),
            Ok(Ok(Some(_))) => {}
            other => panic!("live events: {other:?}"),
        }
    }
    assert_eq!(seen, [("apply", 0), ("apply", 1), ("delete", 0)]);

    // A raw watch from a revision the tiny history no longer holds gets 410 in-band.
    let old = cms
        .watch(&kube::api::WatchParams::default().timeout(1), "1")
        .await
        .expect("watch");
    let first: Vec<_> = old.take(1).collect().await;
    match first.as_slice() {
        [Ok(kube::api::WatchEvent::Error(e))] => assert_eq!(e.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // The watcher relists after its stream is outdated and keeps going.
    for i in 0..6 {
        cms.create(&PostParams::default(), &make(&format!("n{i}")))
            .await
            .expect("create");
    }
    let mut names = std::collections::BTreeSet::new();
    while names.len() < 6 {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
            Ok(Ok(Some(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)))) => {
                if let Some(n) = cm.metadata.name.filter(|n| n.starts_with('n')) {
                    names.insert(n);
                }
            }
            Ok(Ok(Some(_))) => {}
            other => panic!("after outdating: {other:?}"),
        }
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn status_writes_on_certificate_requests() {
    let cluster = start(DevClusterConfig::default()).await;
    let client = admin(&cluster).await;
    let crs: Api<DynamicObject> = Api::namespaced_with(client, "default", &cr_resource());
    crs.create(&PostParams::default(), &cr("a", json!({})))
        .await
        .expect("create cr");

    let approved = json!({"status": {"conditions": [{"type": "Approved", "status": "True",
        "reason": "t", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let patched = crs
        .patch_status("a", &PatchParams::default(), &Patch::Merge(approved))
        .await
        .expect("merge");
    assert_eq!(patched.data["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(patched.metadata.generation, Some(1));

    let add: json_patch::Patch = serde_json::from_value(json!([{"op": "add",
        "path": "/status/conditions/-",
        "value": {"type": "Ready", "status": "False", "reason": "Pending", "message": "wait",
                  "lastTransitionTime": "2026-01-01T00:00:00Z"}}]))
    .expect("patch");
    let patched = crs
        .patch_status("a", &PatchParams::default(), &Patch::Json::<()>(add))
        .await
        .expect("json patch");
    assert_eq!(patched.data["status"]["conditions"][1]["type"], "Ready");

    let mut full = crs.get("a").await.expect("get");
    full.data["status"] = json!({"certificate": "Y2VydA=="});
    full.data["spec"]["duration"] = json!("5h");
    let replaced = crs
        .replace_status("a", &PostParams::default(), &full)
        .await
        .expect("replace status");
    assert_eq!(replaced.data["status"], json!({"certificate": "Y2VydA=="}));
    assert_eq!(
        replaced.data["spec"]["duration"], "1h",
        "status writes drop spec changes"
    );

    let invalid = crs
        .create(
            &PostParams::default(),
            &cr("b", json!({"usages": ["bogus"]})),
        )
        .await;
    assert!(
        matches!(invalid, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{invalid:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn service_account_tokens_stamp_and_expire_with_their_pod() {
    let cluster = start(DevClusterConfig::default()).await;
    let client = admin(&cluster).await;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}})).expect("node"),
        )
        .await
        .expect("node");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "app"}})).expect("sa"),
    )
    .await
    .expect("sa");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("app-pod", "app", "n1"))
        .await
        .expect("pod");

    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some("app-pod".into()),
                uid: p.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let issued = sas
        .create_token_request("app", &PostParams::default(), &request)
        .await
        .expect("token");
    let token = issued.status.expect("status").token;

    let as_sa = with_token(&cluster, &token).await;
    let crs: Api<DynamicObject> = Api::namespaced_with(as_sa.clone(), "default", &cr_resource());
    let refused = crs
        .create(&PostParams::default(), &cr("early", json!({})))
        .await
        .expect_err("no role yet");
    assert!(
        matches!(refused, kube::Error::Api(ref s) if s.code == 403),
        "{refused:?}"
    );
    let roles: Api<Role> = Api::namespaced(client.clone(), "default");
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "cr-creator"},
                "rules": [{"apiGroups": ["cert-manager.io"],
                           "resources": ["certificaterequests"],
                           "verbs": ["create", "get"]}]}))
            .expect("role"),
        )
        .await
        .expect("role");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app-creates-crs"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "cr-creator"},
                "subjects": [{"kind": "ServiceAccount", "name": "app"}]}))
            .expect("binding"),
        )
        .await
        .expect("binding");

    let created = crs
        .create(&PostParams::default(), &cr("mine", json!({})))
        .await
        .expect("create as sa");
    assert_eq!(
        created.data["spec"]["username"],
        "system:serviceaccount:default:app"
    );
    assert_eq!(
        created.data["spec"]["uid"].as_str(),
        issued.metadata.uid.as_deref()
    );
    assert_eq!(
        created.data["spec"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["app-pod"])
    );

    let forged = crs
        .create(
            &PostParams::default(),
            &cr(
                "forged",
                json!({"username": "system:admin", "groups": ["system:masters"]}),
            ),
        )
        .await
        .expect("create forged");
    assert_eq!(
        forged.data["spec"]["username"],
        "system:serviceaccount:default:app"
    );
    assert_eq!(
        forged.data["spec"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );

    pods.delete(
        "app-pod",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("delete pod");
    let rejected = crs.get("mine").await.expect_err("pod gone");
    assert!(
        matches!(rejected, kube::Error::Api(ref s) if s.code == 401),
        "{rejected:?}"
    );

    let garbage = with_token(&cluster, "not-a-token").await;
    let cms: Api<ConfigMap> = Api::namespaced(garbage, "default");
    assert!(matches!(cms.list(&ListParams::default()).await,
                 Err(kube::Error::Api(ref s)) if s.code == 401));
    cluster.shutdown().await;
}
