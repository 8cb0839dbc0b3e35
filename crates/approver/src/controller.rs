//! Running the approver: caches, leader election, the controller over CertificateRequests,
//! and writing each verdict once with an Event and metrics.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use kube::Resource as _;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use nico_k8s_types::{CertificateRequest, Condition, ConditionStatus, ConditionType};
use nico_runtime::{LeaseConfig, ReadyFlag, RoleContext};
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::cluster::{ClusterError, KubeCluster};
use crate::config::{NonSpiffeMode, Settings};
use crate::judge::{Judgement, Leave, judge};
use crate::metrics::{LeftReason, Metrics, Outcome};
use crate::policies::{self, PolicyCache};
use crate::route::decided;

/// The reason written on Approved and Denied conditions.
const REASON: &str = "nico-identity.approver";

/// Requests judged at once. Each verdict makes a few API calls; without a bound, a burst of
/// requests opens as many connections (and TLS handshakes) as there are requests.
const CONCURRENCY: u16 = 16;

/// The longest Event note the API server accepts.
const MAX_NOTE: usize = 1024;

/// Why the approver stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kube client could not be built.
    #[error(transparent)]
    Access(#[from] nico_runtime::KubeAccessError),
    /// Leader election could not start.
    #[error(transparent)]
    Leader(#[from] nico_runtime::LeaderError),
}

/// Why one request could not be decided this time; it is retried.
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    /// A read the verdict needs failed.
    #[error(transparent)]
    Read(#[from] ClusterError),
    /// The verdict could not be written (409: the request changed meanwhile).
    #[error("failed to write the verdict: {0}")]
    Write(#[source] kube::Error),
}

/// `/readyz` for the approver: the policies are listed and, while this replica leads, the
/// requests too.
#[derive(Debug)]
struct CacheReadiness {
    flag: ReadyFlag,
    /// Whether the policies and the requests are synced. One lock, so that two updates
    /// cannot publish their combinations in the wrong order.
    synced: Mutex<Synced>,
}

#[derive(Debug)]
struct Synced {
    policies: bool,
    requests: bool,
}

/// Which cache a readiness change is about.
#[derive(Clone, Copy, Debug)]
enum Cache {
    Policies,
    Requests,
}

impl CacheReadiness {
    fn set(&self, cache: Cache, ready: bool) {
        // A poisoned lock still holds two booleans that are each valid.
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache {
            Cache::Policies => synced.policies = ready,
            Cache::Requests => synced.requests = ready,
        }
        self.flag.set(synced.policies && synced.requests);
    }
}

struct Context {
    client: kube::Client,
    cluster: KubeCluster,
    settings: Settings,
    policies: Option<PolicyCache>,
    metrics: Metrics,
    recorder: Recorder,
    readiness: Arc<CacheReadiness>,
}

/// Runs the approver until `ctx.shutdown` fires: with leader election unless the settings
/// turn it off, in which case several replicas all act and only the resourceVersion on each
/// write keeps their verdicts from conflicting.
pub async fn run(settings: Settings, ctx: RoleContext) -> Result<(), RunError> {
    let client = ctx.access.client()?;
    let metrics = Metrics::default();
    ctx.telemetry
        .register("approver", |registry| metrics.register(registry));
    let readiness = Arc::new(CacheReadiness {
        flag: ctx.telemetry.readiness().register("approver caches"),
        synced: Mutex::new(Synced {
            policies: false,
            requests: true,
        }),
    });
    let policies = match settings.non_spiffe {
        NonSpiffeMode::Policy => {
            let synced = readiness.clone();
            Some(PolicyCache::start(
                client.clone(),
                settings.limits,
                ctx.shutdown.clone(),
                move || synced.set(Cache::Policies, true),
            ))
        }
        NonSpiffeMode::Ignore | NonSpiffeMode::Approve => {
            readiness.set(Cache::Policies, true);
            None
        }
    };
    let reporter = Reporter {
        controller: "nico-identity-approver".into(),
        instance: Some(ctx.identity.clone()),
    };
    info!(
        issuer = %settings.issuer(),
        non_spiffe = ?settings.non_spiffe,
        leader_election = settings.lease_name.is_some(),
        "approver started"
    );
    let lease = settings.lease_name.clone();
    let context = Arc::new(Context {
        cluster: KubeCluster {
            client: client.clone(),
        },
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        settings,
        policies,
        metrics,
        readiness,
    });
    match lease {
        Some(lease) => {
            let lease = LeaseConfig::new(lease, ctx.namespace.clone(), ctx.identity.clone());
            nico_runtime::run_as_leader(client, lease, ctx.shutdown.clone(), move |token| {
                lead(context.clone(), token)
            })
            .await?;
        }
        None => lead(context, ctx.shutdown.clone()).await,
    }
    Ok(())
}

/// One term of acting: the controller over requests and, for policies, the `Ready` writer.
async fn lead(context: Arc<Context>, stop: CancellationToken) {
    let readiness = context.readiness.clone();
    readiness.set(Cache::Requests, false);
    let api: Api<CertificateRequest> = Api::all(context.client.clone());
    let mut controller = Controller::new(api, watcher::Config::default());
    let store = controller.store();
    let synced = {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if listed(&store).await {
                readiness.set(Cache::Requests, true);
            }
        })
    };
    let mut status = None;
    if let Some(cache) = &context.policies {
        // A new or changed policy may decide requests that were left alone: judge again.
        let changes = BroadcastStream::new(cache.changes()).map(|_| ());
        controller = controller.reconcile_all_on(changes);
        status = Some(tokio::spawn(policies::maintain_status(
            context.client.clone(),
            cache.clone(),
            stop.clone(),
        )));
    }
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, retry, context)
        .for_each(|_| futures::future::ready(()))
        .await;
    synced.abort();
    if let Some(status) = status {
        let _ = status.await;
    }
    // A follower needs no cache of requests to be ready to take over.
    readiness.set(Cache::Requests, true);
}

async fn reconcile(
    cr: Arc<CertificateRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if decided(&cr) || cr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cr.metadata.namespace.clone().unwrap_or_default();
    let name = cr.metadata.name.clone().unwrap_or_default();
    let span = info_span!("certificaterequest", %namespace, %name);
    async move {
        let started = Instant::now();
        let view = ctx.policies.as_ref().and_then(PolicyCache::view);
        let judgement = judge(&cr, &ctx.settings, view.as_ref(), &ctx.cluster).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let (outcome, rules, message) = match judgement {
            Judgement::Leave(why) => return Ok(leave(&ctx.metrics, why)),
            Judgement::Approve { rules, message } => (Outcome::Approved, rules, message),
            Judgement::Deny { rules, message } => (Outcome::Denied, rules, message),
        };
        ctx.metrics.evaluated(rules, elapsed);
        let (type_, event_type, reason, action) = match outcome {
            Outcome::Approved => (
                ConditionType::Approved,
                EventType::Normal,
                "Approved",
                "Approve",
            ),
            Outcome::Denied => (ConditionType::Denied, EventType::Warning, "Denied", "Deny"),
        };
        let mut updated = (*cr).clone();
        updated.set_condition(Condition::new(
            type_,
            ConditionStatus::True,
            REASON,
            message.clone(),
        ));
        let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &namespace);
        // PUT with the resourceVersion judged: if anything changed meanwhile (another
        // replica's verdict included) the write fails with 409 and the request is judged
        // again from its new state, where the verdict already written ends it.
        api.replace_status(&name, &PostParams::default(), &updated)
            .await
            .map_err(ReconcileError::Write)?;
        match outcome {
            Outcome::Approved => info!(?rules, "certificaterequest approved"),
            Outcome::Denied => info!(?rules, reason = %message, "certificaterequest denied"),
        }
        ctx.metrics.decided(&namespace, outcome);
        let event = Event {
            type_: event_type,
            reason: reason.to_owned(),
            note: Some(bounded(message, MAX_NOTE)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &cr.object_ref(&())).await {
            warn!(%error, "failed to publish the verdict event");
        }
        Ok(Action::await_change())
    }
    .instrument(span)
    .await
}

/// Waits until `store` has been filled by its first listing; `false` if its writer is gone.
///
/// kube-runtime wakes only the last task to wait on a store (the readiness signal is a
/// oneshot channel, which keeps one waker), and the controller itself waits on its store:
/// so this looks instead of waiting.
async fn listed(store: &Store<CertificateRequest>) -> bool {
    loop {
        match store.wait_until_ready().now_or_never() {
            Some(result) => return result.is_ok(),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Counts and logs a request left without a verdict, and says when to look again.
fn leave(metrics: &Metrics, why: Leave) -> Action {
    match why {
        Leave::NotOurs => {
            metrics.left(LeftReason::NotOurs);
            Action::await_change()
        }
        Leave::PoliciesLoading => {
            metrics.left(LeftReason::PoliciesLoading);
            debug!("certificaterequestpolicies not listed yet; judging later");
            Action::requeue(Duration::from_secs(1))
        }
        Leave::NoPolicy => {
            metrics.left(LeftReason::NoPolicy);
            debug!("no certificaterequestpolicy applies; left undecided");
            Action::await_change()
        }
        Leave::PolicyNotReady(policy) => {
            metrics.left(LeftReason::PolicyNotReady);
            info!(%policy, "only a policy that does not load could approve; left undecided");
            Action::await_change()
        }
    }
}

fn retry(cr: Arc<CertificateRequest>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    let conflict = matches!(error, ReconcileError::Write(kube::Error::Api(s)) if s.code == 409);
    let namespace = cr.metadata.namespace.as_deref();
    let name = cr.metadata.name.as_deref();
    if conflict {
        debug!(
            namespace,
            name, "verdict raced with another write; judging again"
        );
        Action::requeue(Duration::from_millis(200))
    } else {
        warn!(namespace, name, %error, "failed to decide certificaterequest; retrying");
        Action::requeue(Duration::from_secs(5))
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_policies_listed_and_while_leading_requests_listed() {
        let readiness = nico_runtime::Readiness::default();
        let caches = CacheReadiness {
            flag: readiness.register("approver caches"),
            synced: Mutex::new(Synced {
                policies: false,
                requests: true,
            }),
        };
        let ready = || readiness.pending().is_empty();
        assert!(!ready(), "not ready before anything is listed");
        caches.set(Cache::Policies, true);
        assert!(ready(), "a follower is ready once the policies are listed");
        caches.set(Cache::Requests, false);
        assert!(!ready(), "a new leader waits for its requests");
        caches.set(Cache::Requests, true);
        assert!(ready());
    }

    #[test]
    fn notes_are_bounded_on_character_boundaries() {
        assert_eq!(bounded("short".into(), 10), "short");
        let long = bounded("é".repeat(600), MAX_NOTE);
        assert!(long.len() <= MAX_NOTE && long.ends_with("..."));
    }
}
