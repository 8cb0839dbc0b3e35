//! What every role is given to run with.

use tokio_util::sync::CancellationToken;

use crate::{KubeAccess, Telemetry};

/// The environment a role runs in: how to reach the API server, where to report, who it is,
/// and when to stop.
#[derive(Clone, Debug)]
pub struct RoleContext {
    /// Access to the API server.
    pub access: KubeAccess,
    /// Metrics and readiness of this process.
    pub telemetry: Telemetry,
    /// Fires when the role must stop.
    pub shutdown: CancellationToken,
    /// This replica's name (the pod name in a cluster): lease holder and event reporter.
    pub identity: String,
    /// The namespace the role runs in: where its Leases live.
    pub namespace: String,
}
