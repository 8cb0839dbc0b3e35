//! Building the one CSR shape nico-identity sends: an X.509 SVID request for a SPIFFE ID.

use nico_spiffe_id::SpiffeId;
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};

use crate::PrivateKey;

/// Why an SVID request could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildCsrError {
    /// The ID has no path: a trust domain ID never identifies a workload.
    #[error("spiffe id {id} has no path: only a workload ID can go into a certificate")]
    NotAWorkloadId {
        /// The presented ID.
        id: SpiffeId,
    },

    /// The CSR library refused the parameters or failed to sign.
    #[error("failed to build the certificate signing request for {id}")]
    Encode {
        /// The ID the request was for.
        id: SpiffeId,
        /// The library's error.
        #[source]
        cause: rcgen::Error,
    },
}

/// Builds a PEM `CERTIFICATE REQUEST` for `id`, signed with `key`.
///
/// The request has an empty subject and exactly one SAN, the URI `id`; because the subject
/// is empty, the SAN extension is marked critical (RFC 5280, section 4.2.1.6). It asks for
/// key usages digitalSignature and keyEncipherment and extended key usages serverAuth and
/// clientAuth, and for nothing else: no basic constraints, no other extension, no attribute.
pub fn build_spiffe_csr(key: &PrivateKey, id: &SpiffeId) -> Result<String, BuildCsrError> {
    if !id.is_workload() {
        return Err(BuildCsrError::NotAWorkloadId { id: id.clone() });
    }
    let encode = |cause| BuildCsrError::Encode {
        id: id.clone(),
        cause,
    };

    let uri = Ia5String::try_from(id.as_str()).map_err(encode)?;
    let mut params = CertificateParams::default();
    // The default parameters carry a placeholder common name; an SVID has no subject.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];

    let csr = params.serialize_request(key.pair()).map_err(encode)?;
    csr.pem().map_err(encode)
}
