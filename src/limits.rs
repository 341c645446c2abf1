//! Every limit that bounds what peers can make this process hold, wait for or do, in one value.
//!
//! The engine takes a [`Limits`] in its config and hands each layer the part it enforces: the
//! engine counts peers, the transport bounds the handshake and the write backlog, the
//! connection core bounds channels, early and held messages and silence, the session bounds
//! offers and agreed feeds, and the multifeed decoder bounds messages. Tests lower them instead
//! of building a hundred thousand keys. What each is for, and the test that shows it holds, is
//! in SECURITY.md.
//!
//! Sizes fixed by the wire format are not settings and stay where the format is:
//! `frame::MAX_FRAME_BYTES`, `store::MAX_BLOCK_BYTES`, `core::flat::MAX_DEPTH`. So do the
//! replicator's per-feed bounds (`net::replicate::WINDOW`, `MAX_REMOTE_SPANS`) and the
//! storage's (`core::disk::MAX_STAGED_BYTES`, `NODE_CACHE`), which SECURITY.md lists too.

use std::time::Duration;

/// The limits of one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Simultaneous peers, handshakes included; further connections are refused.
    pub max_peers: usize,
    /// Time a Noise handshake may take.
    pub handshake_timeout: Duration,
    /// A dialed connection that lasted this long after its handshake counts as lasting: the
    /// wait before its address is dialed again starts afresh, and the count of connections
    /// in a row that did not (at most `engine::DIAL_ATTEMPTS`) starts over.
    pub redial_settled: Duration,
    /// Time allowed between the handshake and the root channel opening on both sides; past it,
    /// the peer is taken to use another multifeed key.
    pub root_open_timeout: Duration,
    /// After this long without sending, an empty keep-alive frame is sent.
    pub keepalive_interval: Duration,
    /// A peer that sends nothing, not even a keep-alive, for this long is dropped.
    pub idle_timeout: Duration,
    /// A congested connection whose peer reads nothing for this long is dropped; a slow
    /// reader is not.
    pub stall_timeout: Duration,
    /// Bytes waiting to be written to one socket before the connection counts as congested
    /// (answers to block requests then wait).
    pub max_write_backlog: usize,
    /// Block requests waiting for a congested connection; more are answered with NoData.
    pub max_owed_requests: usize,
    /// Remote channel opens we have not matched yet; more are rejected.
    pub max_pending_opens: usize,
    /// Messages buffered per not-yet-matched remote channel; more are dropped.
    pub max_early_messages: usize,
    /// Bytes of messages buffered for all not-yet-matched channels of a connection.
    pub max_early_bytes: usize,
    /// Received messages held in step mode; reading pauses beyond it.
    pub max_held: usize,
    /// Bytes of received messages held in step mode; reading pauses beyond it.
    pub max_held_bytes: usize,
    /// Keys one peer may offer on one connection; further offered keys are ignored.
    pub max_remote_offer: usize,
    /// Feeds requested, promised or replicating on one connection. Each open core holds four
    /// files, so this also keeps one peer from exhausting file descriptors.
    pub max_active_feeds: usize,
    /// Bytes of one multifeed extension message.
    pub max_extension_bytes: usize,
    /// Keys in one multifeed message.
    pub max_keys_per_message: usize,
    /// Messages of one connection that do not decode before the connection is closed: a
    /// peer that sends more is broken or hostile, and each costs a decode and a warning.
    /// Messages of a type newer than ours are not counted.
    pub max_malformed_messages: usize,
    /// Feeds the metrics endpoint shows one by one (labelled by key and name); the others are
    /// only counted, so that peers offering many feeds cannot make a scrape unbounded.
    pub max_labelled_feeds: usize,
}

impl Limits {
    /// The limits feedscope runs with unless told otherwise.
    pub const DEFAULT: Limits = Limits {
        max_peers: 1024,
        handshake_timeout: Duration::from_secs(10),
        redial_settled: Duration::from_secs(10),
        root_open_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        stall_timeout: Duration::from_secs(30),
        max_write_backlog: 8 << 20,
        max_owed_requests: 1 << 18,
        max_pending_opens: 1024,
        max_early_messages: 1024,
        max_early_bytes: 8 << 20,
        max_held: 10_000,
        max_held_bytes: 64 << 20,
        max_remote_offer: 100_000,
        max_active_feeds: 4_096,
        max_extension_bytes: 4 << 20,
        max_keys_per_message: 100_000,
        max_malformed_messages: 1_000,
        max_labelled_feeds: 1_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
