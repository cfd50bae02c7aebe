//! A tiny bookinfo for the lab: `productpage -> reviews -> ratings`, each hop an HTTP/1.1
//! call between pods, each answer naming the pod that served it and the client address
//! it saw, so a tour can show what the mesh did to a request (and that it kept the
//! client's IP). Pods have no DNS: Service names resolve from kubelet-style variables.
//!
//! The lab runs a pod's process by re-executing its own binary and calling [`main`].

pub mod app;
pub mod cli;
pub mod client;
pub mod discovery;
pub mod get;
pub mod http;
pub mod pod;
pub mod productpage;
pub mod ratings;
pub mod reviews;
pub mod upstream;
pub mod url;

pub use app::{Role, main, serve};
pub use client::{ClientError, Exchange, HttpClient, Peer};
pub use discovery::Env;
pub use get::GetRequest;
pub use pod::PodInfo;
pub use productpage::ProductPage;
pub use ratings::Ratings;
pub use reviews::{Reviews, ReviewsVersion};
pub use url::{Url, UrlError};
