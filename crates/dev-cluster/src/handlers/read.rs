//! Reads: get one object, and list a collection with selectors, paging and
//! resourceVersion semantics.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::kinds::to_external;
use crate::registry::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Ctx, Reply, Target};
use crate::status::{ApiError, Cause, Details};

use super::{name_of, not_found, storage_key};

/// GET one object.
pub(crate) fn get(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let name = name_of(t);
    let st = ctx.state.store.lock();
    let obj = st
        .get(t.def.storage, &storage_key(t.def, t, name))
        .ok_or_else(|| not_found(t.def, name))?;
    Ok(Reply::ok(to_external(t.def, obj)))
}

/// The parsed list options shared by list and watch.
#[derive(Debug)]
pub(crate) struct Selection {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    pub(crate) namespace: Option<String>,
}

impl Selection {
    pub(crate) fn parse(ctx: &Ctx<'_>, t: &Target) -> Result<Selection, ApiError> {
        let labels = LabelSelector::parse(ctx.param("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(ctx.param("fieldSelector").unwrap_or(""), t.def)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let namespace = if t.def.namespaced {
            t.namespace.clone()
        } else {
            None
        };
        Ok(Selection {
            labels,
            fields,
            namespace,
        })
    }

    /// Whether a stored object (bucket key and external shape) is selected.
    pub(crate) fn matches(&self, key: &str, external: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && !key
                .strip_prefix(ns.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        {
            return false;
        }
        self.labels.matches_object(external) && self.fields.matches_object(external)
    }

    fn filtered(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }
}

/// Validates `resourceVersion`/`resourceVersionMatch` (422 like the API server).
pub(crate) fn check_rv_params(ctx: &Ctx<'_>) -> Result<Option<u64>, ApiError> {
    let rv = ctx.param("resourceVersion").filter(|v| !v.is_empty());
    let rv_match = ctx.param("resourceVersionMatch").filter(|v| !v.is_empty());
    let watch_list = ctx.flag("watch") && ctx.flag("sendInitialEvents");
    let subject = || Details::object("", "meta.k8s.io", "ListOptions");
    if let Some(m) = rv_match {
        if !matches!(m, "NotOlderThan" | "Exact") {
            let cause =
                Cause::not_supported("resourceVersionMatch", m, &["Exact", "NotOlderThan", ""]);
            return Err(ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "",
                subject(),
                vec![cause],
            ));
        }
        if rv.is_none() && !watch_list {
            let cause = Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            );
            return Err(ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "",
                subject(),
                vec![cause],
            ));
        }
    }
    match rv {
        None => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {text:?}"))),
    }
}

pub(super) fn list_of(
    def: &ResourceDef,
    items: Vec<Value>,
    rv: u64,
    cont: Option<String>,
    remaining: Option<usize>,
) -> Value {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), rv.to_string().into());
    match (&cont, def.custom) {
        (Some(c), _) => {
            metadata.insert("continue".into(), c.clone().into());
        }
        (None, true) => {
            metadata.insert("continue".into(), "".into());
        }
        (None, false) => {}
    }
    if let Some(n) = remaining {
        metadata.insert("remainingItemCount".into(), n.into());
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if !def.custom
                && let Value::Object(map) = &mut item
            {
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        })
        .collect();
    json!({
        "apiVersion": def.api_version(),
        "kind": def.list_kind(),
        "metadata": Value::Object(metadata),
        "items": items,
    })
}

const BAD_CONTINUE: &str =
    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)";

fn encode_continue(rv: u64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")});
    URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(text: &str) -> Option<(u64, String)> {
    let raw = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
    let token: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        token.get("rv")?.as_u64()?,
        token.get("start")?.as_str()?.to_owned(),
    ))
}

/// LIST a collection.
pub(crate) fn list(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let selection = Selection::parse(ctx, t)?;
    let rv = check_rv_params(ctx)?;
    let limit = match ctx.param("limit").filter(|l| !l.is_empty()) {
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {text:?}")))?,
        None => 0,
    };
    let st = ctx.state.store.lock();
    let (objects, list_rv, start) = match ctx.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, start) =
                decode_continue(token).ok_or_else(|| ApiError::bad_request(BAD_CONTINUE))?;
            let objects = st.snapshot(def.storage, rv).map_err(|_| {
                ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                )
            })?;
            (objects, rv, Some(start))
        }
        None if ctx.param("resourceVersionMatch") == Some("Exact") => {
            let rv = rv.unwrap_or(0);
            let objects = st.snapshot(def.storage, rv).map_err(|_| {
                ApiError::expired("The resourceVersion for the provided list is too old.")
            })?;
            (objects, rv, None)
        }
        None => {
            let objects: BTreeMap<String, Value> = st
                .all(def.storage)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (objects, st.current_rv(), None)
        }
    };
    drop(st);
    let mut selected = objects
        .into_iter()
        .filter(|(k, _)| start.as_ref().is_none_or(|s| k.as_str() >= s.as_str()))
        .map(|(k, v)| (k, to_external(def, &v)))
        .filter(|(k, v)| selection.matches(k, v));
    let mut items = Vec::new();
    let mut last_key = String::new();
    for (k, v) in selected.by_ref() {
        if limit > 0 && items.len() == limit {
            let rest = 1 + selected.count();
            let remaining = (!selection.filtered()).then_some(rest);
            let token = encode_continue(list_rv, &last_key);
            return Ok(Reply::ok(list_of(
                def,
                items,
                list_rv,
                Some(token),
                remaining,
            )));
        }
        last_key = k;
        items.push(v);
    }
    Ok(Reply::ok(list_of(def, items, list_rv, None, None)))
}
