//! `cargo xtask bench <name>`: builds what a benchmark needs in release mode and runs it.

use std::process::Command;

use anyhow::{Context, bail};

/// The benchmarks.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Bench {
    /// The node driver: publish latency, a 110-volume burst, memory and idle wake-ups.
    CsiNode,
}

pub(crate) fn run(bench: Bench) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let cargo = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("cargo")
            .args(args)
            .current_dir(&root)
            .status()
            .context("failed to start cargo")?;
        if !status.success() {
            bail!("cargo {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    match bench {
        Bench::CsiNode => {
            cargo(&["build", "--release", "-p", "nico-identity"])?;
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), std::path::PathBuf::from);
            let binary = target.join("release/nico-identity");
            let status = Command::new("cargo")
                .args(["bench", "-p", "nico-identity-tests", "--bench", "csi_node"])
                .env("NICO_IDENTITY_BIN", &binary)
                .current_dir(&root)
                .status()
                .context("failed to start the benchmark")?;
            if !status.success() {
                bail!("the csi-node benchmark failed ({status})");
            }
            Ok(())
        }
    }
}
