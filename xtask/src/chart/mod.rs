//! `cargo xtask chart [--update]`: the Helm chart's tests, with Helm's real engine.
//!
//! Lint; render the defaults, each single-role install and a few variants; reject invalid
//! values by the schema, naming the field; validate every rendered object against the
//! Kubernetes schemas (strict) and our custom resources against our own CRDs; compare the
//! output with the committed snapshots in `charts/snapshots/` (`--update` rewrites them);
//! run `nico-identity <role> --check-config` on each rendered configuration with the
//! environment its pod spec sets; keep the sample policy equal to `config/policies/`; and
//! check that what our types write, and the seed's policy, fit the chart's CRDs; and run
//! every role as its own process against the dev cluster with only the chart's RBAC.

mod bridge;
mod cases;
mod config_check;
mod rbac;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub(crate) use bridge::Bridge;
pub(crate) use cases::{Case, RELEASE, RELEASE_NAMESPACE};

/// The chart, relative to the workspace root.
pub(crate) const CHART: &str = "charts/nico-identity";
/// The committed rendered output, one file per case.
const SNAPSHOTS: &str = "charts/snapshots";
/// Kubernetes versions the objects must be valid for: the oldest supported, the newest known.
const KUBE_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];
/// Kinds no schema is available for offline, checked for shape by the API server only.
const UNCHECKED_KINDS: [&str; 1] = ["monitoring.coreos.com/v1 ServiceMonitor"];

pub(crate) fn run(update: bool) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bridge = Bridge::ensure(&root)?;
    let chart = root.join(CHART);
    let mut failures = Vec::new();

    sync_policy_copy(&root, update, &mut failures)?;
    lint(&bridge, &chart, &mut failures)?;
    let binary = config_check::build_binary(&root)?;
    let mut seen_custom = Vec::new();
    for case in cases::rendered() {
        let manifests =
            render(&bridge, &chart, &case.values).with_context(|| format!("case {}", case.name))?;
        let output = snapshot_text(&manifests);
        compare_snapshot(&root, case.name, &output, update, &mut failures)?;
        let objects = parse(&bridge, &manifests)?;
        check_roles(&case, &objects, &mut failures);
        validate(&bridge, &case, &manifests, &mut seen_custom, &mut failures)?;
        config_check::run(&binary, &case, &objects, &mut failures)?;
        if case.name == "everything" {
            compare_sample_policy(&bridge, &root, &objects, &mut failures)?;
        }
        if case.name == "defaults" {
            rbac::run(&binary, &objects, &mut failures)?;
        }
    }
    documented_installs(&bridge, &root, &chart, &mut failures)?;
    crd_conformance(&bridge, &root, &chart, &mut failures)?;
    if !seen_custom.iter().any(|k| k == "CertificateRequestPolicy") {
        failures
            .push("no case rendered a CertificateRequestPolicy to check against its CRD".into());
    }
    for (name, values, field) in cases::rejected() {
        match render(&bridge, &chart, &values) {
            Ok(_) => failures.push(format!("invalid values {name} were accepted: {values}")),
            Err(e) if !e.to_string().contains(field) => {
                failures.push(format!(
                    "invalid values {name}: the error does not name {field}: {e}"
                ));
            }
            Err(_) => eprintln!("chart: invalid values {name} rejected, naming {field}"),
        }
    }

    if failures.is_empty() {
        eprintln!("chart: every check passed");
        return Ok(());
    }
    for failure in &failures {
        eprintln!("chart: {failure}");
    }
    bail!("{} chart check(s) failed", failures.len());
}

fn lint(bridge: &Bridge, chart: &Path, failures: &mut Vec<String>) -> anyhow::Result<()> {
    for case in cases::rendered().iter().filter(|c| c.lint) {
        let report = bridge.call(&json!({
            "op": "lint", "chart": chart, "values": case.values,
        }))?;
        let errors = report["errors"].as_array().cloned().unwrap_or_default();
        // Severity 1 is informational ("icon is recommended"); 2 and 3 are findings.
        let findings: Vec<_> = report["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|m| !m.starts_with("1 "))
            .collect();
        if !errors.is_empty() || !findings.is_empty() {
            failures.push(format!("lint of {}: {errors:?} {findings:?}", case.name));
        } else {
            eprintln!("chart: lint of {} is clean", case.name);
        }
    }
    Ok(())
}

/// Renders the chart as `helm template` would for an install of release `nico-identity`.
pub(crate) fn render(
    bridge: &Bridge,
    chart: &Path,
    values: &Value,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let answer = bridge.call(&json!({
        "op": "render", "chart": chart, "values": values,
        "name": RELEASE, "namespace": RELEASE_NAMESPACE,
    }))?;
    if let Some(error) = answer["error"].as_str() {
        bail!("{error}");
    }
    match answer["manifests"].clone() {
        Value::Object(manifests) => Ok(manifests),
        other => bail!("unexpected answer from the renderer: {other}"),
    }
}

/// Every non-empty template in path order, each under a `# Source:` line.
fn snapshot_text(manifests: &serde_json::Map<String, Value>) -> String {
    let mut paths: Vec<_> = manifests.keys().collect();
    paths.sort();
    let mut out = String::new();
    for path in paths {
        let text = manifests[path].as_str().unwrap_or_default().trim();
        if !text.is_empty() {
            let _ = write!(out, "# Source: {path}\n{text}\n");
        }
    }
    out
}

fn compare_snapshot(
    root: &Path,
    name: &str,
    output: &str,
    update: bool,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let path = root.join(SNAPSHOTS).join(format!("{name}.yaml"));
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == output {
        return Ok(());
    }
    if update {
        std::fs::create_dir_all(root.join(SNAPSHOTS))?;
        std::fs::write(&path, output).with_context(|| format!("failed to write {path:?}"))?;
        eprintln!("chart: wrote {}", path.display());
    } else {
        failures.push(format!(
            "rendered output of case {name} differs from {SNAPSHOTS}/{name}.yaml: review the \
             change and run `cargo xtask chart --update`"
        ));
    }
    Ok(())
}

pub(crate) fn parse(
    bridge: &Bridge,
    manifests: &serde_json::Map<String, Value>,
) -> anyhow::Result<Vec<Value>> {
    let documents: Vec<_> = manifests
        .iter()
        .filter(|(path, _)| !path.ends_with("NOTES.txt"))
        .map(|(_, text)| text.clone())
        .collect();
    let answer = bridge.call(&json!({"op": "parse", "documents": documents}))?;
    Ok(answer["objects"].as_array().cloned().unwrap_or_default())
}

/// The workloads rendered are exactly the roles the case enables.
fn check_roles(case: &Case, objects: &[Value], failures: &mut Vec<String>) {
    let mut workloads: Vec<String> = objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .filter_map(|o| o["metadata"]["labels"]["app.kubernetes.io/component"].as_str())
        .map(str::to_owned)
        .collect();
    workloads.sort();
    let mut expected: Vec<String> = case.roles.iter().map(|r| (*r).to_owned()).collect();
    expected.sort();
    if workloads != expected {
        failures.push(format!(
            "case {} rendered workloads {workloads:?}, expected {expected:?}",
            case.name
        ));
    }
}

fn validate(
    bridge: &Bridge,
    case: &Case,
    manifests: &serde_json::Map<String, Value>,
    seen_custom: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let documents: Vec<_> = manifests
        .iter()
        .filter(|(path, _)| !path.ends_with("NOTES.txt"))
        .map(|(_, text)| text.clone())
        .collect();
    let answer = bridge.call(&json!({
        "op": "validate", "documents": documents, "kube_versions": KUBE_VERSIONS,
    }))?;
    for problem in answer["problems"].as_array().into_iter().flatten() {
        failures.push(format!(
            "case {}: {}",
            case.name,
            problem.as_str().unwrap_or("?")
        ));
    }
    for kind in answer["unchecked"].as_array().into_iter().flatten() {
        let kind = kind.as_str().unwrap_or("?");
        if !UNCHECKED_KINDS.contains(&kind) {
            failures.push(format!("case {}: no schema to validate {kind}", case.name));
        }
    }
    seen_custom.extend(
        answer["custom"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned),
    );
    eprintln!("chart: case {} renders valid objects", case.name);
    Ok(())
}

/// Every `helm install` or `helm upgrade` of this chart the documents show renders with its
/// `--set` values.
fn documented_installs(
    bridge: &Bridge,
    root: &Path,
    chart: &Path,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    for document in crate::docs::DOCUMENTS {
        let text = std::fs::read_to_string(root.join(document))
            .with_context(|| format!("failed to read {document}"))?;
        for words in crate::docs::shell_commands(&text) {
            if words.first().map(String::as_str) != Some("helm")
                || !words.iter().any(|w| w == CHART)
            {
                continue;
            }
            let expressions: Vec<_> = words
                .windows(2)
                .filter(|pair| pair[0] == "--set")
                .map(|pair| pair[1].clone())
                .collect();
            let values = bridge.call(&json!({"op": "set", "expressions": expressions}))?;
            match render(bridge, chart, &values["values"]) {
                Ok(_) => eprintln!("chart: documented `{}` renders", words.join(" ")),
                Err(e) => failures.push(format!("{document}: `{}`: {e}", words.join(" "))),
            }
        }
    }
    Ok(())
}

/// A CertificateRequest as nico-k8s-types writes it (every field and condition filled) and
/// the seed's policy file are valid against the chart's CRDs.
fn crd_conformance(
    bridge: &Bridge,
    root: &Path,
    chart: &Path,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let values = json!({"crds": {
        "certificateRequest": {"enabled": true},
        "certificateRequestPolicy": {"enabled": true},
    }});
    let manifests = render(bridge, chart, &values)?;
    let mut documents: Vec<Value> = manifests
        .iter()
        .filter(|(path, _)| path.contains("/crds/"))
        .map(|(_, text)| text.clone())
        .collect();
    let pem = b"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n";
    let condition = |kind: &str| {
        json!({"type": kind, "status": "True", "reason": "Reason", "message": "m",
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    let written: nico_k8s_types::CertificateRequest = serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {
            "request": base64_of(pem),
            "issuerRef": {"name": "nico-identity", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            "duration": "1h",
            "usages": nico_k8s_types::SPIFFE_USAGES,
            "isCA": false,
            "username": "system:serviceaccount:demo:web",
            "uid": "0000",
            "groups": ["system:serviceaccounts"],
            "extra": {"authentication.kubernetes.io/pod-name": ["web-0"]},
        },
        "status": {
            "conditions": [condition("Approved"), condition("Ready")],
            "certificate": base64_of(pem),
            "ca": base64_of(pem),
            "failureTime": "2026-01-01T00:00:00Z",
        },
    }))
    .context("failed to read the sample CertificateRequest")?;
    documents.push(Value::String(serde_json::to_string(&written)?));
    let seed = root.join("config/policies/service-tls.yaml");
    documents.push(Value::String(std::fs::read_to_string(&seed)?));
    let answer = bridge.call(&json!({
        "op": "validate", "documents": documents, "kube_versions": KUBE_VERSIONS,
    }))?;
    for problem in answer["problems"].as_array().into_iter().flatten() {
        failures.push(format!(
            "CRD conformance: {}",
            problem.as_str().unwrap_or("?")
        ));
    }
    if answer["custom"] != json!(["CertificateRequest", "CertificateRequestPolicy"]) {
        failures.push(format!("CRD conformance checked only {}", answer["custom"]));
    } else {
        eprintln!("chart: our CertificateRequest and the seed's policy fit the CRDs");
    }
    Ok(())
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The seed's policy, copied into the chart (templates can read only the chart's files).
const POLICY_SOURCE: &str = "config/policies/service-tls.yaml";
const POLICY_COPY: &str = "charts/nico-identity/files/service-tls-policy.yaml";

fn sync_policy_copy(root: &Path, update: bool, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(root.join(POLICY_SOURCE))
        .with_context(|| format!("failed to read {POLICY_SOURCE}"))?;
    let copy = std::fs::read_to_string(root.join(POLICY_COPY)).unwrap_or_default();
    if source == copy {
        return Ok(());
    }
    if update {
        std::fs::write(root.join(POLICY_COPY), source)
            .with_context(|| format!("failed to write {POLICY_COPY}"))?;
        eprintln!("chart: wrote {POLICY_COPY}");
    } else {
        failures.push(format!(
            "{POLICY_COPY} differs from {POLICY_SOURCE}: run `cargo xtask chart --update`"
        ));
    }
    Ok(())
}

/// The chart's sample policy says what `config/policies/service-tls.yaml` says.
fn compare_sample_policy(
    bridge: &Bridge,
    root: &Path,
    objects: &[Value],
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let path = root.join(POLICY_COPY);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {path:?}"))?;
    let seed = bridge.call(&json!({"op": "parse", "documents": [text]}))?;
    let spec_of = |objects: &[Value]| {
        objects
            .iter()
            .find(|o| o["kind"] == "CertificateRequestPolicy")
            .map(|o| o["spec"].clone())
    };
    let seed_spec = spec_of(seed["objects"].as_array().map_or(&[], Vec::as_slice));
    let chart_spec = spec_of(objects);
    if seed_spec.is_none() || seed_spec != chart_spec {
        failures.push(
            "the chart's sample policy does not render the spec of \
             config/policies/service-tls.yaml"
                .into(),
        );
    }
    Ok(())
}
