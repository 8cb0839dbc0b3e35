//! `cargo xtask fuzz [--time SECONDS] [--target NAME]...`: the corpus-driven fuzz targets
//! (property tests named `fuzz_*`, see `tests/support/fuzzing.rs`) run for a fixed time,
//! round after round, each round with many more cases than CI runs and a fresh seed.
//!
//! The test binaries are built before the clock starts. A target's share of the time is
//! spent in rounds sized from the speed of the first; a round that fails stops that target
//! (proptest has written the shrunk input to a `*.proptest-regressions` file beside the
//! test, and the seed printed reproduces the round). The summary gives rounds, cases and
//! failures per target; any failure makes the command fail.

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

/// Where a group of fuzz targets lives.
#[derive(Clone, Copy, Debug)]
struct Target {
    /// The name `--target` takes.
    name: &'static str,
    /// The package.
    package: &'static str,
    /// The test binary: `None` for the library's unit tests, else an integration test.
    test: Option<&'static str>,
    /// Test names containing this run; `fuzz_corpus_replays_cleanly` among them replays the
    /// corpus once per round and is not counted in cases.
    filter: &'static str,
}

const TARGETS: [Target; 5] = [
    Target {
        name: "spiffe-id",
        package: "nico-spiffe-id",
        test: Some("fuzz"),
        filter: "fuzz_",
    },
    Target {
        name: "csr",
        package: "nico-csr",
        test: Some("fuzz"),
        filter: "fuzz_",
    },
    Target {
        name: "policy",
        package: "nico-policy",
        test: Some("fuzz"),
        filter: "fuzz_",
    },
    Target {
        name: "webhook",
        package: "nico-webhook",
        test: None,
        filter: "server::fuzz::fuzz_",
    },
    Target {
        name: "csi-node",
        package: "nico-csi-node",
        test: None,
        filter: "request::fuzz::fuzz_",
    },
];

const REPLAY: &str = "fuzz_corpus_replays_cleanly";

/// Cases of the first round of a target, which measures its speed.
const FIRST_ROUND_CASES: u64 = 2_000;

/// The longest round: long enough that cargo's start-up is noise, short enough that the
/// time limit is kept.
const MAX_ROUND: Duration = Duration::from_secs(60);

/// The options.
#[derive(Debug, clap::Args)]
pub(crate) struct FuzzArgs {
    /// How long to fuzz, in seconds, shared evenly by the targets.
    #[arg(long, default_value_t = 300)]
    time: u64,
    /// Only this target (repeatable): spiffe-id, csr, policy, webhook, csi-node.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
}

/// What one target did.
#[derive(Debug, Default)]
struct Tally {
    rounds: u32,
    cases: u64,
    failures: u32,
}

pub(crate) fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let chosen = choose(&args.targets)?;
    let root = crate::workspace_root();
    for target in &chosen {
        let status = cargo_test(target)
            .arg("--no-run")
            .current_dir(&root)
            .status()
            .context("failed to start cargo")?;
        if !status.success() {
            bail!(
                "failed to build the {} fuzz targets ({status})",
                target.name
            );
        }
    }
    // invariant: `choose` never returns an empty list.
    let share = Duration::from_secs(args.time) / chosen.len() as u32;
    let mut tallies = Vec::new();
    for target in &chosen {
        tallies.push((target.name, fuzz_target(target, share, &root)?));
    }
    eprintln!(
        "\n{:<10} {:>7} {:>12} {:>9}",
        "target", "rounds", "cases", "failures"
    );
    for (name, tally) in &tallies {
        eprintln!(
            "{name:<10} {:>7} {:>12} {:>9}",
            tally.rounds, tally.cases, tally.failures
        );
    }
    let failed: Vec<&str> = tallies
        .iter()
        .filter(|(_, tally)| tally.failures > 0)
        .map(|(name, _)| *name)
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found failures in {}: add each shrunk input to the target's corpus and \
             fix the defect with a regression test",
            failed.join(", ")
        );
    }
    Ok(())
}

fn choose(names: &[String]) -> anyhow::Result<Vec<Target>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            TARGETS
                .iter()
                .find(|target| target.name == name)
                .copied()
                .with_context(|| {
                    let known: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                    format!(
                        "unknown fuzz target {name:?}: expected one of {}",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

/// `cargo test` for the target's binary.
fn cargo_test(target: &Target) -> Command {
    let mut command = Command::new("cargo");
    command.args(["test", "-p", target.package]);
    match target.test {
        Some(test) => command.args(["--test", test]),
        None => command.arg("--lib"),
    };
    command
}

/// Rounds of `target` until `share` is spent.
fn fuzz_target(target: &Target, share: Duration, root: &std::path::Path) -> anyhow::Result<Tally> {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut cases = FIRST_ROUND_CASES;
    loop {
        let seed = fresh_seed(tally.rounds);
        eprintln!(
            "{}: round {} with {cases} cases, PROPTEST_RNG_SEED={seed}",
            target.name,
            tally.rounds + 1
        );
        let round_started = Instant::now();
        let output = cargo_test(target)
            .args(["--", target.filter])
            .env("PROPTEST_CASES", cases.to_string())
            .env("PROPTEST_RNG_SEED", seed.to_string())
            .current_dir(root)
            .output()
            .context("failed to start cargo")?;
        let took = round_started.elapsed();
        let round = read_round(&output);
        tally.rounds += 1;
        tally.cases += round.passed_targets * cases;
        if round.failed > 0 || !output.status.success() {
            tally.failures += round.failed.max(1);
            eprintln!("{}", String::from_utf8_lossy(&output.stdout));
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
            eprintln!(
                "{}: round {} failed; it reruns with PROPTEST_RNG_SEED={seed} \
                 PROPTEST_CASES={cases}",
                target.name, tally.rounds
            );
            return Ok(tally);
        }
        if round.passed_targets == 0 {
            bail!("no fuzz target of {} ran: check its filter", target.name);
        }
        let left = share.saturating_sub(started.elapsed());
        // Size the next round from this one's speed, to end within the share.
        let per_case = took.as_secs_f64() / cases as f64;
        let next = left.min(MAX_ROUND).as_secs_f64() / per_case.max(1e-9);
        if next < FIRST_ROUND_CASES as f64 / 4.0 {
            return Ok(tally);
        }
        cases = next as u64;
    }
}

/// What a round's test output said.
#[derive(Debug, Default, PartialEq, Eq)]
struct Round {
    /// Fuzz targets (corpus replays not counted) that passed.
    passed_targets: u64,
    /// Tests that failed.
    failed: u32,
}

fn read_round(output: &Output) -> Round {
    parse_round(&String::from_utf8_lossy(&output.stdout))
}

/// Reads libtest's `test <name> ... ok|FAILED` lines.
fn parse_round(stdout: &str) -> Round {
    let mut round = Round::default();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, outcome)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        match outcome.trim() {
            "ok" if !name.ends_with(REPLAY) => round.passed_targets += 1,
            "FAILED" => round.failed += 1,
            _ => {}
        }
    }
    round
}

/// A seed that differs between rounds and runs.
fn fresh_seed(round: u32) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    // A splitmix64 step spreads nearby clock readings over the whole range.
    let mut z = nanos ^ (u64::from(round) << 32) ^ u64::from(std::process::id());
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_read_from_libtest_lines() {
        let stdout = "\
running 4 tests
test fuzz_corpus_replays_cleanly ... ok
test fuzz_csr ... ok
test server::fuzz::fuzz_admission_review ... FAILED
test fuzz_csr_resigned ... ok

test result: FAILED. 3 passed; 1 failed
";
        assert_eq!(
            parse_round(stdout),
            Round {
                passed_targets: 2,
                failed: 1
            }
        );
    }

    #[test]
    fn targets_are_chosen_by_name() {
        assert_eq!(choose(&[]).unwrap().len(), TARGETS.len());
        let csr = choose(&["csr".to_owned()]).unwrap();
        assert_eq!(csr[0].package, "nico-csr");
        let err = choose(&["nope".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("unknown fuzz target \"nope\""), "{err}");
    }

    #[test]
    fn seeds_differ_between_rounds() {
        assert_ne!(fresh_seed(0), fresh_seed(1));
    }
}
