//! DestinationRule.

use super::*;
use crate::config::DestinationRule;
use crate::config::destination_rule::{ClientTlsMode, H2UpgradePolicy, SimpleLb};

const DESTINATION_RULE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bookinfo-ratings
  namespace: bookinfo
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive:
          probes: 5
          time: 7200s
          interval: 75s
      http:
        http1MaxPendingRequests: 64
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 1h
        h2UpgradePolicy: UPGRADE
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 5
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
      minHealthPercent: 30
    tls:
      mode: ISTIO_MUTUAL
    portLevelSettings:
    - port:
        number: 80
      loadBalancer:
        simple: ROUND_ROBIN
    - port:
        number: 9080
      loadBalancer:
        consistentHash:
          httpCookie:
            name: user
            path: /
            ttl: 0s
  subsets:
  - name: testversion
    labels:
      version: v3
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
          ringHash:
            minimumRingSize: 1024
  - name: v1
    labels:
      version: v1
  exportTo: ["."]
"#;

#[test]
fn destination_rule_parses_and_round_trips() {
    let dr: DestinationRule = parse(DESTINATION_RULE);
    let policy = dr.spec.traffic_policy.as_ref().unwrap();
    assert_eq!(
        policy.load_balancer.as_ref().unwrap().simple,
        Some(SimpleLb::LeastRequest)
    );
    let pool = policy.connection_pool.as_ref().unwrap();
    assert_eq!(pool.tcp.as_ref().unwrap().max_connections, Some(100));
    let http = pool.http.as_ref().unwrap();
    assert_eq!(http.http1_max_pending_requests, Some(64));
    assert_eq!(http.http2_max_requests, Some(1000));
    assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::Upgrade));
    let outlier = policy.outlier_detection.as_ref().unwrap();
    assert_eq!(outlier.consecutive_5xx_errors, Some(7));
    assert_eq!(outlier.max_ejection_percent, Some(50));
    assert_eq!(
        policy.tls.as_ref().unwrap().mode,
        Some(ClientTlsMode::IstioMutual)
    );
    let cookie = policy.port_level_settings[1]
        .load_balancer
        .as_ref()
        .unwrap();
    assert_eq!(
        cookie
            .consistent_hash
            .as_ref()
            .unwrap()
            .http_cookie
            .as_ref()
            .unwrap()
            .name,
        "user"
    );
    assert_eq!(dr.spec.subsets[0].labels["version"], "v3");
    assert!(dr.validate().is_empty(), "{:#?}", dr.validate());
    round_trip(&dr);
}

#[test]
fn destination_rule_more_examples_are_valid() {
    let dr = assert_valid::<DestinationRule>(
        r#"
        host: reviews
        workloadSelector:
          matchLabels:
            app: ratings
        exportTo: ["."]
        trafficPolicy:
          loadBalancer:
            localityLbSetting:
              enabled: true
              failover:
              - from: us-east
                to: eu-west
          tls:
            mode: MUTUAL
            credentialName: client-credential
            sni: reviews.example.com
            subjectAltNames: [reviews.example.com]
          tunnel:
            targetHost: 192.168.1.2
            targetPort: 443
          proxyProtocol:
            version: V2
        subsets:
        - name: by-ip
          labels: {version: v2}
          trafficPolicy:
            loadBalancer:
              consistentHash:
                useSourceIp: true
        - name: by-query
          trafficPolicy:
            loadBalancer:
              consistentHash:
                httpQueryParameterName: user
                maglev: {tableSize: 65537}
        "#,
    );
    round_trip(&dr);
    let lb = dr
        .spec
        .traffic_policy
        .as_ref()
        .unwrap()
        .load_balancer
        .as_ref()
        .unwrap();
    assert_eq!(
        lb.locality_lb_setting.as_ref().unwrap()["failover"][0]["to"],
        "eu-west"
    );
}

#[test]
fn destination_rule_rejects_unknown_fields() {
    assert_unknown_field::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {simpel: ROUND_ROBIN}}",
        "simpel",
    );
    assert_unknown_field::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {consecutive5xxError: 1}}",
        "consecutive5xxError",
    );
    assert_unknown_field::<DestinationRule>(
        "host: a\nsubsets: [{name: v1, label: {a: b}}]",
        "label",
    );
    assert_parse_error::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}",
        "unknown variant `FASTEST`",
    );
    assert_parse_error::<DestinationRule>(
        "host: a\ntrafficPolicy: {tls: {mode: ON}}",
        "unknown variant",
    );
}

#[test]
fn host_is_required() {
    assert_invalid::<DestinationRule>("subsets: [{name: v1}]", "spec.host", "required");
    assert_invalid::<DestinationRule>("host: 'bad host'", "spec.host", "not a valid host");
    assert_valid::<DestinationRule>("host: '*.example.com'");
}

#[test]
fn subset_names_are_unique_labels() {
    assert_invalid::<DestinationRule>(
        "host: a\nsubsets: [{name: v1}, {name: v1}]",
        "spec.subsets[1].name",
        "duplicate subset name",
    );
    assert_invalid::<DestinationRule>(
        "host: a\nsubsets: [{labels: {a: b}}]",
        "spec.subsets[0].name",
        "required",
    );
    assert_invalid::<DestinationRule>(
        "host: a\nsubsets: [{name: V_1}]",
        "spec.subsets[0].name",
        "DNS-1123 label",
    );
    assert_invalid::<DestinationRule>(
        "host: a\nsubsets: [{name: v1, labels: {'a b': c}}]",
        "spec.subsets[0].labels[a b]",
        "label key",
    );
    assert_invalid::<DestinationRule>(
        "host: a\nsubsets: [{name: v1, trafficPolicy: {}}]",
        "spec.subsets[0].trafficPolicy",
        "at least one field",
    );
    assert_valid::<DestinationRule>(
        "host: a\nsubsets: [{name: v1, labels: {version: v1}}, {name: v2}]",
    );
}

#[test]
fn load_balancer_is_simple_xor_consistent_hash() {
    let lb = "spec.trafficPolicy.loadBalancer";
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
        lb,
        "only one of simple or consistentHash",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {}}",
        lb,
        "one of simple or consistentHash is required",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {}}}",
        &format!("{lb}.consistentHash"),
        "exactly one of httpHeaderName",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, useSourceIp: true}}}",
        &format!("{lb}.consistentHash"),
        "exactly one of httpHeaderName",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1h}}}}",
        &format!("{lb}.consistentHash.httpCookie.name"),
        "required",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: forever}}}}",
        &format!("{lb}.consistentHash.httpCookie.ttl"),
        "invalid duration",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: ''}}}",
        &format!("{lb}.consistentHash.httpHeaderName"),
        "must not be empty",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 1}, maglev: {tableSize: 7}}}}",
        &format!("{lb}.consistentHash"),
        "only one of ringHash or maglev",
    );
    for simple in [
        "ROUND_ROBIN",
        "LEAST_REQUEST",
        "LEAST_CONN",
        "RANDOM",
        "PASSTHROUGH",
        "UNSPECIFIED",
    ] {
        assert_valid::<DestinationRule>(&format!(
            "host: a\ntrafficPolicy: {{loadBalancer: {{simple: {simple}}}}}"
        ));
    }
    assert_valid::<DestinationRule>(
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 1h}}}}",
    );
}

#[test]
fn outlier_detection_and_connection_pool_limits() {
    let od = "spec.trafficPolicy.outlierDetection";
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}",
        &format!("{od}.maxEjectionPercent"),
        "0..100",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: -1}}",
        &format!("{od}.maxEjectionPercent"),
        "0..100",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {minHealthPercent: 200}}",
        &format!("{od}.minHealthPercent"),
        "0..100",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {interval: 5 minutes}}",
        &format!("{od}.interval"),
        "invalid duration",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {baseEjectionTime: '-1s'}}",
        &format!("{od}.baseEjectionTime"),
        "negative",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
        &format!("{od}.consecutiveLocalOriginFailures"),
        "splitExternalLocalOriginErrors",
    );
    assert_valid::<DestinationRule>(
        "host: a\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 100, minHealthPercent: 0, \
         splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}}",
    );

    let cp = "spec.trafficPolicy.connectionPool";
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {connectionPool: {}}",
        cp,
        "one of tcp or http",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
        &format!("{cp}.tcp.maxConnections"),
        "must not be negative",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {connectionPool: {tcp: {connectTimeout: 30}}}",
        &format!("{cp}.tcp.connectTimeout"),
        "missing unit",
    );
    for field in [
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "maxRetries",
        "maxConcurrentStreams",
    ] {
        assert_invalid::<DestinationRule>(
            &format!("host: a\ntrafficPolicy: {{connectionPool: {{http: {{{field}: -5}}}}}}"),
            &format!("{cp}.http.{field}"),
            "must not be negative",
        );
    }
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}",
        &format!("{cp}.http.useClientProtocol"),
        "UPGRADE",
    );
    assert_valid::<DestinationRule>(
        "host: a\ntrafficPolicy: {connectionPool: {http: {maxRetries: 0, idleTimeout: 90s}}}",
    );
}

#[test]
fn client_tls() {
    let tls = "spec.trafficPolicy.tls";
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {tls: {mode: MUTUAL}}",
        &format!("{tls}.clientCertificate"),
        "required for MUTUAL",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem}}",
        &format!("{tls}.privateKey"),
        "required for MUTUAL",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: cred, caCertificates: /ca.pem}}",
        tls,
        "credentialName excludes",
    );
    assert_valid::<DestinationRule>(
        "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}",
    );
    assert_valid::<DestinationRule>(
        "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, caCertificates: /ca.pem, insecureSkipVerify: false}}",
    );
}

#[test]
fn port_level_settings_and_tunnel() {
    let pls = "spec.trafficPolicy.portLevelSettings";
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {}",
        "spec.trafficPolicy",
        "at least one field",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {portLevelSettings: [{tls: {mode: DISABLE}}]}",
        &format!("{pls}[0].port"),
        "required",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 0}, tls: {mode: DISABLE}}]}",
        &format!("{pls}[0].port.number"),
        "not in 1..65535",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}, tls: {mode: DISABLE}}, {port: {number: 80}}]}",
        &format!("{pls}[1].port"),
        "duplicate port 80",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}]}",
        &format!("{pls}[0].loadBalancer"),
        "only one of simple or consistentHash",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {tunnel: {targetHost: h, targetPort: 0}}",
        "spec.trafficPolicy.tunnel.targetPort",
        "not in 1..65535",
    );
    assert_invalid::<DestinationRule>(
        "host: a\ntrafficPolicy: {tunnel: {protocol: GET, targetHost: h, targetPort: 1}}",
        "spec.trafficPolicy.tunnel.protocol",
        "CONNECT or POST",
    );
    assert_valid::<DestinationRule>(
        "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}, {port: {number: 443}, tls: {mode: SIMPLE}}]}",
    );
}

#[test]
fn workload_selector_and_export_to() {
    assert_invalid::<DestinationRule>(
        "host: a\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: ['*']",
        "spec.exportTo[0]",
        "own namespace",
    );
    assert_invalid::<DestinationRule>(
        "host: a\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: ['.', other]",
        "spec.exportTo[1]",
        "own namespace",
    );
    assert_invalid::<DestinationRule>(
        "host: a\nworkloadSelector: {matchLabels: {'a*': b}}",
        "spec.workloadSelector.matchLabels[a*]",
        "label key",
    );
    assert_invalid::<DestinationRule>(
        "host: a\nexportTo: [ns, '.']",
        "spec.exportTo[1]",
        "duplicate",
    );
    assert_valid::<DestinationRule>(
        "host: a\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [ns]",
    );
    assert_valid::<DestinationRule>("host: a\nexportTo: ['*']");
}
