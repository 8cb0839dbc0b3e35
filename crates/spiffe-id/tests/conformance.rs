//! Runs every row of the shared SPIFFE ID conformance table against the parser.

use nico_spiffe_id::SpiffeId;

const TABLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/spiffe-ids.tsv"
));

#[test]
fn every_row_of_the_shared_table_agrees() {
    let mut failures = Vec::new();
    let mut rows = 0;
    for (number, line) in TABLE.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        rows += 1;
        let mut columns = line.split('\t');
        let (Some(id), Some(verdict)) = (columns.next(), columns.next()) else {
            failures.push(format!("line {}: malformed row {line:?}", number + 1));
            continue;
        };
        let why = columns.next().unwrap_or("");
        let parsed = SpiffeId::parse(id);
        let agrees = match verdict {
            "valid" => parsed.as_ref().is_ok_and(|id| id.is_workload()),
            "valid-no-path" => parsed.as_ref().is_ok_and(|id| !id.is_workload()),
            "invalid" => parsed.is_err(),
            other => {
                failures.push(format!("line {}: unknown verdict {other:?}", number + 1));
                continue;
            }
        };
        if !agrees {
            failures.push(format!(
                "line {}: {id:?} should be {verdict} ({why}), parser said {parsed:?}",
                number + 1
            ));
        }
        // Whatever parses must display as the very bytes it was parsed from.
        if let Ok(parsed) = &parsed {
            assert_eq!(parsed.as_str(), id);
        }
    }
    assert!(rows >= 30, "only {rows} rows read: is the table truncated?");
    assert!(
        failures.is_empty(),
        "{} rows disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
