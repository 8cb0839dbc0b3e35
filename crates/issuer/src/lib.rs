//! The issuer: signs approved CertificateRequests with a local CA (and, later, Vault/OpenBao).
