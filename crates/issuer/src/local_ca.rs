//! A CA whose key and certificate are files: the embedded default, and the development CA.
//!
//! The CA takes only the public key from a CSR; everything else in the certificate comes from
//! the approved request (usages, lifetime) and the CSR's SANs, which the approver has judged.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use nico_csr::San;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::config::ValidLocalCa;

/// How far `notBefore` is set back to absorb clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(30);

/// Why the CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Exactly one of the two files exists.
    #[error("CA {present} exists but {missing} does not: restore it, or remove both to generate")]
    HalfPresent {
        /// The file found.
        present: String,
        /// The file missing.
        missing: String,
    },
    /// The files are absent and generation is off.
    #[error("CA files {certificate} and {key} do not exist (set generate = true to create them)")]
    Missing {
        /// Certificate path.
        certificate: String,
        /// Key path.
        key: String,
    },
    /// The files do not hold a usable CA.
    #[error("CA in {path} is unusable: {reason}")]
    Unusable {
        /// The certificate path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why one request could not be signed. These are permanent: the request is marked failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CSR is unreadable or its signature does not verify.
    #[error("spec.request: {0}")]
    Csr(#[source] nico_csr::CsrError),
    /// A CA certificate was requested.
    #[error("spec.isCA: this issuer signs only end-entity certificates")]
    CaRequested,
    /// A usage this CA does not grant.
    #[error("spec.usages: {0:?} is not a usage this issuer grants")]
    Usage(String),
    /// A SAN kind that cannot be put in a certificate.
    #[error("spec.request: subject alternative name {0} is not supported")]
    San(String),
    /// The CA expires too soon to sign anything.
    #[error("the CA certificate expires at {0}: rotate the CA")]
    CaExpiring(OffsetDateTime),
    /// rcgen refused the certificate.
    #[error("failed to build the certificate: {0}")]
    Build(#[source] rcgen::Error),
}

/// A request to sign, in the issuer's terms.
#[derive(Debug)]
pub struct SignRequest<'a> {
    /// The PEM CSR.
    pub csr: &'a [u8],
    /// Approved lifetime.
    pub duration: Duration,
    /// cert-manager usage names.
    pub usages: &'a [String],
    /// `spec.isCA`.
    pub is_ca: bool,
}

/// A signed certificate.
#[derive(Clone, Debug)]
pub struct Signed {
    /// Leaf (and intermediates), PEM: `status.certificate`.
    pub certificate_pem: String,
    /// The root, PEM: `status.ca`.
    pub ca_pem: String,
    /// Serial number, lower-case hex.
    pub serial: String,
}

/// A loaded CA.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA, or generates and stores one when both files are absent and that is
    /// allowed.
    pub fn load_or_generate(config: &ValidLocalCa) -> Result<Self, CaError> {
        let (cert_path, key_path) = (&config.certificate, &config.key);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(cert_path, key_path),
            (false, false) if config.generate => {
                let (ca, key_pem) = Self::generate(config.validity)?;
                write_new(key_path, key_pem.as_bytes(), 0o600)?;
                write_new(cert_path, ca.certificate_pem.as_bytes(), 0o644)?;
                tracing::info!(certificate = %cert_path.display(), "generated a development CA");
                Ok(ca)
            }
            (false, false) => Err(CaError::Missing {
                certificate: cert_path.display().to_string(),
                key: key_path.display().to_string(),
            }),
            (present, _) => {
                let (present, missing) = if present {
                    (cert_path, key_path)
                } else {
                    (key_path, cert_path)
                };
                Err(CaError::HalfPresent {
                    present: present.display().to_string(),
                    missing: missing.display().to_string(),
                })
            }
        }
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| CaError::Io {
                action: "read",
                path: path.display().to_string(),
                source,
            })
        };
        let unusable = |reason: String| CaError::Unusable {
            path: cert_path.display().to_string(),
            reason,
        };
        let certificate_pem = read(cert_path)?;
        let key = KeyPair::from_pem(&read(key_path)?).map_err(|e| {
            unusable(format!(
                "the key in {} is not a PEM private key: {e}",
                key_path.display()
            ))
        })?;
        let ders = nico_csr::pem_to_ders(certificate_pem.as_bytes())
            .map_err(|e| unusable(e.to_string()))?;
        let Some(der) = ders.first() else {
            return Err(unusable("no certificate".into()));
        };
        let info = nico_csr::parse_certificate(der).map_err(|e| unusable(e.to_string()))?;
        if !info.is_ca() {
            return Err(unusable("the certificate is not a CA certificate".into()));
        }
        if info.spki_der() != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(unusable(format!(
                "the key in {} does not match it",
                key_path.display()
            )));
        }
        let not_after = info.not_after();
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)
            .map_err(|e| unusable(e.to_string()))?;
        Ok(Self {
            issuer,
            certificate_pem: nico_csr::ders_to_pem(&[der]),
            not_after,
        })
    }

    /// A fresh self-signed ECDSA P-256 CA, and its key as PEM.
    pub fn generate(validity: Duration) -> Result<(Self, String), CaError> {
        let unusable = |e: rcgen::Error| CaError::Unusable {
            path: "<generated>".into(),
            reason: e.to_string(),
        };
        let key = KeyPair::generate().map_err(unusable)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "nico-identity");
        name.push(DnType::CommonName, "nico-identity development CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        params.serial_number = Some(random_serial());
        let certificate = params.self_signed(&key).map_err(unusable)?;
        let key_pem = key.serialize_pem();
        let not_after = params.not_after;
        let ca = Self {
            issuer: Issuer::new(params, key),
            certificate_pem: certificate.pem(),
            not_after,
        };
        Ok((ca, key_pem))
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Signs a request. The leaf never outlives the CA.
    pub fn sign(&self, request: &SignRequest<'_>) -> Result<Signed, SignError> {
        let csr = nico_csr::parse_csr(request.csr).map_err(SignError::Csr)?;
        if request.is_ca {
            return Err(SignError::CaRequested);
        }
        let now = OffsetDateTime::now_utc();
        if self.not_after <= now + Duration::from_secs(60) {
            return Err(SignError::CaExpiring(self.not_after));
        }
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        for attribute in csr.subject().attributes() {
            if attribute.kind == "CN" {
                subject.push(DnType::CommonName, attribute.value.as_str());
            }
        }
        params.distinguished_name = subject;
        params.subject_alt_names = csr.sans().iter().map(san).collect::<Result<_, _>>()?;
        let usages: &[String] = request.usages;
        let defaults = [
            "digital signature".to_owned(),
            "key encipherment".to_owned(),
        ];
        for usage in if usages.is_empty() {
            &defaults[..]
        } else {
            usages
        } {
            match usage.as_str() {
                "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "key agreement" => params.key_usages.push(KeyUsagePurpose::KeyAgreement),
                "content commitment" => params.key_usages.push(KeyUsagePurpose::ContentCommitment),
                "server auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                "client auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                other => return Err(SignError::Usage(other.to_owned())),
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = (now + request.duration).min(self.not_after);
        let serial = random_serial();
        let serial_hex = serial
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.serial_number = Some(serial);
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(csr.public_key().spki_der())
            .map_err(SignError::Build)?;
        let certificate = params
            .signed_by(&public_key, &self.issuer)
            .map_err(SignError::Build)?;
        Ok(Signed {
            certificate_pem: certificate.pem(),
            ca_pem: self.certificate_pem.clone(),
            serial: serial_hex,
        })
    }
}

fn san(name: &San) -> Result<SanType, SignError> {
    let unsupported = || SignError::San(name.to_string());
    Ok(match name {
        San::Uri(uri) => SanType::URI(uri.as_str().try_into().map_err(|_| unsupported())?),
        San::Dns(dns) => SanType::DnsName(dns.as_str().try_into().map_err(|_| unsupported())?),
        San::Email(email) => {
            SanType::Rfc822Name(email.as_str().try_into().map_err(|_| unsupported())?)
        }
        San::Ip(ip) => SanType::IpAddress(*ip),
        San::Other(_) => return Err(unsupported()),
    })
}

/// 16 random bytes, positive as DER integers require.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // invariant: aws-lc-rs's system RNG only fails when the OS has no entropy source at all.
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random number generator failed");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Creates a file that must not exist yet, with its final mode from the start.
fn write_new(path: &Path, content: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |action, source| CaError::Io {
        action,
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io("create the directory of", e))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("create", e))?;
    file.write_all(content).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nico_csr::{KeyAlgorithm, PrivateKey};
    use nico_spiffe_id::SpiffeId;

    fn config(dir: &Path, generate: bool) -> ValidLocalCa {
        ValidLocalCa {
            certificate: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            generate,
            validity: Duration::from_secs(86_400),
        }
    }

    fn spiffe_usages() -> Vec<String> {
        nico_k8s_types::SPIFFE_USAGES
            .iter()
            .map(|u| (*u).to_owned())
            .collect()
    }

    #[test]
    fn generates_once_then_loads_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::load_or_generate(&config(dir.path(), true)).unwrap();
        let again = LocalCa::load_or_generate(&config(dir.path(), true)).unwrap();
        assert_eq!(first.certificate_pem(), again.certificate_pem());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_or_half_present_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalCa::load_or_generate(&config(dir.path(), false)).unwrap_err();
        assert!(err.to_string().contains("generate = true"), "{err}");
        LocalCa::load_or_generate(&config(dir.path(), true)).unwrap();
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        let err = LocalCa::load_or_generate(&config(dir.path(), true)).unwrap_err();
        assert!(err.to_string().contains("ca.key does not"), "{err}");
    }

    #[test]
    fn signs_what_was_approved_and_never_past_the_ca() {
        let (ca, _) = LocalCa::generate(Duration::from_secs(7200)).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let id = SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
        let csr = nico_csr::build_spiffe_csr(&key, &id).unwrap();
        let usages = spiffe_usages();
        let request = SignRequest {
            csr: csr.as_bytes(),
            duration: Duration::from_secs(3600),
            usages: &usages,
            is_ca: false,
        };
        let signed = ca.sign(&request).unwrap();
        let leaf = nico_csr::parse_certificate(
            &nico_csr::pem_to_ders(signed.certificate_pem.as_bytes()).unwrap()[0],
        )
        .unwrap();
        assert!(nico_csr::key_matches_certificate(&key, leaf.der()).unwrap());
        assert_eq!(leaf.uri_sans().collect::<Vec<_>>(), [id.as_str()]);
        assert_eq!((leaf.not_after() - leaf.not_before()).whole_seconds(), 3630);
        assert_eq!(leaf.serial_hex(), signed.serial);
        // Asking for more than the CA has left is clamped to the CA's expiry.
        let long = SignRequest {
            duration: Duration::from_secs(10 * 86_400),
            ..request
        };
        let signed = ca.sign(&long).unwrap();
        let leaf = nico_csr::parse_certificate(
            &nico_csr::pem_to_ders(signed.certificate_pem.as_bytes()).unwrap()[0],
        )
        .unwrap();
        assert!(leaf.not_after() <= ca.not_after);
        // Independent check of the whole chain.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.crt"), &signed.ca_pem).unwrap();
        fs::write(dir.path().join("leaf.crt"), &signed.certificate_pem).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", "ca.crt", "leaf.crt"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn refuses_ca_requests_unknown_usages_and_bad_csrs() {
        let (ca, _) = LocalCa::generate(Duration::from_secs(7200)).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let id = SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
        let csr = nico_csr::build_spiffe_csr(&key, &id).unwrap();
        let usages = spiffe_usages();
        let base = SignRequest {
            csr: csr.as_bytes(),
            duration: Duration::from_secs(600),
            usages: &usages,
            is_ca: false,
        };
        assert!(matches!(
            ca.sign(&SignRequest {
                is_ca: true,
                ..base
            }),
            Err(SignError::CaRequested)
        ));
        let odd = vec!["cert sign".to_owned()];
        assert!(matches!(
            ca.sign(&SignRequest {
                usages: &odd,
                ..base
            }),
            Err(SignError::Usage(_))
        ));
        assert!(matches!(
            ca.sign(&SignRequest {
                csr: b"nonsense",
                ..base
            }),
            Err(SignError::Csr(_))
        ));
    }
}
