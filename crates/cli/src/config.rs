//! Loading the configuration: defaults, then the TOML file, then `NICO_` variables, then flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use nico_runtime::LogFormat;
use serde::{Deserialize, Serialize};

/// The top-level keys; environment variables that do not start with one of them (Kubernetes
/// service links such as `NICO_IDENTITY_WEBHOOK_SERVICE_HOST`, clap's own `NICO_CONFIG`) are
/// not configuration and are ignored rather than rejected.
const TOP_LEVEL_KEYS: [&str; 10] = [
    "kubeconfig",
    "health_address",
    "pod_name",
    "pod_namespace",
    "log_format",
    "log_filter",
    "csi_node",
    "approver",
    "issuer",
    "webhook",
];

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Kubeconfig path; empty means KUBECONFIG, ~/.kube/config or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    pub health_address: std::net::SocketAddr,
    /// This replica's name: the Lease holder identity and the reporter of Events. The chart
    /// sets it from the pod name; it defaults to the host name.
    pub pod_name: String,
    /// The namespace this role runs in, where its Leases live.
    pub pod_namespace: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Default log filter (`RUST_LOG` syntax) when RUST_LOG is unset.
    pub log_filter: String,
    /// The CSI node plugin.
    pub csi_node: nico_csi_node::Config,
    /// The approver.
    pub approver: nico_approver::Config,
    /// The issuer.
    pub issuer: nico_issuer::Config,
    /// The admission webhooks.
    pub webhook: nico_webhook::Config,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            health_address: std::net::SocketAddr::from(([0, 0, 0, 0], 9402)),
            pod_name: default_pod_name(),
            pod_namespace: default_pod_namespace(),
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            csi_node: Default::default(),
            approver: Default::default(),
            issuer: Default::default(),
            webhook: Default::default(),
        }
    }
}

/// The host name (a pod's host name is its name), or `nico-identity` when it is unknown.
fn default_pod_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "nico-identity".to_owned())
}

/// The namespace of the pod's service account, or `nico-identity` outside a pod.
fn default_pod_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "nico-identity".to_owned())
}

/// A configuration that could not be read; the message names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file named by `--config` does not exist.
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    /// A value has the wrong type or an unknown key was set.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// Loads the configuration from `file`, the environment and `overrides` (flag values keyed by
/// dotted path, e.g. `csi_node.node_id`).
pub fn load(
    file: Option<&Path>,
    overrides: &[(&str, figment::value::Value)],
) -> Result<FileConfig, LoadError> {
    let mut figment = Figment::from(Serialized::defaults(FileConfig::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(LoadError::Missing(file.to_owned()));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed("NICO_").split("__").filter(|key| {
        // Keys arrive in the variable's case: compare without it.
        let first = key.as_str().split('.').next().unwrap_or_default();
        TOP_LEVEL_KEYS
            .iter()
            .any(|top| first.eq_ignore_ascii_case(top))
    }));
    for (key, value) in overrides {
        figment = figment.merge(Serialized::global(key, value));
    }
    figment
        .extract()
        .map_err(|e| LoadError::Invalid(Box::new(e)))
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type to figment::Error"
)]
mod tests {
    use super::*;

    /// Runs `test` holding figment's environment lock, so no test sees another's variables.
    fn isolated(test: impl FnOnce(&mut figment::Jail) -> figment::error::Result<()>) {
        figment::Jail::expect_with(test);
    }

    #[test]
    fn every_sample_config_parses_and_validates() {
        isolated(|_| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
            let mut seen = 0;
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                    continue;
                }
                let config =
                    load(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let name = path.file_stem().unwrap().to_str().unwrap();
                match name {
                    "csi-node" => drop(config.csi_node.validate().unwrap()),
                    "approver" | "dev" => drop(config.approver.validate().unwrap()),
                    "issuer" => drop(config.issuer.validate().unwrap()),
                    "webhook" => drop(config.webhook.validate().unwrap()),
                    other => panic!("unexpected sample {other}.toml: add it to this test"),
                }
                seen += 1;
            }
            assert!(seen >= 5, "expected a sample per role, found {seen}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_named() {
        isolated(|jail| {
            jail.create_file("bad.toml", "[csi_node]\nnode_idd = \"x\"\n")?;
            let err = load(Some(Path::new("bad.toml")), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("node_idd"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn flags_override_the_file() {
        isolated(|jail| {
            jail.create_file(
                "c.toml",
                "[csi_node]\nnode_id = \"from-file\"\nduration = \"2h\"\n",
            )?;
            let config = load(
                Some(Path::new("c.toml")),
                &[("csi_node.node_id", "from-flag".into())],
            )
            .unwrap();
            assert_eq!(config.csi_node.node_id, "from-flag");
            assert_eq!(config.csi_node.duration, "2h");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file_and_foreign_variables_are_ignored() {
        isolated(|jail| {
            jail.create_file("c.toml", "[csi_node]\nnode_id = \"from-file\"\n")?;
            jail.set_env("NICO_CSI_NODE__NODE_ID", "from-env");
            jail.set_env("NICO_APPROVER__MAX_DURATION", "12h");
            // Set by Kubernetes for a Service named nico-identity-webhook, and by clap.
            jail.set_env("NICO_IDENTITY_WEBHOOK_SERVICE_HOST", "10.0.0.1");
            jail.set_env("NICO_CONFIG", "c.toml");
            let config = load(Some(Path::new("c.toml")), &[]).unwrap();
            assert_eq!(config.csi_node.node_id, "from-env");
            assert_eq!(config.approver.max_duration, "12h");
            jail.set_env("NICO_CSI_NODE__NO_SUCH_KEY", "x");
            let err = load(Some(Path::new("c.toml")), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("NO_SUCH_KEY"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_named() {
        isolated(|_| {
            let err = load(Some(Path::new("/nonexistent/nico.toml")), &[]).unwrap_err();
            assert!(err.to_string().contains("/nonexistent/nico.toml"));
            Ok(())
        });
    }
}
