//! Watching CertificateRequests and signing the approved ones aimed at our issuers.
//!
//! Approved and unsigned: sign, check the result, write `status.certificate`, `status.ca` and
//! `Ready=True`. Denied: `Ready=False` reason `Denied`. Issued or failed: untouched. A
//! backend outage is retried with jittered backoff and written nowhere; a refusal or a
//! result that fails its checks is a `Failed` condition with the reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource as _;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use nico_k8s_types::{
    CertificateRequest, Condition, ConditionStatus, ConditionType, IssuerRef, RequestState,
};
use nico_runtime::{LeaseConfig, RoleContext};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{Backend, BackendError, SignFailure};
use crate::config::Settings;
use crate::local_ca::SignRequest;
use crate::metrics::{Metrics, Outcome};
use crate::result::{self, Approved};

/// Requests reconciled at once.
const RECONCILE_CONCURRENCY: u16 = 32;

/// cert-manager's lifetime when a request names none.
const DEFAULT_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kube client could not be built.
    #[error(transparent)]
    Access(#[from] nico_runtime::KubeAccessError),
    /// A backend could not be set up.
    #[error("failed to set up issuer {issuer}: {source}")]
    Backend {
        /// The issuer reference.
        issuer: String,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// Leader election could not start.
    #[error(transparent)]
    Leader(#[from] nico_runtime::LeaderError),
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("failed to write status: {0}")]
    Write(#[source] kube::Error),
    #[error("failed to read the certificaterequest: {0}")]
    Read(#[source] kube::Error),
    #[error("the backend is unavailable: {0}")]
    Backend(String),
}

struct Issuer {
    issuer_ref: IssuerRef,
    name: String,
    backend: Arc<Backend>,
}

struct Context {
    client: kube::Client,
    issuers: Vec<Issuer>,
    metrics: Metrics,
    recorder: Recorder,
    min_lifetime: Duration,
    /// Failed attempts per request uid, for backoff and for re-reading before a retry.
    attempts: Mutex<HashMap<String, u32>>,
    /// Bumped when a backend serves again after an outage.
    recovered: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Context {
    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // Each critical section is one map operation: a poisoned map is still consistent.
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Loads every backend, then signs until `shutdown` fires (while holding the Lease, when
/// leader election is on).
pub async fn run(settings: Settings, ctx: RoleContext) -> Result<(), RunError> {
    let client = ctx.access.client()?;
    let metrics = Metrics::default();
    ctx.telemetry
        .register("issuer", |registry| metrics.register(registry));
    let readiness = ctx.telemetry.readiness();
    let recovered = Arc::new(tokio::sync::watch::Sender::new(0u64));
    let mut issuers = Vec::with_capacity(settings.issuers.len());
    for issuer in settings.issuers {
        let name = issuer.issuer_ref.to_string();
        let backend = Backend::load(&name, &issuer.backend, &client, &metrics)
            .await
            .map_err(|source| RunError::Backend {
                issuer: name.clone(),
                source,
            })?;
        let backend = Arc::new(backend);
        backend.maintain(
            readiness.register(format!("issuer {name}")),
            recovered.clone(),
            ctx.shutdown.clone(),
        );
        info!(issuer = %name, "issuer ready");
        issuers.push(Issuer {
            issuer_ref: issuer.issuer_ref,
            name,
            backend,
        });
    }
    let reporter = Reporter {
        controller: "nico-identity-issuer".into(),
        instance: Some(ctx.identity.clone()),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        issuers,
        metrics,
        min_lifetime: settings.min_lifetime,
        attempts: Mutex::new(HashMap::new()),
        recovered,
    });
    match settings.lease_name {
        Some(lease) => {
            let lease = LeaseConfig::new(lease, ctx.namespace.clone(), ctx.identity.clone());
            nico_runtime::run_as_leader(client, lease, ctx.shutdown.clone(), move |token| {
                controller(context.clone(), token)
            })
            .await?;
        }
        None => controller(context, ctx.shutdown.clone()).await,
    }
    Ok(())
}

async fn controller(context: Arc<Context>, stop: CancellationToken) {
    let api: Api<CertificateRequest> = Api::all(context.client.clone());
    // Bounded concurrency: a backlog of thousands of requests would otherwise open as many
    // API connections (each a TLS handshake) at once, and gain nothing from it.
    // A backend back from an outage retries every waiting request now: their backoff may
    // have grown to 30 s, which would add that much to every issuance the outage held up.
    let mut recovered = context.recovered.subscribe();
    recovered.mark_unchanged();
    let retry_now = futures::stream::unfold(recovered, |mut recovered| async move {
        recovered.changed().await.ok()?;
        Some(((), recovered))
    });
    Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .reconcile_all_on(retry_now)
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, retry, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(
    cr: Arc<CertificateRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(issuer) = ctx
        .issuers
        .iter()
        .find(|i| i.issuer_ref.same_issuer(&cr.spec.issuer_ref))
    else {
        return Ok(Action::await_change());
    };
    if cr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cr.metadata.namespace.clone().unwrap_or_default();
    let name = cr.metadata.name.clone().unwrap_or_default();
    let uid = cr.metadata.uid.clone().unwrap_or_default();
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    let signed =
        |cr: &CertificateRequest| cr.status.as_ref().is_some_and(|s| s.certificate.is_some());
    let mut cr = cr;
    if cr.state() == RequestState::Approved && !signed(&cr) && ctx.attempts().contains_key(&uid) {
        // A retry may run on a cached copy older than a write that already landed: read the
        // request itself before signing it again.
        match api.get_opt(&name).await.map_err(ReconcileError::Read)? {
            Some(fresh) => cr = Arc::new(fresh),
            None => {
                ctx.attempts().remove(&uid);
                return Ok(Action::await_change());
            }
        }
    }
    let mut updated = (*cr).clone();
    let event = match cr.state() {
        RequestState::Denied(_) => {
            let marked = cr.condition(ConditionType::Ready).is_some_and(|c| {
                c.status == ConditionStatus::False.as_str() && c.reason.as_deref() == Some("Denied")
            });
            if marked {
                return Ok(Action::await_change());
            }
            updated.set_condition(Condition::new(
                ConditionType::Ready,
                ConditionStatus::False,
                "Denied",
                "The CertificateRequest was denied by an approval controller",
            ));
            set_failure_time(&mut updated);
            info!(
                namespace,
                name, "denied certificaterequest marked as failed"
            );
            Some((
                None,
                EventType::Warning,
                "Denied",
                "The request was denied by an approver: not signed".to_owned(),
            ))
        }
        RequestState::Approved if !signed(&cr) => {
            let outcome = sign(&cr, issuer, &ctx).await;
            match outcome {
                Ok(checked) => {
                    let status = updated.status.get_or_insert_with(Default::default);
                    status.certificate = Some(checked.certificate_pem.into_bytes());
                    status.ca = Some(checked.ca_pem.into_bytes());
                    updated.set_condition(Condition::new(
                        ConditionType::Ready,
                        ConditionStatus::True,
                        "Issued",
                        "Certificate fetched from issuer successfully",
                    ));
                    info!(
                        namespace,
                        name,
                        serial = %checked.serial,
                        not_after = %checked.not_after,
                        issuer = %issuer.name,
                        "certificate issued"
                    );
                    Some((
                        Some(Outcome::Issued),
                        EventType::Normal,
                        "Issued",
                        format!(
                            "Certificate issued by {} (serial {})",
                            issuer.name, checked.serial
                        ),
                    ))
                }
                Err(SignFailure::Permanent(reason)) => {
                    let message = format!("failed to sign: {reason}");
                    updated.set_condition(Condition::new(
                        ConditionType::Ready,
                        ConditionStatus::False,
                        "Failed",
                        message.clone(),
                    ));
                    set_failure_time(&mut updated);
                    warn!(
                        namespace,
                        name,
                        issuer = %issuer.name,
                        reason,
                        "certificaterequest failed"
                    );
                    Some((Some(Outcome::Failed), EventType::Warning, "Failed", message))
                }
                Err(SignFailure::Transient(reason)) => {
                    ctx.metrics.signature(&issuer.name, Outcome::Retried);
                    return Err(ReconcileError::Backend(reason));
                }
            }
        }
        _ => {
            ctx.attempts().remove(&uid);
            return Ok(Action::await_change());
        }
    };
    // The PUT carries the resourceVersion we acted on: if another writer (a second replica)
    // got there first, this fails with 409 and nothing is signed twice into the object.
    let written = api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
        .map_err(ReconcileError::Write)?;
    ctx.attempts().remove(&uid);
    if let Some((outcome, type_, reason, note)) = event {
        if let Some(outcome) = outcome {
            ctx.metrics.signature(&issuer.name, outcome);
        }
        let recorder = ctx.recorder.clone();
        let reference = written.object_ref(&());
        // Events are a courtesy: publishing them must not hold up the next signature.
        tokio::spawn(async move {
            let event = Event {
                type_,
                reason: reason.to_owned(),
                note: Some(note),
                action: "Sign".to_owned(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &reference).await {
                debug!(%error, "failed to publish an event");
            }
        });
    }
    Ok(Action::await_change())
}

/// Signs the request with the issuer's backend and checks the answer.
async fn sign(
    cr: &CertificateRequest,
    issuer: &Issuer,
    ctx: &Context,
) -> Result<result::Checked, SignFailure> {
    let duration = match cr.spec.duration.as_deref() {
        None => DEFAULT_DURATION,
        Some(text) => nico_policy::duration::parse_go_duration(text)
            .map_err(|e| SignFailure::Permanent(format!("spec.duration: {e}")))?,
    };
    let csr = nico_csr::parse_csr(&cr.spec.request)
        .map_err(|e| SignFailure::Permanent(format!("spec.request: {e}")))?;
    let request = SignRequest {
        csr_pem: &cr.spec.request,
        csr: &csr,
        duration,
        usages: cr.spec.usages.as_deref().unwrap_or_default(),
        is_ca: cr.spec.is_ca.unwrap_or(false),
    };
    let started = Instant::now();
    let issued = issuer.backend.sign(&request).await?;
    ctx.metrics
        .signing_took(&issuer.name, started.elapsed().as_secs_f64());
    let approved = Approved {
        csr: &csr,
        duration,
        min_lifetime: ctx.min_lifetime,
    };
    result::check(issued, &approved, time::OffsetDateTime::now_utc())
        .map_err(|e| SignFailure::Permanent(e.to_string()))
}

fn set_failure_time(cr: &mut CertificateRequest) {
    let status = cr.status.get_or_insert_with(Default::default);
    status
        .failure_time
        .get_or_insert_with(|| Time(jiff::Timestamp::now()));
}

/// Exponential backoff from 0.5 s to 30 s with jitter over the upper half, so requests
/// that failed together do not all retry together.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(6));
    let capped = base.min(Duration::from_secs(30));
    let half = capped / 2;
    half + half.mul_f64(fastrand::f64())
}

fn retry(cr: Arc<CertificateRequest>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = cr.metadata.name.as_deref();
    let uid = cr.metadata.uid.clone().unwrap_or_default();
    let attempt = {
        let mut attempts = ctx.attempts();
        let count = attempts.entry(uid).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    match error {
        ReconcileError::Write(kube::Error::Api(status)) if status.code == 409 => {
            debug!(name, "status write raced with another write; retrying");
            Action::requeue(Duration::from_millis(200))
        }
        ReconcileError::Backend(reason) => {
            let delay = backoff(attempt - 1);
            warn!(
                name,
                attempt,
                delay_ms = delay.as_millis() as u64,
                reason,
                "backend unavailable; retrying"
            );
            Action::requeue(delay)
        }
        other => {
            warn!(name, attempt, error = %other, "failed to update certificaterequest; retrying");
            Action::requeue(backoff(attempt - 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_jittered_cap() {
        for attempt in 0..20 {
            let delay = backoff(attempt);
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << attempt.min(6))
                .min(Duration::from_secs(30));
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
        assert!(backoff(10) <= Duration::from_secs(30));
        assert!(backoff(10) >= Duration::from_secs(15));
    }
}
