//! CertificateRequest admission, as cert-manager's webhook does it.
//!
//! - Mutating, on create: the requester fields are set from the review's user
//!   ([`requester`]).
//! - Validating, on create: the requester fields are the user's, `spec.request` is a CSR
//!   whose extensions agree with `spec.usages` and `spec.isCA` ([`usages`]), the approval
//!   conditions follow their rules ([`conditions`]).
//! - Validating, on update (main resource and status): the spec and the `cert-manager.io/`
//!   annotations are unchanged, the approval conditions follow their rules.
//! - Adding `Approved` or `Denied` needs permission to approve for the issuer
//!   ([`crate::approval`]).

mod conditions;
mod requester;
mod usages;

pub(crate) use requester::Requester;

use std::collections::BTreeSet;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use nico_k8s_types::{CertificateRequest, ConditionType};
use serde_json::Value;

use crate::approval::{Authorizer, Signer};
use crate::review::{Problem, Verdict};

/// The annotation prefix whose annotations never change after create.
const CERT_MANAGER_PREFIX: &str = "cert-manager.io/";

/// The mutating webhook: records the requester on create.
pub(crate) fn stamp(request: &AdmissionRequest<DynamicObject>) -> Verdict {
    let Some(object) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create)
    else {
        return Verdict::Allow;
    };
    match serde_json::to_value(object) {
        Ok(object) => Verdict::Patch(requester::stamp_patch(
            &object,
            &Requester::from_user_info(&request.user_info),
        )),
        Err(_) => Verdict::Invalid(vec![Problem::new("spec", "the object could not be read")]),
    }
}

/// A reviewed object, raw and typed.
struct Reviewed {
    raw: Value,
    typed: CertificateRequest,
}

fn decode(object: &DynamicObject, which: &str) -> Result<Reviewed, Problem> {
    let raw = serde_json::to_value(object)
        .map_err(|_| Problem::new(which, "the object could not be read"))?;
    let typed = serde_json::from_value(raw.clone())
        .map_err(|e| Problem::new(which, format!("not a valid CertificateRequest: {e}")))?;
    Ok(Reviewed { raw, typed })
}

/// The validating webhook.
pub(crate) async fn validate<A: Authorizer>(
    authorizer: &A,
    request: &AdmissionRequest<DynamicObject>,
) -> Verdict {
    let requester = Requester::from_user_info(&request.user_info);
    let new = match request.object.as_ref().map(|o| decode(o, "object")) {
        Some(Ok(new)) => new,
        Some(Err(problem)) => return Verdict::Invalid(vec![problem]),
        None => return Verdict::Allow,
    };
    let old = match (&request.operation, request.old_object.as_ref()) {
        (Operation::Create, _) => None,
        (Operation::Update, Some(old)) => match decode(old, "oldObject") {
            Ok(old) => Some(old),
            Err(problem) => return Verdict::Invalid(vec![problem]),
        },
        // Without the old object nothing can be compared: refuse rather than guess.
        (Operation::Update, None) => {
            return Verdict::Invalid(vec![Problem::new(
                "oldObject",
                "an update review must carry the stored object",
            )]);
        }
        _ => return Verdict::Allow,
    };
    let problems = match &old {
        None => check_create(&new.typed, &requester),
        Some(old) => check_update(old, &new),
    };
    if !problems.is_empty() {
        return Verdict::Invalid(problems);
    }
    let old_conditions = old
        .as_ref()
        .map(|o| o.typed.conditions())
        .unwrap_or_default();
    match conditions::added(old_conditions, new.typed.conditions()) {
        Some(decision) => {
            let namespace = request
                .namespace
                .clone()
                .or_else(|| new.typed.metadata.namespace.clone())
                .unwrap_or_default();
            approval(authorizer, &new.typed, &namespace, &requester, decision).await
        }
        None => Verdict::Allow,
    }
}

fn check_create(cr: &CertificateRequest, requester: &Requester) -> Vec<Problem> {
    let mut problems = requester.differences(&Requester::from_spec(&cr.spec));
    match nico_csr::parse_csr_pem(&cr.spec.request) {
        Ok(csr) => problems.extend(usages::check(
            &csr,
            cr.spec.usages.as_deref().unwrap_or_default(),
            cr.spec.is_ca.unwrap_or(false),
        )),
        Err(e) => problems.push(Problem::new("spec.request", e.to_string())),
    }
    problems.extend(conditions::check(&[], cr.conditions()));
    problems
}

fn keys(value: Option<&Value>) -> BTreeSet<&String> {
    value
        .and_then(Value::as_object)
        .map(|map| map.keys().collect())
        .unwrap_or_default()
}

fn check_update(old: &Reviewed, new: &Reviewed) -> Vec<Problem> {
    let mut problems = Vec::new();
    let (old_spec, new_spec) = (old.raw.get("spec"), new.raw.get("spec"));
    for key in keys(old_spec).union(&keys(new_spec)) {
        let field = |spec: Option<&Value>| spec.and_then(|s| s.get(key.as_str())).cloned();
        if field(old_spec) != field(new_spec) {
            problems.push(Problem::new(
                format!("spec.{key}"),
                "is immutable after create",
            ));
        }
    }
    let annotations = |cr: &CertificateRequest| {
        cr.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with(CERT_MANAGER_PREFIX))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (before, after) = (annotations(&old.typed), annotations(&new.typed));
    let changed: BTreeSet<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    for key in changed {
        problems.push(Problem::new(
            format!("metadata.annotations[{key}]"),
            "cert-manager.io annotations are immutable after create",
        ));
    }
    problems.extend(conditions::check(
        old.typed.conditions(),
        new.typed.conditions(),
    ));
    problems
}

/// Allowed when the requester may approve for the request's issuer.
async fn approval<A: Authorizer>(
    authorizer: &A,
    cr: &CertificateRequest,
    namespace: &str,
    requester: &Requester,
    decision: ConditionType,
) -> Verdict {
    let issuer = &cr.spec.issuer_ref;
    let (group, kind) = (issuer.group_or_default(), issuer.kind_or_default());
    let unavailable = || {
        Verdict::Unavailable(format!(
            "status.conditions: failed to check whether the requester may write {}; try again",
            decision.as_str()
        ))
    };
    let resource = match authorizer.issuer_resource(group, kind).await {
        Ok(Some(resource)) => resource,
        Ok(None) => {
            return Verdict::Forbidden(format!(
                "spec.issuerRef: kind {kind} in group {group} is not served by the API server, \
                 so nobody may approve or deny this request"
            ));
        }
        Err(error) => {
            tracing::warn!(%error, "failed to look up the issuer kind");
            return unavailable();
        }
    };
    let signer = Signer::new(issuer, namespace, &resource);
    for name in [&signer.name, &signer.wildcard] {
        match authorizer
            .may_approve(requester, name, signer.namespace.as_deref())
            .await
        {
            Ok(true) => return Verdict::Allow,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "failed to review access to the signer");
                return unavailable();
            }
        }
    }
    Verdict::Forbidden(format!(
        "status.conditions: user {:?} may not approve or deny requests for {issuer}: that \
         needs the approve verb on signers.{} named {:?} (or {:?})",
        requester.username,
        crate::approval::SIGNERS_GROUP,
        signer.name,
        signer.wildcard
    ))
}

#[cfg(test)]
mod tests;
