//! Starting the dev cluster and every role in this process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Container, Namespace, Pod, PodSpec, ServiceAccount, Volume, VolumeMount,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use nico_dev_cluster::{DevCluster, DevClusterConfig, ServiceRef};
use nico_runtime::{KubeAccess, RoleContext, Telemetry};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::kubelet::{Kubelet, KubeletError, PodVolume};
use crate::config::FileConfig;

/// The node name the dev environment's CSI plugin and pods use.
pub const DEV_NODE: &str = "dev-node";

/// What to start.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where files go.
    pub workdir: PathBuf,
    /// Requested certificate lifetime, overriding the configuration.
    pub duration: Option<String>,
    /// The configuration the roles start from; dev-specific values are set on top.
    pub config: FileConfig,
    /// Which roles run inside this process (tests run some as separate processes, or replace
    /// them with their own).
    pub embedded: Embedded,
    /// Mount a tmpfs per volume (needs privileges) instead of writing into the pod directory.
    pub mount: bool,
}

/// The roles the dev environment runs in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedded {
    /// The CSI node plugin.
    pub csi_node: bool,
    /// The approver.
    pub approver: bool,
    /// The local-CA issuer.
    pub issuer: bool,
    /// The admission webhooks (which record each CertificateRequest's requester).
    pub webhook: bool,
}

impl Default for Embedded {
    fn default() -> Self {
        Self {
            csi_node: true,
            approver: true,
            issuer: true,
            webhook: true,
        }
    }
}

impl DevOptions {
    /// Every role in-process, default configuration, no mounts.
    pub fn new(workdir: impl Into<PathBuf>) -> Self {
        Self {
            workdir: workdir.into(),
            duration: None,
            config: FileConfig::default(),
            embedded: Embedded::default(),
            mount: false,
        }
    }
}

/// Why the dev environment did not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The work directory is unusable.
    #[error("failed to prepare {path}: {source}")]
    Workdir {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The dev cluster did not start.
    #[error("failed to start the dev cluster: {0}")]
    Cluster(String),
    /// A role's configuration was refused.
    #[error("{0}")]
    Config(String),
    /// Talking to the dev cluster failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The CSI plugin did not come up.
    #[error("the CSI plugin did not become ready: {0}")]
    Csi(String),
    /// The admission webhooks did not come up.
    #[error("the webhook did not become ready: {0}")]
    Webhook(String),
    /// The issuer did not write the development CA.
    #[error("the issuer did not write the development CA: {0}")]
    Issuer(String),
}

/// A running dev environment.
#[derive(Debug)]
pub struct DevEnvironment {
    /// The in-memory API server.
    pub cluster: DevCluster,
    /// Admin access to it.
    pub access: KubeAccess,
    /// The CSI node plugin, when it runs in-process.
    pub driver: Option<nico_csi_node::Driver>,
    /// The admission webhooks, when they run in-process.
    pub webhook: Option<nico_webhook::Handle>,
    csi: nico_csi_node::Settings,
    csi_config: nico_csi_node::Config,
    webhook_config: nico_webhook::Config,
    webhook_service: ServiceRef,
    /// The development CA's files, when the issuer runs in-process and will write them.
    dev_ca: Vec<PathBuf>,
    /// Metrics and readiness of every role.
    pub telemetry: Telemetry,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub health: SocketAddr,
    workdir: PathBuf,
    socket: PathBuf,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl DevEnvironment {
    /// Starts the dev cluster, the webhook (its Service routed to it, its configurations
    /// installed), the issuer (with a development CA in `<workdir>/ca`), the approver and the
    /// CSI plugin (socket `<workdir>/csi.sock`), and waits until the webhook is installed,
    /// the development CA is written and the plugin is ready.
    pub async fn start(options: DevOptions) -> Result<Self, DevError> {
        let workdir_error = |path: &Path| {
            let path = path.to_owned();
            move |source| DevError::Workdir { path, source }
        };
        std::fs::create_dir_all(&options.workdir).map_err(workdir_error(&options.workdir))?;
        let workdir =
            std::fs::canonicalize(&options.workdir).map_err(workdir_error(&options.workdir))?;

        // Like kube-apiserver, the dev cluster leaves recording the requester of a
        // CertificateRequest to the webhook.
        let cluster = DevCluster::start(DevClusterConfig {
            stamp_requester_identity: false,
            ..DevClusterConfig::default()
        })
        .await
        .map_err(|e| DevError::Cluster(e.to_string()))?;
        let kubeconfig = cluster.kubeconfig_json();
        let kubeconfig_path = workdir.join("kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig).map_err(workdir_error(&kubeconfig_path))?;
        let parsed =
            Kubeconfig::from_yaml(&kubeconfig).map_err(|e| DevError::Cluster(e.to_string()))?;
        let kube_config =
            kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
                .await
                .map_err(|e| DevError::Cluster(e.to_string()))?;
        let access = KubeAccess::from_config(kube_config);

        let mut config = options.config;
        let socket = workdir.join("csi.sock");
        config.csi_node.node_id = DEV_NODE.to_owned();
        config.csi_node.endpoint = socket.clone();
        // Dev runs unprivileged by default: files go straight into each pod directory, the
        // state lives beside them, and there is no kubelet to register with.
        config.csi_node.mount = options.mount;
        config.csi_node.state_dir = workdir.join("csi-state");
        config.csi_node.target_roots = vec![workdir.join("pods")];
        config.csi_node.registration.enabled = false;
        if let Some(duration) = options.duration {
            config.csi_node.duration = duration;
        }
        // Short lifetimes are the point of trying renewals out in dev.
        config.approver.min_duration = "10s".to_owned();
        config.issuer.issuers = vec![nico_issuer::IssuerConfig {
            name: config.csi_node.issuer.name.clone(),
            kind: config.csi_node.issuer.kind.clone(),
            group: config.csi_node.issuer.group.clone(),
            local_ca: Some(nico_issuer::LocalCaConfig {
                certificate: Some(workdir.join("ca/ca.crt")),
                key: Some(workdir.join("ca/ca.key")),
                secret: None,
                generate: true,
                validity: "8760h".to_owned(),
                reload_interval: "1m".to_owned(),
            }),
            vault: None,
        }];
        let csi = config
            .csi_node
            .validate()
            .map_err(|e| DevError::Config(e.to_string()))?;
        let approver = config
            .approver
            .validate()
            .map_err(|e| DevError::Config(e.to_string()))?;
        let issuer = config
            .issuer
            .validate()
            .map_err(|e| DevError::Config(e.to_string()))?;
        // The webhook listens on loopback; the dev cluster reaches its Service through a
        // route. It creates its own configurations and injects the dev driver's volume.
        config.webhook.listen_address = SocketAddr::from(([127, 0, 0, 1], 0));
        config.webhook.manage_configurations = true;
        config.webhook.inject.driver_name = config.csi_node.driver_name.clone();
        let webhook_settings = config
            .webhook
            .validate()
            .map_err(|e| DevError::Config(e.to_string()))?;

        let shutdown = CancellationToken::new();
        let telemetry = Telemetry::new();
        let health = telemetry
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
            .await
            .map_err(|e| DevError::Cluster(e.to_string()))?;
        let ctx = RoleContext {
            access: access.clone(),
            telemetry: telemetry.clone(),
            shutdown: shutdown.clone(),
            identity: "nico-identity-dev".to_owned(),
            namespace: "default".to_owned(),
        };
        let mut tasks = Vec::new();
        let mut webhook = None;
        let webhook_service = ServiceRef::new(
            webhook_settings.service_namespace(&ctx.namespace),
            webhook_settings.service_name.clone(),
            webhook_settings.service_port,
        );
        if options.embedded.webhook {
            let bound = nico_webhook::Webhook::bind(webhook_settings)
                .map_err(|e| DevError::Webhook(e.to_string()))?;
            let handle = bound.handle();
            cluster
                .route_service(webhook_service.clone(), handle.local_addr())
                .map_err(|e| DevError::Webhook(e.to_string()))?;
            tasks.push(tokio::spawn({
                let ctx = ctx.clone();
                async move {
                    if let Err(e) = bound.run(ctx).await {
                        error!(error = %e, "webhook stopped");
                    }
                }
            }));
            webhook = Some(handle);
        }
        if options.embedded.issuer {
            tasks.push(tokio::spawn({
                let ctx = ctx.clone();
                async move {
                    if let Err(e) = nico_issuer::run(issuer, ctx).await {
                        error!(error = %e, "issuer stopped");
                    }
                }
            }));
        }
        if options.embedded.approver {
            tasks.push(tokio::spawn({
                let ctx = ctx.clone();
                async move {
                    if let Err(e) = nico_approver::run(approver, ctx).await {
                        error!(error = %e, "approver stopped");
                    }
                }
            }));
        }
        let mut driver = None;
        if options.embedded.csi_node {
            let started = nico_csi_node::Driver::start(csi.clone(), &ctx)
                .map_err(|e| DevError::Csi(e.to_string()))?;
            tasks.push(tokio::spawn({
                let (driver, socket, shutdown) =
                    (started.clone(), socket.clone(), shutdown.clone());
                async move {
                    if let Err(e) = nico_csi_node::serve(driver, &socket, shutdown).await {
                        error!(error = %e, "CSI server stopped");
                    }
                }
            }));
            driver = Some(started);
        }
        let environment = Self {
            cluster,
            access,
            driver,
            webhook,
            csi,
            csi_config: config.csi_node.clone(),
            webhook_config: config.webhook.clone(),
            webhook_service,
            dev_ca: if options.embedded.issuer {
                vec![workdir.join("ca/ca.crt"), workdir.join("ca/ca.key")]
            } else {
                Vec::new()
            },
            telemetry,
            health,
            workdir,
            socket,
            shutdown,
            tasks,
        };
        environment.wait_until_ready().await?;
        Ok(environment)
    }

    async fn wait_until_ready(&self) -> Result<(), DevError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // Requests created before the webhook's configurations exist would go unrecorded.
        while !self.webhook.as_ref().is_none_or(|w| w.is_installed()) {
            if tokio::time::Instant::now() > deadline {
                return Err(DevError::Webhook("not installed after 30s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Tests and users read the development CA as soon as the environment is up.
        while !self.dev_ca.iter().all(|path| path.exists()) {
            if tokio::time::Instant::now() > deadline {
                return Err(DevError::Issuer("no CA files after 30s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            let ready = self
                .driver
                .as_ref()
                .is_none_or(|d| self.socket.exists() && d.is_ready());
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DevError::Csi("not ready after 30s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The CSI node plugin's settings (also when it runs as a separate process).
    pub fn csi_settings(&self) -> &nico_csi_node::Settings {
        &self.csi
    }

    /// The CSI node plugin's configuration, as a separate process would be given it.
    pub fn csi_config(&self) -> &nico_csi_node::Config {
        &self.csi_config
    }

    /// The webhook's configuration, as a separate process would be given it.
    pub fn webhook_config(&self) -> &nico_webhook::Config {
        &self.webhook_config
    }

    /// Sends the dev cluster's calls to the webhook's Service to `addr` (a webhook running
    /// as a separate process, on 127.0.0.1).
    pub fn route_webhook(&self, addr: SocketAddr) -> Result<(), DevError> {
        self.cluster
            .route_service(self.webhook_service.clone(), addr)
            .map_err(|e| DevError::Webhook(e.to_string()))
    }

    /// The kubeconfig written for kubectl.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.workdir.join("kubeconfig")
    }

    /// The CSI socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The work directory (absolute).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// A kubelet stand-in connected to the CSI socket, using the admin account for
    /// TokenRequests as kubelet uses its node account.
    pub async fn kubelet(&self) -> Result<Kubelet, KubeletError> {
        let client = self
            .access
            .client()
            .map_err(|e| KubeletError::Setup(e.to_string()))?;
        Kubelet::connect(&self.socket, client, self.csi.driver_name.clone()).await
    }

    /// Creates (if needed) the namespace and service account, then a pod on the dev node
    /// with an inline CSI volume. Its files will appear in `<workdir>/pods/<ns>/<pod>`.
    pub async fn create_demo_pod(
        &self,
        namespace: &str,
        service_account: &str,
        pod_name: &str,
    ) -> Result<PodVolume, DevError> {
        let client = self
            .access
            .client()
            .map_err(|e| DevError::Cluster(e.to_string()))?;
        let kube_error = |action: String| move |source| DevError::Kube { action, source };
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace_object = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        create_if_absent(
            namespaces
                .create(&PostParams::default(), &namespace_object)
                .await,
        )
        .map_err(kube_error(format!("create namespace {namespace}")))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(service_account.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        create_if_absent(accounts.create(&PostParams::default(), &account).await).map_err(
            kube_error(format!(
                "create service account {namespace}/{service_account}"
            )),
        )?;
        grant_certificate_requests(&client, namespace, service_account)
            .await
            .map_err(kube_error(format!(
                "grant {namespace}/{service_account} create on certificaterequests"
            )))?;
        let driver_name = self.csi.driver_name.clone();
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(pod_name.to_owned()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some(service_account.to_owned()),
                node_name: Some(DEV_NODE.to_owned()),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("registry.k8s.io/pause:3.10".into()),
                    volume_mounts: Some(vec![VolumeMount {
                        name: "spiffe".into(),
                        mount_path: "/var/run/secrets/spiffe.io".into(),
                        read_only: Some(true),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                volumes: Some(vec![Volume {
                    name: "spiffe".into(),
                    csi: Some(CSIVolumeSource {
                        driver: driver_name,
                        read_only: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = Api::<Pod>::namespaced(client, namespace)
            .create(&PostParams::default(), &pod)
            .await
            .map_err(kube_error(format!("create pod {namespace}/{pod_name}")))?;
        let uid = created.metadata.uid.unwrap_or_default();
        Ok(PodVolume::new(
            namespace,
            pod_name,
            &uid,
            service_account,
            self.workdir.join("pods").join(namespace).join(pod_name),
            self.csi.files.clone(),
        ))
    }

    /// Stops every role and the dev cluster.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.cluster.shutdown().await;
    }
}

/// The seed's RBAC for a workload that gets a SPIFFE certificate: its service account may
/// create CertificateRequests in its namespace (csi-node creates them with the pod's token).
async fn grant_certificate_requests(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let meta = || ObjectMeta {
        name: Some(service_account.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["cert-manager.io".into()]),
            resources: Some(vec!["certificaterequests".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: service_account.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        }]),
    };
    create_if_absent(
        Api::<Role>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &role)
            .await,
    )?;
    create_if_absent(
        Api::<RoleBinding>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &binding)
            .await,
    )
}

fn create_if_absent<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
