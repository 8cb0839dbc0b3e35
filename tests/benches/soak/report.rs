//! The soak benchmark's options and arithmetic: what to run, latency percentiles, memory
//! growth per process with the verdict on whether it levels off, and the report's tables.
//!
//! Compiled into the test library (as `nico_identity_tests::soak_report`) so that its unit
//! tests run with every test run, while the soak itself runs only on request.

use std::fmt::Write as _;
use std::time::Duration;

use nico_policy::duration::{format_go_duration, parse_go_duration};

/// Pods per node unless told otherwise: under kubelet's default of 110 pods per node.
pub const DEFAULT_PODS_PER_NODE: usize = 100;

/// What one soak run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Pods kept alive at all times.
    pub pods: usize,
    /// How long the steady churn runs, after every pod got its first certificate.
    pub duration: Duration,
    /// Requested certificate lifetime (renewals come at about two thirds of it).
    pub lifetime: Duration,
    /// How long a pod lives before it is deleted and replaced (oldest first).
    pub pod_lifetime: Duration,
    /// Pods on each node; each node is its own csi-node process.
    pub pods_per_node: usize,
    /// How often the stand-in kubelet republishes every volume.
    pub republish: Duration,
    /// How often every process's resident memory is read.
    pub sample: Duration,
    /// Where the JSON report goes, besides the tables on stdout.
    pub out: Option<std::path::PathBuf>,
}

/// A command line the soak cannot run with; the message names the flag.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A flag this benchmark does not know.
    #[error("unknown flag {0}")]
    Unknown(String),
    /// A flag without its value.
    #[error("{0} needs a value")]
    Missing(&'static str),
    /// A value that does not parse or is out of range.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

impl Options {
    /// Reads `--pods N --duration D --lifetime D --pod-lifetime D --pods-per-node N
    /// --republish D --sample D --out FILE` (Go durations). `--bench`, which `cargo bench`
    /// appends, is ignored. Unset durations follow `--duration`: certificates live 2m, or 1m
    /// in runs shorter than 5 minutes so that renewals still happen; pods live half the run,
    /// and at least two and a half certificate lifetimes so that most renew before they go.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, OptionsError> {
        let mut pods = 1000;
        let mut duration = Duration::from_secs(600);
        let (mut lifetime, mut pod_lifetime) = (None, None);
        let mut pods_per_node = DEFAULT_PODS_PER_NODE;
        let mut republish = Duration::from_secs(30);
        let mut sample = Duration::from_secs(5);
        let mut out = None;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--bench" {
                continue;
            }
            let known: &'static str = match flag.as_str() {
                "--pods" => "--pods",
                "--duration" => "--duration",
                "--lifetime" => "--lifetime",
                "--pod-lifetime" => "--pod-lifetime",
                "--pods-per-node" => "--pods-per-node",
                "--republish" => "--republish",
                "--sample" => "--sample",
                "--out" => "--out",
                _ => return Err(OptionsError::Unknown(flag)),
            };
            let value = args.next().ok_or(OptionsError::Missing(known))?;
            match known {
                "--pods" => pods = count(known, &value)?,
                "--pods-per-node" => pods_per_node = count(known, &value)?,
                "--duration" => duration = positive(known, &value)?,
                "--lifetime" => lifetime = Some(positive(known, &value)?),
                "--pod-lifetime" => pod_lifetime = Some(positive(known, &value)?),
                "--republish" => republish = positive(known, &value)?,
                "--sample" => sample = positive(known, &value)?,
                _ => out = Some(value.into()),
            }
        }
        let lifetime = lifetime.unwrap_or(if duration < Duration::from_secs(300) {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(120)
        });
        // The approver accepts 10 s and more; the issuer back-dates by 30 s, so a shorter
        // certificate would be renewed almost at once.
        if lifetime < Duration::from_secs(30) {
            return Err(OptionsError::Invalid {
                flag: "--lifetime",
                reason: "must be at least 30s".into(),
            });
        }
        Ok(Self {
            pods,
            duration,
            lifetime,
            pod_lifetime: pod_lifetime.unwrap_or((duration / 2).max(lifetime * 5 / 2)),
            pods_per_node,
            republish,
            sample,
            out,
        })
    }

    /// How many csi-node processes carry the pods.
    pub fn nodes(&self) -> usize {
        self.pods.div_ceil(self.pods_per_node)
    }

    /// The time between two pod replacements (one pod's lifetime spread over all pods).
    pub fn churn_interval(&self) -> Duration {
        self.pod_lifetime / u32::try_from(self.pods).unwrap_or(u32::MAX)
    }

    /// One line naming every setting, for the report.
    pub fn describe(&self) -> String {
        format!(
            "{} pods on {} nodes ({} per node), churn one pod every {} (each lives {}), \
             certificates of {}, republish every {}, memory sampled every {}, {} of churn",
            self.pods,
            self.nodes(),
            self.pods_per_node,
            format_go_duration(self.churn_interval()),
            format_go_duration(self.pod_lifetime),
            format_go_duration(self.lifetime),
            format_go_duration(self.republish),
            format_go_duration(self.sample),
            format_go_duration(self.duration),
        )
    }
}

fn count(flag: &'static str, value: &str) -> Result<usize, OptionsError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(OptionsError::Invalid {
            flag,
            reason: format!("expected a positive whole number, got {value:?}"),
        }),
    }
}

fn positive(flag: &'static str, value: &str) -> Result<Duration, OptionsError> {
    match parse_go_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(OptionsError::Invalid {
            flag,
            reason: "must be longer than zero".into(),
        }),
        Err(e) => Err(OptionsError::Invalid {
            flag,
            reason: e.to_string(),
        }),
    }
}

/// The value at quantile `q` (0 < q ≤ 1) by nearest rank, of values sorted ascending.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// p50 and p99 of a set of latencies, as `"12.3 ms / 45.6 ms"`, or `"-"` when empty.
pub fn p50_p99(latencies: &mut [Duration]) -> String {
    latencies.sort();
    match (percentile(latencies, 0.5), percentile(latencies, 0.99)) {
        (Some(p50), Some(p99)) => format!("{} / {}", ms(p50), ms(p99)),
        _ => "-".into(),
    }
}

/// Milliseconds with one decimal.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The least-squares slope of `points` (x, y), or `None` with fewer than two distinct xs.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let spread: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if spread == 0.0 {
        return None;
    }
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(covariance / spread)
}

/// Least samples in each third of the steady window for a verdict.
const MIN_SAMPLES_PER_THIRD: usize = 3;
/// The shortest steady window judged: in less, roles are still filling their caches.
const MIN_WINDOW_SECONDS: f64 = 300.0;

/// How one process's memory moved during the steady churn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Growth {
    /// Slope over the first third of the window, KiB per minute.
    pub first_kib_per_min: f64,
    /// Slope over the last third, KiB per minute.
    pub last_kib_per_min: f64,
    /// Mean resident size over the last third, KiB.
    pub last_mean_kib: f64,
    /// Whether the growth levels off.
    pub levels_off: bool,
}

/// Judges the samples `(seconds, KiB)` taken at or after `steady_from` seconds: split into
/// thirds by time, the growth levels off when the last third's slope is at most half the
/// first third's, or when, kept up for ten minutes, it would add less than 2 % of the
/// process's size (below what a 10-minute run can tell from allocator noise). `None` when
/// the window is shorter than five minutes or holds too few samples to judge.
pub fn growth(samples: &[(f64, u64)], steady_from: f64) -> Option<Growth> {
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.0 >= steady_from)
        .map(|&(t, kib)| (t, kib as f64))
        .collect();
    let (start, end) = (steady.first()?.0, steady.last()?.0);
    if end - start < MIN_WINDOW_SECONDS {
        return None;
    }
    let third = (end - start) / 3.0;
    let first: Vec<_> = steady
        .iter()
        .copied()
        .filter(|p| p.0 <= start + third)
        .collect();
    let last: Vec<_> = steady
        .iter()
        .copied()
        .filter(|p| p.0 >= end - third)
        .collect();
    if first.len() < MIN_SAMPLES_PER_THIRD || last.len() < MIN_SAMPLES_PER_THIRD {
        return None;
    }
    let first_kib_per_min = slope(&first)? * 60.0;
    let last_kib_per_min = slope(&last)? * 60.0;
    let last_mean_kib = last.iter().map(|p| p.1).sum::<f64>() / last.len() as f64;
    let decelerates = first_kib_per_min > 0.0 && last_kib_per_min <= first_kib_per_min / 2.0;
    let negligible = last_kib_per_min * 10.0 <= last_mean_kib * 0.02;
    Some(Growth {
        first_kib_per_min,
        last_kib_per_min,
        last_mean_kib,
        levels_off: decelerates || negligible,
    })
}

/// The sum of the samples of metric `name` in Prometheus text, keeping only the samples
/// whose labels contain `label` (e.g. `result="issued"`) when given.
pub fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if label.is_some_and(|wanted| !labels.contains(wanted)) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Checks the files of one published volume in `dir` as its pod would read them, with code
/// that did not write them: the chain verifies up to `ca.crt` (rustls-webpki), the key
/// belongs to the certificate (rcgen and x509-parser) and the only SAN is `expected_id`.
pub fn check_volume_files(
    dir: &std::path::Path,
    names: &nico_csi_node::FileNames,
    expected_id: &str,
) -> Result<(), String> {
    let (crt, key, ca) = (
        dir.join(&names.certificate),
        dir.join(&names.key),
        dir.join(&names.ca),
    );
    crate::verify_with_webpki(&crt, &ca)?;
    let text = std::fs::read_to_string(&key).map_err(|e| format!("failed to read the key: {e}"))?;
    let pair = rcgen::KeyPair::from_pem(&text).map_err(|e| format!("unreadable key: {e}"))?;
    let chain = std::fs::read(&crt).map_err(|e| format!("failed to read tls.crt: {e}"))?;
    let leaf = pem::parse_many(chain)
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?
        .into_iter()
        .next()
        .ok_or("tls.crt is empty")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.contents())
        .map_err(|e| format!("tls.crt does not parse: {e}"))?;
    if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&pair).as_slice() {
        return Err("tls.key does not belong to tls.crt".into());
    }
    let ids = crate::uri_sans(leaf.contents());
    if ids != [expected_id] {
        return Err(format!(
            "the certificate names {ids:?}, expected {expected_id}"
        ));
    }
    Ok(())
}

/// Resident memory of every process over time.
#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    /// Process names, one column each.
    pub names: Vec<String>,
    /// `(seconds since the start, KiB per process in column order)`; 0 when unreadable.
    pub samples: Vec<(f64, Vec<u64>)>,
}

impl MemoryLog {
    /// The samples of one column.
    pub fn column(&self, index: usize) -> Vec<(f64, u64)> {
        self.samples
            .iter()
            .filter_map(|(t, values)| values.get(index).map(|v| (*t, *v)))
            .collect()
    }

    /// The sample rows to show: the first, the first at or after each whole minute, and
    /// the last.
    pub fn rows_to_show(&self) -> Vec<usize> {
        let mut rows = Vec::new();
        let mut next_minute = 0.0;
        for (i, (t, _)) in self.samples.iter().enumerate() {
            if *t >= next_minute {
                rows.push(i);
                next_minute = ((*t / 60.0).floor() + 1.0) * 60.0;
            }
        }
        if let Some(last) = self.samples.len().checked_sub(1)
            && rows.last() != Some(&last)
        {
            rows.push(last);
        }
        rows
    }

    /// A Markdown table of resident MiB: one row per shown sample, the columns grouped by
    /// role (a role with several processes shows their median and maximum).
    pub fn table(&self) -> String {
        let groups = self.groups();
        let mut out = String::from("| time |");
        let mut rule = String::from("|---|");
        for (role, columns) in &groups {
            if columns.len() == 1 {
                let _ = write!(out, " {role} |");
                rule.push_str("---|");
            } else {
                let _ = write!(
                    out,
                    " {role} median of {n} | {role} max |",
                    n = columns.len()
                );
                rule.push_str("---|---|");
            }
        }
        let _ = writeln!(out, "\n{rule}");
        for row in self.rows_to_show() {
            let (t, values) = &self.samples[row];
            let _ = write!(out, "| {} |", clock(*t));
            for (_, columns) in &groups {
                let mut sizes: Vec<u64> = columns
                    .iter()
                    .map(|&c| values.get(c).copied().unwrap_or(0))
                    .collect();
                sizes.sort_unstable();
                if sizes.len() == 1 {
                    let _ = write!(out, " {} |", mib(sizes[0]));
                } else {
                    let median = sizes[sizes.len() / 2];
                    let max = sizes[sizes.len() - 1];
                    let _ = write!(out, " {} | {} |", mib(median), mib(max));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Columns by role, in first-seen order: a name `csi-node-3` belongs to role `csi-node`.
    fn groups(&self) -> Vec<(String, Vec<usize>)> {
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            let role = match name.rsplit_once('-') {
                Some((role, n)) if n.parse::<usize>().is_ok() => role,
                _ => name.as_str(),
            };
            match groups.iter_mut().find(|(r, _)| r == role) {
                Some((_, columns)) => columns.push(i),
                None => groups.push((role.to_owned(), vec![i])),
            }
        }
        groups
    }
}

/// `m:ss`.
pub fn clock(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    format!("{}:{:02}", whole / 60, whole % 60)
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_follow_the_run_length() {
        let long = Options::parse(args("--bench")).unwrap();
        assert_eq!((long.pods, long.nodes()), (1000, 10));
        assert_eq!(long.lifetime, Duration::from_secs(120));
        assert_eq!(long.pod_lifetime, Duration::from_secs(300));
        assert_eq!(long.churn_interval(), Duration::from_millis(300));

        let short = Options::parse(args("--pods 100 --duration 60s")).unwrap();
        assert_eq!((short.pods, short.nodes()), (100, 1));
        assert_eq!(short.lifetime, Duration::from_secs(60));
        assert_eq!(short.pod_lifetime, Duration::from_secs(150));

        let odd = Options::parse(args("--pods 250 --pods-per-node 110 --lifetime 90s")).unwrap();
        assert_eq!(odd.nodes(), 3);
        assert_eq!(odd.lifetime, Duration::from_secs(90));
    }

    #[test]
    fn bad_options_name_the_flag() {
        for (line, expected) in [
            (
                "--pods 0",
                OptionsError::Invalid {
                    flag: "--pods",
                    reason: "expected a positive whole number, got \"0\"".into(),
                },
            ),
            ("--pods", OptionsError::Missing("--pods")),
            ("--nodes 3", OptionsError::Unknown("--nodes".into())),
            (
                "--lifetime 20s",
                OptionsError::Invalid {
                    flag: "--lifetime",
                    reason: "must be at least 30s".into(),
                },
            ),
            (
                "--sample 0s",
                OptionsError::Invalid {
                    flag: "--sample",
                    reason: "must be longer than zero".into(),
                },
            ),
        ] {
            assert_eq!(Options::parse(args(line)), Err(expected), "{line}");
        }
        let error = Options::parse(args("--duration soon")).unwrap_err();
        assert!(error.to_string().starts_with("--duration: "), "{error}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        for (q, expected) in [(0.5, 100), (0.99, 198), (1.0, 200), (0.001, 1)] {
            assert_eq!(
                percentile(&values, q),
                Some(Duration::from_millis(expected)),
                "q = {q}"
            );
        }
        assert_eq!(percentile(&[], 0.5), None);
        let mut one = vec![Duration::from_micros(1500)];
        assert_eq!(p50_p99(&mut one), "1.5 ms / 1.5 ms");
    }

    #[test]
    fn metrics_are_summed_by_name_and_label() {
        let text = "# HELP nico_identity_csi_node_issuances Issuance attempts by result\n\
                    # TYPE nico_identity_csi_node_issuances counter\n\
                    nico_identity_csi_node_issuances_total{result=\"issued\"} 1200\n\
                    nico_identity_csi_node_issuances_total{result=\"timeout\"} 3\n\
                    nico_identity_csi_node_issuances_total_extra 99\n\
                    nico_identity_csi_node_volumes 100\n\
                    # EOF\n";
        let issuances = "nico_identity_csi_node_issuances_total";
        for (name, label, expected) in [
            (issuances, Some("result=\"issued\""), 1200.0),
            (issuances, None, 1203.0),
            (issuances, Some("result=\"denied\""), 0.0),
            ("nico_identity_csi_node_volumes", None, 100.0),
            ("nico_identity_absent", None, 0.0),
        ] {
            assert_eq!(metric_sum(text, name, label), expected, "{name} {label:?}");
        }
    }

    #[test]
    fn volume_checks_catch_a_foreign_key_a_wrong_id_and_an_untrusted_chain() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let authority = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let pem = params.self_signed(&key).unwrap().pem();
            (pem, Issuer::new(params, key))
        };
        let (ca, issuer) = authority("soak test CA");
        let (other_ca, _) = authority("another CA");
        let key = KeyPair::generate().unwrap();
        let id = "spiffe://nico.local/soak-0/sa/app-0";
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        let leaf = params.signed_by(&key, &issuer).unwrap().pem();
        let foreign_key = KeyPair::generate().unwrap().serialize_pem();
        let names = nico_csi_node::FileNames::default();
        let cases = [
            ("matching files", key.serialize_pem(), ca.clone(), id, None),
            (
                "a foreign key",
                foreign_key,
                ca.clone(),
                id,
                Some("does not belong"),
            ),
            (
                "another pod's ID",
                key.serialize_pem(),
                ca.clone(),
                "spiffe://nico.local/soak-1/sa/app-0",
                Some("expected spiffe://nico.local/soak-1/sa/app-0"),
            ),
            (
                "an untrusted chain",
                key.serialize_pem(),
                other_ca,
                id,
                Some("webpki"),
            ),
        ];
        for (name, key_pem, ca_pem, expected, refusal) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(&names.certificate), &leaf).unwrap();
            std::fs::write(dir.path().join(&names.key), key_pem).unwrap();
            std::fs::write(dir.path().join(&names.ca), ca_pem).unwrap();
            let outcome = check_volume_files(dir.path(), &names, expected);
            match refusal {
                None => assert_eq!(outcome, Ok(()), "{name}"),
                Some(part) => {
                    let error = outcome.expect_err(name);
                    assert!(error.contains(part), "{name}: {error}");
                }
            }
        }
    }

    #[test]
    fn slope_is_least_squares() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        let noisy = [(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (3.0, 4.0)];
        assert!((slope(&noisy).unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 5.0)]), None);
    }

    /// Samples every 5 s over 600 s of `size(t)` KiB.
    fn run(size: impl Fn(f64) -> f64) -> Vec<(f64, u64)> {
        (0..=120)
            .map(|i| {
                let t = i as f64 * 5.0;
                (t, size(t) as u64)
            })
            .collect()
    }

    #[test]
    fn growth_verdicts() {
        let cases = [
            (
                "rises then flattens",
                run(|t| 20_000.0 + 8_000.0 * (1.0 - (-t / 60.0).exp())),
                true,
            ),
            ("flat", run(|_| 30_000.0), true),
            (
                "steady leak of 200 KiB a minute",
                run(|t| 10_000.0 + t * 200.0 / 60.0),
                false,
            ),
            (
                "a leak that speeds up",
                run(|t| 10_000.0 + (t / 60.0).powi(2) * 50.0),
                false,
            ),
            (
                "creeping by 0.1 % of 100 MiB per ten minutes",
                run(|t| 102_400.0 + t * 102.4 / 600.0),
                true,
            ),
        ];
        for (name, samples, levels_off) in cases {
            let verdict = growth(&samples, 0.0).expect("enough samples");
            assert_eq!(verdict.levels_off, levels_off, "{name}: {verdict:?}");
        }
    }

    #[test]
    fn growth_ignores_the_ramp_and_needs_samples() {
        // A steep ramp before the window does not hide a leak inside it.
        let samples = run(|t| {
            if t < 100.0 {
                t * 100.0
            } else {
                10_000.0 + t * 5.0
            }
        });
        assert!(!growth(&samples, 100.0).unwrap().levels_off);
        assert!(growth(&samples, 0.0).unwrap().levels_off);
        assert_eq!(growth(&samples[..5], 0.0), None);
        assert_eq!(growth(&samples, 590.0), None);
        // Four minutes of a leak are not judged at all; five are.
        assert_eq!(growth(&samples[..49], 0.0), None);
        assert!(!growth(&samples[20..81], 100.0).unwrap().levels_off);
        // Five-minute windows with too few samples in a third are not judged either.
        let sparse: Vec<(f64, u64)> = [0.0, 10.0, 290.0, 300.0].map(|t| (t, 1000)).to_vec();
        assert_eq!(growth(&sparse, 0.0), None);
    }

    #[test]
    fn memory_table_groups_roles_and_shows_each_minute() {
        let log = MemoryLog {
            names: [
                "webhook",
                "csi-node-0",
                "csi-node-1",
                "csi-node-2",
                "driver",
            ]
            .map(str::to_owned)
            .to_vec(),
            samples: [0.0, 30.0, 61.0, 90.0, 125.0, 130.0]
                .into_iter()
                .map(|t| (t, vec![1024, 2048, 4096, 3072, 10240 + t as u64]))
                .collect(),
        };
        assert_eq!(log.rows_to_show(), [0, 2, 4, 5]);
        let table = log.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| time | webhook | csi-node median of 3 | csi-node max | driver |"
        );
        assert_eq!(lines[2], "| 0:00 | 1.0 | 3.0 | 4.0 | 10.0 |");
        assert_eq!(lines.last(), Some(&"| 2:10 | 1.0 | 3.0 | 4.0 | 10.1 |"));
        assert_eq!(lines.len(), 6);
    }
}
