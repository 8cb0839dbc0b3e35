//! API errors and the `Status` objects that carry them on the wire.
//!
//! Every failure the dev cluster answers is a `meta/v1` `Status` whose HTTP code equals its
//! `code` field. Which `details` appear, and whether `details.kind` names the plural resource
//! or the Kind, follows what a real kube-apiserver does for each kind of error.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

/// One entry of `details.causes`. Empty parts are left out on the wire, as Go omits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// Machine-readable reason such as `FieldValueRequired`.
    pub(crate) reason: Cow<'static, str>,
    /// Human-readable message, without the field.
    pub(crate) message: String,
    /// The field path, e.g. `spec.request`.
    pub(crate) field: String,
}

impl Cause {
    /// A `FieldValueRequired` cause.
    pub(crate) fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// A `FieldValueRequired` cause with a detail text.
    pub(crate) fn required_detail(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired".into(),
            message: format!("Required value: {detail}"),
            field: field.into(),
        }
    }

    /// A `FieldValueInvalid` cause; `shown` is the value as the API server renders it.
    pub(crate) fn invalid(field: impl Into<String>, shown: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {shown}: {detail}"),
            field: field.into(),
        }
    }

    /// A `FieldValueNotSupported` cause listing the accepted values.
    pub(crate) fn not_supported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Cause {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
            field: field.into(),
        }
    }

    /// A `FieldValueTypeInvalid` cause as the CRD schema validator words it.
    pub(crate) fn type_invalid(field: impl Into<String>, actual: &str, expected: &str) -> Cause {
        let field = field.into();
        Cause {
            reason: "FieldValueTypeInvalid".into(),
            message: format!(
                "Invalid value: {actual:?}: {field} in body must be of type {expected}: {actual:?}"
            ),
            field,
        }
    }

    /// A `FieldValueForbidden` cause.
    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }

    /// A `FieldValueDuplicate` cause.
    pub(crate) fn duplicate(field: impl Into<String>, shown: &str) -> Cause {
        Cause {
            reason: "FieldValueDuplicate".into(),
            message: format!("Duplicate value: {shown}"),
            field: field.into(),
        }
    }

    /// A cause carrying only a message, as internal errors have.
    pub(crate) fn message_only(message: impl Into<String>) -> Cause {
        Cause {
            reason: Cow::Borrowed(""),
            message: message.into(),
            field: String::new(),
        }
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (key, value) in [
            ("reason", self.reason.as_ref()),
            ("message", self.message.as_str()),
            ("field", self.field.as_str()),
        ] {
            if !value.is_empty() {
                map.insert(key.into(), value.into());
            }
        }
        Value::Object(map)
    }
}

/// The optional `details` block of a `Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Details {
    pub(crate) name: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) causes: Vec<Cause>,
}

impl Details {
    /// Details naming an object: empty strings are left out, as the API server omits them.
    pub(crate) fn object(name: &str, group: &str, kind: &str) -> Details {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Details {
            name: some(name),
            group: some(group),
            kind: some(kind),
            ..Details::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        if let Some(name) = &self.name {
            map.insert("name".into(), name.clone().into());
        }
        if let Some(group) = &self.group {
            map.insert("group".into(), group.clone().into());
        }
        if let Some(kind) = &self.kind {
            map.insert("kind".into(), kind.clone().into());
        }
        if let Some(uid) = &self.uid {
            map.insert("uid".into(), uid.clone().into());
        }
        if !self.causes.is_empty() {
            map.insert(
                "causes".into(),
                self.causes.iter().map(Cause::to_json).collect(),
            );
        }
        Value::Object(map)
    }
}

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub(crate) struct ApiError {
    /// HTTP status code, equal to the `code` field.
    pub(crate) code: u16,
    /// The `reason` field, e.g. `NotFound`; left out when empty (webhook denials).
    pub(crate) reason: Cow<'static, str>,
    /// The `message` field.
    pub(crate) message: String,
    /// The `details` field, absent when `None` (boxed to keep `Result`s small).
    pub(crate) details: Option<Box<Details>>,
}

/// `<resource>.<group>` or just `<resource>` for the core group.
pub(crate) fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: Cow::Borrowed(reason),
            message: message.into(),
            details: None,
        }
    }

    fn with(mut self, details: Details) -> ApiError {
        self.details = Some(Box::new(details));
        self
    }

    /// 404 for a named object; `details.kind` is the plural resource.
    pub(crate) fn not_found(resource: &str, group: &str, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(resource, group)),
        )
        .with(Details::object(name, group, resource))
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with(Details::default())
    }

    /// 409 when a create names an existing object.
    pub(crate) fn already_exists(resource: &str, group: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(resource, group)),
        )
        .with(Details::object(name, group, resource))
    }

    /// 409 for an update carrying a stale resourceVersion.
    pub(crate) fn conflict_modified(resource: &str, group: &str, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(resource, group)
            ),
        )
        .with(Details::object(name, group, resource))
    }

    /// 409 with a custom message, e.g. a failed precondition.
    pub(crate) fn conflict(message: impl Into<String>, details: Details) -> ApiError {
        ApiError::new(409, "Conflict", message).with(details)
    }

    /// 422 with causes. `prefix` is what precedes the name in the message, e.g.
    /// `CertificateRequest.cert-manager.io`; `details` carries name, group and kind.
    pub(crate) fn invalid(
        prefix: &str,
        name: &str,
        mut details: Details,
        causes: Vec<Cause>,
    ) -> ApiError {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let joined = match rendered.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        details.causes = causes;
        ApiError::new(
            422,
            "Invalid",
            format!("{prefix} {name:?} is invalid: {joined}"),
        )
        .with(details)
    }

    /// 400 without details.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 for a missing or rejected credential.
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 with a message and details.
    pub(crate) fn forbidden(message: impl Into<String>, details: Details) -> ApiError {
        ApiError::new(403, "Forbidden", message).with(details)
    }

    /// 405 for a method the resource does not support.
    pub(crate) fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with(Details::default())
    }

    /// 410 `Expired`, e.g. a list at a compacted resourceVersion.
    pub(crate) fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 413 for a body over the size limit.
    pub(crate) fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415 for a content type the resource does not accept.
    pub(crate) fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// 500 for a failure inside the dev cluster itself.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// 500 `Internal error occurred: <cause>`, with the cause repeated in `details.causes`,
    /// as the API server reports a failed webhook call.
    pub(crate) fn internal_cause(cause: impl Into<String>) -> ApiError {
        let cause = cause.into();
        let details = Details {
            causes: vec![Cause::message_only(cause.clone())],
            ..Details::default()
        };
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {cause}"),
        )
        .with(details)
    }

    /// An error with every part chosen by the caller (a webhook's own `Status`); an empty
    /// `reason` is left out.
    pub(crate) fn custom(
        code: u16,
        reason: String,
        message: String,
        details: Option<Details>,
    ) -> ApiError {
        ApiError {
            code,
            reason: Cow::Owned(reason),
            message,
            details: details.map(Box::new),
        }
    }

    /// The `Status` object for this error.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(map) = status.as_object_mut() {
            if self.reason.is_empty() {
                map.remove("reason");
            }
            if let Some(details) = &self.details {
                map.insert("details".into(), details.to_json());
            }
        }
        status
    }
}

/// The `Status` answered for an object deleted at once.
pub(crate) fn success_deleted(name: &str, group: &str, resource: &str, uid: &str) -> Value {
    let mut details = Details::object(name, group, resource);
    details.uid = (!uid.is_empty()).then(|| uid.to_owned());
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details.to_json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_the_wire() {
        let status = ApiError::not_found("certificaterequests", "cert-manager.io", "x").to_status();
        assert_eq!(
            status["message"],
            "certificaterequests.cert-manager.io \"x\" not found"
        );
        assert_eq!(status["details"]["kind"], "certificaterequests");
        assert_eq!(status["code"], 404);
    }

    #[test]
    fn invalid_joins_several_causes_in_brackets() {
        let err = ApiError::invalid(
            "CertificateRequest.cert-manager.io",
            "n",
            Details::object("n", "cert-manager.io", "CertificateRequest"),
            vec![Cause::required("spec.a"), Cause::required("spec.b")],
        );
        assert_eq!(
            err.message,
            "CertificateRequest.cert-manager.io \"n\" is invalid: \
             [spec.a: Required value, spec.b: Required value]"
        );
    }

    #[test]
    fn core_group_is_left_out() {
        let status = ApiError::not_found("pods", "", "p").to_status();
        assert_eq!(status["message"], "pods \"p\" not found");
        assert!(status["details"].get("group").is_none());
    }
}
