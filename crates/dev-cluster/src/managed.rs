//! `metadata.managedFields`: which manager owns which fields.
//!
//! An object is flattened into nodes addressed by paths of `fieldsV1` elements (`f:name`,
//! `k:{"type":"Ready"}` for items of keyed lists, `v:"x"` for items of set lists). An
//! `Update` gives its manager every node it added or changed and takes those nodes from the
//! other managers; an `Apply` gives its manager exactly the applied nodes and reports the
//! leaves other managers own with a different value as conflicts. Nodes that no longer exist
//! are dropped from every entry, and an entry left empty disappears.
//!
//! Which object nodes count as members themselves (the `"."` key) follows the API server:
//! every object node of a custom resource, but only map-typed fields (labels, annotations,
//! ConfigMap data, ...) of a built-in type, whose other structs are plain containers.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::registry::ResourceDef;

/// One element of a field path, in its `fieldsV1` spelling.
pub(crate) type Path = Vec<String>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource: everything but `status` when there is a status subresource.
    Main,
    /// The status subresource: only `status`.
    Status,
    /// A create-only endpoint (TokenRequest, reviews): the whole body.
    Whole,
}

#[derive(Debug, Clone, PartialEq)]
enum Node<'a> {
    /// A leaf with its value (scalars, atomic lists and structs, empty objects), borrowed
    /// from the object walked.
    Leaf(Cow<'a, Value>),
    /// An object or list node; `member` says whether it is in an Update's set itself.
    Container { member: bool },
    /// An item of a keyed or set list: always a member.
    Item,
}

/// Metadata fields the server owns; they are never tracked.
const UNTRACKED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The keys of a keyed list, by the list's field name.
pub(crate) fn list_keys(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "conditions" => &["type"],
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" => &["name"],
        "volumeMounts" => &["mountPath"],
        "ports" => &["containerPort", "protocol"],
        "ownerReferences" => &["uid"],
        "webhooks" => &["name"],
        _ => return None,
    })
}

struct Walker<'d, 'a> {
    def: &'d ResourceDef,
    nodes: BTreeMap<Path, Node<'a>>,
}

impl<'a> Walker<'_, 'a> {
    fn walk_field(&mut self, path: &mut Path, dotted: &str, name: &str, value: &'a Value) {
        if value.is_null() {
            return;
        }
        path.push(format!("f:{name}"));
        let dotted = if dotted.is_empty() {
            name.to_owned()
        } else {
            format!("{dotted}.{name}")
        };
        self.walk_value(path, &dotted, name, value);
        path.pop();
    }

    /// An object node and its fields: a container unless it is empty or atomic.
    fn walk_map(
        &mut self,
        path: &mut Path,
        dotted: &str,
        fields: &[(&'a String, &'a Value)],
    ) -> bool {
        if fields.is_empty() || self.def.atomic_fields.contains(&dotted) {
            return false;
        }
        let member = if self.def.custom {
            dotted != "metadata"
        } else {
            matches!(dotted, "metadata.labels" | "metadata.annotations")
                || self.def.map_fields.contains(&dotted)
        };
        self.nodes.insert(path.clone(), Node::Container { member });
        for (k, v) in fields {
            self.walk_field(path, dotted, k, v);
        }
        true
    }

    /// `metadata` without the fields the server owns, which are never tracked.
    fn walk_metadata(&mut self, path: &mut Path, meta: &'a Map<String, Value>) {
        let kept: Vec<(&'a String, &'a Value)> = meta
            .iter()
            .filter(|(k, _)| !UNTRACKED_META.contains(&k.as_str()))
            .collect();
        if kept.is_empty() {
            return;
        }
        path.push("f:metadata".to_owned());
        if !self.walk_map(path, "metadata", &kept) {
            let leaf = kept
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.nodes
                .insert(path.clone(), Node::Leaf(Cow::Owned(Value::Object(leaf))));
        }
        path.pop();
    }

    fn walk_value(&mut self, path: &mut Path, dotted: &str, name: &str, value: &'a Value) {
        match value {
            Value::Object(map) if !map.is_empty() && !self.def.atomic_fields.contains(&dotted) => {
                let fields: Vec<(&'a String, &'a Value)> = map.iter().collect();
                self.walk_map(path, dotted, &fields);
            }
            Value::Array(items) if dotted == "metadata.finalizers" => {
                self.nodes.insert(
                    path.clone(),
                    Node::Container {
                        member: self.def.custom,
                    },
                );
                for item in items {
                    path.push(format!("v:{item}"));
                    self.nodes.insert(path.clone(), Node::Item);
                    path.pop();
                }
            }
            Value::Array(items) if !items.is_empty() && keyed(name, items).is_some() => {
                let keys = keyed(name, items).unwrap_or_default();
                let member = self.def.custom || self.def.map_fields.contains(&dotted);
                self.nodes.insert(path.clone(), Node::Container { member });
                for (item, key) in items.iter().zip(keys) {
                    path.push(key);
                    self.nodes.insert(path.clone(), Node::Item);
                    if let Value::Object(fields) = item {
                        for (k, v) in fields {
                            self.walk_field(path, dotted, k, v);
                        }
                    }
                    path.pop();
                }
            }
            other => {
                self.nodes
                    .insert(path.clone(), Node::Leaf(Cow::Borrowed(other)));
            }
        }
    }
}

/// The `k:{...}` elements of a keyed list, or None when the list must be treated as atomic
/// (unknown list, items without their keys, duplicate keys).
fn keyed(name: &str, items: &[Value]) -> Option<Vec<String>> {
    let keys = list_keys(name)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let obj = item.as_object()?;
        let mut key = Map::new();
        for k in keys {
            match obj.get(*k) {
                Some(v) if !v.is_null() => {
                    key.insert((*k).to_owned(), v.clone());
                }
                // A port without protocol is keyed by its port alone.
                _ if *k == "protocol" => {}
                _ => return None,
            }
        }
        let text = format!("k:{}", Value::Object(key));
        if out.contains(&text) {
            return None;
        }
        out.push(text);
    }
    Some(out)
}

fn nodes<'a>(def: &ResourceDef, obj: &'a Value, scope: Scope) -> BTreeMap<Path, Node<'a>> {
    let mut walker = Walker {
        def,
        nodes: BTreeMap::new(),
    };
    let Some(map) = obj.as_object() else {
        return walker.nodes;
    };
    let mut path = Path::new();
    for (key, value) in map {
        let take = match (key.as_str(), scope) {
            ("apiVersion" | "kind", Scope::Main | Scope::Status) => false,
            ("status", Scope::Main) => !def.status_subresource,
            (_, Scope::Main) => true,
            ("status", Scope::Status) => true,
            (_, Scope::Status) => false,
            ("apiVersion" | "kind" | "metadata", Scope::Whole) => false,
            (_, Scope::Whole) => true,
        };
        if !take {
            continue;
        }
        if key == "metadata" {
            if let Some(meta) = value.as_object() {
                walker.walk_metadata(&mut path, meta);
            }
        } else {
            walker.walk_field(&mut path, "", key, value);
        }
    }
    walker.nodes
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    /// `Update` or `Apply`.
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: String,
    pub(crate) subresource: Option<String>,
    pub(crate) set: BTreeSet<Path>,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": set_to_fields(&self.set),
        });
        if let (Some(sub), Some(map)) = (&self.subresource, v.as_object_mut()) {
            map.insert("subresource".into(), sub.clone().into());
        }
        v
    }
}

/// Renders a set of paths as a `fieldsV1` tree.
pub(crate) fn set_to_fields(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for (i, elem) in path.iter().enumerate() {
            let child = cur
                .entry(elem.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(child) = child else { break };
            cur = child;
            let last = i + 1 == path.len();
            if last
                && set
                    .range(path.clone()..)
                    .nth(1)
                    .is_some_and(|next| next.starts_with(path))
            {
                cur.insert(".".into(), Value::Object(Map::new()));
            }
        }
    }
    Value::Object(root)
}

fn fields_to_set(fields: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, child) in map {
        if key == "." {
            out.insert(prefix.clone());
            continue;
        }
        prefix.push(key.clone());
        if child.as_object().is_some_and(Map::is_empty) {
            out.insert(prefix.clone());
        } else {
            fields_to_set(child, prefix, out);
        }
        prefix.pop();
    }
}

/// Reads the entries of an object's `metadata.managedFields`, skipping malformed ones.
pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
            let mut set = BTreeSet::new();
            fields_to_set(
                e.get("fieldsV1").unwrap_or(&Value::Null),
                &mut Path::new(),
                &mut set,
            );
            Some(Entry {
                manager: s("manager")?,
                operation: s("operation")?,
                api_version: s("apiVersion").unwrap_or_default(),
                time: s("time").unwrap_or_default(),
                subresource: s("subresource"),
                set,
            })
        })
        .collect()
}

/// Writes entries into `metadata.managedFields`, sorted as the API server sorts them, or
/// removes the key when there is none.
pub(crate) fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            a.operation.as_str(),
            a.time.as_str(),
            a.manager.as_str(),
            a.subresource.as_deref(),
        )
            .cmp(&(
                b.operation.as_str(),
                b.time.as_str(),
                b.manager.as_str(),
                b.subresource.as_deref(),
            ))
    });
    let meta = crate::util::meta_mut(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            entries.iter().map(Entry::to_json).collect(),
        );
    }
}

/// Who is writing, and through which subresource.
#[derive(Debug, Clone)]
pub(crate) struct Writer<'a> {
    pub(crate) manager: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) scope: Scope,
    pub(crate) now: &'a str,
}

/// Recomputes managedFields for an `Update` from `old` to `new` (pass `Value::Null` as `old`
/// on create) and stores them in `new`.
pub(crate) fn record_update(def: &ResourceDef, old: &Value, new: &mut Value, w: &Writer<'_>) {
    let mut entries = read_entries(old);
    let before = nodes(def, old, w.scope);
    let after = nodes(def, new, w.scope);
    let changed: BTreeSet<Path> = after
        .iter()
        .filter(|(path, node)| match node {
            Node::Leaf(v) => before.get(*path) != Some(&Node::Leaf(v.clone())),
            Node::Container { member: true } | Node::Item => !before.contains_key(*path),
            Node::Container { member: false } => false,
        })
        .map(|(path, _)| path.clone())
        .collect();
    for entry in &mut entries {
        if !entry.same_owner(w.manager, "Update", w.subresource) {
            entry.set.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_owner(w.manager, "Update", w.subresource))
        {
            Some(entry) => {
                entry.set.extend(changed);
                entry.time = w.now.to_owned();
                entry.api_version = w.api_version.to_owned();
            }
            None => entries.push(Entry {
                manager: w.manager.to_owned(),
                operation: "Update".into(),
                api_version: w.api_version.to_owned(),
                time: w.now.to_owned(),
                subresource: w.subresource.map(str::to_owned),
                set: changed,
            }),
        }
    }
    // The nodes of the write's scope are known already; only the other scope is walked.
    let other = match w.scope {
        Scope::Main => Some(nodes(def, new, Scope::Status)),
        Scope::Status => Some(nodes(def, new, Scope::Main)),
        Scope::Whole => None,
    };
    match other {
        Some(other) => {
            for entry in &mut entries {
                entry
                    .set
                    .retain(|p| after.contains_key(p) || other.contains_key(p));
            }
        }
        None => prune(def, new, &mut entries),
    }
    drop(after);
    write_entries(new, entries);
}

/// Drops paths that no longer exist in `obj` from every entry.
fn prune(def: &ResourceDef, obj: &Value, entries: &mut [Entry]) {
    let mut all = nodes(def, obj, Scope::Main);
    all.extend(nodes(def, obj, Scope::Status));
    for entry in entries {
        entry.set.retain(|p| all.contains_key(p));
    }
}

/// The nodes an `Apply` of `applied` claims: leaves and list items, no plain containers.
pub(crate) fn apply_set(def: &ResourceDef, applied: &Value, scope: Scope) -> BTreeSet<Path> {
    nodes(def, applied, scope)
        .into_iter()
        .filter(|(_, n)| !matches!(n, Node::Container { .. }))
        .map(|(p, _)| p)
        .collect()
}

/// A field another manager owns with a different value than an apply sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) manager: String,
    pub(crate) subresource: Option<String>,
    pub(crate) api_version: String,
    pub(crate) path: Path,
}

/// The conflicts of applying `applied` over `live` as `manager`.
pub(crate) fn apply_conflicts(
    def: &ResourceDef,
    live: &Value,
    applied: &Value,
    scope: Scope,
    w: &Writer<'_>,
) -> Vec<Conflict> {
    let live_nodes = nodes(def, live, scope);
    let applied_nodes = nodes(def, applied, scope);
    let entries = read_entries(live);
    let mut out = Vec::new();
    for (path, node) in &applied_nodes {
        let Node::Leaf(value) = node else { continue };
        match live_nodes.get(path) {
            Some(Node::Leaf(live_value)) if live_value == value => continue,
            None => continue,
            _ => {}
        }
        for e in &entries {
            if !e.same_owner(w.manager, "Apply", w.subresource) && e.set.contains(path) {
                out.push(Conflict {
                    manager: e.manager.clone(),
                    subresource: e.subresource.clone(),
                    api_version: e.api_version.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    out
}

/// Records an `Apply`: the manager owns exactly `set`; with `force`, the conflicting paths
/// are taken from their owners.
pub(crate) fn record_apply(
    def: &ResourceDef,
    live: &Value,
    new: &mut Value,
    set: BTreeSet<Path>,
    conflicts: &[Conflict],
    w: &Writer<'_>,
) {
    let mut entries = read_entries(live);
    for entry in &mut entries {
        if entry.same_owner(w.manager, "Apply", w.subresource) {
            continue;
        }
        entry.set.retain(|p| {
            !conflicts.iter().any(|c| {
                &c.path == p && c.manager == entry.manager && c.subresource == entry.subresource
            })
        });
    }
    match entries
        .iter_mut()
        .find(|e| e.same_owner(w.manager, "Apply", w.subresource))
    {
        Some(entry) => {
            if entry.set != set {
                entry.time = w.now.to_owned();
            }
            entry.set = set;
            entry.api_version = w.api_version.to_owned();
        }
        None => entries.push(Entry {
            manager: w.manager.to_owned(),
            operation: "Apply".into(),
            api_version: w.api_version.to_owned(),
            time: w.now.to_owned(),
            subresource: w.subresource.map(str::to_owned),
            set,
        }),
    }
    prune(def, new, &mut entries);
    write_entries(new, entries);
}

/// The paths an apply manager owned before and no longer applies, and nobody else owns:
/// an apply removes these fields from the object.
pub(crate) fn released_paths(live: &Value, set: &BTreeSet<Path>, w: &Writer<'_>) -> Vec<Path> {
    let entries = read_entries(live);
    let Some(mine) = entries
        .iter()
        .find(|e| e.same_owner(w.manager, "Apply", w.subresource))
    else {
        return Vec::new();
    };
    mine.set
        .iter()
        .filter(|p| !set.contains(*p))
        .filter(|p| {
            !entries
                .iter()
                .any(|e| !e.same_owner(w.manager, "Apply", w.subresource) && e.set.contains(*p))
        })
        .cloned()
        .collect()
}

/// Renders a path the way apply conflicts name it: `.status.conditions[type="Ready"].status`.
pub(crate) fn render_path(path: &Path) -> String {
    let mut out = String::new();
    for elem in path {
        if let Some(name) = elem.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = elem.strip_prefix("k:") {
            let parsed: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = elem.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// Removes the node at `path` from `obj`, if it is there.
pub(crate) fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for elem in parents {
        let next = match locate(cur, elem) {
            Some(Loc::Key(k)) => cur.get_mut(&k),
            Some(Loc::Index(i)) => cur.get_mut(i),
            None => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (locate(cur, last), cur) {
        (Some(Loc::Key(k)), Value::Object(map)) => {
            map.remove(&k);
        }
        (Some(Loc::Index(i)), Value::Array(items)) => {
            items.remove(i);
        }
        _ => {}
    }
}

enum Loc {
    Key(String),
    Index(usize),
}

fn locate(cur: &Value, elem: &str) -> Option<Loc> {
    if let Some(name) = elem.strip_prefix("f:") {
        return cur.get(name).map(|_| Loc::Key(name.to_owned()));
    }
    let items = cur.as_array()?;
    if let Some(key) = elem.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items
            .iter()
            .position(|item| want.iter().all(|(k, v)| item.get(k) == Some(v)))
            .map(Loc::Index);
    }
    let want: Value = serde_json::from_str(elem.strip_prefix("v:")?).ok()?;
    items.iter().position(|item| *item == want).map(Loc::Index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    fn def(group: &str, plural: &str) -> &'static ResourceDef {
        lookup(group, "v1", plural).unwrap_or_else(|| panic!("{plural} registered"))
    }

    fn writer<'a>(manager: &'a str, sub: Option<&'a str>, scope: Scope) -> Writer<'a> {
        Writer {
            manager,
            api_version: "cert-manager.io/v1",
            subresource: sub,
            scope,
            now: "t",
        }
    }

    #[test]
    fn create_of_a_custom_resource_has_dots_on_object_nodes() {
        let cr = def("cert-manager.io", "certificaterequests");
        let mut obj = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"request": "r", "issuerRef": {"name": "i"}, "usages": ["a", "b"]}});
        record_update(cr, &Value::Null, &mut obj, &writer("m", None, Scope::Main));
        assert_eq!(
            obj["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}},
                   "f:spec": {".": {}, "f:issuerRef": {".": {}, "f:name": {}},
                              "f:request": {}, "f:usages": {}}})
        );
    }

    #[test]
    fn built_in_structs_are_not_members() {
        let pod = def("", "pods");
        let mut obj = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}});
        record_update(pod, &Value::Null, &mut obj, &writer("m", None, Scope::Main));
        assert_eq!(
            obj["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                ".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}}}})
        );
    }

    #[test]
    fn forced_apply_takes_only_the_conflicting_leaves() {
        let cr = def("cert-manager.io", "certificaterequests");
        let mut live = json!({"metadata": {"name": "a"}, "status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": "t0"}]}});
        let old = json!({"metadata": {"name": "a"}});
        record_update(
            cr,
            &old,
            &mut live,
            &writer("rec", Some("status"), Scope::Status),
        );
        let applied = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t0"}]}});
        let w = writer("signer", Some("status"), Scope::Status);
        let conflicts = apply_conflicts(cr, &live, &applied, Scope::Status, &w);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(
            render_path(&conflicts[0].path),
            ".status.conditions[type=\"Ready\"].status"
        );
        let mut new = json!({"metadata": live["metadata"].clone(), "status": applied["status"]});
        let set = apply_set(cr, &applied, Scope::Status);
        record_apply(cr, &live, &mut new, set, &conflicts, &w);
        let entries = read_entries(&new);
        let rec = entries
            .iter()
            .find(|e| e.manager == "rec")
            .expect("recorder keeps some");
        let item = |leaf: &str| -> Path {
            ["f:status", "f:conditions", "k:{\"type\":\"Ready\"}", leaf]
                .map(String::from)
                .to_vec()
        };
        assert!(
            !rec.set.contains(&item("f:status")),
            "the conflicting leaf moved"
        );
        assert!(
            rec.set.contains(&item("f:lastTransitionTime")),
            "an equal value stays shared"
        );
        assert_eq!(entries[0].operation, "Apply", "Apply sorts first");
    }

    #[test]
    fn fields_round_trip() {
        let fields = json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"x\"": {}}},
                            "f:spec": {".": {}, "f:a": {}}});
        let mut set = BTreeSet::new();
        fields_to_set(&fields, &mut Path::new(), &mut set);
        assert_eq!(set_to_fields(&set), fields);
    }
}
