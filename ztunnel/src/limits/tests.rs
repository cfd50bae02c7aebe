use std::time::Duration;

use prometheus_client::encoding::text::encode;

use super::*;

fn limits(connections: usize, handshakes: usize) -> Arc<Limits> {
    Arc::new(Limits::new(LimitsConfig {
        max_inbound_connections: connections,
        max_pending_handshakes: handshakes,
    }))
}

fn exposition(limits: &Limits) -> String {
    let mut registry = Registry::default();
    limits.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

/// The sample line of `metric` with exactly `labels` (as written), if present.
fn sample(text: &str, metric: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{metric}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

#[test]
fn defaults_fit_ten_thousand_connections_and_bound_handshakes() {
    let config = LimitsConfig::default();
    assert_eq!(config.max_inbound_connections, 32_768);
    assert_eq!(config.max_pending_handshakes, 128);
}

#[test]
fn connections_beyond_the_limit_are_refused_until_one_closes() {
    let limits = limits(2, 8);
    let pod = limits.pod("mesh/server".into());
    let a = pod.try_connection("HBONE").expect("first slot");
    let _b = pod.try_connection("TCP").expect("second slot");
    assert_eq!(pod.active(), 2);
    assert!(pod.try_connection("HBONE").is_none());
    assert!(pod.try_connection("TCP").is_none());
    assert_eq!(pod.refused(), 2);
    drop(a);
    assert_eq!(pod.active(), 1);
    let _c = pod
        .try_connection("HBONE")
        .expect("a slot freed by a close");
    assert_eq!(pod.refused(), 2);

    // Pods do not share the limit.
    let other = limits.pod("mesh/other".into());
    let _d = other
        .try_connection("TCP")
        .expect("another pod's own slots");
    assert_eq!(other.refused(), 0);
}

#[test]
fn metrics_carry_pod_and_reason_and_go_away_with_the_pod() {
    let limits = limits(1, 4);
    let pod = limits.pod("mesh/server".into());
    let slot = pod.try_connection("HBONE").unwrap();
    assert!(pod.try_connection("HBONE").is_none());
    assert!(pod.try_connection("TCP").is_none());
    let text = exposition(&limits);
    assert!(
        text.contains("# TYPE ztunnel_connections_over_limit counter"),
        "{text}"
    );
    let over = |reason: &str| {
        sample(
            &text,
            "ztunnel_connections_over_limit_total",
            &format!("pod=\"mesh/server\",reason=\"{reason}\""),
        )
    };
    assert_eq!(over(REASON_CONNECTIONS), Some(2.0), "{text}");
    assert_eq!(over(REASON_HANDSHAKES), Some(0.0), "{text}");
    let active = |text: &str| {
        sample(
            text,
            "ztunnel_inbound_connections_active",
            "pod=\"mesh/server\"",
        )
    };
    assert_eq!(active(&text), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "ztunnel_pending_handshakes", "pod=\"mesh/server\""),
        Some(0.0),
        "{text}"
    );
    drop(slot);
    assert_eq!(active(&exposition(&limits)), Some(0.0));
    drop(pod);
    let text = exposition(&limits);
    assert!(!text.contains("mesh/server"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn the_accept_loop_waits_for_a_handshake_slot_instead_of_queueing() {
    let limits = limits(16, 2);
    let pod = limits.pod("mesh/server".into());
    let first = pod.handshake_slot().await;
    let _second = pod.handshake_slot().await;
    assert_eq!(pod.pending_handshakes(), 2);
    assert_eq!(pod.handshake_waits(), 0);
    let third = pod.handshake_slot();
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_secs(60), &mut third)
            .await
            .is_err(),
        "a third handshake slot must wait while two are taken"
    );
    assert_eq!(pod.handshake_waits(), 1);
    let text = exposition(&limits);
    assert_eq!(
        sample(&text, "ztunnel_pending_handshakes", "pod=\"mesh/server\""),
        Some(2.0),
        "{text}"
    );
    drop(first);
    let _third = tokio::time::timeout(Duration::from_secs(1), third)
        .await
        .expect("a finished handshake frees its slot");
    assert_eq!(pod.pending_handshakes(), 2);
    let text = exposition(&limits);
    assert_eq!(
        sample(
            &text,
            "ztunnel_connections_over_limit_total",
            &format!("pod=\"mesh/server\",reason=\"{REASON_HANDSHAKES}\"")
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn the_throttle_lets_one_message_through_per_second_and_counts_the_rest() {
    let throttle = Throttle::default();
    assert_eq!(throttle.due_at(1), Some(0));
    assert_eq!(throttle.due_at(2), None);
    assert_eq!(throttle.due_at(1000), None);
    assert_eq!(throttle.due_at(1001), Some(2));
    assert_eq!(throttle.due_at(1500), None);
    assert_eq!(throttle.due_at(5000), Some(1));
}
