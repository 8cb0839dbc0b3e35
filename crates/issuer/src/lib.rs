//! The issuer: signs approved CertificateRequests aimed at one of its configured issuers and
//! writes the chain back; marks denied ones as failed.
//!
//! Backends sign; the controller decides when. Today's backend is a local CA (key and
//! certificate from files, generated for development when absent).
//! TODO(#5): the Vault/OpenBao backend, CA from a Secret, intermediates and CA rotation.

mod config;
mod controller;
mod local_ca;

pub use config::{Config, ConfigError, IssuerConfig, LocalCaConfig, Settings};
pub use controller::{RunError, run};
pub use local_ca::{CaError, LocalCa, SignError, SignRequest, Signed};
