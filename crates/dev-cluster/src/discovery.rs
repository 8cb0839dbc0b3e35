//! Discovery documents built from the registry: `/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/<group>` and `/apis/<group>/<version>`.
//!
//! `/apis` always answers the legacy `APIGroupList`, even when a client asks for
//! aggregated discovery: kube and kubectl then fall back to per-group documents.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::registry::{RESOURCES, ResourceDef, VIRTUAL, group_versions};
use crate::server::{AppState, Reply};

/// `/version`: pretty-printed, without a trailing newline, as the API server sends it.
pub(crate) fn version() -> Reply {
    let info = json!({
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "35",
        "gitVersion": "v1.36.0-nico-dev",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none (nico-dev-cluster, Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    });
    Reply::Raw {
        code: 200,
        content_type: "application/json",
        body: serde_json::to_string_pretty(&info).unwrap_or_default(),
    }
}

/// `/api`.
pub(crate) fn core_versions(state: &Arc<AppState>) -> Reply {
    Reply::ok(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": state.server_address},
        ],
    }))
}

fn version_entry(group: &str, version: &str) -> Value {
    json!({"groupVersion": format!("{group}/{version}"), "version": version})
}

fn group_entry(group: &str) -> Option<Value> {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| version_entry(g, v))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

/// `/apis`.
pub(crate) fn group_list() -> Reply {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.into_iter().filter_map(group_entry).collect();
    Reply::ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

/// `/apis/<group>`.
pub(crate) fn group(group: &str) -> Option<Reply> {
    let mut entry = group_entry(group)?;
    if let Value::Object(map) = &mut entry {
        map.insert("kind".into(), "APIGroup".into());
        map.insert("apiVersion".into(), "v1".into());
    }
    Some(Reply::ok(entry))
}

fn resource_entry(def: &ResourceDef) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), def.plural.into());
    map.insert("singularName".into(), def.singular.into());
    map.insert("namespaced".into(), def.namespaced.into());
    map.insert("kind".into(), def.kind.into());
    map.insert("verbs".into(), json!(def.verbs.list()));
    if !def.short_names.is_empty() {
        map.insert("shortNames".into(), json!(def.short_names));
    }
    if !def.categories.is_empty() {
        map.insert("categories".into(), json!(def.categories));
    }
    map.insert("storageVersionHash".into(), def.storage_version_hash.into());
    Value::Object(map)
}

fn sub_entry(def: &ResourceDef, sub: &str, kind: &str, verbs: &[&str]) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("name".into(), format!("{}/{sub}", def.plural).into());
    map.insert("singularName".into(), "".into());
    map.insert("namespaced".into(), def.namespaced.into());
    map.insert("kind".into(), kind.into());
    map.insert("verbs".into(), json!(verbs));
    map
}

/// `/api/v1` (no apiVersion key, as served) or `/apis/<group>/<version>`.
pub(crate) fn resource_list(group: &str, version: &str) -> Reply {
    let mut resources = Vec::new();
    for def in RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        resources.push(resource_entry(def));
        if def.status_subresource {
            resources.push(Value::Object(sub_entry(
                def,
                "status",
                def.kind,
                &["get", "patch", "update"],
            )));
        }
        if def.group.is_empty() && def.plural == "serviceaccounts" {
            let mut token = sub_entry(def, "token", "TokenRequest", &["create"]);
            token.insert("group".into(), "authentication.k8s.io".into());
            token.insert("version".into(), "v1".into());
            resources.push(Value::Object(token));
        }
    }
    for v in VIRTUAL
        .iter()
        .filter(|v| v.group == group && v.version == version)
    {
        let singular = v.plural.trim_end_matches('s');
        resources.push(
            json!({"name": v.plural, "singularName": singular, "namespaced": v.namespaced,
                   "kind": v.kind, "verbs": ["create"]}),
        );
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut list = json!({
        "kind": "APIResourceList",
        "groupVersion": group_version,
        "resources": resources,
    });
    if !group.is_empty() {
        list["apiVersion"] = "v1".into();
    }
    Reply::ok(list)
}
