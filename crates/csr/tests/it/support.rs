//! A tiny PKI built with rcgen for the tests, and a scratch directory helper.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate and the key that can sign with its name.
pub(crate) struct Authority {
    pub(crate) params: CertificateParams,
    pub(crate) key: KeyPair,
    pub(crate) der: Vec<u8>,
}

impl Authority {
    pub(crate) fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn named(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(1);
    params
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = named(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

pub(crate) fn root(common_name: &str) -> Authority {
    let params = ca_params(common_name);
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Authority { params, key, der }
}

pub(crate) fn intermediate(common_name: &str, parent: &Authority) -> Authority {
    intermediate_with(ca_params(common_name), KeyPair::generate().unwrap(), parent)
}

/// An intermediate from explicit parameters and key, e.g. to re-issue one with a new serial.
pub(crate) fn intermediate_with(
    params: CertificateParams,
    key: KeyPair,
    parent: &Authority,
) -> Authority {
    let der = params
        .signed_by(&key, &parent.issuer())
        .unwrap()
        .der()
        .to_vec();
    Authority { params, key, der }
}

pub(crate) fn ca_params_with_serial(common_name: &str, serial: u8) -> CertificateParams {
    let mut params = ca_params(common_name);
    params.serial_number = Some(SerialNumber::from_slice(&[serial]));
    params
}

/// A leaf for a fresh key, named `common_name`.
pub(crate) fn leaf(common_name: &str, parent: &Authority) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    named(common_name)
        .signed_by(&key, &parent.issuer())
        .unwrap()
        .der()
        .to_vec()
}

/// Signs a CSR the way a CA would: keeping its public key and requested extensions.
pub(crate) fn sign_csr(csr_pem: &str, parent: &Authority) -> Vec<u8> {
    let mut request = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
    let now = OffsetDateTime::now_utc();
    request.params.not_before = now - Duration::minutes(5);
    request.params.not_after = now + Duration::hours(1);
    request.signed_by(&parent.issuer()).unwrap().der().to_vec()
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nico-csr-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn write(&self, file: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
