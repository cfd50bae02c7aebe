//! Flag parsing: the defaults a manifest relies on, and a clear error for each mistake.

use std::time::Duration;

use demo_app::cli::{Command, UsageError, parse};
use demo_app::{Env, ReviewsVersion, Role, Url};

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn parse_line(line: &str) -> Result<Command, UsageError> {
    parse(args(line), &Env::from_pairs::<&str, &str>([]))
}

#[test]
fn servers_default_to_port_9080_v1_and_service_names() {
    match parse_line("reviews").unwrap() {
        Command::Serve {
            role: Role::Reviews(r),
            port,
            version,
        } => {
            assert_eq!((port, version.as_str()), (9080, "v1"));
            assert_eq!(r.version, ReviewsVersion::V1);
            assert_eq!(r.ratings, Url::parse("http://ratings:9080").unwrap());
        }
        other => panic!("{other:?}"),
    }
    match parse_line("productpage --port=8000 --reviews-url http://rv.bookinfo:9081").unwrap() {
        Command::Serve {
            role: Role::ProductPage(p),
            port,
            ..
        } => {
            assert_eq!(port, 8000);
            assert_eq!(p.reviews, Url::parse("http://rv.bookinfo:9081").unwrap());
        }
        other => panic!("{other:?}"),
    }
    match parse_line("reviews --version v2 --ratings-url http://10.96.0.9:1").unwrap() {
        Command::Serve {
            role: Role::Reviews(r),
            version,
            ..
        } => {
            assert_eq!((r.version, version.as_str()), (ReviewsVersion::V2, "v2"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_line("ratings --version v7").unwrap(),
        Command::Serve { role: Role::Ratings, ref version, .. } if version == "v7"
    ));
}

#[test]
fn get_takes_curl_like_flags() {
    let Command::Get(request) =
        parse_line("get http://reviews:9080/reviews/0 -H x-a:1 --header x-b:2 -i --timeout 500ms")
            .unwrap()
    else {
        panic!("not a get");
    };
    assert_eq!(request.url.to_string(), "http://reviews:9080/reviews/0");
    let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x-a", "x-b"]);
    assert!(request.include_headers);
    assert_eq!(request.timeout, Duration::from_millis(500));
    let Command::Get(request) = parse_line("get http://ratings/healthz").unwrap() else {
        panic!("not a get");
    };
    assert_eq!(request.timeout, Duration::from_secs(5));
}

#[test]
fn mistakes_are_named() {
    type Expect = fn(&UsageError) -> bool;
    let cases: Vec<(&str, Expect)> = vec![
        ("", |e| *e == UsageError::MissingCommand),
        (
            "details",
            |e| matches!(e, UsageError::UnknownCommand(c) if c == "details"),
        ),
        ("ratings --help", |e| *e == UsageError::Help),
        ("help", |e| *e == UsageError::Help),
        (
            "ratings --ratings-url http://x",
            |e| matches!(e, UsageError::UnexpectedArgument { arg, .. } if arg == "--ratings-url"),
        ),
        ("ratings extra", |e| {
            matches!(e, UsageError::UnexpectedArgument { .. })
        }),
        ("ratings -i", |e| {
            matches!(e, UsageError::UnexpectedArgument { .. })
        }),
        (
            "ratings --port",
            |e| matches!(e, UsageError::MissingValue(f) if f == "--port"),
        ),
        ("ratings --port 0", |e| {
            matches!(e, UsageError::BadValue { .. })
        }),
        ("ratings --port http", |e| {
            matches!(e, UsageError::BadValue { .. })
        }),
        (
            "reviews --version v3",
            |e| matches!(e, UsageError::BadValue { reason, .. } if reason.contains("v1 (no stars)")),
        ),
        (
            "reviews --ratings-url https://ratings",
            |e| matches!(e, UsageError::BadValue { reason, .. } if reason.contains("https")),
        ),
        ("get", |e| *e == UsageError::MissingUrl),
        ("get http://a http://b", |e| {
            matches!(e, UsageError::UnexpectedArgument { .. })
        }),
        ("get http://a --header nocolon", |e| {
            matches!(e, UsageError::BadValue { .. })
        }),
        ("get http://a --timeout soon", |e| {
            matches!(e, UsageError::BadValue { .. })
        }),
        ("get http://a --port 1", |e| {
            matches!(e, UsageError::UnexpectedArgument { .. })
        }),
    ];
    for (line, expected) in cases {
        match parse_line(line) {
            Err(e) => assert!(expected(&e), "{line:?}: unexpected {e:?}"),
            Ok(c) => panic!("{line:?} parsed as {c:?}"),
        }
    }
}
