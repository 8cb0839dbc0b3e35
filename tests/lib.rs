//! Shared helpers for the end-to-end tests: a dev environment per test and independent
//! certificate checks (rustls-webpki, x509-parser and the `openssl` command, never the code
//! that issued the certificate).

use std::path::Path;
use std::process::Command;

use nico_identity_cli::dev::{DevEnvironment, DevOptions};
use rustls_pki_types::{CertificateDer, UnixTime};

/// Starts a dev environment in a fresh temporary directory.
pub async fn dev_environment() -> (DevEnvironment, tempfile::TempDir) {
    dev_environment_with(|_| {}).await
}

/// Starts a dev environment in a fresh temporary directory, with options adjusted first.
pub async fn dev_environment_with(
    configure: impl FnOnce(&mut DevOptions),
) -> (DevEnvironment, tempfile::TempDir) {
    // Several tests in one process: the provider may already be installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let workdir = tempfile::tempdir().expect("a temporary directory");
    let mut options = DevOptions::new(workdir.path());
    configure(&mut options);
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

pub mod signer {
    //! A stand-in issuer for tests: signs approved requests the way it is told to, including
    //! the ways a broken or hostile issuer would.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::StreamExt as _;
    use kube::api::{Api, PostParams};
    use kube::runtime::{WatchStreamExt as _, watcher};
    use nico_k8s_types::{
        CertificateRequest, Condition, ConditionStatus, ConditionType, IssuerRef, RequestState,
    };
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair, SanType,
    };
    use time::OffsetDateTime;

    /// How the stand-in answers.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Behaviour {
        /// A correct certificate living this long.
        Lifetime(Duration),
        /// A certificate that expired an hour ago.
        Expired,
        /// A certificate for a key that is not the requester's.
        ForeignKey,
        /// A certificate naming another SPIFFE ID.
        OtherId,
        /// Bytes that are not PEM.
        Garbage,
    }

    /// The running stand-in. Dropping it stops it.
    #[derive(Debug)]
    pub struct TestSigner {
        behaviour: Arc<Mutex<Behaviour>>,
        /// The CA certificate, PEM.
        pub ca_pem: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TestSigner {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestSigner {
        /// Signs approved requests aimed at `issuer` until dropped.
        pub fn start(client: kube::Client, issuer: IssuerRef, behaviour: Behaviour) -> Self {
            let key = KeyPair::generate().expect("a CA key");
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test signer");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_pem = params.self_signed(&key).expect("a CA certificate").pem();
            let ca = Arc::new(Issuer::new(params, key));
            let behaviour = Arc::new(Mutex::new(behaviour));
            let api: Api<CertificateRequest> = Api::all(client.clone());
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            let (shared, ca_text) = (behaviour.clone(), ca_pem.clone());
            let task = tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(Ok(cr)) = stream.next().await {
                    let waiting = cr.state() == RequestState::Approved
                        && cr.spec.issuer_ref.same_issuer(&issuer)
                        && cr.status.as_ref().is_none_or(|s| s.certificate.is_none());
                    if !waiting {
                        continue;
                    }
                    let how = *shared.lock().unwrap();
                    let certificate = sign(&ca, &cr, how);
                    let mut answered = cr.clone();
                    let status = answered.status.get_or_insert_with(Default::default);
                    status.certificate = Some(certificate);
                    status.ca = Some(ca_text.clone().into_bytes());
                    answered.set_condition(Condition::new(
                        ConditionType::Ready,
                        ConditionStatus::True,
                        "Issued",
                        "signed by the test signer",
                    ));
                    let namespace = cr.metadata.namespace.clone().unwrap_or_default();
                    let name = cr.metadata.name.clone().unwrap_or_default();
                    let _ = Api::<CertificateRequest>::namespaced(client.clone(), &namespace)
                        .replace_status(&name, &PostParams::default(), &answered)
                        .await;
                }
            });
            Self {
                behaviour,
                ca_pem,
                task,
            }
        }

        /// Changes how later requests are answered.
        pub fn set(&self, behaviour: Behaviour) {
            *self.behaviour.lock().unwrap() = behaviour;
        }
    }

    fn sign(ca: &Issuer<'static, KeyPair>, cr: &CertificateRequest, how: Behaviour) -> Vec<u8> {
        if how == Behaviour::Garbage {
            return b"this is not a certificate".to_vec();
        }
        let csr = nico_csr::parse_csr(&cr.spec.request).expect("the driver's CSR parses");
        let foreign;
        let spki = if how == Behaviour::ForeignKey {
            foreign = KeyPair::generate().expect("a foreign key");
            rcgen::SubjectPublicKeyInfo::from_der(&rcgen::PublicKeyData::subject_public_key_info(
                &foreign,
            ))
        } else {
            rcgen::SubjectPublicKeyInfo::from_der(csr.public_key().spki_der())
        }
        .expect("a public key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = match how {
            Behaviour::OtherId => "spiffe://nico.local/elsewhere/sa/someone".to_owned(),
            _ => csr.uri_sans().next().expect("a URI SAN").to_owned(),
        };
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into().expect("an IA5 URI"))];
        let now = OffsetDateTime::now_utc();
        let (start, end) = match how {
            Behaviour::Lifetime(lifetime) => (now, now + lifetime),
            Behaviour::Expired => (
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            ),
            _ => (now, now + Duration::from_secs(3600)),
        };
        params.not_before = start;
        params.not_after = end;
        params
            .signed_by(&spki, ca)
            .expect("a signed certificate")
            .pem()
            .into_bytes()
    }
}

/// A plain HTTP GET (the health and metrics port), returning status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub mod requests {
    //! CertificateRequests for the webhook's tests: CSRs with chosen extensions, and
    //! requests whose usages agree with them.

    use base64::Engine as _;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use serde_json::{Value, json};

    /// The usages of a TLS server and client certificate, as cert-manager spells them.
    pub const TLS_USAGES: [&str; 4] = [
        "digital signature",
        "key encipherment",
        "server auth",
        "client auth",
    ];

    /// A PEM CSR for the DNS name `dns` asking for `key` and `extended` usages, and for a CA
    /// certificate when `ca`.
    pub fn csr_pem(
        dns: &str,
        key: &[KeyUsagePurpose],
        extended: &[ExtendedKeyUsagePurpose],
        ca: bool,
    ) -> String {
        let pair = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(vec![dns.to_owned()]).expect("a DNS name");
        params.key_usages = key.to_vec();
        params.extended_key_usages = extended.to_vec();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let csr = params.serialize_request(&pair).expect("a CSR");
        csr.pem().expect("PEM")
    }

    /// A CSR agreeing with [`TLS_USAGES`].
    pub fn tls_csr(dns: &str) -> String {
        csr_pem(
            dns,
            &[
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            false,
        )
    }

    /// A CertificateRequest `name` (JSON) for `csr` with [`TLS_USAGES`], aimed at the
    /// ClusterIssuer `issuer`.
    pub fn request(name: &str, issuer: &str, csr: &str) -> Value {
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(csr),
                "issuerRef": {"name": issuer, "kind": "ClusterIssuer", "group": "cert-manager.io"},
                "duration": "1h",
                "usages": TLS_USAGES,
            },
        })
    }

    /// [`request`], typed.
    pub fn typed_request(
        name: &str,
        issuer: &str,
        csr: &str,
    ) -> nico_k8s_types::CertificateRequest {
        serde_json::from_value(request(name, issuer, csr)).expect("a CertificateRequest")
    }
}

pub mod fault_harness;
pub mod secret_scan;

/// The soak benchmark's options and arithmetic (`benches/soak/`), here so that their unit
/// tests run with the rest while the soak itself runs only on request.
#[path = "benches/soak/report.rs"]
pub mod soak_report;
