//! Patch bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), an approximation of
//! strategic merge patch for built-in types, and the merge a server-side apply performs.

use serde_json::{Map, Value};

use crate::managed::list_keys;

/// The patch formats the PATCH verb accepts, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    /// The type for a Content-Type header value (parameters ignored).
    pub(crate) fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PatchError {
    /// The body is not valid for its patch type.
    #[error("{0}")]
    Decode(String),
    /// A JSON patch operation failed (missing path, failed test, ...).
    #[error("{0}")]
    Apply(String),
}

/// Applies a JSON merge patch: objects merge, `null` removes, arrays are replaced whole.
pub(crate) fn merge(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Decode(
            "merge patch body must be a JSON object".into(),
        ));
    }
    json_patch::merge(doc, patch);
    Ok(())
}

/// Applies a JSON patch (a list of operations).
pub(crate) fn json(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::Decode(e.to_string()))?;
    json_patch::patch(doc, &ops).map_err(|e| PatchError::Apply(e.to_string()))
}

/// Applies a strategic merge patch the way it treats the lists this cluster knows: lists
/// with a merge key merge item by item (`$patch: delete` removes one), other lists are
/// replaced. Other `$` directives are ignored.
pub(crate) fn strategic(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Decode(
            "strategic merge patch body must be a JSON object".into(),
        ));
    }
    strategic_value(doc, patch, "");
    Ok(())
}

fn strategic_value(doc: &mut Value, patch: &Value, field: &str) {
    match (doc, patch) {
        (Value::Object(target), Value::Object(changes)) => {
            for (k, v) in changes {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    target.remove(k);
                } else if let Some(existing) = target.get_mut(k) {
                    strategic_value(existing, v, k);
                } else {
                    let mut fresh = Value::Null;
                    strategic_value(&mut fresh, v, k);
                    target.insert(k.clone(), fresh);
                }
            }
        }
        (Value::Array(target), Value::Array(changes)) if list_keys(field).is_some() => {
            let keys = list_keys(field).unwrap_or_default();
            for change in changes {
                let pos = target.iter().position(|item| same_key(item, change, keys));
                let delete = change.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        target.remove(i);
                    }
                    (Some(i), false) => strategic_value(&mut target[i], change, ""),
                    (None, true) => {}
                    (None, false) => {
                        let mut fresh = Value::Null;
                        strategic_value(&mut fresh, change, "");
                        target.push(fresh);
                    }
                }
            }
        }
        (slot, Value::Object(changes)) => {
            let mut fresh = Value::Object(Map::new());
            strategic_value(&mut fresh, &Value::Object(changes.clone()), field);
            *slot = fresh;
        }
        (slot, other) => *slot = other.clone(),
    }
}

fn same_key(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| a.get(*k) == b.get(*k)) && keys.iter().any(|k| a.get(*k).is_some())
}

/// The merge of a server-side apply: objects merge recursively, keyed lists merge item by
/// item, everything else takes the applied value.
pub(crate) fn apply_merge(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(target), Value::Object(changes)) => {
            for (k, v) in changes {
                match target.get_mut(k) {
                    Some(existing) => apply_merge(existing, v, k),
                    None => {
                        target.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(changes)) if list_keys(field).is_some() => {
            let keys = list_keys(field).unwrap_or_default();
            for change in changes {
                match target.iter().position(|item| same_key(item, change, keys)) {
                    Some(i) => apply_merge(&mut target[i], change, ""),
                    None => target.push(change.clone()),
                }
            }
        }
        (slot, other) => *slot = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_replaces_arrays_whole() {
        let mut doc = json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}], "x": 1}});
        merge(
            &mut doc,
            &json!({"status": {"conditions": [{"type": "C"}]}}),
        )
        .expect("object");
        assert_eq!(
            doc,
            json!({"status": {"conditions": [{"type": "C"}], "x": 1}})
        );
        merge(&mut doc, &json!({"status": {"x": null}})).expect("object");
        assert!(doc["status"].get("x").is_none());
        assert!(merge(&mut doc, &json!([1])).is_err());
    }

    #[test]
    fn json_patch_appends_to_a_list() {
        let mut doc = json!({"status": {"conditions": [{"type": "A"}]}});
        let ops = json!([{"op": "add", "path": "/status/conditions/-", "value": {"type": "B"}}]);
        json(&mut doc, &ops).expect("valid patch");
        assert_eq!(doc["status"]["conditions"][1]["type"], "B");
        let bad = json!([{"op": "remove", "path": "/nope"}]);
        assert!(matches!(json(&mut doc, &bad), Err(PatchError::Apply(_))));
        assert!(matches!(
            json(&mut doc, &json!({"op": 1})),
            Err(PatchError::Decode(_))
        ));
    }

    #[test]
    fn strategic_merges_keyed_lists() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "image": "2"},
                                                    {"name": "b", "$patch": "delete"}]}});
        strategic(&mut doc, &patch).expect("object");
        assert_eq!(
            doc,
            json!({"spec": {"containers": [{"name": "a", "image": "2"}]}})
        );
    }

    #[test]
    fn apply_merges_conditions_by_type() {
        let mut live = json!({"status": {"conditions": [{"type": "A", "status": "True"},
                                                        {"type": "R", "status": "False"}]}});
        apply_merge(
            &mut live,
            &json!({"status": {"conditions": [{"type": "R", "status": "True"}]}}),
            "",
        );
        assert_eq!(live["status"]["conditions"][0]["type"], "A");
        assert_eq!(live["status"]["conditions"][1]["status"], "True");
    }
}
