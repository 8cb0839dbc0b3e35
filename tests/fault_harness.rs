//! The fault suite's tools: roles as their own processes with trace-level logs in files, a
//! TCP forwarder that cuts the API server off, a ledger of every CertificateRequest the
//! cluster saw, a kubelet that keeps republishing, and an independent check of a volume's
//! pair (rustls-webpki for the chain, rcgen and x509-parser for the key and the facts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use nico_identity_cli::dev::{Kubelet, PodVolume, VolumeFile};
use nico_k8s_types::CertificateRequest;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The label csi-node puts on every request with a hash of its volume.
pub const VOLUME_LABEL: &str = "identity.nico.io/volume-hash";

/// The log filter of every role process: everything, at every level.
pub const TRACE: &str = "trace";

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A role running as its own process. Dropping it kills it (by its PID).
#[derive(Debug)]
pub struct RoleProcess {
    child: Child,
}

impl RoleProcess {
    /// Starts `binary <role> --config <config>`, its stderr appended to `log`.
    pub fn spawn(binary: &Path, role: &str, config: &Path, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let child = Command::new(binary)
            .args([role, "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {role}: {e}"));
        Self { child }
    }

    /// Whether the process has ended (a role that could not start).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL: nothing of the role's own clean-up runs.
    pub fn kill(mut self) {
        self.stop();
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The configuration file of one role process.
#[derive(Debug, serde::Serialize)]
pub struct RoleFile<'a> {
    /// The kubeconfig it uses.
    pub kubeconfig: &'a Path,
    /// Its health and metrics address.
    pub health_address: String,
    /// Its log filter.
    pub log_filter: &'a str,
    /// JSON lines: no terminal colours between a field and its value.
    pub log_format: &'a str,
    /// Its Lease holder name.
    pub pod_name: &'a str,
    /// Where its Leases live.
    pub pod_namespace: &'a str,
    /// The csi-node section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csi_node: Option<&'a nico_csi_node::Config>,
    /// The issuer section, as TOML already.
    #[serde(skip)]
    pub issuer_toml: Option<String>,
}

impl RoleFile<'_> {
    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) {
        let mut text = toml::to_string(self).expect("a TOML configuration");
        if let Some(issuer) = &self.issuer_toml {
            text.push('\n');
            text.push_str(issuer);
        }
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// A TCP forwarder to `upstream` that can cut every connection and refuse new ones (the
/// client sees its connections reset), then let them through again.
#[derive(Debug)]
pub struct Cuttable {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    /// Listens on 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (flag, tasks) = (open.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("lock").push(task);
            }
        });
        Self {
            addr,
            open,
            connections,
            accept,
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

/// What the ledger knows of one CertificateRequest.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Its name.
    pub name: String,
    /// The volume hash label.
    pub volume: String,
    /// When the ledger first saw it.
    pub seen: Instant,
    /// When it first carried a certificate.
    pub signed: Option<Instant>,
    /// The serial of that certificate (lower-case hex, x509-parser's reading).
    pub serial: Option<String>,
    /// Whether its certificate was ever replaced by another (signed twice).
    pub resigned: bool,
}

/// Every CertificateRequest of a namespace the watch saw, deleted ones included.
#[derive(Debug)]
pub struct Ledger {
    entries: Arc<Mutex<BTreeMap<String, Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ledger {
    /// Starts watching `namespace` and waits until the first listing is in.
    pub async fn start(client: kube::Client, namespace: &str) -> Self {
        let entries: Arc<Mutex<BTreeMap<String, Recorded>>> = Arc::default();
        let api: Api<CertificateRequest> = Api::namespaced(client, namespace);
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .touched_objects();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let shared = entries.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut listed = Some(listed_tx);
            while let Some(event) = stream.next().await {
                if let Some(tx) = listed.take() {
                    let _ = tx.send(());
                }
                let Ok(cr) = event else { continue };
                record(&shared, &cr);
            }
        });
        // The first event (or the end of an empty listing) arrives quickly; a namespace
        // without requests yet sends nothing, so wait briefly at most.
        let _ = tokio::time::timeout(Duration::from_secs(2), listed_rx).await;
        Self { entries, task }
    }

    /// A copy of everything recorded so far.
    pub fn entries(&self) -> Vec<Recorded> {
        self.entries
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect()
    }

    /// How many requests carried a certificate.
    pub fn signed(&self) -> usize {
        self.entries().iter().filter(|e| e.signed.is_some()).count()
    }

    /// Requests whose certificate was replaced after it was first written.
    pub fn resigned(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|e| e.resigned)
            .map(|e| e.name)
            .collect()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(entries: &Mutex<BTreeMap<String, Recorded>>, cr: &CertificateRequest) {
    let uid = cr.metadata.uid.clone().unwrap_or_default();
    let serial = cr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_deref())
        .map(|pem| leaf_serial(pem).unwrap_or_else(|| "unparseable".to_owned()));
    let mut entries = entries.lock().expect("lock");
    let entry = entries.entry(uid).or_insert_with(|| Recorded {
        name: cr.metadata.name.clone().unwrap_or_default(),
        volume: cr
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(VOLUME_LABEL))
            .cloned()
            .unwrap_or_default(),
        seen: Instant::now(),
        signed: None,
        serial: None,
        resigned: false,
    });
    if let Some(serial) = serial {
        match &entry.serial {
            None => {
                entry.serial = Some(serial);
                entry.signed = Some(Instant::now());
            }
            Some(first) if *first != serial => entry.resigned = true,
            Some(_) => {}
        }
    }
}

/// The serial of the first certificate of a PEM bundle, lower-case hex without leading
/// zeros.
pub fn leaf_serial(pem: &[u8]) -> Option<String> {
    let block = pem::parse_many(pem).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents()).ok()?;
    Some(normalise_serial(&cert.raw_serial_as_string()))
}

fn normalise_serial(text: &str) -> String {
    let hex: String = text
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
}

/// A volume's pair as checked independently of the code that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The leaf's serial (normalised hex).
    pub serial: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

/// Checks the volume's files: `tls.crt` chains to `ca.crt` (rustls-webpki, now), `tls.key`
/// holds the leaf's key, the leaf names exactly `spiffe_id`. Missing files are an error.
pub fn check_pair(volume: &PodVolume, spiffe_id: &str) -> Result<Pair, String> {
    let cert_path = volume.file(VolumeFile::Certificate);
    let key_path = volume.file(VolumeFile::Key);
    // Read through the `..data` link once, as a reader in the pod does, so the two files
    // come from the same switch.
    let data =
        std::fs::canonicalize(&cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let dir = data.parent().ok_or("tls.crt has no directory")?;
    let key_name = key_path.file_name().ok_or("no key file name")?;
    let ca_name = volume.file(VolumeFile::Ca);
    let ca_name = ca_name.file_name().ok_or("no ca file name")?;
    crate::verify_with_webpki(&data, &dir.join(ca_name))?;
    let chain = crate::read_pem_certificates(&data);
    let leaf = chain.first().ok_or("tls.crt holds no certificate")?;
    let key_pem = std::fs::read_to_string(dir.join(key_name)).map_err(|e| e.to_string())?;
    let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| format!("tls.key: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    if cert.public_key().raw != spki.as_slice() {
        return Err("tls.key does not hold the key of tls.crt".to_owned());
    }
    let uris = crate::uri_sans(leaf);
    if uris != [spiffe_id] {
        return Err(format!("the leaf names {uris:?}, not {spiffe_id}"));
    }
    Ok(Pair {
        serial: normalise_serial(&cert.raw_serial_as_string()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// The outcome of one publish by [`Republisher`].
#[derive(Clone, Debug)]
pub struct Publish {
    /// The pod.
    pub pod: String,
    /// When the call returned.
    pub at: Instant,
    /// The CSI error, if any.
    pub error: Option<String>,
}

/// kubelet's periodic republish: every volume every `interval`; a volume whose last publish
/// failed (or that was never published) again after `retry`.
#[derive(Debug)]
pub struct Republisher {
    log: Arc<Mutex<Vec<Publish>>>,
    volumes: Arc<Mutex<Vec<PodVolume>>>,
    kubelet: Arc<tokio::sync::Mutex<Option<Kubelet>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Republisher {
    /// Starts republishing `volumes` through `kubelet`.
    pub fn start(
        kubelet: Kubelet,
        volumes: Vec<PodVolume>,
        interval: Duration,
        retry: Duration,
    ) -> Self {
        let log: Arc<Mutex<Vec<Publish>>> = Arc::default();
        let volumes = Arc::new(Mutex::new(volumes));
        let kubelet = Arc::new(tokio::sync::Mutex::new(Some(kubelet)));
        let task = tokio::spawn({
            let (log, volumes, kubelet) = (log.clone(), volumes.clone(), kubelet.clone());
            async move {
                let mut next: BTreeMap<String, Instant> = BTreeMap::new();
                loop {
                    let now = Instant::now();
                    let due: Vec<PodVolume> = volumes
                        .lock()
                        .expect("lock")
                        .iter()
                        .filter(|v| next.get(&v.pod_name).is_none_or(|at| *at <= now))
                        .cloned()
                        .collect();
                    for volume in due {
                        let guard = kubelet.lock().await;
                        let Some(kubelet) = guard.as_ref() else { break };
                        let result = kubelet.publish(&volume).await;
                        drop(guard);
                        let at = Instant::now();
                        let wait = if result.is_ok() { interval } else { retry };
                        next.insert(volume.pod_name.clone(), at + wait);
                        log.lock().expect("lock").push(Publish {
                            pod: volume.pod_name.clone(),
                            at,
                            error: result.err().map(|e| e.to_string()),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Self {
            log,
            volumes,
            kubelet,
            task,
        }
    }

    /// Adds a volume (published at once).
    pub fn add(&self, volume: PodVolume) {
        self.volumes.lock().expect("lock").push(volume);
    }

    /// Swaps the kubelet's connection (after the driver restarted).
    pub async fn reconnect(&self, kubelet: Kubelet) {
        *self.kubelet.lock().await = Some(kubelet);
    }

    /// Every publish so far.
    pub fn log(&self) -> Vec<Publish> {
        self.log.lock().expect("lock").clone()
    }
}

impl Drop for Republisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests of each volume hash, from a listing.
pub fn by_volume(requests: &[CertificateRequest]) -> BTreeMap<String, Vec<&CertificateRequest>> {
    let mut map: BTreeMap<String, Vec<&CertificateRequest>> = BTreeMap::new();
    for cr in requests {
        let volume = cr
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(VOLUME_LABEL))
            .cloned()
            .unwrap_or_default();
        map.entry(volume).or_default().push(cr);
    }
    map
}

/// The volume hash label csi-node gives a volume id (32 hex characters of SHA-256), computed
/// here with the `openssl` command, independently of the driver.
pub fn volume_hash(volume_id: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("openssl's stdin")
        .write_all(volume_id.as_bytes())
        .expect("write to openssl");
    let digest = child.wait_with_output().expect("openssl's output").stdout;
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Collects the secrets a test can name: every `tls.key` body fragment seen in `volumes`.
pub fn key_fragments(volumes: &[PodVolume], into: &mut BTreeSet<String>) {
    for volume in volumes {
        if let Ok(pem) = std::fs::read_to_string(volume.file(VolumeFile::Key))
            && let Some(fragment) = crate::secret_scan::pem_body_fragment(&pem)
        {
            into.insert(fragment);
        }
    }
}
