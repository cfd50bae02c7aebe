//! `demo-app get` against real sockets: the exit code and message a tour step sees for an
//! answer, an error status, and each way of getting no answer at all.

mod support;

use std::time::Duration;

use demo_app::get::{self, EXIT_HTTP_ERROR, EXIT_NO_RESPONSE, EXIT_SUCCESS, GetRequest};
use demo_app::{Env, Role, Url};
use support::{Running, bounded, closed_url};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Runs `get` and returns (exit code, stdout, stderr).
async fn run(request: GetRequest, env: Env) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = bounded("get", get::run(&request, env, &mut out, &mut err)).await;
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (code, text(out), text(err))
}

fn no_env() -> Env {
    Env::from_pairs::<&str, &str>([])
}

#[tokio::test]
async fn exit_code_follows_the_status() {
    let ratings = Running::start("ratings-1", "v1", Role::Ratings).await;
    let env = Env::from_pairs([
        ("RATINGS_SERVICE_HOST", "127.0.0.1".to_string()),
        ("RATINGS_SERVICE_PORT", ratings.addr.port().to_string()),
    ]);
    let cases = [
        (
            "http://ratings/ratings/1",
            EXIT_SUCCESS,
            "HTTP/1.1 200 OK\n",
        ),
        (
            "http://ratings.default.svc/healthz",
            EXIT_SUCCESS,
            "HTTP/1.1 200 OK\n",
        ),
        (
            "http://ratings/missing",
            EXIT_HTTP_ERROR,
            "HTTP/1.1 404 Not Found\n",
        ),
    ];
    for (url, want, status_line) in cases {
        let request = GetRequest::new(Url::parse(url).unwrap());
        let (code, out, err) = run(request, env.clone()).await;
        assert_eq!(code, want, "{url}: {out}{err}");
        assert!(out.starts_with(status_line), "{url}: {out}");
        assert!(out.contains("\"pod\":\"ratings-1\""), "{url}: {out}");
        assert!(err.is_empty(), "{url}: {err}");
    }
}

#[tokio::test]
async fn include_prints_headers_before_the_body() {
    let ratings = Running::start("ratings-1", "v1", Role::Ratings).await;
    let mut request = GetRequest::new(ratings.url().with_path("/ratings/0"));
    request.include_headers = true;
    request
        .headers
        .push(get::parse_header("x-test: 1").unwrap());
    let (code, out, _) = run(request, no_env()).await;
    assert_eq!(code, EXIT_SUCCESS);
    let (head, body) = out
        .split_once("\n\n")
        .expect("a blank line after the headers");
    assert!(head.contains("x-served-by: ratings-1"), "{head}");
    assert!(body.starts_with('{'), "{body}");
}

#[tokio::test]
async fn refused_connection_exits_2_and_says_so() {
    let (code, out, err) = run(GetRequest::new(closed_url().await), no_env()).await;
    assert_eq!(code, EXIT_NO_RESPONSE);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("connection refused"), "{err}");
}

#[tokio::test]
async fn missing_service_exits_2_and_names_the_variable() {
    let request = GetRequest::new(Url::parse("http://reviews:9080/reviews/0").unwrap());
    let (code, _, err) = run(request, no_env()).await;
    assert_eq!(code, EXIT_NO_RESPONSE);
    assert!(
        err.contains("no REVIEWS_SERVICE_HOST in the environment"),
        "{err}"
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", silent.local_addr().unwrap())).unwrap();
    let mut request = GetRequest::new(url);
    request.timeout = Duration::from_millis(300);
    // The kernel completes the handshake from the backlog; nobody ever answers.
    let (code, _, err) = run(request, no_env()).await;
    assert_eq!(code, EXIT_NO_RESPONSE);
    assert!(err.contains("no response from"), "{err}");
    drop(silent);
}

#[tokio::test]
async fn reset_is_reported_as_a_reset() {
    // What a mesh denial looks like to the caller: the connection is accepted, then reset.
    let resetter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", resetter.local_addr().unwrap())).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = resetter.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        stream.set_zero_linger().unwrap();
        drop(stream);
    });
    let (code, _, err) = run(GetRequest::new(url), no_env()).await;
    assert_eq!(code, EXIT_NO_RESPONSE);
    assert!(err.contains("reset"), "{err}");
    bounded("resetter", server).await.unwrap();
}
