//! The CA every replica shares, kept in a Secret: `tls.crt` and `tls.key` hold the current
//! CA, `ca.crt` every CA certificate the API server must trust (the current one first, then
//! retired ones until they expire).
//!
//! Replicas never race each other into two CAs: the Secret is created only when absent
//! (a 409 means another replica won, and its CA is used), and replaced only with the
//! resourceVersion it was read at (a 409 means it changed, and it is read again).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use time::OffsetDateTime;

use crate::pki::{Bundle, Ca, PkiError};

const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const BUNDLE_KEY: &str = "ca.crt";

/// Why the CA could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum CaStoreError {
    /// The API server refused or failed a request.
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
    /// The Secret exists but does not hold a usable CA.
    #[error(
        "secret {location} does not hold a usable CA (delete it to have one generated): {source}"
    )]
    Unusable {
        /// namespace/name.
        location: String,
        /// What is wrong.
        #[source]
        source: PkiError,
    },
    /// A new CA could not be made.
    #[error("failed to generate a CA: {0}")]
    Generate(#[source] PkiError),
    /// Another replica kept changing the Secret.
    #[error("secret {0} kept changing while it was being written")]
    Contended(String),
}

/// The CA as read from the Secret.
#[derive(Debug)]
pub(crate) struct StoredCa {
    /// The current CA.
    pub(crate) ca: Ca,
    /// What the API server must trust: the current CA first.
    pub(crate) bundle: Bundle,
    resource_version: Option<String>,
}

/// Reads and writes the CA Secret.
#[derive(Clone)]
pub(crate) struct CaStore {
    secrets: Api<Secret>,
    namespace: String,
    name: String,
    validity: Duration,
}

impl std::fmt::Debug for CaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaStore")
            .field("secret", &self.location())
            .finish()
    }
}

fn text(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .unwrap_or_default()
}

/// How often a create or replace is retried after losing a race.
const ATTEMPTS: usize = 5;

impl CaStore {
    pub(crate) fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        validity: Duration,
    ) -> Self {
        Self {
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            validity,
        }
    }

    fn location(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn kube(&self, action: &'static str) -> impl FnOnce(kube::Error) -> CaStoreError + '_ {
        move |source| CaStoreError::Kube {
            action,
            location: self.location(),
            source,
        }
    }

    fn read(&self, secret: &Secret, now: OffsetDateTime) -> Result<StoredCa, CaStoreError> {
        let ca =
            Ca::from_pem(&text(secret, CERT_KEY), &text(secret, KEY_KEY)).map_err(|source| {
                CaStoreError::Unusable {
                    location: self.location(),
                    source,
                }
            })?;
        let stored = Bundle::from_pem(text(secret, BUNDLE_KEY).as_bytes(), now);
        Ok(StoredCa {
            bundle: stored.led_by(ca.cert_der(), now),
            ca,
            resource_version: secret.metadata.resource_version.clone(),
        })
    }

    fn secret(&self, ca: &Ca, bundle: &Bundle, resource_version: Option<String>) -> Secret {
        let data = [
            (CERT_KEY, ca.cert_pem().to_owned()),
            (KEY_KEY, ca.key_pem().to_owned()),
            (BUNDLE_KEY, bundle.to_pem()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect::<BTreeMap<_, _>>();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/component".to_owned(),
                    "webhook".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// The CA from the Secret, creating the Secret with a new CA when it is absent. A new
    /// CA's bundle keeps `known` (what this replica trusted before), so that replicas still
    /// serving under an older CA are not cut off when the Secret was deleted.
    pub(crate) async fn load_or_create(
        &self,
        known: &Bundle,
        now: OffsetDateTime,
    ) -> Result<StoredCa, CaStoreError> {
        for _ in 0..ATTEMPTS {
            if let Some(secret) = self
                .secrets
                .get_opt(&self.name)
                .await
                .map_err(self.kube("read"))?
            {
                return self.read(&secret, now);
            }
            let ca = Ca::generate(self.validity, now).map_err(CaStoreError::Generate)?;
            let bundle = known.led_by(ca.cert_der(), now);
            match self
                .secrets
                .create(&PostParams::default(), &self.secret(&ca, &bundle, None))
                .await
            {
                Ok(created) => {
                    tracing::info!(secret = %self.location(), "created the webhook CA");
                    return self.read(&created, now);
                }
                // Another replica created it first: use theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(source) => return Err(self.kube("create")(source)),
            }
        }
        Err(CaStoreError::Contended(self.location()))
    }

    /// Replaces the CA with a new one, keeping the old certificate in the bundle until it
    /// expires. When another replica changed the Secret first, its CA is returned instead.
    pub(crate) async fn rotate(
        &self,
        current: &StoredCa,
        now: OffsetDateTime,
    ) -> Result<StoredCa, CaStoreError> {
        let ca = Ca::generate(self.validity, now).map_err(CaStoreError::Generate)?;
        let bundle = current.bundle.led_by(ca.cert_der(), now);
        let secret = self.secret(&ca, &bundle, current.resource_version.clone());
        match self
            .secrets
            .replace(&self.name, &PostParams::default(), &secret)
            .await
        {
            Ok(replaced) => {
                tracing::info!(secret = %self.location(), "rotated the webhook CA");
                self.read(&replaced, now)
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                self.load_or_create(&current.bundle, now).await
            }
            Err(source) => Err(self.kube("replace")(source)),
        }
    }
}
