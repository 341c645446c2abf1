//! feedscope: watch, curate and debug multifeed replication on the hypercore v10 wire.
//!
//! Layers, from the bytes up: [`frame`] (protomux framing), [`wire`] (the four multifeed
//! messages), [`session`] (the exchange as a state machine without I/O), [`core`] (the
//! hypercore tree, proofs and one feed's files), [`store`] (the storage folder), [`net`]
//! (transport and per-peer tasks), [`engine`] (listen, dial, route commands), and [`event`]
//! (the one schema every front end reads).

pub mod core;
pub mod engine;
pub mod event;
pub mod frame;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod record;
pub mod session;
pub mod stats;
pub mod store;
pub mod tui;
pub mod wire;

/// The hasher of the process's hot tables: foldhash, seeded per process, so that keys a peer
/// chooses cannot be aimed at one bucket. Faster than std's SipHash for the 32-byte feed keys
/// and the integer positions these tables hold.
pub(crate) type FastHash = foldhash::fast::RandomState;

/// `len` bytes that look random and are the same on every run from `seed` (xorshift64), for
/// tests that need many.
#[cfg(test)]
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
