//! `nico-identity spiffe-id parse`.

use std::process::ExitCode;

use nico_spiffe_id::SpiffeId;

use crate::args::SpiffeIdCommand;

pub(crate) fn run(command: &SpiffeIdCommand) -> ExitCode {
    match command {
        SpiffeIdCommand::Parse { id } => match SpiffeId::parse(id) {
            Ok(parsed) => {
                crate::print_line(&format!("spiffe id:    {parsed}"));
                crate::print_line(&format!("trust domain: {}", parsed.trust_domain()));
                let path = if parsed.path().is_empty() {
                    "(none: not a workload ID)"
                } else {
                    parsed.path()
                };
                crate::print_line(&format!("path:         {path}"));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("invalid SPIFFE ID {id:?}: {error}");
                ExitCode::from(crate::EXIT_USAGE)
            }
        },
    }
}
