//! The admin endpoint (127.0.0.1:15000 by default), as Istio's ztunnel has it:
//!
//! - `GET /config_dump`: JSON of everything ztunnel holds — workloads, services and
//!   policies from the state, the certificates of the identities it serves, the pods the
//!   node agent handed over and their proxies, the xDS client's progress and readiness;
//! - `GET /logging`: the log filter in force; `POST /logging?level=FILTER` replaces it
//!   (`RUST_LOG` syntax: `debug`, `access=debug,info`, ...; 400 if invalid), `POST
//!   /logging?reset` restores the one ztunnel started with;
//! - `POST /quitquitquit`: the same graceful stop as SIGTERM;
//! - `GET /`: the list of endpoints.
//!
//! It can stop ztunnel, so it listens on localhost unless told otherwise (and never on a
//! wildcard address, see `config.rs`). The small HTTP/1 server here also serves the
//! readiness endpoint ([`crate::readiness`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

#[cfg(test)]
use dataplane::endpoint::DRAIN;
pub use dataplane::endpoint::bind;
pub(crate) use dataplane::endpoint::{json_response, serve_http, text, with_type};

use crate::app::Shutdown;
use crate::cert::{CertificateSource, CertificateState};
use crate::pods::{PodState, PodsView};
use crate::rbac::{Action, Scope};
use crate::readiness::Readiness;
use crate::state::{StateStore, TunnelProtocol};
use crate::xds::{TYPE_URLS, XdsStatus, short_type};

/// Default address of the admin endpoint: localhost only.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:15000";

/// What the admin pages show, and how `/quitquitquit` stops the process. Everything is
/// read at request time.
#[derive(Clone)]
pub struct AdminState {
    pub state: Arc<StateStore>,
    pub certs: Arc<dyn CertificateSource>,
    pub pods: PodsView,
    /// Set when workloads come from the controller.
    pub xds: Option<watch::Receiver<XdsStatus>>,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    /// The process's log filter, for `/logging`; `None` when logging was not set up
    /// through `runtime::init_logging`.
    pub log_filter: Option<runtime::LogFilter>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("xds", &self.xds.is_some())
            .finish_non_exhaustive()
    }
}

/// The endpoints, for `GET /`.
const ENDPOINTS: [(&str, &str); 4] = [
    ("/", "GET: this list"),
    (
        "/config_dump",
        "GET: workloads, services, policies, certificates, pods, xDS status and readiness (JSON)",
    ),
    (
        "/logging",
        "GET: the log filter; POST ?level=FILTER (RUST_LOG syntax, e.g. debug or access=debug,info) replaces it, POST ?reset restores the initial one",
    ),
    (
        "/quitquitquit",
        "POST: stop ztunnel gracefully, as SIGTERM does",
    ),
];

/// Serves the admin pages on `listener` until `admin.shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: AdminState) {
    let shutdown = admin.shutdown.receiver();
    serve_http(
        "admin",
        listener,
        move |request| respond(&admin, request),
        shutdown,
    )
    .await
}

fn respond(admin: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method();
    let readable = method == Method::GET || method == Method::HEAD;
    match request.uri().path() {
        "/" if readable => {
            let index: serde_json::Map<String, Value> = ENDPOINTS
                .iter()
                .map(|(path, about)| ((*path).to_owned(), Value::from(*about)))
                .collect();
            json_response(StatusCode::OK, &index.into())
        }
        "/config_dump" if readable => json_response(StatusCode::OK, &config_dump(admin)),
        "/logging" if readable || method == Method::POST => {
            logging(admin.log_filter.as_ref(), method, request.uri().query())
        }
        "/quitquitquit" if method == Method::POST => {
            info!("POST /quitquitquit: stopping");
            admin.shutdown.trigger();
            text(StatusCode::OK, "OK")
        }
        "/" | "/config_dump" => not_allowed("GET"),
        "/quitquitquit" => not_allowed("POST"),
        "/logging" => not_allowed("GET, POST"),
        path => text(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path}; GET / lists them"),
        ),
    }
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `GET /logging` (the filter in force) and `POST /logging?level=FILTER` or `?reset`
/// (replace it, answer the new one). `FILTER` is percent-decoded.
fn logging(
    filter: Option<&runtime::LogFilter>,
    method: &Method,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    const USAGE: &str = "use POST /logging?level=FILTER (RUST_LOG syntax, e.g. level=debug or \
                         level=access=debug,info) or POST /logging?reset";
    let Some(filter) = filter else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process's log filter cannot be changed",
        );
    };
    if method != Method::POST {
        return text(
            StatusCode::OK,
            format!("current log level is {}", filter.current()),
        );
    }
    let mut params = query.unwrap_or("").split('&').filter(|p| !p.is_empty());
    let (first, more) = (params.next(), params.next());
    let changed = match (first.map(|p| p.split_once('=').unwrap_or((p, ""))), more) {
        (Some(("level", level)), None) => match percent_decode(level) {
            Some(level) => filter.set(&level),
            None => Err(format!("level {level:?} is not validly percent-encoded")),
        },
        (Some(("reset", "")), None) => filter.reset(),
        _ => Err(USAGE.to_owned()),
    };
    match changed {
        Ok(now) => {
            info!(filter = %now, "log filter changed through the admin endpoint");
            text(StatusCode::OK, format!("current log level is {now}"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, e),
    }
}

/// `%XX` escapes decoded (`+` is left alone: filters never contain spaces); `None` for a
/// malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Everything ztunnel holds, as served by `GET /config_dump`.
pub fn config_dump(admin: &AdminState) -> Value {
    let state = admin.state.snapshot();
    let mut workloads: Vec<_> = state.workloads().collect();
    workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
    let workloads: Vec<Value> = workloads
        .into_iter()
        .map(|w| {
            let services: BTreeMap<String, &crate::state::PortMap> = w
                .services
                .iter()
                .map(|(key, ports)| (key.to_string(), ports))
                .collect();
            json!({
                "uid": w.uid,
                "name": w.name,
                "namespace": w.namespace,
                "addresses": w.addresses,
                "node": w.node,
                "serviceAccount": w.service_account,
                "trustDomain": w.trust_domain,
                "identity": w.identity.to_string(),
                "protocol": match w.protocol {
                    TunnelProtocol::Hbone => "HBONE",
                    TunnelProtocol::None => "TCP",
                },
                "status": if w.healthy { "Healthy" } else { "Unhealthy" },
                "workloadName": w.workload_name,
                "canonicalName": w.canonical_name,
                "canonicalRevision": w.canonical_revision,
                "services": services,
                "authorizationPolicies": w.authorization_policies,
            })
        })
        .collect();

    let mut services: Vec<_> = state.services().collect();
    services.sort_by_key(|s| s.key());
    let services: Vec<Value> = services
        .into_iter()
        .map(|s| {
            let endpoints = state.endpoints(&s.key());
            json!({
                "name": s.name,
                "namespace": s.namespace,
                "hostname": s.hostname,
                "vips": s.vips,
                "ports": s.ports,
                "endpoints": endpoints.len(),
                "healthyEndpoints": endpoints.iter().filter(|w| w.healthy).count(),
            })
        })
        .collect();

    let mut policies: Vec<_> = state.policies().iter().collect();
    policies.sort_by_key(|p| p.key());
    let policies: Vec<Value> = policies
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name,
                "namespace": p.namespace,
                "scope": match p.scope {
                    Scope::Global => "GLOBAL",
                    Scope::Namespace => "NAMESPACE",
                    Scope::WorkloadSelector => "WORKLOAD_SELECTOR",
                },
                "action": match p.action {
                    Action::Allow => "ALLOW",
                    Action::Deny => "DENY",
                    Action::Audit => "AUDIT",
                },
                "dryRun": p.dry_run,
                "groups": p.groups.len(),
            })
        })
        .collect();

    let now = SystemTime::now();
    let certificates: Vec<Value> = admin
        .certs
        .certificates()
        .into_iter()
        .map(|c| {
            let mut entry = json!({ "identity": c.identity.to_string() });
            let fields = match c.state {
                CertificateState::Pending => json!({ "state": "pending" }),
                CertificateState::Available {
                    not_before,
                    not_after,
                    renewal_error,
                } => json!({
                    "state": if not_after <= now { "expired" } else { "available" },
                    "notBefore": rfc3339(not_before),
                    "notAfter": rfc3339(not_after),
                    "secondsToExpiry": seconds_between(now, not_after),
                    "renewalError": renewal_error,
                }),
                CertificateState::Failed { error, at } => json!({
                    "state": "failed",
                    "error": error,
                    "failedAt": rfc3339(at),
                }),
            };
            merge(&mut entry, fields);
            entry
        })
        .collect();

    let pods: Vec<Value> = admin
        .pods
        .list()
        .into_iter()
        .map(|p| {
            let mut entry = json!({
                "uid": p.info.uid,
                "name": p.info.name,
                "namespace": p.info.namespace,
                "serviceAccount": p.info.service_account,
                "netns": p.netns,
                "since": rfc3339(p.since),
            });
            let fields = match p.state {
                PodState::Running {
                    identity,
                    listeners,
                } => json!({
                    "state": "running",
                    "identity": identity.to_string(),
                    "listenersUp": listeners.len(),
                    "listeners": listeners,
                }),
                PodState::Failed { error } => json!({
                    "state": "failed",
                    "error": error,
                }),
            };
            merge(&mut entry, fields);
            entry
        })
        .collect();

    let readiness = match admin.readiness.check() {
        Ok(()) => json!({ "ready": true, "waitingFor": [] }),
        Err(waiting) => json!({ "ready": false, "waitingFor": waiting }),
    };
    let mut dump = json!({
        "workloads": workloads,
        "services": services,
        "policies": policies,
        "certificates": certificates,
        "pods": pods,
        "readiness": readiness,
    });
    if let Some(xds) = &admin.xds {
        dump["xds"] = xds_status(&xds.borrow());
    }
    dump
}

fn xds_status(status: &XdsStatus) -> Value {
    let types: serde_json::Map<String, Value> = TYPE_URLS
        .iter()
        .map(|type_url| {
            let of_type = status.types.get(*type_url).cloned().unwrap_or_default();
            let value = json!({
                "typeUrl": type_url,
                "applied": of_type.applied,
                "rejected": of_type.rejected,
                "resources": of_type.resources,
                "lastAppliedNonce": of_type.last_applied_nonce,
                "lastAppliedVersion": of_type.last_applied_version,
                "lastRejectedNonce": of_type.last_rejected_nonce,
                "lastRejection": of_type.last_rejection,
            });
            (short_type(type_url).to_owned(), value)
        })
        .collect();
    json!({
        "connected": status.connected,
        "synced": status.synced,
        "applied": status.applied,
        "rejected": status.rejected,
        "lastRejection": status.last_rejection,
        "types": types,
    })
}

/// Adds `fields`' members to the object `into`.
fn merge(into: &mut Value, fields: Value) {
    if let (Value::Object(into), Value::Object(fields)) = (into, fields) {
        into.extend(fields);
    }
}

/// Whole seconds from `from` to `to`, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `t` as RFC 3339 in UTC with whole seconds, e.g. `2024-05-01T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = seconds_between(UNIX_EPOCH, t);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = runtime::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A minimal HTTP/1.1 client for tests: one request, `connection: close`, bounded.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug)]
    pub struct Reply {
        pub status: u16,
        /// The status line and headers.
        pub head: String,
        pub body: String,
    }

    /// Sends `method path` with an empty body and reads the whole answer.
    pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} {path} within 10 s"));
        let status = out
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {out:?}"));
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        Reply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
