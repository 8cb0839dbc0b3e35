//! Pure approval policy for SPIFFE CertificateRequests: a plain request in, Approve or Deny out.
