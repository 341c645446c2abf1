//! The network side: encrypted transport, the connection core, per-peer tasks and feed
//! replication. Nothing here knows the engine: peers report upward through
//! [`peer::PeerContext`].

pub mod arx;
pub mod framed;
pub mod hc10;
pub mod hc9;
pub mod hush;
pub mod output;
pub mod peer;
pub mod poly1305;
pub mod replicate;
pub mod secret_stream;
pub mod transport;

/// BLAKE2b-256 keyed by `key` (at most 64 bytes) over `parts` in order: discovery keys,
/// both wires' channel capabilities and hypercore 10's stream ids.
pub(crate) fn keyed_hash(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use blake2::digest::{consts::U32, FixedOutput, Mac};
    let mut mac = <blake2::Blake2bMac<U32> as Mac>::new_from_slice(key)
        .expect("a key of at most 64 bytes is a valid BLAKE2b key");
    for p in parts {
        Mac::update(&mut mac, p);
    }
    mac.finalize_fixed().into()
}

/// What a connection says of the `count`-th received message that did not decode, `e`: the
/// warning, or past `most` the error that ends the connection (`true`).
pub(crate) fn malformed_message(
    count: usize,
    most: usize,
    e: &dyn std::fmt::Display,
) -> (bool, String) {
    if count > most {
        (
            true,
            format!("over {most} messages from the peer did not decode (the last: {e}); closing the connection"),
        )
    } else {
        (false, format!("dropped a message: {e}"))
    }
}
