//! Project automation, run as `cargo xtask <command>`.
//!
//! - `codegen [--check]`: regenerate the committed CSI gRPC code from its `.proto`, or fail when
//!   the committed code has drifted from it.
//! - `test`: every test of the project, the command CI runs (installing the OpenBao server
//!   the issuer's tests need when it is missing).
//! - `bench <name>`: a benchmark on a release build; its figures go into BENCHMARKS.md.
//! - `fuzz [--time SECONDS] [--target NAME]`: the fuzz targets for longer than CI runs them,
//!   round after round with fresh seeds; cases run and failures per target.
//! - `soak [--pods N] [--duration D] [--out FILE]`: pods churning for a fixed time with every
//!   role as its own release-built process; throughput, latency, renewals and memory.
//! - `chart [--update]`: the Helm chart's tests with Helm's engine, or a refresh of their
//!   snapshots.
//! - `docs [--check]`: regenerate the CLI reference (docs/cli.md), or fail when it drifted.
//! - `kind-up [--dry-run]`: a kind cluster with the chart installed and a demo pod.

mod bench;
mod chart;
mod codegen;
mod docs;
mod fuzz;
mod kind;
mod openbao;
mod soak;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "nico-identity project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Regenerate generated sources (CSI gRPC code).
    Codegen {
        /// Fail instead of writing when the committed files differ from fresh output.
        #[arg(long)]
        check: bool,
    },
    /// Run a benchmark on a release build (see BENCHMARKS.md).
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        name: bench::Bench,
    },
    /// Pods churning on the dev cluster, every role its own process (not part of `test`).
    Soak(soak::SoakArgs),
    /// Run the fuzz targets for a fixed time with many cases and fresh seeds.
    Fuzz(fuzz::FuzzArgs),
    /// Test the Helm chart with Helm's engine (part of `test`).
    Chart {
        /// Rewrite the committed snapshots of the rendered chart instead of comparing.
        #[arg(long)]
        update: bool,
    },
    /// Regenerate the CLI reference, docs/cli.md.
    Docs {
        /// Fail instead of writing when the committed file differs from fresh output.
        #[arg(long)]
        check: bool,
    },
    /// Create a kind cluster, build and load the image, install the chart, run a demo pod.
    KindUp {
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run every test: drift checks, then the whole test suite.
    Test {
        /// Extra arguments passed to the test runner (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Codegen { check } => codegen::run(check),
        Command::Test { args } => test::run(&args),
        Command::Bench { name } => bench::run(name),
        Command::Soak(args) => soak::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Chart { update } => chart::run(update),
        Command::Docs { check } => docs::run(check),
        Command::KindUp { dry_run } => kind::run(dry_run),
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // invariant: xtask/Cargo.toml sits directly under the workspace root.
    manifest_dir
        .parent()
        .expect("xtask has a parent directory")
        .to_owned()
}
