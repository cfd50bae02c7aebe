//! Unit-test helpers: a scripted fake ztunnel and a log capture.

use std::path::Path;
use std::time::Duration;

use api::prost::Message;
use api::zds::{Version, ZdsHello};
use inpod::SeqPacket;
use inpod::zds::{Request, ZdsConnection, ZdsError};

use crate::zds_server::{self, ZdsHub, ZdsServerConfig};

/// Bound on every wait in tests: a hang fails instead of blocking CI.
pub const BOUND: Duration = Duration::from_secs(5);

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {BOUND:?}"))
}

/// ztunnel's side of ZDS, driven step by step by a test.
#[derive(Debug)]
pub struct FakeZtunnel {
    pub conn: ZdsConnection,
}

impl FakeZtunnel {
    /// Connects to a listening server (sends hello).
    pub async fn connect(path: &Path) -> Self {
        let conn = bounded("connect", ZdsConnection::connect(path))
            .await
            .expect("connect to the ZDS socket");
        Self { conn }
    }

    /// A socket pair whose other end is served by `serve`, hello already sent.
    pub async fn served(hub: &ZdsHub, config: ZdsServerConfig) -> Self {
        let (ours, theirs) = SeqPacket::pair().unwrap();
        tokio::spawn(zds_server::serve(
            ZdsConnection::new(theirs),
            hub.clone(),
            config,
        ));
        let hello = ZdsHello {
            version: Version::V1 as i32,
        };
        ours.send(&hello.encode_to_vec(), &[]).await.unwrap();
        Self {
            conn: ZdsConnection::new(ours),
        }
    }

    pub async fn recv(&mut self) -> Request {
        bounded("ZDS request", self.conn.recv_request())
            .await
            .expect("a valid ZDS request")
    }

    /// The connection's end, as ztunnel would see it.
    pub async fn closed(&mut self) -> ZdsError {
        match bounded("ZDS close", self.conn.recv_request()).await {
            Err(e) if e.is_fatal() => e,
            other => panic!("expected the agent to close the connection, got {other:?}"),
        }
    }

    pub async fn ack(&self) {
        self.conn.send_ack(None).await.unwrap();
    }

    pub async fn nack(&self, reason: &str) {
        self.conn.send_ack(Some(reason)).await.unwrap();
    }

    /// Expects an add, acks it, returns its uid.
    pub async fn added(&mut self) -> String {
        match self.recv().await {
            Request::Add { uid, .. } => {
                self.ack().await;
                uid
            }
            other => panic!("expected add, got {other:?}"),
        }
    }

    /// Expects a del, acks it, returns its uid.
    pub async fn deleted(&mut self) -> String {
        match self.recv().await {
            Request::Del { uid } => {
                self.ack().await;
                uid
            }
            other => panic!("expected del, got {other:?}"),
        }
    }

    /// Acks a whole snapshot; returns the uids added, in order.
    pub async fn snapshot(&mut self) -> Vec<String> {
        let mut uids = Vec::new();
        loop {
            match self.recv().await {
                Request::Add { uid, .. } => uids.push(uid),
                Request::SnapshotSent => {
                    self.ack().await;
                    return uids;
                }
                other => panic!("expected add or snapshot_sent, got {other:?}"),
            }
            self.ack().await;
        }
    }
}

/// Captures this thread's log output (tests run on a current-thread runtime, so the
/// tasks they spawn log here too).
pub struct LogCapture {
    buf: runtime::testing::CapturedLog,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    pub fn start() -> Self {
        runtime::scoped_logs_see_every_callsite();
        let buf = runtime::testing::CapturedLog::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        Self {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn contents(&self) -> String {
        self.buf.text()
    }
}
