//! Reads: get one object, and list a collection with selectors, paging and
//! resourceVersion semantics.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::kinds::external;
use crate::registry::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Ctx, Reply, Target};
use crate::status::{ApiError, Cause, Details};
use crate::store::Object;

use super::{name_of, not_found, storage_key};

/// GET one object.
pub(crate) fn get(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let name = name_of(t);
    let st = ctx.state.store.lock();
    let obj = st
        .get(t.def.storage, &storage_key(t.def, t, name))
        .ok_or_else(|| not_found(t.def, name))?;
    Ok(Reply::Object(200, external(t.def, obj)))
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

fn list_metadata(rv: u64, cont: Option<String>, remaining: Option<usize>, custom: bool) -> Value {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), rv.to_string().into());
    match (cont, custom) {
        (Some(c), _) => {
            metadata.insert("continue".into(), c.into());
        }
        (None, true) => {
            metadata.insert("continue".into(), "".into());
        }
        (None, false) => {}
    }
    if let Some(n) = remaining {
        metadata.insert("remainingItemCount".into(), n.into());
    }
    Value::Object(metadata)
}

/// A list answer written from the items' shared JSON text: `{"apiVersion", "items",
/// "kind", "metadata"}` in that order, as serde_json writes the object. Items of built-in
/// lists go without `apiVersion` and `kind`, as the API server writes them.
pub(super) fn list_reply(
    def: &ResourceDef,
    items: &[Arc<Object>],
    rv: u64,
    cont: Option<String>,
    remaining: Option<usize>,
) -> Reply {
    let metadata = list_metadata(rv, cont, remaining, def.custom);
    let item_text = |item: &Arc<Object>| {
        if def.custom {
            item.json().clone()
        } else {
            item.list_item_json().clone()
        }
    };
    let size: usize = items.iter().map(|i| item_text(i).len() + 1).sum();
    let mut out = Vec::with_capacity(size + 256);
    let text = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    out.extend_from_slice(b"{\"apiVersion\":");
    out.extend_from_slice(&text(&Value::String(def.api_version())));
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item_text(item));
    }
    out.extend_from_slice(b"],\"kind\":");
    out.extend_from_slice(&text(&Value::String(def.list_kind())));
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(&text(&metadata));
    out.push(b'}');
    Reply::JsonText(200, out)
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
            let objects: BTreeMap<String, Arc<Object>> = st
                .all(def.storage)
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect();
            (objects, st.current_rv(), None)
        }
    };
    drop(st);
    let mut selected = objects
        .into_iter()
        .filter(|(k, _)| start.as_ref().is_none_or(|s| k.as_str() >= s.as_str()))
        .map(|(k, v)| (k, external(def, &v)))
        .filter(|(k, v)| selection.matches(k, v));
    let mut items = Vec::new();
    let mut last_key = String::new();
    for (k, v) in selected.by_ref() {
        if limit > 0 && items.len() == limit {
            let rest = 1 + selected.count();
            let remaining = (!selection.filtered()).then_some(rest);
            let token = encode_continue(list_rv, &last_key);
            return Ok(list_reply(def, &items, list_rv, Some(token), remaining));
        }
        last_key = k;
        items.push(v);
    }
    Ok(list_reply(def, &items, list_rv, None, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    /// The list as a `Value`, the way it was built before lists were written from text.
    fn list_value(
        def: &ResourceDef,
        items: &[Arc<Object>],
        rv: u64,
        cont: Option<String>,
        remaining: Option<usize>,
    ) -> Value {
        let items: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut item = item.value().clone();
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
            "metadata": list_metadata(rv, cont, remaining, def.custom),
            "items": items,
        })
    }

    #[test]
    fn lists_written_from_text_are_the_lists_as_values() {
        let pods = lookup("", "v1", "pods").expect("pods");
        let crs = lookup("cert-manager.io", "v1", "certificaterequests").expect("crs");
        let pod = |name: &str| {
            Object::new(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"a": "\"quoted\""}}, "spec": {}}))
        };
        let cr = Object::new(json!({"apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest", "metadata": {"name": "c"}}));
        type Case = (
            &'static ResourceDef,
            Vec<Arc<Object>>,
            Option<String>,
            Option<usize>,
        );
        let cases: Vec<Case> = vec![
            (pods, vec![], None, None),
            (pods, vec![pod("a"), pod("b")], None, None),
            (pods, vec![pod("a")], Some("token".into()), Some(3)),
            (crs, vec![], None, None),
            (crs, vec![Arc::clone(&cr), cr], Some("t".into()), None),
        ];
        for (def, items, cont, remaining) in cases {
            let Reply::JsonText(200, text) = list_reply(def, &items, 7, cont.clone(), remaining)
            else {
                panic!("a JSON text answer");
            };
            let written: Value = serde_json::from_slice(&text).expect("valid JSON");
            assert_eq!(
                written,
                list_value(def, &items, 7, cont, remaining),
                "{}",
                def.plural
            );
        }
    }
}
