//! Reading an AdmissionReview (`admission.k8s.io/v1`) and writing the answer.
//!
//! A body that is too large, not JSON, not a v1 AdmissionReview or without a request is
//! refused with a 400 and a sentence saying which; anything readable gets an answer in an
//! AdmissionReview. Denials carry the fields to fix as causes, as the API server's own
//! validation errors do.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use kube::core::{DynamicObject, Status};
use serde_json::Value;

/// The webhooks served, one path each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Endpoint {
    /// Mutating: a CertificateRequest's requester fields from the review's user.
    CertificateRequestIdentity,
    /// Validating: CertificateRequest creates and updates.
    CertificateRequestValidation,
    /// Validating: CertificateRequestPolicy creates and updates.
    PolicyValidation,
    /// Mutating: the identity volume in labelled pods.
    PodInjection,
}

impl Endpoint {
    /// Every endpoint.
    pub(crate) const ALL: [Endpoint; 4] = [
        Endpoint::CertificateRequestIdentity,
        Endpoint::CertificateRequestValidation,
        Endpoint::PolicyValidation,
        Endpoint::PodInjection,
    ];

    /// The HTTP path.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::CertificateRequestIdentity => "/mutate/certificaterequests",
            Self::CertificateRequestValidation => "/validate/certificaterequests",
            Self::PolicyValidation => "/validate/certificaterequestpolicies",
            Self::PodInjection => "/mutate/pods",
        }
    }

    /// The webhook's name in its configuration.
    pub(crate) fn webhook_name(self) -> &'static str {
        match self {
            Self::CertificateRequestIdentity => "requester.certificaterequests.identity.nico.io",
            Self::CertificateRequestValidation => "certificaterequests.identity.nico.io",
            Self::PolicyValidation => "certificaterequestpolicies.identity.nico.io",
            Self::PodInjection => "inject.pods.identity.nico.io",
        }
    }

    /// The short name in metrics and logs.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::CertificateRequestIdentity => "certificaterequest_requester",
            Self::CertificateRequestValidation => "certificaterequest_validation",
            Self::PolicyValidation => "policy_validation",
            Self::PodInjection => "pod_injection",
        }
    }

    /// The API group and resource it reviews.
    pub(crate) fn resource(self) -> (&'static str, &'static str) {
        match self {
            Self::CertificateRequestIdentity | Self::CertificateRequestValidation => {
                ("cert-manager.io", "certificaterequests")
            }
            Self::PolicyValidation => ("policy.cert-manager.io", "certificaterequestpolicies"),
            Self::PodInjection => ("", "pods"),
        }
    }
}

/// Why a body is not a review this webhook can answer; the text is the 400's body.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is over the limit.
    #[error("AdmissionReview is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body could not be read.
    #[error("failed to read the request body")]
    Body,
    /// The body is not JSON of the AdmissionReview shape.
    #[error("malformed AdmissionReview: {0}")]
    Malformed(String),
    /// Another API version or kind.
    #[error("expected an admission.k8s.io/v1 AdmissionReview, got {api_version:?} {kind:?}")]
    WrongType {
        /// The apiVersion sent.
        api_version: String,
        /// The kind sent.
        kind: String,
    },
    /// No `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
}

/// Longest parser message repeated in a refusal: serde quotes the offending value, which can
/// be as long as the body, and the refusal is logged and sent back.
const MAX_PARSER_MESSAGE: usize = 256;

/// Longest apiVersion or kind repeated in a refusal.
const MAX_TYPE_SHOWN: usize = 64;

/// Reads an AdmissionReview request.
pub(crate) fn read(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReadError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| ReadError::Malformed(clip(&e.to_string(), MAX_PARSER_MESSAGE)))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(ReadError::WrongType {
            api_version: clip(&review.types.api_version, MAX_TYPE_SHOWN),
            kind: clip(&review.types.kind, MAX_TYPE_SHOWN),
        });
    }
    review.try_into().map_err(|_| ReadError::NoRequest)
}

/// `text` cut to `max` characters (marked with `...` when cut), control characters escaped
/// so that a refusal stays one line.
fn clip(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One problem with the reviewed object: the field to fix and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The field path, e.g. `spec.usages`.
    pub(crate) field: String,
    /// What is wrong, for the requester.
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What a webhook decided.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Allowed as it is.
    Allow,
    /// Allowed with these changes.
    Patch(json_patch::Patch),
    /// The object breaks rules: 422, one cause per problem.
    Invalid(Vec<Problem>),
    /// The requester may not do this: 403.
    Forbidden(String),
    /// The webhook could not decide (a check it needs failed): 503, to be retried.
    Unavailable(String),
}

impl Verdict {
    /// The outcome label for metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::Allow => "allowed",
            Self::Patch(_) => "patched",
            Self::Invalid(_) | Self::Forbidden(_) => "denied",
            Self::Unavailable(_) => "error",
        }
    }

    /// Allowed when there is no problem, otherwise invalid.
    pub(crate) fn from_problems(problems: Vec<Problem>) -> Self {
        if problems.is_empty() {
            Self::Allow
        } else {
            Self::Invalid(problems)
        }
    }
}

fn failure(code: u16, reason: &str, message: String, causes: Vec<StatusCause>) -> Status {
    Status {
        status: Some(StatusSummary::Failure),
        code,
        message,
        reason: reason.to_owned(),
        details: (!causes.is_empty()).then(|| StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes,
            retry_after_seconds: 0,
        }),
        ..Status::default()
    }
}

/// The AdmissionReview answering `request` with `verdict`, as JSON. The patch is base64
/// text, as the API server writes `[]byte` fields.
pub(crate) fn answer(request: &AdmissionRequest<DynamicObject>, verdict: Verdict) -> Value {
    let review = response(request, verdict).into_review();
    let mut json = serde_json::to_value(&review).unwrap_or(Value::Null);
    let patch = json.pointer_mut("/response/patch");
    if let Some(patch) = patch {
        let bytes: Option<Vec<u8>> = serde_json::from_value(patch.clone()).ok();
        *patch = bytes.map(|b| STANDARD.encode(b)).unwrap_or_default().into();
    }
    json
}

fn response(request: &AdmissionRequest<DynamicObject>, verdict: Verdict) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    match verdict {
        Verdict::Allow => response,
        Verdict::Patch(patch) if patch.0.is_empty() => response,
        Verdict::Patch(patch) => match response.with_patch(patch) {
            Ok(patched) => patched,
            // A patch of JSON values always serialises; refuse rather than skip it.
            Err(_) => deny(
                AdmissionResponse::from(request),
                failure(
                    500,
                    "InternalError",
                    "failed to encode the patch".into(),
                    vec![],
                ),
            ),
        },
        Verdict::Invalid(problems) => {
            let message = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let causes = problems
                .into_iter()
                .map(|p| StatusCause {
                    reason: "FieldValueInvalid".to_owned(),
                    message: p.message,
                    field: p.field,
                })
                .collect();
            deny(response, failure(422, "Invalid", message, causes))
        }
        Verdict::Forbidden(message) => deny(response, failure(403, "Forbidden", message, vec![])),
        Verdict::Unavailable(message) => deny(
            response,
            failure(503, "ServiceUnavailable", message, vec![]),
        ),
    }
}

fn deny(response: AdmissionResponse, status: Status) -> AdmissionResponse {
    let mut response = response.deny(&status.message);
    response.result = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::test_support::review_body as review;

    fn minimal() -> serde_json::Value {
        json!({
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p", "namespace": "ns", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
        })
    }

    #[test]
    fn unreadable_bodies_say_what_is_wrong() {
        let mut deep = b"{\"apiVersion\":".to_vec();
        deep.extend([b'['; 10_000]);
        let cases: [(&[u8], &str); 5] = [
            (b"", "malformed AdmissionReview: EOF"),
            (
                b"{\"apiVersion\": 1}",
                "malformed AdmissionReview: invalid type",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#,
                "expected an admission.k8s.io/v1 AdmissionReview, got \"admission.k8s.io/v1beta1\"",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "AdmissionReview has no request",
            ),
            (&deep, "malformed AdmissionReview: recursion limit exceeded"),
        ];
        for (body, expected) in cases {
            let err = read(body).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        assert_eq!(read(&review(minimal())).unwrap().uid, "u-1");
    }

    #[test]
    fn answers_carry_the_uid_and_denials_name_the_fields() {
        let request = read(&review(minimal())).unwrap();
        let allowed = answer(&request, Verdict::Allow);
        assert_eq!(allowed["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(allowed["response"]["uid"], "u-1");
        assert_eq!(allowed["response"]["allowed"], true);
        assert!(allowed["response"].get("patch").is_none());

        let invalid = Verdict::Invalid(vec![
            Problem::new("spec.usages", "do not agree"),
            Problem::new("spec.isCA", "is false"),
        ]);
        let denied = answer(&request, invalid);
        let response = &denied["response"];
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 422);
        assert_eq!(response["status"]["reason"], "Invalid");
        assert_eq!(
            response["status"]["message"],
            "spec.usages: do not agree; spec.isCA: is false"
        );
        assert_eq!(
            response["status"]["details"]["causes"][1]["field"],
            "spec.isCA"
        );

        let forbidden = answer(&request, Verdict::Forbidden("no".into()));
        assert_eq!(forbidden["response"]["status"]["code"], 403);

        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/x", "value": 1}])).unwrap();
        let patched = answer(&request, Verdict::Patch(patch));
        assert_eq!(patched["response"]["patchType"], "JSONPatch");
        let text = patched["response"]["patch"].as_str().unwrap();
        assert_eq!(
            STANDARD.decode(text).unwrap(),
            br#"[{"op":"add","path":"/x","value":1}]"#
        );
        let empty = Verdict::Patch(json_patch::Patch(vec![]));
        let unpatched = answer(&request, empty);
        assert!(unpatched["response"].get("patchType").is_none());
    }
}
