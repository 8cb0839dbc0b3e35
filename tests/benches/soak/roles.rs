//! The roles as processes of the release binary, as the chart deploys them: one webhook, one
//! approver, one issuer and a csi-node per node, each with its own configuration file, its
//! health port on loopback and its log in the work directory. Readiness comes from `/readyz`,
//! resident memory from `/proc/<pid>/status`, counters from `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::Api;
use nico_identity_cli::dev::DevEnvironment;

use crate::Failure;

/// How long a role may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// One running role.
pub(crate) struct Role {
    /// `webhook`, `approver`, `issuer` or `csi-node-<n>`.
    pub(crate) name: String,
    child: Child,
    /// Where `/readyz` and `/metrics` are served.
    pub(crate) health: SocketAddr,
    log: PathBuf,
}

impl Role {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines of its log at WARN and at ERROR.
    pub(crate) fn warnings_and_errors(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let count = |level: &str| text.lines().filter(|l| l.contains(level)).count();
        (count(" WARN "), count(" ERROR "))
    }

    /// The last lines of its log, for a failure message.
    pub(crate) fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n    ")
    }
}

/// Every role process; dropping it kills them.
#[derive(Default)]
pub(crate) struct Roles(pub(crate) Vec<Role>);

impl Drop for Roles {
    fn drop(&mut self) {
        for role in &mut self.0 {
            let _ = role.child.kill();
            let _ = role.child.wait();
        }
    }
}

impl Roles {
    /// The csi-node processes, in node order.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Role> {
        self.0.iter().filter(|r| r.name.starts_with("csi-node-"))
    }

    /// Every role's log tail.
    pub(crate) fn tails(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("\n  {} log:\n    {}", r.name, r.tail(10)))
            .collect()
    }
}

/// Where node `n` keeps its socket, state and pod directories.
pub(crate) fn node_dir(workdir: &Path, n: usize) -> PathBuf {
    workdir.join(format!("node-{n}"))
}

/// The directory under which node `n`'s pods have their volumes (kubelet's `pods/`).
pub(crate) fn pods_root(workdir: &Path, n: usize) -> PathBuf {
    node_dir(workdir, n).join("pods")
}

/// Node `n`'s CSI socket.
pub(crate) fn socket(workdir: &Path, n: usize) -> PathBuf {
    node_dir(workdir, n).join("csi.sock")
}

/// The name of node `n`.
pub(crate) fn node_name(n: usize) -> String {
    format!("soak-node-{n}")
}

/// Starts the webhook (and waits until the API server trusts it), then the issuer, the
/// approver and `nodes` csi-node processes, and waits until every one is ready.
pub(crate) async fn start(
    env: &DevEnvironment,
    binary: &Path,
    nodes: usize,
) -> Result<Roles, Failure> {
    let workdir = env.workdir().to_owned();
    let mut roles = Roles::default();

    let webhook_addr = free_port()?;
    env.route_webhook(webhook_addr)?;
    let mut webhook = toml::Value::try_from(env.webhook_config())?;
    webhook["listen_address"] = toml::Value::String(webhook_addr.to_string());
    roles.0.push(spawn(
        env, binary, "webhook", "webhook", "webhook", webhook,
    )?);
    ready(&roles.0[0]).await.map_err(|e| with_logs(e, &roles))?;
    trusted(env).await.map_err(|e| with_logs(e, &roles))?;

    let ca = workdir.join("ca");
    let issuer: toml::Value = toml::from_str(&format!(
        "[[issuers]]\nname = {name}\nkind = {kind}\ngroup = {group}\n\
         [issuers.local_ca]\ncertificate = {crt}\nkey = {key}\ngenerate = true\n",
        name = quoted(&env.csi_config().issuer.name),
        kind = quoted(&env.csi_config().issuer.kind),
        group = quoted(&env.csi_config().issuer.group),
        crt = quoted(&ca.join("ca.crt").display().to_string()),
        key = quoted(&ca.join("ca.key").display().to_string()),
    ))?;
    roles
        .0
        .push(spawn(env, binary, "issuer", "issuer", "issuer", issuer)?);
    // Short certificates are the point: the approver's floor is lowered as `dev` does.
    let approver: toml::Value = toml::from_str("min_duration = \"10s\"")?;
    roles.0.push(spawn(
        env, binary, "approver", "approver", "approver", approver,
    )?);

    for n in 0..nodes {
        let mut config = env.csi_config().clone();
        config.node_id = node_name(n);
        config.endpoint = socket(&workdir, n);
        config.state_dir = node_dir(&workdir, n).join("state");
        config.target_roots = vec![pods_root(&workdir, n)];
        std::fs::create_dir_all(pods_root(&workdir, n))?;
        let section = toml::Value::try_from(&config)?;
        let name = format!("csi-node-{n}");
        roles
            .0
            .push(spawn(env, binary, &name, "csi-node", "csi_node", section)?);
    }
    for role in &roles.0[1..] {
        ready(role).await.map_err(|e| with_logs(e, &roles))?;
    }
    Ok(roles)
}

fn with_logs(error: Failure, roles: &Roles) -> Failure {
    format!("{error}{}", roles.tails()).into()
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Writes `name`'s configuration (the common keys and `section` under `key`) and starts
/// `nico-identity <command>` with it.
fn spawn(
    env: &DevEnvironment,
    binary: &Path,
    name: &str,
    command: &str,
    key: &str,
    section: toml::Value,
) -> Result<Role, Failure> {
    let dir = env.workdir().join(name);
    std::fs::create_dir_all(&dir)?;
    let health = free_port()?;
    let mut file = toml::Table::new();
    let text = |s: String| toml::Value::String(s);
    file.insert(
        "kubeconfig".into(),
        text(env.kubeconfig_path().display().to_string()),
    );
    file.insert("health_address".into(), text(health.to_string()));
    file.insert("pod_name".into(), text(format!("soak-{name}")));
    // Where the in-process roles of `dev` keep their Leases and the webhook its Service.
    file.insert("pod_namespace".into(), text("default".into()));
    file.insert("log_format".into(), text("text".into()));
    file.insert("log_filter".into(), text("info".into()));
    file.insert(key.into(), section);
    let config = dir.join("config.toml");
    std::fs::write(&config, toml::to_string(&file)?)?;
    let log = dir.join("log");
    let mut process = Command::new(binary);
    process
        .arg(command)
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    // Only the file configures the role: no variable of the caller's shell leaks in.
    for (variable, _) in std::env::vars_os() {
        if variable.to_string_lossy().starts_with("NICO_") {
            process.env_remove(&variable);
        }
    }
    let child = process
        .spawn()
        .map_err(|e| format!("failed to start {name}: {e}"))?;
    Ok(Role {
        name: name.to_owned(),
        child,
        health,
        log,
    })
}

/// Waits until the role answers `/readyz` with 200.
async fn ready(role: &Role) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        if let Some((200, _)) = get(role.health, "/readyz").await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{} was not ready within {READY_WITHIN:?}", role.name).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every webhook configuration carries the webhook's CA: before that, requests
/// would go unrecorded.
async fn trusted(env: &DevEnvironment) -> Result<(), Failure> {
    let api = Api::<ValidatingWebhookConfiguration>::all(env.access.client()?);
    let name = &env.webhook_config().configuration_name;
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        let hooks = api
            .get_opt(name)
            .await?
            .and_then(|c| c.webhooks)
            .unwrap_or_default();
        if !hooks.is_empty() && hooks.iter().all(|h| h.client_config.ca_bundle.is_some()) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(
                format!("the webhook did not install {name} within {READY_WITHIN:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP GET on the health port: status and body, `None` while nothing answers.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.get(9..12)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// Resident memory of a process in KiB (`VmRSS`), 0 once it is gone.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}

/// A loopback address nothing listens on right now.
fn free_port() -> Result<SocketAddr, Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
