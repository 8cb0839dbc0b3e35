//! The verbs on stored resources: get, list, create, update, patch, delete and
//! deletecollection, with the server-side behaviour of a real API server (server-set
//! fields, optimistic concurrency, the status subresource, finalizers, graceful pod
//! deletion, managedFields).

use serde_json::Value;

use crate::managed::{Conflict, Path, Scope, Writer};
use crate::registry::ResourceDef;
use crate::server::{Sub, Target};
use crate::status::{ApiError, Details, qualified};
use crate::store::{Inner, key};
use crate::util::{meta, meta_mut};

mod apply;
mod delete;
mod pipeline;
mod read;
mod write;

pub(crate) use delete::{delete, delete_collection};
pub(crate) use read::{Selection, check_rv_params, get, list};
pub(crate) use write::{create, patch, seed_default_service_account, update};

/// Metadata the server owns: whatever a client sends for these is replaced.
const SERVER_META: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// How a write is recorded in managedFields.
#[derive(Debug)]
pub(crate) enum ManagedOp {
    Update,
    Apply {
        set: std::collections::BTreeSet<Path>,
        conflicts: Vec<Conflict>,
    },
}

fn storage_key(def: &ResourceDef, t: &Target, name: &str) -> String {
    key(
        if def.namespaced {
            t.namespace.as_deref()
        } else {
            None
        },
        name,
    )
}

fn name_of(t: &Target) -> &str {
    t.name.as_deref().unwrap_or("")
}

fn not_found(def: &ResourceDef, name: &str) -> ApiError {
    ApiError::not_found(def.plural, def.group, name)
}

/// Go's text for a JSON syntax error, with the snippet the API server appends.
fn parse_failure(def: &ResourceDef, body: &[u8], err: &serde_json::Error) -> ApiError {
    let reason = if err.is_eof() {
        "unexpected end of JSON input".to_owned()
    } else {
        let text = String::from_utf8_lossy(body);
        let line = text.lines().nth(err.line().saturating_sub(1)).unwrap_or("");
        let c = line
            .chars()
            .nth(err.column().saturating_sub(1))
            .unwrap_or(' ');
        format!("invalid character '{c}' looking for beginning of value")
    };
    let text = String::from_utf8_lossy(body);
    let snippet = if text.chars().count() > 30 {
        format!("{} ...", text.chars().take(30).collect::<String>())
    } else {
        text.into_owned()
    };
    ApiError::bad_request(format!(
        "the object provided is unrecognized (must be of type {}): couldn't get version/kind; \
         json parse error: {reason} ({snippet})",
        def.kind
    ))
}

/// Parses a request body into an object of `def`'s type, filling in apiVersion and kind.
pub(crate) fn parse_object(def: &ResourceDef, body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| parse_failure(def, body, &e))?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; \
             json parse error: json: cannot unmarshal {} into Go value of type struct",
            def.kind,
            crate::util::json_type_name(&value)
        )));
    };
    let api_version = def.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version \
                 ({api_version})"
            )));
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != def.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
        _ => {}
    }
    if map
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: metadata must be an object",
            def.kind, def.version, def.kind
        )));
    }
    map.insert("apiVersion".into(), api_version.into());
    map.insert("kind".into(), def.kind.into());
    Ok(Value::Object(map))
}

fn namespace_mismatch() -> ApiError {
    ApiError::bad_request(
        "the namespace of the provided object does not match the namespace sent on the request",
    )
}

/// Sets `metadata.namespace` from the URL, refusing a different one in the body.
fn settle_namespace(def: &ResourceDef, t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if !def.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url_ns = t.namespace.clone().unwrap_or_default();
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => return Err(namespace_mismatch()),
        _ => {}
    }
    meta.insert("namespace".into(), url_ns.into());
    Ok(())
}

/// Checks that a namespace exists and is not being deleted, for creates.
fn check_namespace(st: &Inner, def: &ResourceDef, t: &Target, name: &str) -> Result<(), ApiError> {
    if !def.namespaced {
        return Ok(());
    }
    let ns = t.namespace.as_deref().unwrap_or("");
    let Some(namespace) = st.get("namespaces", &key(None, ns)) else {
        return Err(ApiError::not_found("namespaces", "", ns));
    };
    if meta(namespace).is_some_and(|m| m.contains_key("deletionTimestamp")) {
        return Err(ApiError::forbidden(
            format!(
                "{} {name:?} is forbidden: unable to create new content in namespace {ns} because \
                 it is being terminated",
                qualified(def.plural, def.group)
            ),
            Details::object(name, def.group, def.plural),
        ));
    }
    Ok(())
}

/// Who writes, through which subresource, for managedFields.
fn writer<'a>(
    manager: &'a str,
    now: &'a str,
    sub: Option<Sub>,
    api_version: &'a str,
) -> Writer<'a> {
    match sub {
        Some(Sub::Status) => Writer {
            manager,
            api_version,
            subresource: Some("status"),
            scope: Scope::Status,
            now,
        },
        _ => Writer {
            manager,
            api_version,
            subresource: None,
            scope: Scope::Main,
            now,
        },
    }
}

fn has_deletion(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|v| !v.is_null()))
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
