//! The webhook against the dev cluster over the real kube client: the CA Secret, the
//! configurations and their caBundle, the serving certificate (checked with
//! rustls-webpki), several replicas, CA rotation, configurations someone else owns, and
//! hostile bodies over real HTTPS.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use nico_dev_cluster::{DevCluster, DevClusterConfig, ServiceRef};
use nico_runtime::{KubeAccess, RoleContext, Telemetry};
use nico_webhook::{Config, Handle, Webhook};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);
const NAMESPACE: &str = "default";
const SERVICE: &str = "nico-identity-webhook";

struct Harness {
    cluster: DevCluster,
    access: KubeAccess,
    admin: kube::Client,
}

struct Running {
    handle: Handle,
    health: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

impl Harness {
    async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cluster = DevCluster::start(DevClusterConfig {
            // The webhook records the requester, as on a real API server.
            stamp_requester_identity: false,
            ..DevClusterConfig::default()
        })
        .await
        .unwrap();
        let kubeconfig = Kubeconfig::from_yaml(&cluster.kubeconfig_json()).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        let access = KubeAccess::from_config(config);
        let admin = access.client().unwrap();
        Self {
            cluster,
            access,
            admin,
        }
    }

    /// Starts a webhook replica and routes the Service to it.
    async fn webhook(&self, identity: &str, change: impl FnOnce(&mut Config)) -> Running {
        let mut config = Config {
            listen_address: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        change(&mut config);
        let webhook = Webhook::bind(config.validate().unwrap()).unwrap();
        let handle = webhook.handle();
        self.cluster
            .route_service(
                ServiceRef::new(NAMESPACE, SERVICE, 443),
                handle.local_addr(),
            )
            .unwrap();
        let telemetry = Telemetry::new();
        let shutdown = CancellationToken::new();
        let health = telemetry
            .serve("127.0.0.1:0".parse().unwrap(), shutdown.clone())
            .await
            .unwrap();
        let ctx = RoleContext {
            access: self.access.clone(),
            telemetry,
            shutdown: shutdown.clone(),
            identity: identity.to_owned(),
            namespace: NAMESPACE.to_owned(),
        };
        let task = tokio::spawn(async move { webhook.run(ctx).await.unwrap() });
        Running {
            handle,
            health,
            shutdown,
            task,
        }
    }

    async fn secret(&self) -> Secret {
        Api::<Secret>::namespaced(self.admin.clone(), NAMESPACE)
            .get("nico-identity-webhook-ca")
            .await
            .unwrap()
    }

    /// Every caBundle of both configurations.
    async fn ca_bundles(&self) -> Vec<String> {
        let mutating = Api::<MutatingWebhookConfiguration>::all(self.admin.clone())
            .get(SERVICE)
            .await
            .unwrap();
        let validating = Api::<ValidatingWebhookConfiguration>::all(self.admin.clone())
            .get(SERVICE)
            .await
            .unwrap();
        let mut bundles = Vec::new();
        let hooks = serde_json::to_value(mutating.webhooks).unwrap();
        let more = serde_json::to_value(validating.webhooks).unwrap();
        for hook in hooks
            .as_array()
            .unwrap()
            .iter()
            .chain(more.as_array().unwrap())
        {
            let encoded = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
            bundles.push(String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap());
        }
        bundles
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn data(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

fn ders(pem: &str) -> Vec<Vec<u8>> {
    nico_csr::pem_to_ders(pem.as_bytes()).unwrap()
}

/// Verifies the serving certificate for the Service's name under `bundle`, with
/// rustls-webpki.
fn verifies(serving_pem: &str, bundle_pem: &str) -> Result<(), String> {
    let leaf = ders(serving_pem).remove(0);
    let leaf = CertificateDer::from(leaf);
    let roots: Vec<CertificateDer<'_>> = ders(bundle_pem).into_iter().map(Into::into).collect();
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).unwrap())
        .collect();
    let cert = webpki::EndEntityCert::try_from(&leaf).map_err(|e| e.to_string())?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(format!("{SERVICE}.{NAMESPACE}.svc")).unwrap();
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|e| e.to_string())
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    (response[9..12].parse().unwrap(), response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_replica_creates_its_ca_and_configurations_and_serves_the_api_server() {
    let harness = Harness::start().await;
    let webhook = harness.webhook("replica-0", |_| {}).await;
    eventually("the configurations", || webhook.handle.is_installed()).await;

    let secret = harness.secret().await;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let (ca, bundle) = (data(&secret, "tls.crt"), data(&secret, "ca.crt"));
    assert_eq!(ders(&bundle), ders(&ca), "one CA, trusted alone");
    assert!(data(&secret, "tls.key").contains("PRIVATE KEY"));
    assert_eq!(harness.ca_bundles().await, vec![bundle.clone(); 4]);
    let serving = webhook.handle.serving_certificate_pem().unwrap();
    verifies(&serving, &bundle).unwrap();

    // The API server now calls the webhook: a forged requester is replaced.
    let forged = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": "forged"},
        "spec": {"request": STANDARD.encode(csr()), "issuerRef": {"name": "ca"},
                 "usages": ["digital signature", "key encipherment"],
                 "username": "system:admin", "groups": ["system:masters"]},
    });
    let created = create_cr(&harness.admin, forged).await.unwrap();
    assert_eq!(created["spec"]["username"], "nico-dev-admin");
    assert_eq!(
        created["spec"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );

    let (status, _) = get(webhook.health, "/readyz").await;
    assert_eq!(status, 200);
    let (_, metrics) = get(webhook.health, "/metrics").await;
    for sample in [
        "nico_identity_webhook_admissions_total{webhook=\"certificaterequest_requester\",\
         result=\"patched\"} 1",
        "nico_identity_webhook_admissions_total{webhook=\"certificaterequest_validation\",\
         result=\"allowed\"} 1",
        "nico_identity_webhook_serving_certificate_renewals_total 1",
    ] {
        assert!(
            metrics.contains(sample),
            "{sample} missing from:\n{metrics}"
        );
    }
    webhook.stop().await;
    harness.cluster.shutdown().await;
}

/// POSTs `body` to `path` over HTTPS (HTTP/1.1), trusting `bundle` and naming the Service as
/// the API server does.
async fn post_https(
    addr: std::net::SocketAddr,
    bundle: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let mut roots = rustls::RootCertStore::empty();
    for der in ders(bundle) {
        roots.add(CertificateDer::from(der)).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(format!("{SERVICE}.{NAMESPACE}.svc")).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header("host", format!("{SERVICE}.{NAMESPACE}.svc"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Over real HTTPS, as the API server calls it: a body over the limit, bodies that are not
/// JSON or not a review, and nesting deep enough to exhaust a naive parser get a 400 naming
/// the problem on every webhook path, and the server goes on answering good reviews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_reviews_get_a_400_over_https_and_serving_goes_on() {
    let harness = Harness::start().await;
    let limit = 64 * 1024;
    let webhook = harness
        .webhook("replica-0", |config| config.max_review_bytes = limit)
        .await;
    eventually("the configurations", || webhook.handle.is_installed()).await;
    let bundle = data(&harness.secret().await, "ca.crt");
    let addr = webhook.handle.local_addr();
    let mut deep = br#"{"apiVersion":"#.to_vec();
    deep.extend([b'['; 20_000]);
    let cases: [(Vec<u8>, &str); 5] = [
        (
            vec![b' '; limit + 1],
            "AdmissionReview is larger than 65536 bytes",
        ),
        // Small enough to sit in the loopback socket's buffers whole, so the client has sent
        // everything when the early 400 arrives.
        (
            vec![b'{'; 2 * limit],
            "AdmissionReview is larger than 65536 bytes",
        ),
        (b"\xff\xfe not json".to_vec(), "malformed AdmissionReview: "),
        (
            br#"{"apiVersion":"v1","kind":"Status"}"#.to_vec(),
            "expected an admission.k8s.io/v1 AdmissionReview",
        ),
        (deep, "malformed AdmissionReview: recursion limit exceeded"),
    ];
    for path in [
        "/mutate/certificaterequests",
        "/validate/certificaterequests",
        "/validate/certificaterequestpolicies",
    ] {
        for (body, expected) in &cases {
            let (status, text) = post_https(addr, &bundle, path, body.clone()).await;
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.starts_with(expected), "{path}: {text}");
        }
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "after-the-storm", "operation": "CREATE", "name": "cr", "namespace": "demo",
            "kind": {"group": "cert-manager.io", "version": "v1", "kind": "CertificateRequest"},
            "resource": {"group": "cert-manager.io", "version": "v1",
                         "resource": "certificaterequests"},
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                       "metadata": {"name": "cr"}, "spec": {"request": STANDARD.encode(csr())}},
        },
    });
    let body = serde_json::to_vec(&review).unwrap();
    let (status, text) = post_https(addr, &bundle, "/mutate/certificaterequests", body).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["response"]["uid"], "after-the-storm");
    assert_eq!(answer["response"]["allowed"], true);
    let (_, metrics) = get(webhook.health, "/metrics").await;
    assert!(
        metrics.contains("nico_identity_webhook_malformed_reviews_total 15"),
        "{metrics}"
    );
    webhook.stop().await;
    harness.cluster.shutdown().await;
}

/// A CSR agreeing with `digital signature, key encipherment`.
fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Creates a CertificateRequest as the admin, returning what was stored or the API error.
async fn create_cr(client: &kube::Client, body: Value) -> Result<Value, kube::Error> {
    let request = http::Request::post(format!(
        "/apis/cert-manager.io/v1/namespaces/{NAMESPACE}/certificaterequests"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body).unwrap())
    .unwrap();
    client.request::<Value>(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_share_one_ca() {
    let harness = Harness::start().await;
    let (first, second) = tokio::join!(
        harness.webhook("replica-0", |_| {}),
        harness.webhook("replica-1", |_| {})
    );
    eventually("both replicas", || {
        first.handle.is_installed() && second.handle.is_installed()
    })
    .await;
    let secret = harness.secret().await;
    let bundle = data(&secret, "ca.crt");
    assert_eq!(ders(&bundle).len(), 1, "one CA for both replicas");
    for replica in [&first, &second] {
        verifies(&replica.handle.serving_certificate_pem().unwrap(), &bundle).unwrap();
    }
    assert_ne!(
        first.handle.serving_serial(),
        second.handle.serving_serial()
    );
    first.stop().await;
    second.stop().await;
    harness.cluster.shutdown().await;
}

/// A CA valid from `behind` days ago to `ahead` days from now (negative: in the past).
fn ca_between(behind: i64, ahead: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "old webhook CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(behind);
    params.not_after = now + time::Duration::days(ahead);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Harness {
    /// Stores a CA Secret as an earlier run would have left it.
    async fn store_ca(&self, (cert, key): &(String, String)) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("nico-identity-webhook-ca".into()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("tls.crt".into(), ByteString(cert.clone().into_bytes())),
                ("tls.key".into(), ByteString(key.clone().into_bytes())),
                ("ca.crt".into(), ByteString(cert.clone().into_bytes())),
            ])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.admin.clone(), NAMESPACE)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_near_its_end_is_rotated_and_the_old_one_stays_trusted() {
    let harness = Harness::start().await;
    // 20 days behind it, 5 ahead: less than a third of its life is left.
    let old = ca_between(20, 5);
    harness.store_ca(&old).await;
    let old_cert = old.0;
    let webhook = harness.webhook("replica-0", |_| {}).await;
    eventually("the configurations", || webhook.handle.is_installed()).await;
    let rotated = harness.secret().await;
    let new_cert = data(&rotated, "tls.crt");
    assert_ne!(ders(&new_cert), ders(&old_cert), "the CA was replaced");
    let bundle = data(&rotated, "ca.crt");
    assert_eq!(
        ders(&bundle),
        [ders(&new_cert)[0].clone(), ders(&old_cert)[0].clone()],
        "the new CA first, the old one still trusted"
    );
    for ca_bundle in harness.ca_bundles().await {
        assert_eq!(ders(&ca_bundle), ders(&bundle));
    }
    // Serving moved to the new CA once the configurations trusted it.
    eventually("a serving certificate of the new CA", || {
        verifies(
            &webhook.handle.serving_certificate_pem().unwrap(),
            &new_cert,
        )
        .is_ok()
    })
    .await;
    webhook.stop().await;
    harness.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_someone_else_owns_get_only_their_ca_bundle() {
    let harness = Harness::start().await;
    let hook = |name: &str, path: &str| {
        json!({
            "name": name,
            "clientConfig": {"service": {"namespace": NAMESPACE, "name": SERVICE,
                                         "path": path}},
            "rules": [{"operations": ["CREATE"], "apiGroups": ["cert-manager.io"],
                       "apiVersions": ["v1"], "resources": ["certificaterequests"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    };
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "chart-owned"},
        "webhooks": [hook("requester.certificaterequests.identity.nico.io",
                          "/mutate/certificaterequests")],
    }))
    .unwrap();
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "chart-owned"},
        "webhooks": [hook("certificaterequests.identity.nico.io",
                          "/validate/certificaterequests")],
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<MutatingWebhookConfiguration>::all(harness.admin.clone())
        .create(&pp, &mutating)
        .await
        .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(harness.admin.clone())
        .create(&pp, &validating)
        .await
        .unwrap();
    let webhook = harness
        .webhook("replica-0", |c| {
            c.manage_configurations = false;
            c.configuration_name = "chart-owned".into();
        })
        .await;
    eventually("the caBundle", || webhook.handle.is_installed()).await;
    let bundle = data(&harness.secret().await, "ca.crt");
    let stored = Api::<MutatingWebhookConfiguration>::all(harness.admin.clone())
        .get("chart-owned")
        .await
        .unwrap();
    let hooks = serde_json::to_value(stored.webhooks).unwrap();
    assert_eq!(hooks.as_array().unwrap().len(), 1, "nothing added");
    let only = &hooks[0];
    assert_eq!(
        only["failurePolicy"], "Ignore",
        "the owner's settings are kept"
    );
    assert_eq!(only["rules"][0]["operations"], json!(["CREATE"]));
    let written = STANDARD
        .decode(only["clientConfig"]["caBundle"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(written).unwrap(), bundle);
    webhook.stop().await;
    harness.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ca_is_replaced_before_anything_is_served() {
    let harness = Harness::start().await;
    let (expired, key) = ca_between(30, -1);
    harness.store_ca(&(expired.clone(), key)).await;
    let webhook = harness.webhook("replica-0", |_| {}).await;
    eventually("the configurations", || webhook.handle.is_installed()).await;
    let secret = harness.secret().await;
    let (current, bundle) = (data(&secret, "tls.crt"), data(&secret, "ca.crt"));
    assert_ne!(ders(&current), ders(&expired));
    assert_eq!(
        ders(&bundle),
        ders(&current),
        "the expired CA is trusted no more"
    );
    verifies(&webhook.handle.serving_certificate_pem().unwrap(), &bundle).unwrap();
    webhook.stop().await;
    harness.cluster.shutdown().await;
}
