//! Inputs the driver follows at runtime: an issuer override from a ConfigMap, and a trust
//! bundle from a file or a ConfigMap.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

use nico_k8s_types::IssuerRef;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigMapKey, ObjectName};

/// How often a bundle file is re-read. Only runs when a file bundle is configured.
pub(crate) const FILE_POLL: Duration = Duration::from_secs(10);

/// Follows a ConfigMap with `issuer-name`, `issuer-kind` and `issuer-group`; while it exists
/// with a name, requests go to that issuer, otherwise to `default`.
pub(crate) fn follow_issuer_override(
    client: kube::Client,
    map: &ObjectName,
    default: IssuerRef,
    shutdown: CancellationToken,
) -> Arc<RwLock<IssuerRef>> {
    let current = Arc::new(RwLock::new(default.clone()));
    let api: Api<ConfigMap> = Api::namespaced(client, &map.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", map.name));
    let stream = watcher(api, config).default_backoff();
    let shared = current.clone();
    let name = format!("{}/{}", map.namespace, map.name);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // During a (re)list, the object seen so far; the override only changes once the list
        // is complete, so a relist never flaps back to the default half way.
        let mut listing: Option<Option<IssuerRef>> = None;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = shutdown.cancelled() => return,
            };
            let chosen = match event {
                Some(Ok(watcher::Event::Init)) => {
                    listing = Some(None);
                    continue;
                }
                Some(Ok(watcher::Event::InitApply(object))) => {
                    listing = Some(issuer_from(&object));
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => listing.take().flatten(),
                Some(Ok(watcher::Event::Apply(object))) => issuer_from(&object),
                Some(Ok(watcher::Event::Delete(_))) => None,
                Some(Err(error)) => {
                    warn!(configmap = %name, %error, "failed to watch the issuer override");
                    continue;
                }
                None => return,
            };
            let chosen = chosen.unwrap_or_else(|| default.clone());
            let mut guard = shared
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *guard != chosen {
                info!(configmap = %name, issuer = %chosen, "issuer for new requests changed");
                *guard = chosen;
            }
        }
    });
    current
}

fn issuer_from(map: &ConfigMap) -> Option<IssuerRef> {
    let data = map.data.as_ref()?;
    let value = |key: &str| data.get(key).filter(|v| !v.is_empty()).cloned();
    Some(IssuerRef {
        name: value("issuer-name")?,
        kind: value("issuer-kind"),
        group: value("issuer-group"),
    })
}

/// The current trust bundle (PEM) and a way to hear about changes.
#[derive(Clone, Debug)]
pub(crate) struct TrustBundle {
    current: watch::Receiver<Option<Arc<Vec<u8>>>>,
    configured: bool,
}

impl TrustBundle {
    /// No configured bundle: each issuer answer's `status.ca` is used.
    pub(crate) fn from_issuer() -> Self {
        let (_sender, current) = watch::channel(None);
        Self {
            current,
            configured: false,
        }
    }

    /// The configured bundle, if one is configured and has been read.
    pub(crate) fn get(&self) -> Option<Arc<Vec<u8>>> {
        self.current.borrow().clone()
    }

    /// Whether a bundle source is configured (then `ca.crt` comes from it, not the issuer).
    pub(crate) fn configured(&self) -> bool {
        self.configured
    }

    /// Resolves when the bundle changes.
    pub(crate) async fn changed(&mut self) -> bool {
        self.current.changed().await.is_ok()
    }

    /// Re-reads `path` every `interval`.
    pub(crate) fn follow_file(
        path: PathBuf,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (sender, current) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                match std::fs::read(&path) {
                    Ok(bytes) => publish(&sender, bytes, &path.display().to_string()),
                    Err(error) => {
                        warn!(path = %path.display(), %error, "failed to read the trust bundle")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        });
        Self {
            current,
            configured: true,
        }
    }

    /// Follows one key of a ConfigMap.
    pub(crate) fn follow_config_map(
        client: kube::Client,
        key: &ConfigMapKey,
        shutdown: CancellationToken,
    ) -> Self {
        let (sender, current) = watch::channel(None);
        let api: Api<ConfigMap> = Api::namespaced(client, &key.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
        let stream = watcher(api, config).default_backoff().applied_objects();
        let (data_key, name) = (key.key.clone(), format!("{}/{}", key.namespace, key.name));
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    () = shutdown.cancelled() => return,
                };
                match event {
                    Some(Ok(map)) => match map.data.as_ref().and_then(|d| d.get(&data_key)) {
                        Some(pem) => publish(&sender, pem.clone().into_bytes(), &name),
                        None => {
                            warn!(configmap = %name, key = %data_key, "trust bundle key missing")
                        }
                    },
                    Some(Err(error)) => {
                        warn!(configmap = %name, %error, "failed to watch the trust bundle")
                    }
                    None => return,
                }
            }
        });
        Self {
            current,
            configured: true,
        }
    }
}

/// Publishes a new bundle if it is valid PEM certificates and differs from the current one.
fn publish(sender: &watch::Sender<Option<Arc<Vec<u8>>>>, bytes: Vec<u8>, source: &str) {
    match nico_csr::pem_to_ders(&bytes) {
        Ok(certificates) => {
            let unchanged = sender.borrow().as_deref().is_some_and(|old| *old == bytes);
            if !unchanged {
                info!(
                    source,
                    certificates = certificates.len(),
                    "trust bundle loaded"
                );
                sender.send_replace(Some(Arc::new(bytes)));
            }
        }
        Err(error) => {
            warn!(source, %error, "trust bundle is not PEM certificates; keeping the last good one")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_override_needs_a_name_and_takes_kind_and_group_when_present() {
        let map = |pairs: &[(&str, &str)]| ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        };
        assert_eq!(issuer_from(&map(&[("issuer-kind", "Issuer")])), None);
        let chosen =
            issuer_from(&map(&[("issuer-name", "vault"), ("issuer-kind", "Issuer")])).unwrap();
        assert_eq!(chosen.to_string(), "Issuer.cert-manager.io/vault");
    }

    #[tokio::test]
    async fn a_bundle_file_is_followed_and_garbage_keeps_the_last_good_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let (ca, _) = self_signed();
        std::fs::write(&path, &ca).unwrap();
        let shutdown = CancellationToken::new();
        let poll = Duration::from_millis(20);
        let mut bundle = TrustBundle::follow_file(path.clone(), poll, shutdown.clone());
        assert!(bundle.changed().await);
        assert_eq!(bundle.get().unwrap().as_slice(), ca.as_bytes());
        let sender_side = bundle.clone();
        std::fs::write(&path, b"garbage").unwrap();
        let (other, _) = self_signed();
        std::fs::write(&path, &other).unwrap();
        // Wait for the new content rather than for a number of ticks.
        tokio::time::timeout(Duration::from_secs(10), async {
            while sender_side.get().unwrap().as_slice() != other.as_bytes() {
                bundle.changed().await;
            }
        })
        .await
        .unwrap();
        shutdown.cancel();
    }

    fn self_signed() -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap().pem(), key)
    }
}
