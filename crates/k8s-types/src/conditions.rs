//! CertificateRequest conditions and the request state they add up to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::CertificateRequest;

/// One condition. Every field but `type` and `status` is optional: objects written by other
/// controllers are decoded even when they leave fields out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Approved`, `Denied`, `Ready` or `InvalidRequest`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The condition types cert-manager defines for CertificateRequests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Set by an approver.
    Approved,
    /// Set by an approver.
    Denied,
    /// Set by the issuer: True with a certificate, False while pending or after failure.
    Ready,
    /// Set by the issuer when the request can never be signed.
    InvalidRequest,
}

impl ConditionType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "Approved",
            Self::Denied => "Denied",
            Self::Ready => "Ready",
            Self::InvalidRequest => "InvalidRequest",
        }
    }
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl Condition {
    /// A new condition stamped with the current time.
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.as_str().to_owned(),
            status: status.as_str().to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
            last_transition_time: Some(Time(jiff::Timestamp::now())),
            observed_generation: None,
        }
    }

    fn is(&self, type_: ConditionType, status: ConditionStatus) -> bool {
        self.type_ == type_.as_str() && self.status == status.as_str()
    }
}

/// Where a request stands, as far as the conditions tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Neither approved nor denied yet.
    Pending,
    /// Approved and waiting for the issuer.
    Approved,
    /// Denied, with the approver's message.
    Denied(String),
    /// Signed: `Ready=True`.
    Issued,
    /// The issuer gave up: `Ready=False` with reason `Failed`, or `InvalidRequest=True`.
    Failed(String),
}

impl CertificateRequest {
    /// The first condition of the given type, if any.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_.as_str())
    }

    /// Whether a condition of this type has this status.
    pub fn has_condition(&self, type_: ConditionType, status: ConditionStatus) -> bool {
        self.conditions().iter().any(|c| c.is(type_, status))
    }

    /// The request state. Denial wins over everything, as it does for cert-manager.
    pub fn state(&self) -> RequestState {
        let message = |c: &Condition| c.message.clone().unwrap_or_default();
        if let Some(denied) = self
            .conditions()
            .iter()
            .find(|c| c.is(ConditionType::Denied, ConditionStatus::True))
        {
            return RequestState::Denied(message(denied));
        }
        if let Some(invalid) = self
            .conditions()
            .iter()
            .find(|c| c.is(ConditionType::InvalidRequest, ConditionStatus::True))
        {
            return RequestState::Failed(message(invalid));
        }
        if let Some(ready) = self.condition(ConditionType::Ready) {
            if ready.status == ConditionStatus::True.as_str() {
                return RequestState::Issued;
            }
            if ready.reason.as_deref() == Some("Failed") {
                return RequestState::Failed(message(ready));
            }
        }
        if self.has_condition(ConditionType::Approved, ConditionStatus::True) {
            RequestState::Approved
        } else {
            RequestState::Pending
        }
    }

    /// Adds a condition, replacing one of the same type. `lastTransitionTime` is kept when the
    /// status does not change, as Kubernetes conventions ask.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(conditions: &[(&str, &str, &str)]) -> CertificateRequest {
        let mut cr = CertificateRequest::new("x", Default::default());
        for (type_, status, reason) in conditions {
            let status_ = cr.status.get_or_insert_with(Default::default);
            status_
                .conditions
                .get_or_insert_with(Vec::new)
                .push(Condition {
                    type_: (*type_).into(),
                    status: (*status).into(),
                    reason: Some((*reason).into()),
                    message: Some(format!("{type_} {reason}")),
                    ..Default::default()
                });
        }
        cr
    }

    #[test]
    fn states_follow_the_conditions() {
        assert_eq!(with(&[]).state(), RequestState::Pending);
        assert_eq!(
            with(&[("Approved", "True", "A")]).state(),
            RequestState::Approved
        );
        assert_eq!(
            with(&[("Approved", "True", "A"), ("Ready", "False", "Pending")]).state(),
            RequestState::Approved
        );
        assert_eq!(
            with(&[("Approved", "True", "A"), ("Ready", "True", "Issued")]).state(),
            RequestState::Issued
        );
        assert_eq!(
            with(&[("Approved", "True", "A"), ("Ready", "False", "Failed")]).state(),
            RequestState::Failed("Ready Failed".into())
        );
        assert_eq!(
            with(&[("Denied", "True", "D"), ("Ready", "False", "Denied")]).state(),
            RequestState::Denied("Denied D".into())
        );
        assert_eq!(
            with(&[("InvalidRequest", "True", "Bad")]).state(),
            RequestState::Failed("InvalidRequest Bad".into())
        );
    }

    #[test]
    fn set_condition_replaces_by_type_and_keeps_transition_time() {
        let mut cr = with(&[("Ready", "False", "Pending")]);
        let first = Condition::new(ConditionType::Ready, ConditionStatus::False, "Pending", "a");
        cr.set_condition(first.clone());
        let again = Condition::new(ConditionType::Ready, ConditionStatus::False, "Pending", "b");
        cr.set_condition(again);
        assert_eq!(cr.conditions().len(), 1);
        assert_eq!(cr.conditions()[0].message.as_deref(), Some("b"));
        cr.set_condition(Condition::new(
            ConditionType::Approved,
            ConditionStatus::True,
            "A",
            "",
        ));
        assert_eq!(cr.conditions().len(), 2);
    }
}
