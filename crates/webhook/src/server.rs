//! The HTTPS server: one POST route per webhook, one span per review (with its uid), a
//! size limit read before anything is parsed, and TLS from the serving resolver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt as _, Limited};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use nico_request_policy::Limits;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::approval::Authorizer;
use crate::config::Injection;
use crate::metrics::Metrics;
use crate::pki::ServingResolver;
use crate::review::{self, Endpoint, ReadError, Verdict};

/// What the handlers share.
pub(crate) struct App<A> {
    pub(crate) authorizer: A,
    pub(crate) limits: Limits,
    pub(crate) injection: Option<Injection>,
    pub(crate) max_review_bytes: usize,
    pub(crate) metrics: Metrics,
}

impl<A> std::fmt::Debug for App<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("injection", &self.injection)
            .field("max_review_bytes", &self.max_review_bytes)
            .finish_non_exhaustive()
    }
}

/// The routes of every enabled webhook.
pub(crate) fn router<A: Authorizer>(app: Arc<App<A>>) -> Router {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        if endpoint == Endpoint::PodInjection && app.injection.is_none() {
            continue;
        }
        router = router.route(
            endpoint.path(),
            post(move |State(app): State<Arc<App<A>>>, body: Body| handle(app, endpoint, body)),
        );
    }
    router.with_state(app)
}

fn bad_request(error: &ReadError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{error}\n"),
    )
        .into_response()
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ReadError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge { limit }),
        Err(_) => Err(ReadError::Body),
    }
}

async fn handle<A: Authorizer>(app: Arc<App<A>>, endpoint: Endpoint, body: Body) -> Response {
    let started = Instant::now();
    let request = match read_body(body, app.max_review_bytes)
        .await
        .and_then(|bytes| review::read(&bytes))
    {
        Ok(request) => request,
        Err(error) => {
            app.metrics.malformed();
            tracing::info!(webhook = endpoint.label(), %error, "refused an unreadable review");
            return bad_request(&error);
        }
    };
    let span = tracing::info_span!(
        "admission",
        uid = %request.uid,
        webhook = endpoint.label(),
        operation = ?request.operation,
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = %request.name,
    );
    async move {
        let verdict = decide(&app, endpoint, &request).await;
        match &verdict {
            Verdict::Invalid(problems) => {
                let reason = problems.iter().map(ToString::to_string).collect::<Vec<_>>();
                tracing::info!(reason = %reason.join("; "), "request denied");
            }
            Verdict::Forbidden(reason) => tracing::info!(%reason, "request denied"),
            Verdict::Unavailable(reason) => tracing::warn!(%reason, "request not decided"),
            Verdict::Patch(patch) => tracing::debug!(operations = patch.0.len(), "request patched"),
            Verdict::Allow => tracing::debug!("request allowed"),
        }
        let outcome = verdict.outcome();
        let answer = review::answer(&request, verdict);
        app.metrics
            .answered(endpoint.label(), outcome, started.elapsed().as_secs_f64());
        axum::Json(answer).into_response()
    }
    .instrument(span)
    .await
}

async fn decide<A: Authorizer>(
    app: &App<A>,
    endpoint: Endpoint,
    request: &AdmissionRequest<DynamicObject>,
) -> Verdict {
    let (group, resource) = endpoint.resource();
    if request.resource.group != group || request.resource.resource != resource {
        return Verdict::Forbidden(format!(
            "webhook {} reviews {resource} in group {group:?}, not {} in group {:?}: fix the \
             rules of the webhook configuration",
            endpoint.webhook_name(),
            request.resource.resource,
            request.resource.group
        ));
    }
    match endpoint {
        Endpoint::CertificateRequestIdentity => crate::certificate_request::stamp(request),
        Endpoint::CertificateRequestValidation => {
            crate::certificate_request::validate(&app.authorizer, request).await
        }
        Endpoint::PolicyValidation => crate::policy::validate(request, app.limits),
        Endpoint::PodInjection => match &app.injection {
            Some(injection) => crate::inject::review(request, injection),
            None => Verdict::Allow,
        },
    }
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configuration could not be built.
    #[error("failed to configure TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The listener failed.
    #[error("failed to serve HTTPS on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Serves `router` over TLS on `listener` until `shutdown`, then lets open requests finish
/// for at most `grace`.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    resolver: Arc<ServingResolver>,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let io = |source| ServeError::Io { addr, source };
    let config = crate::pki::server_config(resolver).map_err(ServeError::Tls)?;
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    listener.set_nonblocking(true).map_err(io)?;
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, rustls)
        .map_err(io)?
        .handle(handle.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.graceful_shutdown(Some(grace));
    });
    tracing::info!(%addr, "serving admission webhooks");
    server.serve(router.into_make_service()).await.map_err(io)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
