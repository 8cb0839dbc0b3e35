//! Deletes: one object (preconditions, finalizers, propagation, graceful pods,
//! namespaces) and a selected collection.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::admission::{Admission, Operation};
use crate::kinds::{self, external, to_storage};
use crate::registry::Hooks;
use crate::server::{Ctx, Reply, Target};
use crate::status::{self, ApiError, Cause, Details};
use crate::store::{Inner, Object};
use crate::util::{format_time, meta, meta_mut, meta_str};

use super::read::{Selection, list_reply};
use super::{finalizers, has_deletion, name_of, not_found, storage_key};

/// DeleteOptions from the body and the query.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    orphan_dependents: Option<bool>,
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(ctx: &Ctx<'_>) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    if !ctx.body.iter().all(u8::is_ascii_whitespace) {
        let body: Value = serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("failed to decode DeleteOptions: {e}")))?;
        if !body.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        opts.grace = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.propagation = body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_owned);
        opts.orphan_dependents = body.get("orphanDependents").and_then(Value::as_bool);
        let pre = body.get("preconditions");
        let pre_str = |k: &str| {
            pre.and_then(|p| p.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        opts.uid = pre_str("uid");
        opts.resource_version = pre_str("resourceVersion");
    }
    if let Some(g) = ctx.param("gracePeriodSeconds") {
        opts.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request("invalid gracePeriodSeconds"))?,
        );
    }
    if let Some(p) = ctx.param("propagationPolicy") {
        opts.propagation = Some(p.to_owned());
    }
    if let Some(o) = ctx.param("orphanDependents") {
        opts.orphan_dependents = Some(o == "true");
    }
    if let Some(p) = &opts.propagation
        && !matches!(p.as_str(), "Foreground" | "Background" | "Orphan")
    {
        let cause = Cause::not_supported(
            "propagationPolicy",
            p,
            &["Foreground", "Background", "Orphan", "nil"],
        );
        let details = Details::object("", "meta.k8s.io", "DeleteOptions");
        return Err(ApiError::invalid(
            "DeleteOptions.meta.k8s.io",
            "",
            details,
            vec![cause],
        ));
    }
    Ok(opts)
}

/// The start of a failed-precondition message, up to "The object might have".
fn precondition_failed(prefix: &str, name: &str, field: &str, wanted: &str, have: &str) -> String {
    format!(
        "Operation cannot be fulfilled on {prefix} {name:?}: the {field} in the precondition \
         ({wanted}) does not match the {field} in record ({have}). The object might have"
    )
}

/// Refuses a delete whose preconditions do not match the object (409).
fn check_preconditions(
    t: &Target,
    name: &str,
    old: &Value,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let def = t.def;
    let subject = || {
        let (prefix, _) = kinds::invalid_subject(def, name);
        (prefix, Details::object(name, def.group, def.kind))
    };
    if let Some(uid) = &opts.uid {
        let have = meta_str(old, "uid");
        if uid != have {
            let (prefix, details) = subject();
            let message = precondition_failed(&prefix, name, "UID", uid, have);
            return Err(ApiError::conflict(
                format!("{message} been deleted and then recreated"),
                details,
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let have = meta_str(old, "resourceVersion");
        if rv != have {
            let (prefix, details) = subject();
            let message = precondition_failed(&prefix, name, "ResourceVersion", rv, have);
            return Err(ApiError::conflict(
                format!("{message} been modified"),
                details,
            ));
        }
    }
    Ok(())
}

/// Offers the deletion of `old` to the webhooks that watch deletes.
async fn admit_delete(ctx: &Ctx<'_>, t: &Target, name: &str, old: &Value) -> Result<(), ApiError> {
    let admission = Admission::new(ctx, t, Operation::Delete, name);
    admission.mutate(ctx.state, None, Some(old)).await?;
    admission.validate(ctx.state, None, Some(old)).await
}

/// DELETE one object.
pub(crate) async fn delete(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let name = name_of(t);
    let opts = delete_options(ctx)?;
    let current = {
        let st = ctx.state.store.lock();
        st.get(def.storage, &storage_key(def, t, name))
            .map(|stored| external(def, stored))
    };
    let current = current.ok_or_else(|| not_found(def, name))?;
    check_preconditions(t, name, &current, &opts)?;
    admit_delete(ctx, t, name, &current).await?;
    let mut st = ctx.state.store.lock();
    let stored = st
        .get(def.storage, &storage_key(def, t, name))
        .ok_or_else(|| not_found(def, name))?;
    let old = external(def, stored);
    check_preconditions(t, name, &old, &opts)?;
    if def.hooks == Hooks::Namespace && matches!(name, "default" | "kube-system" | "kube-public") {
        return Err(ApiError::forbidden(
            format!("namespaces {name:?} is forbidden: this namespace may not be deleted"),
            Details::object(name, "", "namespaces"),
        ));
    }
    Ok(delete_object(ctx, &mut st, t, name, old, &opts))
}

/// Deletes (or starts deleting) one object; the answer.
fn delete_object(
    ctx: &Ctx<'_>,
    st: &mut Inner,
    t: &Target,
    name: &str,
    old: Arc<Object>,
    opts: &DeleteOptions,
) -> Reply {
    let def = t.def;
    let k = storage_key(def, t, name);
    let dry = ctx.dry_run();
    let now = Timestamp::now();
    let bump_generation = |obj: &mut Value| {
        if def.generation {
            let g = meta(obj)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(obj).insert("generation".into(), (g + 1).into());
        }
    };
    let store = |st: &mut Inner, obj: Value| {
        if dry {
            Object::new(obj)
        } else {
            external(
                def,
                &st.replace(def.storage, k.clone(), to_storage(def, obj)),
            )
        }
    };
    if def.hooks == Hooks::Namespace {
        if has_deletion(&old) {
            return Reply::Object(200, old);
        }
        let mut obj = old.value().clone();
        meta_mut(&mut obj).insert("deletionTimestamp".into(), format_time(now).into());
        obj["status"] = json!({"phase": "Terminating"});
        let obj = store(st, obj);
        if !dry {
            crate::namespaces::schedule_cleanup(ctx.state, name);
        }
        return Reply::Object(200, obj);
    }
    let mut fins = finalizers(&old);
    let orphan =
        opts.propagation.as_deref() == Some("Orphan") || opts.orphan_dependents == Some(true);
    let foreground = opts.propagation.as_deref() == Some("Foreground");
    if def.hooks == Hooks::Pod && fins.is_empty() && !orphan && !foreground {
        let default_grace = old
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let grace = if kinds::pod_node(&old).is_some() {
            opts.grace.unwrap_or(default_grace).max(0)
        } else {
            0
        };
        if grace > 0 {
            if has_deletion(&old) {
                return Reply::Object(200, old);
            }
            let mut obj = old.value().clone();
            let at = now
                .checked_add(SignedDuration::from_secs(grace))
                .unwrap_or(now);
            let meta = meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), format_time(at).into());
            meta.insert("deletionGracePeriodSeconds".into(), grace.into());
            bump_generation(&mut obj);
            return Reply::Object(200, store(st, obj));
        }
        let obj = if has_deletion(&old) {
            let mut obj = old.value().clone();
            let meta = meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), format_time(now).into());
            meta.insert("deletionGracePeriodSeconds".into(), 0.into());
            store(st, obj)
        } else {
            old
        };
        if !dry {
            st.remove(def.storage, &k);
        }
        return Reply::Object(200, obj);
    }
    for (wanted, extra) in [(foreground, "foregroundDeletion"), (orphan, "orphan")] {
        if wanted && !fins.iter().any(|f| f == extra) {
            fins.push(extra.to_owned());
        }
    }
    if !fins.is_empty() {
        if has_deletion(&old) {
            return Reply::Object(200, old);
        }
        let mut obj = old.value().clone();
        let meta = meta_mut(&mut obj);
        meta.insert("finalizers".into(), json!(fins));
        meta.insert("deletionTimestamp".into(), format_time(now).into());
        meta.insert("deletionGracePeriodSeconds".into(), 0.into());
        bump_generation(&mut obj);
        let code = if opts.orphan_dependents == Some(false) {
            202
        } else {
            200
        };
        return Reply::Object(code, store(st, obj));
    }
    let uid = meta_str(&old, "uid").to_owned();
    let last = if dry {
        Some(old)
    } else {
        st.remove(def.storage, &k).map(|o| external(def, &o))
    };
    match (def.return_deleted_object, last) {
        (true, Some(obj)) => Reply::Object(200, obj),
        _ => Reply::Json(
            200,
            status::success_deleted(name, def.group, def.plural, &uid),
        ),
    }
}

/// DELETE a collection: every selected object, answered as the list of them.
pub(crate) async fn delete_collection(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let selection = Selection::parse(ctx, t)?;
    let opts = delete_options(ctx)?;
    let chosen: Vec<(String, Arc<Object>)> = {
        let st = ctx.state.store.lock();
        st.all(def.storage)
            .map(|(k, v)| (k.clone(), external(def, v)))
            .filter(|(k, v)| selection.matches(k, v))
            .collect()
    };
    let one = |obj: &Value| Target {
        def,
        namespace: meta(obj)
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        name: Some(meta_str(obj, "name").to_owned()),
        sub: None,
    };
    for (_, obj) in &chosen {
        let target = one(obj);
        admit_delete(ctx, &target, name_of(&target), obj).await?;
    }
    let mut st = ctx.state.store.lock();
    let mut items = Vec::new();
    for (k, obj) in chosen {
        // Whatever went away meanwhile is not deleted twice.
        if st.get(def.storage, &k).is_none() {
            continue;
        }
        let target = one(&obj);
        delete_object(
            ctx,
            &mut st,
            &target,
            name_of(&target),
            Arc::clone(&obj),
            &opts,
        );
        items.push(obj);
    }
    let rv = st.current_rv();
    Ok(list_reply(def, &items, rv, None, None))
}
