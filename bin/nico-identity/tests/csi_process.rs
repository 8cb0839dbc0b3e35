//! The node driver as its own process, the way it runs on a node: killed with SIGKILL in the
//! middle of renewals and restarted, and cut off from the API server for a while.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::api::{Api, ListParams};
use nico_csi_node::csi::identity_client::IdentityClient;
use nico_identity_cli::dev::{DevEnvironment, Embedded, Kubelet, PodVolume, csi_channel};
use nico_identity_tests::{dev_environment_with, eventually};
use nico_k8s_types::CertificateRequest;
use tokio::net::{TcpListener, TcpStream};

/// Certificates this short renew every few seconds, so a test sees many renewals.
const DURATION: &str = "45s";

struct CsiProcess {
    child: Child,
}

impl Drop for CsiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CsiProcess {
    fn kill(mut self) {
        // SIGKILL: no clean-up of any kind runs in the driver.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the csi-node configuration a separate process needs and returns its path.
fn write_config(env: &DevEnvironment, kubeconfig: &Path, log: &Path) -> PathBuf {
    #[derive(serde::Serialize)]
    struct File<'a> {
        kubeconfig: &'a Path,
        health_address: &'a str,
        log_filter: &'a str,
        csi_node: &'a nico_csi_node::Config,
    }
    let mut csi = env.csi_config().clone();
    csi.duration = DURATION.to_owned();
    let file = File {
        kubeconfig,
        health_address: "127.0.0.1:0",
        log_filter: "info",
        csi_node: &csi,
    };
    let path = env.workdir().join("csi-node.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    let _ = log;
    path
}

fn spawn(config: &Path, log: &Path) -> CsiProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nico-identity"))
        .args(["csi-node", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    CsiProcess { child }
}

/// Waits for the restarted driver's socket and its Probe to say ready, then reconnects.
async fn connect(env: &DevEnvironment) -> Kubelet {
    eventually(
        "the CSI driver to be ready",
        Duration::from_secs(30),
        || async {
            let channel = csi_channel(env.socket()).await.ok()?;
            let probe = IdentityClient::new(channel)
                .probe(nico_csi_node::csi::ProbeRequest {})
                .await
                .ok()?;
            probe.into_inner().ready.unwrap_or(false).then_some(())
        },
    )
    .await;
    env.kubelet().await.unwrap()
}

async fn environment() -> (DevEnvironment, tempfile::TempDir) {
    dev_environment_with(|options| {
        options.embedded = Embedded {
            csi_node: false,
            ..Embedded::default()
        };
        options.duration = Some(DURATION.to_owned());
    })
    .await
}

fn assert_healthy(env: &DevEnvironment, volume: &PodVolume) {
    let inspection = nico_csi_node::inspect(&volume.target_path, &env.csi_settings().files)
        .unwrap_or_else(|e| panic!("{}: {e}", volume.pod_name));
    assert!(inspection.healthy(), "{}: {inspection:?}", volume.pod_name);
    assert_eq!(inspection.spiffe_ids, ["spiffe://nico.local/demo/sa/web"]);
    assert!(
        inspection.not_after > time::OffsetDateTime::now_utc(),
        "{}: expired",
        volume.pod_name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_killed_during_renewals_restarts_with_every_pair_valid_and_renewing() {
    let (env, _dir) = environment().await;
    let log = env.workdir().join("csi-node.log");
    let config = write_config(&env, &env.kubeconfig_path(), &log);
    let mut volumes = Vec::new();
    for i in 0..5 {
        volumes.push(
            env.create_demo_pod("demo", "web", &format!("web-{i}"))
                .await
                .unwrap(),
        );
    }
    let mut process = spawn(&config, &log);
    let mut kubelet = connect(&env).await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }
    let mut renewed_across_kills = 0;
    for round in 0..8u64 {
        let before: Vec<_> = volumes.iter().map(PodVolume::current_serial).collect();
        // Let renewals run for a while, then kill at an arbitrary point of them.
        tokio::time::sleep(Duration::from_millis(1500 + (round * 7919) % 2500)).await;
        process.kill();
        for volume in &volumes {
            // Whatever moment the kill hit, each volume holds one complete, matching pair.
            assert_healthy(&env, volume);
        }
        let after: Vec<_> = volumes.iter().map(PodVolume::current_serial).collect();
        renewed_across_kills += before.iter().zip(&after).filter(|(b, a)| b != a).count();
        process = spawn(&config, &log);
        kubelet = connect(&env).await;
        // kubelet republishes periodically (requiresRepublish), which hands over fresh tokens.
        for volume in &volumes {
            kubelet.publish(volume).await.unwrap();
        }
    }
    assert!(
        renewed_across_kills > 0,
        "no renewal happened between kills"
    );
    // After the last restart every volume keeps renewing.
    let serials: Vec<_> = volumes.iter().map(PodVolume::current_serial).collect();
    for (volume, serial) in volumes.iter().zip(serials) {
        eventually(
            "a renewal after the last restart",
            Duration::from_secs(40),
            || async { (volume.current_serial() != serial).then_some(()) },
        )
        .await;
        assert_healthy(&env, volume);
    }
    // One live request per volume at most, none left over from killed attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = Api::<CertificateRequest>::namespaced(env.access.client().unwrap(), "demo")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        requests.len() <= volumes.len() + 1,
        "{} requests for {} volumes",
        requests.len(),
        volumes.len()
    );
    process.kill();
    env.stop().await;
}

/// A TCP forwarder that can cut every connection and refuse new ones.
struct Cuttable {
    addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cuttable {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, tasks) = (open.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection reset
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            open,
            connections,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_resume_when_the_api_server_comes_back() {
    let (env, _dir) = environment().await;
    let upstream: std::net::SocketAddr = env
        .cluster
        .url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let proxy = Cuttable::start(upstream).await;
    let kubeconfig = std::fs::read_to_string(env.kubeconfig_path())
        .unwrap()
        .replace(&upstream.to_string(), &proxy.addr.to_string());
    let proxied = env.workdir().join("kubeconfig-proxied");
    std::fs::write(&proxied, kubeconfig).unwrap();
    let log = env.workdir().join("csi-node.log");
    let config = write_config(&env, &proxied, &log);
    let mut volumes = Vec::new();
    for i in 0..3 {
        volumes.push(
            env.create_demo_pod("demo", "web", &format!("web-{i}"))
                .await
                .unwrap(),
        );
    }
    let process = spawn(&config, &log);
    let kubelet = connect(&env).await;
    for volume in &volumes {
        kubelet.publish(volume).await.unwrap();
    }

    proxy.cut();
    // Renewals fall due and fail while the API server is unreachable; kubelet keeps
    // republishing, which must not make anything worse.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        for volume in &volumes {
            let _ = kubelet.publish(volume).await;
            let inspection =
                nico_csi_node::inspect(&volume.target_path, &env.csi_settings().files).unwrap();
            assert!(
                inspection.key_matches && inspection.chain.is_ok()
                    || inspection.not_after < time::OffsetDateTime::now_utc()
            );
        }
    }
    let during: Vec<_> = volumes.iter().map(PodVolume::current_serial).collect();
    proxy.restore();
    for (volume, serial) in volumes.iter().zip(during) {
        eventually("renewals to resume", Duration::from_secs(75), || async {
            let _ = kubelet.publish(volume).await;
            (volume.current_serial() != serial).then_some(())
        })
        .await;
        assert_healthy(&env, volume);
    }
    process.kill();
    env.stop().await;
}
