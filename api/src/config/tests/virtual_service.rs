//! VirtualService.

use super::*;
use crate::config::VirtualService;
use crate::config::networking::MatchValue;

const VIRTUAL_SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-route
  namespace: bookinfo
spec:
  hosts:
  - reviews.bookinfo.svc.cluster.local
  - "*.reviews.example.com"
  - 10.0.0.12
  gateways:
  - mesh
  - istio-system/public-gateway
  exportTo: ["."]
  http:
  - name: reviews-v2-routes
    match:
    - name: catalog
      uri:
        prefix: /wpcatalog
      headers:
        end-user:
          exact: jason
        x-present: {}
      withoutHeaders:
        x-debug:
          exact: "1"
      queryParams:
        debug:
          regex: "^(1|true)$"
      ignoreUriCase: true
      port: 9080
      sourceLabels:
        app: productpage
      sourceNamespace: bookinfo
    - uri:
        exact: /consumercatalog
      method:
        exact: GET
    rewrite:
      uri: /newcatalog
    route:
    - destination:
        host: reviews
        subset: v2
        port:
          number: 9080
      weight: 75
      headers:
        request:
          set:
            x-canary: "true"
    - destination:
        host: reviews
        subset: v1
      weight: 25
    timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream,503
      retryRemoteLocalities: true
    fault:
      delay:
        percentage:
          value: 0.1
        fixedDelay: 5s
      abort:
        percentage:
          value: 0.5
        httpStatus: 400
    mirror:
      host: reviews
      subset: v3
    mirrorPercentage:
      value: 50.0
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      - regex: 'https://.*\.example\.org'
      allowMethods: [POST, GET]
      allowCredentials: false
      allowHeaders: [X-Foo-Bar]
      exposeHeaders: [X-Expose]
      maxAge: 24h
      unmatchedPreflights: IGNORE
    headers:
      request:
        add:
          x-added: v
        remove: [x-internal]
      response:
        set:
          cache-control: no-store
  - name: moved
    match:
    - uri:
        exact: /old
    redirect:
      uri: /new
      authority: new.example.com
      redirectCode: 308
      derivePort: FROM_REQUEST_PORT
  - name: teapot
    match:
    - uri:
        regex: "^/tea(pot)?$"
    directResponse:
      status: 418
      body:
        string: "I'm a teapot"
  - name: grpc-unavailable
    match:
    - authority:
        prefix: grpc.
    route:
    - destination:
        host: grpc-backend
    fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage:
          value: 100
  - name: regex-rewrite
    match:
    - uri:
        prefix: /v1/
    rewrite:
      uriRegexRewrite:
        match: ^/v1/(.*)$
        rewrite: /v2/\1
    route:
    - destination:
        host: reviews
  - name: default
    route:
    - destination:
        host: reviews
        subset: v1
    mirrors:
    - destination:
        host: shadow
      percentage:
        value: 5
  tcp:
  - match:
    - port: 27017
      destinationSubnets: ["10.1.0.0/16"]
      sourceLabels:
        app: client
    route:
    - destination:
        host: mongo.backup.svc.cluster.local
        port:
          number: 5555
  tls:
  - match:
    - port: 443
      sniHosts:
      - login.bookinfo.com
    route:
    - destination:
        host: login.prod.svc.cluster.local
"#;

#[test]
fn virtual_service_parses_and_round_trips() {
    let vs: VirtualService = parse(VIRTUAL_SERVICE);
    let spec = &vs.spec;
    assert_eq!(spec.hosts.len(), 3);
    assert_eq!(spec.http.len(), 6);
    let first = &spec.http[0];
    let m = &first.matches[0];
    assert_eq!(
        m.uri.as_ref().unwrap().value(),
        Some(MatchValue::Prefix("/wpcatalog"))
    );
    assert_eq!(
        m.headers["end-user"].value(),
        Some(MatchValue::Exact("jason"))
    );
    assert_eq!(m.headers["x-present"].value(), None, "presence match");
    assert_eq!(
        m.query_params["debug"].value(),
        Some(MatchValue::Regex("^(1|true)$"))
    );
    assert!(m.ignore_uri_case);
    assert_eq!(m.port, 9080);
    assert_eq!(
        first.route.iter().map(|r| r.weight).collect::<Vec<_>>(),
        [75, 25]
    );
    let dest = first.route[0].destination.as_ref().unwrap();
    assert_eq!(
        (dest.host.as_str(), dest.subset.as_str()),
        ("reviews", "v2")
    );
    assert_eq!(dest.port.as_ref().unwrap().number, 9080);
    assert_eq!(first.retries.as_ref().unwrap().attempts, Some(3));
    let fault = first.fault.as_ref().unwrap();
    assert_eq!(
        fault
            .delay
            .as_ref()
            .unwrap()
            .percentage
            .as_ref()
            .unwrap()
            .value,
        0.1
    );
    assert_eq!(fault.abort.as_ref().unwrap().http_status, Some(400));
    assert_eq!(first.mirror_percentage.as_ref().unwrap().value, 50.0);
    let cors = first.cors_policy.as_ref().unwrap();
    assert_eq!(
        cors.allow_origins[1].value(),
        Some(MatchValue::Regex(r"https://.*\.example\.org"))
    );
    assert_eq!(cors.allow_credentials, Some(false));
    assert_eq!(spec.http[1].redirect.as_ref().unwrap().redirect_code, 308);
    assert_eq!(spec.http[2].direct_response.as_ref().unwrap().status, 418);
    let regex = spec.http[4]
        .rewrite
        .as_ref()
        .unwrap()
        .uri_regex_rewrite
        .as_ref()
        .unwrap();
    assert_eq!(
        (regex.pattern.as_str(), regex.rewrite.as_str()),
        ("^/v1/(.*)$", r"/v2/\1")
    );
    assert_eq!(spec.tcp[0].matches[0].port, 27017);
    assert_eq!(spec.tls[0].matches[0].sni_hosts, ["login.bookinfo.com"]);
    assert!(vs.validate().is_empty(), "{:#?}", vs.validate());
    round_trip(&vs);
}

#[test]
fn delegate_virtual_services_are_valid() {
    let root: VirtualService = parse(
        r#"
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["bookinfo.com"]
  gateways: [mygateway]
  http:
  - match:
    - uri: {prefix: /productpage}
    delegate:
      name: productpage
      namespace: ns-a
"#,
    );
    assert!(root.validate().is_empty(), "{:#?}", root.validate());
    round_trip(&root);
    // The delegate itself has no hosts.
    let delegate = assert_valid::<VirtualService>(
        "http:\n- match: [{uri: {prefix: /productpage/v1/}}]\n  route: [{destination: {host: productpage-v1.ns-a.svc.cluster.local}}]",
    );
    round_trip(&delegate);
    assert_invalid::<VirtualService>(
        "http:\n- delegate: {name: other}",
        "spec.http[0].delegate",
        "cannot delegate again",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\nhttp:\n- delegate: {namespace: ns}",
        "spec.http[0].delegate.name",
        "required",
    );
}

#[test]
fn virtual_service_rejects_unknown_fields() {
    assert_unknown_field::<VirtualService>(
        "hosts: [a]\nhttp: [{route: [{destination: {host: a, subnet: v1}}]}]",
        "subnet",
    );
    assert_unknown_field::<VirtualService>(
        "hosts: [a]\nhttp: [{match: [{uri: {prefx: /a}}], route: [{destination: {host: a}}]}]",
        "prefx",
    );
    assert_unknown_field::<VirtualService>("hosts: [a]\nhttp: [{routes: []}]", "routes");
    assert_unknown_field::<VirtualService>("host: [a]", "host");
    assert_unknown_field::<VirtualService>(
        "hosts: [a]\ntcp: [{match: [{sniHosts: [a]}], route: []}]",
        "sniHosts",
    );
    assert_parse_error::<VirtualService>(
        "hosts: [a]\nhttp: [{redirect: {uri: /a, derivePort: FROM_SOMEWHERE}}]",
        "unknown variant `FROM_SOMEWHERE`",
    );
}

#[test]
fn virtual_service_needs_hosts() {
    let route = "tcp: [{route: [{destination: {host: a}}]}]";
    assert_invalid::<VirtualService>(route, "spec.hosts", "at least one host");
    assert_invalid::<VirtualService>(
        "gateways: [gw]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts",
        "at least one host",
    );
    assert_valid::<VirtualService>(&format!("hosts: [a]\n{route}"));
}

#[test]
fn virtual_service_hosts_are_dns_names_or_ips() {
    assert_invalid::<VirtualService>(
        "hosts: [foo_bar]\ntcp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "not a valid host",
    );
    assert_invalid::<VirtualService>(
        "hosts: ['*']\ntcp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "mesh gateway",
    );
    assert_invalid::<VirtualService>(
        "hosts: ['*']\ngateways: [gw, mesh]\ntcp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "mesh gateway",
    );
    assert_valid::<VirtualService>(
        "hosts: ['*']\ngateways: [istio-system/gw]\ntcp: [{route: [{destination: {host: a}}]}]",
    );
    assert_valid::<VirtualService>(
        "hosts: ['2001:db8::1', '*.example.com']\ntcp: [{route: [{destination: {host: a}}]}]",
    );
}

#[test]
fn virtual_service_needs_routes_and_valid_gateways_and_export_to() {
    assert_invalid::<VirtualService>("hosts: [a]", "spec", "at least one of http, tcp or tls");
    let route = "tcp: [{route: [{destination: {host: a}}]}]";
    assert_invalid::<VirtualService>(
        &format!("hosts: [a]\ngateways: [a/b/c]\n{route}"),
        "spec.gateways[0]",
        "not a gateway name",
    );
    assert_invalid::<VirtualService>(
        &format!("hosts: [a]\nexportTo: ['*', '.']\n{route}"),
        "spec.exportTo",
        "cannot be combined",
    );
    assert_invalid::<VirtualService>(
        &format!("hosts: [a]\nexportTo: ['.', ns]\n{route}"),
        "spec.exportTo[1]",
        "duplicate",
    );
    assert_invalid::<VirtualService>(
        &format!("hosts: [a]\nexportTo: [Not_A_Namespace]\n{route}"),
        "spec.exportTo[0]",
        "DNS-1123 label",
    );
    assert_valid::<VirtualService>(&format!("hosts: [a]\nexportTo: ['.', other]\n{route}"));
    assert_valid::<VirtualService>(&format!("hosts: [a]\nexportTo: ['*']\n{route}"));
}

#[test]
fn tcp_and_tls_routes() {
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntcp: [{match: [{port: 80}]}]",
        "spec.tcp[0].route",
        "at least one destination",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntcp: [{route: [{}]}]",
        "spec.tcp[0].route[0].destination",
        "required",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: a}}]}]",
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "CIDR",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntcp: [{match: [{port: 65536}], route: [{destination: {host: a}}]}]",
        "spec.tcp[0].match[0].port",
        "not in 1..65535",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntcp: [{match: [{gateways: ['bad/gw/name']}], route: [{destination: {host: a}}]}]",
        "spec.tcp[0].match[0].gateways[0]",
        "not a gateway name",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntls: [{route: [{destination: {host: a}}]}]",
        "spec.tls[0].match",
        "at least one match",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntls: [{match: [{port: 443}], route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts",
        "at least one SNI host",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntls: [{match: [{sniHosts: ['bad_host']}], route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts[0]",
        "not a valid host",
    );
    assert_invalid::<VirtualService>(
        "hosts: [a]\ntls: [{match: [{sniHosts: [a]}]}]",
        "spec.tls[0].route",
        "at least one destination",
    );
    assert_valid::<VirtualService>(
        "hosts: [a]\ntls: [{match: [{sniHosts: ['*.a.com'], destinationSubnets: ['::/0'], sourceNamespace: ns}], \
         route: [{destination: {host: a, port: {number: 443}}}]}]",
    );
}
