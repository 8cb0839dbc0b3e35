//! Each rendered configuration, run through `nico-identity <role> --check-config` with the
//! environment its pod spec sets: proof that the chart and the binary agree on every key.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use super::Case;

/// Roles whose configuration the binary checks: all of them.
const CHECKED_ROLES: [&str; 4] = ["csi-node", "approver", "issuer", "webhook"];

/// Builds the binary the image ships and returns its path.
pub(crate) fn build_binary(root: &Path) -> anyhow::Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--quiet", "-p", "nico-identity"])
        .current_dir(root)
        .status()
        .context("failed to start cargo")?;
    if !status.success() {
        bail!("cargo build -p nico-identity failed ({status})");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("debug/nico-identity"))
}

pub(crate) fn run(
    binary: &Path,
    case: &Case,
    objects: &[Value],
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    for role in case.roles.iter().filter(|r| CHECKED_ROLES.contains(r)) {
        let Some(config) =
            find(objects, "ConfigMap", role).and_then(|map| map["data"]["config.toml"].as_str())
        else {
            failures.push(format!("case {}: no config.toml for {role}", case.name));
            continue;
        };
        let Some(container) = find_workload(objects, role)
            .and_then(|w| w["spec"]["template"]["spec"]["containers"].get(0))
        else {
            failures.push(format!("case {}: no container for {role}", case.name));
            continue;
        };
        let file = scratch.path().join(format!("{role}.toml"));
        std::fs::write(&file, config)?;
        let mut command = Command::new(binary);
        // The container's arguments, with the file where the pod mounts it.
        for arg in container["args"].as_array().into_iter().flatten() {
            match arg.as_str() {
                Some("/etc/nico-identity/config.toml") => command.arg(&file),
                Some(arg) => command.arg(arg),
                None => command.arg(""),
            };
        }
        command.arg("--check-config");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NICO_") || key == "NODE_NAME" {
                command.env_remove(key);
            }
        }
        for (name, value) in pod_env(container, role) {
            command.env(name, value);
        }
        let output = command.output().context("failed to run nico-identity")?;
        if output.status.success() {
            eprintln!(
                "chart: case {}: {role} --check-config accepts the rendered config",
                case.name
            );
        } else {
            failures.push(format!(
                "case {}: nico-identity {role} --check-config refused the rendered config: {}",
                case.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    Ok(())
}

fn find<'a>(objects: &'a [Value], kind: &str, role: &str) -> Option<&'a Value> {
    objects.iter().find(|o| {
        o["kind"] == kind && o["metadata"]["labels"]["app.kubernetes.io/component"] == role
    })
}

fn find_workload<'a>(objects: &'a [Value], role: &str) -> Option<&'a Value> {
    find(objects, "DaemonSet", role).or_else(|| find(objects, "Deployment", role))
}

/// The container's environment; values from the pod's fields get stand-ins.
pub(crate) fn pod_env(container: &Value, role: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for entry in container["env"].as_array().into_iter().flatten() {
        let Some(name) = entry["name"].as_str() else {
            continue;
        };
        let value = match (
            &entry["value"],
            entry["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Value::String(value), _) => value.clone(),
            (_, Some("spec.nodeName")) => "node-1".to_owned(),
            (_, Some("metadata.name")) => format!("nico-identity-{role}-0"),
            (_, Some("metadata.namespace")) => super::RELEASE_NAMESPACE.to_owned(),
            _ => continue,
        };
        env.push((name.to_owned(), value));
    }
    env
}
