//! Tests of VirtualService compilation and evaluation, written from YAML.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;

use super::*;
use crate::context::{Destination, ServiceName, Source, SourceWorkload};
use crate::problem::Problem;

mod actions;
mod hosts;
mod matching;
mod policies;
mod problems;

/// Parses a VirtualService manifest.
fn parse(yaml: &str) -> api::config::VirtualService {
    serde_yaml_ng::from_str(yaml).expect("test YAML parses")
}

/// Compiles a manifest that must be valid.
fn compiled(yaml: &str) -> CompiledVirtualService {
    compile(&parse(yaml), &CompileContext::default()).expect("compiles")
}

/// Compiles a manifest that must be rejected.
fn problems(yaml: &str) -> Vec<Problem> {
    compile(&parse(yaml), &CompileContext::default()).expect_err("must be rejected")
}

/// A table of the given manifests.
fn table(yamls: &[&str]) -> RouteTable {
    RouteTable::new(yamls.iter().map(|y| Arc::new(compiled(y))).collect())
}

/// A request head: `GET http://...` style `uri` or origin-form path, plus headers.
fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("valid request").into_parts().0
}

/// Service traffic to `host` (an FQDN) on `port`.
fn svc(host: &str, port: u16) -> Destination {
    let mut labels = host.split('.');
    let name = labels.next().unwrap_or_default().to_owned();
    let namespace = labels.next().unwrap_or_default().to_owned();
    Destination {
        service: Some(ServiceName {
            hostname: host.to_owned(),
            name,
            namespace,
        }),
        target: SocketAddr::from(([10, 96, 0, 1], port)),
    }
}

/// A source in `namespace` with `labels`.
fn src(namespace: &str, labels: &[(&str, &str)]) -> Source {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Source {
        identity: Some(hbone::Identity::new("cluster.local", namespace, "default").unwrap()),
        ip: None,
        workload: Some(SourceWorkload {
            name: "client".into(),
            namespace: namespace.into(),
            labels: Arc::new(labels),
        }),
    }
}

/// The name of the route `req` gets from `table` for `reviews.bookinfo` on port 9080,
/// from the default source; `None` when no rule matched.
fn routed(table: &RouteTable, parts: &Parts) -> Option<String> {
    routed_from(table, parts, &src("bookinfo", &[]))
}

fn routed_from(table: &RouteTable, parts: &Parts, from: &Source) -> Option<String> {
    let dest = svc("reviews.bookinfo.svc.cluster.local", 9080);
    table
        .route(&dest, parts, from)
        .map(|m| m.route.name.clone())
}

/// A single-VirtualService table for `reviews` in `bookinfo` with the given `http:` list
/// (YAML indented by 2).
fn reviews(http: &str) -> RouteTable {
    table(&[&format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: reviews, namespace: bookinfo}}\n\
         spec:\n  hosts: [reviews]\n  http:\n{http}"
    )])
}
