//! `cargo xtask test`: the one command that runs every test of the project.

use std::process::Command;

use anyhow::{Context, bail};

pub(crate) fn run(extra: &[String]) -> anyhow::Result<()> {
    crate::codegen::run(true)?;

    let root = crate::workspace_root();
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
    cmd.args(extra).current_dir(&root);
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
