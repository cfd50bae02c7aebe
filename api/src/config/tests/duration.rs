use std::time::Duration;

use crate::config::parse_duration;

#[test]
fn accepts_go_and_protobuf_durations() {
    let ms = Duration::from_millis;
    let cases: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("1s", Duration::from_secs(1)),
        ("1.5s", ms(1500)),
        ("100ms", ms(100)),
        ("10us", Duration::from_micros(10)),
        ("10\u{b5}s", Duration::from_micros(10)),
        ("10\u{3bc}s", Duration::from_micros(10)),
        ("300ns", Duration::from_nanos(300)),
        ("1h", Duration::from_secs(3600)),
        ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
        ("1h2m3.5s", ms(3_723_500)),
        ("1m30s", Duration::from_secs(90)),
        ("+5s", Duration::from_secs(5)),
        (".5s", ms(500)),
        ("1.s", Duration::from_secs(1)),
        ("0.000000001s", Duration::from_nanos(1)),
        // Sub-nanosecond fractions are truncated.
        ("1.0000000009s", Duration::from_secs(1)),
        ("1.25h", Duration::from_secs(4500)),
        ("86400s", Duration::from_secs(86400)),
        // Go's maximum is about 2562047h47m.
        ("2562047h", Duration::from_secs(2_562_047 * 3600)),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_duration(input), Ok(*expected), "{input:?}");
    }
}

#[test]
fn rejects_malformed_durations() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("+", "empty"),
        ("1", "missing unit"),
        ("10 ", "unknown unit"),
        ("s", "expected a number"),
        ("-1s", "negative"),
        ("1x", "unknown unit \"x\""),
        ("1sec", "unknown unit"),
        ("1.5.5s", "missing unit"),
        ("1s2", "missing unit"),
        ("1 s", "unknown unit"),
        ("abc", "expected a number"),
        (".s", "expected a number"),
        ("2562048h", "out of range"),
        ("99999999999999999999999999999999999999999h", "out of range"),
    ];
    for (input, needle) in cases {
        match parse_duration(input) {
            Ok(d) => panic!("{input:?} parsed as {d:?}"),
            Err(e) => assert!(e.contains(needle), "{input:?}: {e:?} lacks {needle:?}"),
        }
    }
}
