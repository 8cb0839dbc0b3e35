//! The `nico-identity` command line: one binary, one subcommand per role.
//!
//! Every role reads the same configuration file (a TOML file with one section per role),
//! overridden by `NICO_` environment variables and then by flags. `main.rs` only installs the
//! TLS provider and calls [`main`].

mod args;
mod config;
mod inspect;
mod roles;
mod spiffe_id;

pub mod dev;

pub use args::{Cli, Command};
pub use config::{FileConfig, LoadError, load};

use std::process::ExitCode;

use clap::Parser as _;

/// Exit status for bad usage or configuration (as clap uses for bad flags).
pub const EXIT_USAGE: u8 = 2;

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    run(cli)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            print_line(&format!("nico-identity {}", env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        Command::SpiffeId(command) => spiffe_id::run(&command),
        command => {
            // The node driver runs on every node beside the workloads: one thread keeps its
            // footprint small and is plenty for I/O-bound work (slow RSA key generation goes to
            // the blocking pool). The cluster-wide roles use every core they are given.
            let mut builder = if matches!(command, Command::CsiNode(_)) {
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            };
            let runtime = match builder.enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: failed to start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(roles::run(cli.global, command))
        }
    }
}

/// Writes one line to stdout (the commands' output, as opposed to logs on stderr).
#[allow(clippy::print_stdout, reason = "command output belongs on stdout")]
pub(crate) fn print_line(line: &str) {
    println!("{line}");
}
