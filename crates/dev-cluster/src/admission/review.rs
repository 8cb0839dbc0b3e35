//! `admission.k8s.io/v1` AdmissionReviews: the request the API server sends (kube-wire
//! 14c-14f) and the reading of a webhook's answer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::auth::UserInfo;
use crate::registry::ResourceDef;
use crate::status::{Cause, Details};

use super::rules::Operation;

const ADMISSION_V1: &str = "admission.k8s.io/v1";

/// Everything an AdmissionReview request says besides the objects.
#[derive(Debug, Clone)]
pub(crate) struct ReviewRequest<'a> {
    pub(crate) def: &'a ResourceDef,
    pub(crate) subresource: &'a str,
    pub(crate) operation: Operation,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) user: &'a UserInfo,
    pub(crate) dry_run: bool,
    /// `fieldManager` of the write, if the client gave one.
    pub(crate) field_manager: Option<&'a str>,
}

impl ReviewRequest<'_> {
    /// The `CreateOptions`, `UpdateOptions` or `DeleteOptions` the review carries.
    fn options(&self) -> Value {
        let kind = match self.operation {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
        };
        let mut options = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
        if self.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(manager) = self.field_manager.filter(|m| !m.is_empty())
            && self.operation != Operation::Delete
        {
            options["fieldManager"] = manager.into();
        }
        options
    }

    /// The AdmissionReview to POST, with request uid `uid`.
    pub(crate) fn to_review(
        &self,
        uid: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Value {
        let def = self.def;
        let kind = json!({"group": def.group, "version": def.version, "kind": def.kind});
        let resource = json!({"group": def.group, "version": def.version,
                              "resource": def.plural});
        let mut request = Map::new();
        request.insert("uid".into(), uid.into());
        request.insert("kind".into(), kind.clone());
        request.insert("resource".into(), resource.clone());
        if !self.subresource.is_empty() {
            request.insert("subResource".into(), self.subresource.into());
        }
        request.insert("requestKind".into(), kind);
        request.insert("requestResource".into(), resource);
        if !self.subresource.is_empty() {
            request.insert("requestSubResource".into(), self.subresource.into());
        }
        for (key, value) in [("name", self.name), ("namespace", self.namespace)] {
            if !value.is_empty() {
                request.insert(key.into(), value.into());
            }
        }
        request.insert("operation".into(), self.operation.as_str().into());
        request.insert("userInfo".into(), self.user.to_json());
        request.insert("object".into(), object.cloned().unwrap_or(Value::Null));
        request.insert("oldObject".into(), old.cloned().unwrap_or(Value::Null));
        request.insert("dryRun".into(), self.dry_run.into());
        request.insert("options".into(), self.options());
        json!({"kind": "AdmissionReview", "apiVersion": ADMISSION_V1, "request": request})
    }
}

/// A webhook's answer, read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Allowed, with the JSON patch operations to apply (mutating webhooks only).
    Allowed { patch: Option<Value> },
    /// Denied, with the webhook's `status` (possibly empty).
    Denied(Value),
}

/// Reads the answer to the review with uid `uid`; the error is what the API server reports
/// as an invalid webhook response.
pub(crate) fn read_response(uid: &str, body: &[u8]) -> Result<Verdict, String> {
    let review: Value = serde_json::from_slice(body)
        .map_err(|e| format!("failed to decode the AdmissionReview: {e}"))?;
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != ADMISSION_V1 || kind != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of {ADMISSION_V1}, Kind=AdmissionReview, got \
             {api_version}, Kind={kind}"
        ));
    }
    let response = review
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("webhook response was absent")?;
    let got = response.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let allowed = response
        .get("allowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !allowed {
        return Ok(Verdict::Denied(
            response.get("status").cloned().unwrap_or(Value::Null),
        ));
    }
    let patch_type = response.get("patchType").and_then(Value::as_str);
    let patch = response.get("patch").and_then(Value::as_str);
    let patch = match (patch_type, patch) {
        (None, None) => None,
        (Some("JSONPatch"), Some(encoded)) => {
            let raw = STANDARD
                .decode(encoded)
                .map_err(|e| format!("response.patch is not base64: {e}"))?;
            let ops: Value = serde_json::from_slice(&raw)
                .map_err(|e| format!("response.patch is not a JSON patch: {e}"))?;
            if !ops.is_array() {
                return Err("response.patch is not a JSON patch array".into());
            }
            Some(ops)
        }
        (Some(other), Some(_)) => {
            return Err(format!(
                "webhook returned invalid response.patchType of {other:?}"
            ));
        }
        (Some(_), None) => {
            return Err("webhook returned response.patchType but not response.patch".into());
        }
        (None, Some(_)) => {
            return Err("webhook returned response.patch but not response.patchType".into());
        }
    };
    Ok(Verdict::Allowed { patch })
}

/// The client's error for a denial: the webhook's own code, reason and details, and its
/// message after `admission webhook "<name>" denied the request` (kube-wire 14h).
pub(crate) fn denial(webhook: &str, status: &Value) -> (u16, String, String, Option<Details>) {
    let text = |k: &str| {
        status
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let denied = format!("admission webhook {webhook:?} denied the request");
    let (message, reason) = (text("message"), text("reason"));
    let message = match (message.is_empty(), reason.is_empty()) {
        (false, _) => format!("{denied}: {message}"),
        (true, false) => format!("{denied}: {reason}"),
        (true, true) => format!("{denied} without explanation"),
    };
    let details = status.get("details").filter(|d| d.is_object()).map(|d| {
        let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
        Details {
            name: text("name"),
            group: text("group"),
            kind: text("kind"),
            uid: text("uid"),
            causes: d
                .get("causes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    let part = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                    Cause {
                        reason: part("reason").into(),
                        message: part("message"),
                        field: part("field"),
                    }
                })
                .collect(),
        }
    });
    (code, reason, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;
    use std::collections::BTreeMap;

    fn user() -> UserInfo {
        UserInfo {
            username: "system:serviceaccount:ns:app".into(),
            uid: Some("sa-uid".into()),
            groups: vec!["system:authenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn a_status_update_review_names_the_subresource() {
        let def = lookup("cert-manager.io", "v1", "certificaterequests").expect("registered");
        let user = user();
        let request = ReviewRequest {
            def,
            subresource: "status",
            operation: Operation::Update,
            namespace: "ns",
            name: "cr",
            user: &user,
            dry_run: false,
            field_manager: None,
        };
        let obj = json!({"metadata": {"name": "cr"}});
        let review = request.to_review("u-1", Some(&obj), Some(&obj));
        let r = &review["request"];
        assert_eq!(review["apiVersion"], ADMISSION_V1);
        assert_eq!(r["subResource"], "status");
        assert_eq!(r["requestSubResource"], "status");
        assert_eq!(r["operation"], "UPDATE");
        assert_eq!(
            r["options"],
            json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"})
        );
        assert_eq!(r["resource"]["resource"], "certificaterequests");
        assert_eq!(r["userInfo"]["uid"], "sa-uid");
        let create = ReviewRequest {
            subresource: "",
            operation: Operation::Create,
            dry_run: true,
            field_manager: Some("me"),
            ..request
        };
        let review = create.to_review("u-2", Some(&obj), None);
        let r = &review["request"];
        assert!(r.get("subResource").is_none());
        assert_eq!(r["oldObject"], Value::Null);
        assert_eq!(r["dryRun"], true);
        assert_eq!(
            r["options"],
            json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1",
                   "dryRun": ["All"], "fieldManager": "me"})
        );
    }

    fn answer(response: Value) -> Vec<u8> {
        json!({"apiVersion": ADMISSION_V1, "kind": "AdmissionReview", "response": response})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn answers_are_read_strictly() {
        let patch = STANDARD.encode(r#"[{"op":"add","path":"/spec/x","value":1}]"#);
        let cases: Vec<(Vec<u8>, Result<Verdict, &str>)> = vec![
            (
                answer(json!({"uid": "u", "allowed": true})),
                Ok(Verdict::Allowed { patch: None }),
            ),
            (
                answer(
                    json!({"uid": "u", "allowed": true, "patchType": "JSONPatch",
                              "patch": patch}),
                ),
                Ok(Verdict::Allowed {
                    patch: Some(json!([{"op": "add", "path": "/spec/x", "value": 1}])),
                }),
            ),
            (
                answer(json!({"uid": "u", "allowed": false, "status": {"message": "no"}})),
                Ok(Verdict::Denied(json!({"message": "no"}))),
            ),
            (
                answer(json!({"uid": "other", "allowed": true})),
                Err("expected response.uid=\"u\", got \"other\""),
            ),
            (
                answer(json!({"uid": "u", "allowed": true, "patch": patch})),
                Err("webhook returned response.patch but not response.patchType"),
            ),
            (
                answer(json!({"uid": "u", "allowed": true, "patchType": "Merge",
                              "patch": patch})),
                Err("webhook returned invalid response.patchType of \"Merge\""),
            ),
            (
                b"{}".to_vec(),
                Err(
                    "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, \
                     got , Kind=",
                ),
            ),
        ];
        for (body, want) in cases {
            let got = read_response("u", &body);
            assert_eq!(
                got,
                want.map_err(str::to_owned),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(read_response("u", b"not json").is_err());
    }

    proptest::proptest! {
        /// A webhook's answer is untrusted input: reading it never panics, whatever it is.
        #[test]
        fn any_answer_is_read_without_panicking(body in proptest::collection::vec(
            proptest::prelude::any::<u8>(), 0..256)) {
            let _ = read_response("u", &body);
        }

        #[test]
        fn any_json_answer_is_read_without_panicking(
            uid in "[a-z]{0,3}",
            allowed in proptest::prelude::any::<bool>(),
            patch_type in proptest::option::of("[A-Za-z]{0,10}"),
            patch in proptest::option::of("[A-Za-z0-9+/=]{0,40}"),
        ) {
            let mut response = json!({"uid": uid, "allowed": allowed});
            if let Some(t) = patch_type {
                response["patchType"] = t.into();
            }
            if let Some(p) = patch {
                response["patch"] = p.into();
            }
            let verdict = read_response("u", &answer(response));
            if uid != "u" {
                proptest::prop_assert!(verdict.is_err());
            }
        }
    }

    #[test]
    fn denials_keep_the_webhook_status() {
        let (code, reason, message, details) = denial("v.a.b", &json!({"message": "bad name"}));
        assert_eq!((code, reason.as_str()), (400, ""));
        assert_eq!(
            message,
            "admission webhook \"v.a.b\" denied the request: bad name"
        );
        assert!(details.is_none());
        let (code, reason, message, _) =
            denial("v.a.b", &json!({"code": 403, "reason": "Forbidden"}));
        assert_eq!((code, reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            message,
            "admission webhook \"v.a.b\" denied the request: Forbidden"
        );
        let (code, _, message, _) = denial("v.a.b", &json!({"code": 200}));
        assert_eq!(code, 400, "a denial is never a success");
        assert_eq!(
            message,
            "admission webhook \"v.a.b\" denied the request without explanation"
        );
    }
}
