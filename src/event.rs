//! What the engine reports ([`Event`]) and what a front end asks of it ([`Command`]).
//!
//! These serde types are the only schema: the channel messages to a front end, the JSON lines
//! of headless mode and the lines of a recording are all exactly these.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::wire::{FeedKey, FeedMeta, OfferMeta};

/// A connection id; never reused within one process.
pub type PeerId = u64;

/// What kind of problem a `warning` or `error` reports: stable and machine-readable, for
/// scripts to match on; the message beside it is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The peer's channel open carried a capability that does not prove the key.
    BadCapability,
    /// A block or proof that does not verify, or an answer nobody asked for.
    BadData,
    /// A front end's command could not be carried out.
    Command,
    /// Dialing failed for good.
    Connect,
    /// The peer uses another multifeed key.
    DifferentMultifeedKey,
    /// The Noise handshake failed.
    Handshake,
    /// The peer sent nothing for too long.
    Idle,
    /// The peer's multifeed handshake is of an incompatible version.
    Incompatible,
    /// A key that is not 32 bytes of hex.
    InvalidKey,
    /// A limit was reached; what is over it is refused or dropped.
    Limit,
    /// The engine cannot listen where it was asked to.
    Listen,
    /// A multifeed message over its size or key limit.
    Oversized,
    /// A multifeed message that does not decode.
    Malformed,
    /// A frame that does not decode.
    MalformedFrame,
    /// A channel message that does not decode.
    MalformedMessage,
    /// The metrics endpoint cannot listen where it was asked to.
    Metrics,
    /// Stopping a feed that is not replicating with that peer.
    NotActive,
    /// A command that would change something, refused in observe mode.
    Observe,
    /// A peer task panicked; other peers are unaffected.
    Panic,
    /// The peer broke a channel rule.
    Protocol,
    /// The peer asked for a feed we never offered it.
    RefusedRequest,
    /// The peer reads nothing of what we send.
    Stalled,
    /// Storage could not be read or written.
    Storage,
    /// The peer completed the Noise handshake but opened no channel in time: busy, or not a
    /// multifeed peer.
    Timeout,
    /// An extension message of a name multifeed does not know.
    UnknownExtension,
    /// The peer asked to replicate a feed it never offered.
    UnknownOffer,
    /// The peer started replicating a feed we never requested.
    UnrequestedFeed,
    /// The writer truncated a feed we hold a copy of (a new fork), which feedscope does not
    /// follow: the copy stays as it was.
    Truncated,
}

impl ProblemKind {
    /// The name scripts see.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::BadCapability => "bad_capability",
            ProblemKind::BadData => "bad_data",
            ProblemKind::Command => "command",
            ProblemKind::Connect => "connect",
            ProblemKind::DifferentMultifeedKey => "different_multifeed_key",
            ProblemKind::Handshake => "handshake",
            ProblemKind::Idle => "idle",
            ProblemKind::Incompatible => "incompatible",
            ProblemKind::InvalidKey => "invalid_key",
            ProblemKind::Limit => "limit",
            ProblemKind::Listen => "listen",
            ProblemKind::Oversized => "oversized",
            ProblemKind::Malformed => "malformed",
            ProblemKind::MalformedFrame => "malformed_frame",
            ProblemKind::MalformedMessage => "malformed_message",
            ProblemKind::Metrics => "metrics",
            ProblemKind::NotActive => "not_active",
            ProblemKind::Observe => "observe",
            ProblemKind::Panic => "panic",
            ProblemKind::Protocol => "protocol",
            ProblemKind::RefusedRequest => "refused_request",
            ProblemKind::Stalled => "stalled",
            ProblemKind::Storage => "storage",
            ProblemKind::Timeout => "timeout",
            ProblemKind::UnknownExtension => "unknown_extension",
            ProblemKind::UnknownOffer => "unknown_offer",
            ProblemKind::UnrequestedFeed => "unrequested_feed",
            ProblemKind::Truncated => "truncated",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

/// Which generation of the hypercore wire a connection speaks, and which a feed belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// Hypercore 10: protomux channels over a Noise secret stream (JavaScript hypercore 10).
    #[default]
    Hc10,
    /// Hypercore 9 on hypercore-protocol 8: what multifeed 6 and Cabal speak.
    Hc9,
}

impl Wire {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Wire::Hc10 => "hc10",
            Wire::Hc9 => "hc9",
        }
    }
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Wire {
    type Err = String;
    fn from_str(s: &str) -> Result<Wire, String> {
        match s {
            "hc10" => Ok(Wire::Hc10),
            "hc9" => Ok(Wire::Hc9),
            _ => Err(format!(
                "no wire \"{s}\": hc10 (hypercore 10, the default) or hc9 (multifeed 6, Cabal)"
            )),
        }
    }
}

/// Who decided an offer. In JSON: absent for a person, else a phrase (`rule deny ab12`,
/// `remembered approval`, `accept-all`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DecidedBy {
    /// A person, in the UI or through a command.
    #[default]
    Person,
    /// The classic accept-all policy.
    AcceptAll,
    /// A rule, described (`deny ab12`, `max-feed-bytes 1000 (offer states 2000)`).
    Rule(String),
    /// A decision a person made earlier for this key.
    Memory {
        /// What was remembered.
        approved: bool,
    },
}

impl DecidedBy {
    /// Whether a person decided.
    pub fn is_person(&self) -> bool {
        *self == DecidedBy::Person
    }
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecidedBy::Person => f.write_str("a person"),
            DecidedBy::AcceptAll => f.write_str("accept-all"),
            DecidedBy::Rule(rule) => write!(f, "rule {rule}"),
            DecidedBy::Memory { approved: true } => f.write_str("remembered approval"),
            DecidedBy::Memory { approved: false } => f.write_str("remembered decline"),
        }
    }
}

impl Serialize for DecidedBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DecidedBy::Person => s.serialize_none(),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for DecidedBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(DecidedBy::Person);
        };
        match text.as_str() {
            "accept-all" => Ok(DecidedBy::AcceptAll),
            "remembered approval" => Ok(DecidedBy::Memory { approved: true }),
            "remembered decline" => Ok(DecidedBy::Memory { approved: false }),
            _ => match text.strip_prefix("rule ") {
                Some(rule) => Ok(DecidedBy::Rule(rule.to_string())),
                None => Err(serde::de::Error::custom(format!(
                    "unknown decider {text:?}: expected \"rule …\", \"remembered approval\", \"remembered decline\" or \"accept-all\""
                ))),
            },
        }
    }
}

/// Which side stopped a feed's replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoppedBy {
    /// We did, on a person's request.
    #[default]
    Us,
    /// The peer closed the feed's channel.
    Peer,
}

impl StoppedBy {
    /// Whether we stopped it.
    pub fn is_us(&self) -> bool {
        *self == StoppedBy::Us
    }
}

/// Which offered keys a decision is for. In JSON: `*` for every pending key, else a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySelection {
    /// Every key waiting for a decision.
    AllPending,
    /// One key.
    One(FeedKey),
}

impl std::fmt::Display for KeySelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySelection::AllPending => f.write_str("*"),
            KeySelection::One(key) => write!(f, "{key}"),
        }
    }
}

impl std::str::FromStr for KeySelection {
    type Err = crate::wire::WireError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "*" {
            Ok(KeySelection::AllPending)
        } else {
            FeedKey::parse(text).map(KeySelection::One)
        }
    }
}

impl Serialize for KeySelection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeySelection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "key {text:?}: {e} (or \"*\" for every pending key)"
            ))
        })
    }
}

impl Event {
    /// Every event's `type`, as its JSON names it.
    pub const TYPES: [&'static str; 27] = [
        "listening",
        "connect_retry",
        "peer_connected",
        "peer_named",
        "handshake_received",
        "offer_sent",
        "offer_received",
        "offer_pending",
        "decision",
        "feed_stopped",
        "request_sent",
        "request_received",
        "replicate_sent",
        "replicate_received",
        "feed_added",
        "appended",
        "feed_progress",
        "feed_synced",
        "wire",
        "held",
        "released",
        "peer_disconnected",
        "warning",
        "error",
        "stopped",
        "metrics_listening",
        "observe_refused",
    ];

    /// This event's `type`, as its JSON names it (the match stops compiling when a variant
    /// is added, and `tests/schema.rs` holds it to the JSON).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Listening { .. } => "listening",
            Event::ConnectRetry { .. } => "connect_retry",
            Event::PeerConnected { .. } => "peer_connected",
            Event::PeerNamed { .. } => "peer_named",
            Event::HandshakeReceived { .. } => "handshake_received",
            Event::OfferSent { .. } => "offer_sent",
            Event::OfferReceived { .. } => "offer_received",
            Event::OfferPending { .. } => "offer_pending",
            Event::Decision { .. } => "decision",
            Event::FeedStopped { .. } => "feed_stopped",
            Event::RequestSent { .. } => "request_sent",
            Event::RequestReceived { .. } => "request_received",
            Event::ReplicateSent { .. } => "replicate_sent",
            Event::ReplicateReceived { .. } => "replicate_received",
            Event::FeedAdded { .. } => "feed_added",
            Event::Appended { .. } => "appended",
            Event::FeedProgress { .. } => "feed_progress",
            Event::FeedSynced { .. } => "feed_synced",
            Event::Wire { .. } => "wire",
            Event::Held { .. } => "held",
            Event::Released { .. } => "released",
            Event::PeerDisconnected { .. } => "peer_disconnected",
            Event::Warning { .. } => "warning",
            Event::Error { .. } => "error",
            Event::Stopped => "stopped",
            Event::MetricsListening { .. } => "metrics_listening",
            Event::ObserveRefused { .. } => "observe_refused",
        }
    }
}

/// Offer metadata per key, shared by the reports of every peer offered the same list.
pub type SharedMeta = Arc<BTreeMap<FeedKey, FeedMeta>>;

/// Something that happened in the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The engine accepts connections on this address.
    Listening {
        /// Bound address, with the real port.
        addr: String,
    },
    /// The metrics endpoint (`GET /metrics`, Prometheus text) answers on this address.
    MetricsListening {
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
        /// The wire the connection speaks.
        #[serde(default)]
        wire: Wire,
    },
    /// The peer named itself. On Cabal's wire this is its `peer-id`: the hex key of its
    /// writer feed, which Cabal uses as the peer's identity.
    PeerNamed {
        /// Connection id.
        peer: PeerId,
        /// The name, as the peer sent it (validated: 64 hex characters for `peer-id`).
        name: String,
    },
    /// In observe mode, the peer asked for feeds and nothing was served: every request is
    /// refused by design, so this is news, not a warning (`refused_request` stays for peers
    /// asking for what a serving feedscope never offered them).
    ObserveRefused {
        /// Connection id.
        peer: PeerId,
        /// The keys it asked for.
        keys: Vec<FeedKey>,
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
        /// Metadata sent with the offer: one map shared by every peer offered the same list.
        meta: SharedMeta,
    },
    /// The peer offered feeds.
    OfferReceived {
        /// Connection id.
        peer: PeerId,
        /// Offered keys (valid ones).
        keys: Vec<FeedKey>,
        /// Metadata the peer attached, for display only.
        meta: OfferMeta,
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
        /// Who decided; absent in JSON when a person did.
        #[serde(default, skip_serializing_if = "DecidedBy::is_person")]
        by: DecidedBy,
    },
    /// Replication of a feed with a peer stopped: we stopped it on request, or the peer closed
    /// its channel (`"by": "peer"`). Stored blocks are kept.
    FeedStopped {
        /// Connection id.
        peer: PeerId,
        /// Feed key.
        key: FeedKey,
        /// Who stopped it; absent in JSON when we did.
        #[serde(default, skip_serializing_if = "StoppedBy::is_us")]
        by: StoppedBy,
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
        dir: Direction,
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
        kind: ProblemKind,
        /// What happened, for a person.
        message: String,
    },
    /// Something failed: a session ended or an operation could not be done.
    Error {
        /// Connection id, when it concerns one peer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<PeerId>,
        /// Stable machine-readable kind.
        kind: ProblemKind,
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
        /// A key, or `*` for everything pending.
        key: KeySelection,
    },
    /// Decline an offered key.
    Decline {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
        /// A key, or `*` for everything pending.
        key: KeySelection,
    },
    /// Stop replicating an active feed with a peer (`approve` resumes it).
    Stop {
        /// Connection id; every peer when absent.
        #[serde(default)]
        peer: Option<PeerId>,
        /// Key.
        key: FeedKey,
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
        /// The wire to speak; the engine's dialing wire when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wire: Option<Wire>,
    },
    /// Create a writable feed and offer it to every peer.
    AddFeed {
        /// Local name.
        name: String,
        /// The feed's generation; hypercore 10 when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wire: Option<Wire>,
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

/// Message types a breakpoint (`: break`, `{"cmd":"break"}`) accepts: the hypercore messages
/// and the multifeed extensions.
pub const BREAK_KINDS: &[&str] = &[
    "Open",
    "Close",
    "Reject",
    "Synchronize",
    "Request",
    "Cancel",
    "Data",
    "NoData",
    "Want",
    "Unwant",
    "Bitfield",
    "Range",
    "Options",
    "Status",
    "Have",
    "Unhave",
    "MULTIFEED_HANDSHAKE",
    "MULTIFEED_MANIFEST",
    "MULTIFEED_REQUEST_FEEDS",
    "MULTIFEED_REPLICATE_FEEDS",
];

/// The breakpoint kind a word names, spelled as the engine matches it. Case does not matter,
/// and the `MULTIFEED_` prefix and an `Extension(…)` wrapper may be left out.
pub fn break_kind(word: &str) -> Option<&'static str> {
    let w = word
        .strip_prefix("Extension(")
        .and_then(|w| w.strip_suffix(')'))
        .unwrap_or(word);
    BREAK_KINDS.iter().copied().find(|k| {
        k.eq_ignore_ascii_case(w)
            || k.strip_prefix("MULTIFEED_")
                .is_some_and(|s| s.eq_ignore_ascii_case(w))
    })
}
