//! Shared helpers for the end-to-end tests: a dev environment per test and independent
//! certificate checks (rustls-webpki, x509-parser and the `openssl` command, never the code
//! that issued the certificate).

use std::path::Path;
use std::process::Command;

use nico_identity_cli::dev::{DevEnvironment, DevOptions};
use rustls_pki_types::{CertificateDer, UnixTime};

/// Starts a dev environment in a fresh temporary directory.
pub async fn dev_environment() -> (DevEnvironment, tempfile::TempDir) {
    // Several tests in one process: the provider may already be installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let workdir = tempfile::tempdir().expect("a temporary directory");
    let options = DevOptions::new(workdir.path());
    let environment = DevEnvironment::start(options)
        .await
        .expect("the dev environment starts");
    (environment, workdir)
}

/// The DER certificates of a PEM file, in file order.
pub fn read_pem_certificates(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    pem::parse_many(text)
        .expect("valid PEM")
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| block.into_contents())
        .collect()
}

/// Verifies `tls.crt` (leaf first, then intermediates) up to the roots in `ca.crt` with
/// rustls-webpki, for both TLS server and client use, at the current time.
pub fn verify_with_webpki(tls_crt: &Path, ca_crt: &Path) -> Result<(), String> {
    let chain = read_pem_certificates(tls_crt);
    let roots = read_pem_certificates(ca_crt);
    let (leaf, intermediates) = chain.split_first().ok_or("tls.crt holds no certificate")?;
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(|der| webpki::anchor_from_trusted_cert(der).map_err(|e| format!("trust anchor: {e}")))
        .collect::<Result<_, _>>()?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| format!("leaf: {e}"))?;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map_err(|e| format!("webpki: {e}"))?;
    }
    Ok(())
}

/// Runs `openssl` with `args` in `dir` and returns its stdout, or its stderr as the error.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("failed to run openssl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The URI SANs of a DER certificate, read with x509-parser.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).expect("a parseable certificate");
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
    }
    uris
}
