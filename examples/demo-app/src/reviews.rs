//! The middle of the chain, in two versions like bookinfo's: v1 answers alone, v2 asks
//! ratings for stars. v2 degrades rather than fails when ratings is unreachable, so a
//! policy denying reviews -> ratings shows up as `ratings_error`, not as a broken page.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use crate::client::HttpClient;
use crate::http::{Handler, Inbound, Reply, product_id};
use crate::upstream::get_json;
use crate::url::Url;

/// The reviewers and what they wrote; ratings keys its stars by the same names.
const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "A brisk, funny evening: the mistaken identities never stop landing.",
    ),
    (
        "Reviewer2",
        "Plenty of laughs, though the plot leans on coincidence more than on character.",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewsVersion {
    /// Reviews without stars; never calls ratings.
    V1,
    /// Reviews with stars from the ratings service.
    V2,
}

impl ReviewsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

impl fmt::Display for ReviewsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("reviews has versions v1 (no stars) and v2 (stars from ratings), not {0:?}")]
pub struct UnknownVersion(pub String);

impl FromStr for ReviewsVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Self::V1),
            "v2" => Ok(Self::V2),
            other => Err(UnknownVersion(other.to_string())),
        }
    }
}

/// Serves `GET /reviews/{id}`.
#[derive(Debug, Clone)]
pub struct Reviews {
    pub version: ReviewsVersion,
    /// Base URL of the ratings service (`http://ratings:9080`); only v2 calls it.
    pub ratings: Url,
    pub client: HttpClient,
}

impl Handler for Reviews {
    async fn handle(&self, request: Inbound) -> Reply {
        let id = match product_id(&request.path, "/reviews/") {
            Some(Ok(id)) => id,
            Some(Err(reply)) => return reply,
            None => return Reply::not_found(&request.path),
        };
        let mut reviews: Vec<Map<String, Value>> = REVIEWS
            .iter()
            .map(|(reviewer, text)| {
                Map::from_iter([
                    ("reviewer".to_string(), json!(reviewer)),
                    ("text".to_string(), json!(text)),
                ])
            })
            .collect();
        let mut body = Map::new();
        body.insert("id".into(), json!(id));
        if self.version == ReviewsVersion::V2 {
            let url = self.ratings.with_path(&format!("/ratings/{id}"));
            match get_json(&self.client, &url).await {
                Ok(ratings) => {
                    add_stars(&mut reviews, &ratings);
                    // The whole answer, so callers see which ratings pod served and
                    // which client address it saw.
                    body.insert("ratings".into(), Value::Object(ratings));
                }
                Err(e) => {
                    tracing::warn!(url = %url, "ratings call failed: {e}");
                    body.insert("ratings_error".into(), json!(e.to_string()));
                }
            }
        }
        body.insert("reviews".into(), json!(reviews));
        Reply::ok(Value::Object(body))
    }
}

/// Copies each reviewer's stars from ratings' `{"ratings": {"Reviewer1": 5}}`; a reviewer
/// ratings does not know simply gets none.
fn add_stars(reviews: &mut [Map<String, Value>], ratings: &Map<String, Value>) {
    let Some(stars) = ratings.get("ratings").and_then(Value::as_object) else {
        return;
    };
    for review in reviews {
        let reviewer = review.get("reviewer").and_then(Value::as_str).unwrap_or("");
        if let Some(n) = stars.get(reviewer).and_then(Value::as_u64) {
            review.insert("stars".into(), json!(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_print() {
        for v in [ReviewsVersion::V1, ReviewsVersion::V2] {
            assert_eq!(v.as_str().parse::<ReviewsVersion>().unwrap(), v);
        }
        assert!("v3".parse::<ReviewsVersion>().is_err());
    }

    #[test]
    fn stars_follow_reviewer_names() {
        let mut reviews = vec![
            Map::from_iter([("reviewer".into(), json!("Reviewer1"))]),
            Map::from_iter([("reviewer".into(), json!("Nobody"))]),
        ];
        let ratings = json!({ "ratings": { "Reviewer1": 5, "Reviewer2": 4 } });
        add_stars(&mut reviews, ratings.as_object().unwrap());
        assert_eq!(reviews[0].get("stars"), Some(&json!(5)));
        assert_eq!(reviews[1].get("stars"), None);
    }
}
