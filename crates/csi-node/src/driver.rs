//! The node driver's state: which volumes are published, their certificates, and renewal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nico_runtime::RoleContext;
use nico_spiffe_id::SpiffeId;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{Instrument as _, info, warn};

use crate::config::Settings;
use crate::files::{self, VolumeFiles};
use crate::issuance::{Issuance, IssueError, Issued};
use crate::renewal::{RenewalQueue, renewal_delay, retry_delay};
use crate::request::{InvalidRequest, PublishRequest};

/// How many renewals may run at once; the rest wait their turn.
const RENEWAL_CONCURRENCY: usize = 16;

/// The node driver. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Driver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Arc<Settings>,
    issuance: Issuance,
    volumes: Mutex<HashMap<String, Arc<Slot>>>,
    renewals: RenewalQueue,
}

/// One volume. The async lock serialises publish, renewal and unpublish of that volume.
#[derive(Debug, Default)]
struct Slot {
    state: tokio::sync::Mutex<Option<Volume>>,
}

#[derive(Debug)]
struct Volume {
    request: PublishRequest,
    spiffe_id: SpiffeId,
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    failures: u32,
}

/// A published volume, as reported to callers (the dev environment prints these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeReport {
    /// The CSI volume id.
    pub volume_id: String,
    /// Where the files are.
    pub target_path: PathBuf,
    /// The SPIFFE ID in the certificate.
    pub spiffe_id: String,
    /// Serial number of the current certificate, lower-case hex.
    pub serial: String,
    /// When the current certificate expires.
    pub not_after: OffsetDateTime,
}

impl Driver {
    /// Starts the driver's background work (the shared request watch and the renewal loop);
    /// both stop when `shutdown` fires.
    pub fn start(
        settings: Settings,
        ctx: &RoleContext,
    ) -> Result<Self, nico_runtime::KubeAccessError> {
        let settings = Arc::new(settings);
        let shutdown = ctx.shutdown.clone();
        let issuance = Issuance::start(settings.clone(), ctx.access.clone(), shutdown.clone())?;
        let driver = Self {
            inner: Arc::new(Inner {
                settings,
                issuance,
                volumes: Mutex::default(),
                renewals: RenewalQueue::default(),
            }),
        };
        tokio::spawn(driver.clone().renewal_loop(shutdown));
        Ok(driver)
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Whether the driver can serve publishes (its watch of requests is established).
    pub fn is_ready(&self) -> bool {
        self.inner.issuance.is_ready()
    }

    /// The published volumes.
    pub async fn volumes(&self) -> Vec<VolumeReport> {
        let slots: Vec<Arc<Slot>> = self.lock_volumes().values().cloned().collect();
        let mut reports = Vec::with_capacity(slots.len());
        for slot in slots {
            if let Some(volume) = slot.state.lock().await.as_ref() {
                reports.push(volume.report());
            }
        }
        reports.sort_by(|a, b| a.target_path.cmp(&b.target_path));
        reports
    }

    /// Publishes a volume: issues a certificate unless the volume already has one, and
    /// refreshes the token used for its renewals either way.
    pub(crate) async fn publish(&self, request: PublishRequest) -> Result<(), Status> {
        let settings = &self.inner.settings;
        let pod = &request.pod;
        let spiffe_id = settings
            .id_template
            .render(&settings.trust_domain, &pod.namespace, &pod.service_account)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "volume_context: the pod's namespace and service account do not form a valid \
                     SPIFFE ID: {e}"
                ))
            })?;
        let slot = self
            .lock_volumes()
            .entry(request.volume_id.clone())
            .or_default()
            .clone();
        let mut state = slot.state.lock().await;
        if let Some(volume) = state.as_mut() {
            let same = volume.request.target_path == request.target_path
                && volume.request.pod == request.pod
                && volume.request.fs_group == request.fs_group;
            if !same {
                return Err(Status::already_exists(format!(
                    "volume {} is already published at {} for pod {}/{} with other arguments",
                    request.volume_id,
                    volume.request.target_path.display(),
                    volume.request.pod.namespace,
                    volume.request.pod.name,
                )));
            }
            volume.request.token = request.token.clone();
            let present = files::read_certificate_chain(&request.target_path, &settings.files)
                .ok()
                .flatten()
                .is_some();
            if present && volume.not_after > OffsetDateTime::now_utc() {
                return Ok(());
            }
        }
        let result = self.issue_and_write(&request, &spiffe_id).await;
        match result {
            Ok(issued) => {
                let volume = Volume::new(request, spiffe_id, &issued);
                self.schedule_renewal(&volume);
                info!(
                    volume_id = %volume.request.volume_id,
                    spiffe_id = %volume.spiffe_id,
                    serial = %volume.serial,
                    not_after = %volume.not_after,
                    "volume published"
                );
                *state = Some(volume);
                Ok(())
            }
            Err(status) => {
                if state.is_none() {
                    drop(state);
                    self.forget_if_empty(&request.volume_id, &slot);
                }
                Err(status)
            }
        }
    }

    /// Unpublishes a volume: stops renewing it, removes its files and its requests. An
    /// unknown volume is not an error (kubelet retries unpublish after a restart).
    pub(crate) async fn unpublish(
        &self,
        volume_id: &str,
        target_path: &Path,
    ) -> Result<(), Status> {
        let slot = self.lock_volumes().remove(volume_id);
        self.inner.renewals.cancel(volume_id);
        let mut namespace = None;
        if let Some(slot) = slot
            && let Some(volume) = slot.state.lock().await.take()
        {
            namespace = Some(volume.request.pod.namespace.clone());
        }
        files::remove_volume_files(target_path, &self.inner.settings.files).map_err(|e| {
            Status::internal(format!(
                "failed to remove files from {}: {e}",
                target_path.display()
            ))
        })?;
        if let Some(namespace) = namespace {
            self.inner
                .issuance
                .delete_requests(&namespace, volume_id, None)
                .await;
        }
        info!(volume_id, "volume unpublished");
        Ok(())
    }

    async fn issue_and_write(
        &self,
        request: &PublishRequest,
        spiffe_id: &SpiffeId,
    ) -> Result<Issued, Status> {
        let settings = &self.inner.settings;
        let issued = self
            .inner
            .issuance
            .issue(&request.volume_id, &request.pod, &request.token, spiffe_id)
            .await
            .map_err(issue_status)?;
        let key_pem = issued.key.pkcs8_pem();
        let content = VolumeFiles {
            certificate_chain: issued.chain.certificate_chain_pem.as_bytes(),
            key: key_pem.as_bytes(),
            ca: issued.chain.ca_pem.as_bytes(),
        };
        files::write_atomically(
            &request.target_path,
            &settings.files,
            &content,
            request.fs_group,
        )
        .map_err(|e| {
            Status::internal(format!(
                "failed to write files into {}: {e}",
                request.target_path.display()
            ))
        })?;
        Ok(issued)
    }

    fn schedule_renewal(&self, volume: &Volume) {
        let delay = renewal_delay(
            volume.not_before,
            volume.not_after,
            OffsetDateTime::now_utc(),
        );
        self.inner.renewals.schedule(
            &volume.request.volume_id,
            tokio::time::Instant::now() + delay,
        );
    }

    async fn renewal_loop(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(RENEWAL_CONCURRENCY));
        loop {
            let volume_id = tokio::select! {
                id = self.inner.renewals.next_due() => id,
                () = shutdown.cancelled() => return,
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let driver = self.clone();
            let span = tracing::info_span!("renew", volume_id = %volume_id);
            tokio::spawn(
                async move {
                    driver.renew(&volume_id).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    async fn renew(&self, volume_id: &str) {
        let Some(slot) = self.lock_volumes().get(volume_id).cloned() else {
            return;
        };
        let mut state = slot.state.lock().await;
        let Some(volume) = state.as_mut() else { return };
        if let Some(expires) = volume.request.token.expires
            && expires <= jiff::Timestamp::now()
        {
            // kubelet republishes with a fresh token (requiresRepublish); retry after that.
            volume.failures += 1;
            warn!(
                volume_id,
                "pod token expired; waiting for kubelet to republish"
            );
            let delay = retry_delay(volume.failures);
            self.inner
                .renewals
                .schedule(volume_id, tokio::time::Instant::now() + delay);
            return;
        }
        let request = volume.request.clone();
        match self.issue_and_write(&request, &volume.spiffe_id).await {
            Ok(issued) => {
                *volume = Volume::new(request, volume.spiffe_id.clone(), &issued);
                info!(volume_id, serial = %volume.serial, not_after = %volume.not_after, "certificate renewed");
                self.schedule_renewal(volume);
            }
            Err(status) => {
                volume.failures += 1;
                let delay = retry_delay(volume.failures);
                warn!(
                    volume_id,
                    failures = volume.failures,
                    retry_in = ?delay,
                    not_after = %volume.not_after,
                    error = status.message(),
                    "failed to renew certificate; keeping the current one"
                );
                self.inner
                    .renewals
                    .schedule(volume_id, tokio::time::Instant::now() + delay);
            }
        }
    }

    fn forget_if_empty(&self, volume_id: &str, slot: &Arc<Slot>) {
        let mut volumes = self.lock_volumes();
        let unpublished = slot.state.try_lock().is_ok_and(|state| state.is_none());
        if unpublished && volumes.get(volume_id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            volumes.remove(volume_id);
        }
    }

    fn lock_volumes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        // Every critical section is a single map operation: a poisoned map is consistent.
        self.inner
            .volumes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Volume {
    fn new(request: PublishRequest, spiffe_id: SpiffeId, issued: &Issued) -> Self {
        Self {
            request,
            spiffe_id,
            serial: issued.chain.serial.clone(),
            not_before: issued.chain.not_before,
            not_after: issued.chain.not_after,
            failures: 0,
        }
    }

    fn report(&self) -> VolumeReport {
        VolumeReport {
            volume_id: self.request.volume_id.clone(),
            target_path: self.request.target_path.clone(),
            spiffe_id: self.spiffe_id.to_string(),
            serial: self.serial.clone(),
            not_after: self.not_after,
        }
    }
}

/// The gRPC status kubelet (and the pod's events) get for a failed issuance.
fn issue_status(error: IssueError) -> Status {
    let code = match &error {
        IssueError::Denied { .. } | IssueError::Forbidden { .. } => Code::PermissionDenied,
        IssueError::Unauthenticated => Code::Unauthenticated,
        IssueError::TimedOut { .. } => Code::DeadlineExceeded,
        IssueError::Create(_) | IssueError::Deleted { .. } => Code::Unavailable,
        IssueError::Key(_)
        | IssueError::Csr(_)
        | IssueError::Client(_)
        | IssueError::Failed { .. }
        | IssueError::BadResult { .. } => Code::Internal,
    };
    warn!(error = %error, "failed to issue a certificate");
    Status::new(code, error.to_string())
}

impl From<InvalidRequest> for Status {
    fn from(error: InvalidRequest) -> Self {
        Status::invalid_argument(error.to_string())
    }
}
