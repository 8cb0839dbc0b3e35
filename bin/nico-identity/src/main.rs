//! The `nico-identity` binary: every role lives in `nico-identity-cli`.

fn main() -> std::process::ExitCode {
    nico_identity_cli::main()
}
