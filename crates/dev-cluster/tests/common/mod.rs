//! Shared by the integration tests: raw HTTPS requests to a dev cluster (trusting only its
//! CA), kube clients from its kubeconfig, and a test admission webhook: an HTTPS server on
//! 127.0.0.1 with its own throwaway CA that records every AdmissionReview it receives.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses its own part of these helpers"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube::config::{KubeConfigOptions, Kubeconfig};
use nico_dev_cluster::DevCluster;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};

/// Installs the process-wide rustls provider the kube client uses, as the binary does.
pub fn install_provider() {
    // Several tests in one process: it may be installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration trusting exactly the certificates of `pem`.
pub fn client_config(pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable root");
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request over HTTPS to the dev cluster, trusting only its CA.
pub async fn send(
    cluster: &DevCluster,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> Answer {
    let addr = cluster.addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(client_config(cluster.ca_pem()));
    let name = ServerName::try_from("127.0.0.1").expect("an IP server name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends JSON with a bearer token.
pub async fn send_json(
    cluster: &DevCluster,
    token: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> Answer {
    let headers = [
        ("authorization", format!("Bearer {token}")),
        ("content-type", content_type.to_owned()),
        ("accept", "application/json".to_owned()),
        ("user-agent", "nico-test/1".to_owned()),
    ];
    send(
        cluster,
        method,
        path,
        &headers,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

/// A kube client from a kubeconfig text.
pub async fn client_from_kubeconfig(text: &str) -> kube::Client {
    install_provider();
    let kubeconfig = Kubeconfig::from_yaml(text).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(config).expect("client builds")
}

/// The admin's kube client, from the cluster's own kubeconfig.
pub async fn admin(cluster: &DevCluster) -> kube::Client {
    client_from_kubeconfig(&cluster.kubeconfig_json()).await
}

/// A kube client that trusts the cluster's CA and authenticates with `token`.
pub async fn with_token(cluster: &DevCluster, token: &str) -> kube::Client {
    let text = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster.url(),
            "certificate-authority-data": STANDARD.encode(cluster.ca_pem())}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    client_from_kubeconfig(&text.to_string()).await
}

/// A throwaway CA and a serving certificate for `names` (IP addresses or DNS names).
pub struct TestCa {
    pub ca_pem: String,
    pub server: Arc<ServerConfig>,
}

impl TestCa {
    pub fn new(names: &[&str]) -> TestCa {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        // Every CA has a name of its own, so that one is never mistaken for another.
        static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("nico test webhook CA {} {n}", std::process::id()),
        );
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut leaf =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("server names");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).expect("server certificate");
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestCa {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }

    /// The CA as a webhook configuration's `caBundle` (base64 of the PEM).
    pub fn ca_bundle(&self) -> String {
        STANDARD.encode(&self.ca_pem)
    }
}

/// One AdmissionReview POST the test webhook received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub review: Value,
}

/// How the test webhook answers one review.
#[derive(Debug, Clone)]
pub struct WebhookAnswer {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

/// Decides the answer to a review posted to a path.
pub type Responder = Arc<dyn Fn(&str, &Value) -> WebhookAnswer + Send + Sync>;

/// The AdmissionReview answer echoing the request uid.
pub fn answer(review: &Value, response: Value) -> WebhookAnswer {
    let mut response = response;
    response["uid"] = review["request"]["uid"].clone();
    WebhookAnswer {
        status: 200,
        body: json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "response": response}),
        delay: Duration::ZERO,
    }
}

pub fn allow(review: &Value) -> WebhookAnswer {
    answer(review, json!({"allowed": true}))
}

pub fn deny(review: &Value, message: &str) -> WebhookAnswer {
    answer(
        review,
        json!({"allowed": false, "status": {"message": message}}),
    )
}

pub fn patch(review: &Value, ops: Value) -> WebhookAnswer {
    answer(
        review,
        json!({"allowed": true, "patchType": "JSONPatch",
               "patch": STANDARD.encode(ops.to_string())}),
    )
}

type WebhookState = (Arc<Mutex<Vec<Received>>>, Responder);

async fn record_and_answer(
    axum::extract::State((log, respond)): axum::extract::State<WebhookState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let review: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    log.lock().expect("log").push(Received {
        path: path.clone(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers.clone(),
        review: review.clone(),
    });
    let out = respond(&path, &review);
    if !out.delay.is_zero() {
        tokio::time::sleep(out.delay).await;
    }
    let mut resp = axum::response::Response::new(axum::body::Body::from(out.body.to_string()));
    *resp.status_mut() = http::StatusCode::from_u16(out.status).expect("status");
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// An HTTPS admission webhook on 127.0.0.1.
pub struct TestWebhook {
    pub addr: SocketAddr,
    pub ca: TestCa,
    received: Arc<Mutex<Vec<Received>>>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl TestWebhook {
    /// Starts a webhook whose certificate names 127.0.0.1, answering with `respond`.
    pub async fn start(respond: Responder) -> TestWebhook {
        TestWebhook::start_for(&["127.0.0.1"], respond).await
    }

    /// Starts a webhook whose certificate names `names`.
    pub async fn start_for(names: &[&str], respond: Responder) -> TestWebhook {
        let ca = TestCa::new(names);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = (Arc::clone(&received), respond);
        let app = axum::Router::new()
            .fallback(record_and_answer)
            .with_state(state);
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::clone(&ca.server)),
        )
        .expect("server")
        .handle(handle.clone());
        let task = tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        TestWebhook {
            addr,
            ca,
            received,
            handle,
            task,
        }
    }

    /// `https://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Every review received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    /// Stops listening; calls afterwards are refused.
    pub async fn stop(self) {
        self.handle.shutdown();
        let _ = self.task.await;
    }
}

/// A webhook configuration body with one webhook.
pub fn webhook_configuration(
    kind: &str,
    name: &str,
    webhook: &str,
    client_config: Value,
    extra: Value,
) -> Value {
    let mut hook = json!({
        "name": webhook,
        "clientConfig": client_config,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["cert-manager.io"],
                   "apiVersions": ["v1"], "resources": ["certificaterequests"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(hook), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        hook.extend(extra.clone());
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
           "metadata": {"name": name}, "webhooks": [hook]})
}
