//! Key generation, CSR building and parsing, chain splitting and key matching for SPIFFE X.509 SVIDs.
