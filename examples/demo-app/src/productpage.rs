//! The front of the chain: one call to reviews, whose answer (and ratings' inside it) is
//! embedded whole, plus a one-line `summary` of which pods served each hop, so a tour
//! can show the path through the mesh with a single request.

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::client::HttpClient;
use crate::http::{Handler, Inbound, Reply};
use crate::upstream::{get_json, one_line};
use crate::url::Url;

/// The product bookinfo is about; its id is what productpage asks reviews for.
const PRODUCT_ID: u64 = 0;
const PRODUCT_TITLE: &str = "The Comedy of Errors";

/// Serves `GET /productpage` and `GET /`.
#[derive(Debug, Clone)]
pub struct ProductPage {
    /// Base URL of the reviews service (`http://reviews:9080`).
    pub reviews: Url,
    pub client: HttpClient,
}

impl Handler for ProductPage {
    async fn handle(&self, request: Inbound) -> Reply {
        if request.path != "/productpage" && request.path != "/" {
            return Reply::not_found(&request.path);
        }
        let me = format!("productpage({})", request.pod.name);
        let mut body = Map::new();
        body.insert(
            "product".into(),
            json!({ "id": PRODUCT_ID, "title": PRODUCT_TITLE }),
        );
        let url = self.reviews.with_path(&format!("/reviews/{PRODUCT_ID}"));
        match get_json(&self.client, &url).await {
            Ok(reviews) => {
                body.insert(
                    "summary".into(),
                    json!(format!("{me} -> {}", chain(&reviews))),
                );
                body.insert("reviews".into(), Value::Object(reviews));
                Reply::ok(Value::Object(body))
            }
            Err(e) => {
                // Reviews is the page's content: without it the page is a bad gateway.
                tracing::warn!(url = %url, "reviews call failed: {e}");
                let why = one_line(&e.to_string());
                body.insert(
                    "summary".into(),
                    json!(format!("{me} -> reviews(error: {why})")),
                );
                body.insert("reviews_error".into(), json!(e.to_string()));
                Reply::new(StatusCode::BAD_GATEWAY, Value::Object(body))
            }
        }
    }
}

/// `reviews-v2(pod) -> ratings(pod)` from the reviews answer; v1 ends at reviews.
fn chain(reviews: &Map<String, Value>) -> String {
    let field = |map: &Map<String, Value>, key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let mut hops = format!(
        "reviews-{}({})",
        field(reviews, "version"),
        field(reviews, "pod")
    );
    if let Some(ratings) = reviews.get("ratings").and_then(Value::as_object) {
        hops.push_str(&format!(" -> ratings({})", field(ratings, "pod")));
    } else if let Some(error) = reviews.get("ratings_error").and_then(Value::as_str) {
        hops.push_str(&format!(" -> ratings(error: {})", one_line(error)));
    }
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn chain_names_each_hop() {
        let cases = [
            (json!({"pod": "rv-1", "version": "v1"}), "reviews-v1(rv-1)"),
            (
                json!({"pod": "rv-2", "version": "v2", "ratings": {"pod": "rt-1"}}),
                "reviews-v2(rv-2) -> ratings(rt-1)",
            ),
            (
                json!({"pod": "rv-2", "version": "v2", "ratings_error": "connection\nreset"}),
                "reviews-v2(rv-2) -> ratings(error: connection reset)",
            ),
            (json!({}), "reviews-?(?)"),
        ];
        for (reviews, want) in cases {
            assert_eq!(chain(&map(reviews)), want);
        }
    }
}
