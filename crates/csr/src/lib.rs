//! Key generation, CSR building and parsing, chain splitting and key matching for SPIFFE
//! X.509 SVIDs.
//!
//! - [`PrivateKey`] and [`build_spiffe_csr`]: what the node driver sends.
//! - [`parse_csr`] / [`parse_csr_pem`]: what the approver reads, signature verified first.
//! - [`parse_certificate`], [`pem_to_ders`], [`split_chain`], [`key_matches_certificate`]:
//!   what the issuer and the node driver check before they write a certificate anywhere.
//!
//! Everything runs on aws-lc-rs (through rcgen and x509-parser), the provider rustls uses.

mod build;
mod certificate;
mod chain;
mod input;
mod key;
mod model;
mod request;

pub use build::{BuildCsrError, build_spiffe_csr};
pub use certificate::{
    CertificateError, CertificateInfo, MAX_BUNDLE_LEN, ders_to_pem, key_matches_certificate,
    parse_certificate, pem_to_ders, spki_matches,
};
pub use chain::{Chain, ChainError, MAX_CHAIN_LEN, split_chain};
pub use key::{KeyAlgorithm, KeyError, PrivateKey};
pub use model::{EcCurve, PublicKeyAlgorithm, PublicKeyInfo, San, Subject, SubjectAttribute};
pub use request::{
    BasicConstraints, CsrError, ExtendedKeyUsage, KeyUsage, MAX_CSR_LEN, OtherExtension, ParsedCsr,
    parse_csr, parse_csr_pem,
};
