//! The whole chain in one process: productpage -> reviews -> ratings on 127.0.0.1, the
//! way a lab tour exercises it through the mesh, minus the mesh.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use demo_app::{Env, HttpClient, ReviewsVersion, Role, Url};
use serde_json::Value;
use support::{Running, bounded, client, closed_url, json, productpage, reviews, str_at};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn loopback(client: &str) -> IpAddr {
    client
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("client {client:?}: {e}"))
        .ip()
}

#[tokio::test]
async fn productpage_shows_every_hop_and_the_client_each_saw() {
    bounded("chain", async {
        let ratings = Running::start("ratings-1", "v1", Role::Ratings).await;
        let reviews = Running::start(
            "reviews-v2-1",
            "v2",
            reviews(ReviewsVersion::V2, ratings.url()),
        )
        .await;
        // productpage finds reviews the way a pod does: by Service name and variables.
        let env = Env::from_pairs([
            ("REVIEWS_SERVICE_HOST", "127.0.0.1".to_string()),
            ("REVIEWS_SERVICE_PORT", reviews.addr.port().to_string()),
        ]);
        let page = Running::start(
            "productpage-1",
            "v1",
            productpage(
                Url::parse("http://reviews").unwrap(),
                HttpClient::new(env, Duration::from_secs(2)),
            ),
        )
        .await;

        for path in ["/productpage", "/"] {
            let url = page.url().with_path(path);
            let exchange = client(Duration::from_secs(5)).get(&url, &[]).await.unwrap();
            assert_eq!(exchange.status, 200, "{path}");
            assert_eq!(exchange.headers["x-served-by"], "productpage-1");
            let body = json(&exchange.body);
            assert_eq!(
                str_at(&body, "/summary"),
                "productpage(productpage-1) -> reviews-v2(reviews-v2-1) -> ratings(ratings-1)"
            );
            // Each server reports the TCP peer it saw: exactly our socket for the first
            // hop, the calling pod's address (loopback here) for the inner ones.
            assert_eq!(str_at(&body, "/client"), exchange.local.to_string());
            assert_eq!(str_at(&body, "/pod"), "productpage-1");
            assert_eq!(str_at(&body, "/reviews/pod"), "reviews-v2-1");
            assert_eq!(str_at(&body, "/reviews/version"), "v2");
            assert_eq!(str_at(&body, "/reviews/ratings/pod"), "ratings-1");
            for hop in ["/reviews/client", "/reviews/ratings/client"] {
                assert_eq!(loopback(str_at(&body, hop)), IpAddr::from([127, 0, 0, 1]));
            }
            assert_ne!(
                str_at(&body, "/reviews/client"),
                exchange.local.to_string(),
                "reviews was called by productpage, not by the test"
            );
            assert_eq!(
                body.pointer("/reviews/reviews/0/stars"),
                Some(&Value::from(5))
            );
            assert_eq!(
                body.pointer("/reviews/reviews/1/stars"),
                Some(&Value::from(4))
            );
            assert_eq!(body.pointer("/reviews/ratings/id"), Some(&Value::from(0)));
        }
        for running in [page, reviews, ratings] {
            bounded("shutdown", running.shut_down()).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn reviews_v2_answers_without_stars_when_ratings_is_down() {
    bounded("ratings down", async {
        let reviews = Running::start(
            "reviews-v2-1",
            "v2",
            reviews(ReviewsVersion::V2, closed_url().await),
        )
        .await;
        let url = reviews.url().with_path("/reviews/3");
        let exchange = client(Duration::from_secs(5)).get(&url, &[]).await.unwrap();
        assert_eq!(exchange.status, 200);
        let body = json(&exchange.body);
        let error = str_at(&body, "/ratings_error");
        assert!(error.contains("connection refused"), "{error}");
        assert_eq!(body.pointer("/ratings"), None);
        assert_eq!(body.pointer("/reviews/0/stars"), None);
        assert_eq!(body.pointer("/id"), Some(&Value::from(3)));

        let page = Running::start(
            "productpage-1",
            "v1",
            productpage(reviews.url(), client(Duration::from_secs(2))),
        )
        .await;
        let url = page.url().with_path("/productpage");
        let exchange = client(Duration::from_secs(5)).get(&url, &[]).await.unwrap();
        assert_eq!(exchange.status, 200);
        let summary = json(&exchange.body)["summary"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            summary.starts_with(
                "productpage(productpage-1) -> reviews-v2(reviews-v2-1) -> ratings(error: "
            ),
            "{summary}"
        );
    })
    .await;
}

#[tokio::test]
async fn reviews_v1_never_calls_ratings() {
    bounded("v1", async {
        let reviews = Running::start(
            "reviews-v1-1",
            "v1",
            reviews(ReviewsVersion::V1, closed_url().await),
        )
        .await;
        let url = reviews.url().with_path("/reviews/0");
        let exchange = client(Duration::from_secs(5)).get(&url, &[]).await.unwrap();
        assert_eq!(exchange.status, 200);
        let body = json(&exchange.body);
        assert_eq!(body.pointer("/ratings_error"), None);
        assert_eq!(body.pointer("/reviews/0/stars"), None);
        assert_eq!(str_at(&body, "/reviews/1/reviewer"), "Reviewer2");
    })
    .await;
}

#[tokio::test]
async fn productpage_is_a_bad_gateway_without_reviews() {
    bounded("reviews down", async {
        let page = Running::start(
            "productpage-1",
            "v1",
            productpage(closed_url().await, client(Duration::from_secs(2))),
        )
        .await;
        let url = page.url().with_path("/productpage");
        let exchange = client(Duration::from_secs(5)).get(&url, &[]).await.unwrap();
        assert_eq!(exchange.status, 502);
        let body = json(&exchange.body);
        assert!(str_at(&body, "/reviews_error").contains("connection refused"));
        assert!(
            str_at(&body, "/summary").starts_with("productpage(productpage-1) -> reviews(error: ")
        );
        assert_eq!(str_at(&body, "/pod"), "productpage-1");
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_methods_and_ids_are_json_errors() {
    bounded("errors", async {
        let ratings = Running::start("ratings-1", "v1", Role::Ratings).await;
        let cases = [("/ratings/x", 400), ("/nope", 404), ("/healthz", 200), ("/ratings/7", 200)];
        for (path, status) in cases {
            let url = ratings.url().with_path(path);
            let exchange = client(Duration::from_secs(5)).get(&url, &[]).await.unwrap();
            assert_eq!(exchange.status, status, "{path}");
            let body = json(&exchange.body);
            assert_eq!(str_at(&body, "/pod"), "ratings-1", "{path}");
            assert_eq!(str_at(&body, "/client"), exchange.local.to_string());
        }
        // Only GET is served; the answer is still stamped JSON.
        let mut raw = tokio::net::TcpStream::connect(ratings.addr).await.unwrap();
        raw.write_all(b"POST /ratings/1 HTTP/1.1\r\nhost: r\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        assert!(answer.contains("\"pod\":\"ratings-1\""), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_refuses() {
    bounded("drain", async {
        // A "reviews" that accepts and never answers keeps productpage's call in flight.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = Url::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
        let page = Running::start(
            "productpage-1",
            "v1",
            productpage(silent_url, client(Duration::from_millis(500))),
        )
        .await;
        let page_url = page.url().with_path("/productpage");
        let in_flight = tokio::spawn({
            let url = page_url.clone();
            async move { client(Duration::from_secs(5)).get(&url, &[]).await }
        });
        // Productpage has called reviews: the request is in flight.
        let (mut held, _) = silent.accept().await.unwrap();
        let mut request = [0u8; 1024];
        assert!(held.read(&mut request).await.unwrap() > 0);
        let stopped = page.shut_down();

        let exchange = in_flight.await.unwrap().unwrap();
        assert_eq!(exchange.status, 502, "answered with the upstream timeout");
        let body = json(&exchange.body);
        assert!(
            str_at(&body, "/reviews_error").contains("no response"),
            "{body}"
        );
        stopped.await.unwrap();
        let refused = client(Duration::from_secs(5)).get(&page_url, &[]).await;
        assert!(
            matches!(refused, Err(demo_app::ClientError::ConnectRefused { .. })),
            "{refused:?}"
        );
    })
    .await;
}
