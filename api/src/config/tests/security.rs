//! PeerAuthentication, AuthorizationPolicy, RequestAuthentication.

use super::*;
use crate::config::authorization_policy::Action;
use crate::config::peer_authentication::MtlsMode;
use crate::config::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};

// ---- PeerAuthentication ----------------------------------------------------

const PEER_AUTHENTICATION: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
      app.kubernetes.io/version: v2
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
    "9090":
      mode: PERMISSIVE
"#;

#[test]
fn peer_authentication_parses_and_round_trips() {
    let pa: PeerAuthentication = parse(PEER_AUTHENTICATION);
    assert_eq!(pa.metadata.namespace.as_deref(), Some("foo"));
    let spec = &pa.spec;
    assert_eq!(
        spec.selector.as_ref().unwrap().match_labels["app"],
        "finance"
    );
    assert_eq!(spec.mtls.as_ref().unwrap().mode, Some(MtlsMode::Strict));
    assert_eq!(spec.port_level_mtls[&8080].mode, Some(MtlsMode::Disable));
    assert_eq!(spec.port_level_mtls[&9090].mode, Some(MtlsMode::Permissive));
    assert!(pa.validate().is_empty(), "{:?}", pa.validate());
    round_trip(&pa);
}

#[test]
fn peer_authentication_rejects_unknown_fields_and_values() {
    assert_unknown_field::<PeerAuthentication>("mtls: {mod: STRICT}", "mod");
    assert_unknown_field::<PeerAuthentication>("selector: {matchLabel: {app: a}}", "matchLabel");
    assert_parse_error::<PeerAuthentication>(
        "mtls: {mode: STRICTER}",
        "unknown variant `STRICTER`",
    );
    assert_parse_error::<PeerAuthentication>(
        "selector: {matchLabels: {app: a}}\nportLevelMtls: {-1: {mode: STRICT}}",
        "port number",
    );
    assert_parse_error::<PeerAuthentication>(
        "selector: {matchLabels: {app: a}}\nportLevelMtls: {http: {mode: STRICT}}",
        "port number",
    );
}

#[test]
fn peer_authentication_port_level_mtls_needs_a_selector() {
    assert_invalid::<PeerAuthentication>(
        "portLevelMtls: {8080: {mode: DISABLE}}",
        "spec.portLevelMtls",
        "requires a selector",
    );
    assert_invalid::<PeerAuthentication>(
        "selector: {}\nportLevelMtls: {8080: {mode: DISABLE}}",
        "spec.portLevelMtls",
        "requires a selector",
    );
    assert_valid::<PeerAuthentication>(
        "selector: {matchLabels: {app: a}}\nportLevelMtls: {8080: {mode: DISABLE}}",
    );
}

#[test]
fn peer_authentication_port_keys_are_ports() {
    for port in ["0", "65536"] {
        assert_invalid::<PeerAuthentication>(
            &format!(
                "selector: {{matchLabels: {{app: a}}}}\nportLevelMtls: {{{port}: {{mode: STRICT}}}}"
            ),
            &format!("spec.portLevelMtls[{port}]"),
            "not in 1..65535",
        );
    }
    assert_valid::<PeerAuthentication>(
        "selector: {matchLabels: {app: a}}\nportLevelMtls: {1: {mode: STRICT}, 65535: {}}",
    );
}

#[test]
fn selectors_need_valid_labels() {
    assert_invalid::<PeerAuthentication>(
        "selector: {matchLabels: {'*': a}}",
        "spec.selector.matchLabels[*]",
        "label key",
    );
    assert_invalid::<PeerAuthentication>(
        "selector: {matchLabels: {app: 'a*'}}",
        "spec.selector.matchLabels[app]",
        "label value",
    );
    assert_valid::<PeerAuthentication>(
        "selector: {matchLabels: {app.kubernetes.io/name: x, tier: ''}}",
    );
}

// ---- AuthorizationPolicy ---------------------------------------------------

const AUTHORIZATION_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/curl"]
    - source:
        namespaces: ["test"]
        ipBlocks: ["10.0.0.0/16", "192.168.1.7"]
        notRemoteIpBlocks: ["2001:db8::/32"]
    - source:
        serviceAccounts: ["default/curl"]
        requestPrincipals: ["*"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
        ports: ["8080"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
        notHosts: ["admin.example.com"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
    - key: source.ip
      notValues: ["10.1.2.3"]
    - key: destination.port
      values: ["8080", "9090"]
"#;

#[test]
fn authorization_policy_parses_and_round_trips() {
    let ap: AuthorizationPolicy = parse(AUTHORIZATION_POLICY);
    let spec = &ap.spec;
    assert_eq!(spec.action(), Action::Allow);
    let rule = &spec.rules[0];
    assert_eq!(rule.from.len(), 3);
    let source = rule.from[1].source.as_ref().unwrap();
    assert_eq!(source.ip_blocks, ["10.0.0.0/16", "192.168.1.7"]);
    assert_eq!(source.not_remote_ip_blocks, ["2001:db8::/32"]);
    assert_eq!(
        rule.from[2].source.as_ref().unwrap().service_accounts,
        ["default/curl"]
    );
    assert_eq!(rule.to[0].operation.as_ref().unwrap().ports, ["8080"]);
    assert_eq!(rule.when[1].not_values, ["10.1.2.3"]);
    assert!(ap.validate().is_empty(), "{:#?}", ap.validate());
    round_trip(&ap);
}

#[test]
fn authorization_policy_deny_and_custom_examples_are_valid() {
    let ap: AuthorizationPolicy = parse(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin*"]
"#,
    );
    assert_eq!(ap.spec.action(), Action::Deny);
    assert!(ap.validate().is_empty(), "{:#?}", ap.validate());
    round_trip(&ap);

    let ap = assert_valid::<AuthorizationPolicy>(
        "action: CUSTOM\nprovider: {name: ext-authz}\nrules: [{to: [{operation: {paths: [/secure*]}}]}]",
    );
    assert_eq!(ap.spec.provider.as_ref().unwrap().name, "ext-authz");
    round_trip(&ap);
    // An empty spec is the allow-nothing policy: valid.
    assert_valid::<AuthorizationPolicy>("{}");
}

#[test]
fn authorization_policy_rejects_unknown_fields() {
    assert_unknown_field::<AuthorizationPolicy>(
        "rules: [{from: [{source: {principal: [a]}}]}]",
        "principal",
    );
    assert_unknown_field::<AuthorizationPolicy>("rules: [{too: []}]", "too");
    assert_unknown_field::<AuthorizationPolicy>(
        "targetRef: {kind: Gateway, name: w, section: x}",
        "section",
    );
    assert_parse_error::<AuthorizationPolicy>("action: REJECT", "unknown variant `REJECT`");
    // Ports are strings in the published schema.
    assert_parse_error::<AuthorizationPolicy>(
        "rules: [{to: [{operation: {ports: [8080]}}]}]",
        "expected a string",
    );
}

#[test]
fn authorization_policy_selector_and_target_refs_are_exclusive() {
    assert_invalid::<AuthorizationPolicy>(
        "selector: {matchLabels: {app: a}}\ntargetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: w}",
        "spec",
        "only one of selector, targetRef or targetRefs",
    );
    assert_invalid::<AuthorizationPolicy>(
        "targetRef: {kind: Service, name: a}\ntargetRefs: [{kind: Service, name: b}]",
        "spec",
        "only one of selector, targetRef or targetRefs",
    );
    assert_valid::<AuthorizationPolicy>("targetRef: {kind: Service, name: a}");
    assert_valid::<AuthorizationPolicy>(
        "targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: a, namespace: ns}]",
    );
}

#[test]
fn authorization_policy_target_refs_are_well_formed() {
    assert_invalid::<AuthorizationPolicy>(
        "targetRef: {kind: Deployment, group: apps, name: a}",
        "spec.targetRef",
        "unsupported target",
    );
    assert_invalid::<AuthorizationPolicy>(
        "targetRef: {kind: Service}",
        "spec.targetRef.name",
        "required",
    );
    assert_invalid::<AuthorizationPolicy>(
        "targetRefs: [{name: a}]",
        "spec.targetRefs[0].kind",
        "required",
    );
    assert_invalid::<AuthorizationPolicy>(
        "targetRef: {kind: Service, name: a, namespace: other}",
        "spec.targetRef.namespace",
        "cross-namespace",
    );
}

#[test]
fn authorization_policy_custom_needs_a_provider_and_only_custom_has_one() {
    assert_invalid::<AuthorizationPolicy>(
        "action: CUSTOM\nrules: [{}]",
        "spec.provider",
        "required for the CUSTOM action",
    );
    assert_invalid::<AuthorizationPolicy>(
        "action: CUSTOM\nprovider: {}\nrules: [{}]",
        "spec.provider.name",
        "required",
    );
    assert_invalid::<AuthorizationPolicy>(
        "action: CUSTOM\nprovider: {name: ext}",
        "spec.rules",
        "never triggers",
    );
    assert_invalid::<AuthorizationPolicy>(
        "action: DENY\nprovider: {name: ext}\nrules: [{}]",
        "spec.provider",
        "only allowed with the CUSTOM action",
    );
    assert_invalid::<AuthorizationPolicy>(
        "provider: {name: ext}",
        "spec.provider",
        "only allowed with the CUSTOM action",
    );
    assert_valid::<AuthorizationPolicy>("action: CUSTOM\nprovider: {name: ext}\nrules: [{}]");
    assert_valid::<AuthorizationPolicy>("action: AUDIT\nrules: [{}]");
}

#[test]
fn authorization_policy_empty_source_and_operation_are_errors() {
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{from: [{source: {}}]}]",
        "spec.rules[0].from[0].source",
        "must not be empty",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{from: [{}]}]",
        "spec.rules[0].from[0].source",
        "required",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{}, {to: [{operation: {}}]}]",
        "spec.rules[1].to[0].operation",
        "must not be empty",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{to: [{}]}]",
        "spec.rules[0].to[0].operation",
        "required",
    );
    assert_valid::<AuthorizationPolicy>(
        "rules: [{from: [{source: {notNamespaces: [a]}}], to: [{operation: {notMethods: [GET]}}]}]",
    );
}

#[test]
fn authorization_policy_values_must_not_be_empty_strings() {
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b, '']}}]}]",
        "spec.rules[0].from[0].source.principals[1]",
        "must not be empty",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{to: [{operation: {paths: ['']}}]}]",
        "spec.rules[0].to[0].operation.paths[0]",
        "must not be empty",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{when: [{key: source.namespace, values: [a, '']}]}]",
        "spec.rules[0].when[0].values[1]",
        "must not be empty",
    );
}

#[test]
fn authorization_policy_ports_are_port_strings() {
    for bad in ["0", "65536", "http", "-1"] {
        assert_invalid::<AuthorizationPolicy>(
            &format!("rules: [{{to: [{{operation: {{ports: ['80', '{bad}']}}}}]}}]"),
            "spec.rules[0].to[0].operation.ports[1]",
            "not a port number",
        );
    }
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{to: [{operation: {notPorts: ['99999']}}]}]",
        "spec.rules[0].to[0].operation.notPorts[0]",
        "not a port number",
    );
    assert_valid::<AuthorizationPolicy>(
        "rules: [{to: [{operation: {ports: ['1', '65535'], notPorts: ['22']}}]}]",
    );
}

#[test]
fn authorization_policy_ip_blocks_are_ips_or_cidrs() {
    for field in [
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
    ] {
        assert_invalid::<AuthorizationPolicy>(
            &format!("rules: [{{from: [{{source: {{{field}: ['10.0.0.0/8', '10.0.0.0/33']}}}}]}}]"),
            &format!("spec.rules[0].from[0].source.{field}[1]"),
            "not an IP address or CIDR",
        );
        assert_valid::<AuthorizationPolicy>(&format!(
            "rules: [{{from: [{{source: {{{field}: ['10.0.0.0/8', '1.2.3.4', '::1', 'fd00::/8']}}}}]}}]"
        ));
    }
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{from: [{source: {ipBlocks: [my-host]}}]}]",
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "not an IP address",
    );
}

#[test]
fn authorization_policy_service_accounts_are_namespace_slash_name() {
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{from: [{source: {serviceAccounts: [curl]}}]}]",
        "spec.rules[0].from[0].source.serviceAccounts[0]",
        "<namespace>/<name>",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{from: [{source: {notServiceAccounts: [a/b/c]}}]}]",
        "spec.rules[0].from[0].source.notServiceAccounts[0]",
        "<namespace>/<name>",
    );
    assert_valid::<AuthorizationPolicy>(
        "rules: [{from: [{source: {serviceAccounts: [default/curl]}}]}]",
    );
}

#[test]
fn authorization_policy_conditions() {
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{when: [{key: '', values: [a]}]}]",
        "spec.rules[0].when[0].key",
        "required",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{when: [{key: source.namespace}]}]",
        "spec.rules[0].when[0]",
        "at least one of values or notValues",
    );
    for bad_key in [
        "request.header[x]",
        "request.headers[]",
        "source.user",
        "request.auth.claims[iss",
    ] {
        assert_invalid::<AuthorizationPolicy>(
            &format!("rules: [{{when: [{{key: '{bad_key}', values: [a]}}]}}]"),
            "spec.rules[0].when[0].key",
            "unknown attribute",
        );
    }
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{when: [{key: remote.ip, notValues: [not-an-ip]}]}]",
        "spec.rules[0].when[0].notValues[0]",
        "not an IP address",
    );
    assert_invalid::<AuthorizationPolicy>(
        "rules: [{when: [{key: destination.port, values: ['70000']}]}]",
        "spec.rules[0].when[0].values[0]",
        "not a port number",
    );
    for good_key in [
        "request.headers[x-token]",
        "request.auth.claims[groups]",
        "request.auth.claims[nested][key]",
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "connection.sni",
        "experimental.envoy.filters.network.mysql_proxy[db.table]",
    ] {
        assert_valid::<AuthorizationPolicy>(&format!(
            "rules: [{{when: [{{key: '{good_key}', values: [a]}}]}}]"
        ));
    }
    assert_valid::<AuthorizationPolicy>(
        "rules: [{when: [{key: destination.ip, values: [10.0.0.0/8]}, {key: destination.port, notValues: ['22']}]}]",
    );
}

// ---- RequestAuthentication -------------------------------------------------

const REQUEST_AUTHENTICATION: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "issuer-foo"
    jwksUri: https://example.com/.well-known/jwks.json
    audiences: ["bookstore_android.apps.example.com", "bookstore_web.apps.example.com"]
    fromHeaders:
    - name: x-goog-iap-jwt-assertion
    - name: Authorization
      prefix: "Bearer "
    fromParams: ["my_token"]
    fromCookies: ["session"]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    outputClaimToHeaders:
    - header: x-jwt-claim-group
      claim: group
    timeout: 5s
  - issuer: "issuer-bar"
    jwks: '{"keys": [{"kty": "RSA", "e": "AQAB", "n": "abc"}]}'
"#;

#[test]
fn request_authentication_parses_and_round_trips() {
    let ra: RequestAuthentication = parse(REQUEST_AUTHENTICATION);
    let rules = &ra.spec.jwt_rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[0].jwks_uri,
        "https://example.com/.well-known/jwks.json"
    );
    assert_eq!(rules[0].from_headers[1].prefix, "Bearer ");
    assert!(rules[0].forward_original_token);
    assert_eq!(rules[0].output_claim_to_headers[0].claim, "group");
    assert_eq!(rules[0].timeout.as_deref(), Some("5s"));
    assert!(rules[1].jwks.starts_with("{\"keys\""));
    assert!(ra.validate().is_empty(), "{:#?}", ra.validate());
    round_trip(&ra);
}

#[test]
fn request_authentication_rejects_unknown_fields() {
    assert_unknown_field::<RequestAuthentication>("jwtRules: [{issuer: a, jwksURI: b}]", "jwksURI");
    assert_unknown_field::<RequestAuthentication>(
        "jwtRules: [{issuer: a, fromHeaders: [{header: x}]}]",
        "header",
    );
}

#[test]
fn request_authentication_rules() {
    let field = |f: &str| format!("spec.jwtRules[0].{f}");
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{jwksUri: 'https://a/'}]",
        &field("issuer"),
        "required",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, audiences: ['']}]",
        &field("audiences[0]"),
        "must not be empty",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, jwksUri: 'ftp://a/keys'}]",
        &field("jwksUri"),
        "http",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, jwksUri: 'https:///keys'}]",
        &field("jwksUri"),
        "no host",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, jwks: 'not json'}]",
        &field("jwks"),
        "not valid JSON",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, jwks: '{\"k\": 1}'}]",
        &field("jwks"),
        "\"keys\" array",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, fromHeaders: [{name: ''}]}]",
        &field("fromHeaders[0].name"),
        "not a valid HTTP header name",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, fromParams: ['']}]",
        &field("fromParams[0]"),
        "must not be empty",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, fromCookies: ['']}]",
        &field("fromCookies[0]"),
        "must not be empty",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, outputPayloadToHeader: 'x y'}]",
        &field("outputPayloadToHeader"),
        "header name",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: x-a}]}]",
        &field("outputClaimToHeaders[0].claim"),
        "required",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: 'x:a', claim: c}]}]",
        &field("outputClaimToHeaders[0].header"),
        "header name",
    );
    assert_invalid::<RequestAuthentication>(
        "jwtRules: [{issuer: a, timeout: 5 seconds}]",
        &field("timeout"),
        "invalid duration",
    );
    assert_invalid::<RequestAuthentication>(
        "selector: {matchLabels: {app: a}}\ntargetRefs: [{kind: Service, name: a}]\njwtRules: [{issuer: a}]",
        "spec",
        "only one of selector, targetRef or targetRefs",
    );
    assert_valid::<RequestAuthentication>(
        "targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: w}\n\
         jwtRules: [{issuer: a, jwksUri: 'http://keys.example:8080/jwks', timeout: 1500ms}]",
    );
}
