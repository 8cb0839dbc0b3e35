//! The common path of every write to an existing object (PUT, patch, apply, through the
//! main resource or `status`), in the API server's order:
//!
//! 1. read the object and compute the new one (the verb's own work, under the lock);
//! 2. carry the server's metadata over and record managedFields;
//! 3. mutating webhooks, after which the write's scope is enforced again (a main write
//!    keeps the stored status, a status write keeps everything else);
//! 4. validation (422), `generation`, validating webhooks;
//! 5. commit under the lock, unless the object changed while the webhooks ran: then the
//!    whole write starts over from step 1 against the new version, as the API server
//!    retries its guaranteed update. A write pinned to a resourceVersion then fails with
//!    409 in step 1.

use std::borrow::Cow;

use serde_json::Value;

use crate::admission::{Admission, Operation};
use crate::kinds::{self, external, to_storage};
use crate::managed;
use crate::server::{Ctx, Reply, Target};
use crate::status::ApiError;
use crate::store::Inner;
use crate::util::{meta, meta_mut, meta_str, now_time};

use super::write::scoped_candidate;
use super::{ManagedOp, finalizers, has_deletion, name_of, not_found, storage_key, writer};

/// What a verb makes of the current object.
#[derive(Debug)]
pub(super) struct Step {
    /// The object to write.
    pub(super) candidate: Value,
    /// How managedFields record the write.
    pub(super) op: ManagedOp,
}

/// How often a write is retried when the object keeps changing under its webhooks.
const ATTEMPTS: usize = 5;

/// Metadata only the server sets: taken from the stored object, whatever the writer or a
/// webhook put there. `managedFields` is the server's too, but every caller sets it itself.
const CARRIED: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
];

fn carry_server_meta(old: &Value, new: &mut Value) {
    let old_meta = meta(old);
    let meta = meta_mut(new);
    for field in CARRIED {
        match old_meta.and_then(|m| m.get(*field)) {
            Some(v) => meta.insert((*field).to_owned(), v.clone()),
            None => meta.remove(*field),
        };
    }
}

/// Whether two objects agree on the content that drives `metadata.generation`: everything
/// but metadata, status, apiVersion and kind.
fn same_generation_content(a: &Value, b: &Value) -> bool {
    let counted = |(k, _): &(&String, &Value)| {
        !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
    };
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.iter().filter(counted).eq(b.iter().filter(counted))
        }
        _ => a == b,
    }
}

/// Step 2: server metadata and managedFields.
fn prepare(ctx: &Ctx<'_>, t: &Target, old: &Value, mut new: Value, op: ManagedOp) -> Value {
    // managedFields are recorded from the old object's entries just below.
    carry_server_meta(old, &mut new);
    let now = now_time();
    let manager = ctx.manager();
    let api_version = t.def.api_version();
    let w = writer(&manager, &now, t.sub, &api_version);
    match op {
        ManagedOp::Update => managed::record_update(t.def, old, &mut new, &w),
        ManagedOp::Apply { set, conflicts } => {
            managed::record_apply(t.def, old, &mut new, set, &conflicts, &w);
        }
    }
    new
}

/// Steps 3 and 4: webhooks, validation, generation.
async fn admit(
    ctx: &Ctx<'_>,
    t: &Target,
    old: &Value,
    candidate: Value,
) -> Result<Value, ApiError> {
    let def = t.def;
    let name = name_of(t);
    let admission = Admission::new(ctx, t, Operation::Update, name);
    let webhooks = admission.mutating_webhooks(ctx.state, &candidate, Some(old));
    let mut new = if webhooks.is_empty() {
        // Nothing can change the candidate: it is already in the write's scope and carries
        // the server's metadata and the writer's managedFields.
        let mut new = candidate;
        if t.sub.is_none() {
            kinds::default_fields(def, &mut new);
        }
        new
    } else {
        // What webhooks set is not recorded in managedFields (kube-wire 14b).
        let managed = candidate.pointer("/metadata/managedFields").cloned();
        let mutated = admission
            .mutate_with(ctx.state, webhooks, Some(candidate), Some(old))
            .await?
            .unwrap_or(Value::Null);
        let mut new = scoped_candidate(def, t.sub, old, Cow::Owned(mutated));
        if t.sub.is_none() {
            // A patched object is decoded again, defaults included, as the API server does.
            kinds::default_fields(def, &mut new);
        }
        carry_server_meta(old, &mut new);
        match managed {
            Some(m) => meta_mut(&mut new).insert("managedFields".into(), m),
            None => meta_mut(&mut new).remove("managedFields"),
        };
        new
    };
    kinds::validate(def, &new, name)?;
    kinds::validate_update(def, old, &new, name)?;
    if def.generation && !same_generation_content(&new, old) {
        let generation = meta(old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), (generation + 1).into());
    }
    admission.validate(ctx.state, Some(&new), Some(old)).await?;
    Ok(new)
}

/// Step 5: store (or delete, when the last finalizer of a deleting object went).
fn commit(ctx: &Ctx<'_>, st: &mut Inner, t: &Target, old: &Value, new: Value) -> Reply {
    let def = t.def;
    if new == *old || ctx.dry_run() {
        return Reply::ok(new);
    }
    let k = storage_key(def, t, name_of(t));
    if has_deletion(&new) && finalizers(&new).is_empty() {
        st.remove(def.storage, &k);
        return Reply::ok(new);
    }
    let stored = st.replace(def.storage, k, to_storage(def, new));
    Reply::Object(200, external(def, &stored))
}

/// Runs a write to the existing object of `t`; `compute` is the verb's own work on the
/// current object and may run more than once.
pub(super) async fn write_existing<F>(
    ctx: &Ctx<'_>,
    t: &Target,
    mut compute: F,
) -> Result<Reply, ApiError>
where
    F: FnMut(&Value) -> Result<Step, ApiError>,
{
    let def = t.def;
    let name = name_of(t);
    let k = storage_key(def, t, name);
    for _ in 0..ATTEMPTS {
        let old = {
            let st = ctx.state.store.lock();
            let stored = st
                .get(def.storage, &k)
                .ok_or_else(|| not_found(def, name))?;
            external(def, stored)
        };
        let step = compute(&old)?;
        let candidate = prepare(ctx, t, &old, step.candidate, step.op);
        let new = admit(ctx, t, &old, candidate).await?;
        let mut st = ctx.state.store.lock();
        let unchanged = st
            .get(def.storage, &k)
            .map(|now| meta_str(now, "resourceVersion") == meta_str(&old, "resourceVersion"))
            .ok_or_else(|| not_found(def, name))?;
        if unchanged {
            return Ok(commit(ctx, &mut st, t, &old, new));
        }
        tracing::debug!(name, "object changed during admission, writing again");
    }
    Err(ApiError::conflict_modified(def.plural, def.group, name))
}
