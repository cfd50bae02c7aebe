//! Consistent-hash tables: ring hash and Maglev, built from an endpoint list.
//!
//! Endpoints are placed by their address (`IP:port`), as Envoy does, so a table built by
//! another replica from the same endpoints is identical, and adding or removing one
//! endpoint leaves the other endpoints' points where they were.

use std::net::SocketAddr;

use super::hash::stable_hash;
use super::settings::{HashTable, MAX_RING_SIZE};
use crate::context::Endpoint;

/// A built table; entries are indices into the endpoint list it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Table {
    /// Points on the ring, sorted by hash.
    Ring(Vec<(u64, u32)>),
    /// Slot -> endpoint.
    Maglev(Vec<u32>),
}

impl Table {
    /// Builds the table for `endpoints` (not empty).
    pub(crate) fn build(kind: HashTable, endpoints: &[Endpoint]) -> Table {
        let addrs: Vec<String> = endpoints.iter().map(|e| e.addr.to_string()).collect();
        match kind {
            HashTable::Ring { minimum_size } => Table::Ring(ring(minimum_size, &addrs)),
            HashTable::Maglev { table_size } => Table::Maglev(maglev(table_size, &addrs)),
        }
    }

    /// The endpoint index for `hash`.
    pub(crate) fn lookup(&self, hash: u64) -> Option<usize> {
        match self {
            Table::Ring(points) => {
                let at = points.partition_point(|(h, _)| *h < hash);
                let (_, idx) = points.get(at).or_else(|| points.first())?;
                Some(*idx as usize)
            }
            Table::Maglev(slots) => {
                let len = u64::try_from(slots.len()).ok().filter(|l| *l > 0)?;
                slots.get((hash % len) as usize).map(|i| *i as usize)
            }
        }
    }
}

/// Each endpoint gets `ceil(minimum_size / n)` points rounded up to a power of two (equal
/// weights), the ring capped at Envoy's maximum size; point `i` of an endpoint hashes
/// `ADDR_i`. Envoy uses `ceil(minimum_size / n)` itself, so every endpoint's points move
/// when one endpoint comes or goes; rounding to a power of two keeps the per-endpoint
/// count, and so every other endpoint's points, unchanged except when `n` crosses a
/// power-of-two boundary of `minimum_size / n`, at the cost of a ring up to twice the
/// minimum.
fn ring(minimum_size: u64, addrs: &[String]) -> Vec<(u64, u32)> {
    let n = addrs.len() as u64;
    let per_host = minimum_size
        .div_ceil(n)
        .next_power_of_two()
        .clamp(1, (MAX_RING_SIZE / n).max(1));
    let mut points = Vec::with_capacity((per_host * n) as usize);
    for (idx, addr) in addrs.iter().enumerate() {
        for i in 0..per_host {
            let h = stable_hash(&[addr.as_bytes(), b"_", i.to_string().as_bytes()]);
            points.push((h, idx as u32));
        }
    }
    // Ties (vanishingly rare) are broken by address so the ring does not depend on the
    // order of the endpoint list.
    points.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| addrs[a.1 as usize].cmp(&addrs[b.1 as usize]))
    });
    points
}

/// Maglev population (Eisenbud et al. 2016): endpoint `i` has the permutation
/// `offset_i + j * skip_i (mod M)` and endpoints take turns claiming their next free
/// slot until the table is full. `size` should be prime (compile() checks it). Endpoints are visited in address order so the table
/// does not depend on the order of the list.
fn maglev(size: u64, addrs: &[String]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..addrs.len()).collect();
    order.sort_by(|a, b| addrs[*a].cmp(&addrs[*b]));
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let a = addrs[i].as_bytes();
            let offset = stable_hash(&[a, b"#offset"]) % size;
            let skip = stable_hash(&[a, b"#skip"]) % (size - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; order.len()];
    let mut slots = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (k, &idx) in order.iter().enumerate() {
            let (offset, skip) = perms[k];
            let mut slot = (offset + next[k] * skip) % size;
            let mut tries = 0;
            while slots[slot as usize] != u32::MAX {
                next[k] += 1;
                tries += 1;
                slot = if tries < size {
                    (offset + next[k] * skip) % size
                } else {
                    // Only when `size` is not prime (the permutation cycles early):
                    // take the next free slot.
                    (slot + 1) % size
                };
            }
            slots[slot as usize] = idx as u32;
            next[k] += 1;
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    slots
}

/// The addresses a table was built from, to tell when it must be rebuilt.
pub(crate) fn addresses(endpoints: &[Endpoint]) -> Vec<SocketAddr> {
    endpoints.iter().map(|e| e.addr).collect()
}
