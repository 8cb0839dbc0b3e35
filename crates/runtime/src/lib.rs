//! Plumbing shared by every role: how to reach the API server, how to log, when to stop,
//! health and metrics endpoints, and leader election.
//!
//! Nothing here knows about certificates or SPIFFE; the roles build on it.

mod context;
mod kube_access;
mod leader;
mod logging;
mod shutdown;
mod telemetry;

pub use context::RoleContext;
pub use kube_access::{BearerToken, KubeAccess, KubeAccessError};
pub use leader::{LeaderError, LeaseConfig, run_as_leader};
pub use logging::{LogFormat, init_logging};
pub use shutdown::shutdown_signal;
pub use telemetry::{Readiness, ReadyFlag, Telemetry, TelemetryError};
