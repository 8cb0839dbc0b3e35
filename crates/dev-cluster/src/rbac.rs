//! RBAC: whether the stored Roles, ClusterRoles and their bindings grant a request, by the
//! rules kube-apiserver's RBAC authorizer applies.
//!
//! ClusterRoleBindings are visited first, then the RoleBindings of the request's namespace;
//! the first rule that allows the request wins and names itself in the reason. A binding
//! whose role does not exist grants nothing. Rules match on verbs (`*` for all), API groups,
//! resources (`*`, `resource`, `resource/subresource` and `*/subresource`), resource names
//! (an empty list for all) and non-resource URLs (`*`, exact, or a `prefix*`). Aggregated
//! ClusterRoles are not assembled.

use serde_json::Value;

use crate::authz::{Attributes, ResourceAttributes, Subject};
use crate::store::{Inner, key};
use crate::util::meta_str;

/// The strings of a list field; a missing or malformed list is empty.
fn strings<'a>(obj: &'a Value, field: &str) -> impl Iterator<Item = &'a str> {
    obj.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn field<'a>(obj: &'a Value, name: &str) -> &'a str {
    obj.get(name).and_then(Value::as_str).unwrap_or("")
}

fn verb_matches(rule: &Value, verb: &str) -> bool {
    strings(rule, "verbs").any(|v| v == "*" || v == verb)
}

fn group_matches(rule: &Value, group: &str) -> bool {
    strings(rule, "apiGroups").any(|g| g == "*" || g == group)
}

/// `*`, the resource itself, `resource/subresource` or `*/subresource`.
fn resource_matches(rule: &Value, r: &ResourceAttributes<'_>) -> bool {
    strings(rule, "resources").any(|res| {
        if res == "*" {
            return true;
        }
        if r.subresource.is_empty() {
            return res == r.resource;
        }
        res.split_once('/').is_some_and(|(resource, sub)| {
            sub == r.subresource && (resource == r.resource || resource == "*")
        })
    })
}

fn name_matches(rule: &Value, name: &str) -> bool {
    let mut names = strings(rule, "resourceNames").peekable();
    names.peek().is_none() || names.any(|n| n == name)
}

fn url_matches(rule: &Value, path: &str) -> bool {
    strings(rule, "nonResourceURLs").any(|url| {
        url == "*"
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether one PolicyRule allows the request.
pub(crate) fn rule_allows(rule: &Value, attrs: &Attributes<'_>) -> bool {
    match attrs {
        Attributes::Resource(r) => {
            verb_matches(rule, r.verb)
                && group_matches(rule, r.group)
                && resource_matches(rule, r)
                && name_matches(rule, r.name)
        }
        Attributes::NonResource { verb, path } => {
            verb_matches(rule, verb) && url_matches(rule, path)
        }
    }
}

/// Whether one subject of a binding is `who`. A ServiceAccount subject without a namespace
/// is in the binding's namespace.
fn subject_is(s: &Value, who: Subject<'_>, binding_ns: &str) -> bool {
    let name = field(s, "name");
    match field(s, "kind") {
        "User" => who.username == name,
        "Group" => who.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = match field(s, "namespace") {
                "" => binding_ns,
                ns => ns,
            };
            // `system:serviceaccount:<ns>:<name>`, compared piece by piece.
            !ns.is_empty()
                && who
                    .username
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.strip_prefix(ns))
                    .and_then(|rest| rest.strip_prefix(':'))
                    == Some(name)
        }
        _ => false,
    }
}

/// The subject as the reason names it.
fn describe(s: &Value, binding_ns: &str) -> String {
    let name = field(s, "name");
    match field(s, "kind") {
        "User" => format!("User {name:?}"),
        "Group" => format!("Group {name:?}"),
        _ => {
            let ns = match field(s, "namespace") {
                "" => binding_ns,
                ns => ns,
            };
            format!("ServiceAccount \"{name}/{ns}\"")
        }
    }
}

/// The first subject of a binding that is `who`.
fn matching_subject<'a>(
    binding: &'a Value,
    who: Subject<'_>,
    binding_ns: &str,
) -> Option<&'a Value> {
    let subjects = binding.get("subjects").and_then(Value::as_array)?;
    subjects.iter().find(|s| subject_is(s, who, binding_ns))
}

/// The first subject of a binding that is `who`, described as the reason names it.
#[cfg(test)]
fn applies_to(binding: &Value, who: Subject<'_>, binding_ns: &str) -> Option<String> {
    matching_subject(binding, who, binding_ns).map(|s| describe(s, binding_ns))
}

fn grants(role: Option<&Value>, attrs: &Attributes<'_>) -> bool {
    role.and_then(|r| r.get("rules"))
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, attrs)))
}

/// The reason a binding allows the request, or `None` when no binding does. Only the
/// RoleBindings of the request's namespace are looked at.
pub(crate) fn evaluate(st: &Inner, who: Subject<'_>, attrs: &Attributes<'_>) -> Option<String> {
    for (_, binding) in st.all("clusterrolebindings") {
        let Some(subject) = matching_subject(binding, who, "") else {
            continue;
        };
        let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
        if field(role_ref, "kind") != "ClusterRole" {
            continue;
        }
        let role_name = field(role_ref, "name");
        let role = st.get("clusterroles", &key(None, role_name));
        if grants(role.map(|r| r.value()), attrs) {
            return Some(format!(
                "RBAC: allowed by ClusterRoleBinding {:?} of ClusterRole {role_name:?} to \
                 {}",
                meta_str(binding, "name"),
                describe(subject, "")
            ));
        }
    }
    let ns = match attrs {
        Attributes::Resource(r) if !r.namespace.is_empty() => r.namespace,
        _ => return None,
    };
    let prefix = format!("{ns}/");
    for (_, binding) in st.with_prefix("rolebindings", &prefix) {
        let Some(subject) = matching_subject(binding, who, ns) else {
            continue;
        };
        let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
        let role_name = field(role_ref, "name");
        let (kind, role) = match field(role_ref, "kind") {
            "Role" => ("Role", st.get("roles", &key(Some(ns), role_name))),
            "ClusterRole" => ("ClusterRole", st.get("clusterroles", &key(None, role_name))),
            _ => continue,
        };
        if grants(role.map(|r| r.value()), attrs) {
            return Some(format!(
                "RBAC: allowed by RoleBinding \"{}/{ns}\" of {kind} {role_name:?} to {}",
                meta_str(binding, "name"),
                describe(subject, ns)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use serde_json::json;

    fn res<'a>(verb: &'a str, group: &'a str, resource: &'a str) -> ResourceAttributes<'a> {
        ResourceAttributes {
            verb,
            group,
            resource,
            subresource: "",
            namespace: "ns",
            name: "",
        }
    }

    #[test]
    fn rules_match_like_kube_apiserver() {
        let crs = res("create", "cert-manager.io", "certificaterequests");
        let status = ResourceAttributes {
            verb: "patch",
            subresource: "status",
            name: "cr-1",
            ..crs
        };
        let approve = |name| ResourceAttributes {
            verb: "approve",
            resource: "signers",
            name,
            ..crs
        };
        let url = |path| Attributes::NonResource { verb: "get", path };
        let r = Attributes::Resource;
        let cases: Vec<(&str, Value, Attributes<'_>, bool)> = vec![
            (
                "exact rule",
                json!({"verbs": ["create"], "apiGroups": ["cert-manager.io"],
                       "resources": ["certificaterequests"]}),
                r(crs),
                true,
            ),
            (
                "other verb",
                json!({"verbs": ["get"], "apiGroups": ["cert-manager.io"],
                       "resources": ["certificaterequests"]}),
                r(crs),
                false,
            ),
            (
                "verb star",
                json!({"verbs": ["*"], "apiGroups": ["cert-manager.io"],
                       "resources": ["certificaterequests"]}),
                r(crs),
                true,
            ),
            (
                "other group",
                json!({"verbs": ["create"], "apiGroups": [""],
                       "resources": ["certificaterequests"]}),
                r(crs),
                false,
            ),
            (
                "group star",
                json!({"verbs": ["create"], "apiGroups": ["*"],
                       "resources": ["certificaterequests"]}),
                r(crs),
                true,
            ),
            (
                "no groups at all",
                json!({"verbs": ["create"], "resources": ["certificaterequests"]}),
                r(crs),
                false,
            ),
            (
                "resource star",
                json!({"verbs": ["create"], "apiGroups": ["cert-manager.io"],
                       "resources": ["*"]}),
                r(crs),
                true,
            ),
            (
                "the resource does not grant its subresource",
                json!({"verbs": ["patch"], "apiGroups": ["cert-manager.io"],
                       "resources": ["certificaterequests"]}),
                r(status),
                false,
            ),
            (
                "resource/subresource",
                json!({"verbs": ["patch"], "apiGroups": ["cert-manager.io"],
                       "resources": ["certificaterequests/status"]}),
                r(status),
                true,
            ),
            (
                "*/subresource",
                json!({"verbs": ["patch"], "apiGroups": ["cert-manager.io"],
                       "resources": ["*/status"]}),
                r(status),
                true,
            ),
            (
                "*/subresource does not grant the resource",
                json!({"verbs": ["create"], "apiGroups": ["cert-manager.io"],
                       "resources": ["*/status"]}),
                r(crs),
                false,
            ),
            (
                "resource star covers subresources",
                json!({"verbs": ["patch"], "apiGroups": ["cert-manager.io"],
                       "resources": ["*"]}),
                r(status),
                true,
            ),
            (
                "resourceNames: listed",
                json!({"verbs": ["approve"], "apiGroups": ["cert-manager.io"],
                       "resources": ["signers"],
                       "resourceNames": ["clusterissuers.cert-manager.io/my-issuer"]}),
                r(approve("clusterissuers.cert-manager.io/my-issuer")),
                true,
            ),
            (
                "resourceNames: another name",
                json!({"verbs": ["approve"], "apiGroups": ["cert-manager.io"],
                       "resources": ["signers"],
                       "resourceNames": ["clusterissuers.cert-manager.io/my-issuer"]}),
                r(approve("clusterissuers.cert-manager.io/other-issuer")),
                false,
            ),
            (
                "resourceNames: a request without a name",
                json!({"verbs": ["approve"], "apiGroups": ["cert-manager.io"],
                       "resources": ["signers"], "resourceNames": ["x"]}),
                r(approve("")),
                false,
            ),
            (
                "url exact",
                json!({"verbs": ["get"], "nonResourceURLs": ["/version"]}),
                url("/version"),
                true,
            ),
            (
                "url prefix",
                json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}),
                url("/apis/cert-manager.io/v1"),
                true,
            ),
            (
                "url prefix does not cover the bare path",
                json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}),
                url("/apis"),
                false,
            ),
            (
                "url star",
                json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
                url("/anything"),
                true,
            ),
            (
                "a resource rule grants no path",
                json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                url("/version"),
                false,
            ),
            (
                "a url rule grants no resource",
                json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
                r(crs),
                false,
            ),
        ];
        for (what, rule, attrs, want) in cases {
            assert_eq!(rule_allows(&rule, &attrs), want, "{what}");
        }
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let groups = vec![
            "system:serviceaccounts".to_owned(),
            "system:serviceaccounts:ns".to_owned(),
            "system:authenticated".to_owned(),
        ];
        let sa = Subject {
            username: "system:serviceaccount:ns:app",
            groups: &groups,
        };
        let cases = [
            (
                json!({"kind": "User", "name": "system:serviceaccount:ns:app"}),
                "",
                true,
            ),
            (json!({"kind": "User", "name": "app"}), "", false),
            (
                json!({"kind": "Group", "name": "system:serviceaccounts:ns"}),
                "",
                true,
            ),
            (
                json!({"kind": "Group", "name": "system:masters"}),
                "",
                false,
            ),
            (
                json!({"kind": "ServiceAccount", "name": "app", "namespace": "ns"}),
                "",
                true,
            ),
            (
                json!({"kind": "ServiceAccount", "name": "app", "namespace": "other"}),
                "ns",
                false,
            ),
            // No namespace: the binding's, and there is none for a ClusterRoleBinding.
            (json!({"kind": "ServiceAccount", "name": "app"}), "ns", true),
            (json!({"kind": "ServiceAccount", "name": "app"}), "", false),
            (json!({"kind": "Robot", "name": "app"}), "ns", false),
        ];
        for (subject, binding_ns, want) in cases {
            let binding = json!({"subjects": [subject]});
            assert_eq!(
                applies_to(&binding, sa, binding_ns).is_some(),
                want,
                "{subject} in {binding_ns:?}"
            );
        }
        let binding = json!({"subjects": [{"kind": "ServiceAccount", "name": "app"}]});
        assert_eq!(
            applies_to(&binding, sa, "ns").as_deref(),
            Some("ServiceAccount \"app/ns\"")
        );
    }

    fn store_with(objects: &[(&'static str, Option<&str>, Value)]) -> Store {
        let store = Store::new(100);
        {
            let mut st = store.lock();
            for (bucket, ns, obj) in objects {
                st.insert(bucket, key(*ns, meta_str(obj, "name")), obj.clone());
            }
        }
        store
    }

    #[test]
    fn bindings_grant_with_a_reason_naming_them() {
        let store = store_with(&[
            (
                "clusterroles",
                None,
                json!({"metadata": {"name": "approver"}, "rules": [{"verbs": ["approve"],
                    "apiGroups": ["cert-manager.io"], "resources": ["signers"],
                    "resourceNames": ["clusterissuers.cert-manager.io/my-issuer"]}]}),
            ),
            (
                "clusterrolebindings",
                None,
                json!({"metadata": {"name": "approver-binding"},
                    "roleRef": {"kind": "ClusterRole", "name": "approver"},
                    "subjects": [{"kind": "User", "name": "alice"}]}),
            ),
            (
                "roles",
                Some("ns"),
                json!({"metadata": {"name": "cr-creator", "namespace": "ns"},
                    "rules": [{"verbs": ["create"], "apiGroups": ["cert-manager.io"],
                    "resources": ["certificaterequests"]}]}),
            ),
            (
                "rolebindings",
                Some("ns"),
                json!({"metadata": {"name": "app", "namespace": "ns"},
                    "roleRef": {"kind": "Role", "name": "cr-creator"},
                    "subjects": [{"kind": "ServiceAccount", "name": "app"}]}),
            ),
            (
                "rolebindings",
                Some("ns"),
                json!({"metadata": {"name": "dangling", "namespace": "ns"},
                    "roleRef": {"kind": "Role", "name": "missing"},
                    "subjects": [{"kind": "User", "name": "bob"}]}),
            ),
        ]);
        let st = store.lock();
        let none: Vec<String> = Vec::new();
        let who = |username| Subject {
            username,
            groups: &none,
        };
        let approve = Attributes::Resource(ResourceAttributes {
            verb: "approve",
            resource: "signers",
            namespace: "",
            name: "clusterissuers.cert-manager.io/my-issuer",
            ..res("", "cert-manager.io", "")
        });
        assert_eq!(
            evaluate(&st, who("alice"), &approve).as_deref(),
            Some(
                "RBAC: allowed by ClusterRoleBinding \"approver-binding\" of ClusterRole \
                 \"approver\" to User \"alice\""
            )
        );
        let create = Attributes::Resource(res("create", "cert-manager.io", "certificaterequests"));
        assert_eq!(
            evaluate(&st, who("system:serviceaccount:ns:app"), &create).as_deref(),
            Some(
                "RBAC: allowed by RoleBinding \"app/ns\" of Role \"cr-creator\" to \
                 ServiceAccount \"app/ns\""
            )
        );
        let elsewhere = Attributes::Resource(ResourceAttributes {
            namespace: "other",
            ..res("create", "cert-manager.io", "certificaterequests")
        });
        assert_eq!(
            evaluate(&st, who("system:serviceaccount:ns:app"), &elsewhere),
            None
        );
        assert_eq!(evaluate(&st, who("bob"), &create), None, "role is missing");
        assert_eq!(evaluate(&st, who("alice"), &create), None);
    }
}
