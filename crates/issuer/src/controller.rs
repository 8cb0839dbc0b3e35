//! Watching CertificateRequests and signing the approved ones aimed at our issuers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use nico_k8s_types::{CertificateRequest, Condition, ConditionStatus, ConditionType, RequestState};
use nico_runtime::RoleContext;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::local_ca::{CaError, LocalCa, SignRequest};

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kube client could not be built.
    #[error(transparent)]
    Access(#[from] nico_runtime::KubeAccessError),
    /// A CA could not be loaded.
    #[error("issuer {issuer}: {source}")]
    Ca {
        /// The issuer reference.
        issuer: String,
        /// The cause.
        #[source]
        source: CaError,
    },
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("failed to write status: {0}")]
    Write(#[source] kube::Error),
}

struct Backend {
    issuer_ref: nico_k8s_types::IssuerRef,
    ca: LocalCa,
}

struct Context {
    client: kube::Client,
    backends: Vec<Backend>,
}

/// Loads every CA, then signs until `shutdown` fires.
pub async fn run(settings: Settings, ctx: RoleContext) -> Result<(), RunError> {
    let client = ctx.access.client()?;
    let shutdown = ctx.shutdown.clone();
    let mut backends = Vec::with_capacity(settings.issuers.len());
    for issuer in settings.issuers {
        let ca = LocalCa::load_or_generate(&issuer.local_ca).map_err(|source| RunError::Ca {
            issuer: issuer.issuer_ref.to_string(),
            source,
        })?;
        info!(issuer = %issuer.issuer_ref, "issuer ready");
        backends.push(Backend {
            issuer_ref: issuer.issuer_ref,
            ca,
        });
    }
    let api: Api<CertificateRequest> = Api::all(client.clone());
    let context = Arc::new(Context { client, backends });
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
    let Some(backend) = ctx
        .backends
        .iter()
        .find(|b| b.issuer_ref.same_issuer(&cr.spec.issuer_ref))
    else {
        return Ok(Action::await_change());
    };
    let namespace = cr.metadata.namespace.clone().unwrap_or_default();
    let name = cr.metadata.name.clone().unwrap_or_default();
    let already_signed = cr.status.as_ref().is_some_and(|s| s.certificate.is_some());
    let mut updated = (*cr).clone();
    match cr.state() {
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
        }
        RequestState::Approved if !already_signed => {
            let duration = cr
                .spec
                .duration
                .as_deref()
                .map(nico_policy::duration::parse_go_duration)
                .transpose();
            let signed = match duration {
                Ok(duration) => backend.ca.sign(&SignRequest {
                    csr: &cr.spec.request,
                    // cert-manager's default when a request names no duration.
                    duration: duration.unwrap_or(Duration::from_secs(90 * 24 * 3600)),
                    usages: cr.spec.usages.as_deref().unwrap_or_default(),
                    is_ca: cr.spec.is_ca.unwrap_or(false),
                }),
                Err(e) => Err(crate::local_ca::SignError::Usage(format!(
                    "spec.duration: {e}"
                ))),
            };
            match signed {
                Ok(signed) => {
                    let status = updated.status.get_or_insert_with(Default::default);
                    status.certificate = Some(signed.certificate_pem.into_bytes());
                    status.ca = Some(signed.ca_pem.into_bytes());
                    updated.set_condition(Condition::new(
                        ConditionType::Ready,
                        ConditionStatus::True,
                        "Issued",
                        "Certificate fetched from issuer successfully",
                    ));
                    info!(namespace, name, serial = %signed.serial, issuer = %backend.issuer_ref, "certificate issued");
                }
                Err(error) => {
                    updated.set_condition(Condition::new(
                        ConditionType::Ready,
                        ConditionStatus::False,
                        "Failed",
                        format!("failed to sign: {error}"),
                    ));
                    set_failure_time(&mut updated);
                    warn!(namespace, name, %error, "failed to sign certificaterequest");
                }
            }
        }
        _ => return Ok(Action::await_change()),
    }
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    // The PUT carries the resourceVersion we acted on: if another writer (a second replica)
    // got there first, this fails with 409 and nothing is signed twice into the object.
    api.replace_status(&name, &PostParams::default(), &updated)
        .await
        .map_err(ReconcileError::Write)?;
    Ok(Action::await_change())
}

fn set_failure_time(cr: &mut CertificateRequest) {
    let status = cr.status.get_or_insert_with(Default::default);
    status
        .failure_time
        .get_or_insert_with(|| Time(jiff::Timestamp::now()));
}

fn retry(cr: Arc<CertificateRequest>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    let conflict = matches!(error, ReconcileError::Write(kube::Error::Api(s)) if s.code == 409);
    if conflict {
        debug!(
            name = cr.metadata.name.as_deref(),
            "status write raced with another write; retrying"
        );
        Action::requeue(Duration::from_millis(200))
    } else {
        warn!(name = cr.metadata.name.as_deref(), %error, "failed to update certificaterequest; retrying");
        Action::requeue(Duration::from_secs(5))
    }
}
