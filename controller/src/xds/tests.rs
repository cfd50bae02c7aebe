//! In-process tests: a real tonic server on loopback, the generated client.

mod flow;
mod harness;
mod protocol;
