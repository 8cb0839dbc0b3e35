//! The verbs on stored resources: get, list, create, update, patch, delete and
//! deletecollection, with the server-side behaviour of a real API server (server-set
//! fields, optimistic concurrency, the status subresource, finalizers, graceful pod
//! deletion, managedFields).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use crate::kinds::{self, to_external, to_storage};
use crate::managed::{self, Conflict, Path, Scope, Writer};
use crate::patch::{self, PatchError, PatchType};
use crate::registry::{Hooks, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Ctx, Reply, Sub, Target};
use crate::status::{self, ApiError, Cause, Details, qualified};
use crate::store::{Inner, key};
use crate::util::{format_time, meta, meta_mut, meta_str, new_uid, now_time};

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
enum ManagedOp {
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

fn writer<'a>(
    def: &'a ResourceDef,
    manager: &'a str,
    now: &'a str,
    sub: Option<Sub>,
    api_version: &'a str,
) -> Writer<'a> {
    let _ = def;
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

fn list_of(
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
    let w = writer(def, &manager, &now, None, &api_version);
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
    let w = writer(def, &manager, &now, t.sub, &api_version);
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
            return apply_create(ctx, t, body, &manager);
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
    let w = writer(def, manager, &now, t.sub, &api_version);
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

fn apply_create(ctx: &Ctx<'_>, t: &Target, body: Value, manager: &str) -> Result<Reply, ApiError> {
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
    let _ = manager;
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

/// DELETE one object.
pub(crate) fn delete(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let name = name_of(t);
    let opts = delete_options(ctx)?;
    let mut st = ctx.state.store.lock();
    let stored = st
        .get(def.storage, &storage_key(def, t, name))
        .ok_or_else(|| not_found(def, name))?;
    let old = to_external(def, stored);
    let subject = || {
        let (prefix, _) = kinds::invalid_subject(def, name);
        (prefix, Details::object(name, def.group, def.kind))
    };
    if let Some(uid) = &opts.uid {
        let have = meta_str(&old, "uid");
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
        let have = meta_str(&old, "resourceVersion");
        if rv != have {
            let (prefix, details) = subject();
            let message = precondition_failed(&prefix, name, "ResourceVersion", rv, have);
            return Err(ApiError::conflict(
                format!("{message} been modified"),
                details,
            ));
        }
    }
    if def.hooks == Hooks::Namespace && matches!(name, "default" | "kube-system" | "kube-public") {
        return Err(ApiError::forbidden(
            format!("namespaces {name:?} is forbidden: this namespace may not be deleted"),
            Details::object(name, "", "namespaces"),
        ));
    }
    let (code, body) = delete_object(ctx, &mut st, t, name, old, &opts);
    Ok(Reply::Json(code, body))
}

/// Deletes (or starts deleting) one object; the answer's code and body.
fn delete_object(
    ctx: &Ctx<'_>,
    st: &mut Inner,
    t: &Target,
    name: &str,
    old: Value,
    opts: &DeleteOptions,
) -> (u16, Value) {
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
            obj
        } else {
            to_external(
                def,
                &st.replace(def.storage, k.clone(), to_storage(def, &obj)),
            )
        }
    };
    if def.hooks == Hooks::Namespace {
        if has_deletion(&old) {
            return (200, old);
        }
        let mut obj = old;
        meta_mut(&mut obj).insert("deletionTimestamp".into(), format_time(now).into());
        obj["status"] = json!({"phase": "Terminating"});
        let obj = store(st, obj);
        if !dry {
            crate::namespaces::schedule_cleanup(ctx.state, name);
        }
        return (200, obj);
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
                return (200, old);
            }
            let mut obj = old;
            let at = now
                .checked_add(SignedDuration::from_secs(grace))
                .unwrap_or(now);
            let meta = meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), format_time(at).into());
            meta.insert("deletionGracePeriodSeconds".into(), grace.into());
            bump_generation(&mut obj);
            return (200, store(st, obj));
        }
        let mut obj = old;
        if has_deletion(&obj) {
            let meta = meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), format_time(now).into());
            meta.insert("deletionGracePeriodSeconds".into(), 0.into());
            obj = store(st, obj);
        }
        if !dry {
            st.remove(def.storage, &k);
        }
        return (200, obj);
    }
    for (wanted, extra) in [(foreground, "foregroundDeletion"), (orphan, "orphan")] {
        if wanted && !fins.iter().any(|f| f == extra) {
            fins.push(extra.to_owned());
        }
    }
    if !fins.is_empty() {
        if has_deletion(&old) {
            return (200, old);
        }
        let mut obj = old;
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
        return (code, store(st, obj));
    }
    let uid = meta_str(&old, "uid").to_owned();
    let last = if dry {
        Some(old)
    } else {
        st.remove(def.storage, &k).map(|o| to_external(def, &o))
    };
    match (def.return_deleted_object, last) {
        (true, Some(obj)) => (200, obj),
        _ => (
            200,
            status::success_deleted(name, def.group, def.plural, &uid),
        ),
    }
}

/// DELETE a collection: every selected object, answered as the list of them.
pub(crate) fn delete_collection(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let selection = Selection::parse(ctx, t)?;
    let opts = delete_options(ctx)?;
    let mut st = ctx.state.store.lock();
    let chosen: Vec<(String, Value)> = st
        .all(def.storage)
        .map(|(k, v)| (k.clone(), to_external(def, v)))
        .filter(|(k, v)| selection.matches(k, v))
        .collect();
    let mut items = Vec::new();
    for (_, obj) in chosen {
        let name = meta_str(&obj, "name").to_owned();
        let one = Target {
            def,
            namespace: meta(&obj)
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: Some(name.clone()),
            sub: None,
        };
        delete_object(ctx, &mut st, &one, &name, obj.clone(), &opts);
        items.push(obj);
    }
    let rv = st.current_rv();
    Ok(Reply::ok(list_of(def, items, rv, None, None)))
}
