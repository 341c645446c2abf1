//! The network side: encrypted transport, per-peer tasks and feed replication.

pub mod peer;
pub mod replicate;
pub mod transport;
