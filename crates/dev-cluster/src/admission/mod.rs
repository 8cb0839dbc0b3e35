//! Admission webhooks, called the way kube-apiserver calls them.
//!
//! A write is offered first to every matching mutating webhook, in the order of their
//! configurations' names and then of the webhooks in each, each seeing the object as the
//! previous one left it; then to every matching validating webhook, once the object has
//! passed validation. The built-in mutations (defaulting, the requester-identity stamp)
//! come before the webhooks, as built-in admission plugins run before webhook admission.
//! Webhooks are never called for the webhook configurations themselves, so a broken
//! webhook can always be removed.
//!
//! A webhook that cannot be called, times out or answers nonsense fails the request with
//! 500 when its `failurePolicy` is `Fail`, and is skipped (with a warning in the log) when
//! it is `Ignore`. A denial is answered with the webhook's own status (400 by default).
//! Dry runs are sent too, marked `dryRun: true`: v1 configurations can only declare
//! `sideEffects` of `None` or `NoneOnDryRun`, so every stored webhook accepts them.

mod client;
mod review;
mod rules;

pub(crate) use client::Connections;
pub(crate) use rules::Operation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tracing::Instrument;

use crate::auth::UserInfo;
use crate::patch;
use crate::registry::{Hooks, ResourceDef};
use crate::server::{AppState, Ctx, Sub, Target};
use crate::status::ApiError;
use crate::store::{Inner, key};
use crate::util::new_uid;

use self::review::{ReviewRequest, Verdict};
use self::rules::{FailurePolicy, Subject};

pub(crate) use self::rules::Webhook;

/// The two kinds of webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Mutating,
    Validating,
}

impl Phase {
    fn storage(self) -> &'static str {
        match self {
            Phase::Mutating => "mutatingwebhookconfigurations",
            Phase::Validating => "validatingwebhookconfigurations",
        }
    }
}

/// The webhooks of one phase's configurations, in calling order.
type Webhooks = Arc<Vec<Arc<Webhook>>>;

/// The webhooks of the stored configurations, read once per change of their bucket rather
/// than on every write.
#[derive(Debug, Default)]
pub(crate) struct WebhookCache {
    /// Per phase: the bucket's revision when read, and its webhooks.
    read: Mutex<HashMap<Phase, (u64, Webhooks)>>,
}

impl WebhookCache {
    /// The webhooks of `phase` as the configurations in `st` say now.
    fn webhooks(&self, st: &Inner, phase: Phase) -> Webhooks {
        let revision = st.bucket_revision(phase.storage());
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, webhooks)) = read.get(&phase)
            && *at == revision
        {
            return Arc::clone(webhooks);
        }
        let webhooks: Webhooks = Arc::new(
            st.all(phase.storage())
                .flat_map(|(_, config)| {
                    config
                        .get("webhooks")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .filter_map(|w| Webhook::from_json(w).map(Arc::new))
                .collect(),
        );
        read.insert(phase, (revision, Arc::clone(&webhooks)));
        webhooks
    }
}

/// One write as admission sees it.
#[derive(Debug, Clone)]
pub(crate) struct Admission<'a> {
    def: &'static ResourceDef,
    subresource: &'static str,
    operation: Operation,
    namespace: &'a str,
    name: &'a str,
    user: &'a UserInfo,
    dry_run: bool,
    field_manager: Option<&'a str>,
}

impl<'a> Admission<'a> {
    /// The admission of `operation` on the object `name` of the request's target.
    pub(crate) fn new(
        ctx: &'a Ctx<'a>,
        t: &'a Target,
        operation: Operation,
        name: &'a str,
    ) -> Admission<'a> {
        Admission {
            def: t.def,
            subresource: match t.sub {
                Some(Sub::Status) => "status",
                Some(Sub::Token) => "token",
                None => "",
            },
            operation,
            namespace: if t.def.namespaced {
                t.namespace.as_deref().unwrap_or("")
            } else {
                ""
            },
            name,
            user: ctx.user,
            dry_run: ctx.dry_run(),
            field_manager: ctx.param("fieldManager"),
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            operation: self.operation,
            group: self.def.group,
            version: self.def.version,
            resource: self.def.plural,
            subresource: self.subresource,
            namespace: self.namespace,
            is_namespace: self.def.hooks == Hooks::Namespace,
        }
    }

    fn review(&self) -> ReviewRequest<'_> {
        ReviewRequest {
            def: self.def,
            subresource: self.subresource,
            operation: self.operation,
            namespace: self.namespace,
            name: self.name,
            user: self.user,
            dry_run: self.dry_run,
            field_manager: self.field_manager,
        }
    }

    /// The webhooks of `phase` that this write goes to, in calling order.
    fn webhooks(
        &self,
        state: &AppState,
        phase: Phase,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Vec<Arc<Webhook>> {
        if self.def.group == "admissionregistration.k8s.io" {
            return Vec::new();
        }
        let st = state.store.lock();
        let webhooks = state.webhooks.webhooks(&st, phase);
        let subject = self.subject();
        if !webhooks.iter().any(|w| w.rules_match(&subject)) {
            return Vec::new();
        }
        let stored_namespace = if self.def.hooks == Hooks::Namespace || self.namespace.is_empty() {
            None
        } else {
            st.get("namespaces", &key(None, self.namespace)).cloned()
        };
        let namespace = if self.def.hooks == Hooks::Namespace {
            object.or(old)
        } else {
            stored_namespace.as_deref().map(|n| n.value())
        };
        webhooks
            .iter()
            .filter(|w| w.applies(&subject, namespace, object, old))
            .cloned()
            .collect()
    }

    /// Calls one webhook; `None` when the call failed and the failure policy ignores it.
    async fn call(
        &self,
        state: &AppState,
        webhook: &Webhook,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Option<Verdict>, ApiError> {
        let uid = new_uid();
        let body =
            serde_json::to_vec(&self.review().to_review(&uid, object, old)).map_err(|e| {
                ApiError::internal(format!("failed to encode the AdmissionReview: {e}"))
            })?;
        let target = client::target(
            &webhook.endpoint,
            webhook.timeout,
            &state
                .services
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let outcome = async {
            let target = target?;
            let answer = client::post(
                &state.webhook_connections,
                &target,
                &webhook.ca_bundle,
                body,
                webhook.timeout,
            )
            .await?;
            review::read_response(&uid, &answer).map_err(client::CallError::Invalid)
        }
        .instrument(tracing::debug_span!("admission", webhook = %webhook.name, %uid))
        .await;
        match (outcome, webhook.failure_policy) {
            (Ok(verdict), _) => Ok(Some(verdict)),
            (Err(error), FailurePolicy::Ignore) => {
                tracing::warn!(
                    webhook = %webhook.name,
                    %error,
                    "webhook call failed, ignored by its failurePolicy"
                );
                Ok(None)
            }
            (Err(error), FailurePolicy::Fail) => Err(ApiError::internal_cause(format!(
                "failed calling webhook {:?}: {error}",
                webhook.name
            ))),
        }
    }

    /// The mutating webhooks this write goes to, in calling order.
    pub(crate) fn mutating_webhooks(
        &self,
        state: &AppState,
        object: &Value,
        old: Option<&Value>,
    ) -> Vec<Arc<Webhook>> {
        self.webhooks(state, Phase::Mutating, Some(object), old)
    }

    /// Offers the object to every matching mutating webhook and returns it as they left it.
    /// On DELETE (no object) their patches have nothing to apply to and are ignored.
    pub(crate) async fn mutate(
        &self,
        state: &AppState,
        object: Option<Value>,
        old: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let webhooks = self.webhooks(state, Phase::Mutating, object.as_ref(), old);
        self.mutate_with(state, webhooks, object, old).await
    }

    /// [`Admission::mutate`] with the webhooks already chosen.
    pub(crate) async fn mutate_with(
        &self,
        state: &AppState,
        webhooks: Vec<Arc<Webhook>>,
        object: Option<Value>,
        old: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let mut object = object;
        for webhook in webhooks {
            let verdict = self.call(state, &webhook, object.as_ref(), old).await?;
            match verdict {
                None | Some(Verdict::Allowed { patch: None }) => {}
                Some(Verdict::Denied(status)) => return Err(denied(&webhook.name, &status)),
                Some(Verdict::Allowed { patch: Some(ops) }) => {
                    if let Some(obj) = object.as_mut() {
                        patch::json(obj, &ops).map_err(|e| {
                            ApiError::internal(format!(
                                "failed to apply the JSON patch of webhook {:?}: {e}",
                                webhook.name
                            ))
                        })?;
                    }
                }
            }
        }
        Ok(object)
    }

    /// Offers the object to every matching validating webhook; the first denial wins.
    pub(crate) async fn validate(
        &self,
        state: &AppState,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        for webhook in self.webhooks(state, Phase::Validating, object, old) {
            if let Some(Verdict::Denied(status)) = self.call(state, &webhook, object, old).await? {
                return Err(denied(&webhook.name, &status));
            }
        }
        Ok(())
    }
}

fn denied(webhook: &str, status: &Value) -> ApiError {
    tracing::debug!(webhook, "admission webhook denied the request");
    let (code, reason, message, details) = review::denial(webhook, status);
    ApiError::custom(code, reason, message, details)
}
