//! Kubernetes types for nico-identity: cert-manager CertificateRequest and condition helpers.
