//! The issuer's Prometheus metrics, registered under `nico_identity_issuer_`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a signature attempt ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub(crate) enum Outcome {
    /// Signed, checked and written.
    Issued,
    /// Refused for good: the request is marked failed.
    Failed,
    /// The backend was unavailable; the request is retried.
    Retried,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SignLabels {
    pub(crate) issuer: String,
    pub(crate) result: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IssuerLabels {
    pub(crate) issuer: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s: a local CA signs in well under a millisecond, Vault in tens.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the issuer. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    signatures: Family<SignLabels, Counter>,
    latency: Family<IssuerLabels, Histogram, fn() -> Histogram>,
    vault_logins: Family<IssuerLabels, Counter>,
    vault_renewals: Family<IssuerLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            signatures: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            vault_logins: Family::default(),
            vault_renewals: Family::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "signatures",
            "Signature attempts by issuer and result",
            self.signatures.clone(),
        );
        registry.register(
            "signing_duration_seconds",
            "Time the backend took to sign, by issuer",
            self.latency.clone(),
        );
        registry.register(
            "vault_logins",
            "Vault logins (a new token), by issuer",
            self.vault_logins.clone(),
        );
        registry.register(
            "vault_token_renewals",
            "Vault token renewals, by issuer",
            self.vault_renewals.clone(),
        );
    }

    pub(crate) fn signature(&self, issuer: &str, result: Outcome) {
        self.signatures
            .get_or_create(&SignLabels {
                issuer: issuer.to_owned(),
                result,
            })
            .inc();
    }

    pub(crate) fn signing_took(&self, issuer: &str, seconds: f64) {
        self.latency
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
            })
            .observe(seconds);
    }

    pub(crate) fn vault_login(&self, issuer: &str) {
        self.vault_logins
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
            })
            .inc();
    }

    pub(crate) fn vault_renewal(&self, issuer: &str) {
        self.vault_renewals
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
            })
            .inc();
    }
}
