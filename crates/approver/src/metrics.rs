//! The approver's Prometheus metrics, registered under `nico_identity_approver_`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::judge::Rules;

/// A verdict written.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `Approved=True` written.
    Approved,
    /// `Denied=True` written.
    Denied,
}

/// Why nothing was written.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum LeftReason {
    /// Not a SPIFFE request and the switch leaves those alone.
    NotOurs,
    /// The policies were still being listed.
    PoliciesLoading,
    /// No policy applies.
    NoPolicy,
    /// A policy that does not load applies.
    PolicyNotReady,
}

/// Label values in the lower-case spelling Prometheus users expect.
fn label(encoder: &mut LabelValueEncoder<'_>, value: &str) -> Result<(), std::fmt::Error> {
    use std::fmt::Write as _;
    encoder.write_str(value)
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        label(
            encoder,
            match self {
                Self::Approved => "approved",
                Self::Denied => "denied",
            },
        )
    }
}

impl EncodeLabelValue for LeftReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        label(
            encoder,
            match self {
                Self::NotOurs => "not_ours",
                Self::PoliciesLoading => "policies_loading",
                Self::NoPolicy => "no_policy",
                Self::PolicyNotReady => "policy_not_ready",
            },
        )
    }
}

impl EncodeLabelValue for Rules {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        label(
            encoder,
            match self {
                Self::Spiffe => "spiffe",
                Self::Policy => "policy",
                Self::Auto => "auto",
            },
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub(crate) namespace: String,
    pub(crate) result: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RulesLabels {
    pub(crate) rules: Rules,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LeftLabels {
    pub(crate) reason: LeftReason,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s: a SPIFFE check takes well under a millisecond, a policy check
    // with a SubjectAccessReview per policy a few milliseconds against a nearby API server.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric of the approver. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    decisions: Family<DecisionLabels, Counter>,
    evaluation: Family<RulesLabels, Histogram, fn() -> Histogram>,
    left: Family<LeftLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            evaluation: Family::new_with_constructor(latency_histogram),
            left: Family::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "decisions",
            "Verdicts written on CertificateRequests, by namespace and result",
            self.decisions.clone(),
        );
        registry.register(
            "evaluation_duration_seconds",
            "Time to judge a request (including the reads it needs), by the rules that \
             judged it",
            self.evaluation.clone(),
        );
        registry.register(
            "left_undecided",
            "Requests judged without writing a verdict, by reason",
            self.left.clone(),
        );
    }

    pub(crate) fn decided(&self, namespace: &str, result: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels {
                namespace: namespace.to_owned(),
                result,
            })
            .inc();
    }

    pub(crate) fn evaluated(&self, rules: Rules, seconds: f64) {
        self.evaluation
            .get_or_create(&RulesLabels { rules })
            .observe(seconds);
    }

    pub(crate) fn left(&self, reason: LeftReason) {
        self.left.get_or_create(&LeftLabels { reason }).inc();
    }
}
