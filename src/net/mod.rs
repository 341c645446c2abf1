//! The network side: encrypted transport, the connection core, per-peer tasks and feed
//! replication. Nothing here knows the engine: peers report upward through
//! [`peer::PeerContext`].

pub mod framed;
pub mod hc10;
pub mod hc9;
pub mod hush;
pub mod output;
pub mod peer;
pub mod replicate;
pub mod transport;
