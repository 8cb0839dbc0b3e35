//! Test support: the issuer running against a dev cluster, requests made and approved as an
//! approver would, and independent checks of what was written.

#![allow(
    dead_code,
    reason = "each test binary uses its own subset of the helpers"
)]

pub(crate) mod openbao;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use nico_csr::{KeyAlgorithm, PrivateKey};
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use nico_k8s_types::{
    CertificateRequest, CertificateRequestSpec, Condition, ConditionStatus, ConditionType,
    IssuerRef, SPIFFE_USAGES,
};
use nico_runtime::{KubeAccess, RoleContext, Telemetry};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The dev cluster with the issuer running against it.
#[allow(
    missing_debug_implementations,
    reason = "a test fixture holding a kube::Client, which has no Debug"
)]
pub(crate) struct Harness {
    /// The in-memory API server.
    pub(crate) cluster: DevCluster,
    /// An admin client.
    pub(crate) client: kube::Client,
    /// Where `/readyz` and `/metrics` are served.
    pub(crate) health: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// Admin access to a dev cluster.
pub(crate) async fn access(cluster: &DevCluster) -> KubeAccess {
    let kubeconfig = Kubeconfig::from_yaml(&cluster.kubeconfig_json()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    KubeAccess::from_config(config)
}

impl Harness {
    /// Starts a dev cluster and the issuer with `config`.
    pub(crate) async fn start(config: nico_issuer::Config) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let settings = config.validate().expect("a valid configuration");
        let cluster = DevCluster::start(DevClusterConfig::default())
            .await
            .expect("the dev cluster starts");
        let access = access(&cluster).await;
        let client = access.client().expect("a client");
        let shutdown = CancellationToken::new();
        let telemetry = Telemetry::new();
        let health = telemetry
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
            .await
            .expect("serve health");
        let ctx = RoleContext {
            access,
            telemetry,
            shutdown: shutdown.clone(),
            identity: "issuer-test".to_owned(),
            namespace: "default".to_owned(),
        };
        let task = tokio::spawn(async move {
            if let Err(error) = nico_issuer::run(settings, ctx).await {
                panic!("the issuer stopped: {error}");
            }
        });
        Self {
            cluster,
            client,
            health,
            shutdown,
            task,
        }
    }

    /// Stops the issuer and the cluster.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.cluster.shutdown().await;
    }

    /// `GET path` on the health port: status code and body.
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.health)
            .await
            .expect("connect to the health port");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send a request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the response");
        let status = response[9..12].parse().expect("a status code");
        (status, response)
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }

    /// Waits until `/readyz` answers `status`.
    pub(crate) async fn wait_ready(&self, status: u16, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (now, body) = self.get("/readyz").await;
            if now == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz stayed {now} ({body}), expected {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A CSR for `spiffe://nico.local/demo/sa/<account>` and its key.
pub(crate) fn spiffe_csr(account: &str) -> (PrivateKey, String) {
    spiffe_csr_in("demo", account)
}

/// A CSR for `spiffe://nico.local/<namespace>/sa/<account>` and its key.
pub(crate) fn spiffe_csr_in(namespace: &str, account: &str) -> (PrivateKey, String) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("a key");
    let id =
        nico_spiffe_id::SpiffeId::parse(&format!("spiffe://nico.local/{namespace}/sa/{account}"))
            .expect("a SPIFFE ID");
    let csr = nico_csr::build_spiffe_csr(&key, &id).expect("a CSR");
    (key, csr)
}

/// A reference to a ClusterIssuer.
pub(crate) fn cluster_issuer(name: &str) -> IssuerRef {
    IssuerRef {
        name: name.to_owned(),
        kind: Some("ClusterIssuer".to_owned()),
        group: Some("cert-manager.io".to_owned()),
    }
}

/// Creates a request in `default` and, as an approver would, approves it (`Some(true)`),
/// denies it (`Some(false)`) or leaves it pending.
pub(crate) async fn create_request(
    client: &kube::Client,
    name: &str,
    issuer: IssuerRef,
    csr: &str,
    duration: &str,
    decision: Option<bool>,
) -> CertificateRequest {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), "default");
    let request = CertificateRequest {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: CertificateRequestSpec {
            request: csr.as_bytes().to_vec(),
            issuer_ref: issuer,
            duration: Some(duration.to_owned()),
            usages: Some(SPIFFE_USAGES.iter().map(|u| (*u).to_owned()).collect()),
            is_ca: Some(false),
            ..CertificateRequestSpec::default()
        },
        status: None,
    };
    let mut created = api
        .create(&PostParams::default(), &request)
        .await
        .expect("create the request");
    let Some(approve) = decision else {
        return created;
    };
    let (type_, reason) = if approve {
        (ConditionType::Approved, "test approval")
    } else {
        (ConditionType::Denied, "test denial")
    };
    created.set_condition(Condition::new(type_, ConditionStatus::True, "Test", reason));
    api.replace_status(name, &PostParams::default(), &created)
        .await
        .expect("write the decision")
}

/// Waits until the request has a `Ready` condition and returns it.
pub(crate) async fn wait_for_ready(
    client: &kube::Client,
    name: &str,
    within: Duration,
) -> CertificateRequest {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let cr = api.get(name).await.expect("read the request");
        if cr.condition(ConditionType::Ready).is_some() {
            return cr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} has no Ready condition after {within:?}: {:?}",
            cr.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The message of the Ready condition, and whether it is True.
pub(crate) fn ready(cr: &CertificateRequest) -> (bool, String, String) {
    let condition = cr
        .condition(ConditionType::Ready)
        .expect("a Ready condition");
    (
        condition.status == "True",
        condition.reason.clone().unwrap_or_default(),
        condition.message.clone().unwrap_or_default(),
    )
}

/// Verifies `status.certificate` (leaf then intermediates) up to `status.ca` with the
/// `openssl` command, and returns the leaf's text dump.
pub(crate) fn openssl_verify(cr: &CertificateRequest) -> Result<String, String> {
    let status = cr.status.as_ref().ok_or("no status")?;
    let certificate = status
        .certificate
        .as_deref()
        .ok_or("no status.certificate")?;
    let ca = status.ca.as_deref().ok_or("no status.ca")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ders = nico_csr::pem_to_ders(certificate).map_err(|e| e.to_string())?;
    let write = |name: &str, content: &[u8]| {
        std::fs::write(dir.path().join(name), content).map_err(|e| e.to_string())
    };
    write("ca.crt", ca)?;
    write("leaf.crt", nico_csr::ders_to_pem(&ders[..1]).as_bytes())?;
    write("chain.crt", nico_csr::ders_to_pem(&ders[1..]).as_bytes())?;
    let mut args = vec!["verify", "-CAfile", "ca.crt"];
    if ders.len() > 1 {
        args.extend(["-untrusted", "chain.crt"]);
    }
    args.push("leaf.crt");
    run_openssl(dir.path(), &args)?;
    run_openssl(dir.path(), &["x509", "-in", "leaf.crt", "-noout", "-text"])
}

fn run_openssl(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("failed to run openssl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The number of certificates in a PEM field.
pub(crate) fn count_pem(pem: Option<&[u8]>) -> usize {
    pem.map_or(0, |pem| nico_csr::pem_to_ders(pem).map_or(0, |d| d.len()))
}
