//! `cargo xtask kind-up`: a local kind cluster running the chart, and a demo pod that prints
//! its SPIFFE ID.
//!
//! It creates the cluster (unless it exists), builds the image from the Dockerfile, loads it
//! into the cluster's nodes, installs (or upgrades) the chart with Helm's engine, and runs a
//! pod that mounts the volume and runs `nico-identity inspect` on it. It needs `docker` (with
//! a running engine), `kind` and `kubectl`; when one is missing it says which and stops.
//! `--dry-run` prints the commands instead of running them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::chart::{Bridge, CHART, RELEASE, RELEASE_NAMESPACE};

/// The kind cluster's name; its kubectl context is `kind-<name>`.
pub(crate) const CLUSTER: &str = "nico-identity";
/// The image built and loaded into the cluster.
pub(crate) const IMAGE: &str = "nico-identity:dev";
/// Where the demo pod runs.
pub(crate) const DEMO_NAMESPACE: &str = "spiffe-demo";

/// The tools, and what each is for.
const TOOLS: [(&str, &str); 3] = [
    ("docker", "builds the image and runs kind's nodes"),
    ("kind", "creates the cluster and loads the image into it"),
    ("kubectl", "runs the demo pod and reads its output"),
];

/// One command of the plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// What it does, printed before it runs.
    pub(crate) what: &'static str,
    /// The program and its arguments.
    pub(crate) argv: Vec<String>,
    /// Fed to its standard input.
    pub(crate) stdin: Option<String>,
}

impl Step {
    fn new(what: &'static str, argv: &[&str]) -> Self {
        Self {
            what,
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            stdin: None,
        }
    }

    fn with_stdin(mut self, stdin: String) -> Self {
        self.stdin = Some(stdin);
        self
    }
}

pub(crate) fn run(dry_run: bool) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    if !dry_run {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(message) = missing_tools(&path) {
            bail!("{message}");
        }
        if !docker_engine_answers() {
            bail!(
                "docker is installed but its engine does not answer (`docker info` failed): \
                 start Docker (or point DOCKER_HOST at a running engine) and try again"
            );
        }
    }
    let bridge = Bridge::ensure(&root)?;
    let exists = !dry_run && cluster_exists()?;
    for step in plan(&root, bridge.python(), bridge.script(), exists) {
        eprintln!("kind-up: {}", step.what);
        eprintln!("  $ {}", step.argv.join(" "));
        if dry_run {
            continue;
        }
        execute(&step)?;
    }
    if !dry_run {
        eprintln!(
            "kind-up: done. The cluster's context is kind-{CLUSTER}; delete it with \
             `kind delete cluster --name {CLUSTER}`"
        );
    }
    Ok(())
}

/// A message naming every missing tool, or `None` when all are on `path`.
pub(crate) fn missing_tools(path: &std::ffi::OsStr) -> Option<String> {
    let missing: Vec<_> = TOOLS
        .iter()
        .filter(|(tool, _)| !std::env::split_paths(path).any(|dir| is_executable(&dir.join(tool))))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut message = String::from("cargo xtask kind-up needs tools that are not installed:\n");
    for (tool, why) in &missing {
        message.push_str(&format!("  - {tool}: {why}\n"));
    }
    message.push_str(
        "Install them (https://kind.sigs.k8s.io/docs/user/quick-start/ lists all three) and run \
         it again. Without them, `cargo run -- dev` runs every role on this machine.",
    );
    Some(message)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn docker_engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn cluster_exists() -> anyhow::Result<bool> {
    let output = Command::new("kind")
        .args(["get", "clusters"])
        .output()
        .context("failed to run kind get clusters")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.trim() == CLUSTER))
}

fn execute(step: &Step) -> anyhow::Result<()> {
    let (program, args) = step.argv.split_first().context("an empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if step.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .with_context(|| format!("failed to start {program}"))?;
    if let (Some(text), Some(mut stdin)) = (&step.stdin, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{} failed ({status}): {}", step.what, step.argv.join(" "));
    }
    Ok(())
}

/// The chart values for a one-node kind cluster: the local image, every role once, the
/// CRDs (kind has no cert-manager) and the webhook (which stamps the requester).
pub(crate) fn values() -> Value {
    json!({
        "image": {"repository": "nico-identity", "tag": "dev", "pullPolicy": "Never"},
        "logFormat": "text",
        "approver": {"replicas": 1},
        "issuer": {"replicas": 1},
        "webhook": {"enabled": true, "replicas": 1},
        "crds": {
            "certificateRequest": {"enabled": true},
            "certificateRequestPolicy": {"enabled": true},
        },
    })
}

/// The demo: a namespace, an account allowed to request its certificate, and a pod that
/// mounts the volume and prints what is in it.
pub(crate) fn demo_manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {DEMO_NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
  namespace: {DEMO_NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: spiffe-requester
  namespace: {DEMO_NAMESPACE}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {RELEASE}-requester
subjects:
  - kind: ServiceAccount
    name: web
    namespace: {DEMO_NAMESPACE}
---
apiVersion: v1
kind: Pod
metadata:
  name: spiffe-demo
  namespace: {DEMO_NAMESPACE}
spec:
  serviceAccountName: web
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    fsGroup: 65532
    seccompProfile: {{type: RuntimeDefault}}
  containers:
    - name: inspect
      image: {IMAGE}
      imagePullPolicy: Never
      args: [inspect, /var/run/secrets/spiffe.io]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {{drop: [ALL]}}
      volumeMounts:
        - {{name: spiffe, mountPath: /var/run/secrets/spiffe.io, readOnly: true}}
  volumes:
    - name: spiffe
      csi:
        driver: spiffe.csi.cert-manager.io
        readOnly: true
"#
    )
}

/// The commands `kind-up` runs, in order.
pub(crate) fn plan(root: &Path, python: &Path, bridge: &Path, cluster_exists: bool) -> Vec<Step> {
    let context = format!("kind-{CLUSTER}");
    let root_arg = root.display().to_string();
    let dockerfile = root.join("Dockerfile").display().to_string();
    let install = json!({
        "op": "install",
        "chart": PathBuf::from(root).join(CHART),
        "values": values(),
        "name": RELEASE,
        "namespace": RELEASE_NAMESPACE,
        "context": context,
    });
    let kubectl = |what, args: &[&str]| {
        let mut argv = vec!["kubectl", "--context", &context];
        argv.extend(args);
        Step::new(what, &argv)
    };
    let mut steps = Vec::new();
    if !cluster_exists {
        steps.push(Step::new(
            "create the kind cluster",
            &[
                "kind", "create", "cluster", "--name", CLUSTER, "--wait", "120s",
            ],
        ));
    }
    steps.extend([
        Step::new(
            "build the image",
            &[
                "docker",
                "build",
                "--tag",
                IMAGE,
                "--file",
                &dockerfile,
                &root_arg,
            ],
        ),
        Step::new(
            "load the image into the cluster's nodes",
            &["kind", "load", "docker-image", IMAGE, "--name", CLUSTER],
        ),
        Step::new(
            "install the chart (Helm's engine; an upgrade when the release exists)",
            &[&python.display().to_string(), &bridge.display().to_string()],
        )
        .with_stdin(install.to_string()),
        kubectl(
            "remove an earlier demo pod",
            &[
                "delete",
                "pod",
                "spiffe-demo",
                "--namespace",
                DEMO_NAMESPACE,
                "--ignore-not-found",
            ],
        ),
        kubectl("start the demo pod", &["apply", "--filename", "-"]).with_stdin(demo_manifest()),
        kubectl(
            "wait for the demo pod to read its certificate",
            &[
                "wait",
                "--namespace",
                DEMO_NAMESPACE,
                "--for=jsonpath={.status.phase}=Succeeded",
                "--timeout=300s",
                "pod/spiffe-demo",
            ],
        ),
        kubectl(
            "print the demo pod's SPIFFE ID",
            &["logs", "--namespace", DEMO_NAMESPACE, "spiffe-demo"],
        ),
    ]);
    steps
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn argv(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.argv.join(" ")).collect()
    }

    #[test]
    fn the_plan_creates_a_missing_cluster_and_reuses_an_existing_one() {
        let root = Path::new("/repo");
        let (py, bridge) = (Path::new("/venv/bin/python"), Path::new("/repo/bridge.py"));
        let fresh = argv(&plan(root, py, bridge, false));
        assert_eq!(
            fresh,
            [
                "kind create cluster --name nico-identity --wait 120s",
                "docker build --tag nico-identity:dev --file /repo/Dockerfile /repo",
                "kind load docker-image nico-identity:dev --name nico-identity",
                "/venv/bin/python /repo/bridge.py",
                "kubectl --context kind-nico-identity delete pod spiffe-demo --namespace \
                 spiffe-demo --ignore-not-found",
                "kubectl --context kind-nico-identity apply --filename -",
                "kubectl --context kind-nico-identity wait --namespace spiffe-demo \
                 --for=jsonpath={.status.phase}=Succeeded --timeout=300s pod/spiffe-demo",
                "kubectl --context kind-nico-identity logs --namespace spiffe-demo spiffe-demo",
            ]
        );
        let again = argv(&plan(root, py, bridge, true));
        assert_eq!(again, fresh[1..]);
    }

    #[test]
    fn the_install_step_names_the_chart_release_and_context() {
        let steps = plan(Path::new("/repo"), Path::new("py"), Path::new("b.py"), true);
        let install: Value = serde_json::from_str(steps[2].stdin.as_deref().unwrap()).unwrap();
        assert_eq!(install["op"], "install");
        assert_eq!(install["chart"], "/repo/charts/nico-identity");
        assert_eq!(install["name"], RELEASE);
        assert_eq!(install["namespace"], RELEASE_NAMESPACE);
        assert_eq!(install["context"], "kind-nico-identity");
        assert_eq!(install["values"], values());
    }

    #[test]
    fn missing_tools_are_named_with_what_they_are_for() {
        let empty = tempfile::tempdir().unwrap();
        let message = missing_tools(empty.path().as_os_str()).unwrap();
        for (tool, why) in TOOLS {
            assert!(message.contains(&format!("{tool}: {why}")), "{message}");
        }
        assert!(message.contains("cargo run -- dev"), "{message}");

        // Only kind missing: only kind is named.
        let some = tempfile::tempdir().unwrap();
        for tool in ["docker", "kubectl"] {
            let path = some.path().join(tool);
            std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let message = missing_tools(some.path().as_os_str()).unwrap();
        assert!(message.contains("kind: "), "{message}");
        assert!(
            !message.contains("docker: ") && !message.contains("kubectl: "),
            "{message}"
        );

        // A file that is not executable does not count.
        let kind = some.path().join("kind");
        std::fs::write(&kind, "").unwrap();
        assert!(missing_tools(some.path().as_os_str()).is_some());
        std::fs::set_permissions(&kind, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(missing_tools(some.path().as_os_str()), None);
    }

    #[test]
    fn the_image_context_holds_what_the_dockerfile_copies() {
        let root = crate::workspace_root();
        let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
        assert!(
            dockerfile.contains("--locked"),
            "builds must use Cargo.lock"
        );
        assert!(dockerfile.contains("-p nico-identity"));
        let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
        for excluded in ["target", ".git", ".nico-dev"] {
            assert!(
                ignore
                    .lines()
                    .any(|l| l.trim_start_matches('/') == excluded),
                "{excluded} must stay out of the build context"
            );
        }
        // Every workspace member's manifest is needed for `cargo build --locked`.
        for member in [
            "Cargo.toml",
            "Cargo.lock",
            "bin",
            "crates",
            "tests",
            "xtask",
        ] {
            assert!(root.join(member).exists(), "{member} missing");
            assert!(
                !ignore.lines().any(|l| l.trim_start_matches('/') == member),
                "{member} must be in the build context"
            );
        }
    }

    #[test]
    fn the_kind_values_demo_pod_and_install_request_agree_with_the_chart() {
        let root = crate::workspace_root();
        let bridge = Bridge::ensure(&root).unwrap();
        let chart = root.join(CHART);
        let manifests = crate::chart::render(&bridge, &chart, &values()).unwrap();
        let objects = crate::chart::parse(&bridge, &manifests).unwrap();
        let workloads: Vec<_> = objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
            .collect();
        assert_eq!(workloads.len(), 4, "every role runs in the kind cluster");
        for workload in &workloads {
            let container = &workload["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["image"], IMAGE);
            assert_eq!(container["imagePullPolicy"], "Never");
        }
        let driver = objects.iter().find(|o| o["kind"] == "CSIDriver").unwrap();
        let requester = objects
            .iter()
            .find(|o| {
                o["kind"] == "ClusterRole" && o["metadata"]["name"] == "nico-identity-requester"
            })
            .expect("the demo binds the requester ClusterRole");
        assert_eq!(requester["rules"][0]["verbs"], json!(["create"]));

        let demo = bridge
            .call(&json!({"op": "parse", "documents": [demo_manifest()]}))
            .unwrap();
        let pod = demo["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "Pod")
            .unwrap();
        assert_eq!(
            pod["spec"]["volumes"][0]["csi"]["driver"],
            driver["metadata"]["name"]
        );
        let validated = bridge
            .call(&json!({
                "op": "validate", "documents": [demo_manifest()], "kube_versions": ["1.33.0"],
            }))
            .unwrap();
        assert_eq!(validated["problems"], json!([]), "{validated}");
        assert_eq!(validated["unchecked"], json!([]), "{validated}");

        // One test, not two: each runs in its own process and may have to install the
        // tools, and two pip installs into one virtualenv at once would collide.
        let steps = plan(&root, bridge.python(), bridge.script(), true);
        let mut install: Value = serde_json::from_str(steps[2].stdin.as_deref().unwrap()).unwrap();
        // The same request, without a cluster: Helm renders and checks it client-side.
        install["dry_run"] = json!("client");
        let answer = bridge.call(&install).unwrap();
        let manifest = answer["manifest"].as_str().unwrap();
        assert!(manifest.contains("kind: DaemonSet"), "{answer}");
        assert!(manifest.contains("image: nico-identity:dev"), "{answer}");
    }
}
