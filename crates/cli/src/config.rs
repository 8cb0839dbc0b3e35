//! Loading the configuration: defaults, then the TOML file, then `NICO_` variables, then flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use nico_runtime::LogFormat;
use serde::{Deserialize, Serialize};

/// The top-level keys; environment variables that do not start with one of them (Kubernetes
/// service links such as `NICO_IDENTITY_WEBHOOK_SERVICE_HOST`, clap's own `NICO_CONFIG`) are
/// not configuration and are ignored rather than rejected.
const TOP_LEVEL_KEYS: [&str; 6] = [
    "kubeconfig",
    "log_format",
    "log_filter",
    "csi_node",
    "approver",
    "issuer",
];

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Kubeconfig path; empty means KUBECONFIG, ~/.kube/config or in-cluster.
    pub kubeconfig: Option<PathBuf>,
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
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            csi_node: Default::default(),
            approver: Default::default(),
            issuer: Default::default(),
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn every_sample_config_parses_and_validates() {
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
                "csi-node" => {
                    config.csi_node.validate().unwrap();
                }
                "approver" => {
                    config.approver.validate().unwrap();
                }
                "issuer" => {
                    config.issuer.validate().unwrap();
                }
                "dev" => {
                    config.approver.validate().unwrap();
                }
                other => panic!("unexpected sample {other}.toml: add it to this test"),
            }
            seen += 1;
        }
        assert!(seen >= 4, "expected a sample per role, found {seen}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[csi_node]\nnode_idd = \"x\"\n").unwrap();
        let err = load(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("node_idd"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[csi_node]\nnode_id = \"from-file\"\nduration = \"2h\"\n",
        )
        .unwrap();
        let config = load(Some(&path), &[("csi_node.node_id", "from-flag".into())]).unwrap();
        assert_eq!(config.csi_node.node_id, "from-flag");
        assert_eq!(config.csi_node.duration, "2h");
    }

    #[test]
    fn environment_overrides_the_file_and_foreign_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[csi_node]\nnode_id = \"from-file\"\n")?;
            jail.set_env("NICO_CSI_NODE__NODE_ID", "from-env");
            jail.set_env("NICO_APPROVER__MAX_DURATION", "12h");
            // Set by Kubernetes for a Service named nico-identity-webhook, and by clap.
            jail.set_env("NICO_IDENTITY_WEBHOOK_SERVICE_HOST", "10.0.0.1");
            jail.set_env("NICO_CONFIG", "c.toml");
            let config = load(Some(Path::new("c.toml")), &[]).map_err(|e| e.to_string())?;
            assert_eq!(config.csi_node.node_id, "from-env");
            assert_eq!(config.approver.max_duration, "12h");
            jail.set_env("NICO_CSI_NODE__NO_SUCH_KEY", "x");
            let err = load(Some(Path::new("c.toml")), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("no_such_key"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load(Some(Path::new("/nonexistent/nico.toml")), &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/nico.toml"));
    }
}
