//! Building AdmissionReview requests for unit tests.

use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use serde_json::{Value, json};

/// The request of an AdmissionReview made of `fields` over defaults (uid `u-1`, user
/// `alice`).
pub(crate) fn admission(fields: Value) -> AdmissionRequest<DynamicObject> {
    let mut request = json!({
        "uid": "u-1",
        "userInfo": {"username": "alice", "uid": "alice-uid", "groups": ["system:authenticated"]},
    });
    for (key, value) in fields.as_object().into_iter().flatten() {
        request[key] = value.clone();
    }
    let body = review_body(request);
    crate::review::read(&body).expect("a readable review")
}

/// An AdmissionReview body around `request`.
pub(crate) fn review_body(request: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
    }))
    .expect("JSON")
}
