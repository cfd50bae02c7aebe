//! RequestAuthentication tests, written from YAML, with keys generated per run.

mod keys;
mod remote;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::context::{Destination, ServiceName};
use keys::{Key, claims, jwks, now};

fn binding() -> Binding {
    Binding::new("ns1", "waypoint")
}

fn dest() -> Destination {
    Destination {
        service: Some(ServiceName {
            hostname: "reviews.ns1.svc.cluster.local".into(),
            name: "reviews".into(),
            namespace: "ns1".into(),
        }),
        target: "10.96.0.10:9080".parse::<SocketAddr>().unwrap(),
    }
}

/// A RequestAuthentication on the waypoint's Gateway with `rules` (the `jwtRules`
/// entries, indented two spaces).
fn request_authentication(gateway: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: ns1
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: {gateway}
  jwtRules:
{rules}"
    )
}

/// A rule for `https://issuer.example` with inline keys and `extra` fields.
fn rule(keys: &[&Key], extra: &str) -> String {
    format!(
        "  - issuer: https://issuer.example\n    jwks: '{}'\n{extra}",
        jwks(keys)
    )
}

fn compiled(yaml: &str) -> Arc<CompiledRequestAuthentication> {
    let r: api::config::RequestAuthentication = serde_yaml_ng::from_str(yaml).expect("YAML");
    Arc::new(compile(&r, &CompileContext::default()).expect("compiles"))
}

fn authenticator(yamls: &[String]) -> Authenticator {
    let cache = JwksCache::new(Arc::new(HttpFetcher::new()));
    Authenticator::new(yamls.iter().map(|y| compiled(y)).collect(), cache)
}

fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(()).unwrap().into_parts().0
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn run(
    auth: &Authenticator,
    parts: &mut http::request::Parts,
) -> Result<Option<AuthInfo>, AuthError> {
    auth.authenticate(&binding(), &dest(), parts).await
}

#[tokio::test]
async fn token_checks() {
    let key = Key::es256("k1");
    let rsa = Key::rsa("r1");
    let impostor = Key::es256("k1");
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        edit(&mut c);
        c
    };
    type Want = Result<(), AuthError>;
    let cases: Vec<(&str, String, &str, Want)> = vec![
        ("valid ES256", key.sign(&claims()), "", Ok(())),
        ("valid RS256", rsa.sign(&claims()), "", Ok(())),
        ("valid PS256", rsa.sign_pss(&claims()), "", Ok(())),
        (
            "audience listed",
            key.sign(&claims()),
            "    audiences: [reviews]\n",
            Ok(()),
        ),
        (
            "audience normalised",
            key.sign(&claims()),
            "    audiences: [\"ratings.example\"]\n",
            Ok(()),
        ),
        (
            "wrong audience",
            key.sign(&claims()),
            "    audiences: [payments]\n",
            Err(AuthError::AudienceNotAllowed(vec![
                "reviews".into(),
                "https://ratings.example/".into(),
            ])),
        ),
        (
            "expired",
            key.sign(&with(&|c| c["exp"] = json!(now() - 3600))),
            "",
            Err(AuthError::Expired),
        ),
        (
            "expired within clock skew",
            key.sign(&with(&|c| c["exp"] = json!(now() - 10))),
            "",
            Ok(()),
        ),
        (
            "not yet valid",
            key.sign(&with(&|c| c["nbf"] = json!(now() + 3600))),
            "",
            Err(AuthError::NotYetValid),
        ),
        (
            "no exp never expires",
            key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            "",
            Ok(()),
        ),
        (
            "wrong issuer",
            key.sign(&with(&|c| c["iss"] = json!("https://evil.example"))),
            "",
            Err(AuthError::UnknownIssuer("https://evil.example".into())),
        ),
        (
            "bad signature",
            impostor.sign(&claims()),
            "",
            Err(AuthError::BadSignature),
        ),
        (
            "unknown kid",
            Key::es256("k9").sign(&claims()),
            "",
            Err(AuthError::NoMatchingKey {
                kid: Some("k9".into()),
                alg: Algorithm::ES256,
            }),
        ),
        (
            "alg none",
            format!(
                "{}.",
                key.sign_raw(&json!({"alg": "none"}), &claims())
                    .rsplit_once('.')
                    .unwrap()
                    .0
            ),
            "",
            Err(AuthError::UnsupportedAlgorithm(
                "unsupported algorithm \"none\"".into(),
            )),
        ),
        (
            "HMAC",
            key.sign_raw(&json!({"alg": "HS256", "kid": "k1"}), &claims()),
            "",
            Err(AuthError::UnsupportedAlgorithm(
                "unsupported algorithm \"HS256\"".into(),
            )),
        ),
        (
            "malformed",
            "not-a-jwt".into(),
            "",
            Err(AuthError::Malformed(
                "not three dot-separated sections".into(),
            )),
        ),
    ];
    for (name, token, extra, want) in cases {
        let auth = authenticator(&[request_authentication(
            "waypoint",
            &rule(&[&key, &rsa], extra),
        )]);
        let mut p = parts("/", &[("authorization", &bearer(&token))]);
        let got = run(&auth, &mut p)
            .await
            .map(|info| info.map(|i| i.principal));
        let want = want.map(|()| Some("https://issuer.example/alice".to_owned()));
        assert_eq!(got, want, "{name}");
    }
}

#[tokio::test]
async fn auth_info_fields() {
    let key = Key::es256("k1");
    let auth = authenticator(&[request_authentication("waypoint", &rule(&[&key], ""))]);
    let mut p = parts("/", &[("authorization", &bearer(&key.sign(&claims())))]);
    let info = run(&auth, &mut p).await.unwrap().unwrap();
    assert_eq!(info.issuer, "https://issuer.example");
    assert_eq!(info.subject, "alice");
    assert_eq!(info.principal, "https://issuer.example/alice");
    assert_eq!(info.audiences, ["reviews", "https://ratings.example/"]);
    assert_eq!(info.presenter.as_deref(), Some("web-app"));
    assert_eq!(info.claims["org"]["unit"], "eng");
    assert!(
        p.headers.get("authorization").is_none(),
        "token removed by default"
    );
}

#[tokio::test]
async fn token_locations() {
    let key = Key::es256("k1");
    let token = key.sign(&claims());
    let default_rule = rule(&[&key], "");
    let custom = rule(
        &[&key],
        "    fromHeaders:\n    - name: x-jwt\n      prefix: \"Token \"\n    fromParams: [jwt]\n",
    );
    let cookie = rule(&[&key], "    fromCookies: [session]\n");
    /// `(what, rules, uri, headers, whether a token is found)`.
    type Case<'a> = (&'a str, &'a String, String, Vec<(&'a str, String)>, bool);
    let cases: Vec<Case<'_>> = vec![
        ("no token", &default_rule, "/".into(), vec![], false),
        (
            "default header",
            &default_rule,
            "/".into(),
            vec![("authorization", bearer(&token))],
            true,
        ),
        (
            "default header, lowercase prefix",
            &default_rule,
            "/".into(),
            vec![("authorization", format!("bearer {token}"))],
            true,
        ),
        (
            "default header without the prefix",
            &default_rule,
            "/".into(),
            vec![("authorization", format!("Basic {token}"))],
            false,
        ),
        (
            "default access_token param",
            &default_rule,
            format!("/p?a=1&access_token={token}"),
            vec![],
            true,
        ),
        (
            "custom header",
            &custom,
            "/".into(),
            vec![("x-jwt", format!("Token {token}"))],
            true,
        ),
        (
            "custom param",
            &custom,
            format!("/?jwt={token}"),
            vec![],
            true,
        ),
        (
            "default header ignored when custom set",
            &custom,
            "/".into(),
            vec![("authorization", bearer(&token))],
            false,
        ),
        (
            "cookie",
            &cookie,
            "/".into(),
            vec![("cookie", format!("a=b; session={token}"))],
            true,
        ),
    ];
    for (name, rules, uri, headers, found) in cases {
        let auth = authenticator(&[request_authentication("waypoint", rules)]);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut p = parts(&uri, &headers);
        let got = run(&auth, &mut p)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.is_some(), found, "{name}");
    }
}

#[tokio::test]
async fn header_outputs_and_forwarding() {
    let key = Key::es256("k1");
    let token = key.sign(&claims());
    let extra = "    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - header: x-team
      claim: team
    - header: x-unit
      claim: org.unit
    - header: x-level
      claim: level
    - header: x-groups
      claim: groups
    - header: x-missing
      claim: nope
";
    let auth = authenticator(&[request_authentication("waypoint", &rule(&[&key], extra))]);
    let mut p = parts(
        "/",
        &[("authorization", &bearer(&token)), ("x-team", "spoofed")],
    );
    run(&auth, &mut p).await.unwrap().unwrap();
    let header = |n: &str| p.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        header("authorization"),
        Some(bearer(&token)),
        "forwardOriginalToken"
    );
    assert_eq!(header("x-jwt-payload").as_deref(), token.split('.').nth(1));
    assert_eq!(header("x-team").as_deref(), Some("blue"));
    assert_eq!(header("x-unit").as_deref(), Some("eng"));
    assert_eq!(header("x-level").as_deref(), Some("3"));
    assert_eq!(header("x-groups").as_deref(), Some("admins,dev"));
    assert_eq!(header("x-missing"), None);
}

#[tokio::test]
async fn issuers_and_binding() {
    let a = Key::es256("a");
    let b = Key::es256("b");
    let rules = format!(
        "{}  - issuer: https://other.example\n    jwks: '{}'\n",
        rule(&[&a], ""),
        jwks(&[&b])
    );
    let auth = authenticator(&[request_authentication("waypoint", &rules)]);
    let mut other = claims();
    other["iss"] = json!("https://other.example");
    let mut p = parts("/", &[("authorization", &bearer(&b.sign(&other)))]);
    let info = run(&auth, &mut p).await.unwrap().unwrap();
    assert_eq!(info.principal, "https://other.example/alice");
    // Each issuer's keys only: a token from issuer.example signed with b fails.
    let mut p = parts("/", &[("authorization", &bearer(&b.sign(&claims())))]);
    assert!(run(&auth, &mut p).await.is_err());
    // A RequestAuthentication on another Gateway does not apply: tokens are ignored.
    let elsewhere = authenticator(&[request_authentication("other", &rule(&[&a], ""))]);
    let mut p = parts("/", &[("authorization", "Bearer garbage")]);
    assert_eq!(run(&elsewhere, &mut p).await, Ok(None));
    assert!(p.headers.contains_key("authorization"));
}

#[test]
fn compile_problems() {
    let problems = |rules: &str| {
        let r: api::config::RequestAuthentication =
            serde_yaml_ng::from_str(&request_authentication("waypoint", rules)).unwrap();
        compile(&r, &CompileContext::default()).unwrap_err()
    };
    let p = problems("  - issuer: https://issuer.example\n");
    assert_eq!(p[0].object, "RequestAuthentication ns1/jwt");
    assert_eq!(p[0].field, "spec.jwtRules[0].jwksUri");
    let p = problems(
        "  - issuer: https://issuer.example\n    jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}'\n",
    );
    assert_eq!(p[0].field, "spec.jwtRules[0].jwks", "{p:?}");
    let r: api::config::RequestAuthentication = serde_yaml_ng::from_str(&request_authentication(
        "waypoint",
        "  - issuer: https://issuer.example\n    jwksUri: file:///etc/jwks.json\n    timeout: 2s\n",
    ))
    .unwrap();
    let c = compile(&r, &CompileContext::default()).unwrap();
    assert_eq!(
        c.providers()[0].keys,
        KeySource::Remote {
            uri: "file:///etc/jwks.json".into(),
            timeout: std::time::Duration::from_secs(2)
        }
    );
}
