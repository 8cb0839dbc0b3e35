//! Watching CertificateRequests and writing decisions.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use nico_k8s_types::{
    CertificateRequest, Condition, ConditionStatus, ConditionType, IDENTITY_ANNOTATION,
    RequestState,
};
use nico_policy::{Decision, SpiffeRequest};
use nico_runtime::RoleContext;
use tracing::{debug, info, warn};

use crate::config::Settings;

/// The reason written on Approved and Denied conditions.
const REASON: &str = "nico-identity.approver";

/// Why the approver stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kube client could not be built.
    #[error(transparent)]
    Access(#[from] nico_runtime::KubeAccessError),
}

/// Why one request could not be decided this time; it is retried.
#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("failed to write the decision: {0}")]
    Write(#[source] kube::Error),
}

struct Context {
    client: kube::Client,
    settings: Settings,
}

/// Runs the approver until `shutdown` fires.
pub async fn run(settings: Settings, ctx: RoleContext) -> Result<(), RunError> {
    let client = ctx.access.client()?;
    let shutdown = ctx.shutdown.clone();
    let api: Api<CertificateRequest> = Api::all(client.clone());
    let context = Arc::new(Context { client, settings });
    info!(issuer = %context.settings.issuer, "approver started");
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, retry, context)
        .for_each(|_| futures::future::ready(()))
        .await;
    Ok(())
}

async fn reconcile(
    cr: Arc<CertificateRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if cr.state() != RequestState::Pending || cr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let annotation = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IDENTITY_ANNOTATION));
    let spiffe = annotation.is_some() || cr.spec.issuer_ref.same_issuer(&ctx.settings.issuer);
    if !spiffe {
        // TODO(#4): judge non-SPIFFE requests by CertificateRequestPolicy objects.
        return Ok(Action::await_change());
    }
    let namespace = cr.metadata.namespace.clone().unwrap_or_default();
    let name = cr.metadata.name.clone().unwrap_or_default();
    let usages = cr.spec.usages.clone().unwrap_or_default();
    let issuer = nico_policy::IssuerName::new(
        cr.spec.issuer_ref.name.clone(),
        cr.spec.issuer_ref.kind.as_deref(),
        cr.spec.issuer_ref.group.as_deref(),
    );
    let extra = cr.spec.extra.clone().unwrap_or_default();
    let request = SpiffeRequest {
        namespace: &namespace,
        request: &cr.spec.request,
        issuer: &issuer,
        duration: cr.spec.duration.as_deref(),
        is_ca: cr.spec.is_ca.unwrap_or(false),
        usages: &usages,
        username: cr.spec.username.as_deref().unwrap_or_default(),
        extra: &extra,
        pod_name_annotation: annotation_of(&cr, nico_policy::POD_NAME_ANNOTATION),
        pod_uid_annotation: annotation_of(&cr, nico_policy::POD_UID_ANNOTATION),
        identity_annotation: annotation.map(String::as_str),
    };
    let pod = match ctx.settings.policy.pod_to_look_up(&request) {
        None => None,
        Some(query) => {
            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(ctx.client.clone(), &namespace);
            pods.get_opt(query.name)
                .await
                .map_err(ReconcileError::Write)?
                .map(|pod| nico_policy::PodFacts {
                    namespace: namespace.clone(),
                    name: pod.metadata.name.unwrap_or_default(),
                    uid: pod.metadata.uid.unwrap_or_default(),
                    service_account: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_else(|| "default".to_owned()),
                    node_name: pod.spec.and_then(|s| s.node_name).unwrap_or_default(),
                })
        }
    };
    let condition = match ctx.settings.policy.evaluate(&request, pod.as_ref()) {
        Decision::Approve => {
            info!(namespace, name, "certificaterequest approved");
            Condition::new(
                ConditionType::Approved,
                ConditionStatus::True,
                REASON,
                "approved by nico-identity: the SPIFFE ID matches the requesting service account",
            )
        }
        Decision::Deny(denial) => {
            info!(namespace, name, field = %denial.field(), reason = %denial, "certificaterequest denied");
            Condition::new(
                ConditionType::Denied,
                ConditionStatus::True,
                REASON,
                denial.to_string(),
            )
        }
    };
    let mut updated = (*cr).clone();
    updated.set_condition(condition);
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // PUT with the resourceVersion we judged: if anything changed meanwhile the write fails
    // with 409 and the request is judged again from its new state.
    api.replace_status(&name, &PostParams::default(), &updated)
        .await
        .map_err(ReconcileError::Write)?;
    Ok(Action::await_change())
}

fn retry(cr: Arc<CertificateRequest>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    let conflict = matches!(error, ReconcileError::Write(kube::Error::Api(s)) if s.code == 409);
    if conflict {
        debug!(
            name = cr.metadata.name.as_deref(),
            "decision raced with another write; retrying"
        );
        Action::requeue(Duration::from_millis(200))
    } else {
        warn!(name = cr.metadata.name.as_deref(), %error, "failed to decide certificaterequest; retrying");
        Action::requeue(Duration::from_secs(5))
    }
}

fn annotation_of<'c>(cr: &'c CertificateRequest, key: &str) -> Option<&'c str> {
    cr.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}
