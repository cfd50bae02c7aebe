//! Log timestamps: tracing-subscriber's `SystemTime` format (RFC 3339 in UTC with
//! microseconds, `2026-12-05T17:13:18.123456Z`), with the date and time of day written once
//! per second per thread instead of being worked out from the epoch for every line; a
//! proxy writes an access line per request. The tests compare the output with
//! tracing-subscriber's.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// A `FormatTime` writing what `tracing_subscriber::fmt::time::SystemTime` writes.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogTime;

thread_local! {
    /// The second last written on this thread and its text up to the `.`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => write_time(w, since_epoch),
            // A clock before 1970: not worth a fast path.
            Err(_) => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// Writes the time `since_epoch` after 1970-01-01 as tracing-subscriber does.
fn write_time(w: &mut Writer<'_>, since_epoch: Duration) -> fmt::Result {
    let seconds = since_epoch.as_secs();
    let micros = since_epoch.subsec_micros();
    let cached = SECOND.try_with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != seconds {
            let (second, text) = &mut *cached;
            text.clear();
            write_second(text, seconds)?;
            *second = seconds;
        }
        w.write_str(&cached.1)?;
        write!(w, ".{micros:06}Z")
    });
    match cached {
        Ok(written) => written,
        // A line logged while this thread's locals are torn down: without the cache.
        Err(_) => {
            write_second(w, seconds)?;
            write!(w, ".{micros:06}Z")
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for `seconds` after the epoch (a year past 9999 as `+YYYYY`).
fn write_second(out: &mut impl fmt::Write, seconds: u64) -> fmt::Result {
    let days = i64::try_from(seconds / 86_400).map_err(|_| fmt::Error)?;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        write!(out, "+{year}")?;
    } else {
        write!(out, "{year:04}")?;
    }
    write!(
        out,
        "-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date (year, month, day) `days` after 1970-01-01 (before it,
/// when negative): Howard Hinnant's `civil_from_days`, counting in 400-year eras that
/// start on March 1st (so that the leap day is the last day of an era's year).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
