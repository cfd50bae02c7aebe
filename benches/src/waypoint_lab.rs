//! The waypoint benchmark's topology: a two-node local mesh ([`lab::cluster::Cluster`])
//! from manifests written here, with three ways from a client pod on node 0 to the same
//! HTTP server pods on node 1:
//!
//! - `waypoint`: namespace `bench` (ambient). The client calls the Service `routed`
//!   (labelled `istio.io/use-waypoint: waypoint`): client pod -> node 0's ztunnel -> HBONE
//!   -> the waypoint (its pod is on node 0, as the lab places every waypoint) -> HBONE ->
//!   node 1's ztunnel -> server pod. A VirtualService with five rules routes it; the
//!   benchmark's request matches only the last (the default route, subset v1).
//! - `mesh`: the same pods through the Service `direct` (no waypoint): client pod ->
//!   ztunnel -> HBONE -> ztunnel -> server pod, no L7 proxy and no routing.
//! - `nginx`: namespace `legacy` (not enrolled): client pod -> an nginx pod on node 0 ->
//!   server pod, nginx doing the same five rules (`map`, `rewrite`) with upstream
//!   keep-alive. nginx listens for HTTP/1.1 on 8080 and prior-knowledge HTTP/2 (h2c) on
//!   8081: nginx 1.22 cannot serve both on one plaintext port.
//!
//! The HTTP servers are tasks of this process listening inside the server pods
//! ([`crate::http_load::serve`]); the controller, ztunnels, node agents, the waypoint and
//! nginx are separate processes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lab::Pod;
use lab::cluster::{Cluster, ClusterConfig};
use lab::mesh::listening;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::host::{ProcessMemory, process_cpu_seconds, process_memory};
use crate::http_load::{self, Proto, Sender, Target};

/// The enrolled namespace.
pub const MESH_NS: &str = "bench";
/// The namespace outside the mesh, with nginx.
pub const LEGACY_NS: &str = "legacy";
const APP_PORT: u16 = 8080;
const NGINX_H1_PORT: u16 = 8080;
const NGINX_H2_PORT: u16 = 8081;
const DIRECT_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);
const ROUTED_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 51);
const MESH_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
const MESH_V1_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const MESH_V2_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
const NGINX_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 20);
const LEGACY_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 21);
const LEGACY_V1_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const LEGACY_V2_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 21);
/// The waypoint pod the lab starts for the Gateway `waypoint`.
const WAYPOINT_POD: &str = "waypoint-0";
/// Bound on the lab settling: the waypoint starting, routes arriving, nginx listening.
const SETTLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The benchmark's request path: it matches none of the first four rules (no
/// `x-canary` header, not under `/api/v2`, not `/users/N/orders`, no `debug=1`), so both
/// proxies evaluate all five and take the default route to v1. `via` tells the configs'
/// requests apart in the proxies' access logs.
pub fn bench_path(config: ProxyConfig) -> String {
    format!("/bench/item?id=7&via={}", config.name())
}

/// A way from the client to the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyConfig {
    /// client -> ztunnel -> waypoint -> ztunnel -> server, five-rule VirtualService.
    Waypoint,
    /// client -> ztunnel -> ztunnel -> server (a Service without a waypoint).
    Mesh,
    /// client -> nginx -> server, outside the mesh, the same five rules.
    Nginx,
}

impl ProxyConfig {
    pub const ALL: [ProxyConfig; 3] =
        [ProxyConfig::Waypoint, ProxyConfig::Mesh, ProxyConfig::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            ProxyConfig::Waypoint => "waypoint",
            ProxyConfig::Mesh => "mesh-no-waypoint",
            ProxyConfig::Nginx => "nginx",
        }
    }

    /// Whether the config has an L7 proxy process whose CPU time is measured.
    pub fn has_proxy(self) -> bool {
        !matches!(self, ProxyConfig::Mesh)
    }
}

/// The manifests: both namespaces, the servers, the two Services over the same pods, the
/// waypoint, the VirtualService and DestinationRule, and the nginx pod running `nginx`
/// (an absolute path) with `conf`.
pub fn manifests(nginx: &Path, conf: &Path) -> String {
    let pod = |ns: &str, name: &str, node: usize, ip: Ipv4Addr, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: \
             {{{labels}}}}}\nspec: {{nodeName: node-{node}, serviceAccountName: {name}, \
             containers: []}}\nstatus: {{podIP: {ip}}}\n---\n"
        )
    };
    let mut yaml = format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: {MESH_NS}, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {LEGACY_NS}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: {MESH_NS}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: direct, namespace: {MESH_NS}}}
spec:
  clusterIP: {DIRECT_VIP}
  selector: {{app: server}}
  ports: [{{name: http, port: {APP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: routed, namespace: {MESH_NS}, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  clusterIP: {ROUTED_VIP}
  selector: {{app: server}}
  ports: [{{name: http, port: {APP_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: routed, namespace: {MESH_NS}}}
spec:
  host: routed
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: routed, namespace: {MESH_NS}}}
spec:
  hosts: [routed]
  http:
  - name: canary-header
    match: [{{headers: {{x-canary: {{exact: 'true'}}}}}}]
    route: [{{destination: {{host: routed, subset: v2}}}}]
  - name: api-v2
    match: [{{uri: {{prefix: /api/v2}}}}]
    rewrite: {{uri: /api}}
    route: [{{destination: {{host: routed, subset: v2}}}}]
  - name: user-orders
    match: [{{uri: {{regex: '/users/[0-9]+/orders'}}}}]
    route: [{{destination: {{host: routed, subset: v2}}}}]
  - name: debug-query
    match: [{{queryParams: {{debug: {{exact: '1'}}}}}}]
    route: [{{destination: {{host: routed, subset: v2}}}}]
  - name: default
    route: [{{destination: {{host: routed, subset: v1}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nginx, namespace: {LEGACY_NS}, labels: {{app: nginx}}}}
spec:
  nodeName: node-0
  serviceAccountName: nginx
  containers:
  - name: nginx
    command: [{nginx:?}, -c, {conf:?}, -g, 'daemon off;']
status: {{podIP: {NGINX_IP}}}
---
"
    );
    yaml += &pod(MESH_NS, "client", 0, MESH_CLIENT_IP, "app: client");
    yaml += &pod(
        MESH_NS,
        "server-v1",
        1,
        MESH_V1_IP,
        "app: server, version: v1",
    );
    yaml += &pod(
        MESH_NS,
        "server-v2",
        1,
        MESH_V2_IP,
        "app: server, version: v2",
    );
    yaml += &pod(LEGACY_NS, "client", 0, LEGACY_CLIENT_IP, "app: client");
    yaml += &pod(
        LEGACY_NS,
        "server-v1",
        1,
        LEGACY_V1_IP,
        "app: server, version: v1",
    );
    yaml += &pod(
        LEGACY_NS,
        "server-v2",
        1,
        LEGACY_V2_IP,
        "app: server, version: v2",
    );
    yaml
}

/// nginx as one process (`master_process off`, so the pid the lab started is the one
/// doing the work), with the VirtualService's five rules in the same order: a `map` over
/// `header|path|debug-arg` whose regexes are tried in order, first match wins, like the
/// VirtualService's rules; `/api/v2` is rewritten to `/api` as the VirtualService's
/// `rewrite` does. Upstream connections are kept alive (HTTP/1.1, the only upstream
/// protocol nginx has); downstream keep-alive is unlimited, as the waypoint's is.
pub fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# Written by the waypoint benchmark: the VirtualService `routed` as nginx config.
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;

    upstream v1 {{ server {LEGACY_V1_IP}:{APP_PORT}; keepalive 64; keepalive_requests 100000000; }}
    upstream v2 {{ server {LEGACY_V2_IP}:{APP_PORT}; keepalive 64; keepalive_requests 100000000; }}

    # The VirtualService's rules, first match wins (map regexes are tried in order):
    # 1. header x-canary: true -> v2; 2. prefix /api/v2 -> v2, rewritten to /api;
    # 3. path regex /users/[0-9]+/orders -> v2; 4. query debug=1 -> v2; 5. v1.
    map \"$http_x_canary|$uri|$arg_debug\" $route {{
        \"~^true\\|\"                        canary;
        \"~^[^|]*\\|/api/v2\"                 api;
        \"~^[^|]*\\|/users/[0-9]+/orders\\|\" users;
        \"~\\|1$\"                            debug;
        default                            main;
    }}
    map $route $pool {{
        main     v1;
        canary   v2;
        api      v2;
        users    v2;
        debug    v2;
        default  v1;
    }}

    server {{
        listen {NGINX_H1_PORT};
        listen {NGINX_H2_PORT} http2;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host $host;
        location / {{
            if ($route = api) {{
                rewrite ^/api/v2(.*)$ /api$1 break;
                proxy_pass http://v2;
            }}
            proxy_pass http://$pool;
        }}
    }}
}}
"
    )
}

/// `nginx` on `PATH` or in `/usr/sbin`, with a clear error when it is not installed.
pub fn find_nginx() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .context(
            "nginx is not installed; the waypoint benchmark compares against it \
             (Debian: `apt-get install -y nginx-light`)",
        )
}

/// One way from a client pod to the servers.
#[derive(Debug, Clone)]
pub struct Path3 {
    pub config: ProxyConfig,
    pub client: Pod,
    /// Where HTTP/1.1 and HTTP/2 connections go.
    pub h1: SocketAddr,
    pub h2: SocketAddr,
    pub target: Target,
}

impl Path3 {
    pub fn addr(&self, proto: Proto) -> SocketAddr {
        match proto {
            Proto::Http1 => self.h1,
            Proto::Http2 => self.h2,
        }
    }

    /// A keep-alive connection speaking `proto`, from inside the client pod.
    pub async fn connect(&self, proto: Proto) -> Result<Sender> {
        let addr = self.addr(proto);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, self.client.connect(addr))
            .await
            .with_context(|| format!("{}: connecting to {addr} timed out", self.config.name()))?
            .with_context(|| format!("{}: connecting to {addr}", self.config.name()))?;
        tcp.set_nodelay(true)?;
        Sender::handshake(proto, tcp)
            .await
            .with_context(|| format!("{}: {} handshake", self.config.name(), proto.name()))
    }
}

/// CPU seconds used so far by the processes a config's requests go through.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    pub waypoint: f64,
    pub nginx: f64,
    /// Both ztunnels together.
    pub ztunnels: f64,
}

impl std::ops::Sub for CpuSample {
    type Output = CpuSample;
    fn sub(self, rhs: CpuSample) -> CpuSample {
        CpuSample {
            waypoint: self.waypoint - rhs.waypoint,
            nginx: self.nginx - rhs.nginx,
            ztunnels: self.ztunnels - rhs.ztunnels,
        }
    }
}

/// The pids whose CPU time is read.
#[derive(Debug, Clone, Copy)]
pub struct Pids {
    pub waypoint: u32,
    pub nginx: u32,
    pub ztunnels: [u32; 2],
}

impl Pids {
    /// Reads every process's CPU time; a process that went away reads as NaN, which
    /// the caller reports as an error.
    pub fn sample(&self) -> CpuSample {
        let cpu = |pid| process_cpu_seconds(pid).unwrap_or(f64::NAN);
        CpuSample {
            waypoint: cpu(self.waypoint),
            nginx: cpu(self.nginx),
            ztunnels: self.ztunnels.iter().map(|&p| cpu(p)).sum(),
        }
    }
}

/// The running lab.
#[derive(Debug)]
pub struct WaypointLab {
    cluster: Option<Cluster>,
    pub paths: Vec<Path3>,
    pub pids: Pids,
    servers: Vec<JoinHandle<()>>,
    dir: PathBuf,
    /// Lines the waypoint had logged when the lab was ready.
    waypoint_log_mark: usize,
}

impl WaypointLab {
    /// Writes the manifests and nginx config under `dir`, starts the cluster, the servers
    /// and nginx, waits for the routes, then proves every path.
    pub async fn start(dir: &Path, nginx: &Path) -> Result<WaypointLab> {
        let _ = std::fs::remove_dir_all(dir);
        let manifest_dir = dir.join("manifests");
        let nginx_dir = dir.join("nginx");
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(nginx_dir.join("tmp").join(sub))?;
        }
        std::fs::create_dir_all(&manifest_dir)?;
        let conf = nginx_dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&nginx_dir))?;
        check_nginx_conf(nginx, &conf)?;
        std::fs::write(manifest_dir.join("bench.yaml"), manifests(nginx, &conf))?;

        let cluster = Cluster::start(ClusterConfig::new(&manifest_dir, dir.join("work")))
            .await
            .context("starting the local mesh")?;
        ensure!(
            cluster.problems().is_empty(),
            "the lab reports problems: {:?}",
            cluster.problems()
        );
        let mut servers = Vec::new();
        for ns in [MESH_NS, LEGACY_NS] {
            for (pod, version) in [("server-v1", "v1"), ("server-v2", "v2")] {
                let pod = pod_of(&cluster, ns, pod)?;
                let listener = pod
                    .listen(APP_PORT)
                    .with_context(|| format!("listening in {}", pod.name()))?;
                servers.push(http_load::serve(listener, version));
            }
        }
        let mut lab = WaypointLab {
            paths: Vec::new(),
            pids: Pids {
                waypoint: 0,
                nginx: 0,
                ztunnels: [0; 2],
            },
            servers,
            dir: dir.to_owned(),
            waypoint_log_mark: 0,
            cluster: Some(cluster),
        };
        lab.wait_ready().await?;
        let cluster = lab.cluster();
        let mesh_client = pod_of(cluster, MESH_NS, "client")?;
        let legacy_client = pod_of(cluster, LEGACY_NS, "client")?;
        let authority = |name: &str| format!("{name}.{MESH_NS}.svc.cluster.local:{APP_PORT}");
        lab.paths = vec![
            Path3 {
                config: ProxyConfig::Waypoint,
                client: mesh_client.clone(),
                h1: (ROUTED_VIP, APP_PORT).into(),
                h2: (ROUTED_VIP, APP_PORT).into(),
                target: Target::new(authority("routed")),
            },
            Path3 {
                config: ProxyConfig::Mesh,
                client: mesh_client,
                h1: (DIRECT_VIP, APP_PORT).into(),
                h2: (DIRECT_VIP, APP_PORT).into(),
                target: Target::new(authority("direct")),
            },
            Path3 {
                config: ProxyConfig::Nginx,
                client: legacy_client,
                h1: (NGINX_IP, NGINX_H1_PORT).into(),
                h2: (NGINX_IP, NGINX_H2_PORT).into(),
                target: Target::new(format!("routed:{NGINX_H1_PORT}")),
            },
        ];
        lab.pids = Pids {
            waypoint: lab.single_pid(MESH_NS, WAYPOINT_POD)?,
            nginx: lab.single_pid(LEGACY_NS, "nginx")?,
            ztunnels: [0, 1].map(|n| lab.cluster().ztunnel_pid(n).unwrap_or(0)),
        };
        ensure!(
            lab.pids.ztunnels.iter().all(|&p| p != 0),
            "a node has no ztunnel"
        );
        lab.verify().await?;
        lab.waypoint_log_mark = lab.waypoint_log().lines().count();
        Ok(lab)
    }

    fn cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .expect("the cluster runs until shutdown")
    }

    fn single_pid(&self, ns: &str, pod: &str) -> Result<u32> {
        match self.cluster().container_pids(ns, pod).as_slice() {
            [pid] => Ok(*pid),
            other => bail!("pod {ns}/{pod} runs {} containers, expected 1", other.len()),
        }
    }

    /// The waypoint is up, the routes have arrived (a canary request gets v2 through
    /// it) and nginx listens.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        while !self.waypoint_log().contains("waypoint started") {
            ensure!(
                Instant::now() < deadline,
                "the waypoint did not start within {SETTLE:?}; problems {:?}; log:\n{}",
                self.cluster().problems(),
                self.waypoint_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let nginx_pod = pod_of(self.cluster(), LEGACY_NS, "nginx")?;
        while !(listening(&nginx_pod, NGINX_H1_PORT)? && listening(&nginx_pod, NGINX_H2_PORT)?) {
            ensure!(
                Instant::now() < deadline,
                "nginx does not listen after {SETTLE:?}; its log:\n{}",
                self.container_log(LEGACY_NS, "nginx", "nginx")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = pod_of(self.cluster(), MESH_NS, "client")?;
        let target = Target::new(format!("routed.{MESH_NS}.svc.cluster.local:{APP_PORT}"))
            .header("x-canary", "true");
        loop {
            let answered = async {
                let tcp = client.connect((ROUTED_VIP, APP_PORT).into()).await?;
                let mut sender = Sender::handshake(Proto::Http1, tcp).await?;
                sender.get(&target, "/ready").await
            };
            if let Ok(Ok((200, body))) = tokio::time::timeout(CONNECT_TIMEOUT, answered).await
                && body.starts_with(b"v2 ")
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the VirtualService was not in force in the waypoint after {SETTLE:?}; \
                 waypoint log:\n{}",
                self.waypoint_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Proves each path before anything is timed: the routing rules answer as the
    /// VirtualService says through the waypoint and through nginx (over both protocols),
    /// the waypoint logged the waypoint path's requests and none of the mesh path's, and
    /// the mesh path went over HBONE between the ztunnels.
    async fn verify(&self) -> Result<()> {
        // (path, header, expected body): the first four rules, then the default.
        type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str);
        let cases: [Case<'_>; 6] = [
            ("/verify/a", Some(("x-canary", "true")), "v2 /verify/a"),
            ("/api/v2/items?x=1", None, "v2 /api/items?x=1"),
            ("/users/42/orders", None, "v2 /users/42/orders"),
            ("/verify/b?debug=1", None, "v2 /verify/b?debug=1"),
            ("/users/x/orders", None, "v1 /users/x/orders"),
            ("/verify/default", None, "v1 /verify/default"),
        ];
        for path in &self.paths {
            for proto in Proto::ALL {
                let mut sender = path.connect(proto).await?;
                if path.config == ProxyConfig::Mesh {
                    // No L7 routing: either version answers, untouched.
                    let (status, body) = sender.get(&path.target, "/verify/mesh").await?;
                    ensure!(
                        status == 200 && body.ends_with(b" /verify/mesh"),
                        "mesh path: {status} {:?}",
                        String::from_utf8_lossy(&body)
                    );
                    continue;
                }
                for (req, header, want) in cases {
                    let mut target = path.target.clone();
                    if let Some((name, value)) = header {
                        target = target.header(name, value);
                    }
                    let (status, body) = sender.get(&target, req).await?;
                    ensure!(
                        status == 200 && body.as_ref() == want.as_bytes(),
                        "{} over {}: GET {req} {header:?} answered {status} {:?}, expected {want:?}",
                        path.config.name(),
                        proto.name(),
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        }
        let through = || {
            self.waypoint_log()
                .lines()
                .filter(|l| l.contains("path=/verify/default"))
                .count()
        };
        // Access lines are written in batches, a moment after the requests.
        lab::eventually::wait_for(SETTLE, || through() >= 2).await;
        let (through, log) = (through(), self.waypoint_log());
        ensure!(
            through >= 2,
            "the waypoint logged {through} of the 2 /verify/default requests:\n{log}"
        );
        ensure!(
            !log.contains("/verify/mesh"),
            "the mesh path's requests went through the waypoint"
        );
        let direct = format!("dst.service=direct.{MESH_NS}.svc.cluster.local");
        lab::assert_eventually!(
            self.cluster()
                .ztunnel_log(0)
                .lines()
                .any(|l| l.contains(&direct) && l.contains("protocol=\"HBONE\"")),
            timeout = SETTLE,
            "node 0's ztunnel did not log the mesh path's connection over HBONE"
        );
        ensure!(
            !listening(&self.path(ProxyConfig::Nginx).client, 15001)?,
            "the legacy client is captured by a ztunnel"
        );
        ensure!(
            self.nginx_requests()? > 0,
            "nginx logged none of the verification requests"
        );
        Ok(())
    }

    pub fn path(&self, config: ProxyConfig) -> &Path3 {
        self.paths
            .iter()
            .find(|p| p.config == config)
            .expect("every configuration has a path")
    }

    fn container_log(&self, ns: &str, pod: &str, container: &str) -> String {
        let file = self
            .cluster()
            .config()
            .work_dir
            .join("pods")
            .join(format!("{ns}.{pod}"))
            .join(format!("{container}.log"));
        std::fs::read_to_string(file).unwrap_or_default()
    }

    pub fn waypoint_log(&self) -> String {
        self.container_log(MESH_NS, WAYPOINT_POD, "istio-proxy")
    }

    /// Access-log lines the waypoint wrote for `config`'s benchmark requests.
    pub fn waypoint_requests(&self, config: ProxyConfig) -> usize {
        let marker = format!("via={}", config.name());
        self.waypoint_log()
            .lines()
            .filter(|l| l.contains(&marker))
            .count()
    }

    /// Lines in nginx's access log.
    pub fn nginx_requests(&self) -> Result<usize> {
        let file = self.dir.join("nginx").join("access.log");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(text.lines().count())
    }

    /// Warnings and errors the waypoint logged since the lab was ready.
    pub fn waypoint_complaints(&self) -> Vec<String> {
        self.waypoint_log()
            .lines()
            .skip(self.waypoint_log_mark)
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    pub fn waypoint_memory(&self) -> Result<ProcessMemory> {
        process_memory(self.pids.waypoint).context("the waypoint's memory")
    }

    pub fn nginx_memory(&self) -> Result<ProcessMemory> {
        process_memory(self.pids.nginx).context("nginx's memory")
    }

    /// Stops the servers and the cluster.
    pub async fn shutdown(mut self) {
        for server in &self.servers {
            server.abort();
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await;
        }
        if std::env::var_os("LAB_MESH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for WaypointLab {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

fn pod_of(cluster: &Cluster, ns: &str, name: &str) -> Result<Pod> {
    cluster
        .pod(ns, name)
        .cloned()
        .with_context(|| format!("no pod {ns}/{name}"))
}

/// `nginx -t`: a config nginx rejects fails here, with nginx's words.
fn check_nginx_conf(nginx: &Path, conf: &Path) -> Result<()> {
    let out = std::process::Command::new(nginx)
        .arg("-t")
        .arg("-c")
        .arg(conf)
        .arg("-g")
        .arg("daemon off;")
        .output()
        .with_context(|| format!("running {} -t", nginx.display()))?;
    ensure!(
        out.status.success(),
        "nginx rejects {}:\n{}",
        conf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_parse_and_have_the_five_rules() {
        let yaml = manifests(Path::new("/usr/sbin/nginx"), Path::new("/tmp/x/nginx.conf"));
        let docs: Vec<serde_json::Value> = yaml
            .split("\n---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        let vs = docs.iter().find(|d| d["kind"] == "VirtualService").unwrap();
        let rules = vs["spec"]["http"].as_array().unwrap();
        assert_eq!(rules.len(), 5);
        assert!(
            rules[4].get("match").is_none(),
            "the last rule is the default"
        );
        let nginx = docs
            .iter()
            .find(|d| d["kind"] == "Pod" && d["metadata"]["name"] == "nginx")
            .unwrap();
        assert_eq!(
            nginx["spec"]["containers"][0]["command"],
            serde_json::json!([
                "/usr/sbin/nginx",
                "-c",
                "/tmp/x/nginx.conf",
                "-g",
                "daemon off;"
            ])
        );
        assert_eq!(docs.iter().filter(|d| d["kind"] == "Pod").count(), 7);
    }
}
