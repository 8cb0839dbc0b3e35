//! The nico-identity command line: subcommands, configuration loading and the dev environment.
pub fn main() -> std::process::ExitCode { std::process::ExitCode::SUCCESS }
