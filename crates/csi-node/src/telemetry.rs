//! What the node driver reports: Prometheus metrics and Kubernetes Events on pods.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use time::OffsetDateTime;

use crate::request::PodInfo;

/// The outcome of one issuance attempt, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Issued,
    Denied,
    Failed,
    TimedOut,
    InvalidResult,
    Forbidden,
    NoToken,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Denied => "denied",
            Self::Failed => "failed",
            Self::TimedOut => "timeout",
            Self::InvalidResult => "invalid_result",
            Self::Forbidden => "forbidden",
            Self::NoToken => "no_token",
            Self::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume_id: String,
}

/// The driver's metrics, registered under `nico_identity_csi_node_`.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    issuances: Family<ResultLabels, Counter>,
    issuance_seconds: Histogram,
    volumes: Gauge,
    expiry: Family<VolumeLabels, Gauge>,
    next_renewal: Family<VolumeLabels, Gauge>,
}

impl Metrics {
    pub(crate) fn register(telemetry: &nico_runtime::Telemetry) -> Self {
        let metrics = Self {
            issuances: Family::default(),
            issuance_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            volumes: Gauge::default(),
            expiry: Family::default(),
            next_renewal: Family::default(),
        };
        telemetry.register("csi_node", |registry| {
            registry.register(
                "issuances",
                "Issuance attempts by result",
                metrics.issuances.clone(),
            );
            registry.register(
                "issuance_duration_seconds",
                "Time from key generation to a checked certificate",
                metrics.issuance_seconds.clone(),
            );
            registry.register(
                "volumes",
                "Volumes managed on this node",
                metrics.volumes.clone(),
            );
            registry.register(
                "certificate_expiry_timestamp_seconds",
                "When each volume's certificate expires (Unix time)",
                metrics.expiry.clone(),
            );
            registry.register(
                "next_renewal_timestamp_seconds",
                "When each volume's certificate is next renewed (Unix time)",
                metrics.next_renewal.clone(),
            );
        });
        metrics
    }

    pub(crate) fn attempt(&self, outcome: Outcome, seconds: f64) {
        self.issuances
            .get_or_create(&ResultLabels {
                result: outcome.as_str(),
            })
            .inc();
        if outcome == Outcome::Issued {
            self.issuance_seconds.observe(seconds);
        }
    }

    pub(crate) fn set_volumes(&self, count: usize) {
        self.volumes.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_schedule(
        &self,
        volume_id: &str,
        expiry: OffsetDateTime,
        renewal: OffsetDateTime,
    ) {
        let labels = VolumeLabels {
            volume_id: volume_id.to_owned(),
        };
        self.expiry
            .get_or_create(&labels)
            .set(expiry.unix_timestamp());
        self.next_renewal
            .get_or_create(&labels)
            .set(renewal.unix_timestamp());
    }

    pub(crate) fn forget(&self, volume_id: &str) {
        let labels = VolumeLabels {
            volume_id: volume_id.to_owned(),
        };
        self.expiry.remove(&labels);
        self.next_renewal.remove(&labels);
    }
}

/// Publishes Events on pods. Failures to publish are logged, never fatal.
#[derive(Clone)]
pub(crate) struct PodEvents {
    recorder: Recorder,
}

impl std::fmt::Debug for PodEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodEvents").finish_non_exhaustive()
    }
}

impl PodEvents {
    pub(crate) fn new(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "nico-identity-csi-node".to_owned(),
            instance: Some(node.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    pub(crate) async fn warn(&self, pod: &PodInfo, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(note),
            action: "IssueCertificate".to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(
                pod = %pod.name,
                namespace = %pod.namespace,
                %error,
                "failed to publish event"
            );
        }
    }
}
