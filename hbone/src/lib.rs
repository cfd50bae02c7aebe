//! HBONE: HTTP/2 `CONNECT` tunnels inside mutual TLS, with SPIFFE workload identities.
//!
//! The pieces, bottom up: [`Identity`] and the header codecs ([`Authority`], [`Baggage`],
//! [`Forwarded`], [`TraceParent`]); [`tls`] (the mTLS facade over rustls or BoringSSL);
//! [`client`] and [`server`] (CONNECT over HTTP/2); [`pool`] (shared client connections);
//! [`copy`] (the bidirectional byte pump every proxy uses).

pub mod authority;
pub mod baggage;
pub mod client;
pub mod copy;
pub mod drain;
pub mod forwarded;
pub mod identity;
pub mod pool;
pub mod server;
mod settings;
mod stream;
pub mod tls;
pub mod traceparent;

pub use authority::{Authority, AuthorityError};
pub use baggage::{Baggage, BaggageError};
pub use client::{ConnectError, ConnectRequest, Connection};
pub use copy::{CopyError, Progress, Transferred, copy_bidirectional, copy_tunnel, copy_until};
pub use forwarded::{Forwarded, ForwardedError, ForwardedFor};
pub use identity::{DEFAULT_TRUST_DOMAIN, Identity, IdentityError};
pub use pool::{Dialer, Pool, PoolConfig, PoolKey, PoolStats, TlsDialer};
pub use server::{
    ConnectHandler, Decision, HandshakeLimit, InboundConnect, IncomingConnect, Server,
    ServerConfig, StreamHandler, TunnelServer, UpstreamConnector,
};
pub use settings::{H2Settings, KeepaliveFailure};
pub use stream::H2Stream;
pub use traceparent::{TraceParent, TraceParentError};

#[cfg(feature = "testing")]
pub mod testing;
