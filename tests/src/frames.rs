//! Captured frames, and the searches "no plaintext on the wire" assertions need.
//!
//! A marker can straddle two TCP segments, and a "not found" must not come from that:
//! searches look in every raw frame *and* in each TCP flow's payload reassembled in
//! sequence order.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// One Ethernet frame as it entered the bridge.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Index of the bridge port (in the wire namespace) it arrived on.
    pub interface: u32,
    /// Time since the capture started.
    pub at: Duration,
    /// The whole frame, from the Ethernet header on.
    pub data: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Frame");
        d.field("interface", &self.interface)
            .field("at", &self.at)
            .field("len", &self.data.len());
        if let Some(s) = tcp_segment(&self.data) {
            d.field("tcp", &format_args!("{} -> {} seq {}", s.src, s.dst, s.seq))
                .field("payload", &s.payload.len());
        }
        d.finish()
    }
}

/// A TCP segment inside an IPv4 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ipv4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(be32(b, at)?))
}

/// Parses an Ethernet/IPv4/TCP frame. Anything else (ARP, IPv6, UDP, fragments, a
/// truncated or malformed header) is `None`: captures see whatever the kernel sends.
pub fn tcp_segment(frame: &[u8]) -> Option<Segment<'_>> {
    const ETH_HEADER: usize = 14;
    const ETHERTYPE_IPV4: u16 = 0x0800;
    const IPPROTO_TCP: u8 = 6;
    if be16(frame, 12)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETH_HEADER..)?;
    let version = ip.first()? >> 4;
    let header_len = usize::from(ip.first()? & 0x0f) * 4;
    if version != 4 || header_len < 20 || ip.len() < header_len {
        return None;
    }
    // 0 appears on oversized (BIG TCP) GSO frames: the frame length is authoritative.
    let total_len = match usize::from(be16(ip, 2)?) {
        0 => ip.len(),
        n => n.min(ip.len()),
    };
    let fragmented = be16(ip, 6)? & 0x3fff != 0;
    if fragmented || *ip.get(9)? != IPPROTO_TCP || total_len < header_len {
        return None;
    }
    let tcp = &ip[header_len..total_len];
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    if data_offset < 20 || tcp.len() < data_offset {
        return None;
    }
    Some(Segment {
        src: SocketAddrV4::new(ipv4(ip, 12)?, be16(tcp, 0)?),
        dst: SocketAddrV4::new(ipv4(ip, 16)?, be16(tcp, 2)?),
        seq: be32(tcp, 4)?,
        payload: &tcp[data_offset..],
    })
}

/// One direction of a TCP connection, its payload put back in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpFlow {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Contiguous runs of payload; a new run starts after each gap in the capture.
    pub runs: Vec<Vec<u8>>,
}

impl TcpFlow {
    /// Total payload bytes seen, retransmissions counted once.
    pub fn len(&self) -> usize {
        self.runs.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a capture recorded.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frames {
    frames: Vec<Frame>,
}

impl Frames {
    pub fn new(frames: Vec<Frame>) -> Self {
        Self { frames }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Frame> {
        self.frames.iter()
    }

    /// Whether `needle` appears in any frame or in any reassembled TCP flow: the
    /// check behind "no plaintext on the wire" (assert it is `false` for a marker the
    /// application sent) and its control (assert `true` when the mesh is bypassed).
    pub fn contains_bytes(&self, needle: &[u8]) -> bool {
        if needle.is_empty() {
            return true;
        }
        self.frames.iter().any(|f| find(&f.data, needle))
            || self
                .tcp_flows()
                .iter()
                .any(|flow| flow.runs.iter().any(|run| find(run, needle)))
    }

    /// Frames carrying a TCP segment between the two addresses, either direction.
    pub fn between(&self, a: Ipv4Addr, b: Ipv4Addr) -> impl Iterator<Item = &Frame> {
        self.frames.iter().filter(move |f| {
            tcp_segment(&f.data).is_some_and(|s| {
                (*s.src.ip() == a && *s.dst.ip() == b) || (*s.src.ip() == b && *s.dst.ip() == a)
            })
        })
    }

    /// Every TCP flow's payload in sequence order. Sequence numbers are taken relative
    /// to the first segment seen, modulo 2^32, so wrap-around and retransmissions of
    /// already seen data are handled; data missing from the capture starts a new run.
    pub fn tcp_flows(&self) -> Vec<TcpFlow> {
        let mut flows: BTreeMap<(SocketAddrV4, SocketAddrV4), Vec<Segment<'_>>> = BTreeMap::new();
        for segment in self.frames.iter().filter_map(|f| tcp_segment(&f.data)) {
            if !segment.payload.is_empty() {
                flows
                    .entry((segment.src, segment.dst))
                    .or_default()
                    .push(segment);
            }
        }
        flows
            .into_iter()
            .map(|((src, dst), segments)| TcpFlow {
                src,
                dst,
                runs: reassemble(&segments),
            })
            .collect()
    }
}

fn reassemble(segments: &[Segment<'_>]) -> Vec<Vec<u8>> {
    let Some(first) = segments.first() else {
        return Vec::new();
    };
    // Signed distance from the first segment: a retransmission of earlier data sorts
    // before it instead of 4 GiB after.
    let offset = |seq: u32| i64::from(seq.wrapping_sub(first.seq) as i32);
    let mut ordered: Vec<(i64, &[u8])> = segments
        .iter()
        .map(|s| (offset(s.seq), s.payload))
        .collect();
    ordered.sort_by_key(|(start, payload)| (*start, std::cmp::Reverse(payload.len())));
    let mut runs: Vec<Vec<u8>> = Vec::new();
    let mut end = i64::MIN;
    for (start, payload) in ordered {
        let len = payload.len() as i64;
        if runs.is_empty() || start > end {
            runs.push(payload.to_vec());
            end = start + len;
        } else if start + len > end {
            let fresh = (end - start) as usize;
            runs.last_mut()
                .expect("a run exists")
                .extend_from_slice(&payload[fresh..]);
            end = start + len;
        }
    }
    runs
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl fmt::Debug for Frames {
    /// A summary: full frame dumps would drown a failing assertion's message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frames")
            .field("frames", &self.frames.len())
            .field("tcp_flows", &self.tcp_flows().len())
            .finish()
    }
}

impl<'a> IntoIterator for &'a Frames {
    type Item = &'a Frame;
    type IntoIter = std::slice::Iter<'a, Frame>;

    fn into_iter(self) -> Self::IntoIter {
        self.frames.iter()
    }
}

#[cfg(test)]
mod tests;
