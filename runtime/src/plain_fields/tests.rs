use std::io;

use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::testing::CapturedLog as Captured;

#[derive(Debug)]
struct Outer(io::Error);

impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outer failure")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn lines_are_the_same_as_the_default_fields_write_them() {
    crate::scoped_logs_see_every_callsite();
    let (default, plain) = (Captured::default(), Captured::default());
    let (d, p) = (default.clone(), plain.clone());
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .fmt_fields(DefaultFields::new())
                .with_writer(move || d.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .fmt_fields(PlainFields)
                .with_writer(move || p.clone()),
        );
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            target: "access",
            method = %"GET",
            path = %"/a b?x=\"y\"",
            protocol = "HTTP/1.1",
            response_code = 200u16,
            duration_ms = 1.0f64,
            small = 0.125f64,
            delta = -5i64,
            big = u128::MAX,
            ok = true,
            quoted = "he said \"hi\" \\o/",
            tab = "a\tb\r\n",
            unicode = "héllo wörld",
            escape = "\u{1b}[31mred",
            empty = "",
            list = ?vec![1, 2],
            r#type = "keyword",
            "request"
        );
        tracing::info!("a message with \u{1b}[31m an escape and \"quotes\"");
        tracing::info!(message = "message as a field", after = "x");
        let failure = Outer(io::Error::other("inner cause"));
        tracing::warn!(
            error = &failure as &(dyn std::error::Error + 'static),
            "failed"
        );
        tracing::warn!(error = %failure, "failed as text");
        let span = tracing::info_span!("conn", peer = "10.0.0.1:443", id = 7u64);
        let _in = span.enter();
        tracing::info!(bytes = 3u64, "in a span");
        tracing::info!("");
    });
    let (default, plain) = (default.text(), plain.text());
    assert_eq!(default.lines().count(), 7, "{default}");
    for (d, p) in default.lines().zip(plain.lines()) {
        assert_eq!(p, d);
    }
    assert_eq!(plain, default);
}

#[test]
fn thousandths_are_written_as_debug_writes_their_float() {
    let mut values = vec![
        0.001,
        0.01,
        0.1,
        0.5,
        0.931,
        0.93,
        0.9,
        1.0,
        1.5,
        12.25,
        12.125,
        100.0,
        999.999,
        1000.001,
        123_456.789,
        4_000_000_000.5,
        999_999_999_999.999,
        -0.5,
        -12.345,
        -7.0,
    ];
    // Durations as the waypoint rounds them, over a spread of magnitudes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let millis = (x % 10_000_000) as f64 / 997.0 * 10f64.powi((x % 7) as i32 - 3);
        values.push((millis * 1000.0).round() / 1000.0);
    }
    let mut written = 0;
    for v in &values {
        let mut fast = String::new();
        match thousandths(*v) {
            Some(t) => t.write(&mut fast).unwrap(),
            None => continue,
        }
        assert_eq!(fast, format!("{v:?}"), "{v}");
        written += 1;
    }
    // Only those below 1e12 (15 digits with the thousandths) and above 0 take this way.
    assert!(
        written * 10 >= values.len() * 9,
        "{written} of {}",
        values.len()
    );
}

#[test]
fn other_floats_are_left_to_debug() {
    for v in [
        0.0,
        -0.0,
        0.1 + 0.2,
        0.000_1,
        1e-7,
        1e15,
        1e300,
        f64::NAN,
        f64::INFINITY,
        f64::MIN_POSITIVE,
    ] {
        assert_eq!(thousandths(v), None, "{v:?}");
    }
    assert_eq!(
        thousandths(0.125),
        Some(Thousandths {
            negative: false,
            whole: 0,
            fraction: 125
        })
    );
}
