//! Go duration strings (`1h`, `90m`, `1h30m`, `1.5s`), as Kubernetes and cert-manager write
//! them: a parser that refuses negative values and a formatter that matches Go's output.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// The longest duration accepted, Go's `time.Duration` maximum (about 292 years).
pub const MAX_GO_DURATION: Duration = Duration::from_nanos(MAX_NANOS as u64);

const MAX_NANOS: u128 = i64::MAX as u128;

/// Longest input echoed back in an error message; longer input is cut.
const SHOWN: usize = 64;

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // micro sign
    ("\u{3bc}s", 1_000), // Greek small letter mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Fraction digits beyond this many cannot change the result by a nanosecond.
const FRACTION_DIGITS: usize = 18;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string was empty.
    #[error("duration is empty: expected a value such as 1h, 90m or 1h30m")]
    Empty,

    /// The string starts with `-`.
    #[error("duration {input:?} is negative: expected a positive value such as 1h")]
    Negative {
        /// The presented string (cut when long).
        input: String,
    },

    /// A number is missing or malformed.
    #[error("invalid duration {input:?}: expected numbers with units, such as 1h30m")]
    Invalid {
        /// The presented string (cut when long).
        input: String,
    },

    /// A number has no unit (only `0` may stand alone).
    #[error("duration {input:?} lacks a unit: expected one of ns, us, ms, s, m, h")]
    MissingUnit {
        /// The presented string (cut when long).
        input: String,
    },

    /// A unit is not one Go knows.
    #[error("unknown unit {unit:?} in duration {input:?}: expected one of ns, us, ms, s, m, h")]
    UnknownUnit {
        /// The presented string (cut when long).
        input: String,
        /// The unit found (cut when long).
        unit: String,
    },

    /// The value exceeds [`MAX_GO_DURATION`].
    #[error("duration {input:?} is too large: at most 2562047h47m16.854775807s is allowed")]
    Overflow {
        /// The presented string (cut when long).
        input: String,
    },
}

/// Parses a Go duration: one or more `<number><unit>` pairs, where the number may have a
/// fraction and the unit is `ns`, `us` (or `µs`), `ms`, `s`, `m` or `h`; `0` alone is zero.
/// A leading `+` is accepted as Go does; a leading `-` is refused.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input.starts_with('-') {
        return Err(DurationError::Negative {
            input: shown(input),
        });
    }
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid {
            input: shown(input),
        });
    }
    let overflow = || DurationError::Overflow {
        input: shown(input),
    };

    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(DurationError::Invalid {
                input: shown(input),
            });
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                input: shown(input),
            });
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                input: shown(input),
                unit: shown(unit),
            });
        };

        let mut whole_value: u128 = 0;
        for digit in whole.bytes() {
            whole_value = whole_value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(digit - b'0')))
                .filter(|v| *v <= MAX_NANOS)
                .ok_or_else(overflow)?;
        }
        let fraction = &fraction[..fraction.len().min(FRACTION_DIGITS)];
        let mut fraction_value: u128 = 0;
        for digit in fraction.bytes() {
            fraction_value = fraction_value * 10 + u128::from(digit - b'0');
        }
        // Both factors are bounded (whole by `MAX_NANOS`, fraction below 10^18), so neither
        // product can overflow a u128; the sum is checked against Go's limit.
        let part = whole_value * scale + fraction_value * scale / 10u128.pow(fraction.len() as u32);
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(overflow)?;
        rest = after;
    }
    // invariant: `total` is at most i64::MAX, which fits a u64.
    Ok(Duration::from_nanos(
        u64::try_from(total).expect("total is bounded by i64::MAX"),
    ))
}

/// Splits off the leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    )
}

/// Formats a duration the way Go's `Duration.String` does: `1h0m0s`, `1h30m0s`, `1m30s`,
/// `1.5s`, `500ms`, `1µs`, `0s`.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let mut out = String::new();
    match nanos {
        0 => out.push_str("0s"),
        1..1_000 => push(&mut out, format_args!("{nanos}ns")),
        1_000..1_000_000 => push(&mut out, format_args!("{}\u{b5}s", decimal(nanos, 3))),
        1_000_000..1_000_000_000 => push(&mut out, format_args!("{}ms", decimal(nanos, 6))),
        _ => {
            let seconds = nanos / 1_000_000_000;
            let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
            if hours > 0 {
                push(&mut out, format_args!("{hours}h{minutes}m"));
            } else if minutes > 0 {
                push(&mut out, format_args!("{minutes}m"));
            }
            let in_minute = nanos % 60_000_000_000;
            push(&mut out, format_args!("{}s", decimal(in_minute, 9)));
        }
    }
    out
}

fn push(out: &mut String, args: fmt::Arguments<'_>) {
    // invariant: writing to a String cannot fail.
    out.write_fmt(args).expect("writing to a String");
}

/// `value / 10^digits` as a decimal with trailing zeros of the fraction removed.
fn decimal(value: u128, digits: u32) -> String {
    let unit = 10u128.pow(digits);
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0width$}", width = digits as usize);
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// The input as shown in messages: cut to a bounded length on a character boundary.
fn shown(input: &str) -> String {
    match input.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &input[..cut]),
        None => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn parses_what_go_parses() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("0s", 0),
            ("1ns", 1),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("1ms", 1_000_000),
            ("1s", S),
            ("1m", 60 * S),
            ("1h", 3_600 * S),
            ("90m", 5_400 * S),
            ("1h30m", 5_400 * S),
            ("3600s", 3_600 * S),
            ("1.5h", 5_400 * S),
            (".5s", S / 2),
            ("1.s", S),
            ("1h1m1s1ms1us1ns", 3_661 * S + 1_001_001),
            ("1m1h", 3_660 * S),
            ("0.000000001s", 1),
            ("0.0000000019s", 1),
            ("1.0000000000000000000000001h", 3_600 * S),
            ("+2h", 7_200 * S),
            ("2562047h47m16.854775807s", i64::MAX as u64),
        ];
        for (input, nanos) in cases {
            assert_eq!(
                parse_go_duration(input),
                Ok(Duration::from_nanos(*nanos)),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                "duration is empty: expected a value such as 1h, 90m or 1h30m",
            ),
            (
                "-1h",
                "duration \"-1h\" is negative: expected a positive value such as 1h",
            ),
            ("-0", "duration \"-0\" is negative"),
            (
                "+",
                "invalid duration \"+\": expected numbers with units, such as 1h30m",
            ),
            ("h", "invalid duration \"h\""),
            (".h", "invalid duration \".h\""),
            (
                "1",
                "duration \"1\" lacks a unit: expected one of ns, us, ms, s, m, h",
            ),
            ("1h30", "duration \"1h30\" lacks a unit"),
            (
                "1d",
                "unknown unit \"d\" in duration \"1d\": expected one of ns, us, ms, s, m, h",
            ),
            ("1 h", "unknown unit \" h\" in duration"),
            ("1H", "unknown unit \"H\""),
            ("1h-1m", "unknown unit \"h-\""),
            (
                "2562047h47m16.854775808s",
                "duration \"2562047h47m16.854775808s\" is too large",
            ),
            ("9999999999999999999999999999999999999999h", "is too large"),
            ("3000000h", "is too large"),
        ];
        for (input, message) in cases {
            let err = parse_go_duration(input).unwrap_err().to_string();
            assert!(err.contains(message), "{input:?}: {err:?}");
        }
    }

    #[test]
    fn long_input_is_cut_in_messages() {
        let long = format!("{}x", "1".repeat(500));
        let err = parse_go_duration(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
        assert!(err.contains("..."));
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1\u{b5}s"),
            (1_500, "1.5\u{b5}s"),
            (1_000_000, "1ms"),
            (1_234_567, "1.234567ms"),
            (S, "1s"),
            (S + S / 2, "1.5s"),
            (90 * S, "1m30s"),
            (600 * S, "10m0s"),
            (3_600 * S, "1h0m0s"),
            (5_400 * S, "1h30m0s"),
            (86_400 * S, "24h0m0s"),
            (3_600 * S + 1, "1h0m0.000000001s"),
            (i64::MAX as u64, "2562047h47m16.854775807s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(
                format_go_duration(Duration::from_nanos(*nanos)),
                *text,
                "{nanos}"
            );
        }
    }
}
