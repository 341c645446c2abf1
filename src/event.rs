//! What the engine reports ([`Event`]) and what a front end asks of it ([`Command`]).
//!
//! These serde types are the only schema: the channel messages to a front end, the JSON lines
//! of headless mode and the lines of a recording are all exactly these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{FeedKey, FeedMeta};

/// A connection id; never reused within one process.
pub type PeerId = u64;

/// Something that happened in the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The engine accepts connections on this address.
    Listening {
        /// Bound address, with the real port.
        addr: String,
    },
    /// Dialing `addr` failed; the engine tries again after `retry_in_ms`.
    ConnectRetry {
        /// Address dialed.
        addr: String,
        /// Attempts so far.
        attempt: u32,
        /// Delay before the next attempt.
        retry_in_ms: u64,
        /// Why the attempt failed.
        error: String,
    },
    /// A TCP connection is up and its Noise handshake finished.
    PeerConnected {
        /// Connection id.
        peer: PeerId,
        /// Remote socket address.
        addr: String,
        /// Whether we dialed.
        initiator: bool,
        /// The peer's Noise public key, hex.
        remote_public_key: String,
    },
    /// The peer's multifeed handshake arrived and is compatible.
    HandshakeReceived {
        /// Connection id.
        peer: PeerId,
        /// Client name.
        client: String,
        /// Protocol version.
        version: String,
    },
    /// We offered feeds.
    OfferSent {
        /// Connection id.
        peer: PeerId,
        /// Offered keys.
        keys: Vec<FeedKey>,
        /// Metadata sent with the offer.
        meta: BTreeMap<FeedKey, FeedMeta>,
    },
    /// The peer offered feeds.
    OfferReceived {
        /// Connection id.
        peer: PeerId,
        /// Offered keys (valid ones).
        keys: Vec<FeedKey>,
        /// Metadata the peer attached, for display only.
        meta: BTreeMap<FeedKey, FeedMeta>,
    },
    /// Offers that wait for a decision (manual policy).
    OfferPending {
        /// Connection id.
        peer: PeerId,
        /// Keys waiting.
        keys: Vec<FeedKey>,
    },
    /// An offer was approved or declined.
    Decision {
        /// Connection id.
        peer: PeerId,
        /// Key decided.
        key: FeedKey,
        /// `true` for approve.
        approved: bool,
        /// Who decided when it was not a person: the rule, or a remembered decision.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Replication of a feed with a peer was stopped on request; stored blocks are kept.
    FeedStopped {
        /// Connection id.
        peer: PeerId,
        /// Feed key.
        key: FeedKey,
    },
    /// We requested feeds.
    RequestSent {
        /// Connection id.
        peer: PeerId,
        /// Requested keys.
        keys: Vec<FeedKey>,
    },
    /// The peer requested feeds.
    RequestReceived {
        /// Connection id.
        peer: PeerId,
        /// Requested keys (valid ones, before filtering).
        keys: Vec<FeedKey>,
    },
    /// We told the peer which requested feeds we replicate.
    ReplicateSent {
        /// Connection id.
        peer: PeerId,
        /// Keys we serve.
        keys: Vec<FeedKey>,
    },
    /// The peer told us which of our requests it replicates.
    ReplicateReceived {
        /// Connection id.
        peer: PeerId,
        /// Keys it serves (before filtering).
        keys: Vec<FeedKey>,
    },
    /// A feed now exists in local storage.
    FeedAdded {
        /// Feed key.
        key: FeedKey,
        /// Local name, for feeds created here.
        name: Option<String>,
        /// Whether we can append to it.
        writable: bool,
    },
    /// Blocks appended to one of our feeds are durable: they survive a crash of the process
    /// or the machine from now on.
    Appended {
        /// Feed key.
        key: FeedKey,
        /// Local name.
        name: String,
        /// The feed's length, every block below it durable.
        length: u64,
    },
    /// Replication of a feed with a peer moved on (at most ~10 per second per feed).
    FeedProgress {
        /// Connection id.
        peer: PeerId,
        /// Feed key.
        key: FeedKey,
        /// Blocks we hold contiguously from the start.
        local_length: u64,
        /// The peer's length.
        remote_length: u64,
        /// Block bytes received from this peer on this connection.
        bytes: u64,
    },
    /// We hold every block the peer has of this feed.
    FeedSynced {
        /// Connection id.
        peer: PeerId,
        /// Feed key.
        key: FeedKey,
        /// Length reached.
        length: u64,
    },
    /// One protocol message in or out (with `--trace-wire`).
    Wire {
        /// Connection id.
        peer: PeerId,
        /// `in` or `out`.
        dir: String,
        /// `root`, a feed's short key, `control`, or `channel N` while not yet matched.
        channel: String,
        /// Message type: `Open`, `Synchronize`, `Data`, `Extension(MULTIFEED_MANIFEST)`, …
        kind: String,
        /// Encoded size in bytes.
        bytes: usize,
        /// Decoded fields, for a person.
        summary: String,
        /// The message bytes (at most the first 512) in hex.
        hex: String,
    },
    /// A received message is held until it is let through (step mode).
    Held {
        /// Connection id.
        peer: PeerId,
        /// Message type.
        kind: String,
        /// Decoded fields.
        summary: String,
        /// Messages now waiting.
        waiting: usize,
    },
    /// A held message was let through and acted on.
    Released {
        /// Connection id.
        peer: PeerId,
        /// Message type.
        kind: String,
        /// Messages still waiting.
        waiting: usize,
    },
    /// The connection ended.
    PeerDisconnected {
        /// Connection id.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Something went wrong that the engine survives.
    Warning {
        /// Connection id, when it concerns one peer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<PeerId>,
        /// Stable machine-readable kind.
        kind: String,
        /// What happened, for a person.
        message: String,
    },
    /// Something failed: a session ended or an operation could not be done.
    Error {
        /// Connection id, when it concerns one peer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<PeerId>,
        /// Stable machine-readable kind.
        kind: String,
        /// What happened and what to do, for a person.
        message: String,
    },
    /// The engine stopped; the last event.
    Stopped,
}

/// A request from a front end to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Approve an offered key: request it (from `peer`, or from every peer offering it).
    Approve {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
        /// Key, or `*` for everything pending.
        key: String,
    },
    /// Decline an offered key.
    Decline {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
        /// Key, or `*` for everything pending.
        key: String,
    },
    /// Stop replicating an active feed with a peer (`approve` resumes it).
    Stop {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
        /// Key.
        key: String,
    },
    /// Hold every received message of a peer until it is let through (step mode).
    Hold {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
    },
    /// Let exactly one held message through (holding starts if it was off).
    Step {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
    },
    /// Let every held message through and stop holding.
    Continue {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
    },
    /// Start holding when a message of this kind arrives (`Data`, `MULTIFEED_REQUEST_FEEDS`…);
    /// an empty kind removes every breakpoint.
    Break {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
        /// Message type or extension name.
        kind: String,
    },
    /// Dial another peer.
    Connect {
        /// `host:port`.
        addr: String,
    },
    /// Create a writable feed and offer it to every peer.
    AddFeed {
        /// Local name.
        name: String,
    },
    /// Append one block to a writable feed.
    Append {
        /// Local name of the feed.
        feed: String,
        /// Block as UTF-8 text.
        #[serde(default)]
        data: Option<String>,
        /// Block as hex, for binary data.
        #[serde(default)]
        data_hex: Option<String>,
    },
    /// Shut down cleanly.
    Quit,
}
