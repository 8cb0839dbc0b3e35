//! The fault suite: csi-node as its own process (trace-level logs in a file) against the dev
//! cluster while things go wrong: SIGKILL at random points of hundreds of renewals, the API
//! server cut off for a minute, the state and pod directories full or read-only, an issuer
//! that answers badly, and a day of renewals compressed into many volumes. Every test ends
//! by scanning the logs it produced for tokens, PEM blocks and base64 DER, and the node's
//! disk for tokens.
//!
//! Longer variants: `NICO_FAULTS_LONG=1` runs 2,000 renewals under SIGKILL, a 5-minute API
//! outage and a whole day of 90-second certificates (see each test). `NICO_FAULTS_SEED`
//! replays the kill schedule of an earlier run (each run prints its seed);
//! `NICO_FAULTS_KEEP_LOGS=1` keeps every test's logs (a failed test's are always kept).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, ListParams};
use nico_csi_node::csi::identity_client::IdentityClient;
use nico_identity_cli::dev::{
    DevEnvironment, DevOptions, Embedded, Kubelet, PodVolume, VolumeFile, csi_channel,
};
use nico_identity_tests::fault_harness::{
    Cuttable, Ledger, Republisher, RoleFile, RoleProcess, TRACE, by_volume, check_pair, free_port,
    key_fragments, leaf_serial, volume_hash,
};
use nico_identity_tests::secret_scan::{scan_tree, scan_tree_with, token_in_line};
use nico_identity_tests::{dev_environment_with, eventually, http_get};
use nico_k8s_types::CertificateRequest;
use tokio::time::Instant;

const SPIFFE_ID: &str = "spiffe://nico.local/demo/sa/web";

/// How long after the API server or Vault answers again every pending issuance must be
/// done: the issue's bound.
const RETURN_BOUND: Duration = Duration::from_secs(30);

fn long() -> bool {
    std::env::var_os("NICO_FAULTS_LONG").is_some_and(|v| v == "1")
}

/// A node: the dev cluster with every other role in-process, csi-node as a process.
struct Node {
    // First, so it runs before the work directory is removed.
    _keep: KeepLogsOnFailure,
    env: DevEnvironment,
    _dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    process: Option<RoleProcess>,
    /// Key fragments read out of volumes: none may ever appear in a log.
    secrets: BTreeSet<String>,
}

impl Node {
    /// Starts the environment; csi-node requests `duration` and talks to the API server
    /// through `kubeconfig` (the dev cluster's own when `None`).
    async fn start(duration: &str, configure: impl FnOnce(&mut DevOptions)) -> Self {
        let (env, dir) = dev_environment_with(|options| {
            options.embedded = Embedded {
                csi_node: false,
                ..Embedded::default()
            };
            options.duration = Some(duration.to_owned());
            configure(options);
        })
        .await;
        let logs = env.workdir().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let node = Self {
            config: env.workdir().join("csi-node.toml"),
            log: logs.join("csi-node.log"),
            env,
            _dir: dir,
            process: None,
            _keep: KeepLogsOnFailure(logs.clone()),
            secrets: BTreeSet::new(),
        };
        node.write_config(&node.env.kubeconfig_path());
        node
    }

    fn write_config(&self, kubeconfig: &Path) {
        RoleFile {
            kubeconfig,
            // Nothing reads the driver's metrics here: any free port.
            health_address: "127.0.0.1:0".to_owned(),
            log_filter: TRACE,
            log_format: "json",
            pod_name: "csi-node-test",
            pod_namespace: "default",
            csi_node: Some(self.env.csi_config()),
            issuer_toml: None,
        }
        .write(&self.config);
    }

    /// Starts (or restarts) the driver and waits until its Probe says ready.
    async fn spawn(&mut self) -> Kubelet {
        self.process = Some(RoleProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_nico-identity")),
            "csi-node",
            &self.config,
            &self.log,
        ));
        eventually(
            "the CSI driver to be ready",
            Duration::from_secs(60),
            || async {
                let channel = csi_channel(self.env.socket()).await.ok()?;
                let probe = IdentityClient::new(channel)
                    .probe(nico_csi_node::csi::ProbeRequest {})
                    .await
                    .ok()?;
                probe.into_inner().ready.unwrap_or(false).then_some(())
            },
        )
        .await;
        self.env.kubelet().await.unwrap()
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    async fn pods(&self, count: usize) -> Vec<PodVolume> {
        let mut volumes = Vec::new();
        for i in 0..count {
            volumes.push(
                self.env
                    .create_demo_pod("demo", "web", &format!("web-{i}"))
                    .await
                    .unwrap(),
            );
        }
        volumes
    }

    fn remember_keys(&mut self, volumes: &[PodVolume]) {
        key_fragments(volumes, &mut self.secrets);
    }

    async fn requests(&self) -> Vec<CertificateRequest> {
        Api::<CertificateRequest>::namespaced(self.env.access.client().unwrap(), "demo")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// Stops everything, then scans every log line the roles wrote and the node's disk.
    async fn finish(mut self) {
        self.kill();
        let workdir = self.env.workdir().to_owned();
        self.env.stop().await;
        assert_clean(&workdir, &self.secrets);
    }
}

/// Keeps a failed test's logs (its work directory goes with it), or every test's with
/// `NICO_FAULTS_KEEP_LOGS=1`: copied to /tmp/nico-faults-<pid>/.
struct KeepLogsOnFailure(PathBuf);

impl Drop for KeepLogsOnFailure {
    fn drop(&mut self) {
        let asked = std::env::var_os("NICO_FAULTS_KEEP_LOGS").is_some_and(|v| v == "1");
        if !std::thread::panicking() && !asked {
            return;
        }
        let kept = std::env::temp_dir().join(format!("nico-faults-{}", std::process::id()));
        if std::fs::create_dir_all(&kept).is_ok()
            && let Ok(entries) = std::fs::read_dir(&self.0)
        {
            for entry in entries.filter_map(Result::ok) {
                let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
            }
            eprintln!("logs kept in {}", kept.display());
        }
    }
}

/// No log line holds a token, a PEM block, base64 DER or a key read from a volume; no file
/// the driver keeps (state directory, volumes) holds a token.
fn assert_clean(workdir: &Path, secrets: &BTreeSet<String>) {
    let logs = workdir.join("logs");
    let size: u64 = std::fs::read_dir(&logs)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(size > 0, "no logs were written under {}", logs.display());
    let known: Vec<String> = secrets.iter().cloned().collect();
    let findings = scan_tree(&logs, &known);
    assert!(findings.is_empty(), "secrets in logs: {findings:#?}");
    for dir in ["csi-state", "pods"] {
        let findings = scan_tree_with(&workdir.join(dir), token_in_line);
        assert!(findings.is_empty(), "tokens on disk: {findings:#?}");
    }
    eprintln!(
        "scanned {size} bytes of trace-level logs and {} known key fragments",
        known.len()
    );
}

/// A small deterministic generator for the kill schedule (xorshift64*), so a failing run
/// can be replayed with `NICO_FAULTS_SEED`.
struct Schedule(u64);

impl Schedule {
    fn new() -> Self {
        let seed = std::env::var("NICO_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            .max(1);
        eprintln!("kill schedule seed: NICO_FAULTS_SEED={seed}");
        Self(seed)
    }

    /// A delay between `low` and `high` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        Duration::from_millis(low + value % (high - low))
    }
}

/// csi-node is SIGKILLed at seeded random points while many volumes renew 30-second
/// certificates (the local CA back-dates them 30 s, so each renews every 4 to 10 s), until
/// at least 500 renewals were signed (2,000 with `NICO_FAULTS_LONG=1`). At every kill each
/// volume holds a matching pair that verifies; afterwards every volume renews again, and
/// each keeps at most its live request: none is left behind by a killed attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_of_500_renewals_leaves_every_pair_valid_and_no_request_behind() {
    let target = if long() { 2000 } else { 500 };
    let mut node = Node::start("30s", |_| {}).await;
    let volumes = node.pods(36).await;
    let ledger = Ledger::start(node.env.access.client().unwrap(), "demo").await;
    let mut kubelet = node.spawn().await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    let initial = ledger.signed();
    let mut schedule = Schedule::new();
    let started = Instant::now();
    let mut kills = 0;
    while ledger.signed() - initial < target {
        assert!(
            started.elapsed() < Duration::from_secs(if long() { 1500 } else { 400 }),
            "only {} renewals after {:?} and {kills} kills",
            ledger.signed() - initial,
            started.elapsed()
        );
        tokio::time::sleep(schedule.millis(1500, 8000)).await;
        node.kill();
        kills += 1;
        for volume in &volumes {
            let pair = check_pair(volume, SPIFFE_ID)
                .unwrap_or_else(|e| panic!("{} after kill {kills}: {e}", volume.pod_name));
            assert!(
                pair.not_after > time::OffsetDateTime::now_utc(),
                "{} expired after kill {kills}",
                volume.pod_name
            );
        }
        node.remember_keys(&volumes);
        kubelet = node.spawn().await;
        // kubelet republishes periodically (requiresRepublish): the restarted driver gets
        // the pods' tokens back.
        for volume in &volumes {
            kubelet.publish(volume).await.unwrap();
        }
    }
    let renewals = ledger.signed() - initial;
    eprintln!(
        "{renewals} renewals signed in {:?} with {kills} SIGKILLs",
        started.elapsed()
    );
    // Every volume renews once more after the last restart and holds a valid pair.
    let serials: Vec<String> = volumes
        .iter()
        .map(|v| check_pair(v, SPIFFE_ID).unwrap().serial)
        .collect();
    for (volume, serial) in volumes.iter().zip(&serials) {
        eventually(
            "a renewal after the last restart",
            Duration::from_secs(60),
            || async {
                let pair = check_pair(volume, SPIFFE_ID).ok()?;
                (pair.serial != *serial).then_some(())
            },
        )
        .await;
    }
    node.remember_keys(&volumes);
    // Each volume keeps only the request of the certificate it holds, and at most one newer
    // one still in flight; nothing else survives, whatever the kills interrupted.
    eventually(
        "killed attempts to be cleaned up",
        Duration::from_secs(30),
        || async {
            // What each volume holds now (renewals go on while this waits).
            let current: BTreeMap<String, String> = volumes
                .iter()
                .filter_map(|v| {
                    let pem = std::fs::read(v.file(VolumeFile::Certificate)).ok()?;
                    Some((volume_hash(&v.volume_id), leaf_serial(&pem)?))
                })
                .collect();
            let requests = node.requests().await;
            let grouped = by_volume(&requests);
            let leftovers: Vec<String> = grouped
                .iter()
                .flat_map(|(volume, crs)| {
                    let live = current.get(volume);
                    let in_flight = crs
                        .iter()
                        .filter(|cr| certificate_serial(cr).is_none())
                        .count();
                    crs.iter()
                        .filter(move |cr| {
                            let serial = certificate_serial(cr);
                            live.is_none()
                                || (serial.is_some() && serial.as_ref() != live)
                                || (serial.is_none() && in_flight > 1)
                        })
                        .map(|cr| cr.metadata.name.clone().unwrap_or_default())
                })
                .collect();
            leftovers.is_empty().then_some(())
        },
    )
    .await;
    assert!(ledger.resigned().is_empty(), "{:?}", ledger.resigned());
    node.finish().await;
}

fn certificate_serial(cr: &CertificateRequest) -> Option<String> {
    let pem = cr.status.as_ref()?.certificate.as_deref()?;
    leaf_serial(pem)
}

/// The value of a metric line (`name{labels}`), 0 when absent.
fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

const ISSUED: &str = concat!(
    "nico_identity_issuer_signatures_total",
    "{issuer=\"ClusterIssuer.cert-manager.io/nico-identity\",result=\"Issued\"}"
);

/// The node loses the API server for 60 s (300 s with `NICO_FAULTS_LONG=1`): every
/// connection through its proxy is cut and new ones are reset. Volumes issued just before
/// come due during the outage and new pods are published into it (kubelet retrying every
/// 5 s, republishing every 30 s). Within [`RETURN_BOUND`] of the return every pending
/// issuance is done,
/// and nothing was signed twice: each pending volume got exactly one signed request after
/// the return, its certificate is the one in the volume, and the issuer's own count of
/// signatures equals the requests that carry one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_of_a_minute_ends_with_every_pending_issuance_done_once() {
    let outage = Duration::from_secs(if long() { 300 } else { 60 });
    let mut node = Node::start("90s", |_| {}).await;
    let upstream: std::net::SocketAddr = node
        .env
        .cluster
        .url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let proxy = Cuttable::start(upstream).await;
    let kubeconfig = std::fs::read_to_string(node.env.kubeconfig_path())
        .unwrap()
        .replace(&upstream.to_string(), &proxy.addr.to_string());
    let proxied = node.env.workdir().join("kubeconfig-proxied");
    std::fs::write(&proxied, kubeconfig).unwrap();
    node.write_config(&proxied);
    let volumes = node.pods(6).await;
    let ledger = Ledger::start(node.env.access.client().unwrap(), "demo").await;
    let kubelet = node.spawn().await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    node.remember_keys(&volumes);
    let before: Vec<String> = volumes
        .iter()
        .map(|v| check_pair(v, SPIFFE_ID).unwrap().serial)
        .collect();
    let republisher = Republisher::start(
        kubelet,
        volumes.clone(),
        Duration::from_secs(30),
        Duration::from_secs(5),
    );

    proxy.cut();
    let cut = Instant::now();
    // New pods scheduled onto the node during the outage.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut newcomers = Vec::new();
    for i in 0..3 {
        let volume = node
            .env
            .create_demo_pod("demo", "web", &format!("late-{i}"))
            .await
            .unwrap();
        republisher.add(volume.clone());
        newcomers.push(volume);
    }
    // Meanwhile every volume keeps a matching pair (its current one).
    while cut.elapsed() < outage {
        for volume in &volumes {
            check_pair(volume, SPIFFE_ID)
                .unwrap_or_else(|e| panic!("{} during the outage: {e}", volume.pod_name));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (volume, serial) in volumes.iter().zip(&before) {
        let now = check_pair(volume, SPIFFE_ID).unwrap().serial;
        assert_eq!(
            &now, serial,
            "{} renewed without the API server",
            volume.pod_name
        );
    }
    assert!(
        newcomers.iter().all(|v| check_pair(v, SPIFFE_ID).is_err()),
        "a pod was issued without the API server"
    );
    let failed_during = republisher
        .log()
        .iter()
        .filter(|p| p.error.is_some())
        .count();
    assert!(
        failed_during >= newcomers.len(),
        "new pods were not tried during the outage"
    );

    proxy.restore();
    let back = Instant::now();
    let mut done = Vec::new();
    for volume in volumes.iter().chain(&newcomers) {
        let old = before
            .get(
                volumes
                    .iter()
                    .position(|v| v.pod_name == volume.pod_name)
                    .unwrap_or(usize::MAX),
            )
            .cloned();
        let deadline = RETURN_BOUND.saturating_sub(back.elapsed());
        eventually(
            &format!("{} to be issued after the return", volume.pod_name),
            deadline,
            || async {
                let pair = check_pair(volume, SPIFFE_ID).ok()?;
                (Some(&pair.serial) != old.as_ref()).then_some(())
            },
        )
        .await;
        done.push(format!(
            "{} {:.1}s",
            volume.pod_name,
            back.elapsed().as_secs_f64()
        ));
    }
    eprintln!("issued after the return: {}", done.join(", "));
    eprintln!(
        "every pending issuance done {:?} after the return",
        back.elapsed()
    );
    let all: Vec<PodVolume> = volumes.iter().chain(&newcomers).cloned().collect();
    node.remember_keys(&all);
    // Let stragglers (a second signature, if any) show up before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let entries = ledger.entries();
    for volume in &all {
        let hash = volume_hash(&volume.volume_id);
        let signed_after: Vec<_> = entries
            .iter()
            .filter(|e| e.volume == hash && e.signed.is_some_and(|at| at >= back))
            .collect();
        let current = check_pair(volume, SPIFFE_ID).unwrap().serial;
        assert_eq!(
            signed_after.len(),
            1,
            "{}: {} requests signed after the return: {signed_after:?}",
            volume.pod_name,
            signed_after.len()
        );
        assert_eq!(
            signed_after[0].serial.as_ref(),
            Some(&current),
            "{}",
            volume.pod_name
        );
    }
    assert!(ledger.resigned().is_empty(), "{:?}", ledger.resigned());
    let (_, metrics) = http_get(node.env.health, "/metrics").await;
    assert_eq!(
        metric(&metrics, ISSUED) as usize,
        ledger.signed(),
        "the issuer's signatures against the requests that carry one"
    );
    drop(republisher);
    node.finish().await;
}

/// The issuer answers every way a broken or hostile one could, in turn (garbage, an expired
/// certificate, someone else's key, another SPIFFE ID, a lifetime under the floor and one
/// over the request), for 90 s while 8 volumes come due for renewal. No pod ever holds a
/// pair that fails the independent check, and the requests each volume creates stay within
/// the backoff csi-node promises (30 s doubling to 5 min, ±10 %): at most one attempt when
/// due plus one per backoff step that fits in the window, plus one for each time kubelet
/// republished a volume whose renewal had failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_issuer_never_reaches_a_pod_and_causes_no_renewal_storm() {
    use nico_identity_tests::signer::{Behaviour, TestSigner};
    let mut node = Node::start("30s", |options| options.embedded.issuer = false).await;
    let signer = TestSigner::start(
        node.env.access.client().unwrap(),
        node.env.csi_settings().issuer.clone(),
        Behaviour::Lifetime(Duration::from_secs(30)),
    );
    let volumes = node.pods(8).await;
    let ledger = Ledger::start(node.env.access.client().unwrap(), "demo").await;
    let kubelet = node.spawn().await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    node.remember_keys(&volumes);
    let republish = Duration::from_secs(30);
    let republisher = Republisher::start(kubelet, volumes.clone(), republish, republish);
    let bad = [
        Behaviour::Garbage,
        Behaviour::Expired,
        Behaviour::ForeignKey,
        Behaviour::OtherId,
        Behaviour::Lifetime(Duration::from_secs(5)),
        Behaviour::Lifetime(Duration::from_secs(3 * 3600)),
    ];
    let window = Duration::from_secs(90);
    let start = Instant::now();
    let mut seen: BTreeSet<String> = volumes
        .iter()
        .map(|v| check_pair(v, SPIFFE_ID).unwrap().serial)
        .collect();
    let mut turn = 0;
    while start.elapsed() < window {
        signer.set(bad[turn % bad.len()]);
        turn += 1;
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            for volume in &volumes {
                // A pod keeps the pair it had (which expires in time: there is nothing
                // better) or gets a new one that passes the check the moment it is seen.
                let pem = std::fs::read(volume.file(VolumeFile::Certificate)).unwrap();
                let serial = leaf_serial(&pem).expect("a certificate in the volume");
                if seen.insert(serial) {
                    let behaviour = bad[(turn - 1) % bad.len()];
                    check_pair(volume, SPIFFE_ID)
                        .unwrap_or_else(|e| panic!("{} under {behaviour:?}: {e}", volume.pod_name));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let end = Instant::now();
    assert_eq!(seen.len(), volumes.len(), "a bad answer reached a volume");
    let entries = ledger.entries();
    let republished: BTreeMap<String, usize> = republisher
        .log()
        .iter()
        .filter(|p| p.at >= start && p.at <= end)
        .fold(BTreeMap::new(), |mut m, p| {
            *m.entry(p.pod.clone()).or_default() += 1;
            m
        });
    // The backoff schedule: the attempt when due, then 30, 60, 120, 240 s (at least 0.9 of
    // each) after the previous failure.
    let mut allowed_by_backoff = 1;
    let mut elapsed = 0.0;
    for step in [30.0, 60.0, 120.0, 240.0, 300.0] {
        elapsed += step * 0.9;
        if elapsed <= window.as_secs_f64() {
            allowed_by_backoff += 1;
        }
    }
    let mut total = 0;
    for volume in &volumes {
        let hash = volume_hash(&volume.volume_id);
        let attempts = entries
            .iter()
            .filter(|e| e.volume == hash && e.seen >= start && e.seen <= end)
            .count();
        total += attempts;
        let allowed = allowed_by_backoff + republished.get(&volume.pod_name).copied().unwrap_or(0);
        assert!(
            attempts <= allowed,
            "{}: {attempts} requests in {window:?}, backoff allows {allowed}",
            volume.pod_name
        );
    }
    eprintln!(
        "{total} requests from {} volumes in {window:?} under a bad issuer ({:.1} per volume \
         per minute)",
        volumes.len(),
        total as f64 / volumes.len() as f64 / (window.as_secs_f64() / 60.0)
    );
    // A good issuer again: every volume renews to a valid pair.
    signer.set(Behaviour::Lifetime(Duration::from_secs(30)));
    drop(republisher);
    let kubelet = node.env.kubelet().await.unwrap();
    for volume in &volumes {
        let old = leaf_serial(&std::fs::read(volume.file(VolumeFile::Certificate)).unwrap());
        eventually(
            "a good certificate again",
            Duration::from_secs(60),
            || async {
                let _ = kubelet.publish(volume).await;
                let pair = check_pair(volume, SPIFFE_ID).ok()?;
                (Some(&pair.serial) != old.as_ref()).then_some(())
            },
        )
        .await;
    }
    node.remember_keys(&volumes);
    node.finish().await;
}

/// Mounts a tmpfs of `size` at `path` (the test runs as root, as CI does).
fn mount_tmpfs(path: &Path, size: &str) {
    std::fs::create_dir_all(path).unwrap();
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "tmpfs",
        ])
        .arg(path)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mounting a tmpfs at {} failed: this test needs root (CAP_SYS_ADMIN), as CI has",
        path.display()
    );
}

fn remount(path: &Path, option: &str) {
    let status = std::process::Command::new("mount")
        .args(["-o", &format!("remount,{option}")])
        .arg(path)
        .status()
        .expect("run mount");
    assert!(status.success(), "remount {option} {}", path.display());
}

fn unmount(path: &Path) {
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(path)
        .status();
}

/// Fills the filesystem at `dir` with one file until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// The state directory and the pods' directory (tmpfs mounts here) fill up, then turn
/// read-only, then recover. Publishes fail with a CSI status naming the directory and the
/// cause, renewals that cannot write are logged and reported on the pod, every volume keeps
/// the pair it had throughout, and once space returns new pods get their files and every
/// volume renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_state_directory_keeps_current_pairs_and_recovers() {
    let mut node = Node::start("90s", |_| {}).await;
    let state = node.env.workdir().join("csi-state");
    let pods = node.env.workdir().join("pods");
    mount_tmpfs(&state, "512k");
    mount_tmpfs(&pods, "512k");
    struct Unmount(Vec<PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for path in &self.0 {
                unmount(path);
            }
        }
    }
    let _unmount = Unmount(vec![state.clone(), pods.clone()]);
    let volumes = node.pods(3).await;
    let kubelet = node.spawn().await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    node.remember_keys(&volumes);
    let issued = Instant::now();
    let before: Vec<String> = volumes
        .iter()
        .map(|v| check_pair(v, SPIFFE_ID).unwrap().serial)
        .collect();

    // Full: a new pod cannot be recorded; renewals coming due cannot be written.
    let fillers = [fill(&state), fill(&pods)];
    let newcomer = node
        .env
        .create_demo_pod("demo", "web", "late-0")
        .await
        .unwrap();
    let error = kubelet.publish(&newcomer).await.unwrap_err().to_string();
    let names_a_directory = |error: &str| {
        error.contains(&state.display().to_string())
            || error.contains(&newcomer.target_path.display().to_string())
    };
    assert!(
        names_a_directory(&error) && error.contains("No space left"),
        "{error}"
    );
    // Through the renewal point of every volume (50 s at most after issuance).
    while issued.elapsed() < Duration::from_secs(55) {
        for (volume, serial) in volumes.iter().zip(&before) {
            let pair = check_pair(volume, SPIFFE_ID).unwrap();
            assert_eq!(
                &pair.serial, serial,
                "{} changed while full",
                volume.pod_name
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(&pods.display().to_string()) && l.contains("No space left")),
        "no log line names {} and the cause",
        pods.display()
    );
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(node.env.access.client().unwrap(), "demo");
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    for volume in &volumes {
        assert!(
            listed.iter().any(|e| {
                e.involved_object.name.as_deref() == Some(volume.pod_name.as_str())
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("No space left"))
            }),
            "no event on {} tells that its renewal could not be written",
            volume.pod_name
        );
    }

    // Space back, but read-only.
    for filler in &fillers {
        std::fs::remove_file(filler).unwrap();
    }
    remount(&state, "ro");
    let error = kubelet.publish(&newcomer).await.unwrap_err().to_string();
    assert!(
        error.contains(&state.display().to_string()) && error.contains("Read-only"),
        "{error}"
    );
    for (volume, serial) in volumes.iter().zip(&before) {
        assert_eq!(&check_pair(volume, SPIFFE_ID).unwrap().serial, serial);
    }

    // Writable again: kubelet's retries and republishes bring everything back.
    remount(&state, "rw");
    let republisher = Republisher::start(
        kubelet,
        volumes.iter().chain([&newcomer]).cloned().collect(),
        Duration::from_secs(30),
        Duration::from_secs(5),
    );
    let all: Vec<PodVolume> = volumes.iter().chain([&newcomer]).cloned().collect();
    for (i, volume) in all.iter().enumerate() {
        let old = before.get(i).cloned();
        eventually(
            "recovery once space returns",
            Duration::from_secs(40),
            || async {
                let pair = check_pair(volume, SPIFFE_ID).ok()?;
                (Some(&pair.serial) != old.as_ref()).then_some(())
            },
        )
        .await;
    }
    node.remember_keys(&all);
    drop(republisher);
    node.finish().await;
}

/// A day of renewals with 90-second certificates, accelerated by running many volumes at
/// once rather than one volume for a day: certificates are real and live on the wall clock
/// (nothing about time is faked); what is compressed is volume-time. 96 volumes for 120 s
/// each are 3.2 volume-hours, a seventh of a day (480 volumes for 180 s with
/// `NICO_FAULTS_LONG=1`, a whole day). The local CA back-dates by 30 s, so each certificate
/// lives 120 s and is renewed 38 to 50 s after issuance (two thirds of its life minus up to
/// a tenth of jitter, less the back-dating). From its first issuance, every volume renews
/// between ⌊window / 52 s⌋ and ⌊window / 38 s⌋ times (52 s: the latest renewal plus 2 s for
/// one issuance), which is the tolerance; over a day, the mean interval between issuances
/// gives 1,662 to 2,274 issuances per volume (the schedule's mean: 1,964, one per 44 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_90_second_certificates_renews_on_schedule() {
    let (count, window) = if long() {
        (480, Duration::from_secs(180))
    } else {
        (96, Duration::from_secs(120))
    };
    let mut node = Node::start("90s", |_| {}).await;
    let volumes = node.pods(count).await;
    let ledger = Ledger::start(node.env.access.client().unwrap(), "demo").await;
    let kubelet = node.spawn().await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    let republisher = Republisher::start(
        kubelet,
        volumes.clone(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    tokio::time::sleep(window + Duration::from_secs(2)).await;
    let entries = ledger.entries();
    let secs = window.as_secs_f64();
    let (floor, ceiling) = (
        (secs / 52.0).floor() as usize,
        (secs / 38.0).floor() as usize,
    );
    let mut total = 0;
    let mut intervals = Vec::new();
    for volume in &volumes {
        let hash = volume_hash(&volume.volume_id);
        let mut signed: Vec<Instant> = entries
            .iter()
            .filter(|e| e.volume == hash)
            .filter_map(|e| e.signed)
            .collect();
        signed.sort();
        let first = *signed.first().expect("the first issuance");
        let renewals: Vec<Instant> = signed
            .iter()
            .copied()
            .filter(|at| *at > first && *at <= first + window)
            .collect();
        assert!(
            (floor..=ceiling).contains(&renewals.len()),
            "{}: {} renewals in {window:?}, expected {floor} to {ceiling}",
            volume.pod_name,
            renewals.len()
        );
        total += renewals.len();
        let mut previous = first;
        for at in renewals {
            intervals.push((at - previous).as_secs_f64());
            previous = at;
        }
    }
    // The same over a day: the mean interval between two issuances of a volume.
    let mean = intervals.iter().sum::<f64>() / intervals.len() as f64;
    let per_day = 86_400.0 / mean;
    let (fewest, most) = (86_400.0 / 52.0, 86_400.0 / 38.0);
    eprintln!(
        "{total} renewals for {count} volumes in {window:?} each ({floor} to {ceiling} allowed \
         per volume), one every {mean:.1} s: {per_day:.0} per volume per day (schedule: \
         {:.0}, bounds {fewest:.0} to {most:.0})",
        86_400.0 / 44.0
    );
    assert!(
        (fewest..=most).contains(&per_day),
        "{per_day:.0} issuances per volume per day"
    );
    for volume in &volumes {
        check_pair(volume, SPIFFE_ID).unwrap_or_else(|e| panic!("{}: {e}", volume.pod_name));
    }
    assert!(ledger.resigned().is_empty());
    node.remember_keys(&volumes);
    drop(republisher);
    node.finish().await;
}

// The issuer crate's OpenBao harness, shared rather than copied.
#[allow(
    dead_code,
    reason = "the fault suite uses part of the issuer tests' harness"
)]
#[path = "../../../crates/issuer/tests/support/openbao.rs"]
mod openbao;

/// The issuer, as its own process with trace-level logs, signing through OpenBao (file
/// storage on 127.0.0.1, started by the harness) with AppRole; every Vault certificate is
/// stored, so Vault's own list tells how many it signed.
fn issuer_toml(bao: &openbao::OpenBao, pki: &openbao::Pki, secret_id: &Path) -> String {
    format!(
        "[issuer]\n\
         leader_election = false\n\
         [[issuer.issuers]]\n\
         name = \"nico-identity\"\n\
         kind = \"ClusterIssuer\"\n\
         group = \"cert-manager.io\"\n\
         [issuer.issuers.vault]\n\
         address = \"{}\"\n\
         mount = \"pki\"\n\
         role = \"spiffe\"\n\
         timeout = \"5s\"\n\
         [issuer.issuers.vault.auth]\n\
         method = \"approle\"\n\
         role_id = \"{}\"\n\
         secret_id_file = \"{}\"\n",
        bao.address(),
        pki.role_id,
        secret_id.display()
    )
}

fn vault_serials(bao: &openbao::OpenBao) -> BTreeSet<String> {
    let listed = bao.cli(&["list", "-format=json", "pki/certs"]);
    let serials: Vec<String> = serde_json::from_str(&listed).unwrap();
    serials
        .into_iter()
        .map(|s| {
            let hex = s.replace([':', '-'], "").to_lowercase();
            hex.trim_start_matches('0').to_owned()
        })
        .collect()
}

/// OpenBao stops for 60 s (300 s with `NICO_FAULTS_LONG=1`) and comes back sealed; the test
/// unseals it at once. Renewals fall due and new pods are published during the outage.
/// Within [`RETURN_BOUND`] of Vault running again every pending issuance is done (the
/// issuer retries waiting requests as soon as `sys/health` answers), and none was signed
/// twice: each pending volume got exactly one signed request after the return, the
/// one in its volume, and Vault's list of certificates it issued, the issuer's count of
/// signatures and the requests that carry a certificate all agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_outage_of_a_minute_ends_with_every_pending_issuance_done_once() {
    let outage = Duration::from_secs(if long() { 300 } else { 60 });
    let mut bao = openbao::OpenBao::start(openbao::Storage::File);
    let pki = openbao::setup_pki(&bao, true);
    let mut node = Node::start("90s", |options| options.embedded.issuer = false).await;
    let logs = node.env.workdir().join("logs");
    let secret_id = node.env.workdir().join("secret-id");
    std::fs::write(&secret_id, &pki.secret_id).unwrap();
    node.secrets.insert(pki.secret_id.clone());
    node.secrets.insert(bao.root_token.clone());
    let issuer_config = node.env.workdir().join("issuer.toml");
    // The health port is chosen here to read the issuer's metrics; another process may
    // take it first, so a start that ends at once is retried on another port.
    let mut started = None;
    for _ in 0..3 {
        let health = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        RoleFile {
            kubeconfig: &node.env.kubeconfig_path(),
            health_address: health.to_string(),
            log_filter: TRACE,
            log_format: "json",
            pod_name: "issuer-test",
            pod_namespace: "default",
            csi_node: None,
            issuer_toml: Some(issuer_toml(&bao, &pki, &secret_id)),
        }
        .write(&issuer_config);
        let mut process = RoleProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_nico-identity")),
            "issuer",
            &issuer_config,
            &logs.join("issuer.log"),
        );
        let ready = eventually("the issuer to be ready", Duration::from_secs(60), || {
            let exited = process.exited();
            async move {
                if exited {
                    return Some(false);
                }
                drop(tokio::net::TcpStream::connect(health).await.ok()?);
                (http_get(health, "/readyz").await.0 == 200).then_some(true)
            }
        })
        .await;
        if ready {
            started = Some((process, health));
            break;
        }
    }
    let (_issuer, issuer_health) = started.expect("the issuer starts on one of three ports");
    let vault_before = vault_serials(&bao);
    let volumes = node.pods(6).await;
    let ledger = Ledger::start(node.env.access.client().unwrap(), "demo").await;
    let kubelet = node.spawn().await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    node.remember_keys(&volumes);
    let before: Vec<String> = volumes
        .iter()
        .map(|v| check_pair(v, SPIFFE_ID).unwrap().serial)
        .collect();
    let republisher = Republisher::start(
        kubelet,
        volumes.clone(),
        Duration::from_secs(30),
        Duration::from_secs(5),
    );

    bao.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut newcomers = Vec::new();
    for i in 0..3 {
        let volume = node
            .env
            .create_demo_pod("demo", "web", &format!("late-{i}"))
            .await
            .unwrap();
        republisher.add(volume.clone());
        newcomers.push(volume);
    }
    while stopped.elapsed() < outage {
        for volume in &volumes {
            check_pair(volume, SPIFFE_ID)
                .unwrap_or_else(|e| panic!("{} during the outage: {e}", volume.pod_name));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (volume, serial) in volumes.iter().zip(&before) {
        assert_eq!(&check_pair(volume, SPIFFE_ID).unwrap().serial, serial);
    }
    // Back from the moment the server runs again: unsealing is part of its return.
    let back = Instant::now();
    bao.start_again();
    bao.unseal();
    let mut done = Vec::new();
    let all: Vec<PodVolume> = volumes.iter().chain(&newcomers).cloned().collect();
    for (i, volume) in all.iter().enumerate() {
        let old = before.get(i).cloned();
        let deadline = RETURN_BOUND.saturating_sub(back.elapsed());
        eventually(
            &format!("{} to be issued after Vault returned", volume.pod_name),
            deadline,
            || async {
                let pair = check_pair(volume, SPIFFE_ID).ok()?;
                (Some(&pair.serial) != old.as_ref()).then_some(())
            },
        )
        .await;
        done.push(format!(
            "{} {:.1}s",
            volume.pod_name,
            back.elapsed().as_secs_f64()
        ));
    }
    eprintln!("issued after the return: {}", done.join(", "));
    eprintln!(
        "every pending issuance done {:?} after Vault returned",
        back.elapsed()
    );
    node.remember_keys(&all);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(republisher);
    let entries = ledger.entries();
    for volume in &all {
        let hash = volume_hash(&volume.volume_id);
        let signed_after: Vec<_> = entries
            .iter()
            .filter(|e| e.volume == hash && e.signed.is_some_and(|at| at >= back))
            .collect();
        let current = check_pair(volume, SPIFFE_ID).unwrap().serial;
        assert_eq!(
            signed_after.len(),
            1,
            "{}: requests signed after the return: {signed_after:?}",
            volume.pod_name
        );
        assert_eq!(
            signed_after[0].serial.as_ref(),
            Some(&current),
            "{}",
            volume.pod_name
        );
    }
    assert!(ledger.resigned().is_empty(), "{:?}", ledger.resigned());
    let vault_new: BTreeSet<String> = vault_serials(&bao)
        .difference(&vault_before)
        .cloned()
        .collect();
    let signed: BTreeSet<String> = entries.iter().filter_map(|e| e.serial.clone()).collect();
    assert_eq!(
        vault_new, signed,
        "Vault's certificates against the signed requests"
    );
    let (_, metrics) = http_get(issuer_health, "/metrics").await;
    assert_eq!(metric(&metrics, ISSUED) as usize, signed.len());
    node.finish().await;
}

/// With mounts (the production layout), what the pod sees is on a tmpfs of its own, its
/// three files are 0440 (`stat`, not the driver's code, says so), and neither the state
/// directory nor the volumes hold a token after publishes and a renewal under trace-level
/// logging, whose lines hold no secret either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_volumes_keep_keys_on_tmpfs_0440_and_no_token_reaches_disk_or_logs() {
    let mut node = Node::start("30s", |options| options.mount = true).await;
    let volumes = node.pods(2).await;
    let kubelet = node.spawn().await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    let stat = |format: &str, path: &Path| {
        let out = std::process::Command::new("stat")
            .args(["-L", "-c", format])
            .arg(path)
            .output()
            .expect("run stat");
        assert!(out.status.success(), "stat {}", path.display());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let check = |volume: &PodVolume| {
        for file in [VolumeFile::Key, VolumeFile::Certificate, VolumeFile::Ca] {
            let path = volume.file(file);
            assert_eq!(stat("%a", &path), "440", "{}", path.display());
        }
        let key = volume.file(VolumeFile::Key);
        let out = std::process::Command::new("stat")
            .args(["-L", "-f", "-c", "%T"])
            .arg(&key)
            .output()
            .expect("run stat");
        let filesystem = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(filesystem, "tmpfs", "{}", key.display());
    };
    for volume in &volumes {
        check(volume);
    }
    // After a renewal the new files are the same.
    let serial = check_pair(&volumes[0], SPIFFE_ID).unwrap().serial;
    eventually("a renewal", Duration::from_secs(30), || async {
        let pair = check_pair(&volumes[0], SPIFFE_ID).ok()?;
        (pair.serial != serial).then_some(())
    })
    .await;
    check(&volumes[0]);
    node.remember_keys(&volumes);
    // Scan while mounted: the volumes' files are in the pods' directory only through the
    // mounts.
    for dir in ["csi-state", "pods"] {
        let findings = scan_tree_with(&node.env.workdir().join(dir), token_in_line);
        assert!(findings.is_empty(), "tokens on disk: {findings:#?}");
    }
    for volume in &volumes {
        kubelet.unpublish(volume).await.unwrap();
    }
    node.finish().await;
}

/// A publish that times out deletes its request: nobody holds its key any more, and an
/// issuer that recovered later would sign it for nothing (the Vault outage above found
/// such a second signature for a pod published during the outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_publish_timed_out_is_deleted_before_anyone_signs_it() {
    let mut node = Node::start("90s", |options| {
        options.embedded.issuer = false;
        options.config.csi_node.publish_timeout = "3s".into();
    })
    .await;
    let volumes = node.pods(1).await;
    let ledger = Ledger::start(node.env.access.client().unwrap(), "demo").await;
    let kubelet = node.spawn().await;
    let error = kubelet.publish(&volumes[0]).await.unwrap_err().to_string();
    assert!(error.contains("was not issued within"), "{error}");
    assert_eq!(ledger.entries().len(), 1, "one request was created");
    eventually(
        "the abandoned request to be deleted",
        Duration::from_secs(10),
        || async { node.requests().await.is_empty().then_some(()) },
    )
    .await;
    node.finish().await;
}
