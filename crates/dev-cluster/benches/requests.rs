//! What a request costs on the dev cluster, over one kept-alive HTTPS connection: an
//! access review decided by RBAC among many bindings, and a CertificateRequest create
//! without webhooks and through a mutating and a validating webhook.
//!
//! Run with `cargo bench -p nico-dev-cluster`; the numbers are in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// How many namespaces, each with a Role and a RoleBinding, RBAC looks through.
const NAMESPACES: usize = 100;

struct Connection {
    sender: SendRequest<Full<Bytes>>,
    token: String,
}

impl Connection {
    async fn open(cluster: &DevCluster) -> Connection {
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
        Connection {
            sender,
            token: cluster.admin_token().to_owned(),
        }
    }

    async fn post(&mut self, path: &str, body: &Value) -> u16 {
        let req = http::Request::post(path)
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("answer");
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await.expect("body");
        status
    }
}

fn setup(rt: &Runtime) -> (DevCluster, Connection) {
    rt.block_on(async {
        common::install_provider();
        let cluster = DevCluster::start(DevClusterConfig {
            stamp_requester_identity: false,
            ..DevClusterConfig::default()
        })
        .await
        .expect("dev cluster");
        let mut conn = Connection::open(&cluster).await;
        for i in 0..NAMESPACES {
            let ns = format!("ns-{i}");
            let rbac = "/apis/rbac.authorization.k8s.io/v1";
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
                           "subjects": [{"kind": "ServiceAccount", "name": "app"}]}),
                ),
            ];
            for (path, body) in steps {
                assert_eq!(conn.post(&path, &body).await, 201, "{path}");
            }
        }
        (cluster, conn)
    })
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let (cluster, mut conn) = setup(&rt);
    let last = NAMESPACES - 1;
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": format!("system:serviceaccount:ns-{last}:app"),
                 "groups": ["system:serviceaccounts", "system:authenticated"],
                 "resourceAttributes": {"verb": "get", "resource": "configmaps",
                                        "namespace": format!("ns-{last}")}}});
    let mut group = c.benchmark_group("dev-cluster");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("subjectaccessreview, 100 bindings", |b| {
        b.iter(|| {
            let code = rt.block_on(conn.post(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                &review,
            ));
            assert_eq!(code, 201);
        });
    });
    let crs = "/apis/cert-manager.io/v1/namespaces/default/certificaterequests";
    let cr = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"generateName": "bench-"},
        "spec": {"request": "cmVx", "issuerRef": {"name": "i"}, "usages": ["client auth"]}});
    group.bench_function("create certificaterequest, no webhooks", |b| {
        b.iter(|| assert_eq!(rt.block_on(conn.post(crs, &cr)), 201));
    });
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
        assert_eq!(rt.block_on(conn.post(&url, &config)), 201);
    }
    group.bench_function(
        "create certificaterequest, mutating + validating webhook",
        |b| {
            b.iter(|| assert_eq!(rt.block_on(conn.post(crs, &cr)), 201));
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
