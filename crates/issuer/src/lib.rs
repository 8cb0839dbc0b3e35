//! The issuer: signs approved CertificateRequests aimed at one of its configured issuers and
//! writes the chain back; marks denied ones as failed.
//!
//! Backends sign; the controller decides when, and checks every answer before writing it:
//! - a local CA ([`LocalCa`]): key and certificate from files or a Secret, optionally an
//!   intermediate with its chain, generated and rotated for development;
//! - Vault or OpenBao ([`VaultBackend`]): a PKI role's `sign` endpoint, with Kubernetes,
//!   AppRole or token-file auth and one cached, renewed token.

mod backend;
mod ca_store;
mod config;
mod controller;
mod local_ca;
mod metrics;
mod result;
mod vault;

pub use backend::BackendError;
pub use config::{
    BackendSettings, CaSource, Config, ConfigError, IssuerConfig, IssuerSettings, LocalCaConfig,
    Settings, ValidLocalCa, ValidVault, VaultAuthConfig, VaultConfig,
};
pub use controller::{RunError, run};
pub use local_ca::{CaError, CaMaterial, Issued, LocalCa, SignError, SignRequest};
pub use result::{Approved, Checked, ResultError, check as check_result};
pub use vault::{VaultBackend, VaultError};
