//! Helm's real engine (PyPI `helm-python-sdk`) and the Kubernetes schemas (PyPI
//! `kubernetes-validate`), reached through `bridge.py` in a virtualenv under `target/`,
//! installed on first use so a clean checkout needs nothing but Python 3.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

/// The pinned packages: Helm v4's engine, and the offline Kubernetes schemas.
const PACKAGES: [&str; 2] = ["helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0"];

/// The bridge script, kept beside this file.
const SCRIPT: &str = "xtask/src/chart/bridge.py";

/// A Python with the chart tools installed.
#[derive(Debug)]
pub(crate) struct Bridge {
    python: PathBuf,
    script: PathBuf,
}

impl Bridge {
    /// The tools' virtualenv under `target/chart-tools`, created and filled when missing.
    pub(crate) fn ensure(root: &Path) -> anyhow::Result<Self> {
        let venv = root.join("target/chart-tools/venv");
        let python = venv.join("bin/python");
        let bridge = Self {
            python,
            script: root.join(SCRIPT),
        };
        if bridge.installed() {
            return Ok(bridge);
        }
        eprintln!("installing {PACKAGES:?} into {}", venv.display());
        let venv_arg = venv.to_str().context("the target directory is not UTF-8")?;
        run(Path::new("python3"), &["-m", "venv", venv_arg])?;
        let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
        args.extend(PACKAGES);
        run(&venv.join("bin/pip"), &args)?;
        if !bridge.installed() {
            bail!("the chart tools were installed into {venv_arg} but do not import");
        }
        Ok(bridge)
    }

    /// Whether the pinned versions import.
    fn installed(&self) -> bool {
        let check = "import importlib.metadata as m, sys; \
                     sys.exit(0 if [m.version('helm-python-sdk'), \
                     m.version('kubernetes-validate')] == sys.argv[1:] else 1)";
        let versions = PACKAGES.map(|p| p.split_once("==").map_or("", |(_, v)| v));
        self.python.exists()
            && Command::new(&self.python)
                .args(["-c", check])
                .args(versions)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Sends one request and returns the answer.
    pub(crate) fn call(&self, request: &Value) -> anyhow::Result<Value> {
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {}", self.python.display()))?;
        let body = serde_json::to_vec(request)?;
        // invariant: stdin was requested as a pipe just above.
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(&body)
            .context("failed to send the request to the chart bridge")?;
        drop(stdin);
        let output = child
            .wait_with_output()
            .context("failed to wait for the chart bridge")?;
        if !output.status.success() {
            bail!(
                "the chart bridge failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).context("failed to read the chart bridge's answer")
    }

    /// The interpreter, for commands that call the bridge script themselves.
    pub(crate) fn python(&self) -> &Path {
        &self.python
    }

    /// The bridge script.
    pub(crate) fn script(&self) -> &Path {
        &self.script
    }
}

fn run(program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("failed to run {}", program.display()))?;
    if !status.success() {
        bail!("{} {args:?} failed ({status})", program.display());
    }
    Ok(())
}
