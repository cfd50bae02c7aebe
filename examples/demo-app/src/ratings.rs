//! The leaf of the chain: fixed star ratings per product, so any difference a tour
//! sees comes from the mesh, not from data.

use serde_json::json;

use crate::http::{Handler, Inbound, Reply, product_id};

/// Serves `GET /ratings/{id}`.
#[derive(Debug, Default, Clone)]
pub struct Ratings;

impl Handler for Ratings {
    async fn handle(&self, request: Inbound) -> Reply {
        match product_id(&request.path, "/ratings/") {
            Some(Ok(id)) => Reply::ok(json!({
                "id": id,
                "ratings": { "Reviewer1": 5, "Reviewer2": 4 },
            })),
            Some(Err(reply)) => reply,
            None => Reply::not_found(&request.path),
        }
    }
}
