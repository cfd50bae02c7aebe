//! The four paths under test, each `load client -> [hop A] -> [hop B] -> load server`, all
//! in this process on 127.0.0.1. Every socket gets TCP_NODELAY.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use hbone::server::DirectConnector;
use hbone::testing::TestCa;
use hbone::tls::{ClientTls, ServerTls};
use hbone::{
    ConnectHandler, ConnectRequest, Decision, Identity, InboundConnect, Pool, PoolConfig, PoolKey,
    PoolStats, Server, ServerConfig, TlsDialer, copy_bidirectional, copy_tunnel,
};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::load;

/// One configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    /// The load client connects straight to the load server.
    Direct,
    /// Two plain TCP relays.
    TcpRelay,
    /// Relay A opens a new mTLS connection to relay B per client connection.
    TlsRelay,
    /// A client tunnel on a pooled HBONE connection to an `hbone::Server`.
    Hbone,
}

impl Config {
    pub const ALL: [Config; 4] = [
        Config::Direct,
        Config::TcpRelay,
        Config::TlsRelay,
        Config::Hbone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::Direct => "direct",
            Config::TcpRelay => "tcp-relay",
            Config::TlsRelay => "tls-relay",
            Config::Hbone => "hbone",
        }
    }
}

/// Workload certificates shared by the TLS relay and HBONE: hop A is the client side,
/// hop B the server side, both minted by one in-memory CA.
#[derive(Debug, Clone)]
pub struct Certs {
    pub hop_a: ClientTls,
    pub hop_b: ServerTls,
    pub hop_b_identity: Identity,
}

impl Certs {
    pub fn new() -> Result<Certs> {
        let ca = TestCa::new();
        let a = Identity::new("cluster.local", "bench", "hop-a")?;
        let b = Identity::new("cluster.local", "bench", "hop-b")?;
        Ok(Certs {
            hop_a: ClientTls::new(ca.issue(&a))?,
            hop_b: ServerTls::new(ca.issue(&b))?,
            hop_b_identity: b,
        })
    }
}

/// Relay failures seen while a topology ran; a healthy run has none.
#[derive(Debug, Default)]
pub struct HopErrors(AtomicU64);

impl HopErrors {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, hop: &str, e: impl std::fmt::Display) {
        // Bounded noise: only the first few failures are printed, all are counted.
        if self.0.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("bench: {hop} failed: {e}");
        }
    }
}

/// A running configuration: its load server, its hops, and where the load client dials.
#[derive(Debug)]
pub struct Topology {
    pub config: Config,
    /// The first hop (or the load server itself for `direct`).
    pub entry: SocketAddr,
    pub errors: Arc<HopErrors>,
    pool: Option<Pool>,
    tasks: Vec<JoinHandle<()>>,
    _shutdown: Option<watch::Sender<bool>>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Topology {
    /// Starts a fresh load server and the hops of `config` in front of it.
    pub async fn start(config: Config, certs: &Certs) -> Result<Topology> {
        let errors = Arc::new(HopErrors::default());
        let (server, server_task) = load::start_server(errors.clone()).await?;
        let mut topo = Topology {
            config,
            entry: server,
            errors: errors.clone(),
            pool: None,
            tasks: vec![server_task],
            _shutdown: None,
        };
        match config {
            Config::Direct => {}
            Config::TcpRelay => {
                let b = topo.relay("tcp relay B", server, |tcp, target| async move {
                    let mut up = dial(target).await?;
                    let mut down = tcp;
                    copy_bidirectional(&mut down, &mut up).await?;
                    Ok(())
                });
                let b = b.await?;
                topo.entry = topo
                    .relay("tcp relay A", b, |tcp, target| async move {
                        let mut up = dial(target).await?;
                        let mut down = tcp;
                        copy_bidirectional(&mut down, &mut up).await?;
                        Ok(())
                    })
                    .await?;
            }
            Config::TlsRelay => {
                let tls_b = certs.hop_b.clone();
                let b = topo.relay("tls relay B", server, move |tcp, target| {
                    let tls_b = tls_b.clone();
                    async move {
                        let (mut down, _peer) = tls_b.accept(tcp).await?;
                        let mut up = dial(target).await?;
                        copy_bidirectional(&mut down, &mut up).await?;
                        Ok(())
                    }
                });
                let b = b.await?;
                let (tls_a, expected) = (certs.hop_a.clone(), certs.hop_b_identity.clone());
                topo.entry = topo
                    .relay("tls relay A", b, move |mut down, target| {
                        let (tls_a, expected) = (tls_a.clone(), expected.clone());
                        async move {
                            let tcp = dial(target).await?;
                            let mut up = tls_a.connect(tcp, &[expected]).await?;
                            copy_bidirectional(&mut down, &mut up).await?;
                            Ok(())
                        }
                    })
                    .await?;
            }
            Config::Hbone => {
                let b = topo.hbone_server(certs, server).await?;
                topo.entry = topo.hbone_client(certs, b, server).await?;
            }
        }
        Ok(topo)
    }

    /// The HBONE pool's counters (`None` for the other configurations).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.pool.as_ref().map(Pool::stats)
    }

    /// Listens on loopback and runs `pump(accepted, target)` for every connection.
    async fn relay<F, Fut>(
        &mut self,
        hop: &'static str,
        target: SocketAddr,
        pump: F,
    ) -> Result<SocketAddr>
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let listener = listen().await?;
        let addr = listener.local_addr()?;
        let errors = self.errors.clone();
        let pump = Arc::new(pump);
        self.tasks.push(tokio::spawn(async move {
            loop {
                let tcp = match accept(&listener).await {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        errors.record(hop, format!("accept: {e}"));
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (pump, errors) = (pump.clone(), errors.clone());
                tokio::spawn(async move {
                    if let Err(e) = pump(tcp, target).await {
                        errors.record(hop, format!("{e:#}"));
                    }
                });
            }
        }));
        Ok(addr)
    }

    /// Hop B of `hbone`: an `hbone::Server` that sends every CONNECT to the load server.
    async fn hbone_server(&mut self, certs: &Certs, server: SocketAddr) -> Result<SocketAddr> {
        let listener = listen().await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let hbone = Server::new(
            ServerConfig::new(certs.hop_b.clone()),
            ToLoadServer(server),
            DirectConnector,
        );
        self.tasks
            .push(tokio::spawn(hbone.serve(listener, stopped)));
        self._shutdown = Some(stop);
        Ok(addr)
    }

    /// Hop A of `hbone`: accepts plain TCP and opens one CONNECT stream per connection on
    /// the pooled mTLS connection to hop B.
    async fn hbone_client(
        &mut self,
        certs: &Certs,
        hop_b: SocketAddr,
        server: SocketAddr,
    ) -> Result<SocketAddr> {
        let pool = Pool::new(
            PoolConfig::default(),
            Arc::new(TlsDialer::new(certs.hop_a.clone())),
        );
        self.pool = Some(pool.clone());
        let key = PoolKey::new(
            certs.hop_a.identity().clone(),
            vec![certs.hop_b_identity.clone()],
            hop_b,
            None,
        );
        let request = ConnectRequest::new(server);
        self.relay("hbone client tunnel", hop_b, move |mut down, _| {
            let (pool, key, request) = (pool.clone(), key.clone(), request.clone());
            async move {
                let mut up = pool.connect(&key, &request).await?;
                copy_tunnel(&mut down, &mut up).await?;
                Ok(())
            }
        })
        .await
    }
}

/// Every CONNECT goes to the load server.
#[derive(Debug, Clone, Copy)]
struct ToLoadServer(SocketAddr);

impl ConnectHandler for ToLoadServer {
    async fn decide(&self, _request: &InboundConnect) -> Decision {
        Decision::Connect(self.0)
    }
}

/// A loopback listener on an ephemeral port.
pub async fn listen() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind 127.0.0.1:0")
}

/// Accepts one connection with TCP_NODELAY set.
pub async fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
    let (tcp, _) = listener.accept().await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Connects to a loopback address with TCP_NODELAY set.
pub async fn dial(addr: SocketAddr) -> Result<TcpStream> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing to dial non-loopback {addr}"
    );
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}
