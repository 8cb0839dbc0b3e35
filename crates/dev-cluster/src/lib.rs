//! An in-memory Kubernetes API server on 127.0.0.1 that speaks the real wire protocol.
//!
//! The dev cluster lets the real `kube` client (and kubectl) run against something that
//! behaves like kube-apiserver, without one. Its behaviour is checked against transcripts
//! recorded from kube-apiserver v1.36 (`shared/testdata/kube-wire`, replayed by
//! `tests/kube_wire.rs`: all 111 exchanges).
//!
//! # What it implements
//! - HTTPS only: a CA and a serving certificate for `127.0.0.1` and `localhost` are made at
//!   start; [`DevCluster::kubeconfig_json`] carries the CA and the admin token, and
//!   [`DevCluster::ca_pem`] gives the CA to other clients.
//! - Resources: core/v1 namespaces, nodes, serviceaccounts, pods, services (cluster IPs
//!   from 10.0.0.0/24), configmaps, secrets, events; events.k8s.io/v1 events (the same
//!   storage in the other shape); coordination.k8s.io/v1 leases;
//!   rbac.authorization.k8s.io/v1 roles, clusterroles, rolebindings and
//!   clusterrolebindings; admissionregistration.k8s.io/v1 mutating- and
//!   validatingwebhookconfigurations (defaulted and validated); cert-manager.io/v1
//!   certificaterequests (validated against the CRD's schema), certificates, issuers and
//!   clusterissuers, and policy.cert-manager.io/v1alpha1 certificaterequestpolicies (with a
//!   status subresource; stored as sent). The namespaces default, kube-system, kube-public
//!   and kube-node-lease, the `default/kubernetes` Service and the default RBAC policy exist
//!   at start, and every new namespace gets a `default` ServiceAccount.
//! - Verbs: get, list, watch, create (with `generateName` and `dryRun=All`), update (a
//!   current resourceVersion is required), patch (JSON merge, JSON patch, strategic merge
//!   for built-in types, server-side apply with conflicts and `force`), delete (finalizers,
//!   propagationPolicy, preconditions, graceful pod deletion) and deletecollection.
//! - Server-set fields: uid, resourceVersion from one global counter, creationTimestamp,
//!   generation, managedFields; the `status` subresource with its field resets.
//! - Lists with label and field selectors, `limit`/`continue`, `resourceVersion` and
//!   `resourceVersionMatch` (exact reads are rebuilt from the watch history).
//! - Watches from a resourceVersion, from scratch, and as a streaming list
//!   (`sendInitialEvents`), with bookmarks, `timeoutSeconds`, and 410 when the history no
//!   longer reaches back.
//! - Authentication by bearer token: the admin token (`system:masters`) and
//!   service-account JWTs (ES256) from TokenRequest, checked on every request against the
//!   service account and the bound pod. TokenReview and SelfSubjectReview.
//! - Authorization ([`DevClusterConfig::authorization`]): RBAC by default, evaluated like
//!   kube-apiserver's (verbs, groups, resources and subresources, resource names,
//!   non-resource URLs; User, Group and ServiceAccount subjects; `system:masters` allowed
//!   everything), before anything is read, with the API server's 403 messages; every
//!   authenticated user may discover the API and review itself. SubjectAccessReview,
//!   SelfSubjectAccessReview and LocalSubjectAccessReview answer from the same decision.
//! - Admission webhooks from the stored configurations: AdmissionReview v1 over HTTPS
//!   trusting only each `caBundle`, `url` or `service` endpoints (Services reached through
//!   [`DevCluster::route_service`]), rules, namespace and object selectors,
//!   `failurePolicy`, `timeoutSeconds`, JSON patches, denials; on create, update, patch,
//!   status writes and delete. Webhooks are called on 127.0.0.1 only.
//! - Discovery (`/version`, `/api`, `/apis`, per group and version) and health endpoints.
//! - With [`DevClusterConfig::stamp_requester_identity`], CertificateRequest creates get
//!   `spec.username/uid/groups/extra` from the requester, as cert-manager's webhook does,
//!   before any mutating webhook runs.
//!
//! # What it does not implement
//! - Plain HTTP, client certificates, anonymous requests (no credential is 401),
//!   impersonation, protobuf, Table output, aggregated discovery, OpenAPI documents, the
//!   `finalize`, `eviction`, `log`, `exec` and other subresources, and controllers (no
//!   garbage collector, scheduler or kubelet; the one exception is namespace deletion,
//!   which removes the namespace's contents).
//! - RBAC: aggregated ClusterRoles are not assembled, and writing RBAC objects is not
//!   checked for privilege escalation. SelfSubjectRulesReview is not served.
//! - Admission: webhooks are not called for TokenRequests and reviews; `matchPolicy` only
//!   matters across versions and every kind is served in one; `reinvocationPolicy`,
//!   `matchConditions`, webhook warnings and audit annotations are ignored, and validating
//!   webhooks are called one after the other rather than in parallel. Of the built-in
//!   admission plugins only the defaults a pod, a namespace and a service get are applied.
//! - Strategic merge patch is approximated: lists with a known merge key merge by item.
//! - kubectl: its typed generators (`kubectl create configmap ...`) and `kubectl auth
//!   can-i` send protobuf, which is refused with 415 (use `create -f`/`apply -f` with
//!   `--validate=false`, as there is no OpenAPI document).

mod access_reviews;
mod admission;
mod auth;
mod authz;
mod bootstrap;
mod discovery;
mod handlers;
mod kinds;
mod managed;
mod namespaces;
mod patch;
mod rbac;
mod registry;
mod reviews;
mod selectors;
mod server;
mod status;
mod store;
mod tls;
mod tokens;
mod util;
mod watch;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::server::AppState;
use crate::tokens::{BearerToken, TokenSigner};

pub use crate::authz::Authorization;

/// A Service port that admission webhooks may name in `clientConfig.service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port named in the webhook (443 when the webhook names none).
    pub port: u16,
}

impl ServiceRef {
    /// The Service `namespace/name` on `port`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, port: u16) -> ServiceRef {
        ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
            port,
        }
    }
}

/// How to start a dev cluster.
#[derive(Debug, Clone)]
pub struct DevClusterConfig {
    /// Where to listen. Must be on 127.0.0.1; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The admin bearer token; a random one is made when `None`.
    pub admin_token: Option<String>,
    /// Fill a CertificateRequest's `spec.username/uid/groups/extra` from the requester on
    /// create, replacing what the client sent (what cert-manager's webhook does). It runs as
    /// a built-in mutating admission step, before any mutating webhook.
    pub stamp_requester_identity: bool,
    /// How many changes are kept for watches to resume from.
    pub watch_history: usize,
    /// How long a successful service-account token check is remembered. kube-apiserver
    /// uses 10 s; the default here is zero, so a token stops working the moment its pod
    /// is deleted.
    pub token_success_cache: Duration,
    /// The largest request body accepted; bigger ones get 413.
    pub max_body_bytes: usize,
    /// How requests are authorized: RBAC over the stored roles and bindings (the default,
    /// as `--authorization-mode=RBAC`), or everything allowed.
    pub authorization: Authorization,
    /// Where admission webhooks that name a Service are reached. Addresses must be on
    /// 127.0.0.1; more can be added while running with [`DevCluster::route_service`].
    pub services: BTreeMap<ServiceRef, SocketAddr>,
}

impl Default for DevClusterConfig {
    fn default() -> Self {
        DevClusterConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            admin_token: None,
            stamp_requester_identity: true,
            watch_history: 10_000,
            token_success_cache: Duration::ZERO,
            max_body_bytes: 3 * 1024 * 1024,
            authorization: Authorization::Rbac,
            services: BTreeMap::new(),
        }
    }
}

/// Why a dev cluster could not start, or a setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An address is not on 127.0.0.1.
    #[error("refusing {0}: the dev cluster listens on and calls 127.0.0.1 only")]
    NotLoopback(SocketAddr),
    /// The listener could not be opened.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The token signing key could not be made.
    #[error("failed to generate the service-account signing key")]
    SigningKey,
    /// The CA, the serving certificate or the TLS configuration could not be made.
    #[error("failed to set up the dev cluster's TLS")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A running dev cluster.
#[derive(Debug)]
pub struct DevCluster {
    addr: SocketAddr,
    admin: BearerToken,
    ca_pem: String,
    state: Arc<AppState>,
    stop: signal::Sender<bool>,
    handle: axum_server::Handle<SocketAddr>,
    task: JoinHandle<()>,
}

const INITIAL_NAMESPACES: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];

fn seed(store: &store::Store, server_port: u16) {
    let mut st = store.lock();
    for name in INITIAL_NAMESPACES {
        let ns = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": util::new_uid(),
                "creationTimestamp": util::now_time(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        st.insert("namespaces", store::key(None, name), ns);
        handlers::seed_default_service_account(&mut st, name);
    }
    bootstrap::seed(&mut st, server_port);
    st.seal_history();
}

fn check_loopback(addr: SocketAddr) -> Result<(), Error> {
    if addr.ip() == Ipv4Addr::LOCALHOST {
        Ok(())
    } else {
        Err(Error::NotLoopback(addr))
    }
}

impl DevCluster {
    /// Starts a dev cluster serving HTTPS on `config.bind`.
    pub async fn start(config: DevClusterConfig) -> Result<DevCluster, Error> {
        check_loopback(config.bind)?;
        for addr in config.services.values() {
            check_loopback(*addr)?;
        }
        let signer = TokenSigner::generate().map_err(|_| Error::SigningKey)?;
        let tls = tls::ServingTls::generate().map_err(|e| Error::Tls(Box::new(e)))?;
        let admin = BearerToken::new(config.admin_token.clone().unwrap_or_else(random_token));
        let bind_error = |source| Error::Bind {
            addr: config.bind,
            source,
        };
        let listener = std::net::TcpListener::bind(config.bind).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let store = store::Store::new(config.watch_history);
        seed(&store, addr.port());
        let (stop, stopped) = signal::channel(false);
        let state = Arc::new(AppState {
            store,
            auth: Authenticator::new(admin.clone(), signer, config.token_success_cache),
            authorization: config.authorization,
            stamp_requester_identity: config.stamp_requester_identity,
            max_body_bytes: config.max_body_bytes,
            shutdown: stopped,
            server_address: addr.to_string(),
            flow_schema_uid: util::new_uid(),
            priority_level_uid: util::new_uid(),
            services: RwLock::new(config.services.clone()),
            webhooks: admission::WebhookCache::default(),
            webhook_connections: admission::Connections::default(),
        });
        let app = axum::Router::new()
            .fallback(server::entry)
            .with_state(Arc::clone(&state));
        let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::clone(&tls.config));
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, rustls)
            .map_err(bind_error)?
            .handle(handle.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = server.serve(app.into_make_service()).await {
                tracing::warn!(%error, "dev cluster server stopped with an error");
            }
        });
        tracing::debug!(%addr, "dev cluster listening");
        Ok(DevCluster {
            addr,
            admin,
            ca_pem: tls.ca_pem,
            state,
            stop,
            handle,
            task,
        })
    }

    /// The base URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The address the API is served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the serving certificate: what a client must
    /// trust to talk to the dev cluster.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token of the admin user (`nico-dev-admin`, group `system:masters`).
    pub fn admin_token(&self) -> &str {
        self.admin.expose()
    }

    /// Points webhooks that name `service` at `addr` (on 127.0.0.1), replacing an earlier
    /// route. The webhook's certificate is checked for `<name>.<namespace>.svc`, as
    /// kube-apiserver checks it.
    pub fn route_service(&self, service: ServiceRef, addr: SocketAddr) -> Result<(), Error> {
        check_loopback(addr)?;
        self.state
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service, addr);
        Ok(())
    }

    /// A kubeconfig for the admin user, trusting the dev cluster's CA. It is JSON, which
    /// is also valid YAML, so kubectl and `kube::Config` both read it.
    pub fn kubeconfig_json(&self) -> String {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "nico-dev", "cluster": {
                "server": self.url(),
                "certificate-authority-data": STANDARD.encode(&self.ca_pem),
            }}],
            "users": [{"name": auth::ADMIN_USER, "user": {"token": self.admin_token()}}],
            "contexts": [{"name": "nico-dev",
                          "context": {"cluster": "nico-dev", "user": auth::ADMIN_USER,
                                      "namespace": "default"}}],
            "current-context": "nico-dev",
            "preferences": {},
        });
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }

    /// Stops serving: open watches end, then the listener closes.
    pub async fn shutdown(self) {
        // Nobody listening means the server already stopped.
        let _ = self.stop.send(true);
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(6), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    if aws_lc_rs::rand::SecureRandom::fill(&rng, &mut bytes).is_err() {
        // A uid is random enough for a development credential if the RNG fails.
        return util::new_uid();
    }
    URL_SAFE_NO_PAD.encode(bytes)
}
