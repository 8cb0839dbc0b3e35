//! `cargo xtask test`: the one command that runs every test of the project.

use std::process::Command;

use anyhow::{Context, bail};

pub(crate) fn run(extra: &[String]) -> anyhow::Result<()> {
    crate::codegen::run(true)?;
    crate::docs::run(true)?;
    check_testdata_copy()?;
    // The chart against Helm's engine, the Kubernetes schemas and the binary's config check.
    crate::chart::run(false)?;

    let root = crate::workspace_root();
    // The issuer's tests run against a real OpenBao server.
    let bao = crate::openbao::ensure_bao(&root)?;
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut cmd = Command::new("cargo");
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        eprintln!("cargo-nextest not found, falling back to cargo test");
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    cmd.args(extra).current_dir(&root).env("NICO_BAO", &bao);
    let status = cmd.status().context("failed to start the test runner")?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    // Doc tests are not run by nextest.
    if nextest {
        let status = Command::new("cargo")
            .args(["test", "--workspace", "--doc"])
            .current_dir(&root)
            .status()
            .context("failed to start doc tests")?;
        if !status.success() {
            bail!("doc tests failed ({status})");
        }
    }
    Ok(())
}

/// The repository carries a copy of the workplace's shared test data so a clean checkout is
/// self-contained; when the original sits beside the checkout, the copy must equal it.
fn check_testdata_copy() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let shared = root.join("../shared/testdata");
    if !shared.is_dir() {
        eprintln!("../shared/testdata not found beside the checkout: using the committed copy");
        return Ok(());
    }
    let mut stale = Vec::new();
    compare_dirs(&shared, &root.join("testdata"), &mut stale)?;
    if !stale.is_empty() {
        bail!(
            "testdata/ differs from ../shared/testdata in {stale:?}: refresh it as \
             testdata/README.md says"
        );
    }
    Ok(())
}

fn compare_dirs(
    original: &std::path::Path,
    copy: &std::path::Path,
    stale: &mut Vec<String>,
) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(original)
        .with_context(|| format!("failed to read {}", original.display()))?;
    for entry in entries {
        let entry = entry?;
        let (from, to) = (entry.path(), copy.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            compare_dirs(&from, &to, stale)?;
        } else if std::fs::read(&from).ok() != std::fs::read(&to).ok() {
            stale.push(to.display().to_string());
        }
    }
    Ok(())
}
