//! The csi-node benchmarks: publish latency under concurrency, a node-sized burst, resident
//! memory with 110 volumes, and wake-ups while idle.
//!
//! The node driver runs as its own process (the release binary named by `NICO_IDENTITY_BIN`,
//! which `cargo xtask bench csi-node` builds and sets); the dev cluster, approver and issuer run
//! in this process, as they would run elsewhere in a cluster. Every figure is the median of
//! several runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nico_csi_node::csi::identity_client::IdentityClient;
use nico_identity_cli::dev::{DevEnvironment, Embedded, Kubelet, PodVolume, csi_channel};
use nico_identity_tests::{dev_environment_with, eventually};

const RUNS: usize = 5;
const CONCURRENT: usize = 50;
const NODE_VOLUMES: usize = 110;
const IDLE_SECONDS: u64 = 30;

#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn report(line: &str) {
    println!("{line}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let binary =
        PathBuf::from(std::env::var_os("NICO_IDENTITY_BIN").expect(
            "NICO_IDENTITY_BIN names the release binary (cargo xtask bench csi-node sets it)",
        ));
    // Production layout (a tmpfs per volume) where this machine allows mounting.
    let mount = can_mount();
    let (env, _dir) = dev_environment_with(|options| {
        options.embedded = Embedded {
            csi_node: false,
            ..Embedded::default()
        };
        options.config.log_filter = "warn".into();
        options.mount = mount;
    })
    .await;
    let mut driver = spawn(&env, &binary);
    let kubelet = connect(&env).await;

    let pods = CONCURRENT.max(NODE_VOLUMES);
    let mut volumes = Vec::with_capacity(pods);
    for i in 0..pods {
        volumes.push(
            env.create_demo_pod("demo", "web", &format!("web-{i}"))
                .await
                .unwrap(),
        );
    }
    // Tokens are minted up front: kubelet has them before it calls the driver.
    let mut tokens = Vec::with_capacity(pods);
    for volume in &volumes {
        tokens.push(kubelet.pod_token(volume).await.unwrap());
    }

    // One publish at a time: the cost of the path itself, without queueing behind others.
    let mut singles = Vec::new();
    for i in 0..RUNS * 4 {
        let one = i % CONCURRENT;
        singles.extend(publish_all(&kubelet, &volumes[one..=one], &tokens[one..=one]).await);
        unpublish_all(&kubelet, &volumes[one..=one]).await;
    }
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut node_cpu = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let cpu_before = process_cpu_micros(driver.id());
        let started = Instant::now();
        let mut latencies = publish_all(&kubelet, &volumes[..CONCURRENT], &tokens).await;
        rates.push(CONCURRENT as f64 / started.elapsed().as_secs_f64());
        node_cpu.push((process_cpu_micros(driver.id()) - cpu_before) / CONCURRENT as f64);
        latencies.sort();
        p50s.push(latencies[latencies.len() / 2]);
        p99s.push(latencies[(latencies.len() * 99).div_ceil(100) - 1]);
        unpublish_all(&kubelet, &volumes[..CONCURRENT]).await;
    }
    let mut bursts = Vec::new();
    for run in 0..RUNS {
        let started = Instant::now();
        publish_all(&kubelet, &volumes[..NODE_VOLUMES], &tokens).await;
        bursts.push(started.elapsed());
        if run + 1 < RUNS {
            unpublish_all(&kubelet, &volumes[..NODE_VOLUMES]).await;
        }
    }
    // 110 volumes are now managed; let the process settle before measuring it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = driver.id();
    let rss_kib = status_field(pid, "VmRSS:");
    let anon_kib = status_field(pid, "RssAnon:");
    let file_kib = status_field(pid, "RssFile:");
    let before = context_switches(pid);
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let wakeups = (context_switches(pid) - before) as f64 / IDLE_SECONDS as f64;
    let keygen = keygen_cpu_micros();

    report("| measure | target | median |");
    report("|---|---|---|");
    report(&format!(
        "| publish → files, one at a time | — | {} |",
        ms(median(singles))
    ));
    report(&format!(
        "| publish → files, p50, {CONCURRENT} concurrent | ≤ 20 ms | {} |",
        ms(median(p50s))
    ));
    report(&format!(
        "| publish → files, p99, {CONCURRENT} concurrent | ≤ 100 ms | {} |",
        ms(median(p99s))
    ));
    report(&format!(
        "| csi-node's own CPU per publish, {CONCURRENT} concurrent | — | {:.2} ms |",
        median_f64(node_cpu) / 1000.0
    ));
    report(&format!(
        "| whole pipeline, {CONCURRENT} concurrent (publishes completed per second) | — | {:.0}/s |",
        median_f64(rates)
    ));
    report(&format!(
        "| {NODE_VOLUMES} volumes at once, all files written | ≤ 2 s | {} |",
        ms(median(bursts))
    ));
    report(&format!(
        "| csi-node resident memory, {NODE_VOLUMES} volumes | ≤ 16 MiB | {:.1} MiB ({:.1} MiB \
         heap and stacks, {:.1} MiB mapped binary) |",
        rss_kib as f64 / 1024.0,
        anon_kib as f64 / 1024.0,
        file_kib as f64 / 1024.0,
    ));
    report(&format!(
        "| wake-ups per second while idle | ≈ 0 | {wakeups:.2} |"
    ));
    report(&format!(
        "| key + CSR, CPU per volume (ECDSA P-256) | ≤ 60 µs | {keygen:.1} µs |"
    ));
    report(&format!(
        "\nvolume layout: {}",
        if mount {
            "tmpfs per volume"
        } else {
            "files in the target directory (this machine cannot mount)"
        }
    ));
    unpublish_all(&kubelet, &volumes[..NODE_VOLUMES]).await;
    let _ = driver.kill();
    let _ = driver.wait();
    env.stop().await;
}

fn can_mount() -> bool {
    let Ok(probe) = tempfile::tempdir() else {
        return false;
    };
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(probe.path())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let _ = Command::new("umount").arg(probe.path()).status();
    }
    mounted
}

fn spawn(env: &DevEnvironment, binary: &Path) -> Child {
    #[derive(serde::Serialize)]
    struct File<'a> {
        kubeconfig: PathBuf,
        health_address: &'a str,
        log_filter: &'a str,
        csi_node: &'a nico_csi_node::Config,
    }
    let file = File {
        kubeconfig: env.kubeconfig_path(),
        health_address: "127.0.0.1:0",
        log_filter: "warn",
        csi_node: env.csi_config(),
    };
    let path = env.workdir().join("csi-node.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    Command::new(binary)
        .args(["csi-node", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn connect(env: &DevEnvironment) -> Kubelet {
    eventually(
        "the CSI driver to be ready",
        Duration::from_secs(60),
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

async fn publish_all(
    kubelet: &Kubelet,
    volumes: &[PodVolume],
    tokens: &[(String, String)],
) -> Vec<Duration> {
    let calls = volumes
        .iter()
        .zip(tokens)
        .map(|(volume, (token, expires))| {
            let request = nico_identity_cli::dev::publish_request(volume, token, expires);
            let kubelet = kubelet.clone();
            async move {
                let started = Instant::now();
                kubelet.publish_with(request).await.unwrap();
                started.elapsed()
            }
        });
    futures::future::join_all(calls).await
}

async fn unpublish_all(kubelet: &Kubelet, volumes: &[PodVolume]) {
    futures::future::join_all(volumes.iter().map(|v| kubelet.unpublish(v))).await;
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// User and system CPU time of a whole process (every thread), from `/proc/PID/stat`.
fn process_cpu_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it are plain numbers.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // Fields 14 and 15 of stat(5) (utime, stime), counted from the state as field 3.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    ticks / per_second * 1e6
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Voluntary and involuntary context switches of every thread of the process: each is a wake-up.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches")
                        || l.starts_with("nonvoluntary_ctxt_switches")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// CPU time of generating a key and its CSR, median of batches, measured with the thread's own
/// CPU clock so that other load on the machine does not count.
fn keygen_cpu_micros() -> f64 {
    let id = nico_spiffe_id::SpiffeId::parse("spiffe://nico.local/demo/sa/web").unwrap();
    let mut per_batch = Vec::new();
    for _ in 0..RUNS {
        let started = thread_cpu();
        for _ in 0..1000 {
            let key = nico_csr::PrivateKey::generate(nico_csr::KeyAlgorithm::EcdsaP256).unwrap();
            std::hint::black_box(nico_csr::build_spiffe_csr(&key, &id).unwrap());
        }
        per_batch.push((thread_cpu() - started) / 1000.0);
    }
    per_batch.sort_by(f64::total_cmp);
    per_batch[per_batch.len() / 2]
}

fn thread_cpu() -> f64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    time.tv_sec as f64 * 1e6 + time.tv_nsec as f64 / 1e3
}
