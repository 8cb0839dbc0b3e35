//! `authorization.k8s.io/v1` access reviews: SubjectAccessReview (may this user?),
//! SelfSubjectAccessReview (may I?) and LocalSubjectAccessReview (may this user, in this
//! namespace?). They store nothing and answer 201 with the spec echoed and a status
//! decided by the same authorizer that guards requests (kube-wire 10a-10f): `allowed`
//! with the allowing rule as the reason, or `allowed: false` with no reason at all.

use serde_json::{Value, json};

use crate::authz::{self, Attributes, ResourceAttributes, Subject};
use crate::handlers::parse_object;
use crate::registry::{REVIEW_DEF, ResourceDef};
use crate::reviews::review_metadata;
use crate::server::{Ctx, Reply};
use crate::status::{ApiError, Cause, Details};

const GROUP: &str = "authorization.k8s.io";

/// Which review is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReviewKind {
    /// `subjectaccessreviews`: about the user in the spec.
    Subject,
    /// `selfsubjectaccessreviews`: about the caller.
    SelfSubject,
    /// `namespaces/<ns>/localsubjectaccessreviews`: about the user in the spec, in `<ns>`.
    Local(String),
}

impl ReviewKind {
    fn def(&self) -> ResourceDef {
        let (plural, kind) = match self {
            ReviewKind::Subject => ("subjectaccessreviews", "SubjectAccessReview"),
            ReviewKind::SelfSubject => ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
            ReviewKind::Local(_) => ("localsubjectaccessreviews", "LocalSubjectAccessReview"),
        };
        ResourceDef {
            group: GROUP,
            plural,
            kind,
            // Optional structs and the extra map are members of the managed set (10a).
            map_fields: &[
                "spec.resourceAttributes",
                "spec.nonResourceAttributes",
                "spec.extra",
            ],
            ..REVIEW_DEF
        }
    }
}

fn text<'a>(v: Option<&'a Value>, field: &str) -> &'a str {
    v.and_then(|v| v.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn present<'a>(spec: &'a Value, field: &str) -> Option<&'a Value> {
    spec.get(field).filter(|v| !v.is_null())
}

/// The spec's problems, as the API server's validation words them.
fn check_spec(kind: &ReviewKind, spec: &Value, namespace: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let resource = present(spec, "resourceAttributes");
    let non_resource = present(spec, "nonResourceAttributes");
    match (resource, non_resource) {
        (Some(_), Some(n)) => causes.push(Cause::invalid(
            "spec.nonResourceAttributes",
            &n.to_string(),
            "cannot be specified in combination with resourceAttributes",
        )),
        (None, None) => causes.push(Cause::invalid(
            "spec.resourceAttributes",
            "\"null\"",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        _ => {}
    }
    if *kind != ReviewKind::SelfSubject {
        let user = text(Some(spec), "user");
        let has_groups = spec
            .get("groups")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty());
        if user.is_empty() && !has_groups {
            causes.push(Cause::invalid(
                "spec.user",
                "\"\"",
                "at least one of user or group must be specified",
            ));
        }
    }
    if let ReviewKind::Local(_) = kind {
        let asked = text(resource, "namespace");
        if resource.is_some() && asked != namespace {
            causes.push(Cause::invalid(
                "spec.resourceAttributes.namespace",
                &format!("{asked:?}"),
                "must match metadata.namespace",
            ));
        }
        if let Some(n) = non_resource {
            causes.push(Cause::invalid(
                "spec.nonResourceAttributes",
                &n.to_string(),
                "disallowed on this kind of request",
            ));
        }
    }
    causes
}

/// The request a spec asks about.
fn attributes(spec: &Value) -> Attributes<'_> {
    match present(spec, "resourceAttributes") {
        Some(r) => Attributes::Resource(ResourceAttributes {
            verb: text(Some(r), "verb"),
            group: text(Some(r), "group"),
            resource: text(Some(r), "resource"),
            subresource: text(Some(r), "subresource"),
            namespace: text(Some(r), "namespace"),
            name: text(Some(r), "name"),
        }),
        None => {
            let n = present(spec, "nonResourceAttributes");
            Attributes::NonResource {
                verb: text(n, "verb"),
                path: text(n, "path"),
            }
        }
    }
}

/// POST one of the three reviews.
pub(crate) fn review(ctx: &Ctx<'_>, kind: &ReviewKind) -> Result<Reply, ApiError> {
    let def = kind.def();
    let mut body = parse_object(&def, ctx.body)?;
    let namespace = match kind {
        ReviewKind::Local(ns) => {
            let sent = body
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !sent.is_empty() && sent != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent \
                     on the request",
                ));
            }
            ns.as_str()
        }
        _ => "",
    };
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let causes = check_spec(kind, &spec, namespace);
    if !causes.is_empty() {
        let prefix = format!("{}.{GROUP}", def.kind);
        let details = Details::object("", GROUP, def.kind);
        return Err(ApiError::invalid(&prefix, "", details, causes));
    }
    let groups: Vec<String>;
    let subject = match kind {
        ReviewKind::SelfSubject => crate::server::subject(ctx.user),
        _ => {
            groups = spec
                .get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            Subject {
                username: text(Some(&spec), "user"),
                groups: &groups,
            }
        }
    };
    let decision = authz::decide(
        ctx.state.authorization,
        subject,
        &attributes(&spec),
        &ctx.state.store,
    );
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = decision.reason.into();
    }
    let now = crate::util::now_time();
    body["spec"] = spec;
    let mut metadata = review_metadata(ctx, &def, &body, None, &now);
    if !namespace.is_empty() {
        metadata.insert("namespace".into(), namespace.into());
    }
    Ok(Reply::Json(
        201,
        json!({
            "kind": def.kind,
            "apiVersion": def.api_version(),
            "metadata": metadata,
            "spec": body["spec"],
            "status": status,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn specs_are_checked_like_the_api_server_checks_them() {
        let ra = json!({"verb": "get", "resource": "pods", "namespace": "ns"});
        let local = ReviewKind::Local("ns".into());
        let cases = [
            (
                ReviewKind::Subject,
                json!({"user": "u", "resourceAttributes": ra}),
                vec![],
            ),
            (
                ReviewKind::Subject,
                json!({"groups": ["g"], "nonResourceAttributes": {"path": "/x"}}),
                vec![],
            ),
            (
                ReviewKind::Subject,
                json!({"resourceAttributes": ra}),
                vec!["spec.user"],
            ),
            (
                ReviewKind::Subject,
                json!({"user": "u"}),
                vec!["spec.resourceAttributes"],
            ),
            (
                ReviewKind::SelfSubject,
                json!({"resourceAttributes": ra, "nonResourceAttributes": {"path": "/x"}}),
                vec!["spec.nonResourceAttributes"],
            ),
            (
                ReviewKind::SelfSubject,
                json!({"resourceAttributes": ra}),
                vec![],
            ),
            (
                local.clone(),
                json!({"user": "u", "resourceAttributes": ra}),
                vec![],
            ),
            (
                local.clone(),
                json!({"user": "u", "resourceAttributes": {"verb": "get", "namespace": "x"}}),
                vec!["spec.resourceAttributes.namespace"],
            ),
            (
                local,
                json!({"user": "u", "nonResourceAttributes": {"path": "/x"}}),
                vec!["spec.nonResourceAttributes"],
            ),
        ];
        for (kind, spec, want) in cases {
            assert_eq!(
                fields(&check_spec(&kind, &spec, "ns")),
                want,
                "{kind:?} {spec}"
            );
        }
    }

    #[test]
    fn attributes_come_from_the_spec() {
        let spec = json!({"resourceAttributes": {"verb": "approve", "group": "cert-manager.io",
            "resource": "signers", "name": "clusterissuers.cert-manager.io/my-issuer"}});
        assert_eq!(
            attributes(&spec),
            Attributes::Resource(ResourceAttributes {
                verb: "approve",
                group: "cert-manager.io",
                resource: "signers",
                subresource: "",
                namespace: "",
                name: "clusterissuers.cert-manager.io/my-issuer",
            })
        );
        let spec = json!({"nonResourceAttributes": {"verb": "get", "path": "/version"}});
        assert_eq!(
            attributes(&spec),
            Attributes::NonResource {
                verb: "get",
                path: "/version"
            }
        );
    }
}
