//! Durations as Istio's YAML writes them.

use std::time::Duration;

/// Largest duration accepted: Go's `time.Duration` is an `int64` of
/// nanoseconds (about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a duration as Go's `time.ParseDuration` (and so Istio's CRDs and
/// protobuf-JSON) accept it: a sequence of decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us` / `µs`, `ms`, `s`, `m`, `h`),
/// e.g. `1h2m3.5s`, `100ms`, `1.5s`, `10us`. A bare `0` is zero. A leading
/// `+` is allowed; negative durations are not (no Istio field takes one).
/// Fractions finer than a nanosecond are truncated.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let original = s;
    let bad = |why: &str| format!("invalid duration {original:?}: {why}");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let not_digit = |c: char| !c.is_ascii_digit();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int_part, after) = rest.split_at(rest.find(not_digit).unwrap_or(rest.len()));
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => f.split_at(f.find(not_digit).unwrap_or(f.len())),
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("expected a number"));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(bad("missing unit (ns, us, ms, s, m or h)")),
            other => return Err(bad(&format!("unknown unit {other:?}"))),
        };
        let out_of_range = || bad("out of range");
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| out_of_range())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(out_of_range)?;
        if !frac_part.is_empty() {
            // 18 digits are finer than a nanosecond for every unit.
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().map_err(|_| out_of_range())?;
            let scale = 10u128.pow(digits.len() as u32);
            nanos += frac * unit_nanos / scale;
        }
        total = total.checked_add(nanos).ok_or_else(out_of_range)?;
        if total > MAX_NANOS {
            return Err(out_of_range());
        }
        rest = after;
    }
    Ok(Duration::from_nanos(total as u64))
}
