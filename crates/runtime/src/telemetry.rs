//! The health and metrics endpoints every role serves on a plain-HTTP port of its own:
//! `/healthz` (the process is alive), `/readyz` (every readiness check passes) and
//! `/metrics` (Prometheus, OpenMetrics text).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Failures to serve the endpoints.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The address could not be bound.
    #[error("failed to listen on {addr} for health and metrics: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Named readiness checks; the process is ready when every registered check is.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<String, bool>>>,
}

/// One readiness check, not ready until set.
#[derive(Clone, Debug)]
pub struct ReadyFlag {
    name: String,
    readiness: Readiness,
}

impl Readiness {
    /// Registers a check, initially not ready.
    pub fn register(&self, name: impl Into<String>) -> ReadyFlag {
        let name = name.into();
        self.lock().insert(name.clone(), false);
        ReadyFlag {
            name,
            readiness: self.clone(),
        }
    }

    /// The checks that are not ready, by name.
    pub fn pending(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        // Each critical section is one map operation: a poisoned map is still consistent.
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ReadyFlag {
    /// Marks the check ready or not.
    pub fn set(&self, ready: bool) {
        self.readiness.lock().insert(self.name.clone(), ready);
    }
}

/// The metrics registry and readiness checks of this process, shared by its roles. Cheap to
/// clone; metrics can be registered at any time, before or after serving starts.
#[derive(Clone, Debug)]
pub struct Telemetry {
    registry: Arc<RwLock<Registry>>,
    readiness: Readiness,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct Shared {
    registry: Arc<RwLock<Registry>>,
    readiness: Readiness,
}

impl Telemetry {
    /// An empty registry under the `nico_identity` prefix.
    pub fn new() -> Self {
        Self {
            registry: Arc::new(RwLock::new(Registry::with_prefix("nico_identity"))),
            readiness: Readiness::default(),
        }
    }

    /// Registers a role's metrics under `nico_identity_<role>_`.
    pub fn register(&self, role: &str, register: impl FnOnce(&mut Registry)) {
        // Registration only appends: a registry poisoned by a panicking closure is usable.
        let mut registry = self
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        register(registry.sub_registry_with_prefix(role));
    }

    /// The readiness checks.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Binds `addr` and serves until `shutdown`; returns the bound address (useful with port 0).
    pub async fn serve(
        &self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<SocketAddr, TelemetryError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let shared = Shared {
            registry: self.registry.clone(),
            readiness: self.readiness.clone(),
        };
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/livez", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(shared);
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "health and metrics server stopped");
            }
        });
        tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
        Ok(bound)
    }
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let pending = shared.readiness.pending();
    if pending.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", pending.join(", ")),
        )
    }
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    let registry = shared
        .registry
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "failed to encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        (status, response)
    }

    #[tokio::test]
    async fn readiness_follows_every_check_and_metrics_are_served() {
        let telemetry = Telemetry::new();
        let counter = Counter::<u64>::default();
        telemetry.register("approver", |registry| {
            registry.register("decisions", "Decisions made", counter.clone());
        });
        counter.inc();
        let readiness = telemetry.readiness();
        let (cache, leader) = (readiness.register("cache"), readiness.register("leader"));
        let shutdown = CancellationToken::new();
        let addr = telemetry
            .serve("127.0.0.1:0".parse().unwrap(), shutdown.clone())
            .await
            .unwrap();

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("not ready: cache, leader"), "{body}");
        cache.set(true);
        leader.set(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("nico_identity_approver_decisions_total 1"),
            "{body}"
        );
        shutdown.cancel();
    }
}
