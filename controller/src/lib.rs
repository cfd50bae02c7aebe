//! The controller: the mesh's control plane.
//!
//! Config comes from [`source`]s (a directory of manifests today; Kubernetes later) as typed
//! [`resource`]s, parsed and checked by [`manifest`] and [`validate`], into one [`store`].
//! [`app`] is the `controller` command line.

pub mod admin;
pub mod app;
pub mod auth;
pub mod ca;
pub mod manifest;
pub mod memory;
pub mod pipeline;
pub mod resource;
pub mod serve;
pub mod source;
pub mod store;
pub mod translate;
pub mod validate;
pub mod xds;
