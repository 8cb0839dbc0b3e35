//! The approver-policy `CertificateRequestPolicy` (`policy.cert-manager.io/v1alpha1`,
//! cluster-scoped), so that existing policy manifests keep working.
//!
//! The `spec` is kept as the JSON the API server holds and read by `nico-request-policy`:
//! a policy whose spec this version cannot read must still decode, so that it can be marked
//! not `Ready` with the reason, instead of breaking the watch of every policy.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ClusterResourceScope;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// The API group of CertificateRequestPolicies.
pub const POLICY_GROUP: &str = "policy.cert-manager.io";

/// The API version of CertificateRequestPolicies.
pub const POLICY_VERSION: &str = "v1alpha1";

/// The resource name, as RBAC rules and SubjectAccessReviews spell it.
pub const POLICY_RESOURCE: &str = "certificaterequestpolicies";

/// The RBAC verb that binds a requester to a policy.
pub const POLICY_USE_VERB: &str = "use";

/// The condition type that says whether a policy is loaded.
pub const POLICY_READY: &str = "Ready";

/// A policy profile: which requests it is for and what they may ask for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestPolicy {
    /// `policy.cert-manager.io/v1alpha1`.
    #[serde(default = "api_version")]
    pub api_version: String,
    /// `CertificateRequestPolicy`.
    #[serde(default = "kind")]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec as stored; `nico_request_policy::PolicySpec` reads it.
    #[serde(default)]
    pub spec: serde_json::Value,
    /// The `Ready` condition, written by the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CertificateRequestPolicyStatus>,
}

/// What the approver reports about a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestPolicyStatus {
    /// The `Ready` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

fn api_version() -> String {
    format!("{POLICY_GROUP}/{POLICY_VERSION}")
}

fn kind() -> String {
    "CertificateRequestPolicy".to_owned()
}

impl CertificateRequestPolicy {
    /// A policy named `name` with `spec`.
    pub fn new(name: &str, spec: serde_json::Value) -> Self {
        Self {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// The conditions, empty when there is no status yet.
    pub fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
    }

    /// The `Ready` condition, if written.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == POLICY_READY)
    }

    /// Adds a condition, replacing one of the same type; `lastTransitionTime` is kept when
    /// the status does not change.
    pub fn set_condition(&mut self, mut condition: Condition) {
        let status = self.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
            Some(existing) => {
                if existing.status == condition.status {
                    condition.last_transition_time = existing.last_transition_time.clone();
                }
                *existing = condition;
            }
            None => conditions.push(condition),
        }
    }
}

impl kube::Resource for CertificateRequestPolicy {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("CertificateRequestPolicy")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(POLICY_GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(POLICY_VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(POLICY_RESOURCE)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConditionStatus;
    use kube::Resource as _;

    #[test]
    fn any_spec_decodes_and_the_object_round_trips() {
        let json = serde_json::json!({
            "apiVersion": "policy.cert-manager.io/v1alpha1",
            "kind": "CertificateRequestPolicy",
            "metadata": {"name": "p", "generation": 3},
            "spec": {"selector": {"issuerRef": {}}, "allowed": {"dnsNames": {"values": "odd"}}},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        });
        let policy: CertificateRequestPolicy = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(policy.ready().unwrap().status, "False");
        assert_eq!(serde_json::to_value(&policy).unwrap(), json);
        assert_eq!(
            CertificateRequestPolicy::url_path(&(), None),
            "/apis/policy.cert-manager.io/v1alpha1/certificaterequestpolicies"
        );
    }

    #[test]
    fn ready_is_replaced_and_keeps_its_transition_time() {
        let mut policy = CertificateRequestPolicy::new("p", serde_json::json!({}));
        assert_eq!(policy.api_version, "policy.cert-manager.io/v1alpha1");
        let first = Condition::new(
            crate::ConditionType::Ready,
            ConditionStatus::True,
            "Loaded",
            "a",
        );
        policy.set_condition(first.clone());
        let mut again = first.clone();
        again.message = Some("b".into());
        again.last_transition_time = None;
        policy.set_condition(again);
        assert_eq!(policy.conditions().len(), 1);
        assert_eq!(
            policy.ready().unwrap().last_transition_time,
            first.last_transition_time
        );
    }
}
