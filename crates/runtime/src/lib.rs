//! Plumbing shared by every role: how to reach the API server, how to log, when to stop.
//!
//! Nothing here knows about certificates or SPIFFE; the roles build on it.

mod kube_access;
mod logging;
mod shutdown;

pub use kube_access::{BearerToken, KubeAccess, KubeAccessError};
pub use logging::{LogFormat, init_logging};
pub use shutdown::shutdown_signal;
