use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::rbac::{Denied, DenyReason};
use crate::test_mesh::{CLIENT, SERVER, addr, id, inbound_from_client, pod, state};

use runtime::testing::CapturedLog as Captured;

/// `log`'s line as ztunnel writes it in `format` (the same layer as the process's).
fn line(log: &ConnectionLog, format: runtime::LogFormat) -> String {
    runtime::scoped_logs_see_every_callsite();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry().with(runtime::format_layer(
        format,
        move || writer.clone(),
        false,
    ));
    tracing::subscriber::with_default(subscriber, || log.emit());
    let out = captured.text();
    assert_eq!(out.lines().count(), 1, "one line per connection: {out}");
    out.trim_end().to_owned()
}

fn json_line(log: &ConnectionLog) -> Value {
    let line = line(log, runtime::LogFormat::FlatJson);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The access fields of a JSON line (dropping timestamp, level, target and message).
fn fields(line: &Value) -> Value {
    let mut fields = line.as_object().unwrap().clone();
    for meta in ["timestamp", "level", "target", "message"] {
        fields.remove(meta);
    }
    Value::Object(fields)
}

/// client-0 dialled the echo VIP and got server-0 over HBONE.
fn outbound_via_vip(state: &WorkloadState) -> ConnectionLog {
    let upstream = state.resolve(addr("10.96.0.10:80")).unwrap();
    ConnectionLog::outbound(
        &pod("client-0", "client"),
        &id(CLIENT),
        addr("10.244.0.20:40000"),
        Some(addr("10.96.0.10:80")),
    )
    .upstream(&upstream)
    .transferred(Transferred {
        a_to_b: 5,
        b_to_a: 490,
    })
    .lasted(Some(Duration::from_micros(14_700)))
}

#[test]
fn json_lines_carry_every_field_at_the_top_level() {
    let state = state();
    let line = json_line(&outbound_via_vip(&state));
    assert_eq!(line["target"], "access");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "outbound connection closed");
    assert!(line["timestamp"].is_string(), "{line}");
    assert_eq!(
        fields(&line),
        json!({
            "src.addr": "10.244.0.20:40000",
            "src.workload": "client-0",
            "src.namespace": "mesh",
            "src.identity": CLIENT,
            "dst.addr": "10.244.1.5:8080",
            "dst.service": "echo.mesh.svc.cluster.local",
            "dst.workload": "server-0",
            "dst.namespace": "mesh",
            "dst.identity": SERVER,
            "direction": "outbound",
            "original_dst": "10.96.0.10:80",
            "protocol": "HBONE",
            "bytes_sent": 490,
            "bytes_recv": 5,
            "duration_ms": 14,
            "response_flags": "",
            "connection_security_policy": "mutual_tls",
        })
    );
}

#[test]
fn text_lines_keep_what_the_lab_greps_for() {
    let state = state();
    let text = line(&outbound_via_vip(&state), runtime::LogFormat::Text);
    for part in [
        " INFO access: outbound connection closed ",
        "src.addr=10.244.0.20:40000 ",
        "src.workload=client-0 src.namespace=mesh ",
        &format!("src.identity={CLIENT} "),
        "dst.addr=10.244.1.5:8080 dst.service=echo.mesh.svc.cluster.local ",
        &format!("dst.identity={SERVER} "),
        "direction=\"outbound\" original_dst=10.96.0.10:80 protocol=\"HBONE\" ",
        "bytes_sent=490 bytes_recv=5 duration_ms=14 response_flags=\"\" ",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(!text.contains("error="), "no error, no field: {text}");

    // Inbound over HBONE: the CONNECT target as dst.addr, the tunnel peer as src.addr.
    let inbound = inbound_from_client(&state);
    let text = line(&inbound, runtime::LogFormat::Text);
    for part in [
        "access: inbound connection closed ",
        &format!("src.identity={CLIENT} "),
        "dst.addr=10.244.1.5:8080 ",
        "src.addr=10.244.0.20:51000 ",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
}

#[test]
fn a_denied_connection_is_flagged_with_nothing_moved() {
    let state = state();
    // The tunnel peer's IP is client-0's, but it proved another identity: the workload
    // is not named after the IP.
    let impostor = id("spiffe://cluster.local/ns/other/sa/impostor");
    let log = ConnectionLog::inbound(
        &state,
        &pod("server-0", "server"),
        &id(SERVER),
        addr("10.244.0.20:51000"),
        Some(&impostor),
        Some("10.244.1.5:8080".into()),
    )
    .refused(&Refusal::Denied(Denied {
        policy: "mesh/deny-client".into(),
        reason: DenyReason::DenyPolicyMatched,
    }))
    .lasted(Some(Duration::ZERO));
    let line = json_line(&log);
    assert_eq!(line["message"], "inbound connection closed");
    assert_eq!(
        fields(&line),
        json!({
            "src.addr": "10.244.0.20:51000",
            "src.identity": impostor.to_string(),
            "dst.addr": "10.244.1.5:8080",
            "dst.workload": "server-0",
            "dst.namespace": "mesh",
            "dst.identity": SERVER,
            "direction": "inbound",
            "protocol": "HBONE",
            "bytes_sent": 0,
            "bytes_recv": 0,
            "duration_ms": 0,
            "response_flags": "DENY",
            "connection_security_policy": "mutual_tls",
            "error": "denied by authorization policy mesh/deny-client: matched DENY policy",
        })
    );

    let elsewhere = log.clone().refused(&Refusal::NotThisPod);
    assert_eq!(
        (elsewhere.flag.as_str(), elsewhere.error.as_deref()),
        ("NR", Some("not an address of this pod"))
    );
}

#[test]
fn plaintext_peers_are_named_by_ip_without_identity() {
    let state = state();
    let log = ConnectionLog::inbound(
        &state,
        &pod("server-0", "server"),
        &id(SERVER),
        addr("10.244.0.30:41000"),
        None,
        Some("10.244.1.5:8080".into()),
    )
    .transferred(Transferred {
        a_to_b: 3,
        b_to_a: 4,
    });
    let line = json_line(&log);
    assert_eq!(line["message"], "inbound plaintext connection closed");
    let f = fields(&line);
    assert_eq!(f["src.workload"], "legacy-0");
    assert_eq!(f["src.namespace"], "mesh");
    assert!(f.get("src.identity").is_none(), "{f}");
    assert_eq!(
        (&f["protocol"], &f["connection_security_policy"]),
        (&json!("TCP"), &json!("none"))
    );
    assert_eq!((&f["bytes_recv"], &f["bytes_sent"]), (&json!(3), &json!(4)));
    // Duration unknown: omitted.
    assert!(f.get("duration_ms").is_none(), "{f}");
}

#[test]
fn outbound_destinations_outside_the_mesh_and_without_upstream() {
    let state = state();
    let client = |dst: &str| {
        ConnectionLog::outbound(
            &pod("client-0", "client"),
            &id(CLIENT),
            addr("10.244.0.20:40000"),
            Some(addr(dst)),
        )
    };
    // A pod outside the mesh: named, but not verified, and plain TCP.
    let legacy = client("10.244.0.30:8080")
        .upstream(&state.resolve(addr("10.244.0.30:8080")).unwrap())
        .failed(
            ResponseFlag::UpstreamFailure,
            "connect to 10.244.0.30:8080: refused",
        );
    let f = fields(&json_line(&legacy));
    assert_eq!(f["dst.workload"], "legacy-0");
    assert!(f.get("dst.identity").is_none(), "{f}");
    assert!(f.get("dst.service").is_none(), "{f}");
    assert_eq!(f["response_flags"], "UF");
    assert_eq!(f["protocol"], "TCP");

    // Not in the state at all: passthrough, nothing known about the destination.
    let outside = client("192.0.2.1:443").upstream(&state.resolve(addr("192.0.2.1:443")).unwrap());
    let f = fields(&json_line(&outside));
    assert_eq!(f["dst.addr"], "192.0.2.1:443");
    for unknown in [
        "dst.workload",
        "dst.namespace",
        "dst.identity",
        "dst.service",
    ] {
        assert!(f.get(unknown).is_none(), "{unknown} in {f}");
    }

    // The service has no such port: no route, but the service is named.
    let err = state.resolve(addr("10.96.0.10:9999")).unwrap_err();
    let f = fields(&json_line(&client("10.96.0.10:9999").unresolved(&err)));
    assert_eq!(
        (&f["response_flags"], &f["dst.service"], &f["dst.addr"]),
        (
            &json!("NR"),
            &json!("echo.mesh.svc.cluster.local"),
            &json!("10.96.0.10:9999")
        )
    );
    assert_eq!(f["error"], err.to_string());

    // No original destination at all.
    let lost = ConnectionLog::outbound(
        &pod("client-0", "client"),
        &id(CLIENT),
        addr("10.244.0.20:40000"),
        None,
    );
    let f = fields(&json_line(&lost));
    assert!(
        f.get("dst.addr").is_none() && f.get("original_dst").is_none(),
        "{f}"
    );
}

#[test]
fn a_connection_cut_off_by_policy_is_flagged_deny() {
    let state = state();
    let inbound = || inbound_from_client(&state);
    let moved = Transferred {
        a_to_b: 10,
        b_to_a: 20,
    };
    let cut = revoked(io::Error::new(
        io::ErrorKind::PermissionDenied,
        "closed by policy: matched DENY policy: mesh/deny-client",
    ));
    let broken = |source| {
        Err(CopyError {
            transferred: moved,
            source,
        })
    };
    let log = inbound().copied(&broken(cut));
    assert_eq!(log.flag, ResponseFlag::Deny);
    assert_eq!((log.bytes_recv, log.bytes_sent), (10, 20));
    assert_eq!(
        log.error.as_deref(),
        Some("closed by policy: matched DENY policy: mesh/deny-client")
    );

    // Any other broken copy only carries its error, even a PermissionDenied one.
    let reset = io::Error::new(io::ErrorKind::PermissionDenied, "EPERM from netfilter");
    let log = inbound().copied(&broken(reset));
    assert_eq!(log.flag, ResponseFlag::None);
    assert_eq!(log.error.as_deref(), Some("EPERM from netfilter"));

    let log = inbound().copied(&Ok(moved));
    assert_eq!((log.flag, log.error), (ResponseFlag::None, None));
}
