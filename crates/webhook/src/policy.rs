//! CertificateRequestPolicy admission: a policy is stored only when it loads, that is when
//! its selector says something, its durations parse with min ≤ max, its key constraints
//! and usages are known and every CEL rule compiles, stays within the cost limit and
//! returns a boolean. Each problem is reported with the policy field to fix, exactly as the
//! approver would report it when loading the policy.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use nico_request_policy::{Limits, RequestPolicy};

use crate::review::{Problem, Verdict};

/// The validating webhook.
pub(crate) fn validate(request: &AdmissionRequest<DynamicObject>, limits: Limits) -> Verdict {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Verdict::Allow;
    }
    let Some(object) = &request.object else {
        return Verdict::Allow;
    };
    let name = object.metadata.name.as_deref().unwrap_or(&request.name);
    let spec = object
        .data
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let mut problems = match RequestPolicy::from_json(name, &spec, limits) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .0
            .into_iter()
            .map(|e| Problem::new(e.field, e.reason))
            .collect(),
    };
    problems.extend(label_problems(&spec));
    Verdict::from_problems(problems)
}

/// `spec.selector.namespace.matchLabels` must be labels the API server would accept: the
/// policy engine matches them as strings, so a typo would silently select nothing.
fn label_problems(spec: &serde_json::Value) -> Vec<Problem> {
    let labels = spec
        .pointer("/selector/namespace/matchLabels")
        .and_then(serde_json::Value::as_object);
    let mut problems = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        let field = format!("spec.selector.namespace.matchLabels[{key}]");
        if !is_label_key(key) {
            problems.push(Problem::new(
                &field,
                "is not a label key: an optional DNS prefix and '/', then at most 63 letters, \
                 digits, '-', '_' or '.', starting and ending with a letter or digit",
            ));
        }
        if !value
            .as_str()
            .is_some_and(|v| v.is_empty() || is_label_name(v))
        {
            problems.push(Problem::new(
                field,
                "is not a label value: at most 63 letters, digits, '-', '_' or '.', starting \
                 and ending with a letter or digit",
            ));
        }
    }
    problems
}

/// A label name, or the name part of a label key.
fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    !name.is_empty()
        && name.len() <= 63
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        None => is_label_name(key),
        Some((prefix, name)) => {
            let label = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            prefix.len() <= 253 && prefix.split('.').all(label) && is_label_name(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::admission;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> AdmissionRequest<DynamicObject> {
        admission(json!({
            "operation": "CREATE",
            "kind": {"group": "policy.cert-manager.io", "version": "v1alpha1",
                     "kind": "CertificateRequestPolicy"},
            "resource": {"group": "policy.cert-manager.io", "version": "v1alpha1",
                         "resource": "certificaterequestpolicies"},
            "name": "p",
            "object": {"apiVersion": "policy.cert-manager.io/v1alpha1",
                       "kind": "CertificateRequestPolicy",
                       "metadata": {"name": "p"}, "spec": spec},
        }))
    }

    fn fields(verdict: Verdict) -> Vec<String> {
        match verdict {
            Verdict::Invalid(problems) => problems.into_iter().map(|p| p.field).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let limits = Limits::default();
        let cases = [
            (
                json!({"selector": {"issuerRef": {}},
                       "allowed": {"dnsNames": {"validations": [{"rule": "self.size("}]}}}),
                "spec.allowed.dnsNames.validations[0].rule",
            ),
            (
                json!({"selector": {"issuerRef": {}},
                       "allowed": {"dnsNames": {"validations": [{"rule": "self.size()"}]}}}),
                "spec.allowed.dnsNames.validations[0].rule",
            ),
            (
                json!({"selector": {"issuerRef": {}},
                       "constraints": {"minDuration": "2h", "maxDuration": "1h"}}),
                "spec.constraints.minDuration",
            ),
            (
                json!({"selector": {"issuerRef": {}}, "constraints": {"maxDuration": "a week"}}),
                "spec.constraints.maxDuration",
            ),
            (json!({"selector": {}}), "spec.selector"),
            (
                json!({"selector": {"namespace": {"matchLabels": {"bad key!": "x"}}}}),
                "spec.selector.namespace.matchLabels",
            ),
            (
                json!({"selector": {"namespace": {"matchLabels": {"team": "-x"}}}}),
                "spec.selector.namespace.matchLabels[team]",
            ),
            (json!(null), "spec"),
        ];
        for (spec, field) in cases {
            let found = fields(validate(&policy(spec.clone()), limits));
            assert!(
                found.iter().any(|f| f.starts_with(field)),
                "{spec}: expected {field}, got {found:?}"
            );
        }
        let good = json!({"selector": {"issuerRef": {"name": "*"}},
                          "allowed": {"dnsNames": {"values": ["*.svc"],
                                      "validations": [{"rule": "self.endsWith('.svc')"}]}},
                          "constraints": {"minDuration": "1h", "maxDuration": "24h"}});
        assert_eq!(validate(&policy(good), limits), Verdict::Allow);
        let labelled = json!({"selector": {"namespace": {"matchLabels": {
            "kubernetes.io/metadata.name": "demo", "team": "", "a.b/c_d": "e.f-g"}}}});
        assert_eq!(validate(&policy(labelled), limits), Verdict::Allow);
    }
}
