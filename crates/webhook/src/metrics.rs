//! The webhook's Prometheus metrics, registered under `nico_identity_webhook_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    webhook: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: &'static str,
}

fn latency_histogram() -> Histogram {
    // 20 µs to about 0.65 s: a review is answered in microseconds, an approval waits for a
    // SubjectAccessReview or two.
    Histogram::new(exponential_buckets(0.000_02, 2.0, 16))
}

/// Every metric of the webhook. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    admissions: Family<AdmissionLabels, Counter>,
    duration: Family<WebhookLabels, Histogram, fn() -> Histogram>,
    rejected: Counter,
    renewals: Counter,
    expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            admissions: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            rejected: Counter::default(),
            renewals: Counter::default(),
            expiry: Gauge::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "admissions",
            "AdmissionReviews answered, by webhook and result (allowed, patched, denied, error)",
            self.admissions.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview, by webhook",
            self.duration.clone(),
        );
        registry.register(
            "malformed_reviews",
            "Request bodies refused with 400: too large, not JSON or not an AdmissionReview",
            self.rejected.clone(),
        );
        registry.register(
            "serving_certificate_renewals",
            "Serving certificates issued to this replica, the first included",
            self.renewals.clone(),
        );
        registry.register(
            "serving_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time)",
            self.expiry.clone(),
        );
    }

    pub(crate) fn answered(&self, webhook: &'static str, result: &'static str, seconds: f64) {
        self.admissions
            .get_or_create(&AdmissionLabels { webhook, result })
            .inc();
        self.duration
            .get_or_create(&WebhookLabels { webhook })
            .observe(seconds);
    }

    pub(crate) fn malformed(&self) {
        self.rejected.inc();
    }

    pub(crate) fn renewed(&self, expiry_unix: i64) {
        self.renewals.inc();
        self.expiry.set(expiry_unix);
    }
}
