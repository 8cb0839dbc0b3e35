//! Kind-specific behaviour: decoding checks, defaulting, admission, validation, and the two
//! shapes of Events.
//!
//! The order mirrors the API server's request pipeline: decoding (bad times give 400),
//! defaulting (fields the writer is credited with in managedFields), admission and the
//! create strategy (fields nobody is credited with), then validation (422).

mod roles;
mod service;
mod webhooks;

pub(crate) use service::allocate as allocate_service_ip;

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::registry::{Hooks, ResourceDef};
use crate::status::{ApiError, Cause, Details};
use crate::store::Object;
use crate::util::{format_micro_time, format_time, json_type_name, meta_mut, parse_time};

/// Go's layouts, quoted in the API server's decoding errors.
const MICRO_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";
const TIME_LAYOUT: &str = "2006-01-02T15:04:05Z07:00";

fn decode_error(def: &ResourceDef, detail: String) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: {detail}",
        kind = def.kind,
        version = def.version
    ))
}

/// Checks and normalises a time field at `ptr`: `micro` for MicroTime, else Time.
fn normalise_time(
    def: &ResourceDef,
    obj: &mut Value,
    ptr: &str,
    micro: bool,
) -> Result<(), ApiError> {
    let Some(slot) = obj.pointer_mut(ptr) else {
        return Ok(());
    };
    let layout = if micro { MICRO_LAYOUT } else { TIME_LAYOUT };
    match slot {
        Value::Null => Ok(()),
        Value::String(text) => {
            let Some(ts) = parse_time(text) else {
                let head = if text.len() >= 4 && text[..4].bytes().all(|b| b.is_ascii_digit()) {
                    layout
                } else {
                    "2006"
                };
                return Err(decode_error(
                    def,
                    format!(
                        "parsing time {text:?} as {layout:?}: cannot parse {text:?} as {head:?}"
                    ),
                ));
            };
            *slot = Value::String(if micro {
                format_micro_time(ts)
            } else {
                format_time(ts)
            });
            Ok(())
        }
        other => Err(decode_error(
            def,
            format!(
                "json: cannot unmarshal {} into a time field",
                json_type_name(other)
            ),
        )),
    }
}

/// Decoding: the checks a typed decoder makes before anything else (400 on failure).
pub(crate) fn decode(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    match def.hooks {
        Hooks::Lease => {
            normalise_time(def, obj, "/spec/acquireTime", true)?;
            normalise_time(def, obj, "/spec/renewTime", true)?;
        }
        Hooks::EventsV1Event => {
            normalise_time(def, obj, "/eventTime", true)?;
            normalise_time(def, obj, "/deprecatedFirstTimestamp", false)?;
            normalise_time(def, obj, "/deprecatedLastTimestamp", false)?;
        }
        Hooks::CoreEvent => {
            normalise_time(def, obj, "/eventTime", true)?;
            normalise_time(def, obj, "/firstTimestamp", false)?;
            normalise_time(def, obj, "/lastTimestamp", false)?;
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// Defaulting done while decoding: the writer is credited with these fields.
pub(crate) fn default_fields(def: &ResourceDef, obj: &mut Value) {
    match def.hooks {
        Hooks::Namespace => {
            let name = crate::util::meta_str(obj, "name").to_owned();
            let meta = meta_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(labels) = labels {
                labels.insert("kubernetes.io/metadata.name".into(), name.into());
            }
        }
        Hooks::Pod => default_pod(obj),
        Hooks::Secret => {
            if let Value::Object(map) = obj {
                set_default(map, "type", "Opaque".into());
            }
        }
        Hooks::Service => service::default_fields(obj),
        Hooks::MutatingWebhooks => webhooks::default_fields(obj, true),
        Hooks::ValidatingWebhooks => webhooks::default_fields(obj, false),
        _ => {}
    }
}

fn default_pod(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            set_default(c, "resources", json!({}));
            set_default(c, "terminationMessagePath", "/dev/termination-log".into());
            set_default(c, "terminationMessagePolicy", "File".into());
            let policy = pull_policy(c.get("image").and_then(Value::as_str).unwrap_or(""));
            set_default(c, "imagePullPolicy", policy.into());
        }
    }
    set_default(spec, "restartPolicy", "Always".into());
    set_default(spec, "terminationGracePeriodSeconds", 30.into());
    set_default(spec, "dnsPolicy", "ClusterFirst".into());
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", "default-scheduler".into());
    set_default(spec, "enableServiceLinks", true.into());
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        set_default(spec, "serviceAccount", sa);
    }
}

/// Admission plugins and the create strategy: fields set here are credited to nobody.
pub(crate) fn admit_create(def: &ResourceDef, obj: &mut Value) {
    match def.hooks {
        Hooks::Namespace => {
            if let Value::Object(map) = obj {
                map.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
                map.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        Hooks::Pod => admit_pod(obj),
        Hooks::Service => service::admit_create(obj),
        _ => {}
    }
}

fn admit_pod(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let spec = map.entry("spec").or_insert_with(|| json!({}));
    let mut best_effort = true;
    if let Value::Object(spec) = spec {
        set_default(spec, "serviceAccountName", "default".into());
        let sa = spec
            .get("serviceAccountName")
            .cloned()
            .unwrap_or(Value::Null);
        set_default(spec, "serviceAccount", sa);
        let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
        if let Value::Array(list) = tolerations {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                if !list
                    .iter()
                    .any(|t| t.get("key").and_then(Value::as_str) == Some(key))
                {
                    list.push(
                        json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                     "tolerationSeconds": 300}),
                    );
                }
            }
        }
        set_default(spec, "priority", 0.into());
        set_default(spec, "preemptionPolicy", "PreemptLowerPriority".into());
        best_effort = spec
            .get("containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .all(|c| c.get("resources").is_none_or(|r| r == &json!({})))
            })
            .unwrap_or(true);
    }
    let qos = if best_effort {
        "BestEffort"
    } else {
        "Burstable"
    };
    map.insert(
        "status".into(),
        json!({"phase": "Pending", "qosClass": qos}),
    );
}

/// How a kind is named in 422 messages, and the `details` that go with it.
pub(crate) fn invalid_subject(def: &ResourceDef, name: &str) -> (String, Details) {
    if def.hooks == Hooks::EventsV1Event || def.group.is_empty() {
        // Both Event APIs validate as the core Event.
        (def.kind.to_owned(), Details::object(name, "", def.kind))
    } else {
        (
            format!("{}.{}", def.kind, def.group),
            Details::object(name, def.group, def.kind),
        )
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
    (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
    characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
    or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS subdomain (RFC 1123).
pub(crate) fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Validation (422). `name` is the object's name.
pub(crate) fn validate(def: &ResourceDef, obj: &Value, name: &str) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let name_ok = if def.hooks == Hooks::Namespace {
        is_label(name)
    } else {
        is_subdomain(name)
    };
    if !name_ok {
        let msg = if def.hooks == Hooks::Namespace {
            LABEL_MSG
        } else {
            SUBDOMAIN_MSG
        };
        causes.push(Cause::invalid("metadata.name", &format!("{name:?}"), msg));
    }
    match def.hooks {
        Hooks::CertificateRequest => validate_cr(obj, &mut causes),
        Hooks::EventsV1Event => validate_event_v1(obj, &mut causes),
        Hooks::Pod => validate_pod(obj, &mut causes),
        Hooks::Service => service::validate(obj, &mut causes),
        Hooks::Role => roles::validate_role(obj, def.namespaced, &mut causes),
        Hooks::Binding => roles::validate_binding(obj, def.namespaced, &mut causes),
        Hooks::MutatingWebhooks => webhooks::validate(obj, true, &mut causes),
        Hooks::ValidatingWebhooks => webhooks::validate(obj, false, &mut causes),
        Hooks::Lease => {
            if let Some(v) = obj
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_i64)
                && v <= 0
            {
                causes.push(Cause::invalid(
                    "spec.leaseDurationSeconds",
                    &v.to_string(),
                    "must be greater than 0",
                ));
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        return Ok(());
    }
    let (prefix, details) = invalid_subject(def, name);
    Err(ApiError::invalid(&prefix, name, details, causes))
}

/// Validation of an update beyond [`validate`]: fields that may not change (422).
pub(crate) fn validate_update(
    def: &ResourceDef,
    old: &Value,
    new: &Value,
    name: &str,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if def.hooks == Hooks::Binding {
        roles::validate_binding_update(old, new, &mut causes);
    }
    if causes.is_empty() {
        return Ok(());
    }
    let (prefix, details) = invalid_subject(def, name);
    Err(ApiError::invalid(&prefix, name, details, causes))
}

const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Causes found by the CRD schema, bucketed in the order the API server reports them.
#[derive(Default)]
struct SchemaErrors {
    unsupported: Vec<Cause>,
    types: Vec<Cause>,
    required: Vec<Cause>,
}

impl SchemaErrors {
    fn check_type(&mut self, v: Option<&Value>, field: &str, ty: &str) -> bool {
        let Some(v) = v else { return false };
        let actual = json_type_name(v);
        let ok = match ty {
            "number" => v.is_number(),
            other => actual == other,
        };
        if !ok && !v.is_null() {
            self.types.push(Cause::type_invalid(field, actual, ty));
        }
        ok
    }

    fn string_list(&mut self, v: Option<&Value>, field: &str) {
        if self.check_type(v, field, "array") {
            for (i, item) in v
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                self.check_type(Some(item), &format!("{field}[{i}]"), "string");
            }
        }
    }
}

fn validate_cr(obj: &Value, causes: &mut Vec<Cause>) {
    let mut errs = SchemaErrors::default();
    let spec = obj.get("spec");
    if spec.is_none_or(Value::is_null) {
        errs.required.push(Cause::required("spec"));
    } else if errs.check_type(spec, "spec", "object") {
        let field = |k: &str| spec.and_then(|s| s.get(k));
        errs.check_type(field("duration"), "spec.duration", "string");
        errs.check_type(field("isCA"), "spec.isCA", "boolean");
        errs.check_type(field("uid"), "spec.uid", "string");
        errs.check_type(field("username"), "spec.username", "string");
        errs.string_list(field("groups"), "spec.groups");
        if errs.check_type(field("extra"), "spec.extra", "object") {
            for (k, v) in field("extra")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                errs.string_list(Some(v), &format!("spec.extra.{k}"));
            }
        }
        match field("issuerRef") {
            None | Some(Value::Null) => errs.required.push(Cause::required("spec.issuerRef")),
            Some(r) => {
                if errs.check_type(Some(r), "spec.issuerRef", "object") {
                    match r.get("name") {
                        None | Some(Value::Null) => {
                            errs.required.push(Cause::required("spec.issuerRef.name"));
                        }
                        name => {
                            errs.check_type(name, "spec.issuerRef.name", "string");
                        }
                    }
                    errs.check_type(r.get("kind"), "spec.issuerRef.kind", "string");
                    errs.check_type(r.get("group"), "spec.issuerRef.group", "string");
                }
            }
        }
        match field("request") {
            None | Some(Value::Null) => errs.required.push(Cause::required("spec.request")),
            request => {
                errs.check_type(request, "spec.request", "string");
            }
        }
        if errs.check_type(field("usages"), "spec.usages", "array") {
            let usages = field("usages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for (i, u) in usages.enumerate() {
                let f = format!("spec.usages[{i}]");
                if errs.check_type(Some(u), &f, "string") {
                    let text = u.as_str().unwrap_or("");
                    if !USAGES.contains(&text) {
                        errs.unsupported.push(Cause::not_supported(f, text, USAGES));
                    }
                }
            }
        }
    }
    validate_cr_status(obj.get("status"), &mut errs);
    causes.extend(errs.unsupported);
    causes.extend(errs.types);
    causes.extend(errs.required);
}

fn validate_cr_status(status: Option<&Value>, errs: &mut SchemaErrors) {
    if !errs.check_type(status, "status", "object") {
        return;
    }
    let field = |k: &str| status.and_then(|s| s.get(k));
    errs.check_type(field("certificate"), "status.certificate", "string");
    errs.check_type(field("ca"), "status.ca", "string");
    errs.check_type(field("failureTime"), "status.failureTime", "string");
    if !errs.check_type(field("conditions"), "status.conditions", "array") {
        return;
    }
    let conditions = field("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (i, c) in conditions.enumerate() {
        let base = format!("status.conditions[{i}]");
        if !errs.check_type(Some(c), &base, "object") {
            continue;
        }
        for key in ["type", "status"] {
            match c.get(key) {
                None | Some(Value::Null) => {
                    errs.required.push(Cause::required(format!("{base}.{key}")))
                }
                v => {
                    errs.check_type(v, &format!("{base}.{key}"), "string");
                }
            }
        }
        if let Some(s) = c.get("status").and_then(Value::as_str) {
            const STATUSES: &[&str] = &["True", "False", "Unknown"];
            if !STATUSES.contains(&s) {
                errs.unsupported
                    .push(Cause::not_supported(format!("{base}.status"), s, STATUSES));
            }
        }
        for key in ["reason", "message", "lastTransitionTime"] {
            errs.check_type(c.get(key), &format!("{base}.{key}"), "string");
        }
        errs.check_type(
            c.get("observedGeneration"),
            &format!("{base}.observedGeneration"),
            "integer",
        );
    }
}

fn validate_event_v1(obj: &Value, causes: &mut Vec<Cause>) {
    if obj.get("eventTime").is_none_or(Value::is_null) {
        // The API server stops at a missing eventTime.
        causes.push(Cause::required("eventTime"));
        return;
    }
    let empty = |k: &str| obj.get(k).and_then(Value::as_str).is_none_or(str::is_empty);
    for key in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if empty(key) {
            causes.push(Cause::required(key));
        }
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("Normal" | "Warning") => {}
        other => causes.push(Cause::not_supported(
            "type",
            other.unwrap_or(""),
            &["Normal", "Warning"],
        )),
    }
}

fn validate_pod(obj: &Value, causes: &mut Vec<Cause>) {
    let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required("spec.containers")),
        Some(list) if list.is_empty() => causes.push(Cause::required("spec.containers")),
        Some(list) => {
            for (i, c) in list.iter().enumerate() {
                for key in ["name", "image"] {
                    if c.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
                        causes.push(Cause::required(format!("spec.containers[{i}].{key}")));
                    }
                }
            }
        }
    }
}

/// Event fields renamed between the core and events.k8s.io shapes: (core, events.k8s.io).
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &Value, to_v1: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        if v.is_null() {
            continue;
        }
        let renamed = EVENT_RENAMES.iter().find_map(|(core, v1)| match to_v1 {
            true if k == core => Some(*v1),
            false if k == v1 => Some(*core),
            _ => None,
        });
        out.insert(renamed.unwrap_or(k).to_owned(), v.clone());
    }
    out
}

/// The object as clients of `def` see it (stored objects are in the storage shape).
pub(crate) fn to_external(def: &ResourceDef, stored: &Value) -> Value {
    let mut obj = match def.hooks {
        Hooks::EventsV1Event => {
            let mut map = rename(stored, true);
            for key in [
                "reportingController",
                "reportingInstance",
                "action",
                "note",
                "reason",
                "type",
            ] {
                if map.get(key).and_then(Value::as_str) == Some("") {
                    map.remove(key);
                }
            }
            if map.get("deprecatedCount").and_then(Value::as_i64) == Some(0) {
                map.remove("deprecatedCount");
            }
            set_default(&mut map, "eventTime", Value::Null);
            set_default(&mut map, "deprecatedSource", json!({}));
            set_default(&mut map, "deprecatedFirstTimestamp", Value::Null);
            set_default(&mut map, "deprecatedLastTimestamp", Value::Null);
            Value::Object(map)
        }
        Hooks::CoreEvent => {
            let mut map = stored.as_object().cloned().unwrap_or_default();
            set_default(&mut map, "involvedObject", json!({}));
            set_default(&mut map, "source", json!({}));
            set_default(&mut map, "firstTimestamp", Value::Null);
            set_default(&mut map, "lastTimestamp", Value::Null);
            set_default(&mut map, "eventTime", Value::Null);
            set_default(&mut map, "reportingComponent", "".into());
            set_default(&mut map, "reportingInstance", "".into());
            Value::Object(map)
        }
        _ => stored.clone(),
    };
    if let Value::Object(map) = &mut obj {
        map.insert("apiVersion".into(), def.api_version().into());
        map.insert("kind".into(), def.kind.into());
    }
    obj
}

/// Whether a stored object already is what clients of `def` see: true for every kind but
/// the two Event shapes, once `apiVersion` and `kind` are `def`'s.
fn is_external(def: &ResourceDef, stored: &Value) -> bool {
    if matches!(def.hooks, Hooks::CoreEvent | Hooks::EventsV1Event) {
        return false;
    }
    let Some(map) = stored.as_object() else {
        return false;
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let version_matches = if def.group.is_empty() {
        api_version == Some(def.version)
    } else {
        api_version
            .and_then(|v| v.strip_prefix(def.group))
            .and_then(|v| v.strip_prefix('/'))
            == Some(def.version)
    };
    version_matches && map.get("kind").and_then(Value::as_str) == Some(def.kind)
}

/// [`to_external`] for a stored object, sharing it instead of copying when the shapes agree.
pub(crate) fn external(def: &ResourceDef, stored: &Arc<Object>) -> Arc<Object> {
    if is_external(def, stored) {
        Arc::clone(stored)
    } else {
        Object::new(to_external(def, stored))
    }
}

/// The storage shape of an object written through `def`.
pub(crate) fn to_storage(def: &ResourceDef, external: Value) -> Value {
    match def.hooks {
        Hooks::EventsV1Event | Hooks::CoreEvent => {
            let mut map = if def.hooks == Hooks::EventsV1Event {
                rename(&external, false)
            } else {
                match external {
                    Value::Object(map) => map,
                    _ => Map::new(),
                }
            };
            map.retain(|_, v| !v.is_null());
            map.insert("apiVersion".into(), "v1".into());
            map.insert("kind".into(), "Event".into());
            Value::Object(map)
        }
        _ => external,
    }
}

/// Whether a pod is bound to a node (and so deleted gracefully).
pub(crate) fn pod_node(obj: &Value) -> Option<&str> {
    obj.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    fn def(group: &str, plural: &str) -> &'static ResourceDef {
        lookup(group, "v1", plural).unwrap_or_else(|| panic!("{plural} registered"))
    }

    #[test]
    fn cr_causes_come_in_the_api_server_order() {
        let cr = def("cert-manager.io", "certificaterequests");
        let obj = json!({"metadata": {"name": "x"}, "spec": {"issuerRef": {"name": "i"},
            "usages": ["digital signature", "bogus usage"], "isCA": "yes"}});
        let err = validate(cr, &obj, "x").expect_err("invalid");
        let details = err.details.expect("details");
        let fields: Vec<&str> = details.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.usages[1]", "spec.isCA", "spec.request"]);
        assert_eq!(details.kind.as_deref(), Some("CertificateRequest"));
    }

    #[test]
    fn lease_times_are_micro_times() {
        let lease = def("coordination.k8s.io", "leases");
        let mut ok = json!({"spec": {"renewTime": "2026-12-04T16:52:22.1Z"}});
        decode(lease, &mut ok).expect("valid time");
        assert_eq!(ok["spec"]["renewTime"], "2026-12-04T16:52:22.100000Z");
        let mut bad = json!({"spec": {"renewTime": "yesterday"}});
        let err = decode(lease, &mut bad).expect_err("bad time");
        assert_eq!(
            err.message,
            "Lease in version \"v1\" cannot be handled as a Lease: parsing time \"yesterday\" as \
             \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"yesterday\" as \"2006\""
        );
    }

    #[test]
    fn stored_objects_are_shared_only_when_they_are_the_external_shape() {
        let cr = def("cert-manager.io", "certificaterequests");
        let pod = def("", "pods");
        let core = def("", "events");
        let cases = [
            (
                cr,
                json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest"}),
                true,
            ),
            (
                cr,
                json!({"apiVersion": "cert-manager.io/v2", "kind": "CertificateRequest"}),
                false,
            ),
            (
                cr,
                json!({"apiVersion": "v1", "kind": "CertificateRequest"}),
                false,
            ),
            (cr, json!({"kind": "CertificateRequest"}), false),
            (
                cr,
                json!({"apiVersion": "cert-manager.io/v1", "kind": "Pod"}),
                false,
            ),
            (
                pod,
                json!({"apiVersion": "v1", "kind": "Pod", "spec": {}}),
                true,
            ),
            (pod, json!({"apiVersion": "apps/v1", "kind": "Pod"}), false),
            (core, json!({"apiVersion": "v1", "kind": "Event"}), false),
        ];
        for (def, stored, shared) in cases {
            let stored = Object::new(stored);
            let seen = external(def, &stored);
            let what = format!("{} {}", def.plural, stored.value());
            assert_eq!(Arc::ptr_eq(&seen, &stored), shared, "{what}");
            assert_eq!(seen.value(), &to_external(def, &stored), "{what}");
        }
    }

    #[test]
    fn events_round_trip_between_shapes() {
        let v1 = def("events.k8s.io", "events");
        let core = def("", "events");
        let written = json!({"metadata": {"name": "e"}, "eventTime": "t", "note": "n",
            "regarding": {"name": "cr-1"}, "reportingController": "c", "type": "Normal"});
        let stored = to_storage(v1, written.clone());
        assert_eq!(stored["message"], "n");
        let as_core = to_external(core, &stored);
        assert_eq!(as_core["involvedObject"]["name"], "cr-1");
        assert_eq!(as_core["reportingComponent"], "c");
        assert_eq!(as_core["source"], json!({}));
        let back = to_external(v1, &stored);
        assert_eq!(back["regarding"], written["regarding"]);
        assert_eq!(back["deprecatedFirstTimestamp"], Value::Null);
    }
}
