//! The waypoint: an optional L7 proxy that enrolled traffic is sent through.
//!
//! ztunnels send it HBONE streams whose `:authority` is the original target (a service
//! VIP:port or a pod IP:port). For each request inside a stream it applies, in order:
//! [`jwt`] (RequestAuthentication), [`authz`] (L7 AuthorizationPolicy), [`route`]
//! (VirtualService: match, rewrite, redirect, direct response, faults, retries, mirror,
//! CORS) and [`upstream`] (DestinationRule: subsets, load balancing, connection pool,
//! outlier detection), then forwards to the chosen endpoint over its own HBONE stream.
//! [`context`] holds what every stage knows about a request besides its HTTP head.

pub mod app;
pub mod authz;
pub mod config;
pub mod context;
pub mod flags;
pub mod forward;
pub mod inbound;
pub mod jwt;
pub mod metrics;
pub mod problem;
pub mod proxy;
pub mod route;
pub mod smuggling;
pub mod sniff;
pub mod upstream;
pub mod workers;
pub mod xds;
