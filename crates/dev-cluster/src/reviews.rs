//! Create-only endpoints that store nothing: TokenRequest (the `token` subresource of
//! service accounts), TokenReview and SelfSubjectReview.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use crate::auth::API_AUDIENCE;
use crate::handlers::parse_object;
use crate::managed::{self, Scope, Writer};
use crate::registry::{REVIEW_DEF, ResourceDef};
use crate::server::{Ctx, Reply, Target};
use crate::status::{ApiError, Cause, Details};
use crate::store::key;
use crate::tokens::{Claims, KubernetesClaims, NamedRef};
use crate::util::{format_time, meta_str, new_uid};

const AUTHN: &str = "authentication.k8s.io/v1";

/// The metadata of a review answer of `def`: a managedFields entry for what the client
/// sent.
pub(crate) fn review_metadata(
    ctx: &Ctx<'_>,
    def: &ResourceDef,
    body: &Value,
    sub: Option<&str>,
    now: &str,
) -> Map<String, Value> {
    let manager = ctx.manager();
    let api_version = def.api_version();
    let w = Writer {
        manager: &manager,
        api_version: &api_version,
        subresource: sub,
        scope: Scope::Whole,
        now,
    };
    let mut holder = json!({"metadata": {}});
    if let Some(spec) = body.get("spec") {
        holder["spec"] = spec.clone();
    }
    managed::record_update(def, &Value::Null, &mut holder, &w);
    holder
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn body_of(ctx: &Ctx<'_>, kind: &'static str) -> Result<Value, ApiError> {
    let def = ResourceDef {
        kind,
        group: "authentication.k8s.io",
        ..REVIEW_DEF
    };
    parse_object(&def, ctx.body)
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// POST `serviceaccounts/<name>/token`.
pub(crate) fn token_request(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let sa_name = t.name.clone().unwrap_or_default();
    let body = body_of(ctx, "TokenRequest")?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: \
                 spec.expirationSeconds must be an integer",
            )
        })?,
    };
    let invalid = |cause: Cause| {
        let details = Details::object("", "authentication.k8s.io", "TokenRequest");
        ApiError::invalid(
            "TokenRequest.authentication.k8s.io",
            "",
            details,
            vec![cause],
        )
    };
    if expiration < 600 {
        let shown = expiration.to_string();
        return Err(invalid(Cause::invalid(
            "spec.expirationSeconds",
            &shown,
            "may not specify a duration less than 10 minutes",
        )));
    }
    if expiration > 1 << 32 {
        let shown = expiration.to_string();
        return Err(invalid(Cause::invalid(
            "spec.expirationSeconds",
            &shown,
            "may not specify a duration larger than 2^32 seconds",
        )));
    }
    let mut audiences = string_list(spec.get("audiences"));
    if audiences.is_empty() {
        audiences.push(API_AUDIENCE.to_owned());
    }
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null());
    let st = ctx.state.store.lock();
    let sa = st
        .get("serviceaccounts", &key(Some(&ns), &sa_name))
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", &sa_name))?;
    let sa_uid = meta_str(sa, "uid").to_owned();
    let mut claims_k8s = KubernetesClaims {
        namespace: ns.clone(),
        node: None,
        pod: None,
        secret: None,
        serviceaccount: NamedRef {
            name: sa_name.clone(),
            uid: Some(sa_uid.clone()),
        },
    };
    if let Some(bound) = bound {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let want_uid = bound
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty());
        let (storage, plural) = match kind {
            "Pod" => ("pods", "pods"),
            "Secret" => ("secrets", "secrets"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to object of kind {other:?}"
                )));
            }
        };
        let obj = st
            .get(storage, &key(Some(&ns), name))
            .ok_or_else(|| ApiError::not_found(plural, "", name))?;
        let uid = meta_str(obj, "uid").to_owned();
        if let Some(want) = want_uid
            && want != uid
        {
            return Err(ApiError::conflict(
                format!(
                    "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound \
                     object reference ({want}) does not match the UID in record. The object \
                     might have been deleted and then recreated"
                ),
                Details::object(name, "", kind),
            ));
        }
        let named = NamedRef {
            name: name.to_owned(),
            uid: Some(uid),
        };
        if kind == "Pod" {
            if let Some(node) = crate::kinds::pod_node(obj) {
                let node_uid = st
                    .get("nodes", &key(None, node))
                    .map(|n| meta_str(n, "uid").to_owned());
                claims_k8s.node = Some(NamedRef {
                    name: node.to_owned(),
                    uid: node_uid,
                });
            }
            claims_k8s.pod = Some(named);
        } else {
            claims_k8s.secret = Some(named);
        }
    }
    drop(st);
    let now = Timestamp::now();
    let exp = now
        .checked_add(SignedDuration::from_secs(expiration))
        .unwrap_or(now);
    let claims = Claims {
        aud: audiences.clone(),
        exp: exp.as_second(),
        iat: now.as_second(),
        iss: API_AUDIENCE.to_owned(),
        jti: new_uid(),
        kubernetes: claims_k8s,
        nbf: now.as_second(),
        sub: format!("system:serviceaccount:{ns}:{sa_name}"),
    };
    let token = ctx.state.auth.issue(&claims)?;
    let now_text = format_time(now);
    let mut metadata = review_metadata(ctx, &REVIEW_DEF, &body, Some("token"), &now_text);
    metadata.insert("name".into(), sa_name.into());
    metadata.insert("namespace".into(), ns.into());
    metadata.insert("uid".into(), sa_uid.into());
    metadata.insert("creationTimestamp".into(), now_text.into());
    let mut out_spec = spec.as_object().cloned().unwrap_or_default();
    out_spec.insert("audiences".into(), json!(audiences));
    out_spec.insert("expirationSeconds".into(), expiration.into());
    Ok(Reply::Json(
        201,
        json!({
            "kind": "TokenRequest",
            "apiVersion": AUTHN,
            "metadata": metadata,
            "spec": out_spec,
            "status": {"token": token.expose(), "expirationTimestamp": format_time(exp)},
        }),
    ))
}

/// POST `tokenreviews`.
pub(crate) fn token_review(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let body = body_of(ctx, "TokenReview")?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
    let mut audiences = string_list(spec.get("audiences"));
    if audiences.is_empty() {
        audiences.push(API_AUDIENCE.to_owned());
    }
    let status = match ctx.state.auth.review(token, &audiences, &ctx.state.store) {
        Ok((user, accepted)) => {
            json!({"authenticated": true, "user": user.to_json(), "audiences": accepted})
        }
        Err(failure) => json!({"user": {}, "error": failure.to_string()}),
    };
    let now = crate::util::now_time();
    let metadata = review_metadata(ctx, &REVIEW_DEF, &body, None, &now);
    Ok(Reply::Json(
        201,
        json!({"kind": "TokenReview", "apiVersion": AUTHN, "metadata": metadata,
               "spec": spec, "status": status}),
    ))
}

/// POST `selfsubjectreviews`.
pub(crate) fn self_subject_review(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    // The review has no input; kubectl sends it as protobuf, which is not decoded.
    if !ctx.content_type.contains("protobuf") {
        body_of(ctx, "SelfSubjectReview")?;
    }
    Ok(Reply::Json(
        201,
        json!({
            "kind": "SelfSubjectReview",
            "apiVersion": AUTHN,
            "metadata": {"creationTimestamp": crate::util::now_time()},
            "status": {"userInfo": ctx.user.to_json()},
        }),
    ))
}
