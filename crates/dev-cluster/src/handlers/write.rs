//! Writes: create (with its admission), update (PUT) and patch; both of the latter go
//! through the common path in `pipeline.rs`.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::admission::{Admission, Operation};
use crate::kinds::{self, external, to_external, to_storage};
use crate::managed;
use crate::patch::{self, PatchError, PatchType};
use crate::registry::{Hooks, ResourceDef};
use crate::server::{Ctx, Reply, Sub, Target};
use crate::status::{ApiError, Cause, Details, qualified};
use crate::store::{Inner, key};
use crate::util::{meta_mut, meta_str, new_uid, now_time};

use super::apply::{apply_create, apply_step};
use super::pipeline::{Step, write_existing};
use super::{
    ManagedOp, SERVER_META, check_namespace, name_of, parse_object, settle_namespace, storage_key,
    writer,
};

/// Sets identity fields on a CertificateRequest from the requester, replacing the client's.
fn stamp_requester(obj: &mut Value, user: &crate::auth::UserInfo) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("username".into(), user.username.clone().into());
    match &user.uid {
        Some(uid) => spec.insert("uid".into(), uid.clone().into()),
        None => spec.remove("uid"),
    };
    spec.insert("groups".into(), json!(user.groups));
    if user.extra.is_empty() {
        spec.remove("extra");
    } else {
        spec.insert("extra".into(), json!(user.extra));
    }
}

/// POST a new object.
pub(crate) async fn create(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let obj = parse_object(t.def, ctx.body)?;
    create_object(ctx, t, obj, ManagedOp::Update).await
}

/// Takes back what a mutating webhook may not change on create: the name, the namespace,
/// the server's metadata, managedFields and (for kinds with a status subresource) status.
fn restore_after_mutation(def: &ResourceDef, before: &Value, after: &mut Value) {
    let old_meta = crate::util::meta(before).cloned().unwrap_or_default();
    let meta = meta_mut(after);
    for field in SERVER_META.iter().chain(&["name", "namespace"]) {
        match old_meta.get(*field) {
            Some(v) => meta.insert((*field).to_owned(), v.clone()),
            None => meta.remove(*field),
        };
    }
    if def.status_subresource
        && let Value::Object(map) = after
    {
        match before.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
}

/// How often a taken generated name is generated again before the create fails.
const GENERATE_RETRIES: u32 = 7;

/// Creates an object, in the API server's order: decoding and defaulting, managedFields,
/// built-in admission, the namespace check, mutating webhooks, validation, the server's
/// fields, validating webhooks, then storage (where an existing name is a conflict).
pub(super) async fn create_object(
    ctx: &Ctx<'_>,
    t: &Target,
    mut obj: Value,
    op: ManagedOp,
) -> Result<Reply, ApiError> {
    let def = t.def;
    settle_namespace(def, t, &mut obj)?;
    let (mut name, generate) = {
        let meta = meta_mut(&mut obj);
        for field in SERVER_META {
            meta.remove(*field);
        }
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let (name, generate) = match (name.is_empty(), generate.is_empty()) {
            (false, _) => (name, None),
            (true, false) => (
                format!("{generate}{}", crate::util::name_suffix()),
                Some(generate),
            ),
            (true, true) => {
                let (prefix, details) = kinds::invalid_subject(def, "");
                let cause =
                    Cause::required_detail("metadata.name", "name or generateName is required");
                return Err(ApiError::invalid(&prefix, "", details, vec![cause]));
            }
        };
        meta.insert("name".into(), name.clone().into());
        (name, generate)
    };
    kinds::decode(def, &mut obj)?;
    if def.status_subresource
        && let Value::Object(map) = &mut obj
    {
        map.remove("status");
    }
    kinds::default_fields(def, &mut obj);
    let now = now_time();
    let manager = ctx.manager();
    let api_version = def.api_version();
    let w = writer(&manager, &now, None, &api_version);
    match op {
        ManagedOp::Update => managed::record_update(def, &Value::Null, &mut obj, &w),
        ManagedOp::Apply { set, conflicts } => {
            managed::record_apply(def, &Value::Null, &mut obj, set, &conflicts, &w);
        }
    }
    kinds::admit_create(def, &mut obj);
    if def.hooks == Hooks::CertificateRequest && ctx.state.stamp_requester_identity {
        // Stands in for cert-manager's webhook in clusters made without nico-identity's own
        // (`nico-identity webhook` stamps through a real mutating webhook call). A real API
        // server with neither stores the client's values verbatim (kube-wire 11b/11c), so
        // this is opt-in and runs as a built-in plugin would: before any webhook.
        stamp_requester(&mut obj, ctx.user);
    }
    check_namespace(&ctx.state.store.lock(), def, t, &name)?;
    let admission = Admission::new(ctx, t, Operation::Create, &name);
    let before = obj.clone();
    let mut obj = admission
        .mutate(ctx.state, Some(obj), None)
        .await?
        .unwrap_or(Value::Null);
    restore_after_mutation(def, &before, &mut obj);
    // A patched object is decoded again, defaults included, as the API server does.
    kinds::default_fields(def, &mut obj);
    kinds::validate(def, &obj, &name)?;
    let meta = meta_mut(&mut obj);
    meta.insert("uid".into(), new_uid().into());
    meta.insert("creationTimestamp".into(), now.clone().into());
    if def.generation {
        meta.insert("generation".into(), 1.into());
    }
    admission.validate(ctx.state, Some(&obj), None).await?;
    let mut k = storage_key(def, t, &name);
    let mut st = ctx.state.store.lock();
    // The namespace may have gone while the webhooks ran.
    check_namespace(&st, def, t, &name)?;
    // A generated name that is taken is generated again, as the API server retries.
    let mut retries = if generate.is_some() {
        GENERATE_RETRIES
    } else {
        0
    };
    while st.get(def.storage, &k).is_some() {
        let Some(prefix) = generate.as_deref().filter(|_| retries > 0) else {
            return Err(ApiError::already_exists(def.plural, def.group, &name));
        };
        retries -= 1;
        name = format!("{prefix}{}", crate::util::name_suffix());
        meta_mut(&mut obj).insert("name".into(), name.clone().into());
        k = storage_key(def, t, &name);
    }
    if def.hooks == Hooks::Service {
        kinds::allocate_service_ip(&st, &mut obj, &name)?;
    }
    if ctx.dry_run() {
        return Ok(Reply::Json(201, to_external(def, &obj)));
    }
    let stored = st.insert(def.storage, k, to_storage(def, obj));
    if def.hooks == Hooks::Namespace {
        // What the service-account controller does for every new namespace.
        seed_default_service_account(&mut st, &name);
    }
    Ok(Reply::Object(201, external(def, &stored)))
}

/// Creates the `default` ServiceAccount of a namespace.
pub(crate) fn seed_default_service_account(st: &mut Inner, namespace: &str) {
    let k = key(Some(namespace), "default");
    if st.get("serviceaccounts", &k).is_some() {
        return;
    }
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
        "name": "default", "namespace": namespace, "uid": new_uid(),
        "creationTimestamp": now_time()}});
    st.insert("serviceaccounts", k, sa);
}

/// Builds the candidate object of a write: main writes keep the old status, status writes
/// keep everything but the status.
pub(super) fn scoped_candidate(
    def: &ResourceDef,
    sub: Option<Sub>,
    old: &Value,
    written: Cow<'_, Value>,
) -> Value {
    match sub {
        Some(Sub::Status) => {
            let status = match written {
                Cow::Owned(Value::Object(mut map)) => map.remove("status"),
                other => other.get("status").cloned(),
            };
            let mut candidate = match old {
                // Everything but the status, which is replaced just below.
                Value::Object(map) => Value::Object(
                    map.iter()
                        .filter(|(k, _)| k.as_str() != "status")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                other => other.clone(),
            };
            if let Value::Object(map) = &mut candidate {
                match status {
                    Some(status) if !status.is_null() => map.insert("status".into(), status),
                    _ => map.remove("status"),
                };
            }
            candidate
        }
        _ => {
            let mut candidate = written.into_owned();
            if def.status_subresource
                && let Value::Object(map) = &mut candidate
            {
                match old.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            candidate
        }
    }
}

/// PUT: replace an object (or its status) carrying the current resourceVersion.
pub(crate) async fn update(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let name = name_of(t);
    let mut body = parse_object(def, ctx.body)?;
    match meta_str(&body, "name") {
        "" => {
            meta_mut(&mut body).insert("name".into(), name.into());
        }
        n if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    settle_namespace(def, t, &mut body)?;
    kinds::decode(def, &mut body)?;
    write_existing(ctx, t, |old| {
        let sent_rv = meta_str(&body, "resourceVersion");
        if sent_rv.is_empty() && def.update_needs_rv {
            let cause = Cause::invalid(
                "metadata.resourceVersion",
                "0",
                "must be specified for an update",
            );
            let details = Details::object(name, def.group, def.plural);
            return Err(ApiError::invalid(
                &qualified(def.plural, def.group),
                name,
                details,
                vec![cause],
            ));
        }
        if !sent_rv.is_empty() && sent_rv != meta_str(old, "resourceVersion") {
            return Err(ApiError::conflict_modified(def.plural, def.group, name));
        }
        let mut candidate = scoped_candidate(def, t.sub, old, Cow::Borrowed(&body));
        if t.sub.is_none() {
            kinds::default_fields(def, &mut candidate);
        }
        Ok(Step {
            candidate,
            op: ManagedOp::Update,
        })
    })
    .await
}

const PATCH_TYPES_CUSTOM: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// PATCH: merge, JSON, strategic (built-ins only) or server-side apply.
pub(crate) async fn patch(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let name = name_of(t);
    let accepted = if def.custom {
        PATCH_TYPES_CUSTOM.to_owned()
    } else {
        format!("{PATCH_TYPES_CUSTOM}, application/strategic-merge-patch+json")
    };
    let unknown = || {
        ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             {accepted}"
        ))
    };
    let kind = PatchType::from_content_type(ctx.content_type).ok_or_else(unknown)?;
    if kind == PatchType::Strategic && def.custom {
        return Err(unknown());
    }
    let manager = ctx.manager();
    if kind == PatchType::Apply && ctx.param("fieldManager").is_none_or(str::is_empty) {
        let cause = Cause::required_detail("fieldManager", "is required for apply patch");
        let details = Details::object("", "meta.k8s.io", "PatchOptions");
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io",
            "",
            details,
            vec![cause],
        ));
    }
    let body: Value = serde_json::from_slice(ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if kind == PatchType::Apply && t.sub.is_none() {
        let exists = ctx
            .state
            .store
            .lock()
            .get(def.storage, &storage_key(def, t, name))
            .is_some();
        if !exists {
            return apply_create(ctx, t, body).await;
        }
    }
    write_existing(ctx, t, |old| {
        if kind == PatchType::Apply {
            return apply_step(ctx, t, old, &body, &manager);
        }
        patch_step(t, old, kind, &body).map(|candidate| Step {
            candidate,
            op: ManagedOp::Update,
        })
    })
    .await
}

/// The object a merge, JSON or strategic patch makes of `old`.
fn patch_step(t: &Target, old: &Value, kind: PatchType, body: &Value) -> Result<Value, ApiError> {
    let def = t.def;
    let name = name_of(t);
    let mut patched = old.clone();
    let result = match kind {
        PatchType::Merge => patch::merge(&mut patched, body),
        PatchType::Json => patch::json(&mut patched, body),
        _ => patch::strategic(&mut patched, body),
    };
    result.map_err(|e| match e {
        PatchError::Decode(m) => ApiError::bad_request(m),
        PatchError::Apply(m) => {
            let (prefix, details) = kinds::invalid_subject(def, name);
            ApiError::invalid(
                &prefix,
                name,
                details,
                vec![Cause::invalid("", "patch", &m)],
            )
        }
    })?;
    if !patched.is_object() {
        return Err(ApiError::bad_request(
            "the patched object is not a JSON object",
        ));
    }
    let patched_rv = meta_str(&patched, "resourceVersion");
    if !patched_rv.is_empty() && patched_rv != meta_str(old, "resourceVersion") {
        return Err(ApiError::conflict_modified(def.plural, def.group, name));
    }
    if meta_str(&patched, "name") != name {
        return Err(ApiError::bad_request(
            "metadata.name may not be changed by a patch",
        ));
    }
    let mut candidate = scoped_candidate(def, t.sub, old, Cow::Owned(patched));
    kinds::decode(def, &mut candidate)?;
    if t.sub.is_none() {
        kinds::default_fields(def, &mut candidate);
    }
    Ok(candidate)
}
