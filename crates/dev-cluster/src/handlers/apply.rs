//! Server-side apply on an existing object: what the applied configuration may touch,
//! the conflicts with other managers, and the merge; and apply of an object that does not
//! exist yet, which is a create.

use serde_json::{Map, Value};

use crate::kinds;
use crate::managed::{self, Conflict, Scope};
use crate::patch;
use crate::registry::ResourceDef;
use crate::server::{Ctx, Reply, Sub, Target};
use crate::status::{ApiError, Cause, Details};
use crate::util::{meta_mut, meta_str, now_time};

use super::pipeline::Step;
use super::write::create_object;
use super::{ManagedOp, name_of, parse_object, writer};

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
            reason: "FieldManagerConflict".into(),
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

/// The write an apply patch makes of `old`.
pub(super) fn apply_step(
    ctx: &Ctx<'_>,
    t: &Target,
    old: &Value,
    body: &Value,
    manager: &str,
) -> Result<Step, ApiError> {
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
    Ok(Step {
        candidate,
        op: ManagedOp::Apply { set, conflicts },
    })
}

/// Apply of an object that does not exist: a create owned by the applier.
pub(super) async fn apply_create(
    ctx: &Ctx<'_>,
    t: &Target,
    body: Value,
) -> Result<Reply, ApiError> {
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
    .await
}
