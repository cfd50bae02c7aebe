//! ZDS framing: one protobuf message per packet, the pod netns attached to `add`.
//!
//! The node agent is the server; ztunnel connects, says [`ZdsHello`], then answers every
//! request with an ack (empty error) or a NACK (the reason). See `../shared/DESIGN.md`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use api::prost::Message;
use api::zds::{
    Ack, AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, Version, WorkloadInfo,
    WorkloadRequest, WorkloadResponse, ZdsHello, workload_request::Payload as ReqPayload,
    workload_response::Payload as RespPayload,
};

use crate::{Netns, SeqPacket, SeqPacketListener};

/// Default path of the node agent's socket, as upstream's.
pub const DEFAULT_SOCKET: &str = "/var/run/ztunnel/ztunnel.sock";

/// Largest packet accepted. ZDS messages are a few hundred bytes.
const MAX_PACKET: usize = 64 * 1024;

/// What can go wrong on a ZDS connection.
#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    #[error("ZDS socket I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("the ZDS peer closed the connection")]
    Closed,
    #[error("ZDS packet larger than {MAX_PACKET} bytes or with too many descriptors")]
    Truncated,
    #[error("undecodable ZDS {what}: {source}")]
    Decode {
        what: &'static str,
        source: api::prost::DecodeError,
    },
    #[error("ZDS {what} has no payload")]
    Empty { what: &'static str },
    #[error("unsupported ZDS version {0} (we speak V1)")]
    Version(i32),
    #[error("ZDS add for pod {uid} came without a network namespace descriptor")]
    MissingNetns { uid: String },
    #[error("ZDS add for pod {uid}: the descriptor is not a usable network namespace: {source}")]
    BadNetns { uid: String, source: io::Error },
    #[error("ZDS {what} carried {count} unexpected descriptor(s)")]
    UnexpectedFds { what: &'static str, count: usize },
    #[error("ZDS add without workload_info for pod {uid}")]
    MissingInfo { uid: String },
    #[error("ZDS request with an empty pod uid")]
    EmptyUid,
}

impl ZdsError {
    /// The connection cannot continue (the peer is gone or the socket broke); other
    /// errors concern one message, which is NACKed while the connection goes on.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Closed | Self::Version(_))
    }
}

/// A request from the node agent, decoded and checked.
#[derive(Debug)]
pub enum Request {
    /// Proxy this pod; `netns` is its network namespace.
    Add {
        uid: String,
        info: WorkloadInfo,
        netns: Netns,
    },
    /// Snapshot entry for a pod ztunnel should already have.
    Keep { uid: String },
    /// Stop proxying this pod.
    Del { uid: String },
    /// The snapshot is complete: drop pods not named since the connection began.
    SnapshotSent,
}

/// One ZDS connection, either side.
#[derive(Debug)]
pub struct ZdsConnection {
    socket: SeqPacket,
    buf: Vec<u8>,
}

impl ZdsConnection {
    /// ztunnel side: connects and says hello.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, ZdsError> {
        let conn = Self::new(SeqPacket::connect(path)?);
        let hello = ZdsHello {
            version: Version::V1 as i32,
        };
        conn.socket.send(&hello.encode_to_vec(), &[]).await?;
        Ok(conn)
    }

    /// Wraps an accepted (agent side) or connected socket.
    pub fn new(socket: SeqPacket) -> Self {
        Self {
            socket,
            buf: vec![0; MAX_PACKET],
        }
    }

    /// The raw socket, for tests that speak bytes.
    pub fn socket(&self) -> &SeqPacket {
        &self.socket
    }

    /// The next packet and its descriptors; EOF and truncation are errors.
    async fn recv_packet(&mut self) -> Result<(&[u8], Vec<OwnedFd>), ZdsError> {
        let got = self.socket.recv(&mut self.buf).await?;
        if got.len == 0 && got.fds.is_empty() {
            return Err(ZdsError::Closed);
        }
        if got.truncated {
            return Err(ZdsError::Truncated);
        }
        Ok((&self.buf[..got.len], got.fds))
    }

    async fn recv<M: Message + Default>(
        &mut self,
        what: &'static str,
    ) -> Result<(M, Vec<OwnedFd>), ZdsError> {
        let (bytes, fds) = self.recv_packet().await?;
        let msg = M::decode(bytes).map_err(|source| ZdsError::Decode { what, source })?;
        Ok((msg, fds))
    }

    /// Agent side: the first message of a connection.
    pub async fn recv_hello(&mut self) -> Result<ZdsHello, ZdsError> {
        let (hello, fds) = self.recv::<ZdsHello>("hello").await?;
        if !fds.is_empty() {
            return Err(ZdsError::UnexpectedFds {
                what: "hello",
                count: fds.len(),
            });
        }
        if hello.version != Version::V1 as i32 {
            return Err(ZdsError::Version(hello.version));
        }
        Ok(hello)
    }

    /// ztunnel side: the next request. A non-fatal error concerns this message only;
    /// answer it with [`Self::send_ack`]`(Some(reason))` and keep reading.
    pub async fn recv_request(&mut self) -> Result<Request, ZdsError> {
        let (bytes, fds) = self.recv_packet().await?;
        decode_request(bytes, fds)
    }

    /// ztunnel side: ACK (`None`) or NACK (`Some(reason)`) the last request.
    pub async fn send_ack(&self, error: Option<&str>) -> Result<(), ZdsError> {
        let resp = WorkloadResponse {
            payload: Some(RespPayload::Ack(Ack {
                error: error.unwrap_or_default().to_owned(),
            })),
        };
        self.socket.send(&resp.encode_to_vec(), &[]).await?;
        Ok(())
    }

    /// Agent side: asks ztunnel to proxy a pod, passing its namespace.
    pub async fn send_add(
        &self,
        uid: &str,
        info: WorkloadInfo,
        netns: &Netns,
    ) -> Result<(), ZdsError> {
        let req = WorkloadRequest {
            payload: Some(ReqPayload::Add(AddWorkload {
                uid: uid.to_owned(),
                workload_info: Some(info),
            })),
        };
        self.socket
            .send(&req.encode_to_vec(), &[netns.as_fd()])
            .await?;
        Ok(())
    }

    /// Agent side: a snapshot entry for a pod ztunnel should already have.
    pub async fn send_keep(&self, uid: &str) -> Result<(), ZdsError> {
        self.send_request(ReqPayload::Keep(KeepWorkload {
            uid: uid.to_owned(),
        }))
        .await
    }

    /// Agent side: stop proxying a pod.
    pub async fn send_del(&self, uid: &str) -> Result<(), ZdsError> {
        self.send_request(ReqPayload::Del(DelWorkload {
            uid: uid.to_owned(),
        }))
        .await
    }

    /// Agent side: the snapshot is complete.
    pub async fn send_snapshot_sent(&self) -> Result<(), ZdsError> {
        self.send_request(ReqPayload::SnapshotSent(SnapshotSent {}))
            .await
    }

    async fn send_request(&self, payload: ReqPayload) -> Result<(), ZdsError> {
        let req = WorkloadRequest {
            payload: Some(payload),
        };
        self.socket.send(&req.encode_to_vec(), &[]).await?;
        Ok(())
    }

    /// Agent side: ztunnel's answer to the last request: `Ok(())` for an ACK,
    /// `Err(reason)` for a NACK.
    pub async fn recv_ack(&mut self) -> Result<Result<(), String>, ZdsError> {
        let (resp, fds) = self.recv::<WorkloadResponse>("workload response").await?;
        if !fds.is_empty() {
            return Err(ZdsError::UnexpectedFds {
                what: "workload response",
                count: fds.len(),
            });
        }
        match resp.payload {
            Some(RespPayload::Ack(Ack { error })) if error.is_empty() => Ok(Ok(())),
            Some(RespPayload::Ack(Ack { error })) => Ok(Err(error)),
            None => Err(ZdsError::Empty {
                what: "workload response",
            }),
        }
    }
}

/// Decodes and checks one request packet with the descriptors that came with it.
pub fn decode_request(bytes: &[u8], mut fds: Vec<OwnedFd>) -> Result<Request, ZdsError> {
    let req = WorkloadRequest::decode(bytes).map_err(|source| ZdsError::Decode {
        what: "workload request",
        source,
    })?;
    let payload = req.payload.ok_or(ZdsError::Empty {
        what: "workload request",
    })?;
    let no_fds = |what: &'static str, fds: &Vec<OwnedFd>| {
        if fds.is_empty() {
            Ok(())
        } else {
            Err(ZdsError::UnexpectedFds {
                what,
                count: fds.len(),
            })
        }
    };
    let nonempty = |uid: String| {
        if uid.is_empty() {
            Err(ZdsError::EmptyUid)
        } else {
            Ok(uid)
        }
    };
    match payload {
        ReqPayload::Add(AddWorkload { uid, workload_info }) => {
            let uid = nonempty(uid)?;
            if fds.len() > 1 {
                return Err(ZdsError::UnexpectedFds {
                    what: "add",
                    count: fds.len(),
                });
            }
            let fd = fds
                .pop()
                .ok_or_else(|| ZdsError::MissingNetns { uid: uid.clone() })?;
            let info = workload_info.ok_or_else(|| ZdsError::MissingInfo { uid: uid.clone() })?;
            let netns = Netns::from_fd(fd).map_err(|source| ZdsError::BadNetns {
                uid: uid.clone(),
                source,
            })?;
            Ok(Request::Add { uid, info, netns })
        }
        ReqPayload::Keep(KeepWorkload { uid }) => {
            no_fds("keep", &fds)?;
            Ok(Request::Keep {
                uid: nonempty(uid)?,
            })
        }
        ReqPayload::Del(DelWorkload { uid }) => {
            no_fds("del", &fds)?;
            Ok(Request::Del {
                uid: nonempty(uid)?,
            })
        }
        ReqPayload::SnapshotSent(SnapshotSent {}) => {
            no_fds("snapshot_sent", &fds)?;
            Ok(Request::SnapshotSent)
        }
    }
}

/// Agent side: the listening socket.
#[derive(Debug)]
pub struct ZdsListener {
    listener: SeqPacketListener,
}

impl ZdsListener {
    /// Listens on `path` (a stale socket file is replaced).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self {
            listener: SeqPacketListener::bind(path)?,
        })
    }

    /// The next connection; call [`ZdsConnection::recv_hello`] on it (in its own task,
    /// so that a silent client cannot hold up the others).
    pub async fn accept(&self) -> Result<ZdsConnection, ZdsError> {
        Ok(ZdsConnection::new(self.listener.accept().await?))
    }
}

#[cfg(test)]
mod tests;
