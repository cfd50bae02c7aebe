//! Compile errors name the object and the field; warnings for what is not applied.

use super::*;

fn manifest(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: reviews, namespace: bookinfo}}\n\
         spec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

#[test]
fn errors_name_object_and_field() {
    let cases = [
        (
            "  - match: [{uri: {exact: /}}, {uri: {regex: '(unclosed'}}]\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[0].match[1].uri.regex",
        ),
        (
            "  - match: [{headers: {x-a: {regex: '[z-a]'}}}]\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[0].match[0].headers[x-a].regex",
        ),
        (
            "  - route: [{destination: {host: reviews}}]\n  - rewrite: {uriRegexRewrite: {match: '(', rewrite: /}}\n    route: [{destination: {host: reviews}}]\n",
            "spec.http[1].rewrite.uriRegexRewrite.match",
        ),
        (
            "  - route: [{destination: {host: reviews}}]\n    timeout: 5 parsecs\n",
            "spec.http[0].timeout",
        ),
        (
            "  - route: [{destination: {host: reviews}}]\n    corsPolicy: {allowOrigins: [{regex: '*a'}]}\n",
            "spec.http[0].corsPolicy.allowOrigins[0].regex",
        ),
        (
            "  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 1, perTryTimeout: soon}\n",
            "spec.http[0].retries.perTryTimeout",
        ),
    ];
    for (http, field) in cases {
        let problems = problems(&manifest(http));
        assert!(
            problems.iter().any(|p| p.field == field),
            "{field} not in {problems:?}"
        );
        for p in &problems {
            assert_eq!(p.object, "VirtualService bookinfo/reviews");
        }
    }
}

#[test]
fn tcp_tls_and_delegate_are_warnings() {
    let vs = compiled(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: reviews, namespace: bookinfo}\n\
         spec:\n  hosts: [reviews]\n  http:\n  - delegate: {name: other}\n  \
         - name: kept\n    route: [{destination: {host: reviews}}]\n  \
         tcp:\n  - route: [{destination: {host: reviews}}]\n",
    );
    let fields: Vec<_> = vs.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(fields, ["spec.http[0].delegate", "spec.tcp"]);
    assert_eq!(vs.rules.len(), 1);
    assert_eq!(vs.rules[0].route.name, "kept");
}

#[test]
fn timeouts() {
    let timeout = |t: &str| {
        compiled(&manifest(&format!(
            "  - route: [{{destination: {{host: reviews}}}}]\n    timeout: {t}\n"
        )))
        .rules[0]
            .route
            .timeout
    };
    assert_eq!(timeout("0s"), None);
    assert_eq!(
        timeout("250ms"),
        Some(std::time::Duration::from_millis(250))
    );
}
