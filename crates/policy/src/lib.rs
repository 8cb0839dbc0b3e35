//! Pure approval policy for SPIFFE CertificateRequests: a plain request in, Approve or Deny
//! out.
//!
//! [`SpiffePolicy::evaluate`] takes a [`SpiffeRequest`] (borrowed strings and bytes, no
//! Kubernetes types) and returns a [`Decision`]. A [`Denial`] names the [`Field`] to fix and
//! says what was expected and what was presented, in words fit for a `Denied` condition.
//! Nothing here performs I/O, reads the clock or logs; the approver does that around it.
//!
//! [`duration`] parses and formats Go duration strings for every crate that meets them.

mod config;
mod decision;
pub mod duration;
mod evaluate;
mod request;

pub use config::{ConfigError, DurationBounds, SpiffePolicy};
pub use decision::{Decision, Denial, Field};
pub use request::{IDENTITY_ANNOTATION, REQUIRED_USAGES, SpiffeRequest};
