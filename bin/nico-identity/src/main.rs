//! The `nico-identity` binary. Every role lives in `nico-identity-cli`; this file only picks
//! the TLS provider and hands over.

use std::process::ExitCode;

fn main() -> ExitCode {
    // aws-lc-rs is the one crypto provider in the binary; installing it explicitly keeps
    // rustls from guessing (it panics if it ever finds two).
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a rustls crypto provider was installed before main");
        return ExitCode::FAILURE;
    }
    nico_identity_cli::main()
}
