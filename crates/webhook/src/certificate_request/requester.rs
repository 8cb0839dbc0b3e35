//! Who asked: the requester fields of a CertificateRequest (`spec.username`, `uid`,
//! `groups`, `extra`) are set from the admission request's user on create, whatever the
//! client sent, and must then equal that user.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;
use nico_k8s_types::CertificateRequestSpec;
use serde_json::Value;

use crate::review::Problem;

/// A user as the API server authenticated them. Absent and empty values are the same.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requester {
    pub(crate) username: String,
    pub(crate) uid: Option<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) extra: BTreeMap<String, Vec<String>>,
}

impl Requester {
    /// The user of an admission request.
    pub(crate) fn from_user_info(user: &UserInfo) -> Self {
        Self {
            username: user.username.clone().unwrap_or_default(),
            uid: user.uid.clone().filter(|uid| !uid.is_empty()),
            groups: user.groups.clone().unwrap_or_default(),
            extra: user.extra.clone().unwrap_or_default(),
        }
    }

    /// The requester a CertificateRequest records.
    pub(crate) fn from_spec(spec: &CertificateRequestSpec) -> Self {
        Self {
            username: spec.username.clone().unwrap_or_default(),
            uid: spec.uid.clone().filter(|uid| !uid.is_empty()),
            groups: spec.groups.clone().unwrap_or_default(),
            extra: spec.extra.clone().unwrap_or_default(),
        }
    }

    /// `spec` with the requester fields set to this user; empty ones are removed.
    pub(crate) fn stamp(&self, spec: &mut serde_json::Map<String, Value>) {
        spec.insert("username".into(), self.username.clone().into());
        let mut set = |key: &str, value: Option<Value>| match value {
            Some(value) => spec.insert(key.into(), value),
            None => spec.remove(key),
        };
        set("uid", self.uid.clone().map(Value::from));
        set(
            "groups",
            (!self.groups.is_empty()).then(|| Value::from(self.groups.clone())),
        );
        set(
            "extra",
            (!self.extra.is_empty()).then(|| serde_json::json!(self.extra)),
        );
    }

    /// The requester fields of `recorded` that differ from this user.
    pub(crate) fn differences(&self, recorded: &Requester) -> Vec<Problem> {
        let differs = |field: &str| {
            Problem::new(
                format!("spec.{field}"),
                "must be the requester's own, as the API server authenticated them",
            )
        };
        let mut problems = Vec::new();
        if recorded.username != self.username {
            problems.push(differs("username"));
        }
        if recorded.uid != self.uid {
            problems.push(differs("uid"));
        }
        if recorded.groups != self.groups {
            problems.push(differs("groups"));
        }
        if recorded.extra != self.extra {
            problems.push(differs("extra"));
        }
        problems
    }
}

/// The patch that records `requester` in the CertificateRequest `object`. An object
/// without a `spec` is left for validation to refuse.
pub(crate) fn stamp_patch(object: &Value, requester: &Requester) -> json_patch::Patch {
    let mut stamped = object.clone();
    match stamped.get_mut("spec").and_then(Value::as_object_mut) {
        Some(spec) => requester.stamp(spec),
        None => return json_patch::Patch(Vec::new()),
    }
    json_patch::diff(object, &stamped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alice() -> Requester {
        Requester {
            username: "system:serviceaccount:demo:web".into(),
            uid: Some("u-1".into()),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::from([(
                "authentication.kubernetes.io/pod-name".into(),
                vec!["web-0".into()],
            )]),
        }
    }

    fn apply(object: &Value, patch: &json_patch::Patch) -> Value {
        let mut patched = object.clone();
        json_patch::patch(&mut patched, patch).unwrap();
        patched
    }

    #[test]
    fn forged_fields_are_replaced_and_stale_ones_removed() {
        let forged = json!({"spec": {
            "request": "cmVx", "username": "system:admin", "uid": "forged",
            "groups": ["system:masters"], "extra": {"x": ["y"]}
        }});
        let patched = apply(&forged, &stamp_patch(&forged, &alice()));
        assert_eq!(
            patched,
            json!({"spec": {
                "request": "cmVx", "username": "system:serviceaccount:demo:web", "uid": "u-1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["web-0"]}
            }})
        );
        let bare = Requester {
            username: "bob".into(),
            ..Requester::default()
        };
        let patched = apply(&forged, &stamp_patch(&forged, &bare));
        assert_eq!(
            patched,
            json!({"spec": {"request": "cmVx", "username": "bob"}})
        );
        assert!(stamp_patch(&patched, &bare).0.is_empty(), "idempotent");
        assert!(stamp_patch(&json!({"metadata": {}}), &bare).0.is_empty());
    }

    #[test]
    fn differences_name_each_field() {
        let recorded = Requester {
            uid: None,
            groups: vec!["system:masters".into()],
            ..alice()
        };
        let fields: Vec<String> = alice()
            .differences(&recorded)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["spec.uid", "spec.groups"]);
        assert!(alice().differences(&alice()).is_empty());
        let user = UserInfo {
            username: Some("bob".into()),
            uid: Some(String::new()),
            groups: None,
            extra: None,
        };
        let spec = CertificateRequestSpec {
            username: Some("bob".into()),
            groups: Some(vec![]),
            ..CertificateRequestSpec::default()
        };
        let (from_user, from_spec) = (
            Requester::from_user_info(&user),
            Requester::from_spec(&spec),
        );
        assert!(from_user.differences(&from_spec).is_empty());
    }
}
