//! admissionregistration.k8s.io/v1 Mutating- and ValidatingWebhookConfigurations:
//! defaulting and validation, as the API server does them before storing.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::selectors::LabelSelector;
use crate::status::Cause;

use super::set_default;

const SIDE_EFFECTS: &[&str] = &["None", "NoneOnDryRun"];
const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];
const OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];

fn webhooks_mut(obj: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    obj.get_mut("webhooks")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Defaults the writer is credited with (kube-wire 14a: `objectSelector: {}` appears).
pub(super) fn default_fields(obj: &mut Value, mutating: bool) {
    for webhook in webhooks_mut(obj) {
        set_default(webhook, "failurePolicy", "Fail".into());
        set_default(webhook, "matchPolicy", "Equivalent".into());
        set_default(webhook, "namespaceSelector", json!({}));
        set_default(webhook, "objectSelector", json!({}));
        set_default(webhook, "timeoutSeconds", 10.into());
        if mutating {
            set_default(webhook, "reinvocationPolicy", "Never".into());
        }
        let rules = webhook.get_mut("rules").and_then(Value::as_array_mut);
        for rule in rules.into_iter().flatten().filter_map(Value::as_object_mut) {
            set_default(rule, "scope", "*".into());
        }
        let service = webhook
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut);
        if let Some(service) = service {
            set_default(service, "port", 443.into());
        }
    }
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn strings<'a>(v: &'a Value, field: &str) -> Vec<&'a str> {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// A name with at least three DNS labels, as webhook names must be.
fn is_qualified_name(name: &str) -> bool {
    super::is_subdomain(name) && name.split('.').count() >= 3
}

fn check_one_of(causes: &mut Vec<Cause>, field: String, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        causes.push(Cause::not_supported(field, value, allowed));
    }
}

fn validate_url(url: &str, at: &str, causes: &mut Vec<Cause>) {
    let shown = format!("{url:?}");
    let Some(rest) = url.strip_prefix("https://") else {
        causes.push(Cause::invalid(
            at,
            &shown,
            "'https' is the only allowed URL scheme",
        ));
        return;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        causes.push(Cause::invalid(at, &shown, "host must be specified"));
    }
    if host.contains('@') {
        causes.push(Cause::invalid(
            at,
            &shown,
            "user information is not permitted in the URL",
        ));
    }
    if url.contains('#') {
        causes.push(Cause::invalid(at, &shown, "fragments are not permitted"));
    }
    if url.contains('?') {
        causes.push(Cause::invalid(
            at,
            &shown,
            "query parameters are not allowed",
        ));
    }
}

fn validate_client_config(config: &Value, at: &str, causes: &mut Vec<Cause>) {
    let url = config.get("url").and_then(Value::as_str);
    let service = config.get("service").filter(|s| !s.is_null());
    match (url, service) {
        (Some(url), None) => validate_url(url, &format!("{at}.url"), causes),
        (None, Some(service)) => {
            for key in ["name", "namespace"] {
                if text(service, key).is_empty() {
                    causes.push(Cause::required(format!("{at}.service.{key}")));
                }
            }
            let path = text(service, "path");
            if !path.is_empty() && !path.starts_with('/') {
                causes.push(Cause::invalid(
                    format!("{at}.service.path"),
                    &format!("{path:?}"),
                    "must start with a '/'",
                ));
            }
            match service.get("port").and_then(Value::as_i64) {
                None => {}
                Some(p) if (1..=65535).contains(&p) => {}
                Some(p) => causes.push(Cause::invalid(
                    format!("{at}.service.port"),
                    &p.to_string(),
                    "port is not valid: must be between 1 and 65535, inclusive",
                )),
            }
        }
        _ => causes.push(Cause::required_detail(
            at,
            "exactly one of url or service is required",
        )),
    }
}

fn validate_rules(webhook: &Value, at: &str, causes: &mut Vec<Cause>) {
    let rules = webhook.get("rules").and_then(Value::as_array);
    for (j, rule) in rules.into_iter().flatten().enumerate() {
        let rat = format!("{at}.rules[{j}]");
        let operations = strings(rule, "operations");
        if operations.is_empty() {
            causes.push(Cause::required(format!("{rat}.operations")));
        }
        for (k, op) in operations.iter().enumerate() {
            check_one_of(causes, format!("{rat}.operations[{k}]"), op, OPERATIONS);
        }
        for key in ["apiGroups", "apiVersions", "resources"] {
            if strings(rule, key).is_empty() {
                causes.push(Cause::required(format!("{rat}.{key}")));
            }
        }
        check_one_of(causes, format!("{rat}.scope"), text(rule, "scope"), SCOPES);
    }
}

fn validate_webhook(webhook: &Value, at: &str, mutating: bool, causes: &mut Vec<Cause>) {
    let name = text(webhook, "name");
    if name.is_empty() {
        causes.push(Cause::required(format!("{at}.name")));
    } else if !is_qualified_name(name) {
        causes.push(Cause::invalid(
            format!("{at}.name"),
            &format!("{name:?}"),
            "should be a domain with at least three segments separated by dots",
        ));
    }
    validate_client_config(
        webhook.get("clientConfig").unwrap_or(&Value::Null),
        &format!("{at}.clientConfig"),
        causes,
    );
    validate_rules(webhook, at, causes);
    match webhook.get("sideEffects").and_then(Value::as_str) {
        None => causes.push(Cause::required_detail(
            format!("{at}.sideEffects"),
            "must specify one of None, NoneOnDryRun",
        )),
        Some(v) => check_one_of(causes, format!("{at}.sideEffects"), v, SIDE_EFFECTS),
    }
    let versions = strings(webhook, "admissionReviewVersions");
    if versions.is_empty() {
        causes.push(Cause::required_detail(
            format!("{at}.admissionReviewVersions"),
            "must specify one of v1, v1beta1",
        ));
    } else if !versions.iter().any(|v| REVIEW_VERSIONS.contains(v)) {
        causes.push(Cause::invalid(
            format!("{at}.admissionReviewVersions"),
            &format!("{versions:?}"),
            "must include at least one of v1, v1beta1",
        ));
    }
    let f = |k: &str| format!("{at}.{k}");
    check_one_of(
        causes,
        f("failurePolicy"),
        text(webhook, "failurePolicy"),
        &["Fail", "Ignore"],
    );
    check_one_of(
        causes,
        f("matchPolicy"),
        text(webhook, "matchPolicy"),
        &["Equivalent", "Exact"],
    );
    if mutating {
        let policy = text(webhook, "reinvocationPolicy");
        check_one_of(
            causes,
            f("reinvocationPolicy"),
            policy,
            &["IfNeeded", "Never"],
        );
    }
    if let Some(t) = webhook.get("timeoutSeconds").and_then(Value::as_i64)
        && !(1..=30).contains(&t)
    {
        causes.push(Cause::invalid(
            f("timeoutSeconds"),
            &t.to_string(),
            "the timeout value must be between 1 and 30 seconds",
        ));
    }
    for key in ["namespaceSelector", "objectSelector"] {
        if let Some(selector) = webhook.get(key)
            && let Err(e) = LabelSelector::from_json(selector)
        {
            causes.push(Cause::invalid(
                f(key),
                &selector.to_string(),
                &e.to_string(),
            ));
        }
    }
}

/// Validation (422 causes).
pub(super) fn validate(obj: &Value, mutating: bool, causes: &mut Vec<Cause>) {
    let mut names = BTreeSet::new();
    let webhooks = obj.get("webhooks").and_then(Value::as_array);
    for (i, webhook) in webhooks.into_iter().flatten().enumerate() {
        let at = format!("webhooks[{i}]");
        let name = text(webhook, "name");
        if !name.is_empty() && !names.insert(name) {
            causes.push(Cause::duplicate(format!("{at}.name"), &format!("{name:?}")));
        }
        validate_webhook(webhook, &at, mutating, causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({"webhooks": [{
            "name": "identity.kube-wire.test",
            "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": ["cert-manager.io"],
                       "apiVersions": ["v1"], "resources": ["certificaterequests"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }]})
    }

    fn fields_after(change: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut obj = good();
        change(&mut obj["webhooks"][0]);
        default_fields(&mut obj, true);
        let mut causes = Vec::new();
        validate(&obj, true, &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn defaults_fill_what_the_api_server_fills() {
        let mut obj = good();
        default_fields(&mut obj, true);
        let w = &obj["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["objectSelector"], json!({}));
        assert_eq!(w["reinvocationPolicy"], "Never");
        assert_eq!(w["rules"][0]["scope"], "*");
    }

    #[test]
    fn each_mistake_names_its_field() {
        let at = |f: &str| vec![format!("webhooks[0].{f}")];
        assert_eq!(fields_after(|_| {}), Vec::<String>::new());
        assert_eq!(
            fields_after(|w| w["name"] = "short.name".into()),
            at("name")
        );
        assert_eq!(
            fields_after(|w| w["clientConfig"] = json!({"url": "http://127.0.0.1/x"})),
            at("clientConfig.url")
        );
        assert_eq!(
            fields_after(|w| w["clientConfig"] = json!({"url": "https://h/x?a=b"})),
            at("clientConfig.url")
        );
        assert_eq!(
            fields_after(|w| w["clientConfig"] = json!({})),
            at("clientConfig")
        );
        assert_eq!(
            fields_after(|w| w["clientConfig"] = json!({"service": {"name": "s"}})),
            at("clientConfig.service.namespace")
        );
        assert_eq!(
            fields_after(|w| {
                w.as_object_mut().map(|m| m.remove("sideEffects"));
            }),
            at("sideEffects")
        );
        assert_eq!(
            fields_after(|w| w["sideEffects"] = "Some".into()),
            at("sideEffects")
        );
        assert_eq!(
            fields_after(|w| w["admissionReviewVersions"] = json!(["v2"])),
            at("admissionReviewVersions")
        );
        assert_eq!(
            fields_after(|w| w["timeoutSeconds"] = 31.into()),
            at("timeoutSeconds")
        );
        assert_eq!(
            fields_after(|w| w["failurePolicy"] = "Maybe".into()),
            at("failurePolicy")
        );
        assert_eq!(
            fields_after(|w| w["rules"][0]["operations"] = json!(["PATCH"])),
            at("rules[0].operations[0]")
        );
        assert_eq!(
            fields_after(|w| w["objectSelector"] =
                json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})),
            at("objectSelector")
        );
    }

    #[test]
    fn webhook_names_are_unique() {
        let mut obj = good();
        let copy = obj["webhooks"][0].clone();
        if let Some(list) = obj["webhooks"].as_array_mut() {
            list.push(copy);
        }
        default_fields(&mut obj, false);
        let mut causes = Vec::new();
        validate(&obj, false, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["webhooks[1].name"]);
    }
}
