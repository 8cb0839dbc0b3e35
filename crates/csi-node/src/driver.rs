//! The node driver's state: which volumes are published, their certificates, and renewal.
//!
//! Each volume has a slot whose async lock serialises its publish, renewal, trust-bundle
//! rewrite and unpublish. What must survive a restart is written to the state directory
//! before any certificate is requested; the certificate itself is read back from the volume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nico_csr::{KeyAlgorithm, PrivateKey};
use nico_k8s_types::IssuerRef;
use nico_runtime::RoleContext;
use nico_spiffe_id::SpiffeId;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{Instrument as _, debug, error, info, warn};

use crate::config::{RequestIdentity, Settings};
use crate::files::{self, VolumeFiles};
use crate::issuance::{Issuance, IssueError, IssueParams, Issued};
use crate::layout::Layout;
use crate::renewal::{RenewalQueue, renewal_delay, retry_delay};
use crate::request::{InvalidRequest, PodInfo, PodToken, PublishRequest, RequestRules};
use crate::result::BACKDATE_ALLOWANCE;
use crate::sources::{self, TrustBundle};
use crate::state::{StateDir, VolumeRecord};
use crate::telemetry::{Metrics, Outcome, PodEvents};

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
    layout: Layout,
    state: StateDir,
    volumes: Mutex<HashMap<String, Arc<Slot>>>,
    renewals: RenewalQueue,
    metrics: Metrics,
    events: PodEvents,
    bundle: TrustBundle,
}

/// One volume. The async lock serialises everything done to it.
#[derive(Debug, Default)]
struct Slot {
    state: tokio::sync::Mutex<Option<Volume>>,
}

#[derive(Debug)]
struct Volume {
    record: VolumeRecord,
    pod: PodInfo,
    spiffe_id: SpiffeId,
    key_algorithm: KeyAlgorithm,
    token: Option<PodToken>,
    /// The certificate in the volume; `None` while it has none that is valid.
    certificate: Option<Certificate>,
    failures: u32,
}

#[derive(Clone, Debug)]
struct Certificate {
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// A published volume, as reported to callers (the dev environment prints these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeReport {
    /// The CSI volume id.
    pub volume_id: String,
    /// Where kubelet mounts the volume.
    pub target_path: PathBuf,
    /// The SPIFFE ID in the certificate.
    pub spiffe_id: String,
    /// Serial number of the current certificate, lower-case hex; empty while there is none.
    pub serial: String,
    /// When the current certificate expires.
    pub not_after: Option<OffsetDateTime>,
}

/// Why the driver did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The kube client could not be built.
    #[error(transparent)]
    Access(#[from] nico_runtime::KubeAccessError),
}

impl Driver {
    /// Starts the driver: reloads the volumes recorded in the state directory, then runs the
    /// shared request watch, the renewal loop and the trust-bundle follower until shutdown.
    pub fn start(settings: Settings, ctx: &RoleContext) -> Result<Self, StartError> {
        let settings = Arc::new(settings);
        let shutdown = ctx.shutdown.clone();
        let client = ctx.access.client()?;
        let issuer: Arc<RwLock<IssuerRef>> = match &settings.issuer_config_map {
            Some(map) => sources::follow_issuer_override(
                client.clone(),
                map,
                settings.issuer.clone(),
                shutdown.clone(),
            ),
            None => Arc::new(RwLock::new(settings.issuer.clone())),
        };
        let bundle = match (
            &settings.trust_bundle.file,
            &settings.trust_bundle.config_map,
        ) {
            (Some(path), _) => {
                TrustBundle::follow_file(path.clone(), sources::FILE_POLL, shutdown.clone())
            }
            (None, Some(key)) => {
                TrustBundle::follow_config_map(client.clone(), key, shutdown.clone())
            }
            (None, None) => TrustBundle::from_issuer(),
        };
        let issuance = Issuance::start(
            settings.clone(),
            ctx.access.clone(),
            issuer,
            shutdown.clone(),
        )?;
        let state = StateDir::new(&settings.state_dir);
        let layout = if settings.mount {
            Layout::Mounted(state.clone())
        } else {
            Layout::Direct
        };
        let driver = Self {
            inner: Arc::new(Inner {
                metrics: Metrics::register(&ctx.telemetry),
                events: PodEvents::new(client, &settings.node_id),
                settings,
                issuance,
                layout,
                state,
                volumes: Mutex::default(),
                renewals: RenewalQueue::default(),
                bundle,
            }),
        };
        driver.reload();
        let ready = ctx.telemetry.readiness().register("csi-node");
        tokio::spawn({
            let driver = driver.clone();
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    () = driver.inner.issuance.wait_until_ready() => ready.set(true),
                    () = shutdown.cancelled() => {}
                }
            }
        });
        tokio::spawn(driver.clone().renewal_loop(shutdown.clone()));
        tokio::spawn(driver.clone().retry_on_reconnect(shutdown.clone()));
        if driver.inner.bundle.configured() {
            tokio::spawn(driver.clone().bundle_loop(shutdown));
        }
        Ok(driver)
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The issuer new requests name: the configured one, or the runtime override.
    pub fn current_issuer(&self) -> IssuerRef {
        self.inner.issuance.issuer()
    }

    /// Whether the driver can serve publishes (its watch of requests is established).
    pub fn is_ready(&self) -> bool {
        self.inner.issuance.is_ready()
    }

    /// What request parsing needs from the settings.
    pub(crate) fn request_rules(&self) -> RequestRules<'_> {
        let settings = &self.inner.settings;
        RequestRules {
            token_audience: &settings.token_audience,
            token_required: settings.request_identity == RequestIdentity::Pod,
            target_roots: &settings.target_roots,
            default_key_algorithm: settings.key_algorithm,
            allowed_key_algorithms: &settings.allowed_key_algorithms,
        }
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

    /// Rebuilds the volume table from the state directory after a (re)start: each volume's
    /// storage and mount are re-established, its certificate is read back from the volume,
    /// and its renewal is scheduled from that certificate (at once when it is missing or due).
    fn reload(&self) {
        let (records, broken) = self.inner.state.load_all();
        for broken in broken {
            error!(error = %broken, "volume state unreadable; the volume is left to kubelet");
        }
        for record in records {
            let spiffe_id = match SpiffeId::parse(&record.spiffe_id) {
                Ok(id) => id,
                Err(e) => {
                    error!(
                        volume_id = %record.volume_id,
                        error = %e,
                        "recorded SPIFFE ID unusable"
                    );
                    continue;
                }
            };
            let Ok(key_algorithm) = record.key_algorithm.parse::<KeyAlgorithm>() else {
                error!(volume_id = %record.volume_id, "recorded key algorithm unknown");
                continue;
            };
            if let Err(e) = self
                .inner
                .layout
                .prepare(&record.volume_id, &record.target_path)
            {
                warn!(
                    volume_id = %record.volume_id,
                    error = %e,
                    "failed to restore the volume's mounts; kubelet's next publish retries"
                );
            }
            let data_dir = self
                .inner
                .layout
                .data_dir(&record.volume_id, &record.target_path);
            let certificate = read_certificate(&data_dir, &self.inner.settings, &spiffe_id);
            let volume = Volume {
                pod: (&record.pod).into(),
                spiffe_id,
                key_algorithm,
                token: None,
                certificate,
                failures: 0,
                record,
            };
            self.schedule(&volume, volume.certificate.is_none());
            let id = volume.record.volume_id.clone();
            debug!(
                volume_id = %id,
                has_certificate = volume.certificate.is_some(),
                "volume reloaded"
            );
            let slot = Arc::new(Slot {
                state: tokio::sync::Mutex::new(Some(volume)),
            });
            self.lock_volumes().insert(id, slot);
        }
        let count = self.lock_volumes().len();
        self.inner.metrics.set_volumes(count);
        if count > 0 {
            info!(volumes = count, "volumes reloaded from the state directory");
        }
    }

    /// Publishes a volume. A volume that already has a valid certificate only takes the fresh
    /// token (kubelet republishes periodically); otherwise a certificate is issued now.
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
            let same = volume.record.target_path == request.target_path
                && volume.pod == request.pod
                && volume.record.fs_group == request.fs_group
                && volume.key_algorithm == request.key_algorithm;
            if !same {
                return Err(Status::already_exists(format!(
                    "volume {} is already published at {} for pod {}/{} with other arguments",
                    request.volume_id,
                    volume.record.target_path.display(),
                    volume.pod.namespace,
                    volume.pod.name,
                )));
            }
            if request.token.is_some() {
                volume.token = request.token;
            }
            self.inner
                .layout
                .prepare(&request.volume_id, &request.target_path)
                .map_err(|e| internal_io("prepare the volume", &request.target_path, &e))?;
            let now = OffsetDateTime::now_utc();
            if let Some(certificate) = &volume.certificate
                && certificate.not_after > now
            {
                // A renewal that waited for a token can go now.
                if volume.failures > 0 {
                    self.inner
                        .renewals
                        .schedule(&request.volume_id, tokio::time::Instant::now());
                }
                return Ok(());
            }
            return self.issue_into(volume).await;
        }

        let record = VolumeRecord::new(
            &request.volume_id,
            &request.target_path,
            pod,
            spiffe_id.as_str(),
            request.fs_group,
            request.key_algorithm,
        );
        let mut volume = Volume {
            record,
            pod: request.pod.clone(),
            spiffe_id,
            key_algorithm: request.key_algorithm,
            token: request.token,
            certificate: None,
            failures: 0,
        };
        let prepared = self
            .inner
            .layout
            .prepare(&request.volume_id, &request.target_path)
            .map_err(|e| internal_io("prepare the volume", &request.target_path, &e))
            .and_then(|()| {
                self.inner.state.save(&volume.record).map_err(|e| {
                    internal_io("record the volume in", &self.inner.settings.state_dir, &e)
                })
            });
        let issued = match prepared {
            Ok(()) => self.issue_into(&mut volume).await,
            Err(status) => Err(status),
        };
        match issued {
            Ok(()) => {
                *state = Some(volume);
                drop(state);
                self.inner.metrics.set_volumes(self.lock_volumes().len());
                Ok(())
            }
            Err(status) => {
                // Leave nothing behind: no mount, no record, no half-written files.
                self.forget_storage(&request.volume_id, &request.target_path);
                drop(state);
                self.forget_if_empty(&request.volume_id, &slot);
                Err(status)
            }
        }
    }

    /// Unpublishes a volume: stops renewing it and removes its mount, files, state and
    /// requests. An unknown volume is not an error (kubelet retries unpublish after restarts).
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
            namespace = Some(volume.pod.namespace.clone());
        }
        self.inner
            .layout
            .teardown(volume_id, target_path, &self.inner.settings.files)
            .map_err(|e| internal_io("tear down", target_path, &e))?;
        self.inner
            .state
            .remove(volume_id)
            .map_err(|e| internal_io("remove the state of", target_path, &e))?;
        self.inner.metrics.forget(volume_id);
        self.inner.metrics.set_volumes(self.lock_volumes().len());
        if let Some(namespace) = namespace {
            self.inner
                .issuance
                .delete_requests(&namespace, volume_id, None)
                .await;
        }
        info!(volume_id, "volume unpublished");
        Ok(())
    }

    /// Issues a certificate for the volume and writes it; on failure the volume keeps what it
    /// had and the failure is counted, logged and reported on the pod.
    async fn issue_into(&self, volume: &mut Volume) -> Result<(), Status> {
        let started = Instant::now();
        let params = IssueParams {
            volume_id: &volume.record.volume_id,
            pod: &volume.pod,
            token: volume.token.as_ref(),
            id: &volume.spiffe_id,
            key_algorithm: volume.key_algorithm,
        };
        let issued = match self.inner.issuance.issue(params).await {
            Ok(issued) => issued,
            Err(error) => {
                volume.failures += 1;
                let outcome = outcome_of(&error);
                self.inner
                    .metrics
                    .attempt(outcome, started.elapsed().as_secs_f64());
                if outcome != Outcome::NoToken {
                    self.inner
                        .events
                        .warn(&volume.pod, "CertificateIssuanceFailed", error.to_string())
                        .await;
                }
                return Err(issue_status(&error));
            }
        };
        let ca = match self.inner.bundle.get() {
            Some(bundle) => bundle.as_slice().to_vec(),
            None => issued.chain.ca_pem.clone().into_bytes(),
        };
        if let Err(status) = self.write(
            &volume.record,
            &issued.key,
            issued.chain.certificate_chain_pem.as_bytes(),
            &ca,
        ) {
            volume.failures += 1;
            self.inner
                .metrics
                .attempt(Outcome::Error, started.elapsed().as_secs_f64());
            // A full or read-only volume is the node's problem, but the pod's owner is the
            // one who sees the certificate go stale: tell them which directory failed.
            self.inner
                .events
                .warn(
                    &volume.pod,
                    "CertificateWriteFailed",
                    status.message().to_owned(),
                )
                .await;
            return Err(status);
        }
        self.inner
            .metrics
            .attempt(Outcome::Issued, started.elapsed().as_secs_f64());
        self.note_shortened(volume, &issued).await;
        volume.certificate = Some(Certificate {
            serial: issued.chain.serial.clone(),
            not_before: issued.chain.not_before,
            not_after: issued.chain.not_after,
        });
        volume.failures = 0;
        self.schedule(volume, false);
        info!(
            volume_id = %volume.record.volume_id,
            spiffe_id = %volume.spiffe_id,
            serial = %issued.chain.serial,
            not_after = %issued.chain.not_after,
            request = %issued.request_name,
            "certificate written"
        );
        Ok(())
    }

    fn write(
        &self,
        record: &VolumeRecord,
        key: &PrivateKey,
        chain: &[u8],
        ca: &[u8],
    ) -> Result<(), Status> {
        let key_pem = key.pkcs8_pem();
        let content = VolumeFiles {
            certificate_chain: chain,
            key: key_pem.as_bytes(),
            ca,
        };
        let dir = self
            .inner
            .layout
            .data_dir(&record.volume_id, &record.target_path);
        files::write_atomically(&dir, &self.inner.settings.files, &content, record.fs_group)
            .map_err(|e| internal_io("write files into", &dir, &e))
    }

    /// A certificate clearly shorter than requested is accepted (renewal follows its real
    /// lifetime, so no storm follows), but the operator hears about it.
    async fn note_shortened(&self, volume: &Volume, issued: &Issued) {
        let lifetime = (issued.chain.not_after - issued.chain.not_before).whole_seconds();
        let requested = i64::try_from(issued.requested.as_secs()).unwrap_or(i64::MAX);
        let slack = i64::try_from(BACKDATE_ALLOWANCE.as_secs()).unwrap_or(0);
        if lifetime + slack < requested {
            let issuer = self.inner.issuance.issuer();
            warn!(
                volume_id = %volume.record.volume_id,
                issued_secs = lifetime,
                requested_secs = requested,
                %issuer,
                "issuer shortened the certificate lifetime"
            );
            let note = format!(
                "issuer {issuer} returned a certificate living {lifetime}s instead of the \
                 {requested}s requested; it is renewed at two thirds of its real lifetime"
            );
            self.inner
                .events
                .warn(&volume.pod, "CertificateLifetimeShortened", note)
                .await;
        }
    }

    /// Schedules the next renewal from the volume's certificate, or at once.
    fn schedule(&self, volume: &Volume, now: bool) {
        let id = &volume.record.volume_id;
        let current = OffsetDateTime::now_utc();
        let delay = match (&volume.certificate, now) {
            (Some(c), false) => renewal_delay(c.not_before, c.not_after, current),
            _ => Duration::ZERO,
        };
        self.inner
            .renewals
            .schedule(id, tokio::time::Instant::now() + delay);
        if let Some(c) = &volume.certificate {
            self.inner
                .metrics
                .set_schedule(id, c.not_after, current + delay);
        }
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
        match self.issue_into(volume).await {
            Ok(()) => {}
            Err(status) => {
                let delay = retry_delay(volume.failures);
                let at = tokio::time::Instant::now() + delay;
                self.inner.renewals.schedule(volume_id, at);
                warn!(
                    volume_id,
                    failures = volume.failures,
                    retry_in = ?delay,
                    not_after = ?volume.certificate.as_ref().map(|c| c.not_after),
                    error = status.message(),
                    "failed to renew the certificate; the volume keeps its current one"
                );
            }
        }
    }

    /// Retries every failed renewal at once when the API server is reachable again (the
    /// shared watch reconnected), rather than when each one's backoff ends: after an outage
    /// that is up to five minutes sooner.
    async fn retry_on_reconnect(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = self.inner.issuance.reconnected() => {}
                () = shutdown.cancelled() => return,
            }
            let slots: Vec<(String, Arc<Slot>)> = self
                .lock_volumes()
                .iter()
                .map(|(id, slot)| (id.clone(), slot.clone()))
                .collect();
            let mut retried = 0;
            for (volume_id, slot) in slots {
                // A volume busy with a publish or a renewal is being worked on already.
                let Ok(state) = slot.state.try_lock() else {
                    continue;
                };
                if state.as_ref().is_some_and(|volume| volume.failures > 0) {
                    self.inner
                        .renewals
                        .schedule(&volume_id, tokio::time::Instant::now());
                    retried += 1;
                }
            }
            if retried > 0 {
                info!(
                    volumes = retried,
                    "the API server is reachable again; retrying failed renewals now"
                );
            }
        }
    }

    /// Rewrites every volume's `ca.crt` when the configured trust bundle changes.
    async fn bundle_loop(self, shutdown: CancellationToken) {
        let mut bundle = self.inner.bundle.clone();
        loop {
            tokio::select! {
                changed = bundle.changed() => if !changed { return },
                () = shutdown.cancelled() => return,
            }
            let Some(ca) = bundle.get() else { continue };
            let slots: Vec<Arc<Slot>> = self.lock_volumes().values().cloned().collect();
            let mut rewritten = 0;
            for slot in slots {
                let state = slot.state.lock().await;
                let Some(volume) = state.as_ref() else {
                    continue;
                };
                let dir = self
                    .inner
                    .layout
                    .data_dir(&volume.record.volume_id, &volume.record.target_path);
                let names = &self.inner.settings.files;
                let Ok(Some(current)) = files::read_current(&dir, names) else {
                    continue;
                };
                let content = VolumeFiles {
                    certificate_chain: &current.certificate_chain,
                    key: &current.key,
                    ca: ca.as_slice(),
                };
                match files::write_atomically(&dir, names, &content, volume.record.fs_group) {
                    Ok(()) => rewritten += 1,
                    Err(e) => {
                        warn!(
                            volume_id = %volume.record.volume_id,
                            error = %e,
                            "failed to rewrite ca.crt"
                        )
                    }
                }
            }
            info!(
                volumes = rewritten,
                "trust bundle rewritten into every volume"
            );
        }
    }

    fn forget_storage(&self, volume_id: &str, target: &Path) {
        if let Err(e) = self
            .inner
            .layout
            .teardown(volume_id, target, &self.inner.settings.files)
        {
            warn!(volume_id, error = %e, "failed to clean up after a failed publish");
        }
        if let Err(e) = self.inner.state.remove(volume_id) {
            warn!(volume_id, error = %e, "failed to remove the state of a failed publish");
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

/// Reads back a volume's certificate after a restart. Anything short of a complete, matching,
/// unexpired pair for the right ID counts as no certificate, so it is issued again.
fn read_certificate(dir: &Path, settings: &Settings, id: &SpiffeId) -> Option<Certificate> {
    let current = files::read_current(dir, &settings.files).ok()??;
    let key = PrivateKey::from_pkcs8_pem(std::str::from_utf8(&current.key).ok()?).ok()?;
    let ders = nico_csr::pem_to_ders(&current.certificate_chain).ok()?;
    let leaf = nico_csr::parse_certificate(ders.first()?).ok()?;
    let matches = nico_csr::key_matches_certificate(&key, leaf.der()).ok()?;
    let right_id = leaf.uri_sans().eq([id.as_str()]);
    let valid = leaf.not_after() > OffsetDateTime::now_utc();
    (matches && right_id && valid).then(|| Certificate {
        serial: leaf.serial_hex().to_owned(),
        not_before: leaf.not_before(),
        not_after: leaf.not_after(),
    })
}

impl Volume {
    fn report(&self) -> VolumeReport {
        VolumeReport {
            volume_id: self.record.volume_id.clone(),
            target_path: self.record.target_path.clone(),
            spiffe_id: self.spiffe_id.to_string(),
            serial: self
                .certificate
                .as_ref()
                .map(|c| c.serial.clone())
                .unwrap_or_default(),
            not_after: self.certificate.as_ref().map(|c| c.not_after),
        }
    }
}

fn outcome_of(error: &IssueError) -> Outcome {
    match error {
        IssueError::Denied { .. } => Outcome::Denied,
        IssueError::Failed { .. } => Outcome::Failed,
        IssueError::TimedOut { .. } => Outcome::TimedOut,
        IssueError::BadResult { .. } => Outcome::InvalidResult,
        IssueError::Forbidden { .. } | IssueError::DriverForbidden { .. } => Outcome::Forbidden,
        IssueError::NoToken { .. } => Outcome::NoToken,
        IssueError::Key(_)
        | IssueError::KeyTask
        | IssueError::Csr(_)
        | IssueError::Client(_)
        | IssueError::Unauthenticated
        | IssueError::Create(_)
        | IssueError::Unreachable { .. }
        | IssueError::Deleted { .. } => Outcome::Error,
    }
}

/// The gRPC status kubelet (and the pod's events) get for a failed issuance.
fn issue_status(error: &IssueError) -> Status {
    let code = match error {
        IssueError::Denied { .. }
        | IssueError::Forbidden { .. }
        | IssueError::DriverForbidden { .. } => Code::PermissionDenied,
        IssueError::Unauthenticated | IssueError::NoToken { .. } => Code::Unauthenticated,
        IssueError::TimedOut { .. } => Code::DeadlineExceeded,
        IssueError::Create(_) | IssueError::Unreachable { .. } | IssueError::Deleted { .. } => {
            Code::Unavailable
        }
        IssueError::Key(_)
        | IssueError::KeyTask
        | IssueError::Csr(_)
        | IssueError::Client(_)
        | IssueError::Failed { .. }
        | IssueError::BadResult { .. } => Code::Internal,
    };
    warn!(error = %error, "failed to issue a certificate");
    Status::new(code, error.to_string())
}

fn internal_io(action: &str, path: &Path, error: &std::io::Error) -> Status {
    error!(action, path = %path.display(), %error, "volume storage failed");
    Status::internal(format!("failed to {action} {}: {error}", path.display()))
}

impl From<InvalidRequest> for Status {
    fn from(error: InvalidRequest) -> Self {
        Status::invalid_argument(error.to_string())
    }
}
