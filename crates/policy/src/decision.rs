//! The outcome of a policy check: approve, or deny naming the field to fix.

use std::fmt;

/// The request field a denial is about, written as a path into the CertificateRequest (or
/// into the CSR it carries) so the requester knows exactly what to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `spec.request`: the PEM CSR as a whole.
    SpecRequest,
    /// `spec.issuerRef`.
    SpecIssuerRef,
    /// `spec.duration`.
    SpecDuration,
    /// `spec.isCA`.
    SpecIsCa,
    /// `spec.usages`.
    SpecUsages,
    /// `spec.username`: who created the request.
    SpecUsername,
    /// The pod name in `spec.extra`: the pod the requester's token is bound to.
    SpecExtraPodName,
    /// The pod uid in `spec.extra`.
    SpecExtraPodUid,
    /// The node name in `spec.extra`: the node the requester's token is bound to.
    SpecExtraNodeName,
    /// `metadata.namespace`.
    MetadataNamespace,
    /// The `identity.nico.io/pod-name` annotation: the pod a driver-made request is for.
    PodNameAnnotation,
    /// The `identity.nico.io/pod-uid` annotation.
    PodUidAnnotation,
    /// The `spiffe.csi.cert-manager.io/identity` annotation.
    IdentityAnnotation,
    /// The CSR's subject name.
    CsrSubject,
    /// The CSR's subject alternative names.
    CsrSubjectAltName,
    /// The CSR's requested extensions other than SAN, key usage and extended key usage.
    CsrExtensions,
    /// The CSR's key usage extension.
    CsrKeyUsage,
    /// The CSR's extended key usage extension.
    CsrExtendedKeyUsage,
    /// The CSR's public key.
    CsrPublicKey,
}

impl Field {
    /// The field path, e.g. `spec.username`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpecRequest => "spec.request",
            Self::SpecIssuerRef => "spec.issuerRef",
            Self::SpecDuration => "spec.duration",
            Self::SpecIsCa => "spec.isCA",
            Self::SpecUsages => "spec.usages",
            Self::SpecUsername => "spec.username",
            Self::SpecExtraPodName => "spec.extra[authentication.kubernetes.io/pod-name]",
            Self::SpecExtraPodUid => "spec.extra[authentication.kubernetes.io/pod-uid]",
            Self::SpecExtraNodeName => "spec.extra[authentication.kubernetes.io/node-name]",
            Self::MetadataNamespace => "metadata.namespace",
            Self::PodNameAnnotation => "metadata.annotations[identity.nico.io/pod-name]",
            Self::PodUidAnnotation => "metadata.annotations[identity.nico.io/pod-uid]",
            Self::IdentityAnnotation => "metadata.annotations[spiffe.csi.cert-manager.io/identity]",
            Self::CsrSubject => "csr.subject",
            Self::CsrSubjectAltName => "csr.subjectAltName",
            Self::CsrExtensions => "csr.extensions",
            Self::CsrKeyUsage => "csr.keyUsage",
            Self::CsrExtendedKeyUsage => "csr.extendedKeyUsage",
            Self::CsrPublicKey => "csr.publicKey",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was denied: the field and a reason for the requester. The reason says what
/// was expected and what was presented, and never carries internal detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    field: Field,
    reason: String,
}

impl Denial {
    pub(crate) fn new(field: Field, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The field to fix.
    pub fn field(&self) -> Field {
        self.field
    }

    /// The reason, without the field path.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The full message for a `Denied` condition: `<field>: <reason>`.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The verdict on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every check passed.
    Approve,
    /// The first failing check.
    Deny(Denial),
}

impl Decision {
    /// Whether the request is approved.
    pub fn is_approved(&self) -> bool {
        matches!(self, Self::Approve)
    }

    /// The denial, if the request is denied.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Self::Approve => None,
            Self::Deny(denial) => Some(denial),
        }
    }
}
