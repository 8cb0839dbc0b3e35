//! The approver: decides every SPIFFE CertificateRequest by the rules of `nico-policy` and
//! records the decision as an `Approved` or `Denied` condition.
//!
//! The decision itself is a pure function in `nico-policy`; this crate only watches requests,
//! picks the ones it is responsible for, and writes the answer back with optimistic
//! concurrency, so that a decision is never written twice or over someone else's.

mod config;
mod controller;

pub use config::{Config, ConfigError, IssuerConfig, Settings};
pub use controller::{RunError, run};
