//! rbac.authorization.k8s.io/v1 objects: validation of Roles, ClusterRoles and their
//! bindings, and the immutable `roleRef`.
//!
//! Privilege-escalation checks (a user may only grant what they hold, or with `escalate` /
//! `bind`) are not made: every writer of RBAC objects here is trusted.

use serde_json::Value;

use crate::status::Cause;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn list_len(obj: &Value, field: &str) -> usize {
    obj.get(field).and_then(Value::as_array).map_or(0, Vec::len)
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "null".to_owned(), Value::to_string)
}

/// Roles and ClusterRoles: every rule names verbs, and either resources (with groups) or
/// non-resource URLs (ClusterRoles only).
pub(super) fn validate_role(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let rules = obj.get("rules").and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if list_len(rule, "verbs") == 0 {
            causes.push(Cause::required_detail(
                at("verbs"),
                "verbs must contain at least one value",
            ));
        }
        if list_len(rule, "nonResourceURLs") > 0 {
            let urls = shown(rule.get("nonResourceURLs"));
            if namespaced {
                causes.push(Cause::invalid(
                    at("nonResourceURLs"),
                    &urls,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if ["apiGroups", "resources", "resourceNames"]
                .iter()
                .any(|f| list_len(rule, f) > 0)
            {
                causes.push(Cause::invalid(
                    at("nonResourceURLs"),
                    &urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if list_len(rule, "apiGroups") == 0 {
            causes.push(Cause::required_detail(
                at("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if list_len(rule, "resources") == 0 {
            causes.push(Cause::required_detail(
                at("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

/// RoleBindings and ClusterRoleBindings: a complete `roleRef` and well-formed subjects.
pub(super) fn validate_binding(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
    let group = text(role_ref, "apiGroup");
    if group != RBAC_GROUP {
        causes.push(Cause::not_supported(
            "roleRef.apiGroup",
            &group,
            &[RBAC_GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["ClusterRole", "Role"]
    } else {
        &["ClusterRole"]
    };
    let kind = text(role_ref, "kind");
    if !kinds.contains(&kind.as_str()) {
        causes.push(Cause::not_supported("roleRef.kind", &kind, kinds));
    }
    if text(role_ref, "name").is_empty() {
        causes.push(Cause::required("roleRef.name"));
    }
    let subjects = obj.get("subjects").and_then(Value::as_array);
    for (i, subject) in subjects.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("subjects[{i}].{f}");
        if text(subject, "name").is_empty() {
            causes.push(Cause::required(at("name")));
        }
        match text(subject, "kind").as_str() {
            "ServiceAccount" => {
                if !namespaced && text(subject, "namespace").is_empty() {
                    causes.push(Cause::required(at("namespace")));
                }
            }
            "User" | "Group" => {
                let group = text(subject, "apiGroup");
                if group != RBAC_GROUP {
                    causes.push(Cause::not_supported(at("apiGroup"), &group, &[RBAC_GROUP]));
                }
            }
            other => causes.push(Cause::not_supported(
                at("kind"),
                other,
                &["Group", "ServiceAccount", "User"],
            )),
        }
    }
}

/// A binding's `roleRef` cannot change once created.
pub(super) fn validate_binding_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if old.get("roleRef") != new.get("roleRef") {
        causes.push(Cause::invalid(
            "roleRef",
            &shown(new.get("roleRef")),
            "cannot change roleRef",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn rules_need_verbs_and_a_target() {
        let cases = [
            (
                json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
                true,
                vec![],
            ),
            (
                json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]}),
                true,
                vec!["rules[0].verbs"],
            ),
            (
                json!({"rules": [{"verbs": ["get"]}]}),
                false,
                vec!["rules[0].apiGroups", "rules[0].resources"],
            ),
            (
                json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}),
                false,
                vec![],
            ),
            (
                json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}),
                true,
                vec!["rules[0].nonResourceURLs"],
            ),
        ];
        for (role, namespaced, want) in cases {
            let mut causes = Vec::new();
            validate_role(&role, namespaced, &mut causes);
            assert_eq!(fields(&causes), want, "{role}");
        }
    }

    #[test]
    fn bindings_need_a_role_and_valid_subjects() {
        let good_ref = json!({"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"});
        let cases = [
            (
                json!({"roleRef": good_ref, "subjects": [{"kind": "ServiceAccount", "name": "a"}]}),
                true,
                vec![],
            ),
            (
                json!({"roleRef": good_ref, "subjects": [{"kind": "ServiceAccount", "name": "a"}]}),
                false,
                vec!["roleRef.kind", "subjects[0].namespace"],
            ),
            (
                json!({"roleRef": {}, "subjects": [{"kind": "Robot"}]}),
                true,
                vec![
                    "roleRef.apiGroup",
                    "roleRef.kind",
                    "roleRef.name",
                    "subjects[0].name",
                    "subjects[0].kind",
                ],
            ),
            (
                json!({"roleRef": good_ref, "subjects": [{"kind": "User", "name": "u"}]}),
                true,
                vec!["subjects[0].apiGroup"],
            ),
        ];
        for (binding, namespaced, want) in cases {
            let mut causes = Vec::new();
            validate_binding(&binding, namespaced, &mut causes);
            assert_eq!(fields(&causes), want, "{binding}");
        }
        let mut causes = Vec::new();
        let other = json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "s"}});
        validate_binding_update(&json!({"roleRef": good_ref}), &other, &mut causes);
        assert_eq!(fields(&causes), vec!["roleRef"]);
    }
}
