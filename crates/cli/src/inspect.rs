//! `nico-identity inspect <dir>`.

use std::path::Path;
use std::process::ExitCode;

use nico_csi_node::FileNames;
use time::OffsetDateTime;

pub(crate) fn run(dir: &Path, names: &FileNames) -> ExitCode {
    let inspection = match nico_csi_node::inspect(dir, names) {
        Ok(inspection) => inspection,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let now = OffsetDateTime::now_utc();
    let until = |at: OffsetDateTime| {
        let seconds = (at - now).whole_seconds();
        if seconds >= 0 {
            format!("in {seconds}s")
        } else {
            format!("{}s ago", -seconds)
        }
    };
    let line = |label: &str, value: String| crate::print_line(&format!("{label:<12} {value}"));
    line("spiffe id:", inspection.spiffe_ids.join(", "));
    line("serial:", inspection.serial.clone());
    line("not before:", inspection.not_before.to_string());
    line(
        "not after:",
        format!("{} ({})", inspection.not_after, until(inspection.not_after)),
    );
    line(
        "renewal:",
        format!("{} ({})", inspection.renews_at, until(inspection.renews_at)),
    );
    line(
        "key:",
        if inspection.key_matches {
            "matches tls.crt"
        } else {
            "DOES NOT MATCH tls.crt"
        }
        .to_owned(),
    );
    line(
        "chain:",
        match &inspection.chain {
            Ok(()) => "verifies to ca.crt".to_owned(),
            Err(reason) => format!("DOES NOT VERIFY: {reason}"),
        },
    );
    if inspection.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
