//! The backends behind the issuers: a local CA or Vault, loaded from their settings and kept
//! healthy (CA rotation, Vault token and health) by a task each.

use std::sync::{Arc, RwLock};

use nico_runtime::ReadyFlag;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ca_store::CaStore;
use crate::config::{BackendSettings, ValidLocalCa};
use crate::local_ca::{CaError, CaMaterial, Issued, LocalCa, SignError, SignRequest};
use crate::metrics::Metrics;
use crate::vault::{VaultBackend, VaultError};

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The local CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The Vault client could not be set up.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Why one signature did not happen.
#[derive(Debug)]
pub(crate) enum SignFailure {
    /// The request can never be signed as it is: fail it with this message.
    Permanent(String),
    /// The backend is unavailable: retry later.
    Transient(String),
}

/// A local CA that may be replaced while running: rotated when generated, or read again
/// when the operator replaces its files or Secret.
#[derive(Debug)]
pub(crate) struct LocalBackend {
    ca: RwLock<Arc<LocalCa>>,
    store: CaStore,
    settings: ValidLocalCa,
    /// When the operator was last told to rotate their CA (once a day is enough).
    last_warning: std::sync::Mutex<Option<OffsetDateTime>>,
    /// The stored material `ca` was made from, to notice a replacement; and stored material
    /// found unusable, so the same broken replacement is reported once.
    seen: std::sync::Mutex<Seen>,
}

/// The material a [`LocalBackend`] last read.
#[derive(Debug, Default)]
struct Seen {
    in_use: CaMaterial,
    refused: Option<CaMaterial>,
}

impl LocalBackend {
    async fn load(settings: &ValidLocalCa, client: &kube::Client) -> Result<Self, CaError> {
        let store = CaStore::new(&settings.source, client);
        let material = match store.load().await? {
            Some(material) => material,
            None if settings.generate => {
                let material = LocalCa::generate(settings.validity, OffsetDateTime::now_utc())?;
                match store.store(&material, false).await {
                    Ok(()) => {
                        info!(location = %store.location(), "generated a development CA");
                        material
                    }
                    // Another replica stored one first: use theirs.
                    Err(_) => store.load().await?.ok_or_else(|| CaError::Missing {
                        location: store.location(),
                    })?,
                }
            }
            None => {
                return Err(CaError::Missing {
                    location: store.location(),
                });
            }
        };
        let ca = LocalCa::from_material(&material, &store.location())?;
        let backend = Self {
            ca: RwLock::new(Arc::new(ca)),
            store,
            settings: settings.clone(),
            last_warning: std::sync::Mutex::new(None),
            seen: std::sync::Mutex::new(Seen {
                in_use: material,
                refused: None,
            }),
        };
        backend.rotate_if_due(OffsetDateTime::now_utc()).await?;
        Ok(backend)
    }

    fn current(&self) -> Arc<LocalCa> {
        // One clone or assignment per critical section: a poisoned lock is consistent.
        self.ca
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the stored CA again and switches to it when it changed and is usable. A
    /// replacement that cannot be used (a key that does not match, an expired certificate,
    /// a deleted Secret) is reported and the CA in use goes on signing.
    async fn reload_if_replaced(&self) -> Result<(), CaError> {
        let location = self.store.location();
        let Some(material) = self.store.load().await? else {
            return Err(CaError::Missing { location });
        };
        {
            let seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if material == seen.in_use || seen.refused.as_ref() == Some(&material) {
                return Ok(());
            }
        }
        match LocalCa::from_material(&material, &location) {
            Ok(ca) => {
                info!(location = %location, not_after = %ca.not_after(), "loaded a replaced CA");
                *self
                    .ca
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(ca);
                let mut seen = self
                    .seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *seen = Seen {
                    in_use: material,
                    refused: None,
                };
                Ok(())
            }
            Err(error) => {
                self.seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .refused = Some(material);
                Err(error)
            }
        }
    }

    /// Replaces a generated CA that is due, keeping its roots published.
    async fn rotate_if_due(&self, now: OffsetDateTime) -> Result<(), CaError> {
        let current = self.current();
        if !current.due_for_rotation(now) {
            return Ok(());
        }
        if !self.settings.generate {
            // One critical section of a read and a write: a poisoned lock is consistent.
            let mut last = self
                .last_warning
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|at| now - at >= time::Duration::DAY) {
                *last = Some(now);
                warn!(
                    location = %self.store.location(),
                    not_after = %current.not_after(),
                    "the CA expires soon: rotate it"
                );
            }
            return Ok(());
        }
        let material = current.rotate(self.settings.validity, now)?;
        self.store.store(&material, true).await?;
        let rotated = LocalCa::from_material(&material, &self.store.location())?;
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .in_use = material;
        info!(
            location = %self.store.location(),
            not_after = %rotated.not_after(),
            "rotated the CA"
        );
        *self
            .ca
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(rotated);
        Ok(())
    }
}

/// What signs for one issuer.
#[derive(Debug)]
pub(crate) enum Backend {
    Local(Box<LocalBackend>),
    Vault(Arc<VaultBackend>),
}

impl Backend {
    pub(crate) async fn load(
        name: &str,
        settings: &BackendSettings,
        client: &kube::Client,
        metrics: &Metrics,
    ) -> Result<Self, BackendError> {
        Ok(match settings {
            BackendSettings::LocalCa(ca) => {
                Self::Local(Box::new(LocalBackend::load(ca, client).await?))
            }
            BackendSettings::Vault(vault) => Self::Vault(Arc::new(VaultBackend::with_metrics(
                name.to_owned(),
                vault.clone(),
                metrics.clone(),
            )?)),
        })
    }

    /// Starts the task that keeps the backend usable and reports its readiness.
    /// `recovered` is bumped whenever the backend serves again after an outage.
    pub(crate) fn maintain(
        self: &Arc<Self>,
        ready: ReadyFlag,
        recovered: Arc<tokio::sync::watch::Sender<u64>>,
        shutdown: CancellationToken,
    ) {
        match self.as_ref() {
            Self::Local(_) => {
                ready.set(true);
                let backend = self.clone();
                tokio::spawn(async move {
                    let Self::Local(local) = backend.as_ref() else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(local.settings.reload_interval) => {}
                            () = shutdown.cancelled() => return,
                        }
                        if let Err(error) = local.reload_if_replaced().await {
                            warn!(
                                %error,
                                "the stored CA cannot be used; signing with the one loaded before"
                            );
                        }
                        if let Err(error) = local.rotate_if_due(OffsetDateTime::now_utc()).await {
                            warn!(%error, "failed to rotate the CA; retrying");
                        }
                    }
                });
            }
            Self::Vault(vault) => {
                tokio::spawn(vault.clone().maintain(ready, recovered, shutdown));
            }
        }
    }

    pub(crate) async fn sign(&self, request: &SignRequest<'_>) -> Result<Issued, SignFailure> {
        match self {
            Self::Local(local) => local
                .current()
                .sign(request, OffsetDateTime::now_utc())
                .map_err(|e| match e {
                    // Waits for a rotation rather than failing every request meanwhile.
                    SignError::CaExpiring(_) => SignFailure::Transient(e.to_string()),
                    _ => SignFailure::Permanent(e.to_string()),
                }),
            Self::Vault(vault) => vault.sign(request).await.map_err(|e| {
                if e.is_transient() {
                    SignFailure::Transient(e.to_string())
                } else {
                    SignFailure::Permanent(e.to_string())
                }
            }),
        }
    }
}
