//! [`PolicyRequest`]: a CertificateRequest as the policies judge it, and [`Violation`]: one
//! reason a policy does not permit it.

use std::fmt;

use nico_csr::ParsedCsr;
use nico_policy::IssuerName;

/// A request reduced to plain values. The CSR has been parsed and its signature verified by
/// the caller; SANs and subject are read from it, never from anything the CR says about it.
#[derive(Clone, Copy)]
pub struct PolicyRequest<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `spec.username`.
    pub username: &'a str,
    /// `spec.groups`.
    pub groups: &'a [String],
    /// `spec.issuerRef`, defaults applied.
    pub issuer: &'a IssuerName,
    /// `spec.duration` as written.
    pub duration: Option<&'a str>,
    /// `spec.isCA`.
    pub is_ca: bool,
    /// `spec.usages`.
    pub usages: &'a [String],
    /// The CSR of `spec.request`.
    pub csr: &'a ParsedCsr,
}

impl fmt::Debug for PolicyRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The CSR is left out: request material never goes to logs.
        f.debug_struct("PolicyRequest")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("username", &self.username)
            .field("groups", &self.groups)
            .field("issuer", &self.issuer)
            .field("duration", &self.duration)
            .field("is_ca", &self.is_ca)
            .field("usages", &self.usages)
            .finish_non_exhaustive()
    }
}

/// What the caller looked up in the cluster for the policies that need it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterFacts<'a> {
    /// The names of the Services in the request's namespace; `None` when not looked up.
    pub services: Option<&'a [String]>,
}

/// One reason a policy does not permit a request: the request field to fix and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    field: &'static str,
    reason: String,
}

impl Violation {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The request field, e.g. `csr.subjectAltName.dnsNames`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why, naming the policy field that refuses it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}
