//! The webhook role: the admission webhooks that make CertificateRequests trustworthy
//! without cert-manager, and inject the identity volume into pods.
//!
//! - `/mutate/certificaterequests`: on create, `spec.username`, `uid`, `groups` and
//!   `extra` are set from the review's user, replacing what the client sent.
//! - `/validate/certificaterequests`: the requester fields on create; the spec and the
//!   `cert-manager.io/` annotations frozen after; the CSR agreeing with `usages` and
//!   `isCA`; the approval conditions' rules; and `approve` on the issuer's signer (a
//!   SubjectAccessReview) for whoever adds `Approved` or `Denied`.
//! - `/validate/certificaterequestpolicies`: a policy must load as the approver loads it.
//! - `/mutate/pods`: pods labelled `identity.nico.io/inject: "true"` get the CSI volume
//!   and a read-only mount in each container.
//!
//! The HTTPS serving certificate is the webhook's own: a CA shared by every replica
//! through a Secret, a serving certificate per replica for the Service's DNS names, the CA
//! bundle written into the webhook's MutatingWebhookConfiguration and
//! ValidatingWebhookConfiguration, renewal before expiry and a hot swap on the next
//! handshake. `/readyz` (through the role's telemetry) passes once it serves; metrics count
//! answers by webhook and result with their latency.

mod approval;
mod bootstrap;
mod ca_store;
mod certificate_request;
mod config;
mod configurations;
mod inject;
mod metrics;
mod pki;
mod policy;
mod review;
mod server;

#[cfg(test)]
mod test_support;

pub use approval::AuthorizeError;
pub use bootstrap::BootstrapError;
pub use ca_store::CaStoreError;
pub use config::{
    Config, ConfigError, DEFAULT_DRIVER_NAME, INJECT_LABEL, InjectConfig, Injection, Settings,
};
pub use configurations::ConfigurationError;
pub use pki::PkiError;
pub use review::ReadError;
pub use server::ServeError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nico_runtime::{KubeAccessError, RoleContext};
use time::OffsetDateTime;

use crate::approval::KubeAuthorizer;
use crate::bootstrap::Bootstrap;
use crate::ca_store::CaStore;
use crate::configurations::Configurations;
use crate::metrics::Metrics;
use crate::pki::ServingResolver;
use crate::server::App;

/// Why the webhook could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No kube client.
    #[error(transparent)]
    Client(#[from] KubeAccessError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// What can be observed of a running webhook (tests and the dev environment).
#[derive(Clone, Debug)]
pub struct Handle {
    addr: SocketAddr,
    resolver: Arc<ServingResolver>,
    serving: Arc<AtomicBool>,
    installed: Arc<AtomicBool>,
}

impl Handle {
    /// The address the HTTPS server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server accepts reviews.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Whether the webhook configurations have trusted this replica's CA at least once.
    pub fn is_installed(&self) -> bool {
        self.installed.load(Ordering::Acquire)
    }

    /// The serial number (hex) of the serving certificate in use.
    pub fn serving_serial(&self) -> Option<String> {
        self.resolver.current().map(|s| s.serial().to_owned())
    }

    /// The serving certificate in use, PEM.
    pub fn serving_certificate_pem(&self) -> Option<String> {
        self.resolver.current().map(|s| s.cert_pem().to_owned())
    }
}

/// A bound, not yet running webhook.
#[derive(Debug)]
pub struct Webhook {
    settings: Settings,
    listener: std::net::TcpListener,
    handle: Handle,
}

impl Webhook {
    /// Binds the listen address (port 0 picks one: see [`Handle::local_addr`]).
    pub fn bind(settings: Settings) -> Result<Self, RunError> {
        let addr = settings.listen_address;
        let bind = |source| RunError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        let bound = listener.local_addr().map_err(bind)?;
        Ok(Self {
            settings,
            listener,
            handle: Handle {
                addr: bound,
                resolver: Arc::default(),
                serving: Arc::default(),
                installed: Arc::default(),
            },
        })
    }

    /// A handle to observe it.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs until `ctx.shutdown`: bootstraps the CA and the serving certificate, serves,
    /// and keeps the configurations and the certificate current.
    pub async fn run(self, ctx: RoleContext) -> Result<(), RunError> {
        let Webhook {
            settings,
            listener,
            handle,
        } = self;
        let client = ctx.access.client()?;
        let metrics = Metrics::default();
        ctx.telemetry
            .register("webhook", |registry| metrics.register(registry));
        let ready = ctx.telemetry.readiness().register("webhook");
        let namespace = settings.service_namespace(&ctx.namespace).to_owned();
        let mut bootstrap = Bootstrap {
            store: CaStore::new(
                client.clone(),
                &ctx.namespace,
                &settings.ca_secret,
                settings.ca_validity,
            ),
            configurations: Configurations::new(client.clone(), &settings, &ctx.namespace),
            resolver: Arc::clone(&handle.resolver),
            dns_names: settings.dns_names(&namespace),
            serving_validity: settings.serving_validity,
            resync: settings.resync_interval,
            metrics: metrics.clone(),
            installed: Arc::clone(&handle.installed),
            ca: None,
        };
        let mut retry = std::time::Duration::from_secs(1);
        loop {
            match bootstrap.start(OffsetDateTime::now_utc()).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "failed to load the webhook CA; retrying");
                    tokio::select! {
                        () = ctx.shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(settings.resync_interval);
                }
            }
        }
        let app = Arc::new(App {
            authorizer: KubeAuthorizer::new(client),
            limits: nico_request_policy::Limits {
                cel_cost: settings.cel_cost_limit,
            },
            injection: settings.inject.clone(),
            max_review_bytes: settings.max_review_bytes,
            metrics,
        });
        let router = server::router(app);
        // A child: a failing server stops this role, not the others sharing the token.
        let shutdown = ctx.shutdown.child_token();
        let serving = server::serve(
            listener,
            Arc::clone(&handle.resolver),
            router,
            shutdown.clone(),
            settings.shutdown_grace,
        );
        let keeper = tokio::spawn(bootstrap.run(shutdown.clone()));
        handle.serving.store(true, Ordering::Release);
        ready.set(true);
        let served = serving.await;
        handle.serving.store(false, Ordering::Release);
        ready.set(false);
        shutdown.cancel();
        // The keeper only waits and writes idempotently; it ends at the cancellation.
        let _ = keeper.await;
        tracing::info!("webhook stopped");
        Ok(served?)
    }
}

/// Binds and runs the webhook until `ctx.shutdown`.
pub async fn run(settings: Settings, ctx: RoleContext) -> Result<(), RunError> {
    Webhook::bind(settings)?.run(ctx).await
}
