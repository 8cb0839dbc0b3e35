//! Which webhooks a request is sent to: the stored configurations read into [`Webhook`]s,
//! and their `rules`, `namespaceSelector` and `objectSelector` matched as kube-apiserver
//! matches them.

use std::time::Duration;

use serde_json::Value;

use crate::selectors::LabelSelector;

/// The operation of an admission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// The name in rules and AdmissionReviews.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// What to do when a webhook cannot be called or answers nonsense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailurePolicy {
    Fail,
    Ignore,
}

/// Where a webhook is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `clientConfig.url`.
    Url(String),
    /// `clientConfig.service`.
    Service {
        namespace: String,
        name: String,
        port: u16,
        path: String,
    },
}

/// One webhook of a stored configuration, read once per request.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) name: String,
    pub(crate) endpoint: Endpoint,
    /// The PEM bundle from `clientConfig.caBundle` (base64 in the object).
    pub(crate) ca_bundle: Vec<u8>,
    rules: Vec<Value>,
    pub(crate) failure_policy: FailurePolicy,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
    pub(crate) timeout: Duration,
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn strings<'a>(v: &'a Value, field: &str) -> impl Iterator<Item = &'a str> {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

impl Webhook {
    /// Reads one entry of `webhooks`. Validation ran when it was stored, so what cannot be
    /// read here (a selector, a missing endpoint) makes the entry unusable, not an error.
    pub(crate) fn from_json(webhook: &Value) -> Option<Webhook> {
        use base64::Engine;
        let config = webhook.get("clientConfig")?;
        let endpoint = match (
            config.get("url").and_then(Value::as_str),
            config.get("service"),
        ) {
            (Some(url), _) => Endpoint::Url(url.to_owned()),
            (None, Some(s)) if s.is_object() => Endpoint::Service {
                namespace: text(s, "namespace").to_owned(),
                name: text(s, "name").to_owned(),
                port: s
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(443),
                path: text(s, "path").to_owned(),
            },
            _ => return None,
        };
        let ca_bundle = base64::engine::general_purpose::STANDARD
            .decode(text(config, "caBundle"))
            .unwrap_or_default();
        let timeout = webhook
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10);
        Some(Webhook {
            name: text(webhook, "name").to_owned(),
            endpoint,
            ca_bundle,
            rules: webhook
                .get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            failure_policy: match text(webhook, "failurePolicy") {
                "Ignore" => FailurePolicy::Ignore,
                _ => FailurePolicy::Fail,
            },
            namespace_selector: LabelSelector::from_json(
                webhook.get("namespaceSelector").unwrap_or(&Value::Null),
            )
            .ok()?,
            object_selector: LabelSelector::from_json(
                webhook.get("objectSelector").unwrap_or(&Value::Null),
            )
            .ok()?,
            timeout: Duration::from_secs(timeout),
        })
    }
}

/// What a request is about, for matching.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) operation: Operation,
    pub(crate) group: &'a str,
    pub(crate) version: &'a str,
    pub(crate) resource: &'a str,
    /// "" when none.
    pub(crate) subresource: &'a str,
    /// "" for cluster-scoped objects.
    pub(crate) namespace: &'a str,
    /// Whether the object is itself a Namespace (then `namespaceSelector` is matched
    /// against its own labels).
    pub(crate) is_namespace: bool,
}

fn listed(rule: &Value, field: &str, wanted: &str) -> bool {
    strings(rule, field).any(|v| v == "*" || v == wanted)
}

fn resource_listed(rule: &Value, resource: &str, subresource: &str) -> bool {
    strings(rule, "resources").any(|entry| {
        let (res, sub) = entry.split_once('/').unwrap_or((entry, ""));
        (res == "*" || res == resource) && (sub == "*" || sub == subresource)
    })
}

fn scope_matches(rule: &Value, namespace: &str) -> bool {
    match text(rule, "scope") {
        "Cluster" => namespace.is_empty(),
        "Namespaced" => !namespace.is_empty(),
        _ => true,
    }
}

/// Whether one rule covers the request.
pub(crate) fn rule_matches(rule: &Value, s: &Subject<'_>) -> bool {
    listed(rule, "operations", s.operation.as_str())
        && listed(rule, "apiGroups", s.group)
        && listed(rule, "apiVersions", s.version)
        && resource_listed(rule, s.resource, s.subresource)
        && scope_matches(rule, s.namespace)
}

impl Webhook {
    /// Whether one of the webhook's rules covers the request.
    pub(crate) fn rules_match(&self, s: &Subject<'_>) -> bool {
        self.rules.iter().any(|rule| rule_matches(rule, s))
    }

    /// Whether the webhook is called for a request. `namespace` is the Namespace object
    /// the request's object lives in (or is), if any; `object` and `old` are the objects
    /// the review will carry.
    pub(crate) fn applies(
        &self,
        s: &Subject<'_>,
        namespace: Option<&Value>,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> bool {
        if !self.rules_match(s) {
            return false;
        }
        let namespaced_object = !s.namespace.is_empty() || s.is_namespace;
        // A namespace that is not there has no labels.
        if namespaced_object
            && !self
                .namespace_selector
                .matches_object(namespace.unwrap_or(&Value::Null))
        {
            return false;
        }
        if self.object_selector.is_empty() {
            return true;
        }
        [object, old]
            .into_iter()
            .flatten()
            .any(|o| self.object_selector.matches_object(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject(op: Operation, sub: &'static str, ns: &'static str) -> Subject<'static> {
        Subject {
            operation: op,
            group: "cert-manager.io",
            version: "v1",
            resource: "certificaterequests",
            subresource: sub,
            namespace: ns,
            is_namespace: false,
        }
    }

    fn rule(ops: &[&str], resources: &[&str], scope: &str) -> Value {
        json!({"operations": ops, "apiGroups": ["cert-manager.io"], "apiVersions": ["v1"],
               "resources": resources, "scope": scope})
    }

    #[test]
    fn rules_match_operations_resources_subresources_and_scope() {
        use Operation::{Create, Delete, Update};
        let cases = [
            (
                rule(&["CREATE"], &["certificaterequests"], "*"),
                subject(Create, "", "ns"),
                true,
            ),
            (
                rule(&["CREATE"], &["certificaterequests"], "*"),
                subject(Update, "", "ns"),
                false,
            ),
            (
                rule(&["*"], &["certificaterequests"], "*"),
                subject(Delete, "", "ns"),
                true,
            ),
            (
                rule(&["UPDATE"], &["certificaterequests"], "*"),
                subject(Update, "status", "ns"),
                false,
            ),
            (
                rule(&["UPDATE"], &["certificaterequests/status"], "*"),
                subject(Update, "status", "ns"),
                true,
            ),
            (
                rule(&["UPDATE"], &["*/status"], "*"),
                subject(Update, "status", "ns"),
                true,
            ),
            (
                rule(&["UPDATE"], &["*"], "*"),
                subject(Update, "status", "ns"),
                false,
            ),
            (
                rule(&["UPDATE"], &["*"], "*"),
                subject(Update, "", "ns"),
                true,
            ),
            (
                rule(&["UPDATE"], &["*/*"], "*"),
                subject(Update, "status", "ns"),
                true,
            ),
            // `res/*` covers the resource itself too: its "" subresource matches `*`.
            (
                rule(&["UPDATE"], &["certificaterequests/*"], "*"),
                subject(Update, "", "ns"),
                true,
            ),
            (
                rule(&["UPDATE"], &["pods/*"], "*"),
                subject(Update, "status", "ns"),
                false,
            ),
            (
                rule(&["CREATE"], &["certificaterequests"], "Namespaced"),
                subject(Create, "", "ns"),
                true,
            ),
            (
                rule(&["CREATE"], &["certificaterequests"], "Cluster"),
                subject(Create, "", "ns"),
                false,
            ),
            (
                rule(&["CREATE"], &["certificaterequests"], "Cluster"),
                subject(Create, "", ""),
                true,
            ),
            (
                json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["certificaterequests"]}),
                subject(Create, "", "ns"),
                false,
            ),
            (
                json!({"operations": ["CREATE"], "apiGroups": ["*"], "apiVersions": ["v2"],
                       "resources": ["*"]}),
                subject(Create, "", "ns"),
                false,
            ),
        ];
        for (rule, s, want) in cases {
            assert_eq!(rule_matches(&rule, &s), want, "{rule} for {s:?}");
        }
    }

    fn webhook(extra: Value) -> Webhook {
        let mut w = json!({"name": "a.b.c", "clientConfig": {"url": "https://127.0.0.1/x"},
            "rules": [rule(&["CREATE", "UPDATE"], &["certificaterequests"], "*")],
            "sideEffects": "None"});
        if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
            w.extend(extra.clone());
        }
        Webhook::from_json(&w).expect("a usable webhook")
    }

    #[test]
    fn selectors_pick_namespaces_and_objects() {
        let ns = json!({"metadata": {"labels": {"kubernetes.io/metadata.name": "kube-wire"}}});
        let other_ns = json!({"metadata": {"labels": {"kubernetes.io/metadata.name": "x"}}});
        let labelled = json!({"metadata": {"labels": {"team": "id"}}});
        let plain = json!({"metadata": {}});
        let create = subject(Operation::Create, "", "kube-wire");
        let update = subject(Operation::Update, "", "kube-wire");
        let by_ns = webhook(json!({"namespaceSelector":
            {"matchLabels": {"kubernetes.io/metadata.name": "kube-wire"}}}));
        assert!(by_ns.applies(&create, Some(&ns), Some(&plain), None));
        assert!(!by_ns.applies(&create, Some(&other_ns), Some(&plain), None));
        assert!(!by_ns.applies(&create, None, Some(&plain), None));
        let cluster_scoped = Subject {
            namespace: "",
            ..create
        };
        assert!(
            by_ns.applies(&cluster_scoped, None, Some(&plain), None),
            "namespaceSelector does not apply to cluster-scoped objects"
        );
        let by_obj = webhook(json!({"objectSelector": {"matchLabels": {"team": "id"}}}));
        assert!(by_obj.applies(&create, Some(&ns), Some(&labelled), None));
        assert!(!by_obj.applies(&create, Some(&ns), Some(&plain), None));
        assert!(
            by_obj.applies(&update, Some(&ns), Some(&plain), Some(&labelled)),
            "either the new or the old object may match"
        );
        let delete = subject(Operation::Delete, "", "kube-wire");
        assert!(
            !by_obj.applies(&delete, Some(&ns), None, Some(&labelled)),
            "rules first"
        );
    }

    #[test]
    fn webhooks_are_read_with_their_defaults() {
        let w = webhook(
            json!({"clientConfig": {"service": {"namespace": "n", "name": "s"},
                                              "caBundle": "UEVN"},
                               "failurePolicy": "Ignore", "sideEffects": "Some"}),
        );
        assert_eq!(
            w.endpoint,
            Endpoint::Service {
                namespace: "n".into(),
                name: "s".into(),
                port: 443,
                path: String::new()
            }
        );
        assert_eq!(w.ca_bundle, b"PEM");
        assert_eq!(w.failure_policy, FailurePolicy::Ignore);
        assert_eq!(w.timeout, Duration::from_secs(10));
    }
}
