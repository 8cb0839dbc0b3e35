//! What kube-apiserver creates for itself at start: the default RBAC policy every client
//! relies on, and the `kubernetes` Service.
//!
//! The roles are the upstream ones that matter here: `cluster-admin` (bound to
//! `system:masters`), `system:basic-user` (self reviews), `system:discovery` and
//! `system:public-info-viewer` (discovery and health paths) for every authenticated user,
//! and `system:auth-delegator` (token and access reviews, bound to nobody) for webhooks and
//! controllers to be bound to.

use serde_json::{Value, json};

use crate::store::{Inner, key};
use crate::util::{new_uid, now_time};

const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";

fn metadata(name: &str) -> Value {
    json!({
        "name": name,
        "uid": new_uid(),
        "creationTimestamp": now_time(),
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRole", "metadata": metadata(name),
           "rules": rules})
}

fn binding_to_groups(name: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRoleBinding", "metadata": metadata(name),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                       "name": name},
           "subjects": subjects})
}

/// The default ClusterRoles and the groups each is bound to (none: not bound).
fn default_policy() -> Vec<(Value, &'static [&'static str])> {
    vec![
        (
            cluster_role(
                "cluster-admin",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                       {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            ),
            &["system:masters"],
        ),
        (
            cluster_role(
                "system:basic-user",
                json!([{"apiGroups": ["authorization.k8s.io"],
                        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                        "verbs": ["create"]},
                       {"apiGroups": ["authentication.k8s.io"],
                        "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
            ),
            &["system:authenticated"],
        ),
        (
            cluster_role(
                "system:discovery",
                json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                                            "/livez", "/openapi", "/openapi/*", "/readyz",
                                            "/version", "/version/"],
                        "verbs": ["get"]}]),
            ),
            &["system:authenticated"],
        ),
        (
            cluster_role(
                "system:public-info-viewer",
                json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version",
                                            "/version/"],
                        "verbs": ["get"]}]),
            ),
            &["system:authenticated", "system:unauthenticated"],
        ),
        (
            cluster_role(
                "system:auth-delegator",
                json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                        "verbs": ["create"]},
                       {"apiGroups": ["authorization.k8s.io"],
                        "resources": ["subjectaccessreviews"], "verbs": ["create"]}]),
            ),
            &[],
        ),
    ]
}

/// Stores the default policy and the `default/kubernetes` Service pointing at `port`.
pub(crate) fn seed(st: &mut Inner, port: u16) {
    for (role, groups) in default_policy() {
        let name = crate::util::meta_str(&role, "name").to_owned();
        if !groups.is_empty() {
            st.insert(
                "clusterrolebindings",
                key(None, &name),
                binding_to_groups(&name, groups),
            );
        }
        st.insert("clusterroles", key(None, &name), role);
    }
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": new_uid(),
                     "creationTimestamp": now_time(),
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"],
                 "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": port}],
                 "sessionAffinity": "None", "type": "ClusterIP"},
        "status": {"loadBalancer": {}},
    });
    st.insert("services", key(Some("default"), "kubernetes"), service);
}
