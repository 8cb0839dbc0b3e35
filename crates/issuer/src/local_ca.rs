//! A CA held by this process: the embedded default, and the development CA.
//!
//! The CA takes only the public key from a CSR; everything else in the certificate comes from
//! the approved request (usages, lifetime) and the CSR's SANs, which the approver has judged.
//! A CA may be an intermediate: its certificate is then followed by its chain. A leaf never
//! outlives any certificate of that chain.
//!
//! Rotation: a generated CA is replaced once less than a third of its life is left. The old
//! roots are kept as *retired* roots, published beside the new one in `status.ca` until they
//! expire: no leaf outlives the CA that signed it, so by then every leaf they signed has
//! expired too.

use std::time::Duration;

use nico_csr::{ParsedCsr, San};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// How far `notBefore` is set back to absorb clock skew between nodes.
pub(crate) const BACKDATE: Duration = Duration::from_secs(30);

/// A CA is not used for signing in its last minute.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Why a CA could not be loaded, created or stored.
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
    /// Only part of the CA exists.
    #[error("CA {present} exists but {missing} does not: restore it, or remove both to generate")]
    HalfPresent {
        /// What was found.
        present: String,
        /// What is missing.
        missing: String,
    },
    /// Nothing exists and generation is off.
    #[error("CA {location} does not exist (set generate = true to create it)")]
    Missing {
        /// The files or the Secret.
        location: String,
    },
    /// The material is not a usable CA.
    #[error("CA in {location} is unusable: {reason}")]
    Unusable {
        /// The files or the Secret.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The API server refused or failed a Secret operation.
    #[error("failed to {action} secret {location}: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// namespace/name.
        location: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Why one request could not be signed. These are permanent: the request is marked failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
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

/// The PEM texts a CA is stored as. `Debug` hides the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CaMaterial {
    /// The CA certificate, then its chain towards the root (`tls.crt`).
    pub certificate_pem: String,
    /// Its PKCS#8 key (`tls.key`).
    pub key_pem: String,
    /// The root(s), when `tls.crt` does not end in one (`ca.crt`).
    pub roots_pem: String,
    /// Roots retired by a rotation, still published (`retired.crt`).
    pub retired_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("certificate_pem", &self.certificate_pem)
            .field("key_pem", &"<redacted>")
            .field("roots_pem", &self.roots_pem)
            .field("retired_pem", &self.retired_pem)
            .finish()
    }
}

/// A request to sign, in the issuer's terms.
#[derive(Debug)]
pub struct SignRequest<'a> {
    /// The PEM CSR as the request carries it.
    pub csr_pem: &'a [u8],
    /// The same CSR, parsed and its signature verified.
    pub csr: &'a ParsedCsr,
    /// Approved lifetime.
    pub duration: Duration,
    /// cert-manager usage names.
    pub usages: &'a [String],
    /// `spec.isCA`.
    pub is_ca: bool,
}

/// What a backend returned, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct Issued {
    /// Every certificate returned (leaf, intermediates, roots), DER, in any order.
    pub certificates: Vec<Vec<u8>>,
    /// Further roots to publish in `status.ca` (retired roots during a rotation).
    pub extra_roots: Vec<Vec<u8>>,
}

/// A loaded CA.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate and its chain, DER, CA first.
    chain: Vec<Vec<u8>>,
    /// Roots from `ca.crt`.
    roots: Vec<Vec<u8>>,
    /// Retired roots and their expiry.
    retired: Vec<(Vec<u8>, OffsetDateTime)>,
    /// The earliest expiry of the CA and its chain.
    not_after: OffsetDateTime,
    /// The CA certificate's own validity, for rotation.
    not_before: OffsetDateTime,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("not_after", &self.not_after)
            .field("retired", &self.retired.len())
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Reads the CA from its stored form. `location` names the files or Secret in errors.
    pub fn from_material(material: &CaMaterial, location: &str) -> Result<Self, CaError> {
        let unusable = |reason: String| CaError::Unusable {
            location: location.to_owned(),
            reason,
        };
        let key = KeyPair::from_pem(&material.key_pem)
            .map_err(|e| unusable(format!("the key is not a PEM private key: {e}")))?;
        let chain = nico_csr::pem_to_ders(material.certificate_pem.as_bytes())
            .map_err(|e| unusable(format!("the certificate: {e}")))?;
        let roots =
            optional_ders(&material.roots_pem).map_err(|e| unusable(format!("ca.crt: {e}")))?;
        let retired_ders =
            optional_ders(&material.retired_pem).map_err(|e| unusable(format!("retired: {e}")))?;
        // invariant: pem_to_ders never returns an empty list.
        let Some(ca_der) = chain.first() else {
            return Err(unusable("no certificate".into()));
        };
        let info = nico_csr::parse_certificate(ca_der).map_err(|e| unusable(e.to_string()))?;
        if !info.is_ca() {
            return Err(unusable("the certificate is not a CA certificate".into()));
        }
        if info.spki_der() != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(unusable("the key does not match the certificate".into()));
        }
        let mut not_after = info.not_after();
        if chain.len() > 1 || !info.is_self_signed() {
            // The chain must link up by itself (and to ca.crt's roots when it has none).
            let mut all = chain.clone();
            all.extend(roots.iter().cloned());
            let linked = nico_csr::split_chain(all)
                .map_err(|e| unusable(format!("the chain does not link up: {e}")))?;
            if linked.leaf != *ca_der {
                return Err(unusable("the CA certificate must come first".into()));
            }
            for der in linked.intermediates.iter().chain(&linked.roots) {
                let above =
                    nico_csr::parse_certificate(der).map_err(|e| unusable(e.to_string()))?;
                not_after = not_after.min(above.not_after());
            }
        }
        let mut retired = Vec::with_capacity(retired_ders.len());
        for der in retired_ders {
            let info = nico_csr::parse_certificate(&der).map_err(|e| unusable(e.to_string()))?;
            retired.push((der, info.not_after()));
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), key)
            .map_err(|e| unusable(e.to_string()))?;
        Ok(Self {
            issuer,
            not_before: info.not_before(),
            chain,
            roots,
            retired,
            not_after,
        })
    }

    /// A fresh self-signed ECDSA P-256 CA.
    pub fn generate(validity: Duration, now: OffsetDateTime) -> Result<CaMaterial, CaError> {
        let unusable = |e: rcgen::Error| CaError::Unusable {
            location: "<generated>".into(),
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
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        params.serial_number = Some(random_serial());
        let certificate = params.self_signed(&key).map_err(unusable)?;
        Ok(CaMaterial {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            roots_pem: String::new(),
            retired_pem: String::new(),
        })
    }

    /// Whether a generated CA should be replaced: less than a third of its life is left.
    pub fn due_for_rotation(&self, now: OffsetDateTime) -> bool {
        let life = self.not_after - self.not_before;
        self.not_after - now < life / 3
    }

    /// The material of a new CA that replaces this one; this CA's roots (and retired roots
    /// that have not expired) are carried over as retired.
    pub fn rotate(&self, validity: Duration, now: OffsetDateTime) -> Result<CaMaterial, CaError> {
        let mut material = Self::generate(validity, now)?;
        material.retired_pem = nico_csr::ders_to_pem(&self.published_roots(now));
        Ok(material)
    }

    /// The earliest expiry of the CA and its chain.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Every root published in `status.ca` at `now`: the current root(s) and the retired
    /// ones that have not expired.
    pub fn published_roots(&self, now: OffsetDateTime) -> Vec<Vec<u8>> {
        let mut roots: Vec<Vec<u8>> = Vec::new();
        let top_is_root = self.chain.last().is_some_and(|der| {
            nico_csr::parse_certificate(der).is_ok_and(|info| info.is_self_signed())
        });
        if top_is_root {
            roots.extend(self.chain.last().cloned());
        }
        roots.extend(self.roots.iter().cloned());
        for (der, not_after) in &self.retired {
            if *not_after > now && !roots.contains(der) {
                roots.push(der.clone());
            }
        }
        roots
    }

    /// Signs a request. The leaf never outlives the CA or its chain.
    pub fn sign(
        &self,
        request: &SignRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<Issued, SignError> {
        if request.is_ca {
            return Err(SignError::CaRequested);
        }
        if self.not_after <= now + EXPIRY_MARGIN {
            return Err(SignError::CaExpiring(self.not_after));
        }
        let csr = request.csr;
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        for attribute in csr.subject().attributes() {
            if attribute.kind == "CN" {
                subject.push(DnType::CommonName, attribute.value.as_str());
            }
        }
        params.distinguished_name = subject;
        params.subject_alt_names = csr.sans().iter().map(san).collect::<Result<_, _>>()?;
        let defaults = [
            "digital signature".to_owned(),
            "key encipherment".to_owned(),
        ];
        let usages = if request.usages.is_empty() {
            &defaults[..]
        } else {
            request.usages
        };
        for usage in usages {
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
        params.serial_number = Some(random_serial());
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(csr.public_key().spki_der())
            .map_err(SignError::Build)?;
        let certificate = params
            .signed_by(&public_key, &self.issuer)
            .map_err(SignError::Build)?;
        let mut certificates = Vec::with_capacity(1 + self.chain.len());
        certificates.push(certificate.der().to_vec());
        certificates.extend(self.chain.iter().cloned());
        Ok(Issued {
            certificates,
            extra_roots: self.published_roots(now),
        })
    }
}

fn optional_ders(pem: &str) -> Result<Vec<Vec<u8>>, nico_csr::CertificateError> {
    if pem.trim().is_empty() {
        Ok(Vec::new())
    } else {
        nico_csr::pem_to_ders(pem.as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;
    use nico_csr::{KeyAlgorithm, PrivateKey};
    use nico_spiffe_id::SpiffeId;

    const HOUR: Duration = Duration::from_secs(3600);

    fn spiffe_usages() -> Vec<String> {
        nico_k8s_types::SPIFFE_USAGES
            .iter()
            .map(|u| (*u).to_owned())
            .collect()
    }

    fn csr() -> (PrivateKey, ParsedCsr, String) {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let id = SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
        let pem = nico_csr::build_spiffe_csr(&key, &id).unwrap();
        let parsed = nico_csr::parse_csr(pem.as_bytes()).unwrap();
        (key, parsed, pem)
    }

    fn ca(validity: Duration) -> LocalCa {
        let material = LocalCa::generate(validity, OffsetDateTime::now_utc()).unwrap();
        LocalCa::from_material(&material, "test").unwrap()
    }

    /// An intermediate CA under a fresh root: (intermediate material, root PEM).
    fn intermediate(root_validity: Duration) -> (CaMaterial, String) {
        let now = OffsetDateTime::now_utc();
        let root_key = KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::default();
        root_params
            .distinguished_name
            .push(DnType::CommonName, "test root");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        root_params.not_before = now - BACKDATE;
        root_params.not_after = now + root_validity;
        let root_pem = root_params.self_signed(&root_key).unwrap().pem();
        let root_issuer = Issuer::new(root_params, root_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "test intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + 10 * root_validity;
        let cert = params.signed_by(&key, &root_issuer).unwrap();
        let material = CaMaterial {
            certificate_pem: format!("{}{}", cert.pem(), root_pem),
            key_pem: key.serialize_pem(),
            ..CaMaterial::default()
        };
        (material, root_pem)
    }

    fn first_block(pem: &str) -> String {
        let ders = nico_csr::pem_to_ders(pem.as_bytes()).unwrap();
        nico_csr::ders_to_pem(&ders[..1])
    }

    fn openssl_verify(ca_pem: &str, chain: &[Vec<u8>]) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
        std::fs::write(
            dir.path().join("leaf.crt"),
            nico_csr::ders_to_pem(&chain[..1]),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("chain.crt"),
            nico_csr::ders_to_pem(&chain[1..]),
        )
        .unwrap();
        let mut args = vec!["verify", "-CAfile", "ca.crt"];
        if chain.len() > 1 {
            args.extend(["-untrusted", "chain.crt"]);
        }
        args.push("leaf.crt");
        let out = std::process::Command::new("openssl")
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[test]
    fn signs_what_was_approved_and_never_past_the_ca() {
        let ca = ca(2 * HOUR);
        let (key, parsed, pem) = csr();
        let usages = spiffe_usages();
        let request = SignRequest {
            csr_pem: pem.as_bytes(),
            csr: &parsed,
            duration: HOUR,
            usages: &usages,
            is_ca: false,
        };
        let now = OffsetDateTime::now_utc();
        let issued = ca.sign(&request, now).unwrap();
        let leaf = nico_csr::parse_certificate(&issued.certificates[0]).unwrap();
        assert!(nico_csr::key_matches_certificate(&key, leaf.der()).unwrap());
        assert_eq!(
            leaf.uri_sans().collect::<Vec<_>>(),
            ["spiffe://nico.local/demo/sa/web"]
        );
        assert_eq!((leaf.not_after() - leaf.not_before()).whole_seconds(), 3630);
        // Asking for more than the CA has left is clamped to the CA's expiry.
        let long = SignRequest {
            duration: 10 * HOUR,
            ..request
        };
        let issued = ca.sign(&long, now).unwrap();
        let leaf = nico_csr::parse_certificate(&issued.certificates[0]).unwrap();
        assert!(leaf.not_after() <= ca.not_after());
        let ca_pem = nico_csr::ders_to_pem(&issued.extra_roots);
        openssl_verify(&ca_pem, &issued.certificates[..1]).unwrap();
    }

    #[test]
    fn an_intermediate_signs_with_its_chain_and_never_past_its_root() {
        let (material, root_pem) = intermediate(2 * HOUR);
        let ca = LocalCa::from_material(&material, "test").unwrap();
        // The root expires first here, so it bounds the leaf.
        let root =
            nico_csr::parse_certificate(&nico_csr::pem_to_ders(root_pem.as_bytes()).unwrap()[0])
                .unwrap();
        assert_eq!(ca.not_after(), root.not_after());
        let (_, parsed, pem) = csr();
        let usages = spiffe_usages();
        let request = SignRequest {
            csr_pem: pem.as_bytes(),
            csr: &parsed,
            duration: 24 * HOUR,
            usages: &usages,
            is_ca: false,
        };
        let issued = ca.sign(&request, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(issued.certificates.len(), 3);
        let leaf = nico_csr::parse_certificate(&issued.certificates[0]).unwrap();
        assert!(leaf.not_after() <= root.not_after());
        assert_eq!(issued.extra_roots, vec![root.der().to_vec()]);
        openssl_verify(&root_pem, &issued.certificates[..2]).unwrap();
    }

    #[test]
    fn unusable_material_is_refused_with_the_reason() {
        let good = LocalCa::generate(HOUR, OffsetDateTime::now_utc()).unwrap();
        let other = LocalCa::generate(HOUR, OffsetDateTime::now_utc()).unwrap();
        let (intermediate, _) = intermediate(HOUR);
        let cases = [
            (
                CaMaterial {
                    key_pem: other.key_pem.clone(),
                    ..good.clone()
                },
                "does not match",
            ),
            (
                CaMaterial {
                    key_pem: "junk".into(),
                    ..good.clone()
                },
                "not a PEM private key",
            ),
            (
                CaMaterial {
                    // The intermediate followed by an unrelated root.
                    certificate_pem: format!(
                        "{}{}",
                        first_block(&intermediate.certificate_pem),
                        good.certificate_pem
                    ),
                    ..intermediate.clone()
                },
                "does not link up",
            ),
        ];
        for (material, expected) in cases {
            let error = LocalCa::from_material(&material, "test").unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
        // An intermediate alone is the top of its own chain: its root then comes from
        // ca.crt, and without one nothing is published as a root.
        let alone = CaMaterial {
            certificate_pem: first_block(&intermediate.certificate_pem),
            ..intermediate.clone()
        };
        let ca = LocalCa::from_material(&alone, "test").unwrap();
        assert!(ca.published_roots(OffsetDateTime::now_utc()).is_empty());
        assert!(!format!("{good:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn rotation_keeps_the_old_root_until_it_expires() {
        let start = OffsetDateTime::now_utc();
        let old = ca(3 * HOUR);
        assert!(!old.due_for_rotation(start));
        assert!(old.due_for_rotation(start + 2 * HOUR + Duration::from_secs(60)));
        let old_root = old.published_roots(start);
        let (_, parsed, pem) = csr();
        let usages = spiffe_usages();
        let request = SignRequest {
            csr_pem: pem.as_bytes(),
            csr: &parsed,
            duration: HOUR,
            usages: &usages,
            is_ca: false,
        };
        let old_leaf = old.sign(&request, start).unwrap();
        let material = old.rotate(3 * HOUR, start).unwrap();
        let new = LocalCa::from_material(&material, "test").unwrap();
        let new_leaf = new.sign(&request, start).unwrap();
        // Both roots are published, so the old leaf and the new one both verify.
        let published = new_leaf.extra_roots.clone();
        assert_eq!(published.len(), 2);
        assert!(published.contains(&old_root[0]));
        let bundle = nico_csr::ders_to_pem(&published);
        openssl_verify(&bundle, &old_leaf.certificates[..1]).unwrap();
        openssl_verify(&bundle, &new_leaf.certificates[..1]).unwrap();
        // Once the old root has expired (and with it every leaf it signed), it is dropped.
        let later = start + 3 * HOUR + Duration::from_secs(60);
        assert_eq!(new.published_roots(later).len(), 1);
        assert!(!new.published_roots(later).contains(&old_root[0]));
    }

    #[test]
    fn refuses_ca_requests_unknown_usages_and_expiring_cas() {
        let ca = ca(2 * HOUR);
        let (_, parsed, pem) = csr();
        let usages = spiffe_usages();
        let base = SignRequest {
            csr_pem: pem.as_bytes(),
            csr: &parsed,
            duration: Duration::from_secs(600),
            usages: &usages,
            is_ca: false,
        };
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            ca.sign(
                &SignRequest {
                    is_ca: true,
                    ..base
                },
                now
            ),
            Err(SignError::CaRequested)
        ));
        let odd = vec!["cert sign".to_owned()];
        assert!(matches!(
            ca.sign(
                &SignRequest {
                    usages: &odd,
                    ..base
                },
                now
            ),
            Err(SignError::Usage(_))
        ));
        assert!(matches!(
            ca.sign(&base, now + 2 * HOUR),
            Err(SignError::CaExpiring(_))
        ));
    }
}
