//! `cargo xtask soak`: pods churning for a fixed time on the dev cluster, every role its own
//! process of the release binary; throughput, publish latency, renewals, errors and each
//! role's memory over time (see BENCHMARKS.md, "Soak"). Not part of `cargo xtask test`: the
//! default run takes ten minutes; `--pods 100 --duration 60s` is the short one.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Flags of `soak`, handed on to the benchmark (`tests/benches/soak/`).
#[derive(Debug, clap::Args)]
pub(crate) struct SoakArgs {
    /// Pods kept alive throughout.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// How long the churn runs after every pod has its first certificate (Go duration).
    /// Twenty minutes by default: the approver and issuer keep every Event they sent for six
    /// minutes, and a shorter run ends before their memory has had time to level off.
    #[arg(long, default_value = "20m")]
    duration: String,
    /// Requested certificate lifetime; default 2m, or 1m for runs shorter than 5m.
    #[arg(long)]
    lifetime: Option<String>,
    /// How long a pod lives before it is replaced; default half the duration, at least 2.5
    /// certificate lifetimes.
    #[arg(long)]
    pod_lifetime: Option<String>,
    /// Pods per node; each node is its own csi-node process.
    #[arg(long, default_value_t = 100)]
    pods_per_node: usize,
    /// How often the stand-in kubelet republishes each volume.
    #[arg(long, default_value = "30s")]
    republish: String,
    /// How often every process's resident memory is read.
    #[arg(long, default_value = "5s")]
    sample: String,
    /// Also write the report, with every memory sample, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

impl SoakArgs {
    /// The benchmark's command line.
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--pods".to_owned(),
            self.pods.to_string(),
            "--duration".to_owned(),
            self.duration.clone(),
            "--pods-per-node".to_owned(),
            self.pods_per_node.to_string(),
            "--republish".to_owned(),
            self.republish.clone(),
            "--sample".to_owned(),
            self.sample.clone(),
        ];
        for (flag, value) in [
            ("--lifetime", &self.lifetime),
            ("--pod-lifetime", &self.pod_lifetime),
        ] {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value.clone()]);
            }
        }
        if let Some(out) = &self.out {
            // The benchmark runs in the tests crate's directory: make the path absolute.
            let out = std::path::absolute(out).unwrap_or_else(|_| out.clone());
            args.extend(["--out".to_owned(), out.display().to_string()]);
        }
        args
    }
}

pub(crate) fn run(args: &SoakArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "nico-identity"])
        .current_dir(&root)
        .status()
        .context("failed to start cargo")?;
    if !status.success() {
        bail!("the release build failed ({status})");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let status = Command::new("cargo")
        .args([
            "bench",
            "-p",
            "nico-identity-tests",
            "--bench",
            "soak",
            "--",
        ])
        .args(args.to_args())
        .env("NICO_IDENTITY_BIN", target.join("release/nico-identity"))
        .current_dir(&root)
        .status()
        .context("failed to start the soak benchmark")?;
    if !status.success() {
        bail!("the soak found problems or could not run ({status}): see its report above");
    }
    Ok(())
}
