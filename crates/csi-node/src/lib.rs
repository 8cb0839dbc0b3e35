//! The CSI node plugin: gives each pod volume a SPIFFE certificate whose key is born on this
//! node and never leaves it.
//!
//! kubelet calls [`server::serve`]'s gRPC services over a unix socket. For each ephemeral
//! volume the driver generates a key and a CSR, creates a cert-manager CertificateRequest
//! authenticated as the pod's own service account, waits for the signed answer through one
//! shared watch, checks it, and writes `tls.crt`, `tls.key` and `ca.crt` atomically into the
//! volume. A single timer renews every volume at two thirds of its certificate's lifetime.

mod config;
mod driver;
mod files;
mod inspect;
mod issuance;
mod layout;
mod proto;
mod registration;
mod renewal;
mod request;
mod result;
mod server;
mod sources;
mod state;
mod telemetry;

pub use config::{
    Config, ConfigError, ConfigMapKey, DEFAULT_DRIVER_NAME, FileNames, IssuerConfig, ObjectName,
    RegistrationConfig, RequestIdentity, Settings, TrustBundleConfig,
};
pub use driver::{Driver, StartError, VolumeReport};
pub use inspect::{InspectError, Inspection, inspect};
pub use proto::{csi, pluginregistration};
pub use server::{ServeError, serve};
