//! The roles at work with nothing but the chart's RBAC: csi-node, approver, issuer and
//! webhook run as their own processes against the dev cluster, each with its chart
//! ServiceAccount's token and its chart-rendered configuration, and a pod gets its SVID.
//!
//! Only the stand-in kubelet and the test itself act as the cluster admin. A permission
//! the chart forgot (or a name it spells differently from the code) leaves the pod without
//! its certificate, and the roles' logs name the refusal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use nico_identity_cli::dev::{DEV_NODE, VolumeFile};
use serde_json::Value;

use super::{RELEASE, RELEASE_NAMESPACE};

/// The kinds applied to the dev cluster; the workloads themselves are the processes below.
const APPLIED_KINDS: [&str; 9] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "ConfigMap",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// The roles, webhook first: requests created before it serves would go unrecorded.
const ROLES: [&str; 4] = ["webhook", "csi-node", "approver", "issuer"];

pub(crate) fn run(
    binary: &Path,
    objects: &[Value],
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start an async runtime")?;
    let outcome = runtime.block_on(exercise(binary, objects));
    match outcome {
        Ok(spiffe_id) => {
            eprintln!("chart: with only the chart's RBAC, a pod got {spiffe_id}");
        }
        Err(e) => failures.push(format!("roles with the chart's RBAC: {e:#}")),
    }
    Ok(())
}

/// The role processes, killed when dropped.
struct Processes(Vec<(String, Child, PathBuf)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    /// The end of each role's log, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (role, _, log) in &self.0 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<_> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
            out.push_str(&format!("\n  {role} log:\n    {tail}"));
        }
        out
    }
}

async fn exercise(binary: &Path, objects: &[Value]) -> anyhow::Result<String> {
    let (env, _workdir) = nico_identity_tests::dev_environment_with(|options| {
        options.embedded.csi_node = false;
        options.embedded.approver = false;
        options.embedded.issuer = false;
        options.embedded.webhook = false;
    })
    .await;
    let admin = env.access.client()?;
    apply(&admin, objects).await?;

    let mut processes = Processes(Vec::new());
    let webhook_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let service =
        nico_dev_cluster::ServiceRef::new(RELEASE_NAMESPACE, format!("{RELEASE}-webhook"), 443);
    env.cluster.route_service(service, webhook_addr)?;
    let kubeconfig: Value = serde_json::from_slice(&std::fs::read(env.kubeconfig_path())?)?;
    for role in ROLES {
        let config = rendered(objects, "ConfigMap", role)
            .and_then(|map| map["data"]["config.toml"].as_str())
            .with_context(|| format!("no rendered configuration for {role}"))?;
        let dir = env.workdir().join(role);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config)?;
        let token = token(&admin, &format!("{RELEASE}-{role}")).await?;
        let mut own = kubeconfig.clone();
        own["users"][0]["user"] = serde_json::json!({"token": token});
        let kubeconfig_path = dir.join("kubeconfig");
        std::fs::write(&kubeconfig_path, serde_json::to_vec(&own)?)?;

        let log = dir.join("log");
        let mut command = Command::new(binary);
        command
            .args([role, "--config"])
            .arg(&config_path)
            .arg("--kubeconfig")
            .arg(&kubeconfig_path)
            .env("NICO_POD_NAME", format!("{RELEASE}-{role}-0"))
            .env("NICO_POD_NAMESPACE", RELEASE_NAMESPACE)
            // The chart's 0.0.0.0 is for pods; here everything stays on loopback.
            .env("NICO_HEALTH_ADDRESS", "127.0.0.1:0")
            .env("NICO_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        match role {
            "webhook" => {
                command.env("NICO_WEBHOOK__LISTEN_ADDRESS", webhook_addr.to_string());
            }
            "csi-node" => {
                // The paths a pod would have on a node, moved under the dev workdir where
                // the stand-in kubelet puts volumes; no mounts, no registration.
                let work = env.workdir();
                command
                    .env("NODE_NAME", DEV_NODE)
                    .env("NICO_CSI_NODE__ENDPOINT", env.socket())
                    .env("NICO_CSI_NODE__STATE_DIR", work.join("csi-state"))
                    .env(
                        "NICO_CSI_NODE__TARGET_ROOTS",
                        format!("[{:?}]", work.join("pods").display().to_string()),
                    )
                    .env("NICO_CSI_NODE__MOUNT", "false")
                    .env("NICO_CSI_NODE__REGISTRATION__ENABLED", "false");
            }
            _ => {}
        }
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("NICO_") && command.get_envs().all(|(k, _)| k != key) {
                command.env_remove(&key);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {role}"))?;
        processes.0.push((role.to_owned(), child, log));
        if role == "webhook"
            && let Err(e) = webhook_installed(&admin).await
        {
            bail!("{e}{}", processes.logs());
        }
    }

    match issue_for_a_pod(&env).await {
        Ok(id) => {
            drop(processes);
            env.stop().await;
            Ok(id)
        }
        Err(e) => {
            let logs = processes.logs();
            drop(processes);
            env.stop().await;
            bail!("{e:#}{logs}")
        }
    }
}

/// A pod on the dev node publishes its volume and gets files that check out.
async fn issue_for_a_pod(env: &nico_identity_cli::dev::DevEnvironment) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !env.socket().exists() {
        if tokio::time::Instant::now() > deadline {
            bail!("csi-node did not create its socket");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let volume = env.create_demo_pod("demo", "web", "web-0").await?;
    let kubelet = env.kubelet().await?;
    tokio::time::timeout(Duration::from_secs(120), kubelet.publish(&volume))
        .await
        .context("the publish did not finish in 120 s")?
        .context("the publish failed")?;
    let (certificate, ca) = (
        volume.file(VolumeFile::Certificate),
        volume.file(VolumeFile::Ca),
    );
    nico_identity_tests::verify_with_webpki(&certificate, &ca)
        .map_err(|e| anyhow::anyhow!("the issued chain does not verify: {e}"))?;
    let leaf = nico_identity_tests::read_pem_certificates(&certificate)
        .into_iter()
        .next()
        .context("tls.crt holds no certificate")?;
    let ids = nico_identity_tests::uri_sans(&leaf);
    let expected = "spiffe://nico.local/demo/sa/web";
    if ids != [expected] {
        bail!("the certificate names {ids:?}, expected {expected}");
    }
    Ok(expected.to_owned())
}

fn rendered<'a>(objects: &'a [Value], kind: &str, role: &str) -> Option<&'a Value> {
    objects.iter().find(|o| {
        o["kind"] == kind && o["metadata"]["labels"]["app.kubernetes.io/component"] == role
    })
}

/// Creates the release namespace and the chart's objects of [`APPLIED_KINDS`], as the admin.
async fn apply(admin: &kube::Client, objects: &[Value]) -> anyhow::Result<()> {
    let namespace = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE},
    });
    let chosen = objects.iter().filter(|o| {
        o["kind"]
            .as_str()
            .is_some_and(|k| APPLIED_KINDS.contains(&k))
    });
    for object in std::iter::once(&namespace).chain(chosen) {
        let (group, version) = match object["apiVersion"].as_str().unwrap_or_default() {
            api if api.contains('/') => api.split_once('/').unwrap_or_default(),
            api => ("", api),
        };
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let typed: DynamicObject = serde_json::from_value(object.clone())?;
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
            None => Api::all_with(admin.clone(), &resource),
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        api.create(&PostParams::default(), &typed)
            .await
            .with_context(|| format!("failed to create {kind} {name}"))?;
    }
    Ok(())
}

/// A token of the release namespace's account `name`.
async fn token(admin: &kube::Client, name: &str) -> anyhow::Result<String> {
    let answer = Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NAMESPACE)
        .create_token_request(name, &PostParams::default(), &Default::default())
        .await
        .with_context(|| format!("failed to request a token for {name}"))?;
    answer
        .status
        .map(|s| s.token)
        .with_context(|| format!("no token for {name}"))
}

/// Waits until the webhook wrote its CA into the chart's configurations.
async fn webhook_installed(admin: &kube::Client) -> anyhow::Result<()> {
    let api = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
    let name = format!("{RELEASE}-webhook");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = api.get_opt(&name).await?;
        let hooks = stored.and_then(|c| c.webhooks).unwrap_or_default();
        if !hooks.is_empty() && hooks.iter().all(|h| h.client_config.ca_bundle.is_some()) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the webhook did not write its caBundle into {name} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
