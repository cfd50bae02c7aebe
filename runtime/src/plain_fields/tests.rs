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
