//! A dev cluster, objects in it, requesters' tokens, and approvers running against it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use nico_approver::Config;
use nico_csr::{KeyAlgorithm, PrivateKey, build_spiffe_csr};
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use nico_k8s_types::{
    CertificateRequest, CertificateRequestPolicy, CertificateRequestSpec, ConditionType,
    IDENTITY_ANNOTATION, IssuerRef, SPIFFE_USAGES,
};
use nico_runtime::{BearerToken, KubeAccess, RoleContext, Telemetry};
use nico_spiffe_id::SpiffeId;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long anything in these tests may take to happen.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Harness {
    pub(crate) cluster: DevCluster,
    pub(crate) access: KubeAccess,
    pub(crate) admin: kube::Client,
}

pub(crate) struct Approver {
    pub(crate) health: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Approver {
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// `GET path` on the health port: status and body.
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.health).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        (status, response)
    }

    /// The value of one sample of the metrics text, 0 when absent.
    pub(crate) async fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Approver settings for tests: everything default but what is asked for.
pub(crate) fn approver_config(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    change(&mut config);
    config
}

impl Harness {
    pub(crate) async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cluster = DevCluster::start(DevClusterConfig::default())
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

    pub(crate) async fn stop(self) {
        self.cluster.shutdown().await;
    }

    /// Starts an approver named `identity`.
    pub(crate) async fn approver(&self, identity: &str, config: Config) -> Approver {
        let settings = config.validate().unwrap();
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
            namespace: "default".to_owned(),
        };
        let task = tokio::spawn(async move {
            nico_approver::run(settings, ctx).await.unwrap();
        });
        Approver {
            health,
            shutdown,
            task,
        }
    }

    /// Creates any of the kinds these tests use from its JSON form.
    pub(crate) async fn apply(&self, object: Value) {
        let client = self.admin.clone();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let kind = object["kind"].as_str().unwrap().to_owned();
        let pp = PostParams::default();
        macro_rules! create {
            ($api:expr) => {{
                let api = $api;
                api.create(&pp, &serde_json::from_value(object.clone()).unwrap())
                    .await
                    .map(|_| ())
            }};
        }
        let result = match kind.as_str() {
            "Namespace" => create!(Api::<Namespace>::all(client)),
            "ServiceAccount" => create!(Api::<ServiceAccount>::namespaced(client, &namespace)),
            "Pod" => create!(Api::<Pod>::namespaced(client, &namespace)),
            "Service" => create!(Api::<Service>::namespaced(client, &namespace)),
            "Role" => create!(Api::<Role>::namespaced(client, &namespace)),
            "RoleBinding" => create!(Api::<RoleBinding>::namespaced(client, &namespace)),
            "ClusterRole" => create!(Api::<ClusterRole>::all(client)),
            "ClusterRoleBinding" => create!(Api::<ClusterRoleBinding>::all(client)),
            "CertificateRequestPolicy" => create!(Api::<CertificateRequestPolicy>::all(client)),
            other => panic!("no API for kind {other}"),
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("failed to create {kind}: {e}"),
        }
    }

    /// Every document of a YAML manifest.
    pub(crate) async fn apply_yaml(&self, manifest: &str) {
        for document in manifest.split("\n---\n") {
            let object: Value = serde_saphyr::from_str(document).unwrap();
            self.apply(object).await;
        }
    }

    pub(crate) async fn namespace(&self, name: &str, labels: Value) {
        self.apply(json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "labels": labels}}))
            .await;
    }

    /// A service account that may create CertificateRequests in its namespace.
    pub(crate) async fn requester(&self, namespace: &str, name: &str) {
        self.apply(json!({"kind": "ServiceAccount", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace}}))
            .await;
        self.may_request(namespace, namespace, name).await;
    }

    /// Lets `account_ns/account` create CertificateRequests in `namespace`.
    pub(crate) async fn may_request(&self, namespace: &str, account_ns: &str, account: &str) {
        self.apply(
            json!({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "request-certificates", "namespace": namespace},
            "rules": [{"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests"],
                       "verbs": ["create", "get", "list", "watch"]}]}),
        )
        .await;
        self.apply(
            json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": format!("request-certificates-{account_ns}-{account}"),
                         "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "request-certificates"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_ns}]}),
        )
        .await;
    }

    /// A pod running as `account` on `node`; returns its uid.
    pub(crate) async fn pod(
        &self,
        namespace: &str,
        name: &str,
        account: &str,
        node: &str,
    ) -> String {
        self.apply(json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"serviceAccountName": account, "nodeName": node,
                     "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}))
            .await;
        let pod = Api::<Pod>::namespaced(self.admin.clone(), namespace)
            .get(name)
            .await
            .unwrap();
        pod.metadata.uid.unwrap()
    }

    /// A token of `namespace/account`, bound to the pod `(name, uid)` when given.
    pub(crate) async fn token(
        &self,
        namespace: &str,
        account: &str,
        pod: Option<(&str, &str)>,
    ) -> String {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                bound_object_ref: pod.map(|(name, uid)| BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.into()),
                    uid: Some(uid.into()),
                }),
            },
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.admin.clone(), namespace)
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
    }

    /// A client that is `token`'s owner and nobody else.
    pub(crate) fn client_as(&self, token: &str) -> kube::Client {
        self.access
            .client_with_token(&BearerToken::new(token))
            .unwrap()
    }

    pub(crate) async fn get(&self, namespace: &str, name: &str) -> CertificateRequest {
        Api::<CertificateRequest>::namespaced(self.admin.clone(), namespace)
            .get(name)
            .await
            .unwrap()
    }

    /// Waits until the request carries a verdict.
    pub(crate) async fn verdict(&self, namespace: &str, name: &str) -> Verdict {
        let cr = eventually(&format!("a verdict on {namespace}/{name}"), || async {
            let cr = self.get(namespace, name).await;
            (verdict_of(&cr) != Verdict::None).then_some(cr)
        })
        .await;
        verdict_of(&cr)
    }
}

/// What the conditions say, checked to be one verdict at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    None,
    Approved(String),
    Denied(String),
}

/// The verdict on `cr`; panics when the conditions hold more than one.
pub(crate) fn verdict_of(cr: &CertificateRequest) -> Verdict {
    let of = |t: ConditionType| -> Vec<_> {
        cr.conditions()
            .iter()
            .filter(|c| c.type_ == t.as_str())
            .collect()
    };
    let (approved, denied) = (of(ConditionType::Approved), of(ConditionType::Denied));
    let name = cr.metadata.name.as_deref().unwrap_or_default();
    assert!(
        approved.len() + denied.len() <= 1,
        "{name} carries {} Approved and {} Denied conditions",
        approved.len(),
        denied.len()
    );
    if let Some(c) = approved.first() {
        assert_eq!(c.status, "True", "{name}");
        return Verdict::Approved(c.message.clone().unwrap_or_default());
    }
    if let Some(c) = denied.first() {
        assert_eq!(c.status, "True", "{name}");
        return Verdict::Denied(c.message.clone().unwrap_or_default());
    }
    Verdict::None
}

/// Polls `check` until it gives a value, or panics naming `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CertificateRequest for `issuer` carrying `csr`.
pub(crate) fn request(
    name: &str,
    namespace: &str,
    issuer: &str,
    csr: Vec<u8>,
) -> CertificateRequest {
    let mut cr = CertificateRequest::new(
        name,
        CertificateRequestSpec {
            request: csr,
            issuer_ref: IssuerRef {
                name: issuer.into(),
                kind: Some("ClusterIssuer".into()),
                group: Some("cert-manager.io".into()),
            },
            duration: Some("1h".into()),
            usages: Some(SPIFFE_USAGES.iter().map(|u| (*u).to_owned()).collect()),
            is_ca: Some(false),
            ..CertificateRequestSpec::default()
        },
    );
    cr.metadata.namespace = Some(namespace.into());
    cr
}

/// An SVID request as the node driver makes it.
pub(crate) fn svid_request(name: &str, namespace: &str, id: &str) -> CertificateRequest {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = build_spiffe_csr(&key, &SpiffeId::parse(id).unwrap()).unwrap();
    let mut cr = request(name, namespace, "nico-identity", csr.into_bytes());
    cr.metadata.annotations = Some(BTreeMap::from([(
        IDENTITY_ANNOTATION.to_owned(),
        id.to_owned(),
    )]));
    cr
}

/// A CSR with these DNS and URI SANs and an empty subject.
pub(crate) fn csr(dns: &[&str], uris: &[&str]) -> Vec<u8> {
    use rcgen::string::Ia5String;
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let ia5 = |s: &&str| Ia5String::try_from(*s).unwrap();
    params.subject_alt_names = dns
        .iter()
        .map(|d| SanType::DnsName(ia5(d)))
        .chain(uris.iter().map(|u| SanType::URI(ia5(u))))
        .collect();
    let key = KeyPair::generate().unwrap();
    params
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

/// Creates `cr` as `client`'s user.
pub(crate) async fn create(client: &kube::Client, cr: &CertificateRequest) {
    let namespace = cr.metadata.namespace.as_deref().unwrap();
    Api::<CertificateRequest>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), cr)
        .await
        .unwrap();
}
