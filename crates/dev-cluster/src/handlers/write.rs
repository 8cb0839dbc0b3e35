//! Writes to single objects: create, update (PUT), patch and server-side apply, and
//! the common tail that carries server fields over and records managedFields.

use serde_json::{Map, Value, json};

use crate::kinds::{self, to_external, to_storage};
use crate::managed::{self, Conflict, Scope};
use crate::patch::{self, PatchError, PatchType};
use crate::registry::{Hooks, ResourceDef};
use crate::server::{Ctx, Reply, Sub, Target};
use crate::status::{ApiError, Cause, Details, qualified};
use crate::store::{Inner, key};
use crate::util::{meta, meta_mut, meta_str, new_uid, now_time};

use super::{
    ManagedOp, SERVER_META, check_namespace, finalizers, has_deletion, name_of, not_found,
    parse_object, settle_namespace, storage_key, writer,
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
pub(crate) fn create(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let obj = parse_object(t.def, ctx.body)?;
    create_object(ctx, t, obj, ManagedOp::Update)
}

fn create_object(
    ctx: &Ctx<'_>,
    t: &Target,
    mut obj: Value,
    op: ManagedOp,
) -> Result<Reply, ApiError> {
    let def = t.def;
    settle_namespace(def, t, &mut obj)?;
    let name = {
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
        let name = match (name.is_empty(), generate.is_empty()) {
            (false, _) => name,
            (true, false) => format!("{generate}{}", crate::util::name_suffix()),
            (true, true) => {
                let (prefix, details) = kinds::invalid_subject(def, "");
                let cause =
                    Cause::required_detail("metadata.name", "name or generateName is required");
                return Err(ApiError::invalid(&prefix, "", details, vec![cause]));
            }
        };
        meta.insert("name".into(), name.clone().into());
        name
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
        // TODO(#6): the project's own mutating webhook takes this over; a real API server
        // without such admission stores the client's values verbatim (kube-wire 11b/11c).
        stamp_requester(&mut obj, ctx.user);
    }
    let k = storage_key(def, t, &name);
    let mut st = ctx.state.store.lock();
    check_namespace(&st, def, t, &name)?;
    kinds::validate(def, &obj, &name)?;
    if st.get(def.storage, &k).is_some() {
        return Err(ApiError::already_exists(def.plural, def.group, &name));
    }
    let meta = meta_mut(&mut obj);
    meta.insert("uid".into(), new_uid().into());
    meta.insert("creationTimestamp".into(), now.clone().into());
    if def.generation {
        meta.insert("generation".into(), 1.into());
    }
    if ctx.dry_run() {
        return Ok(Reply::Json(201, to_external(def, &obj)));
    }
    let stored = st.insert(def.storage, k, to_storage(def, &obj));
    if def.hooks == Hooks::Namespace {
        // What the service-account controller does for every new namespace.
        seed_default_service_account(&mut st, &name);
    }
    Ok(Reply::Json(201, to_external(def, &stored)))
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

/// The content of an object that drives `metadata.generation`.
fn generation_content(obj: &Value) -> Value {
    let mut content = obj.clone();
    if let Value::Object(map) = &mut content {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(k);
        }
    }
    content
}

/// Common tail of every write to an existing object: carry server fields over, validate,
/// bump generation, record managedFields, and store (or delete, when the last finalizer
/// of a deleting object went).
fn finish_update(
    ctx: &Ctx<'_>,
    st: &mut Inner,
    t: &Target,
    old: &Value,
    mut new: Value,
    op: ManagedOp,
) -> Result<Reply, ApiError> {
    let def = t.def;
    let name = name_of(t);
    let k = storage_key(def, t, name);
    {
        let old_meta = meta(old).cloned().unwrap_or_default();
        let meta = meta_mut(&mut new);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "resourceVersion",
        ] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.to_owned(), v.clone()),
                None => meta.remove(field),
            };
        }
    }
    kinds::validate(def, &new, name)?;
    if def.generation && generation_content(&new) != generation_content(old) {
        let generation = meta(old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), (generation + 1).into());
    }
    let now = now_time();
    let manager = ctx.manager();
    let api_version = def.api_version();
    let w = writer(&manager, &now, t.sub, &api_version);
    match op {
        ManagedOp::Update => managed::record_update(def, old, &mut new, &w),
        ManagedOp::Apply { set, conflicts } => {
            managed::record_apply(def, old, &mut new, set, &conflicts, &w)
        }
    }
    if new == *old || ctx.dry_run() {
        return Ok(Reply::ok(new));
    }
    if has_deletion(&new) && finalizers(&new).is_empty() {
        st.remove(def.storage, &k);
        return Ok(Reply::ok(new));
    }
    let stored = st.replace(def.storage, k, to_storage(def, &new));
    Ok(Reply::ok(to_external(def, &stored)))
}

/// Builds the candidate object of a write: main writes keep the old status, status writes
/// keep everything but the status.
fn scoped_candidate(def: &ResourceDef, sub: Option<Sub>, old: &Value, written: Value) -> Value {
    match sub {
        Some(Sub::Status) => {
            let mut candidate = old.clone();
            if let Value::Object(map) = &mut candidate {
                match written.get("status") {
                    Some(status) if !status.is_null() => {
                        map.insert("status".into(), status.clone())
                    }
                    _ => map.remove("status"),
                };
            }
            candidate
        }
        _ => {
            let mut candidate = written;
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
pub(crate) fn update(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
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
    let mut st = ctx.state.store.lock();
    let stored = st
        .get(def.storage, &storage_key(def, t, name))
        .ok_or_else(|| not_found(def, name))?;
    let old = to_external(def, stored);
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
    if !sent_rv.is_empty() && sent_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict_modified(def.plural, def.group, name));
    }
    let mut candidate = scoped_candidate(def, t.sub, &old, body);
    if t.sub.is_none() {
        kinds::default_fields(def, &mut candidate);
    }
    finish_update(ctx, &mut st, t, &old, candidate, ManagedOp::Update)
}

const PATCH_TYPES_CUSTOM: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// PATCH: merge, JSON, strategic (built-ins only) or server-side apply.
pub(crate) fn patch(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
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
    let mut st = ctx.state.store.lock();
    let Some(stored) = st.get(def.storage, &storage_key(def, t, name)) else {
        drop(st);
        if kind == PatchType::Apply && t.sub.is_none() {
            return apply_create(ctx, t, body);
        }
        return Err(not_found(def, name));
    };
    let old = to_external(def, stored);
    if kind == PatchType::Apply {
        return apply(ctx, &mut st, t, &old, &body, &manager);
    }
    let mut patched = old.clone();
    let result = match kind {
        PatchType::Merge => patch::merge(&mut patched, &body),
        PatchType::Json => patch::json(&mut patched, &body),
        _ => patch::strategic(&mut patched, &body),
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
    if !patched_rv.is_empty() && patched_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict_modified(def.plural, def.group, name));
    }
    if meta_str(&patched, "name") != name {
        return Err(ApiError::bad_request(
            "metadata.name may not be changed by a patch",
        ));
    }
    let mut candidate = scoped_candidate(def, t.sub, &old, patched);
    kinds::decode(def, &mut candidate)?;
    if t.sub.is_none() {
        kinds::default_fields(def, &mut candidate);
    }
    finish_update(ctx, &mut st, t, &old, candidate, ManagedOp::Update)
}

/// The part of an applied configuration a write through `sub` may touch.
fn applied_scope(def: &ResourceDef, sub: Option<Sub>, applied: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in applied.as_object().into_iter().flatten() {
        let keep = match (k.as_str(), sub) {
            ("status", Some(Sub::Status)) => true,
            (_, Some(Sub::Status)) => false,
            ("status", _) => !def.status_subresource,
            ("apiVersion" | "kind", _) => false,
            ("metadata", _) => {
                let kept: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(mk, _)| {
                        matches!(
                            mk.as_str(),
                            "labels" | "annotations" | "finalizers" | "ownerReferences"
                        )
                    })
                    .map(|(mk, mv)| (mk.clone(), mv.clone()))
                    .collect();
                if !kept.is_empty() {
                    out.insert(k.clone(), Value::Object(kept));
                }
                false
            }
            _ => true,
        };
        if keep {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let owner = |c: &Conflict| {
        let sub = c
            .subresource
            .as_deref()
            .map(|s| format!(" with subresource {s:?}"))
            .unwrap_or_default();
        format!("{:?}{sub} using {}", c.manager, c.api_version)
    };
    let causes: Vec<Cause> = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict",
            message: format!("conflict with {}", owner(c)),
            field: managed::render_path(&c.path),
        })
        .collect();
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            owner(one),
            managed::render_path(&one.path)
        ),
        many => {
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for c in many {
                let who = owner(c);
                let path = managed::render_path(&c.path);
                match groups.iter_mut().find(|(w, _)| *w == who) {
                    Some((_, paths)) => paths.push(path),
                    None => groups.push((who, vec![path])),
                }
            }
            let parts: Vec<String> = groups
                .iter()
                .map(|(who, paths)| {
                    let lines: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                    format!("conflicts with {who}:\n{}", lines.join("\n"))
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                parts.join("\n")
            )
        }
    };
    ApiError::conflict(
        message,
        Details {
            causes,
            ..Details::default()
        },
    )
}

fn apply(
    ctx: &Ctx<'_>,
    st: &mut Inner,
    t: &Target,
    old: &Value,
    body: &Value,
    manager: &str,
) -> Result<Reply, ApiError> {
    let def = t.def;
    if !body.is_object() {
        return Err(ApiError::bad_request("an apply patch must be an object"));
    }
    let scope = if t.sub == Some(Sub::Status) {
        Scope::Status
    } else {
        Scope::Main
    };
    let scoped = applied_scope(def, t.sub, body);
    let now = now_time();
    let api_version = def.api_version();
    let w = writer(manager, &now, t.sub, &api_version);
    let set = managed::apply_set(def, &scoped, scope);
    let conflicts = managed::apply_conflicts(def, old, &scoped, scope, &w);
    if !conflicts.is_empty() && !ctx.flag("force") {
        return Err(conflict_error(&conflicts));
    }
    let mut merged = old.clone();
    patch::apply_merge(&mut merged, &scoped, "");
    for path in managed::released_paths(old, &set, &w) {
        managed::remove_path(&mut merged, &path);
    }
    let mut candidate = merged;
    kinds::decode(def, &mut candidate)?;
    if t.sub.is_none() {
        kinds::default_fields(def, &mut candidate);
    }
    finish_update(
        ctx,
        st,
        t,
        old,
        candidate,
        ManagedOp::Apply { set, conflicts },
    )
}

fn apply_create(ctx: &Ctx<'_>, t: &Target, body: Value) -> Result<Reply, ApiError> {
    let def = t.def;
    let mut obj = parse_object(def, &serde_json::to_vec(&body).unwrap_or_default())?;
    match meta_str(&obj, "name") {
        "" => {
            meta_mut(&mut obj).insert("name".into(), name_of(t).into());
        }
        n if n != name_of(t) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                name_of(t)
            )));
        }
        _ => {}
    }
    let scoped = applied_scope(def, None, &obj);
    let set = managed::apply_set(def, &scoped, Scope::Main);
    create_object(
        ctx,
        t,
        obj,
        ManagedOp::Apply {
            set,
            conflicts: Vec::new(),
        },
    )
}
