//! What a request costs on the dev cluster, over kept-alive HTTPS connections: the requests
//! one CertificateRequest causes in the product's throughput runs (a create as the pod's
//! service account, authorized by RBAC among many bindings; status writes; the change
//! fanned out to three watchers; an access review; a pod read), and creates through a
//! mutating and a validating webhook.
//!
//! Run with `cargo bench -p nico-dev-cluster`; the numbers are in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// How many namespaces, each with a Role and a RoleBinding, RBAC looks through.
const NAMESPACES: usize = 100;
/// The namespace of the requests, and the service account whose pod makes them.
const NS: &str = "bench";
const ACCOUNT: &str = "app";
const POD: &str = "app-0";
/// The label csi-node's watch selects its node's requests by.
const NODE_LABEL: &str = "identity.nico.io/node-hash";
/// How many requests sit in the store besides the ones a benchmark writes.
const BACKGROUND_REQUESTS: usize = 500;

const CRS: &str = "/apis/cert-manager.io/v1/namespaces/bench/certificaterequests";

/// Base64 the size of a PEM CSR for a P-256 key with one URI SAN.
fn csr_like() -> String {
    "TUlJQlNqQ0I4Z0lCQURBQU1Ga3dFd1lIS29aSXpqMENBUVlJS29aSXpqMERBUWNEUWdBRS".repeat(9)
}

/// Base64 the size of a leaf and its CA in PEM, as the issuer writes them.
fn chain_like() -> String {
    "TUlJQ0ZqQ0NBYnlnQXdJQkFnSVVkOXJYZ3BpSzZCSmxRSEN6Z1NxL2VVZ0VxN2t3Q2dZSUtvWk".repeat(24)
}

fn request(name: Option<&str>, node_hash: &str) -> Value {
    let metadata = match name {
        Some(name) => json!({"name": name, "labels": {NODE_LABEL: node_hash},
            "annotations": {"spiffe.csi.cert-manager.io/identity":
                            "spiffe://nico.local/ns/bench/sa/app"}}),
        None => json!({"generateName": "bench-", "labels": {NODE_LABEL: node_hash},
            "annotations": {"spiffe.csi.cert-manager.io/identity":
                            "spiffe://nico.local/ns/bench/sa/app"}}),
    };
    json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": metadata,
        "spec": {"request": csr_like(), "duration": "1h0m0s",
                 "issuerRef": {"name": "nico-identity", "kind": "ClusterIssuer",
                               "group": "cert-manager.io"},
                 "usages": ["digital signature", "key encipherment", "client auth",
                            "server auth"]}})
}

/// The status the approver and then the issuer write, made different by `n`.
fn status(object: &Value, n: u64, rv: &str) -> Value {
    let mut object = object.clone();
    object["metadata"]["resourceVersion"] = rv.into();
    object["status"] = json!({
        "conditions": [
            {"type": "Approved", "status": "True", "reason": "nico-identity.io",
             "message": format!("approved by the bench, round {n}"),
             "lastTransitionTime": "2026-12-04T16:52:22Z"},
            {"type": "Ready", "status": "True", "reason": "Issued",
             "message": "Certificate fetched from issuer successfully",
             "lastTransitionTime": "2026-12-04T16:52:22Z"}],
        "certificate": chain_like(),
        "ca": chain_like(),
    });
    object
}

/// The first `resourceVersion` in a serialised object: its own, as metadata sorts first.
fn resource_version(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"resourceVersion\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&body[start..start + len])
        .ok()?
        .parse()
        .ok()
}

async fn open(cluster: &DevCluster) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(cluster.addr())
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(common::client_config(cluster.ca_pem()))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("TLS");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP");
    tokio::spawn(conn);
    sender
}

struct Connection {
    sender: SendRequest<Full<Bytes>>,
    token: String,
}

impl Connection {
    async fn open(cluster: &DevCluster, token: &str) -> Connection {
        Connection {
            sender: open(cluster).await,
            token: token.to_owned(),
        }
    }

    async fn start(&mut self, method: &str, path: &str, body: Option<&Value>) -> Incoming {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("user-agent", "bench/1")
            .body(Full::new(body))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("answer");
        assert!(
            resp.status().is_success(),
            "{method} {path}: {}",
            resp.status()
        );
        resp.into_body()
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Bytes {
        let incoming = self.start(method, path, body).await;
        incoming.collect().await.expect("body").to_bytes()
    }

    async fn post(&mut self, path: &str, body: &Value) -> Bytes {
        self.call("POST", path, Some(body)).await
    }
}

/// A watch whose newest delivered resourceVersion can be waited for.
struct Watcher {
    seen: watch::Receiver<u64>,
}

impl Watcher {
    async fn open(cluster: &DevCluster, token: &str, query: &str) -> Watcher {
        let mut conn = Connection::open(cluster, token).await;
        let path = format!("/apis/cert-manager.io/v1/certificaterequests?watch=true&{query}");
        let mut body = conn.start("GET", &path, None).await;
        let (tx, seen) = watch::channel(0);
        tokio::spawn(async move {
            let _keep = conn;
            let mut pending = Vec::new();
            loop {
                let frame = tokio::select! {
                    frame = body.frame() => frame,
                    () = tx.closed() => None,
                };
                let Some(frame) = frame else { break };
                let Ok(data) = frame.expect("watch frame").into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if let Some(rv) = resource_version(&line) {
                        tx.send_replace(rv);
                    }
                }
            }
        });
        Watcher { seen }
    }

    async fn wait_for(&mut self, rv: u64) {
        self.seen
            .wait_for(|seen| *seen >= rv)
            .await
            .expect("watch open");
    }
}

struct Setup {
    cluster: DevCluster,
    admin: Connection,
    pod: Connection,
}

async fn setup() -> Setup {
    common::install_provider();
    let cluster = DevCluster::start(DevClusterConfig {
        stamp_requester_identity: false,
        ..DevClusterConfig::default()
    })
    .await
    .expect("dev cluster");
    let mut admin = Connection::open(&cluster, cluster.admin_token()).await;
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    for i in 0..NAMESPACES {
        let ns = format!("ns-{i}");
        let steps = [
            (
                "/api/v1/namespaces".to_owned(),
                json!({"metadata": {"name": ns}}),
            ),
            (
                format!("{rbac}/namespaces/{ns}/roles"),
                json!({"metadata": {"name": "r"}, "rules": [{"apiGroups": [""],
                       "resources": ["configmaps"], "verbs": ["get"]}]}),
            ),
            (
                format!("{rbac}/namespaces/{ns}/rolebindings"),
                json!({"metadata": {"name": "b"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                   "kind": "Role", "name": "r"},
                       "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT}]}),
            ),
        ];
        for (path, body) in steps {
            admin.post(&path, &body).await;
        }
    }
    // The requesting pod: its account may create and read requests, as the chart grants.
    let steps = [
        (
            "/api/v1/namespaces".to_owned(),
            json!({"metadata": {"name": NS}}),
        ),
        (
            format!("/api/v1/namespaces/{NS}/serviceaccounts"),
            json!({"metadata": {"name": ACCOUNT}}),
        ),
        (
            format!("/api/v1/namespaces/{NS}/pods"),
            json!({"metadata": {"name": POD},
                   "spec": {"serviceAccountName": ACCOUNT, "nodeName": "node-1",
                            "containers": [{"name": "app", "image": "app:1"}]}}),
        ),
        (
            format!("{rbac}/namespaces/{NS}/roles"),
            json!({"metadata": {"name": "requester"}, "rules": [{
                "apiGroups": ["cert-manager.io"], "resources": ["certificaterequests"],
                "verbs": ["create", "get", "list", "watch"]}]}),
        ),
        (
            format!("{rbac}/namespaces/{NS}/rolebindings"),
            json!({"metadata": {"name": "requester"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "requester"},
                   "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT}]}),
        ),
    ];
    for (path, body) in steps {
        admin.post(&path, &body).await;
    }
    let token_request = json!({"apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": POD}}});
    let answer = admin
        .post(
            &format!("/api/v1/namespaces/{NS}/serviceaccounts/{ACCOUNT}/token"),
            &token_request,
        )
        .await;
    let answer: Value = serde_json::from_slice(&answer).expect("a TokenRequest");
    let token = answer["status"]["token"].as_str().expect("a token");
    let pod = Connection::open(&cluster, token).await;
    for i in 0..BACKGROUND_REQUESTS {
        let hash = format!("node-{}", i % 10);
        admin.post(CRS, &request(None, &hash)).await;
    }
    Setup {
        cluster,
        admin,
        pod,
    }
}

/// Status writes to one request, each a real change, returning the new resourceVersion.
struct StatusWriter {
    object: Value,
    path: String,
    rv: String,
    round: u64,
}

impl StatusWriter {
    async fn create(admin: &mut Connection, name: &str, node_hash: &str) -> StatusWriter {
        let created = admin.post(CRS, &request(Some(name), node_hash)).await;
        let object: Value = serde_json::from_slice(&created).expect("the created object");
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .expect("a resourceVersion")
            .to_owned();
        StatusWriter {
            object,
            path: format!("{CRS}/{name}/status"),
            rv,
            round: 0,
        }
    }

    async fn write(&mut self, admin: &mut Connection) -> u64 {
        self.round += 1;
        let body = status(&self.object, self.round, &self.rv);
        let answer = admin.call("PUT", &self.path, Some(&body)).await;
        let rv = resource_version(&answer).expect("the new resourceVersion");
        self.rv = rv.to_string();
        rv
    }
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let Setup {
        cluster,
        mut admin,
        mut pod,
    } = rt.block_on(setup());
    let last = NAMESPACES - 1;
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": format!("system:serviceaccount:ns-{last}:{ACCOUNT}"),
                 "groups": ["system:serviceaccounts", "system:authenticated"],
                 "resourceAttributes": {"verb": "get", "resource": "configmaps",
                                        "namespace": format!("ns-{last}")}}});
    let mut group = c.benchmark_group("dev-cluster");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("subjectaccessreview, 100 bindings", |b| {
        b.iter(|| {
            rt.block_on(admin.post(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                &review,
            ))
        });
    });
    let cr = request(None, "node-0");
    group.bench_function("create certificaterequest, no webhooks", |b| {
        b.iter(|| rt.block_on(admin.post(CRS, &cr)));
    });
    group.bench_function(
        "create certificaterequest as a pod's service account",
        |b| {
            b.iter(|| rt.block_on(pod.post(CRS, &cr)));
        },
    );
    let pod_path = format!("/api/v1/namespaces/{NS}/pods/{POD}");
    group.bench_function("get a pod", |b| {
        b.iter(|| rt.block_on(admin.call("GET", &pod_path, None)));
    });
    let mut writer = rt.block_on(StatusWriter::create(&mut admin, "status-target", "other"));
    group.bench_function("status PUT of a certificaterequest", |b| {
        b.iter(|| rt.block_on(writer.write(&mut admin)));
    });
    // csi-node watches its node's requests by label; the approver and the issuer watch all.
    let mut watchers = rt.block_on(async {
        let token = cluster.admin_token();
        vec![
            Watcher::open(
                &cluster,
                token,
                &format!("labelSelector={NODE_LABEL}%3Dwatched"),
            )
            .await,
            Watcher::open(&cluster, token, "").await,
            Watcher::open(&cluster, token, "").await,
        ]
    });
    let mut watched = rt.block_on(StatusWriter::create(&mut admin, "watched", "watched"));
    group.bench_function("status PUT seen by 3 watchers", |b| {
        b.iter(|| {
            rt.block_on(async {
                let rv = watched.write(&mut admin).await;
                for w in &mut watchers {
                    w.wait_for(rv).await;
                }
            });
        });
    });
    // Closed, so that the creates below are not fanned out.
    drop(watchers);
    let webhook = rt.block_on(common::TestWebhook::start(Arc::new(
        |path, review| match path {
            "/mutate" => common::patch(
                review,
                json!([{"op": "add", "path": "/spec/username", "value": "bench"}]),
            ),
            _ => common::allow(review),
        },
    )));
    for (kind, collection, path) in [
        ("MutatingWebhookConfiguration", "mutating", "/mutate"),
        ("ValidatingWebhookConfiguration", "validating", "/validate"),
    ] {
        let config = common::webhook_configuration(
            kind,
            collection,
            &format!("{collection}.bench.test"),
            json!({"url": webhook.url(path), "caBundle": webhook.ca.ca_bundle()}),
            json!({}),
        );
        let url =
            format!("/apis/admissionregistration.k8s.io/v1/{collection}webhookconfigurations");
        rt.block_on(admin.post(&url, &config));
    }
    group.bench_function(
        "create certificaterequest, mutating + validating webhook",
        |b| {
            b.iter(|| rt.block_on(admin.post(CRS, &cr)));
        },
    );
    group.finish();
    rt.block_on(async {
        webhook.stop().await;
        cluster.shutdown().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
