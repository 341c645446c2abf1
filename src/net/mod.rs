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
