//! Getting a certificate for a volume: key and CSR on this node, a CertificateRequest created
//! as the pod, the answer awaited through one shared watch, and checked before use.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use nico_csr::{KeyAlgorithm, PrivateKey};
use nico_k8s_types::{
    CertificateRequest, CertificateRequestSpec, IDENTITY_ANNOTATION, IssuerRef,
    POD_NAME_ANNOTATION, POD_UID_ANNOTATION, RequestState, SPIFFE_USAGES,
};
use nico_runtime::{KubeAccess, KubeAccessError};
use nico_spiffe_id::SpiffeId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{RequestIdentity, Settings};
use crate::request::{PodInfo, PodToken};
use crate::result::{CheckedChain, Lifetimes, ResultError, check_issued};

/// Label with a hash of the node that created a request; the driver watches only these.
pub(crate) const NODE_LABEL: &str = "identity.nico.io/node-hash";
/// Label with a hash of the volume a request is for.
pub(crate) const VOLUME_LABEL: &str = "identity.nico.io/volume-hash";

/// A key and the checked chain signed for it.
pub(crate) struct Issued {
    pub(crate) key: PrivateKey,
    pub(crate) chain: CheckedChain,
    pub(crate) request_name: String,
    /// The lifetime asked for; the chain may be shorter (never longer).
    pub(crate) requested: Duration,
}

/// What one issuance is for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IssueParams<'a> {
    pub(crate) volume_id: &'a str,
    pub(crate) pod: &'a PodInfo,
    pub(crate) token: Option<&'a PodToken>,
    pub(crate) id: &'a SpiffeId,
    pub(crate) key_algorithm: KeyAlgorithm,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("serial", &self.chain.serial)
            .field("request_name", &self.request_name)
            .finish_non_exhaustive()
    }
}

/// Why a volume did not get a certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueError {
    #[error("failed to generate a key: {0}")]
    Key(#[source] nico_csr::KeyError),
    #[error("the key generation task ended without a key")]
    KeyTask,
    #[error("failed to build the CSR: {0}")]
    Csr(#[source] nico_csr::BuildCsrError),
    #[error("failed to build a client for the pod's token: {0}")]
    Client(#[source] KubeAccessError),
    #[error(
        "service account {namespace}/{service_account} may not create certificaterequests in \
         namespace {namespace}: grant it `create` on certificaterequests.cert-manager.io"
    )]
    Forbidden {
        namespace: String,
        service_account: String,
    },
    #[error("the API server rejected the pod's service-account token")]
    Unauthenticated,
    #[error(
        "no valid token for pod {namespace}/{pod}: waiting for kubelet to republish the volume \
         (check the CSIDriver's tokenRequests and requiresRepublish)"
    )]
    NoToken { namespace: String, pod: String },
    #[error(
        "the driver's service account may not create certificaterequests in namespace \
         {namespace}: grant it `create` on certificaterequests.cert-manager.io"
    )]
    DriverForbidden { namespace: String },
    #[error("failed to create a certificaterequest: {0}")]
    Create(#[source] kube::Error),
    #[error("the API server did not answer within {waited:?}")]
    Unreachable { waited: Duration },
    #[error("certificaterequest {namespace}/{name} was denied: {message}")]
    Denied {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("certificaterequest {namespace}/{name} failed: {message}")]
    Failed {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("certificaterequest {namespace}/{name} was deleted before it was issued")]
    Deleted { namespace: String, name: String },
    #[error("certificaterequest {namespace}/{name} was not issued within {waited:?}")]
    TimedOut {
        namespace: String,
        name: String,
        waited: Duration,
    },
    #[error(
        "certificaterequest {namespace}/{name} was issued, but the result was refused: {reason}"
    )]
    BadResult {
        namespace: String,
        name: String,
        reason: ResultError,
    },
}

/// Creates requests and waits for their answers.
#[derive(Clone)]
pub(crate) struct Issuance {
    settings: Arc<Settings>,
    access: KubeAccess,
    client: kube::Client,
    requests: Store<CertificateRequest>,
    changed: Arc<Notify>,
    /// Whether the shared watch is connected (its last event was not an error).
    watching: Arc<AtomicBool>,
    /// Notified each time the shared watch connects after having been down.
    reconnected: Arc<Notify>,
    node_hash: String,
    issuer: Arc<RwLock<IssuerRef>>,
    api_calls: Arc<tokio::sync::Semaphore>,
}

/// How often a request being waited for is read directly while the shared watch is down:
/// the watch reconnects with backoff of up to 30 s, and an answer that arrives meanwhile
/// (the API server back, the issuer done) should not wait for it.
const READ_WHILE_UNWATCHED: Duration = Duration::from_secs(2);

/// Requests to the API server made at once on behalf of pods.
const CONCURRENT_API_CALLS: usize = 8;

impl std::fmt::Debug for Issuance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuance")
            .field("node_hash", &self.node_hash)
            .finish_non_exhaustive()
    }
}

impl Issuance {
    /// Starts the shared watch on this node's requests. It runs until `shutdown` fires.
    pub(crate) fn start(
        settings: Arc<Settings>,
        access: KubeAccess,
        issuer: Arc<RwLock<IssuerRef>>,
        shutdown: CancellationToken,
    ) -> Result<Self, KubeAccessError> {
        let client = access.client()?;
        let node_hash = label_hash(&settings.node_id);
        let (requests, writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let api: Api<CertificateRequest> = Api::all(client.clone());
        let config = watcher::Config::default().labels(&format!("{NODE_LABEL}={node_hash}"));
        let stream = reflector::reflector(
            writer,
            watcher(api, config).backoff(WatchBackoff::default()),
        );
        let notify = changed.clone();
        let watching = Arc::new(AtomicBool::new(false));
        let connected = watching.clone();
        let reconnected = Arc::new(Notify::new());
        let notify_reconnected = reconnected.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    () = shutdown.cancelled() => break,
                };
                match event {
                    Some(Ok(event)) => {
                        // A relisting watch fills the store only when the listing is done;
                        // until then the store is what it was before the outage.
                        let current =
                            !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
                        if current && !connected.swap(true, Ordering::Relaxed) {
                            notify_reconnected.notify_one();
                        }
                        notify.notify_waiters();
                    }
                    Some(Err(error)) => {
                        connected.store(false, Ordering::Relaxed);
                        warn!(%error, "certificaterequest watch failed; retrying with backoff");
                    }
                    None => break,
                }
            }
        });
        Ok(Self {
            settings,
            access,
            client,
            requests,
            changed,
            watching,
            reconnected,
            node_hash,
            issuer,
            api_calls: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_API_CALLS)),
        })
    }

    /// Resolves once the shared watch has listed the existing requests.
    pub(crate) async fn wait_until_ready(&self) {
        if self.requests.wait_until_ready().await.is_err() {
            // The watch task ended (shutdown): never ready again.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when the shared watch connects again after having been down (the API server
    /// is reachable again).
    pub(crate) async fn reconnected(&self) {
        self.reconnected.notified().await;
    }

    /// Whether the shared watch has listed the existing requests.
    pub(crate) fn is_ready(&self) -> bool {
        self.requests
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|ready| ready.is_ok())
    }

    /// The issuer requests are sent to now (the configured one, or the runtime override).
    pub(crate) fn issuer(&self) -> IssuerRef {
        self.issuer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Generates a key, requests a certificate for the volume (as the pod, or as the driver
    /// naming the pod), and waits for it. Every attempt starts with a fresh key.
    pub(crate) async fn issue(&self, params: IssueParams<'_>) -> Result<Issued, IssueError> {
        let IssueParams {
            volume_id,
            pod,
            token,
            id,
            key_algorithm,
        } = params;
        let key = generate_key(key_algorithm).await?;
        let csr = nico_csr::build_spiffe_csr(&key, id).map_err(IssueError::Csr)?;
        let request = self.build_request(volume_id, pod, id, csr.into_bytes());
        let client = match self.settings.request_identity {
            RequestIdentity::Pod => {
                let token = token
                    .filter(|t| t.expires.is_none_or(|at| at > jiff::Timestamp::now()))
                    .ok_or_else(|| IssueError::NoToken {
                        namespace: pod.namespace.clone(),
                        pod: pod.name.clone(),
                    })?;
                self.access
                    .client_with_token(&token.token)
                    .map_err(IssueError::Client)?
            }
            RequestIdentity::Driver => self.client.clone(),
        };
        let deadline = tokio::time::Instant::now() + self.settings.publish_timeout;
        let api = Api::<CertificateRequest>::namespaced(client, &pod.namespace);
        let params = PostParams::default();
        let create = async {
            // A node-wide burst (every pod of a node at boot) would otherwise open a connection
            // per volume at once; a few at a time is as fast and keeps the driver small.
            let _permit = self.api_calls.acquire().await;
            api.create(&params, &request).await
        };
        let created = tokio::time::timeout_at(deadline, create)
            .await
            .map_err(|_| IssueError::Unreachable {
                waited: self.settings.publish_timeout,
            })?
            .map_err(|error| match &error {
                kube::Error::Api(status) if status.code == 403 => {
                    match self.settings.request_identity {
                        RequestIdentity::Pod => IssueError::Forbidden {
                            namespace: pod.namespace.clone(),
                            service_account: pod.service_account.clone(),
                        },
                        RequestIdentity::Driver => IssueError::DriverForbidden {
                            namespace: pod.namespace.clone(),
                        },
                    }
                }
                kube::Error::Api(status) if status.code == 401 => IssueError::Unauthenticated,
                _ => IssueError::Create(error),
            })?;
        let name = created.metadata.name.clone().unwrap_or_default();
        info!(
            namespace = %pod.namespace,
            request = %name,
            spiffe_id = %id,
            "certificaterequest created"
        );
        self.delete_requests(&pod.namespace, volume_id, Some(&name))
            .await;

        let cr = match self.wait_for_answer(&pod.namespace, &name, deadline).await {
            Ok(cr) => cr,
            Err(error) => {
                if matches!(error, IssueError::TimedOut { .. }) {
                    // Nobody waits for this request any more and its key is gone: left in
                    // place, an issuer that recovers later would sign it for nothing.
                    self.abandon(&pod.namespace, &name).await;
                }
                return Err(error);
            }
        };
        let status = cr.status.clone().unwrap_or_default();
        let certificate = status.certificate.unwrap_or_default();
        let ca = status.ca.unwrap_or_default();
        let requested = self.settings.duration;
        let chain = check_issued(
            &key,
            id,
            Lifetimes {
                requested,
                minimum: self.settings.min_lifetime,
            },
            &certificate,
            &ca,
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|reason| IssueError::BadResult {
            namespace: pod.namespace.clone(),
            name: name.clone(),
            reason,
        })?;
        Ok(Issued {
            key,
            chain,
            request_name: name,
            requested,
        })
    }

    fn build_request(
        &self,
        volume_id: &str,
        pod: &PodInfo,
        id: &SpiffeId,
        csr: Vec<u8>,
    ) -> CertificateRequest {
        // Keep generated names well inside the 253-character limit and DNS-shaped.
        let prefix: String = pod
            .name
            .chars()
            .take(40)
            .map(|c| if c == '.' { '-' } else { c })
            .collect();
        let labels = BTreeMap::from([
            (NODE_LABEL.to_owned(), self.node_hash.clone()),
            (VOLUME_LABEL.to_owned(), label_hash(volume_id)),
        ]);
        CertificateRequest {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", prefix.trim_end_matches('-'))),
                namespace: Some(pod.namespace.clone()),
                labels: Some(labels),
                annotations: Some(self.annotations(pod, id)),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: CertificateRequestSpec {
                request: csr,
                issuer_ref: self.issuer(),
                duration: Some(go_duration(self.settings.duration)),
                usages: Some(SPIFFE_USAGES.iter().map(|u| (*u).to_owned()).collect()),
                is_ca: Some(false),
                ..CertificateRequestSpec::default()
            },
            status: None,
        }
    }

    fn annotations(&self, pod: &PodInfo, id: &SpiffeId) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::from([(IDENTITY_ANNOTATION.to_owned(), id.to_string())]);
        if self.settings.request_identity == RequestIdentity::Driver {
            annotations.insert(POD_NAME_ANNOTATION.to_owned(), pod.name.clone());
            annotations.insert(POD_UID_ANNOTATION.to_owned(), pod.uid.clone());
        }
        annotations
    }

    /// Waits until the request is issued, denied, failed or gone, or the publish bound passes.
    async fn wait_for_answer(
        &self,
        namespace: &str,
        name: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<CertificateRequest>, IssueError> {
        let key = ObjectRef::<CertificateRequest>::new(name).within(namespace);
        let waited = self.settings.publish_timeout;
        let mut seen = false;
        loop {
            // Register interest before looking, so a change between the two is not missed.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let watched = self.watching.load(Ordering::Relaxed);
            let found = match self.requests.get(&key) {
                Some(cr) if watched => Look::Found(Some(cr)),
                // Missing from the store after it was seen (perhaps read directly while the
                // watch was down): only the API server can say it is gone.
                None if watched && !seen => Look::Found(None),
                _ => self.read(namespace, name).await,
            };
            match found {
                Look::Found(Some(cr)) => {
                    seen = true;
                    match cr.state() {
                        RequestState::Issued => return Ok(cr),
                        RequestState::Denied(message) => {
                            return Err(IssueError::Denied {
                                namespace: namespace.into(),
                                name: name.into(),
                                message,
                            });
                        }
                        RequestState::Failed(message) => {
                            return Err(IssueError::Failed {
                                namespace: namespace.into(),
                                name: name.into(),
                                message,
                            });
                        }
                        RequestState::Pending | RequestState::Approved => {}
                    }
                }
                Look::Found(None) if seen => {
                    return Err(IssueError::Deleted {
                        namespace: namespace.into(),
                        name: name.into(),
                    });
                }
                Look::Found(None) | Look::Unknown => {}
            }
            let wake = if watched {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + READ_WHILE_UNWATCHED)
            };
            let woken = tokio::time::timeout_at(wake, notified).await.is_ok();
            if !woken && tokio::time::Instant::now() >= deadline {
                return Err(IssueError::TimedOut {
                    namespace: namespace.into(),
                    name: name.into(),
                    waited,
                });
            }
        }
    }

    /// Reads a request from the API server (while the shared watch is down, its copy may be
    /// stale).
    async fn read(&self, namespace: &str, name: &str) -> Look {
        let api: Api<CertificateRequest> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(found) => Look::Found(found.map(Arc::new)),
            Err(error) => {
                debug!(namespace, request = %name, %error, "failed to read certificaterequest");
                Look::Unknown
            }
        }
    }

    /// Deletes a request nobody waits for. Best effort: a failure is logged and the volume's
    /// next issuance deletes it with the other old ones.
    async fn abandon(&self, namespace: &str, name: &str) {
        let api: Api<CertificateRequest> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => debug!(namespace, request = %name, "abandoned certificaterequest deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                warn!(
                    namespace,
                    request = %name,
                    %error,
                    "failed to delete abandoned certificaterequest"
                );
            }
        }
    }

    /// Deletes the requests of a volume except `keep`. Best effort: a failure is logged and
    /// the next issuance tries again.
    pub(crate) async fn delete_requests(
        &self,
        namespace: &str,
        volume_id: &str,
        keep: Option<&str>,
    ) {
        let api: Api<CertificateRequest> = Api::namespaced(self.client.clone(), namespace);
        // The shared watch already holds every request of this node: no list call needed.
        let volume_hash = label_hash(volume_id);
        let older: Vec<String> = self
            .requests
            .state()
            .iter()
            .filter(|cr| cr.metadata.namespace.as_deref() == Some(namespace))
            .filter(|cr| {
                cr.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(VOLUME_LABEL))
                    == Some(&volume_hash)
            })
            .filter_map(|cr| cr.metadata.name.clone())
            .filter(|name| Some(name.as_str()) != keep)
            .collect();
        for name in older {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => debug!(namespace, request = %name, "old certificaterequest deleted"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    warn!(
                        namespace,
                        request = %name,
                        %error,
                        "failed to delete old certificaterequest"
                    );
                }
            }
        }
    }
}

/// Reconnect delays of the shared watch: 0.8 s doubling to 10 s, with ±20 % jitter. kube's
/// default waits up to 30 s, which after an outage would hold back every answer and every
/// retried renewal that long; one watch per node every 10 s at most is still gentle on an
/// API server that is recovering.
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(800);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: WATCH_BACKOFF_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(WATCH_BACKOFF_MAX);
        Some(delay.mul_f64(0.8 + fastrand::f64() * 0.4))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_MIN;
    }
}

/// What a look at a request found.
enum Look {
    /// The request as it stands (`None`: it does not exist).
    Found(Option<Arc<CertificateRequest>>),
    /// The API server could not be asked.
    Unknown,
}

/// Generates a key. RSA generation takes up to seconds, so it runs off the async workers;
/// elliptic-curve keys take microseconds and are made in place.
async fn generate_key(algorithm: KeyAlgorithm) -> Result<PrivateKey, IssueError> {
    let slow = matches!(
        algorithm,
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096
    );
    if !slow {
        return PrivateKey::generate(algorithm).map_err(IssueError::Key);
    }
    match tokio::task::spawn_blocking(move || PrivateKey::generate(algorithm)).await {
        Ok(generated) => generated.map_err(IssueError::Key),
        Err(_) => Err(IssueError::KeyTask),
    }
}

/// A label-safe digest: 32 hex characters of SHA-256.
pub(crate) fn label_hash(value: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Go's spelling of a whole-second duration, as cert-manager writes it (`1h0m0s`).
fn go_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_spelled_like_go() {
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn the_watch_backs_off_to_ten_seconds_and_starts_over_after_a_reset() {
        use kube::runtime::utils::Backoff as _;
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(8).collect();
        for (delay, nominal) in delays
            .iter()
            .zip([0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0, 10.0])
        {
            let secs = delay.as_secs_f64();
            assert!(secs >= nominal * 0.8 && secs <= nominal * 1.2, "{delays:?}");
        }
        backoff.reset();
        assert!(backoff.next().is_some_and(|d| d <= Duration::from_secs(1)));
    }

    #[test]
    fn label_hashes_are_valid_label_values() {
        let hash = label_hash("csi-0123");
        assert_eq!(hash.len(), 32);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(hash, label_hash("csi-0124"));
    }
}
