//! The duration syntax of every timing variable: Go's `time.ParseDuration` restricted to what an
//! election can use (whole milliseconds, `ms` to `h`, more than zero, at most a year), plus the Go
//! tool's bare number of seconds. It owns the parser and the one formatter, so that every message
//! and the summary print a duration in a form the parser accepts back.

use std::time::Duration;

/// One year (365 days) in milliseconds: the largest duration accepted.
const MAX_DURATION_MS: u128 = 365 * 24 * 60 * 60 * 1000;
/// More fraction digits than this (after dropping trailing zeros) can never be a whole number of
/// milliseconds, whatever the unit; stopping there also bounds the arithmetic below.
const MAX_FRACTION_DIGITS: usize = 7;
const TOO_LARGE: &str = "too large: the maximum is 1 year, 8760h";

/// Parses a duration: a bare non-negative integer is seconds (`15`); otherwise one or more
/// `<integer>[.<fraction>]<unit>` groups with units `ms`, `s`, `m`, `h`, summed.
///
/// # Errors
///
/// A short description of what is wrong, without repeating the input.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("the value is empty".to_owned());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("whitespace is not allowed".to_owned());
    }
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    if s.starts_with('+') {
        return Err("a '+' sign is not allowed".to_owned());
    }
    let millis = if s.bytes().all(|b| b.is_ascii_digit()) {
        digits_value(s).saturating_mul(1000)
    } else {
        groups_millis(s)?
    };
    if millis == 0 {
        return Err("zero is not allowed".to_owned());
    }
    if millis > MAX_DURATION_MS {
        return Err(TOO_LARGE.to_owned());
    }
    u64::try_from(millis)
        .map(Duration::from_millis)
        .map_err(|_| TOO_LARGE.to_owned())
}

/// Formats a duration for messages and the summary: `15s` or `500ms` (sub-millisecond parts,
/// which only a computed value such as a third of a lease has, are dropped).
#[must_use]
pub fn format_duration(value: Duration) -> String {
    let millis = value.as_millis();
    if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// The value of an all-digit string, saturating (and so still "too large").
pub(super) fn digits_value(digits: &str) -> u128 {
    digits.bytes().fold(0u128, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u128::from(b.wrapping_sub(b'0')))
    })
}

/// Sums `<integer>[.<fraction>]<unit>` groups, in milliseconds.
fn groups_millis(s: &str) -> Result<u128, String> {
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (millis, after) = group_millis(rest)?;
        total = total.saturating_add(millis);
        rest = after;
    }
    Ok(total)
}

/// Splits `s` after its leading ASCII characters matching `pred`.
fn split_leading(s: &str, pred: impl Fn(u8) -> bool) -> (&str, &str) {
    let end = s.bytes().position(|b| !pred(b)).unwrap_or(s.len());
    // `end` follows ASCII bytes only, so it is a char boundary.
    s.split_at(end)
}

/// Parses one group at the start of `s`; returns its milliseconds and the rest of `s`.
fn group_millis(s: &str) -> Result<(u128, &str), String> {
    let (integer, rest) = split_leading(s, |b| b.is_ascii_digit());
    if integer.is_empty() {
        return Err(format!("a number was expected at {s:?}"));
    }
    let (fraction, rest) = match rest.strip_prefix('.') {
        None => ("", rest),
        Some(after_dot) => {
            let (fraction, rest) = split_leading(after_dot, |b| b.is_ascii_digit());
            if fraction.is_empty() {
                return Err(format!("digits were expected after {integer}."));
            }
            (fraction, rest)
        }
    };
    let (unit, rest) = split_leading(rest, |b| b.is_ascii_alphabetic());
    let unit_millis = unit_millis(unit, rest)?;
    let millis = digits_value(integer).saturating_mul(unit_millis);
    let fraction_millis = fraction_millis(fraction, unit_millis)
        .ok_or_else(|| format!("{integer}.{fraction}{unit} is finer than a millisecond"))?;
    Ok((millis.saturating_add(fraction_millis), rest))
}

/// Milliseconds per `unit`; `rest` is what follows it, for the error.
fn unit_millis(unit: &str, rest: &str) -> Result<u128, String> {
    match unit {
        "ms" => Ok(1),
        "s" => Ok(1_000),
        "m" => Ok(60_000),
        "h" => Ok(3_600_000),
        "" => match rest.chars().next() {
            None => Err("a unit ms, s, m or h is missing after the last number; \
                         only a whole number alone means seconds"
                .to_owned()),
            Some(c) => Err(format!(
                "unexpected character {c:?}; units are ms, s, m and h"
            )),
        },
        other => Err(format!(
            "unknown unit {other:?}; units are lower-case ms, s, m and h"
        )),
    }
}

/// The exact milliseconds of `0.<fraction>` units, `None` if not whole.
fn fraction_millis(fraction: &str, unit_millis: u128) -> Option<u128> {
    let significant = fraction.trim_end_matches('0');
    if significant.len() > MAX_FRACTION_DIGITS {
        return None;
    }
    let numerator = digits_value(significant).checked_mul(unit_millis)?;
    let exponent = u32::try_from(significant.len()).ok()?;
    let denominator = 10u128.checked_pow(exponent)?;
    (numerator % denominator == 0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::XorShift;

    #[test]
    fn duration_forms() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("15", ms(15_000)),
            ("0015", ms(15_000)),
            ("15s", ms(15_000)),
            ("500ms", ms(500)),
            ("1m", ms(60_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("30s1m", ms(90_000)),
            ("1s1s", ms(2_000)),
            ("1.5s", ms(1_500)),
            ("1.500s", ms(1_500)),
            ("0.001s", ms(1)),
            ("1.0ms", ms(1)),
            ("0.5m", ms(30_000)),
            ("0.000125h", ms(450)),
            ("2.5h", ms(9_000_000)),
            ("8760h", ms(31_536_000_000)),
            ("31536000", ms(31_536_000_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn duration_rejections() {
        for text in [
            "", " ", "\t", " 15", "15 ", "1 s", "-5", "-5s", "+5", "+5s", "5d", "5sec", "5S",
            "5MS", "5µs", "5us", "5ns", "NaN", "inf", "infinity", "1.5", "1.", ".5s", "1.s",
            "1..5s", "1.0005s", "1.5ms", "0", "0s", "0ms", "0.0s", "8761h", "31536001", "1m30",
            "s", "ms", "1h-5m", "1e3s", "0x10", "1_000s", "15s,", "١٥",
        ] {
            let result = parse_duration(text);
            assert!(result.is_err(), "{text:?} gave {result:?}");
        }
        assert!(parse_duration(&"9".repeat(60)).is_err_and(|e| e.contains("1 year")));
        assert!(parse_duration("9000h").is_err_and(|e| e.contains("1 year")));
        assert!(parse_duration("5S").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_duration("1.0005s").is_err_and(|e| e.contains("millisecond")));
    }

    #[test]
    fn format_duration_round_trips() {
        for millis in [1u64, 500, 1_000, 1_500, 60_000, 31_536_000_000] {
            let value = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(value)), Ok(value));
        }
        // A third of a 4 s lease is not whole milliseconds: shown truncated.
        assert_eq!(format_duration(Duration::from_secs(4) / 3), "1333ms");
    }

    #[test]
    fn parse_duration_never_panics_and_respects_bounds() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..5_000 {
            let text = rng.text();
            if let Ok(value) = parse_duration(&text) {
                accepted += 1;
                assert!(value > Duration::ZERO, "{text:?}");
                assert!(value.as_millis() <= MAX_DURATION_MS, "{text:?}");
                assert_eq!(value.subsec_nanos() % 1_000_000, 0, "{text:?}");
                assert_eq!(parse_duration(&format_duration(value)), Ok(value));
            }
        }
        assert!(accepted > 0);
    }
}
