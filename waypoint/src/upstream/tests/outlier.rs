//! Outlier detection, driven by explicit `Instant`s.

use std::time::{Duration, Instant};

use super::{compiled, endpoints};
use crate::upstream::{Outcome, OutlierDetector};

fn detector(outlier: &str, hosts: usize, start: Instant) -> OutlierDetector {
    let config = compiled(&format!(
        "host: r\ntrafficPolicy:\n  outlierDetection: {outlier}"
    ))
    .traffic_policy(None, 80)
    .unwrap()
    .outlier_detection
    .unwrap();
    let d = OutlierDetector::new(config, start);
    d.set_hosts(&endpoints(hosts));
    d
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

#[test]
fn consecutive_errors_eject_and_successes_reset() {
    use Outcome::{LocalOriginFailure as Lo, LocalOriginSuccess as Ok_, Response as R};
    let cases: [(&str, &[Outcome], bool); 9] = [
        ("{consecutive5xxErrors: 3}", &[R(500), R(503)], false),
        ("{consecutive5xxErrors: 3}", &[R(500), R(503), R(500)], true),
        (
            "{consecutive5xxErrors: 3}",
            &[R(500), R(500), R(200), R(500), R(500)],
            false,
        ),
        (
            "{consecutive5xxErrors: 3}",
            &[R(500), R(404), R(500), R(500)],
            false,
        ),
        (
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2}",
            &[R(502), R(500), R(503)],
            false,
        ),
        (
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2}",
            &[R(500), R(502), R(504)],
            true,
        ),
        (
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2}",
            &[Lo, Lo],
            true,
        ),
        (
            "{consecutive5xxErrors: 2, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}",
            &[Lo, R(500), Ok_, Lo],
            false,
        ),
        (
            "{consecutive5xxErrors: 0, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}",
            &[Lo, R(503), Lo],
            true,
        ),
    ];
    let t0 = Instant::now();
    for (spec, outcomes, want) in cases {
        let spec = spec.replace('}', ", maxEjectionPercent: 100}");
        let d = detector(&spec, 4, t0);
        let mut ejected = false;
        for (i, o) in outcomes.iter().enumerate() {
            let now = secs(t0, i as u64);
            ejected |= d.record("pod-1", *o, now);
        }
        let now = secs(t0, outcomes.len() as u64);
        assert_eq!(ejected, want, "{spec} {outcomes:?}");
        assert_eq!(d.is_ejected("pod-1", now), want, "{spec} {outcomes:?}");
        assert!(!d.is_ejected("pod-2", now));
    }
}

#[test]
fn ejection_ends_on_a_tick_and_grows_with_repeats() {
    let t0 = Instant::now();
    let d = detector(
        "{consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}",
        4,
        t0,
    );
    let fail = |s| d.record("pod-0", Outcome::Response(500), secs(t0, s));
    let ejected = |s| d.is_ejected("pod-0", secs(t0, s));
    // Ejected at 5s for 30s: the first tick at or after 35s is 40s.
    assert!(fail(5));
    assert!(ejected(5) && ejected(35) && ejected(39));
    assert!(!ejected(40));
    // Ejected again within a tick of coming back: twice the base, 41+60=101 -> 110.
    assert!(fail(41));
    assert!(ejected(109));
    assert!(!ejected(110));
    // Healthy for two ticks (120s, 130s), the multiplier is back to 0: 30s again.
    assert!(fail(131));
    assert!(ejected(169));
    assert!(!ejected(170));
}

#[test]
fn ejections_respect_max_ejection_percent() {
    let t0 = Instant::now();
    let cases = [
        // (hosts, maxEjectionPercent, ejections allowed)
        (10, "20", 2),
        (10, "25", 2),
        (4, "50", 2),
        (5, "100", 5),
        // Envoy's default 10% ejects nothing from fewer than 10 hosts.
        (5, "10", 0),
        (10, "10", 1),
    ];
    for (hosts, pct, want) in cases {
        let d = detector(
            &format!("{{consecutive5xxErrors: 1, maxEjectionPercent: {pct}}}"),
            hosts,
            t0,
        );
        let ejected = (0..hosts)
            .filter(|i| d.record(&format!("pod-{i}"), Outcome::Response(503), t0))
            .count();
        assert_eq!(ejected, want, "{hosts} hosts, {pct}%");
        let eps = endpoints(hosts);
        assert_eq!(d.filter(&eps, t0).len(), hosts - want);
    }
}

#[test]
fn filter_drops_ejected_endpoints_unless_below_min_health() {
    let t0 = Instant::now();
    let eps = endpoints(4);
    let cases = [("0", 2), ("50", 2), ("60", 4)];
    for (min_health, want) in cases {
        let d = detector(
            &format!(
                "{{consecutive5xxErrors: 1, maxEjectionPercent: 100, minHealthPercent: {min_health}}}"
            ),
            4,
            t0,
        );
        assert!(d.filter(&eps, t0).len() == 4);
        d.record("pod-0", Outcome::Response(500), t0);
        d.record("pod-2", Outcome::Response(500), t0);
        let kept = d.filter(&eps, t0);
        assert_eq!(kept.len(), want, "minHealthPercent {min_health}");
        if want == 2 {
            let uids: Vec<_> = kept.iter().map(|e| &*e.uid).collect();
            assert_eq!(uids, ["pod-1", "pod-3"]);
        }
        // Back after the default 30s ejection, at the 30s tick.
        assert_eq!(d.filter(&eps, secs(t0, 30)).len(), 4);
    }
}
