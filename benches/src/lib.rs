//! Benchmarks for the mesh data plane. Every figure is measured against baselines in the
//! same run: direct TCP, a plain TCP relay and a TLS-only relay with the same hops.
//!
//! [`topology`] builds the paths under test on 127.0.0.1, [`load`] is the load server and
//! client, [`stats`] the arithmetic, [`affinity`] pins processes to one CPU, [`report`] the Markdown/JSON output and [`host`] the machine facts, [`knobs`] the environment knobs
//! they record. [`node`] is
//! the lab topology (real ztunnel processes, pods on two nodes), [`relay`] its plain TCP
//! relay process (the floor the ztunnel path is read against) and [`node_report`] its
//! output. For the controller benchmark, [`manifests`] writes mesh-sized manifest
//! directories, [`xds_client`] subscribes as ztunnel does and [`controller_report`] is its
//! output. The waypoint benchmark uses [`waypoint_lab`] (the local mesh with a waypoint
//! and an nginx pod), [`http_load`] (HTTP servers and a closed-loop client) and
//! [`waypoint_report`]. The benchmark binaries under `benches/` wire them together; the lab ones start
//! through [`lab_main`].

pub mod affinity;
pub mod controller_report;
pub mod host;
pub mod http_load;
pub mod knobs;
pub mod lab_main;
pub mod load;
pub mod manifests;
pub mod node;
pub mod node_report;
pub mod relay;
pub mod report;
pub mod stats;
pub mod topology;
pub mod waypoint_lab;
pub mod waypoint_report;
pub mod xds_client;
