//! The wire that Cabal and multifeed 6 peers speak: hypercore-protocol 8 carrying hypercore 9
//! feeds. These are its building blocks, pure and without I/O:
//!
//! - [`frame`]: varint framing, keep-alives and an incremental decoder;
//! - [`message`]: the protobuf messages (Open, Options, Status, Have, …, Data, Close) and
//!   extension frames;
//! - [`noise`]: the Noise XX handshake with its nonce payload, as a state machine;
//! - [`cipher`]: the XSalsa20 keystreams ([`crate::net::arx`]) that carry everything after
//!   the handshake;
//! - [`caps`]: discovery keys, and the capabilities that prove a peer knows a feed's key;
//! - [`rle`]: the run-length encoded bitfields of `Have` messages;
//! - [`extensions`]: stream-level extension ids, as indexes into each side's sorted list;
//! - [`conn`]: the connection core: channels, capabilities, the multifeed root channel,
//!   keep-alives, step mode and tracing, giving the same outputs as hypercore 10's.
//!
//! Every byte-level fact follows the measured behaviour of `simple-hypercore-protocol` 2.1.2
//! and `hypercore-protocol` 8.0.7; the tests reproduce a recorded JavaScript transcript byte
//! for byte (`tests/hc9_wire.rs`).

#![warn(missing_docs)]

pub mod caps;
pub mod cipher;
pub mod conn;
pub mod extensions;
pub mod frame;
pub mod message;
pub mod noise;
pub mod rle;

pub use caps::discovery_key;
pub use cipher::Keystream;
pub use extensions::{LocalExtensions, RemoteExtensions};
pub use frame::{Decoder, FrameError, Item, MAX_FRAME_BYTES};
pub use message::Message;
pub use noise::{Established, Handshake, NoiseError, Secrets, Split};

#[cfg(test)]
mod tests;
