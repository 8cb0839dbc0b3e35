//! What an admission costs: one AdmissionReview at a time straight to the webhook over a
//! kept-alive HTTPS connection (pod injection, a CertificateRequest create with its CSR
//! parsed, a policy with a CEL rule compiled and trial-evaluated), and writes through the
//! dev cluster that call the webhook as kube-apiserver does (a CertificateRequest create
//! through both webhooks, an approval checked by a SubjectAccessReview).
//!
//! Run with `cargo bench -p nico-webhook`; the numbers are in BENCHMARKS.md.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use nico_dev_cluster::{DevCluster, DevClusterConfig, ServiceRef};
use nico_runtime::{KubeAccess, RoleContext, Telemetry};
use nico_webhook::{Config, Webhook};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// One kept-alive HTTP/1.1 connection over TLS, trusting `ca_pem`, naming `host`.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    token: Option<String>,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr, ca_pem: &str, host: &str) -> Connection {
        let mut roots = rustls::RootCertStore::empty();
        for der in nico_csr::pem_to_ders(ca_pem.as_bytes()).expect("PEM") {
            roots.add(der.into()).expect("a root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from(host.to_owned()).expect("a name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP");
        tokio::spawn(connection);
        Connection {
            sender,
            host: host.to_owned(),
            token: None,
        }
    }

    async fn send(&mut self, method: &str, path: &str, content_type: &str, body: &Value) -> Value {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", content_type);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("answer");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("JSON")
    }
}

fn review(resource: (&str, &str, &str), operation: &str, object: Value, old: Value) -> Value {
    let (group, version, plural) = resource;
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench",
        "kind": {"group": group, "version": version, "kind": "X"},
        "resource": {"group": group, "version": version, "resource": plural},
        "name": "x", "namespace": "default", "operation": operation,
        "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
        "object": object, "oldObject": old,
    }})
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params =
        rcgen::CertificateParams::new(vec!["web.default.svc".to_owned()]).expect("a DNS name");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
        .serialize_request(&key)
        .expect("a CSR")
        .pem()
        .expect("PEM")
}

fn certificate_request(name: &str, csr: &str) -> Value {
    json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"request": STANDARD.encode(csr),
                 "issuerRef": {"name": "other", "kind": "ClusterIssuer"},
                 "usages": ["digital signature", "key encipherment", "server auth",
                            "client auth"],
                 "username": "bench", "groups": ["system:authenticated"]}})
}

struct Setup {
    cluster: DevCluster,
    shutdown: CancellationToken,
    direct: Connection,
    api: Connection,
}

fn setup(rt: &Runtime) -> Setup {
    rt.block_on(async {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cluster = DevCluster::start(DevClusterConfig {
            stamp_requester_identity: false,
            ..DevClusterConfig::default()
        })
        .await
        .expect("dev cluster");
        let kubeconfig = Kubeconfig::from_yaml(&cluster.kubeconfig_json()).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("config");
        let access = KubeAccess::from_config(config);
        let settings = Config {
            listen_address: "127.0.0.1:0".parse().expect("address"),
            ..Config::default()
        }
        .validate()
        .expect("settings");
        let webhook = Webhook::bind(settings).expect("bind");
        let handle = webhook.handle();
        cluster
            .route_service(
                ServiceRef::new("default", "nico-identity-webhook", 443),
                handle.local_addr(),
            )
            .expect("route");
        let shutdown = CancellationToken::new();
        let ctx = RoleContext {
            access: access.clone(),
            telemetry: Telemetry::new(),
            shutdown: shutdown.clone(),
            identity: "bench".into(),
            namespace: "default".into(),
        };
        tokio::spawn(async move { webhook.run(ctx).await.expect("webhook") });
        while !handle.is_installed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secret = Api::<Secret>::namespaced(access.client().expect("client"), "default")
            .get("nico-identity-webhook-ca")
            .await
            .expect("the CA Secret");
        let bundle =
            String::from_utf8(secret.data.expect("data")["ca.crt"].0.clone()).expect("PEM text");
        let direct = Connection::open(
            handle.local_addr(),
            &bundle,
            "nico-identity-webhook.default.svc",
        )
        .await;
        let mut api = Connection::open(cluster.addr(), cluster.ca_pem(), "127.0.0.1").await;
        api.token = Some(cluster.admin_token().to_owned());
        Setup {
            cluster,
            shutdown,
            direct,
            api,
        }
    })
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let Setup {
        cluster,
        shutdown,
        mut direct,
        mut api,
    } = setup(&rt);
    let csr = csr();
    let pod = review(
        ("", "v1", "pods"),
        "CREATE",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "labels": {"identity.nico.io/inject": "true"}},
               "spec": {"containers": [{"name": "app", "image": "x"},
                                       {"name": "proxy", "image": "y"}]}}),
        Value::Null,
    );
    let create = review(
        ("cert-manager.io", "v1", "certificaterequests"),
        "CREATE",
        certificate_request("x", &csr),
        Value::Null,
    );
    let policy = review(
        (
            "policy.cert-manager.io",
            "v1alpha1",
            "certificaterequestpolicies",
        ),
        "CREATE",
        json!({"apiVersion": "policy.cert-manager.io/v1alpha1",
               "kind": "CertificateRequestPolicy", "metadata": {"name": "x"},
               "spec": {"selector": {"issuerRef": {}},
                        "allowed": {"dnsNames": {"values": ["*"], "validations": [
                            {"rule": "self.endsWith('.svc')"}]}}}}),
        Value::Null,
    );
    let json = "application/json";
    let mut group = c.benchmark_group("webhook");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    for (name, path, body) in [
        ("review: pod injection", "/mutate/pods", &pod),
        (
            "review: CertificateRequest create (CSR parsed)",
            "/validate/certificaterequests",
            &create,
        ),
        (
            "review: CertificateRequestPolicy (CEL compiled)",
            "/validate/certificaterequestpolicies",
            &policy,
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let answer = rt.block_on(direct.send("POST", path, json, body));
                assert_eq!(answer["response"]["allowed"], true, "{answer}");
            });
        });
    }

    let crs = "/apis/cert-manager.io/v1/namespaces/default/certificaterequests";
    let mut i = 0;
    group.bench_function(
        "API: CertificateRequest create through both webhooks",
        |b| {
            b.iter(|| {
                i += 1;
                let cr = certificate_request(&format!("bench-{i}"), &csr);
                let stored = rt.block_on(api.send("POST", crs, json, &cr));
                assert_eq!(stored["spec"]["username"], "nico-dev-admin", "{stored}");
            });
        },
    );
    let approval = json!({"status": {"conditions": [
        {"type": "Approved", "status": "True", "reason": "Bench", "message": "bench"}]}});
    let status = format!("{crs}/bench-1/status?dryRun=All");
    group.bench_function("API: approval checked by a SubjectAccessReview", |b| {
        b.iter(|| {
            let merge = "application/merge-patch+json";
            let stored = rt.block_on(api.send("PATCH", &status, merge, &approval));
            assert_eq!(
                stored["status"]["conditions"][0]["type"], "Approved",
                "{stored}"
            );
        });
    });
    group.finish();
    shutdown.cancel();
    rt.block_on(cluster.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
