//! [`SpiffeRequest`]: the parts of a CertificateRequest the policy reads, as plain values.

use std::collections::BTreeMap;
use std::fmt;

use crate::IssuerName;

/// The annotation carrying the SPIFFE ID the node driver asked for.
pub const IDENTITY_ANNOTATION: &str = "spiffe.csi.cert-manager.io/identity";

/// The usages an SVID request must carry, exactly, in cert-manager's spelling.
pub const REQUIRED_USAGES: [&str; 4] = [
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
];

/// A CertificateRequest reduced to what the SPIFFE policy judges. Borrowed from the caller's
/// object; fields that are absent in the object are `None`, `false`, empty or `""`.
#[derive(Clone, Copy)]
pub struct SpiffeRequest<'a> {
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `spec.request`, already base64-decoded: the PEM CSR.
    pub request: &'a [u8],
    /// `spec.issuerRef`, defaults applied.
    pub issuer: &'a IssuerName,
    /// `spec.duration` as written, e.g. `1h`.
    pub duration: Option<&'a str>,
    /// `spec.isCA`.
    pub is_ca: bool,
    /// `spec.usages`.
    pub usages: &'a [String],
    /// `spec.username`, set by the admission webhook from the creator's identity.
    pub username: &'a str,
    /// `spec.extra`, set by the admission webhook: for a pod-bound token, the pod's name and
    /// uid and the node's name.
    pub extra: &'a BTreeMap<String, Vec<String>>,
    /// The [`POD_NAME_ANNOTATION`](crate::POD_NAME_ANNOTATION) value: in driver-account
    /// mode, the pod the request is for.
    pub pod_name_annotation: Option<&'a str>,
    /// The [`POD_UID_ANNOTATION`](crate::POD_UID_ANNOTATION) value.
    pub pod_uid_annotation: Option<&'a str>,
    /// The [`IDENTITY_ANNOTATION`] value, if the annotation is present.
    pub identity_annotation: Option<&'a str>,
}

impl fmt::Debug for SpiffeRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The CSR is left out on purpose: request material never goes to logs.
        f.debug_struct("SpiffeRequest")
            .field("namespace", &self.namespace)
            .field("request_len", &self.request.len())
            .field("issuer", &self.issuer)
            .field("duration", &self.duration)
            .field("is_ca", &self.is_ca)
            .field("usages", &self.usages)
            .field("username", &self.username)
            .field("extra", &self.extra)
            .field("pod_name_annotation", &self.pod_name_annotation)
            .field("pod_uid_annotation", &self.pod_uid_annotation)
            .field("identity_annotation", &self.identity_annotation)
            .finish()
    }
}
