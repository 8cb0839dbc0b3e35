//! The verdict on one request: which rules apply, what they need from the cluster, and what
//! they say. Reads go through [`Cluster`]; nothing is written here.

use std::collections::BTreeMap;

use nico_csr::{CsrError, ParsedCsr, San};
use nico_k8s_types::CertificateRequest;
use nico_policy::{Decision, SpiffeRequest};
use nico_request_policy::{ClusterFacts, PolicyRequest, Verdict};
use tracing::debug;

use crate::cluster::{Cluster, ClusterError, Requester};
use crate::config::{NonSpiffeMode, Settings};
use crate::policies::PolicyView;
use crate::route::{Route, issuer_of, route, strip_spiffe_scheme};

/// Which rules decided, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Rules {
    /// The SPIFFE rules.
    Spiffe,
    /// CertificateRequestPolicies.
    Policy,
    /// The non-SPIFFE auto-approval switch.
    Auto,
}

/// Why a request is left without a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Leave {
    /// Not a SPIFFE request, and the switch says to leave those alone.
    NotOurs,
    /// Policies have not all been listed yet.
    PoliciesLoading,
    /// No policy selects the request and binds its requester.
    NoPolicy,
    /// Only a policy that does not load could still approve it.
    PolicyNotReady(String),
}

/// The outcome of judging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// Write `Approved`.
    Approve { rules: Rules, message: String },
    /// Write `Denied`.
    Deny { rules: Rules, message: String },
    /// Write nothing.
    Leave(Leave),
}

/// Judges `cr`. `policies` is `None` until every policy has been listed.
pub(crate) async fn judge<C: Cluster>(
    cr: &CertificateRequest,
    settings: &Settings,
    policies: Option<&PolicyView>,
    cluster: &C,
) -> Result<Judgement, ClusterError> {
    match route(cr, &settings.policy) {
        Route::Spiffe => judge_spiffe(cr, settings, cluster).await,
        Route::Other(csr) => match settings.non_spiffe {
            NonSpiffeMode::Ignore => Ok(Judgement::Leave(Leave::NotOurs)),
            NonSpiffeMode::Approve => Ok(judge_auto(*csr)),
            NonSpiffeMode::Policy => match policies {
                None => Ok(Judgement::Leave(Leave::PoliciesLoading)),
                Some(view) => judge_policies(cr, *csr, view, cluster).await,
            },
        },
    }
}

async fn judge_spiffe<C: Cluster>(
    cr: &CertificateRequest,
    settings: &Settings,
    cluster: &C,
) -> Result<Judgement, ClusterError> {
    let namespace = cr.metadata.namespace.as_deref().unwrap_or_default();
    let annotation = |key: &str| {
        cr.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    let issuer = issuer_of(cr);
    let usages = cr.spec.usages.as_deref().unwrap_or_default();
    let no_extra = BTreeMap::new();
    let request = SpiffeRequest {
        namespace,
        request: &cr.spec.request,
        issuer: &issuer,
        duration: cr.spec.duration.as_deref(),
        is_ca: cr.spec.is_ca.unwrap_or(false),
        usages,
        username: cr.spec.username.as_deref().unwrap_or_default(),
        extra: cr.spec.extra.as_ref().unwrap_or(&no_extra),
        pod_name_annotation: annotation(nico_policy::POD_NAME_ANNOTATION),
        pod_uid_annotation: annotation(nico_policy::POD_UID_ANNOTATION),
        identity_annotation: annotation(nico_policy::IDENTITY_ANNOTATION),
    };
    let pod = match settings.policy.pod_to_look_up(&request) {
        Some(query) => cluster.pod(namespace, query.name).await?,
        None => None,
    };
    Ok(match settings.policy.evaluate(&request, pod.as_ref()) {
        Decision::Approve => Judgement::Approve {
            rules: Rules::Spiffe,
            message: "approved by nico-identity: the SPIFFE ID is the one the requester is \
                      entitled to"
                .to_owned(),
        },
        Decision::Deny(denial) => Judgement::Deny {
            rules: Rules::Spiffe,
            message: denial.message(),
        },
    })
}

/// The auto-approval switch: anything without a SPIFFE ID.
fn judge_auto(csr: Result<ParsedCsr, CsrError>) -> Judgement {
    let csr = match csr {
        Ok(csr) => csr,
        Err(e) => {
            return Judgement::Deny {
                rules: Rules::Auto,
                message: format!("spec.request: {e}"),
            };
        }
    };
    let spiffe = csr
        .sans()
        .iter()
        .any(|san| matches!(san, San::Uri(uri) if strip_spiffe_scheme(uri).is_some()));
    if spiffe {
        return Judgement::Deny {
            rules: Rules::Auto,
            message: "csr.subjectAltName: a SPIFFE ID may only be requested from the SPIFFE \
                      issuer"
                .to_owned(),
        };
    }
    Judgement::Approve {
        rules: Rules::Auto,
        message: "approved by nico-identity: not a SPIFFE request, and non-SPIFFE requests are \
                  approved by configuration"
            .to_owned(),
    }
}

async fn judge_policies<C: Cluster>(
    cr: &CertificateRequest,
    csr: Result<ParsedCsr, CsrError>,
    view: &PolicyView,
    cluster: &C,
) -> Result<Judgement, ClusterError> {
    let namespace = cr.metadata.namespace.as_deref().unwrap_or_default();
    let issuer = issuer_of(cr);
    let labels = if view.policies.iter().any(|(_, p)| {
        p.as_ref()
            .as_ref()
            .is_ok_and(|p| p.needs_namespace_labels())
    }) {
        Some(cluster.namespace_labels(namespace).await?)
    } else {
        None
    };
    let requester = Requester {
        username: cr.spec.username.clone().unwrap_or_default(),
        uid: cr.spec.uid.clone(),
        groups: cr.spec.groups.clone().unwrap_or_default(),
        extra: cr.spec.extra.clone().unwrap_or_default(),
    };

    // Policies that select the request and bind its requester; the ones that do not load
    // cannot select, but they hold the request back if nothing else approves it.
    let mut applicable = Vec::new();
    let mut not_ready = Vec::new();
    for (name, loaded) in &view.policies {
        match loaded.as_ref() {
            Ok(policy) => {
                if policy.selects(&issuer, namespace, labels.as_ref())
                    && cluster.may_use_policy(&requester, name, namespace).await?
                {
                    applicable.push(policy);
                }
            }
            Err(_) => {
                if cluster.may_use_policy(&requester, name, namespace).await? {
                    not_ready.push(name.clone());
                }
            }
        }
    }
    if applicable.is_empty() {
        return Ok(Judgement::Leave(match not_ready.into_iter().next() {
            Some(name) => Leave::PolicyNotReady(name),
            None => Leave::NoPolicy,
        }));
    }

    let csr = match csr {
        Ok(csr) => csr,
        Err(e) => {
            return Ok(Judgement::Deny {
                rules: Rules::Policy,
                message: format!("spec.request: {e}"),
            });
        }
    };
    let services = if applicable.iter().any(|p| p.needs_services()) {
        Some(cluster.service_names(namespace).await?)
    } else {
        None
    };
    let groups = cr.spec.groups.as_deref().unwrap_or_default();
    let usages = cr.spec.usages.as_deref().unwrap_or_default();
    let request = PolicyRequest {
        name: cr.metadata.name.as_deref().unwrap_or_default(),
        namespace,
        username: &requester.username,
        groups,
        issuer: &issuer,
        duration: cr.spec.duration.as_deref(),
        is_ca: cr.spec.is_ca.unwrap_or(false),
        usages,
        csr: &csr,
    };
    let facts = ClusterFacts {
        services: services.as_deref(),
    };
    let verdict = Verdict::combine(
        applicable
            .iter()
            .map(|p| (p.name(), p.evaluate(&request, &facts))),
    );
    Ok(match verdict {
        Verdict::Approve { policy } => Judgement::Approve {
            rules: Rules::Policy,
            message: format!("approved by CertificateRequestPolicy {policy:?}"),
        },
        Verdict::Deny { message } => {
            if let Some(name) = not_ready.into_iter().next() {
                debug!(policy = %name, "denial held back: a policy that does not load applies");
                Judgement::Leave(Leave::PolicyNotReady(name))
            } else {
                Judgement::Deny {
                    rules: Rules::Policy,
                    message,
                }
            }
        }
        Verdict::NoPolicy => Judgement::Leave(Leave::NoPolicy),
    })
}

#[cfg(test)]
mod tests;
