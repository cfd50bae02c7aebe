//! HTTP/2 settings shared by HBONE clients and servers, in the range upstream uses.

use std::time::Duration;

/// HTTP/2 and keepalive tuning for one side of a tunnel connection.
#[derive(Debug, Clone)]
pub struct H2Settings {
    /// Per-stream receive window.
    pub stream_window: u32,
    /// Connection-wide receive window.
    pub connection_window: u32,
    /// Largest DATA frame we accept.
    pub max_frame_size: u32,
    /// Most data queued for sending per stream before the writer waits.
    pub max_send_buffer: usize,
    /// Largest header block we accept (baggage alone may be 8 KiB).
    pub max_header_list_size: u32,
    /// Interval between PING frames on an otherwise healthy connection.
    pub keepalive_interval: Duration,
    /// A connection whose PING is unanswered for this long is dead.
    pub keepalive_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            max_send_buffer: 1024 * 1024,
            max_header_list_size: 64 * 1024,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl H2Settings {
    pub(crate) fn client_builder(&self) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_header_list_size(self.max_header_list_size)
            .enable_push(false);
        b
    }

    pub(crate) fn server_builder(&self, max_concurrent_streams: u32) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_header_list_size(self.max_header_list_size)
            .max_concurrent_streams(max_concurrent_streams);
        b
    }
}

/// Sends PINGs forever; returns when one goes unanswered or the connection fails.
pub(crate) async fn keepalive(
    mut ping_pong: h2::PingPong,
    interval: Duration,
    timeout: Duration,
) -> KeepaliveFailure {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return KeepaliveFailure::Error(e),
            Err(_) => return KeepaliveFailure::Timeout(timeout),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeepaliveFailure {
    #[error("PING unanswered for {0:?}")]
    Timeout(Duration),
    #[error("PING failed: {0}")]
    Error(h2::Error),
}
