//! Keeping the serving certificate and the configurations' `caBundle` right, for as long
//! as the webhook runs.
//!
//! Each pass reads the CA Secret (creating it when absent, rotating the CA when a third of
//! its life is left), writes the bundle into both webhook configurations, and only then
//! issues a serving certificate under a CA that the configurations now trust: a new CA is
//! never served before the API server trusts it. The serving certificate is renewed when
//! two thirds of its life have passed, from the CA in memory even while the API server
//! cannot be reached; the resolver hands the new one to the next handshake, so nothing
//! restarts and open connections continue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::ca_store::{CaStore, CaStoreError, StoredCa};
use crate::configurations::{ConfigurationError, Configurations, Written};
use crate::metrics::Metrics;
use crate::pki::{Ca, PkiError, ServingResolver};

/// Why a pass failed; the next one retries.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The CA Secret could not be read or written.
    #[error(transparent)]
    Ca(#[from] CaStoreError),
    /// A configuration could not be read or written.
    #[error(transparent)]
    Configuration(#[from] ConfigurationError),
    /// The serving certificate could not be made.
    #[error("failed to issue the serving certificate: {0}")]
    Serving(#[source] PkiError),
}

/// The first retry after a failed pass; retries double up to the resync interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The shortest pause between passes, so that nothing can make them spin.
const MIN_WAIT: Duration = Duration::from_millis(500);

pub(crate) struct Bootstrap {
    pub(crate) store: CaStore,
    pub(crate) configurations: Configurations,
    pub(crate) resolver: Arc<ServingResolver>,
    pub(crate) dns_names: Vec<String>,
    pub(crate) serving_validity: Duration,
    pub(crate) resync: Duration,
    pub(crate) metrics: Metrics,
    /// Set once the configurations trusted this replica's CA.
    pub(crate) installed: Arc<AtomicBool>,
    pub(crate) ca: Option<StoredCa>,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("store", &self.store)
            .field("configurations", &self.configurations)
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    fn issue(&self, ca: &Ca, now: OffsetDateTime) -> Result<(), BootstrapError> {
        let serving = ca
            .issue(&self.dns_names, self.serving_validity, now)
            .map_err(BootstrapError::Serving)?;
        tracing::info!(
            serial = serving.serial(),
            not_after = %serving.not_after(),
            "serving certificate issued"
        );
        self.metrics.renewed(serving.not_after().unix_timestamp());
        self.resolver.set(serving);
        Ok(())
    }

    /// Reads (or creates) the CA and issues the first serving certificate, so the server
    /// can start; the configurations are written by the first [`Bootstrap::sync`].
    pub(crate) async fn start(&mut self, now: OffsetDateTime) -> Result<(), BootstrapError> {
        let mut stored = self
            .store
            .load_or_create(&crate::pki::Bundle::default(), now)
            .await?;
        // An expired CA signs nothing: replace it now (nothing is served yet). One that is
        // merely due keeps serving until the first pass has published its successor.
        if stored.ca.not_after() <= now {
            stored = self.store.rotate(&stored, now).await?;
        }
        self.issue(&stored.ca, now)?;
        self.ca = Some(stored);
        Ok(())
    }

    /// One pass.
    pub(crate) async fn sync(&mut self, now: OffsetDateTime) -> Result<(), BootstrapError> {
        let known = self
            .ca
            .as_ref()
            .map(|c| c.bundle.clone())
            .unwrap_or_default();
        let mut stored = self.store.load_or_create(&known, now).await?;
        if stored.ca.due_for_rotation(now) {
            stored = self.store.rotate(&stored, now).await?;
        }
        let written = self.configurations.ensure(&stored.bundle.to_pem()).await?;
        if written == Written::Updated {
            tracing::info!("webhook configurations now trust the CA bundle");
        }
        self.installed.store(true, Ordering::Release);
        let due = self
            .resolver
            .current()
            .is_none_or(|s| !s.signed_by(&stored.ca) || s.renew_at() <= now);
        if due {
            self.issue(&stored.ca, now)?;
        }
        self.ca = Some(stored);
        Ok(())
    }

    /// Renews a due serving certificate from the CA in memory, without the API server.
    pub(crate) fn renew_offline(&self, now: OffsetDateTime) -> Result<(), BootstrapError> {
        let Some(stored) = &self.ca else {
            return Ok(());
        };
        let due = self.resolver.current().is_none_or(|s| s.renew_at() <= now);
        if due && stored.ca.not_after() > now {
            self.issue(&stored.ca, now)?;
        }
        Ok(())
    }

    /// How long until the next pass is needed.
    pub(crate) fn next_pass(&self, now: OffsetDateTime) -> Duration {
        let renewal = self
            .resolver
            .current()
            .map(|s| Duration::try_from(s.renew_at() - now).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::ZERO);
        renewal.min(self.resync)
    }

    /// Runs passes until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut wait = Duration::ZERO;
        let mut retry = FIRST_RETRY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let now = OffsetDateTime::now_utc();
            match self.sync(now).await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    wait = self.next_pass(OffsetDateTime::now_utc()).max(MIN_WAIT);
                }
                Err(error) => {
                    tracing::warn!(%error, "failed to sync the webhook CA and configurations");
                    if let Err(error) = self.renew_offline(now) {
                        tracing::warn!(%error, "failed to renew the serving certificate");
                    }
                    let jitter = Duration::from_millis(fastrand::u64(0..=250));
                    let next = self.next_pass(OffsetDateTime::now_utc()).max(MIN_WAIT);
                    wait = (retry + jitter).min(next);
                    retry = (retry * 2).min(self.resync);
                }
            }
        }
    }
}
