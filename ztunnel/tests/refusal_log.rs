//! The refusal warning is asserted in its own test binary: `tracing` decides once per
//! callsite, process-wide, whether anyone listens, and other unit tests that refuse
//! connections without a subscriber could race that decision in a shared binary.

use std::sync::Arc;

use runtime::testing::CapturedLog as Captured;

use ztunnel::limits::{Limits, LimitsConfig};

#[test]
fn a_burst_of_refusals_is_logged_once_with_the_pod_and_the_limit() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let limits = Arc::new(Limits::new(LimitsConfig {
        max_inbound_connections: 1,
        max_pending_handshakes: 4,
    }));
    let pod = limits.pod("mesh/server".into());
    let _slot = pod.try_connection("HBONE").unwrap();
    for _ in 0..100 {
        assert!(pod.try_connection("TCP").is_none());
    }
    assert_eq!(pod.refused(), 100);
    let text = captured.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("at its limit of concurrent inbound connections"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    for field in [
        "pod=mesh/server",
        "limit=1",
        "protocol=\"TCP\"",
        "response_flags=\"UO\"",
    ] {
        assert!(lines[0].contains(field), "{field} missing in {}", lines[0]);
    }
}
