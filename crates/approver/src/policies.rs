//! CertificateRequestPolicies: a cache of every policy, each loaded (checked and compiled)
//! once per spec, and the `Ready` condition written back on each.
//!
//! The cache is filled by a watch that runs in every replica, so a follower that takes over
//! judges with warm policies. Until the watch has listed every policy once, the cache says
//! so and non-SPIFFE requests are left alone: a deny-all policy listed first must not win
//! against an allow policy listed second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use nico_k8s_types::{CertificateRequestPolicy, Condition, ConditionStatus, ConditionType};
use nico_request_policy::{Limits, LoadErrors, RequestPolicy};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A policy as loaded: usable, or the reasons it is not.
pub(crate) type Loaded = Arc<Result<RequestPolicy, LoadErrors>>;

/// The reason on a `Ready=True` condition.
const LOADED: &str = "Loaded";
/// The reason on a `Ready=False` condition.
const INVALID: &str = "Invalid";
/// The longest `Ready` message written.
const MAX_READY_MESSAGE: usize = 4096;

/// Every policy, by name.
#[derive(Clone)]
pub(crate) struct PolicyCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store<CertificateRequestPolicy>,
    synced: AtomicBool,
    limits: Limits,
    /// Loaded policies by name, with the spec they were loaded from.
    loaded: Mutex<HashMap<String, (serde_json::Value, Loaded)>>,
    changes: broadcast::Sender<()>,
}

/// The policies at one moment, sorted by name.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicyView {
    pub(crate) policies: Vec<(String, Loaded)>,
}

impl PolicyCache {
    /// Starts watching policies until `shutdown`; `on_synced` runs once every policy has
    /// been listed.
    pub(crate) fn start(
        client: kube::Client,
        limits: Limits,
        shutdown: CancellationToken,
        on_synced: impl FnOnce() + Send + 'static,
    ) -> Self {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(16);
        let cache = Self {
            inner: Arc::new(Inner {
                store,
                synced: AtomicBool::new(false),
                limits,
                loaded: Mutex::new(HashMap::new()),
                changes,
            }),
        };
        let api: Api<CertificateRequestPolicy> = Api::all(client);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .take_until(shutdown.cancelled_owned());
        let watching = cache.clone();
        let mut on_synced = Some(on_synced);
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if matches!(event, watcher::Event::InitDone)
                            && !watching.inner.synced.swap(true, Ordering::SeqCst)
                        {
                            info!(
                                policies = watching.inner.store.len(),
                                "certificaterequestpolicies listed"
                            );
                            if let Some(on_synced) = on_synced.take() {
                                on_synced();
                            }
                        }
                        // Nobody listening (no leader term running) is fine.
                        let _ = watching.inner.changes.send(());
                    }
                    Err(error) => warn!(%error, "certificaterequestpolicy watch failed; retrying"),
                }
            }
        });
        cache
    }

    /// A cache over a fixed set of policies, already synced (tests).
    #[cfg(test)]
    pub(crate) fn fixed(policies: Vec<CertificateRequestPolicy>, limits: Limits) -> Self {
        let (store, mut writer) = reflector::store();
        for policy in policies {
            writer.apply_watcher_event(&watcher::Event::Apply(policy));
        }
        let (changes, _) = broadcast::channel(1);
        Self {
            inner: Arc::new(Inner {
                store,
                synced: AtomicBool::new(true),
                limits,
                loaded: Mutex::new(HashMap::new()),
                changes,
            }),
        }
    }

    /// A cache that has not listed anything yet (tests).
    #[cfg(test)]
    pub(crate) fn unsynced(limits: Limits) -> Self {
        let cache = Self::fixed(Vec::new(), limits);
        cache.inner.synced.store(false, Ordering::SeqCst);
        cache
    }

    /// Fires whenever a policy changes.
    pub(crate) fn changes(&self) -> broadcast::Receiver<()> {
        self.inner.changes.subscribe()
    }

    /// Every policy, loaded; `None` until every policy has been listed once.
    pub(crate) fn view(&self) -> Option<PolicyView> {
        if !self.inner.synced.load(Ordering::SeqCst) {
            return None;
        }
        let mut policies: Vec<(String, Loaded)> = self
            .inner
            .store
            .state()
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), self.load(p)))
            .collect();
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        let mut loaded = self.lock();
        loaded.retain(|name, _| policies.iter().any(|(n, _)| n == name));
        Some(PolicyView { policies })
    }

    /// The policy loaded from its current spec; loaded again only when the spec changed.
    pub(crate) fn load(&self, policy: &CertificateRequestPolicy) -> Loaded {
        let name = policy.metadata.name.clone().unwrap_or_default();
        if let Some((spec, loaded)) = self.lock().get(&name)
            && *spec == policy.spec
        {
            return loaded.clone();
        }
        let loaded = Arc::new(RequestPolicy::from_json(
            &name,
            &policy.spec,
            self.inner.limits,
        ));
        if let Err(errors) = loaded.as_ref() {
            info!(policy = %name, %errors, "certificaterequestpolicy is not valid");
        }
        self.lock()
            .insert(name, (policy.spec.clone(), loaded.clone()));
        loaded
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (serde_json::Value, Loaded)>> {
        // Each critical section is one map operation: a poisoned map is still consistent.
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `Ready` condition a policy should carry.
pub(crate) fn ready_condition(policy: &CertificateRequestPolicy, loaded: &Loaded) -> Condition {
    let mut condition = match loaded.as_ref() {
        Ok(p) => Condition::new(
            ConditionType::Ready,
            ConditionStatus::True,
            LOADED,
            format!(
                "loaded with {} CEL rules (highest estimated cost {}), ready to evaluate \
                 requests",
                p.rule_count(),
                p.max_rule_cost()
            ),
        ),
        Err(errors) => {
            let mut message = errors.to_string();
            if message.len() > MAX_READY_MESSAGE {
                let mut cut = MAX_READY_MESSAGE - 3;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push_str("...");
            }
            Condition::new(
                ConditionType::Ready,
                ConditionStatus::False,
                INVALID,
                message,
            )
        }
    };
    condition.observed_generation = policy.metadata.generation;
    condition
}

/// Why a `Ready` condition could not be written; it is tried again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatusError {
    /// The status write failed.
    #[error("failed to write the ready condition: {0}")]
    Write(#[source] kube::Error),
}

struct StatusContext {
    client: kube::Client,
    cache: PolicyCache,
}

/// Writes `Ready` on every policy until `stop`; run by the leader only.
pub(crate) async fn maintain_status(
    client: kube::Client,
    cache: PolicyCache,
    stop: CancellationToken,
) {
    let api: Api<CertificateRequestPolicy> = Api::all(client.clone());
    let context = Arc::new(StatusContext { client, cache });
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile_status, retry_status, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile_status(
    policy: Arc<CertificateRequestPolicy>,
    ctx: Arc<StatusContext>,
) -> Result<Action, StatusError> {
    if policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let loaded = ctx.cache.load(&policy);
    let wanted = ready_condition(&policy, &loaded);
    let current = policy.ready();
    let same = current.is_some_and(|c| {
        c.status == wanted.status
            && c.reason == wanted.reason
            && c.message == wanted.message
            && c.observed_generation == wanted.observed_generation
    });
    if same {
        return Ok(Action::await_change());
    }
    let name = policy.metadata.name.clone().unwrap_or_default();
    let mut updated = (*policy).clone();
    updated.set_condition(wanted.clone());
    let api: Api<CertificateRequestPolicy> = Api::all(ctx.client.clone());
    // Carries the resourceVersion read: a newer spec makes this fail and load again.
    api.replace_status(&name, &PostParams::default(), &updated)
        .await
        .map_err(StatusError::Write)?;
    info!(
        policy = %name,
        ready = %wanted.status,
        "certificaterequestpolicy status written"
    );
    Ok(Action::await_change())
}

fn retry_status(
    policy: Arc<CertificateRequestPolicy>,
    error: &StatusError,
    _ctx: Arc<StatusContext>,
) -> Action {
    let StatusError::Write(source) = error;
    let conflict = matches!(source, kube::Error::Api(s) if s.code == 409);
    let name = policy.metadata.name.as_deref();
    if conflict {
        debug!(
            policy = name,
            "policy status raced with another write; retrying"
        );
        Action::requeue(Duration::from_millis(200))
    } else {
        warn!(policy = name, %error, "failed to write policy status; retrying");
        Action::requeue(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> CertificateRequestPolicy {
        let mut p = CertificateRequestPolicy::new(name, spec);
        p.metadata.generation = Some(2);
        p
    }

    #[test]
    fn the_view_waits_for_the_first_listing_and_sorts_by_name() {
        assert!(PolicyCache::unsynced(Limits::default()).view().is_none());
        let cache = PolicyCache::fixed(
            vec![
                policy("b", json!({"selector": {"issuerRef": {}}})),
                policy("a", json!({"selector": {}})),
            ],
            Limits::default(),
        );
        let view = cache.view().unwrap();
        let names: Vec<&str> = view.policies.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(view.policies[0].1.is_err() && view.policies[1].1.is_ok());
    }

    #[test]
    fn a_policy_is_loaded_again_only_when_its_spec_changes() {
        let cache = PolicyCache::fixed(Vec::new(), Limits::default());
        let first = policy("p", json!({"selector": {"issuerRef": {}}}));
        let once = cache.load(&first);
        let mut status_only = first.clone();
        status_only.metadata.resource_version = Some("99".into());
        assert!(Arc::ptr_eq(&once, &cache.load(&status_only)));
        let changed = policy("p", json!({"selector": {"issuerRef": {"name": "x"}}}));
        assert!(!Arc::ptr_eq(&once, &cache.load(&changed)));
    }

    #[test]
    fn ready_says_what_loaded_or_what_is_wrong() {
        let good = policy(
            "p",
            json!({"selector": {"issuerRef": {}},
            "allowed": {"dnsNames": {"validations": [{"rule": "self.endsWith('.svc')"}]}}}),
        );
        let cache = PolicyCache::fixed(Vec::new(), Limits::default());
        let ready = ready_condition(&good, &cache.load(&good));
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("Loaded"));
        assert_eq!(ready.observed_generation, Some(2));
        assert!(
            ready
                .message
                .unwrap()
                .starts_with("loaded with 1 CEL rules")
        );

        let bad = policy(
            "q",
            json!({"selector": {"issuerRef": {}}, "plugins": {"rego": {}}}),
        );
        let not_ready = ready_condition(&bad, &cache.load(&bad));
        assert_eq!(not_ready.status, "False");
        assert_eq!(not_ready.reason.as_deref(), Some("Invalid"));
        assert!(
            not_ready
                .message
                .unwrap()
                .contains("spec.plugins.rego: plugins are not supported")
        );
    }
}
