use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use super::{LogTime, write_time};

fn at(seconds: u64, micros: u32) -> String {
    let mut out = String::new();
    write_time(
        &mut Writer::new(&mut out),
        Duration::new(seconds, micros * 1000),
    )
    .unwrap();
    out
}

#[test]
fn dates_and_times_are_rfc_3339_utc_with_microseconds() {
    let cases = [
        (0, 0, "1970-01-01T00:00:00.000000Z"),
        (59, 999_999, "1970-01-01T00:00:59.999999Z"),
        (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
        (951_868_800, 0, "2000-03-01T00:00:00.000000Z"),
        (1_709_164_800, 123_456, "2024-02-29T00:00:00.123456Z"),
        (1_735_689_599, 0, "2024-12-31T23:59:59.000000Z"),
        (1_796_491_998, 42, "2026-12-05T17:33:18.000042Z"),
        (4_107_542_399, 0, "2100-02-28T23:59:59.000000Z"),
        (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
        (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
        (253_402_300_800, 0, "+10000-01-01T00:00:00.000000Z"),
    ];
    for (seconds, micros, want) in cases {
        assert_eq!(at(seconds, micros), want, "{seconds} s {micros} us");
        // Again, now from the cached second (or after another second replaced it).
        assert_eq!(at(seconds, micros), want, "{seconds} s {micros} us, cached");
    }
}

/// What tracing-subscriber writes for now and what we write, read within one second.
fn both_now() -> (String, String) {
    let mut theirs = String::new();
    tracing_subscriber::fmt::time::SystemTime
        .format_time(&mut Writer::new(&mut theirs))
        .unwrap();
    let mut ours = String::new();
    LogTime.format_time(&mut Writer::new(&mut ours)).unwrap();
    (theirs, ours)
}

#[test]
fn the_text_is_tracing_subscribers() {
    // The two clocks are read a moment apart: compare up to the microseconds, and read
    // again if a second boundary fell between them.
    for _ in 0..5 {
        let (theirs, ours) = both_now();
        let (their_second, their_fraction) = theirs.split_once('.').unwrap();
        let (our_second, our_fraction) = ours.split_once('.').unwrap();
        if their_second != our_second {
            continue;
        }
        assert_eq!(
            our_fraction.len(),
            their_fraction.len(),
            "{ours} vs {theirs}"
        );
        assert!(our_fraction.ends_with('Z'), "{ours}");
        assert!(
            our_fraction[..6].bytes().all(|b| b.is_ascii_digit()),
            "{ours}"
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(now.as_secs() > 1_700_000_000, "the clock is set");
        return;
    }
    panic!("five readings straddled a second boundary");
}
