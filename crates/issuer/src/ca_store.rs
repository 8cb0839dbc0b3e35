//! Where a local CA is kept: two PEM files on disk, or a Kubernetes Secret.
//!
//! Both hold the same four parts ([`CaMaterial`]): `tls.crt` (certificate and chain),
//! `tls.key`, an optional `ca.crt` (the root, when the chain does not end in one) and an
//! optional `retired.crt` (roots kept after a rotation). With files, `ca.crt` is not used
//! (put the root at the end of the certificate file) and `retired.crt` sits beside the
//! certificate as `<certificate>.retired`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::config::CaSource;
use crate::local_ca::{CaError, CaMaterial};

const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const ROOTS_KEY: &str = "ca.crt";
const RETIRED_KEY: &str = "retired.crt";

/// A place holding one CA.
#[derive(Clone)]
pub(crate) enum CaStore {
    Files {
        certificate: PathBuf,
        key: PathBuf,
    },
    Secret {
        api: Box<Api<Secret>>,
        namespace: String,
        name: String,
    },
}

impl std::fmt::Debug for CaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

impl CaStore {
    pub(crate) fn new(source: &CaSource, client: &kube::Client) -> Self {
        match source {
            CaSource::Files { certificate, key } => Self::Files {
                certificate: certificate.clone(),
                key: key.clone(),
            },
            CaSource::Secret { namespace, name } => Self::Secret {
                api: Box::new(Api::namespaced(client.clone(), namespace)),
                namespace: namespace.clone(),
                name: name.clone(),
            },
        }
    }

    /// The files or the Secret, for messages.
    pub(crate) fn location(&self) -> String {
        match self {
            Self::Files { certificate, key } => {
                format!("files {} and {}", certificate.display(), key.display())
            }
            Self::Secret {
                namespace, name, ..
            } => format!("secret {namespace}/{name}"),
        }
    }

    /// Reads the CA; `None` when none of it exists.
    pub(crate) async fn load(&self) -> Result<Option<CaMaterial>, CaError> {
        match self {
            Self::Files { certificate, key } => load_files(certificate, key),
            Self::Secret { api, .. } => {
                let secret = api
                    .get_opt(self.name())
                    .await
                    .map_err(|source| CaError::Kube {
                        action: "read",
                        location: self.location(),
                        source,
                    })?;
                secret.map(|s| self.read_secret(&s)).transpose()
            }
        }
    }

    /// Stores a new CA. `replace` is false for the first CA (it must not exist yet: a
    /// racing replica's CA wins) and true for a rotation.
    pub(crate) async fn store(&self, material: &CaMaterial, replace: bool) -> Result<(), CaError> {
        match self {
            Self::Files { certificate, key } => {
                if !replace && (certificate.exists() || key.exists()) {
                    return Err(CaError::HalfPresent {
                        present: self.location(),
                        missing: "a consistent pair".into(),
                    });
                }
                write_replacing(key, material.key_pem.as_bytes(), 0o600)?;
                write_replacing(
                    &retired_path(certificate),
                    material.retired_pem.as_bytes(),
                    0o644,
                )?;
                write_replacing(certificate, material.certificate_pem.as_bytes(), 0o644)
            }
            Self::Secret { api, .. } => {
                let kube_error = |action| {
                    let location = self.location();
                    move |source| CaError::Kube {
                        action,
                        location,
                        source,
                    }
                };
                let mut data = BTreeMap::new();
                for (key, value) in [
                    (CERT_KEY, &material.certificate_pem),
                    (KEY_KEY, &material.key_pem),
                    (ROOTS_KEY, &material.roots_pem),
                    (RETIRED_KEY, &material.retired_pem),
                ] {
                    if !value.is_empty() {
                        data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
                    }
                }
                if replace {
                    let mut current = api.get(self.name()).await.map_err(kube_error("read"))?;
                    current.data = Some(data);
                    // Carries the resourceVersion just read: a concurrent rotation fails here.
                    api.replace(self.name(), &PostParams::default(), &current)
                        .await
                        .map_err(kube_error("update"))?;
                } else {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.name().to_owned()),
                            ..ObjectMeta::default()
                        },
                        type_: Some("kubernetes.io/tls".to_owned()),
                        data: Some(data),
                        ..Secret::default()
                    };
                    api.create(&PostParams::default(), &secret)
                        .await
                        .map_err(kube_error("create"))?;
                }
                Ok(())
            }
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Files { .. } => "",
            Self::Secret { name, .. } => name,
        }
    }

    fn read_secret(&self, secret: &Secret) -> Result<CaMaterial, CaError> {
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let text = |key: &str| -> Result<String, CaError> {
            match data.get(key) {
                None => Ok(String::new()),
                Some(bytes) => String::from_utf8(bytes.0.clone()).map_err(|_| CaError::Unusable {
                    location: self.location(),
                    reason: format!("{key} is not text"),
                }),
            }
        };
        let material = CaMaterial {
            certificate_pem: text(CERT_KEY)?,
            key_pem: text(KEY_KEY)?,
            roots_pem: text(ROOTS_KEY)?,
            retired_pem: text(RETIRED_KEY)?,
        };
        match (
            material.certificate_pem.is_empty(),
            material.key_pem.is_empty(),
        ) {
            (false, false) => Ok(material),
            (true, true) => Err(CaError::Missing {
                location: format!("{} (keys {CERT_KEY} and {KEY_KEY})", self.location()),
            }),
            (cert_missing, _) => {
                let (present, missing) = if cert_missing {
                    (KEY_KEY, CERT_KEY)
                } else {
                    (CERT_KEY, KEY_KEY)
                };
                Err(CaError::HalfPresent {
                    present: format!("{} key {present}", self.location()),
                    missing: missing.to_owned(),
                })
            }
        }
    }
}

fn retired_path(certificate: &Path) -> PathBuf {
    let mut name = certificate.as_os_str().to_owned();
    name.push(".retired");
    PathBuf::from(name)
}

fn load_files(certificate: &Path, key: &Path) -> Result<Option<CaMaterial>, CaError> {
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| CaError::Io {
            action: "read",
            path: path.display().to_string(),
            source,
        })
    };
    match (certificate.exists(), key.exists()) {
        (true, true) => {
            let retired = retired_path(certificate);
            Ok(Some(CaMaterial {
                certificate_pem: read(certificate)?,
                key_pem: read(key)?,
                roots_pem: String::new(),
                retired_pem: if retired.exists() {
                    read(&retired)?
                } else {
                    String::new()
                },
            }))
        }
        (false, false) => Ok(None),
        (cert_present, _) => {
            let (present, missing) = if cert_present {
                (certificate, key)
            } else {
                (key, certificate)
            };
            Err(CaError::HalfPresent {
                present: present.display().to_string(),
                missing: missing.display().to_string(),
            })
        }
    }
}

/// Writes a file through a temporary sibling and a rename, with its final mode from the
/// start, so a reader sees the old content or the new, never a mix.
fn write_replacing(path: &Path, content: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |action, source| CaError::Io {
        action,
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io("create the directory of", e))?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|e| io("create", e))?;
    file.write_all(content).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    fs::rename(&temporary, path).map_err(|e| io("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> CaStore {
        CaStore::Files {
            certificate: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        }
    }

    #[tokio::test]
    async fn files_round_trip_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = files(dir.path());
        assert!(store.load().await.unwrap().is_none());
        let material = CaMaterial {
            certificate_pem: "cert".into(),
            key_pem: "key".into(),
            roots_pem: String::new(),
            retired_pem: "old".into(),
        };
        store.store(&material, false).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(material.clone()));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A first store never overwrites an existing CA.
        assert!(store.store(&material, false).await.is_err());
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        let err = store.load().await.unwrap_err();
        assert!(err.to_string().contains("ca.key does not"), "{err}");
    }
}
