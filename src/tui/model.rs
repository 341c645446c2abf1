//! What the screen shows, as a pure fold of engine [`Event`]s. No widget types here.
//!
//! `apply` takes the event and the time it happened (seconds since the session started), so
//! the same fold serves a live engine and a replayed recording.
//!
//! The file is long because `apply` is one match over every kind of event, next to the types
//! it fills; split, a reader would have to hold the fold in two places.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::event::{Direction, Event, PeerId, StoppedBy, Wire};
use crate::wire::FeedKey;

/// Log lines kept; older ones are dropped.
pub const LOG_CAPACITY: usize = 2_000;
/// Rate samples kept per active feed (one per progress event).
pub const RATE_SAMPLES: usize = 32;

/// Where an offered feed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferState {
    /// Waiting for a decision.
    Pending,
    /// Approved by a person.
    Approved,
    /// Declined by a person.
    Declined,
    /// Requested (by the accept-all policy, or after approval).
    Requested,
}

impl OfferState {
    /// A short word for display.
    pub fn label(self) -> &'static str {
        match self {
            OfferState::Pending => "pending",
            OfferState::Approved => "approved",
            OfferState::Declined => "declined",
            OfferState::Requested => "requested",
        }
    }
}

/// One offered feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// What the offerer said about it (display only).
    pub meta: serde_json::Value,
    /// Decision state.
    pub state: OfferState,
}

/// One feed replicating with a peer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Active {
    /// Blocks we hold contiguously.
    pub local_length: u64,
    /// The peer's length.
    pub remote_length: u64,
    /// Bytes received from this peer.
    pub bytes: u64,
    /// Whether we hold all the peer has.
    pub synced: bool,
    /// Whether the peer closed the feed's channel: nothing moves until it is agreed again.
    pub stopped_by_peer: bool,
    /// Recent (time, bytes) samples, for the rate and the sparkline.
    pub samples: VecDeque<(f64, u64)>,
    /// The rate as of the last change: measuring it again on every read meant a cold sample
    /// for each of 10,000 feeds on every frame.
    rate: f64,
}

impl Active {
    /// Bytes per second over the recent samples (0 once synced).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Measures the rate again after the samples or `synced` changed; returns by how much it
    /// moved, for the peer's sum.
    fn remeasure(&mut self) -> f64 {
        let new = match (self.synced, self.samples.front(), self.samples.back()) {
            (false, Some(a), Some(b)) if b.0 > a.0 => b.1.saturating_sub(a.1) as f64 / (b.0 - a.0),
            _ => 0.0,
        };
        let moved = new - self.rate;
        self.rate = new;
        moved
    }

    /// Bytes received between consecutive samples, for a sparkline.
    pub fn deltas(&self) -> Vec<u64> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| b.1.saturating_sub(a.1))
            .collect()
    }
}

/// Everything known about one connection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerView {
    /// Connection id.
    pub id: PeerId,
    /// Remote address.
    pub addr: String,
    /// Whether we dialed.
    pub initiator: bool,
    /// Noise public key, hex.
    pub remote_public_key: String,
    /// The wire the connection speaks.
    pub speaks: Wire,
    /// The name it gave itself (Cabal's `peer-id`: its writer feed's key, hex).
    pub name: Option<String>,
    /// Client and version from its handshake.
    pub client: Option<(String, String)>,
    /// `None` while connected; the reason once disconnected.
    pub disconnected: Option<String>,
    /// Keys we offered it.
    pub local_offer: BTreeSet<FeedKey>,
    /// Keys it offered us.
    pub remote_offer: BTreeMap<FeedKey, Offer>,
    /// Keys we requested from it.
    pub requested: BTreeSet<FeedKey>,
    /// Feeds replicating with it.
    pub active: BTreeMap<FeedKey, Active>,
    /// Last error or warning about it.
    pub last_problem: Option<String>,
    /// Its requests for our feeds that observe mode refused, and the feeds they named.
    pub refused_observing: (u64, u64),
    /// Recent protocol messages (with `--trace-wire`), oldest first.
    pub wire: VecDeque<WireLine>,
    /// Received messages held in step mode, oldest first: (type, fields).
    pub held: VecDeque<(String, String)>,
    /// The sum of its feeds' rates, kept as events change them: adding up 10,000 feeds on
    /// every frame was a third of the frame.
    rate: f64,
}

/// One protocol message, as the wire inspector lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct WireLine {
    /// Seconds since the session started.
    pub at: f64,
    /// Whether it came in.
    pub incoming: bool,
    /// Channel name.
    pub channel: String,
    /// Message type.
    pub kind: String,
    /// Size in bytes.
    pub bytes: usize,
    /// Decoded fields.
    pub summary: String,
    /// Hex of (the start of) the bytes.
    pub hex: String,
}

impl PeerView {
    /// Offers still waiting for a decision.
    pub fn pending(&self) -> usize {
        self.remote_offer
            .values()
            .filter(|o| o.state == OfferState::Pending)
            .count()
    }

    /// Download rate over all its feeds, bytes per second.
    pub fn rate(&self) -> f64 {
        // Rounding in the running sum may leave a hair below zero once every feed is idle.
        self.rate.max(0.0)
    }

    /// A short state word.
    pub fn state(&self) -> &'static str {
        if self.disconnected.is_some() {
            "gone"
        } else if self.client.is_none() {
            "hello"
        } else if self
            .active
            .values()
            .any(|a| !a.synced && a.remote_length > 0)
        {
            "sync"
        } else {
            "live"
        }
    }
}

/// A local feed.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalFeed {
    /// Local name.
    pub name: Option<String>,
    /// Whether we can append.
    pub writable: bool,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Seconds since the session started.
    pub at: f64,
    /// Peer, if the event concerns one.
    pub peer: Option<PeerId>,
    /// Event type, e.g. `offer_received`.
    pub kind: String,
    /// Whether it is a warning or an error.
    pub problem: bool,
    /// Human-readable summary.
    pub text: String,
}

/// The whole view state built from events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// Listening address.
    pub listening: Option<String>,
    /// Connections by id.
    pub peers: BTreeMap<PeerId, PeerView>,
    /// Local feeds.
    pub feeds: BTreeMap<FeedKey, LocalFeed>,
    /// Recent events, oldest first.
    pub log: VecDeque<LogLine>,
    /// Events folded so far.
    pub events: u64,
    /// Errors seen.
    pub errors: u64,
    /// Whether the engine stopped.
    pub stopped: bool,
    /// Peers connected now, counted as they come and go.
    connected: usize,
    /// The connected peers' download rates summed, kept as they change.
    rate: f64,
}

fn short(k: &FeedKey) -> String {
    k.short()
}

fn keys_text(keys: &[FeedKey]) -> String {
    let mut s: Vec<String> = keys.iter().take(4).map(short).collect();
    if keys.len() > 4 {
        s.push(format!("+{}", keys.len() - 4));
    }
    format!("[{}]", s.join(" "))
}

impl Model {
    /// Folds one event, which happened `at` seconds into the session.
    pub fn apply(&mut self, ev: &Event, at: f64) {
        self.events += 1;
        let mut log = |peer: Option<PeerId>, kind: &str, problem: bool, text: String| {
            if self.log.len() == LOG_CAPACITY {
                self.log.pop_front();
            }
            self.log.push_back(LogLine {
                at,
                peer,
                kind: kind.to_string(),
                problem,
                text,
            });
        };
        match ev {
            Event::Listening { addr } => {
                self.listening = Some(addr.clone());
                log(None, "listening", false, format!("listening on {addr}"));
            }
            Event::MetricsListening { addr } => {
                log(
                    None,
                    "metrics",
                    false,
                    format!("metrics at http://{addr}/metrics"),
                );
            }
            Event::ConnectRetry {
                addr,
                attempt,
                retry_in_ms,
                error,
            } => log(
                None,
                "connect_retry",
                false,
                if error.starts_with("the connection ended") {
                    format!("{addr}: {error}; dialing again in {retry_in_ms} ms")
                } else {
                    format!(
                        "dial {addr} failed ({error}); try {} in {retry_in_ms} ms",
                        attempt + 1
                    )
                },
            ),
            Event::PeerConnected {
                peer,
                addr,
                initiator,
                remote_public_key,
                wire,
            } => {
                let before = self.peers.insert(
                    *peer,
                    PeerView {
                        id: *peer,
                        addr: addr.clone(),
                        initiator: *initiator,
                        remote_public_key: remote_public_key.clone(),
                        speaks: *wire,
                        ..Default::default()
                    },
                );
                // Ids are never reused; were one, the connection it replaced stops counting.
                match before {
                    Some(old) if old.disconnected.is_none() => self.rate -= old.rate,
                    _ => self.connected += 1,
                }
                log(
                    Some(*peer),
                    "peer_connected",
                    false,
                    format!(
                        "{} {addr} ({}, {wire})",
                        if *initiator { "dialed" } else { "accepted" },
                        &remote_public_key[..remote_public_key.len().min(8)]
                    ),
                );
            }
            Event::PeerNamed { peer, name } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.name = Some(name.clone());
                }
                log(
                    Some(*peer),
                    "peer_named",
                    false,
                    format!("named itself {}", &name[..name.len().min(16)]),
                );
            }
            Event::HandshakeReceived {
                peer,
                client,
                version,
            } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.client = Some((client.clone(), version.clone()));
                }
                log(
                    Some(*peer),
                    "handshake_received",
                    false,
                    format!("{client} {version}"),
                );
            }
            Event::OfferSent { peer, keys, .. } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.local_offer.extend(keys.iter().copied());
                }
                log(Some(*peer), "offer_sent", false, keys_text(keys));
            }
            Event::OfferReceived { peer, keys, meta } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    for k in keys {
                        // Read once here, not at every frame that shows it.
                        let m = meta.get(k).map_or(serde_json::Value::Null, |m| m.value());
                        p.remote_offer
                            .entry(*k)
                            .and_modify(|o| o.meta = m.clone())
                            .or_insert(Offer {
                                meta: m,
                                state: if p.requested.contains(k) {
                                    OfferState::Requested
                                } else {
                                    OfferState::Pending
                                },
                            });
                    }
                }
                log(Some(*peer), "offer_received", false, keys_text(keys));
            }
            Event::OfferPending { peer, keys } => {
                log(
                    Some(*peer),
                    "offer_pending",
                    false,
                    format!("{} waiting for a decision {}", keys.len(), keys_text(keys)),
                );
            }
            Event::Decision {
                peer,
                key,
                approved,
                by,
            } => {
                if let Some(o) = self
                    .peers
                    .get_mut(peer)
                    .and_then(|p| p.remote_offer.get_mut(key))
                {
                    o.state = if *approved {
                        OfferState::Approved
                    } else {
                        OfferState::Declined
                    };
                }
                log(
                    Some(*peer),
                    "decision",
                    false,
                    format!(
                        "{} {}{}",
                        if *approved { "approved" } else { "declined" },
                        short(key),
                        if by.is_person() {
                            String::new()
                        } else {
                            format!(" by {by}")
                        }
                    ),
                );
            }
            Event::FeedStopped {
                peer,
                key,
                by: StoppedBy::Peer,
            } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.requested.remove(key);
                    if let Some(a) = p.active.get_mut(key) {
                        a.stopped_by_peer = true;
                    }
                }
                log(
                    Some(*peer),
                    "feed_stopped",
                    false,
                    format!("{} by the peer", short(key)),
                );
            }
            Event::FeedStopped { peer, key, .. } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    if let Some(a) = p.active.remove(key) {
                        p.rate -= a.rate();
                        if p.disconnected.is_none() {
                            self.rate -= a.rate();
                        }
                    }
                    p.requested.remove(key);
                    if let Some(o) = p.remote_offer.get_mut(key) {
                        o.state = OfferState::Pending;
                    }
                }
                log(Some(*peer), "feed_stopped", false, short(key));
            }
            Event::RequestSent { peer, keys } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    for k in keys {
                        p.requested.insert(*k);
                        if let Some(o) = p.remote_offer.get_mut(k) {
                            if o.state == OfferState::Pending {
                                o.state = OfferState::Requested;
                            }
                        }
                    }
                }
                log(Some(*peer), "request_sent", false, keys_text(keys));
            }
            Event::RequestReceived { peer, keys } => {
                log(Some(*peer), "request_received", false, keys_text(keys))
            }
            Event::ObserveRefused { peer, keys } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.refused_observing.0 += 1;
                    p.refused_observing.1 += keys.len() as u64;
                }
                log(
                    Some(*peer),
                    "observe_refused",
                    false,
                    format!("{} not served: observe mode", keys_text(keys)),
                );
            }
            Event::ReplicateSent { peer, keys } | Event::ReplicateReceived { peer, keys } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    let sent = matches!(ev, Event::ReplicateSent { .. });
                    for k in keys {
                        if sent || p.requested.contains(k) {
                            p.active.entry(*k).or_default().stopped_by_peer = false;
                        }
                    }
                }
                let kind = if matches!(ev, Event::ReplicateSent { .. }) {
                    "replicate_sent"
                } else {
                    "replicate_received"
                };
                log(Some(*peer), kind, false, keys_text(keys));
            }
            Event::Appended { key, name, length } => log(
                None,
                "appended",
                false,
                format!("{} {name}: length {length}", short(key)),
            ),
            Event::FeedAdded {
                key,
                name,
                writable,
            } => {
                self.feeds.insert(
                    *key,
                    LocalFeed {
                        name: name.clone(),
                        writable: *writable,
                    },
                );
                log(
                    None,
                    "feed_added",
                    false,
                    format!(
                        "{} {}{}",
                        short(key),
                        name.as_deref().unwrap_or(""),
                        if *writable { " (writable)" } else { "" }
                    ),
                );
            }
            Event::FeedProgress {
                peer,
                key,
                local_length,
                remote_length,
                bytes,
            } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    let a = p.active.entry(*key).or_default();
                    a.local_length = *local_length;
                    a.remote_length = *remote_length;
                    a.bytes = *bytes;
                    a.synced = local_length >= remote_length;
                    if a.samples.len() == RATE_SAMPLES {
                        a.samples.pop_front();
                    }
                    a.samples.push_back((at, *bytes));
                    let moved = a.remeasure();
                    p.rate += moved;
                    if p.disconnected.is_none() {
                        self.rate += moved;
                    }
                }
            }
            Event::FeedSynced { peer, key, length } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    let a = p.active.entry(*key).or_default();
                    a.local_length = a.local_length.max(*length);
                    a.remote_length = a.remote_length.max(*length);
                    a.synced = true;
                    let moved = a.remeasure();
                    p.rate += moved;
                    if p.disconnected.is_none() {
                        self.rate += moved;
                    }
                }
                log(
                    Some(*peer),
                    "feed_synced",
                    false,
                    format!("{} at {length}", short(key)),
                );
            }
            Event::Wire {
                peer,
                dir,
                channel,
                kind,
                bytes,
                summary,
                hex,
            } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    if p.wire.len() == LOG_CAPACITY {
                        p.wire.pop_front();
                    }
                    p.wire.push_back(WireLine {
                        at,
                        incoming: *dir == Direction::In,
                        channel: channel.clone(),
                        kind: kind.clone(),
                        bytes: *bytes,
                        summary: summary.clone(),
                        hex: hex.clone(),
                    });
                }
            }
            Event::Held {
                peer,
                kind,
                summary,
                ..
            } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.held.push_back((kind.clone(), summary.clone()));
                }
                log(Some(*peer), "held", false, format!("{kind} {summary}"));
            }
            Event::Released { peer, kind, .. } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.held.pop_front();
                }
                log(Some(*peer), "released", false, kind.clone());
            }
            Event::PeerDisconnected { peer, reason } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    if p.disconnected.is_none() {
                        self.connected -= 1;
                        self.rate -= p.rate;
                    }
                    p.disconnected = Some(reason.clone());
                }
                log(Some(*peer), "peer_disconnected", false, reason.clone());
            }
            Event::Warning {
                peer,
                kind,
                message,
            }
            | Event::Error {
                peer,
                kind,
                message,
            } => {
                let error = matches!(ev, Event::Error { .. });
                if error {
                    self.errors += 1;
                }
                if let Some(p) = peer.and_then(|id| self.peers.get_mut(&id)) {
                    p.last_problem = Some(message.clone());
                }
                log(
                    *peer,
                    if error { "error" } else { "warning" },
                    true,
                    format!("{kind}: {message}"),
                );
            }
            Event::Stopped => {
                self.stopped = true;
                log(None, "stopped", false, "engine stopped".into());
            }
        }
    }

    /// A feed's name: ours, or what any offerer called it.
    pub fn feed_name(&self, key: &FeedKey) -> Option<String> {
        if let Some(name) = self.feeds.get(key).and_then(|f| f.name.clone()) {
            return Some(name);
        }
        self.peers.values().find_map(|p| {
            p.remote_offer
                .get(key)
                .and_then(|o| o.meta.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_string)
        })
    }

    /// Total download rate of the connected peers, bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate.max(0.0)
    }

    /// Peers that are connected.
    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Whether any feed is still transferring (quitting then asks first).
    pub fn transferring(&self) -> bool {
        self.peers.values().any(|p| {
            p.disconnected.is_none() && p.active.values().any(|a| !a.synced && a.remote_length > 0)
        })
    }
}

#[cfg(test)]
mod tests;
