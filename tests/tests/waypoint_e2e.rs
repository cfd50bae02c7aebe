//! Lab e2e tier: the waypoint. Each trial runs the local mesh ([`lab::cluster`]) with a
//! waypoint Gateway in the manifests, so the lab starts a waypoint pod as Istio's
//! waypoint controller would; HTTP clients and servers are tokio tasks inside the pods
//! (the client's connections are captured by its ztunnel), and every request goes
//! client -> ztunnel -> waypoint -> ztunnel -> server over HBONE. Trials assert on the
//! answers (which version, status, timing) and on what the waypoint logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use lab::Pod;
use lab::cluster::{Cluster, ClusterConfig};
use lab::eventually::{until, wait_for};
use libtest_mimic::Trial;

const TRIAL_BOUND: Duration = Duration::from_secs(240);
/// How long a config change may take to reach the proxies before a trial fails.
const PROPAGATION: Duration = Duration::from_secs(15);
const IO_BOUND: Duration = Duration::from_secs(10);
const APP_PORT: u16 = 9080;
/// The `ratings` Service in front of the server pods.
const RATINGS: &str = "10.96.0.40:9080";

/// An enrolled namespace with a waypoint taking its service traffic, a client on node 0
/// and two versions of `ratings` on nodes 0 and 1.
const BASE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  clusterIP: 10.96.0.40
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: node-0, serviceAccountName: client, containers: []}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: shop, labels: {app: ratings, version: v1}}
spec: {nodeName: node-0, serviceAccountName: ratings, containers: []}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v2, namespace: shop, labels: {app: ratings, version: v2}}
spec: {nodeName: node-1, serviceAccountName: ratings, containers: []}
status: {podIP: 10.244.1.11}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: shop}
spec:
  host: ratings
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

fn main() -> ExitCode {
    lab::trial::mesh_main("waypoint_e2e", || {
        vec![
            trial(
                "header_routing_and_a_90_10_canary_split_through_the_waypoint",
                canary_and_header_routing,
            ),
            trial("a_50_percent_abort_and_a_fixed_delay_are_injected", faults),
            trial(
                "retries_turn_a_flaky_endpoints_503s_into_successes",
                retries,
            ),
            trial(
                "a_service_account_label_sends_only_its_pods_traffic_through_a_waypoint",
                service_account_opt_in,
            ),
            trial(
                "jwt_and_path_based_authorization_allow_and_deny",
                jwt_and_paths,
            ),
            trial(
                "request_ids_and_trace_headers_reach_the_server",
                trace_headers,
            ),
            trial(
                "malformed_http_is_rejected_without_affecting_other_connections",
                malformed_http,
            ),
        ]
    })
}

fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>>,
{
    lab::trial::trial(name, TRIAL_BOUND, test)
}

/// A running local mesh with a waypoint, and the ratings servers.
struct Env {
    cluster: Cluster,
    manifests: PathBuf,
    servers: Vec<tokio::task::JoinHandle<()>>,
    _scratch: lab::trial::Scratch,
}

/// How a test server answers.
#[derive(Clone, Copy)]
enum Behaviour {
    Healthy,
    /// 503 for every other request.
    Flaky,
}

impl Env {
    async fn start(name: &str, extra: &str) -> Result<Env> {
        let scratch = lab::trial::Scratch::new("wp-e2e", name);
        let root = scratch.path().to_owned();
        let manifests = root.join("manifests");
        std::fs::create_dir_all(&manifests)?;
        write(&manifests, "base.yaml", BASE)?;
        write(&manifests, "extra.yaml", extra)?;
        let cluster = Cluster::start(ClusterConfig::new(&manifests, root.join("work"))).await?;
        ensure!(
            cluster.problems().is_empty(),
            "problems: {:?}",
            cluster.problems()
        );
        // The lab started the waypoint pod: wait for it to serve.
        let deadline = Instant::now() + PROPAGATION;
        while !waypoint_log(&cluster).contains("waypoint started") {
            ensure!(
                Instant::now() < deadline,
                "the waypoint did not start within {PROPAGATION:?}; problems {:?}; log:\n{}",
                cluster.problems(),
                waypoint_log(&cluster)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Env {
            cluster,
            manifests,
            servers: Vec::new(),
            _scratch: scratch,
        })
    }

    fn pod(&self, name: &str) -> Result<Pod> {
        self.pod_in("shop", name)
    }

    fn pod_in(&self, namespace: &str, name: &str) -> Result<Pod> {
        self.cluster
            .pod(namespace, name)
            .cloned()
            .with_context(|| format!("no pod {namespace}/{name}"))
    }

    /// Serves HTTP on [`APP_PORT`] in `pod`: `{"pod": NAME, "version": VERSION}`.
    fn serve(&mut self, pod: &str, version: &'static str, behaviour: Behaviour) -> Result<()> {
        let pod = self.pod(pod)?;
        self.serve_in(pod, version, behaviour)
    }

    fn serve_in(&mut self, pod: Pod, version: &'static str, behaviour: Behaviour) -> Result<()> {
        let listener = pod.listen(APP_PORT)?;
        let name = pod.name().to_owned();
        let served = Arc::new(AtomicU64::new(0));
        self.servers.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (name, served) = (name.clone(), served.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let n = served.fetch_add(1, Ordering::Relaxed);
                        let name = name.clone();
                        async move {
                            let failing = matches!(behaviour, Behaviour::Flaky) && n % 2 == 0;
                            let status = if failing { 503 } else { 200 };
                            // What tracing headers arrived, for the propagation trial.
                            let seen = |h: &str| {
                                req.headers()
                                    .get(h)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned()
                            };
                            let body = serde_json::json!({
                                "pod": name,
                                "version": version,
                                "path": req.uri().path(),
                                "x-request-id": seen("x-request-id"),
                                "traceparent": seen("traceparent"),
                                "x-b3-traceid": seen("x-b3-traceid"),
                            })
                            .to_string();
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
        Ok(())
    }

    fn write(&self, file: &str, yaml: &str) -> Result<()> {
        write(&self.manifests, file, yaml)
    }

    /// A keep-alive HTTP/1.1 connection from `client` to the ratings Service.
    async fn connect(&self, client: &str) -> Result<SendRequest<Empty<Bytes>>> {
        self.connect_to(client, RATINGS.parse()?).await
    }

    /// A keep-alive HTTP/1.1 connection from `client` to `addr`.
    async fn connect_to(
        &self,
        client: &str,
        addr: SocketAddr,
    ) -> Result<SendRequest<Empty<Bytes>>> {
        let pod = self.pod(client)?;
        let stream = tokio::time::timeout(IO_BOUND, pod.connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}"))??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

fn write(dir: &Path, file: &str, yaml: &str) -> Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, dir.join(file))?;
    Ok(())
}

fn waypoint_log(cluster: &Cluster) -> String {
    log_of(cluster, "shop", "waypoint-0")
}

/// The log of the pod's (only) container, as the lab keeps it.
fn log_of(cluster: &Cluster, namespace: &str, pod: &str) -> String {
    let dir = cluster
        .config()
        .work_dir
        .join("pods")
        .join(format!("{namespace}.{pod}"));
    std::fs::read_to_string(dir.join("istio-proxy.log")).unwrap_or_default()
}

/// What one request got: status, the answering pod's version, and the time it took.
struct Answer {
    status: u16,
    version: Option<String>,
    elapsed: Duration,
}

async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer> {
    let mut request = Request::get(path).header("host", "ratings:9080");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let started = Instant::now();
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request.body(Empty::new())?).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(IO_BOUND, exchange)
        .await
        .with_context(|| format!("no answer to GET {path} within {IO_BOUND:?}"))??;
    let version = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
    Ok(Answer {
        status,
        version,
        elapsed: started.elapsed(),
    })
}

/// Sends requests until `check` holds for an answer (a config change has arrived).
async fn until_answer(
    env: &Env,
    path: &str,
    headers: &[(&str, &str)],
    check: impl Fn(&Answer) -> bool,
) -> Result<()> {
    let ok = until(PROPAGATION, || async {
        let Ok(mut sender) = env.connect("client").await else {
            return Ok(false);
        };
        Ok(matches!(get(&mut sender, path, headers).await, Ok(a) if check(&a)))
    })
    .await?;
    ensure!(
        ok,
        "GET {path} never got the expected answer; waypoint log:\n{}",
        waypoint_log(&env.cluster)
    );
    Ok(())
}

const CANARY: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - route:
    - {destination: {host: ratings, subset: v1}, weight: 90}
    - {destination: {host: ratings, subset: v2}, weight: 10}
";

async fn canary_and_header_routing() -> Result<()> {
    let mut env = Env::start("canary", CANARY).await?;
    env.serve("ratings-v1", "v1", Behaviour::Healthy)?;
    env.serve("ratings-v2", "v2", Behaviour::Healthy)?;
    until_answer(&env, "/ratings/1", &[("end-user", "jason")], |a| {
        a.version.as_deref() == Some("v2")
    })
    .await?;
    // Header routing: every request with the header goes to v2.
    let mut sender = env.connect("client").await?;
    for _ in 0..50 {
        let a = get(&mut sender, "/ratings/1", &[("end-user", "jason")]).await?;
        ensure!(
            a.status == 200 && a.version.as_deref() == Some("v2"),
            "jason got {} from {:?}",
            a.status,
            a.version
        );
    }
    // The canary: 2,000 requests over 4 keep-alive connections, 10% expected on v2.
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut senders = Vec::new();
    for _ in 0..4 {
        senders.push(env.connect("client").await?);
    }
    for i in 0..2000 {
        let a = get(&mut senders[i % 4], "/ratings/1", &[]).await?;
        ensure!(a.status == 200, "request {i} got {}", a.status);
        *counts.entry(a.version.unwrap_or_default()).or_default() += 1;
    }
    let v2 = counts.get("v2").copied().unwrap_or(0);
    let v1 = counts.get("v1").copied().unwrap_or(0);
    ensure!(v1 + v2 == 2000, "answers from elsewhere: {counts:?}");
    // Binomial(2000, 0.1): mean 200, standard deviation 13.4; 5 of them either way.
    ensure!(
        (133..=267).contains(&v2),
        "v2 got {v2} of 2000 (expected 200 +- 67): {counts:?}"
    );
    eprintln!("canary split: {counts:?}");
    // The path really went through the waypoint, with the client's identity.
    // (Access lines are written in batches, a moment after the requests.)
    let logged = || {
        waypoint_log(&env.cluster)
            .lines()
            .filter(|l| {
                l.contains("request")
                    && l.contains(r#"src_identity="spiffe://cluster.local/ns/shop/sa/client""#)
            })
            .count()
    };
    wait_for(IO_BOUND, || logged() >= 2000).await;
    let lines = logged();
    ensure!(
        lines >= 2000,
        "the waypoint logged {lines} requests from the client"
    );
    Ok(())
}

const FAULTS: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: ratings, subset: v1}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: ratings, subset: v1}}]
  - route: [{destination: {host: ratings, subset: v1}}]
";

async fn faults() -> Result<()> {
    let mut env = Env::start("faults", FAULTS).await?;
    env.serve("ratings-v1", "v1", Behaviour::Healthy)?;
    env.serve("ratings-v2", "v2", Behaviour::Healthy)?;
    until_answer(&env, "/delay", &[], |a| {
        a.status == 200 && a.elapsed >= Duration::from_millis(300)
    })
    .await?;
    let mut sender = env.connect("client").await?;
    let (mut aborted, mut passed) = (0u32, 0u32);
    for _ in 0..600 {
        match get(&mut sender, "/abort", &[]).await?.status {
            503 => aborted += 1,
            200 => passed += 1,
            other => bail!("/abort answered {other}"),
        }
    }
    // Binomial(600, 0.5): mean 300, standard deviation 12.2; 5 of them either way.
    ensure!(
        (239..=361).contains(&aborted),
        "{aborted} of 600 aborted (expected 300 +- 61)"
    );
    eprintln!("abort: {aborted} aborted, {passed} passed");
    let mut delays = Vec::new();
    for _ in 0..10 {
        let a = get(&mut sender, "/delay", &[]).await?;
        ensure!(a.status == 200, "/delay answered {}", a.status);
        delays.push(a.elapsed);
    }
    let undelayed = get(&mut sender, "/other", &[]).await?.elapsed;
    let min = delays.iter().min().copied().unwrap_or_default();
    let max = delays.iter().max().copied().unwrap_or_default();
    ensure!(
        min >= Duration::from_millis(300),
        "a delayed request took only {min:?}"
    );
    ensure!(
        max < Duration::from_millis(300) + Duration::from_secs(2),
        "a delayed request took {max:?}"
    );
    ensure!(
        undelayed < Duration::from_millis(300),
        "an undelayed request took {undelayed:?}"
    );
    eprintln!("delay: {min:?}..{max:?} delayed, {undelayed:?} not");
    Ok(())
}

const RETRIES: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /no-retries}}]
    route: [{destination: {host: ratings, subset: v1}}]
    retries: {attempts: 0}
  - route: [{destination: {host: ratings, subset: v1}}]
    retries: {attempts: 3, retryOn: 5xx}
";

async fn retries() -> Result<()> {
    let mut env = Env::start("retries", RETRIES).await?;
    // v1 fails every other request.
    env.serve("ratings-v1", "v1", Behaviour::Flaky)?;
    env.serve("ratings-v2", "v2", Behaviour::Healthy)?;
    until_answer(&env, "/retried", &[], |a| a.status == 200).await?;
    let mut sender = env.connect("client").await?;
    for i in 0..100 {
        let a = get(&mut sender, "/retried", &[]).await?;
        ensure!(a.status == 200, "request {i} with retries got {}", a.status);
    }
    let mut failed = 0;
    for _ in 0..100 {
        if get(&mut sender, "/no-retries", &[]).await?.status == 503 {
            failed += 1;
        }
    }
    // Without retries, about every other request fails: the endpoint is really flaky.
    ensure!(
        (30..=70).contains(&failed),
        "{failed} of 100 failed without retries"
    );
    Ok(())
}

/// A second namespace with its own waypoint for workload traffic, and two pods running
/// as different service accounts.
const SA_NAMESPACE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: team-waypoint, namespace: team, labels: {istio.io/waypoint-for: workload}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviewer, namespace: team, labels: {app: reviewer}}
spec: {nodeName: node-1, serviceAccountName: reviewer, containers: []}
status: {podIP: 10.244.1.30}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: team, labels: {app: other}}
spec: {nodeName: node-1, serviceAccountName: other, containers: []}
status: {podIP: 10.244.1.31}
";

const REVIEWER_ACCOUNT: &str = "
apiVersion: v1
kind: ServiceAccount
metadata: {name: reviewer, namespace: team, labels: {istio.io/use-waypoint: team-waypoint}}
";

async fn service_account_opt_in() -> Result<()> {
    let mut env = Env::start("service-account", SA_NAMESPACE).await?;
    let reviewer = env.pod_in("team", "reviewer")?;
    let other = env.pod_in("team", "other")?;
    env.serve_in(reviewer.clone(), "v1", Behaviour::Healthy)?;
    env.serve_in(other.clone(), "v1", Behaviour::Healthy)?;
    let team_log = |env: &Env| log_of(&env.cluster, "team", "team-waypoint-0");
    let ask = |ip: std::net::Ipv4Addr| SocketAddr::from((ip, APP_PORT));
    // Before the ServiceAccount is labelled, neither pod's traffic meets the waypoint.
    let mut to_reviewer = env.connect_to("client", ask(reviewer.ip())).await?;
    ensure!(
        get(&mut to_reviewer, "/before", &[]).await?.status == 200,
        "reviewer unreachable"
    );
    ensure!(
        !team_log(&env).contains("path=/before"),
        "traffic went through the waypoint before the label"
    );
    env.write("account.yaml", REVIEWER_ACCOUNT)?;
    let through = until(PROPAGATION, || async {
        let Ok(mut sender) = env.connect_to("client", ask(reviewer.ip())).await else {
            return Ok(false);
        };
        let answered = matches!(get(&mut sender, "/after", &[]).await, Ok(a) if a.status == 200);
        Ok(answered && team_log(&env).contains("path=/after"))
    })
    .await?;
    ensure!(
        through,
        "the reviewer's traffic never went through the waypoint:\n{}",
        team_log(&env)
    );
    // The other account's pod is still reached directly.
    let mut to_other = env.connect_to("client", ask(other.ip())).await?;
    for _ in 0..5 {
        ensure!(
            get(&mut to_other, "/direct", &[]).await?.status == 200,
            "other unreachable"
        );
    }
    let log = team_log(&env);
    ensure!(
        !log.contains("path=/direct"),
        "the other pod's traffic went through the waypoint:\n{log}"
    );
    let upstream = format!("upstream=\"{}:{APP_PORT}\"", reviewer.ip());
    ensure!(
        log.lines()
            .any(|l| l.contains("path=/after") && l.contains(&upstream)),
        "{log}"
    );
    Ok(())
}

/// An ES256 signing key with its JWKS.
struct Signer {
    pair: ring::signature::EcdsaKeyPair,
    jwks: String,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    fn new() -> Result<Signer> {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating a P-256 key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("loading the P-256 key"))?;
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","x":"{}","y":"{}"}}]}}"#,
            b64(&point[1..33]),
            b64(&point[33..65])
        );
        Ok(Signer { pair, jwks })
    }

    /// A token for `sub` from [`ISSUER`], expiring `expires_in` seconds from now
    /// (negative: already expired).
    fn token(&self, sub: &str, expires_in: i64) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let header = b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
        let claims = format!(
            r#"{{"iss":"{ISSUER}","sub":"{sub}","aud":"ratings","exp":{},"groups":["raters"]}}"#,
            now + expires_in
        );
        let signed = format!("{header}.{}", b64(claims.as_bytes()));
        let signature = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing"))?;
        Ok(format!("{signed}.{}", b64(signature.as_ref())))
    }
}

const ISSUER: &str = "https://issuer.example";

/// Anyone may read `/public/*`; `/ratings/*` only with a token of `alice`, and only GET.
fn jwt_policies(jwks: &str) -> String {
    format!(
        "
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: issuer, namespace: shop}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  jwtRules:
  - issuer: {ISSUER}
    audiences: [ratings]
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ratings-readers, namespace: shop}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  action: ALLOW
  rules:
  - to: [{{operation: {{paths: [/public/*]}}}}]
  - from: [{{source: {{requestPrincipals: [{ISSUER}/alice]}}}}]
    to: [{{operation: {{methods: [GET], paths: [/ratings/*]}}}}]
    when: [{{key: 'request.auth.claims[groups]', values: [raters]}}]
"
    )
}

async fn jwt_and_paths() -> Result<()> {
    let signer = Signer::new()?;
    let mut env = Env::start("jwt", &jwt_policies(&signer.jwks)).await?;
    env.serve("ratings-v1", "v1", Behaviour::Healthy)?;
    env.serve("ratings-v2", "v2", Behaviour::Healthy)?;
    until_answer(&env, "/ratings/1", &[], |a| a.status == 403).await?;
    let alice = format!("Bearer {}", signer.token("alice", 3600)?);
    let bob = format!("Bearer {}", signer.token("bob", 3600)?);
    let expired = format!("Bearer {}", signer.token("alice", -3600)?);
    let mut tampered = signer.token("alice", 3600)?;
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let tampered = format!("Bearer {tampered}");
    let mut sender = env.connect("client").await?;
    let cases: [(&str, &str, Option<&str>, u16); 7] = [
        ("GET", "/public/menu", None, 200),
        ("GET", "/ratings/1", None, 403),
        ("GET", "/ratings/1", Some(&alice), 200),
        ("GET", "/ratings/1", Some(&bob), 403),
        ("GET", "/ratings/1", Some(&expired), 401),
        ("GET", "/ratings/1", Some(&tampered), 401),
        ("POST", "/ratings/1", Some(&alice), 403),
    ];
    for (method, path, token, want) in cases {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "ratings:9080");
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        sender.ready().await?;
        let response =
            tokio::time::timeout(IO_BOUND, sender.send_request(request.body(Empty::new())?))
                .await
                .with_context(|| format!("no answer to {method} {path}"))??;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let who = token.map_or("no token", |t| {
            if t == alice {
                "alice"
            } else if t == bob {
                "bob"
            } else if t == expired {
                "an expired token"
            } else {
                "a tampered token"
            }
        });
        ensure!(
            status == want,
            "{method} {path} with {who}: {status} (expected {want}): {}",
            String::from_utf8_lossy(&body)
        );
        if want == 403 {
            ensure!(
                body.as_ref() == b"RBAC: access denied",
                "403 body {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(())
}

async fn trace_headers() -> Result<()> {
    let mut env = Env::start("trace", CANARY).await?;
    env.serve("ratings-v1", "v1", Behaviour::Healthy)?;
    env.serve("ratings-v2", "v2", Behaviour::Healthy)?;
    until_answer(&env, "/ratings/1", &[], |a| a.status == 200).await?;
    let pod = env.pod("client")?;
    let ask = |headers: Vec<(&'static str, &'static str)>| {
        let pod = pod.clone();
        async move {
            let stream = pod.connect(RATINGS.parse()?).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut request = Request::get("/ratings/1").header("host", "ratings:9080");
            for (k, v) in headers {
                request = request.header(k, v);
            }
            let response = tokio::time::timeout(
                IO_BOUND,
                sender.send_request(request.body(Empty::<Bytes>::new())?),
            )
            .await??;
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(serde_json::from_slice::<serde_json::Value>(&body)?)
        }
    };
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = ask(vec![
        ("traceparent", traceparent),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ])
    .await?;
    ensure!(
        seen["traceparent"] == traceparent,
        "traceparent not forwarded: {seen}"
    );
    ensure!(
        seen["x-b3-traceid"] == "80f198ee56343ba864fe8b2a57d3eff7",
        "b3 not forwarded: {seen}"
    );
    let id = seen["x-request-id"].as_str().unwrap_or_default();
    let uuid = id.len() == 36
        && id.chars().filter(|c| *c == '-').count() == 4
        && id.as_bytes()[14] == b'4';
    ensure!(
        uuid,
        "the waypoint did not add a UUID v4 x-request-id: {id:?}"
    );
    let logged = wait_for(IO_BOUND, || {
        waypoint_log(&env.cluster).contains(&format!("request_id={id}"))
    })
    .await;
    ensure!(logged, "the access line does not carry {id}");
    let seen = ask(vec![("x-request-id", "my-own-id")]).await?;
    ensure!(
        seen["x-request-id"] == "my-own-id",
        "a client's x-request-id was replaced: {seen}"
    );
    Ok(())
}

/// Raw bytes on a new captured connection to ratings; the first line of the answer.
async fn raw_status(pod: &Pod, request: &[u8]) -> Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = pod.connect(RATINGS.parse()?).await?;
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        anyhow::Ok(text.lines().next().unwrap_or_default().to_owned())
    };
    tokio::time::timeout(IO_BOUND, exchange)
        .await
        .context("no answer to a raw request")?
}

async fn malformed_http() -> Result<()> {
    let mut env = Env::start("malformed", CANARY).await?;
    env.serve("ratings-v1", "v1", Behaviour::Healthy)?;
    env.serve("ratings-v2", "v2", Behaviour::Healthy)?;
    until_answer(&env, "/ratings/1", &[], |a| a.status == 200).await?;
    let client = env.pod("client")?;
    // A keep-alive connection that must keep working through all of it.
    let mut healthy = env.connect("client").await?;
    let big = format!(
        "GET /ratings/1 HTTP/1.1\r\nhost: ratings\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("an oversized header block", big.into_bytes(), "HTTP/1.1 431"),
        (
            "Content-Length with Transfer-Encoding",
            b"POST /ratings/1 HTTP/1.1\r\nhost: ratings\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "two different Content-Lengths",
            b"POST /ratings/1 HTTP/1.1\r\nhost: ratings\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "a header name with a space",
            b"GET /ratings/1 HTTP/1.1\r\nhost: ratings\r\nbad header: x\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (what, request, want) in cases {
        let status = raw_status(&client, &request).await?;
        ensure!(
            status.starts_with(want),
            "{what}: answered {status:?}, expected {want}"
        );
        let a = get(&mut healthy, "/ratings/1", &[]).await?;
        ensure!(
            a.status == 200,
            "the healthy connection broke after {what}: {}",
            a.status
        );
    }
    Ok(())
}
