//! An in-memory Kubernetes API server on 127.0.0.1 that speaks the real wire protocol.
//!
//! The dev cluster lets the real `kube` client (and kubectl) run against something that
//! behaves like kube-apiserver, without one. Its behaviour is checked against transcripts
//! recorded from kube-apiserver v1.36 (`shared/testdata/kube-wire`, replayed by
//! `tests/kube_wire.rs`).
//!
//! # What it implements
//! - Resources: core/v1 namespaces, nodes, serviceaccounts, pods, configmaps, secrets,
//!   events; events.k8s.io/v1 events (the same storage in the other shape);
//!   coordination.k8s.io/v1 leases; cert-manager.io/v1 certificaterequests (validated
//!   against the CRD's schema), certificates, issuers and clusterissuers (stored as sent).
//!   The namespaces default, kube-system, kube-public and kube-node-lease exist at start,
//!   and every new namespace gets a `default` ServiceAccount.
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
//! - Discovery (`/version`, `/api`, `/apis`, per group and version) and health endpoints.
//! - With [`DevClusterConfig::stamp_requester_identity`], CertificateRequest creates get
//!   `spec.username/uid/groups/extra` from the requester, as cert-manager's webhook does.
//!
//! # What it does not implement
//! - Authorization: every authenticated user may do everything (TODO(#4): RBAC objects and
//!   SubjectAccessReview).
//! - Admission webhooks (TODO(#6)), and the admission plugins beyond the defaults a pod
//!   and a namespace get.
//! - TLS, client certificates, anonymous requests, protobuf, Table output, aggregated
//!   discovery, OpenAPI documents, the `finalize`, `eviction`, `log`, `exec` and other
//!   subresources, and controllers (no garbage collector, scheduler or kubelet; the one
//!   exception is namespace deletion, which removes the namespace's contents).
//! - Strategic merge patch is approximated: lists with a known merge key merge by item.
//! - kubectl: client-go sends no credentials to a plain-HTTP server, so kubectl needs
//!   [`DevClusterConfig::anonymous_is_admin`]; its typed generators (`kubectl create
//!   configmap ...`) send protobuf, which is refused with 415 (use `create -f`/`apply -f`
//!   with `--validate=false`, as there is no OpenAPI document).

mod auth;
mod authz;
mod discovery;
mod handlers;
mod kinds;
mod managed;
mod namespaces;
mod patch;
mod registry;
mod reviews;
mod selectors;
mod server;
mod status;
mod store;
mod tokens;
mod util;
mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::server::AppState;
use crate::tokens::{BearerToken, TokenSigner};

/// How to start a dev cluster.
#[derive(Debug, Clone)]
pub struct DevClusterConfig {
    /// Where to listen. Must be on 127.0.0.1; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The admin bearer token; a random one is made when `None`.
    pub admin_token: Option<String>,
    /// Fill a CertificateRequest's `spec.username/uid/groups/extra` from the requester on
    /// create, replacing what the client sent (what cert-manager's webhook does).
    pub stamp_requester_identity: bool,
    /// How many changes are kept for watches to resume from.
    pub watch_history: usize,
    /// How long a successful service-account token check is remembered. kube-apiserver
    /// uses 10 s; the default here is zero, so a token stops working the moment its pod
    /// is deleted.
    pub token_success_cache: Duration,
    /// The largest request body accepted; bigger ones get 413.
    pub max_body_bytes: usize,
    /// Treat requests without an `Authorization` header as the admin instead of answering
    /// 401. kubectl (client-go) never sends credentials to a plain-HTTP server, so this is
    /// how kubectl can drive a dev cluster. Off by default.
    pub anonymous_is_admin: bool,
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
            anonymous_is_admin: false,
        }
    }
}

/// Why a dev cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bind address is not on 127.0.0.1.
    #[error("refusing to listen on {0}: the dev cluster binds 127.0.0.1 only")]
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
}

/// A running dev cluster.
#[derive(Debug)]
pub struct DevCluster {
    addr: SocketAddr,
    admin: BearerToken,
    stop: signal::Sender<bool>,
    task: JoinHandle<()>,
}

const INITIAL_NAMESPACES: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];

fn seed(store: &store::Store) {
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
    st.seal_history();
}

impl DevCluster {
    /// Starts a dev cluster listening on `config.bind`.
    pub async fn start(config: DevClusterConfig) -> Result<DevCluster, Error> {
        if config.bind.ip() != Ipv4Addr::LOCALHOST {
            return Err(Error::NotLoopback(config.bind));
        }
        let signer = TokenSigner::generate().map_err(|_| Error::SigningKey)?;
        let admin = BearerToken::new(config.admin_token.clone().unwrap_or_else(random_token));
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let store = store::Store::new(config.watch_history);
        seed(&store);
        let (stop, stopped) = signal::channel(false);
        let state = Arc::new(AppState {
            store,
            auth: Authenticator::new(
                admin.clone(),
                config.anonymous_is_admin,
                signer,
                config.token_success_cache,
            ),
            authz: Box::new(authz::AllowAll),
            stamp_requester_identity: config.stamp_requester_identity,
            max_body_bytes: config.max_body_bytes,
            shutdown: stopped.clone(),
            server_address: addr.to_string(),
            flow_schema_uid: util::new_uid(),
            priority_level_uid: util::new_uid(),
        });
        let app = axum::Router::new()
            .fallback(server::entry)
            .with_state(state);
        let mut until = stopped;
        let task = tokio::spawn(async move {
            let shutdown = async move {
                while !*until.borrow() {
                    if until.changed().await.is_err() {
                        break;
                    }
                }
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%error, "dev cluster server stopped with an error");
            }
        });
        tracing::debug!(%addr, "dev cluster listening");
        Ok(DevCluster {
            addr,
            admin,
            stop,
            task,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token of the admin user (`nico-dev-admin`, group `system:masters`).
    pub fn admin_token(&self) -> &str {
        self.admin.expose()
    }

    /// A kubeconfig for the admin user. It is JSON, which is also valid YAML, so kubectl
    /// and `kube::Config` both read it. kubectl drops the token of a plain-HTTP server,
    /// so it needs [`DevClusterConfig::anonymous_is_admin`]; the kube client sends it.
    pub fn kubeconfig_json(&self) -> String {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "nico-dev", "cluster": {"server": self.url()}}],
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
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
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
