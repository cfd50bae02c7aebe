//! Unit tests of the DestinationRule module, written from DestinationRule YAML. Shared
//! helpers here; the tests by topic under `tests/`.

mod lb;
mod outlier;
mod pool;
mod rules;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use api::config::DestinationRule;
use dataplane::state::Workload;

use super::{CompileContext, CompiledDestinationRule, compile};
use crate::context::Endpoint;
use crate::problem::Problem;

/// A DestinationRule document: `spec` is the YAML under `spec:`, unindented.
fn yaml(namespace: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  \
         name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
    )
}

fn parse(namespace: &str, name: &str, spec: &str) -> DestinationRule {
    serde_yaml_ng::from_str(&yaml(namespace, name, spec))
        .unwrap_or_else(|e| panic!("bad test YAML: {e}\n{spec}"))
}

fn try_compile(
    namespace: &str,
    name: &str,
    spec: &str,
) -> Result<CompiledDestinationRule, Vec<Problem>> {
    compile(&parse(namespace, name, spec), &CompileContext::default())
}

/// Compiles `spec` as `bookinfo/test`, panicking on problems.
fn compiled(spec: &str) -> CompiledDestinationRule {
    try_compile("bookinfo", "test", spec).unwrap_or_else(|p| panic!("problems: {p:?}"))
}

fn arc(namespace: &str, name: &str, spec: &str) -> Arc<CompiledDestinationRule> {
    Arc::new(try_compile(namespace, name, spec).unwrap_or_else(|p| panic!("problems: {p:?}")))
}

fn endpoint(i: usize, labels: &[(&str, &str)]) -> Endpoint {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let addr: SocketAddr = format!("10.0.{}.{}:9080", i / 250, i % 250 + 1)
        .parse()
        .expect("address");
    let mut workload = Workload::pod(&format!("pod-{i}"), "default", "default", addr.ip())
        .expect("a valid identity");
    workload.labels = Arc::new(labels);
    Endpoint::new(Arc::new(workload), addr)
}

/// `n` endpoints `pod-0..n` without labels.
fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n).map(|i| endpoint(i, &[])).collect()
}
