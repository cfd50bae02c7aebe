//! W3C `traceparent`: `00-<trace-id:32 hex>-<parent-id:16 hex>-<flags:2 hex>`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {0:?}: expected 00-<32 hex>-<16 hex>-<2 hex> with non-zero ids")]
pub struct TraceParentError(String);

impl TraceParent {
    /// A fresh, sampled trace context with random ids.
    pub fn new_random() -> Self {
        TraceParent {
            trace_id: rand::random::<u128>().max(1),
            parent_id: rand::random::<u64>().max(1),
            flags: 0x01,
        }
    }

    /// The same trace with a new span id, for the next hop.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: rand::random::<u64>().max(1),
            ..*self
        }
    }
}

fn hex_field(s: &str, len: usize) -> Option<u128> {
    (s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| u128::from_str_radix(s, 16).ok())
    .flatten()
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TraceParentError(s.chars().take(64).collect());
        let mut parts = s.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let version = hex_field(version, 2).ok_or_else(err)?;
        // Version 00 has exactly four fields; later versions may append more.
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return Err(err());
        }
        let trace_id = hex_field(trace, 32).filter(|v| *v != 0).ok_or_else(err)?;
        let parent_id = hex_field(parent, 16).filter(|v| *v != 0).ok_or_else(err)? as u64;
        let flags = hex_field(flags, 2).ok_or_else(err)? as u8;
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t: TraceParent = s.parse().unwrap();
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), s);
        let r = TraceParent::new_random();
        assert_eq!(r.to_string().parse::<TraceParent>().unwrap(), r);
        let c = r.child();
        assert_eq!(c.trace_id, r.trace_id);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
    }
}
