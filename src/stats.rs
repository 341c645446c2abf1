//! Running totals an operator reads from outside: wire messages by type and direction,
//! connections, offers, decisions, problems, and a capped table of feeds.
//!
//! Counting must cost the engine nothing it would notice: every counter on a per-message
//! path is one relaxed atomic add (no lock, no allocation, no formatting). What changes at
//! the rate of events (offers, progress, problems) is folded from the event stream as it is
//! emitted, under a lock no per-message path takes. A reader (the metrics endpoint) copies the
//! values when it is asked; it never holds up the engine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hypercore_protocol::Message;

use crate::event::{DecidedBy, Direction, Event, PeerId, ProblemKind, Wire};
use crate::wire::FeedKey;
use crate::FastHash as Fast;

/// Most feeds shown one by one (labelled by key and name) until the engine sets its
/// `Limits::max_labelled_feeds`; the others are only counted, so that a store of a million
/// feeds does not make a million series.
pub const FEED_LABEL_CAP: usize = crate::limits::Limits::DEFAULT.max_labelled_feeds;

/// Channel message types of the hypercore 10 wire, as counted (control frames excluded).
pub const HC10_MESSAGES: [&str; 10] = [
    "Synchronize",
    "Request",
    "Cancel",
    "Data",
    "NoData",
    "Want",
    "Unwant",
    "Bitfield",
    "Range",
    "Extension",
];

/// Message types of the hypercore 9 wire (hypercore-protocol 8), as counted: the index is
/// the type number for 0–10; a `Have` that carries a bitfield is counted apart.
pub const HC9_MESSAGES: [&str; 14] = [
    "Open",
    "Options",
    "Status",
    "Have",
    "Unhave",
    "Want",
    "Unwant",
    "Request",
    "Cancel",
    "Data",
    "Close",
    "Extension",
    "Unknown",
    "Have+bitfield",
];

/// The hypercore-stats wire counters (`hypercore_total_wire_<name>_{transmitted,received}`)
/// and which counted message types of each wire they add up. The hypercore 9 mapping is by
/// nearest meaning: `Status` says what a side up- and downloads (as `Synchronize` does),
/// `Have` announces a range held, a `Have` with a bitfield is the bitfield.
pub const ECOSYSTEM_WIRE: [(&str, &[&str], &[&str]); 8] = [
    ("sync", &["Synchronize"], &["Status"]),
    ("request", &["Request"], &["Request"]),
    ("data", &["Data"], &["Data"]),
    ("want", &["Want"], &["Want"]),
    ("bitfield", &["Bitfield"], &["Have+bitfield"]),
    ("range", &["Range"], &["Have"]),
    ("extension", &["Extension"], &["Extension"]),
    ("cancel", &["Cancel"], &["Cancel"]),
];

/// Index in [`HC10_MESSAGES`] of a hypercore 10 channel message (`None` for the control
/// messages that are not channel messages).
pub fn hc10_index(m: &Message) -> Option<usize> {
    Some(match m {
        Message::Synchronize(_) => 0,
        Message::Request(_) => 1,
        Message::Cancel(_) => 2,
        Message::Data(_) => 3,
        Message::NoData(_) => 4,
        Message::Want(_) => 5,
        Message::Unwant(_) => 6,
        Message::Bitfield(_) => 7,
        Message::Range(_) => 8,
        Message::Extension(_) => 9,
        Message::Open(_) | Message::Close(_) | Message::LocalSignal(_) => return None,
    })
}

/// Index of an extension message in [`HC10_MESSAGES`].
pub const HC10_EXTENSION: usize = 9;
const HC10_REQUEST: usize = 1;
const HC10_CANCEL: usize = 2;
const HC10_DATA: usize = 3;
const HC10_NO_DATA: usize = 4;
const HC9_REQUEST: usize = 7;
const HC9_CANCEL: usize = 8;
const HC9_DATA: usize = 9;

/// Connection counters, in the order of [`CONNECTIONS`].
const DIAL_ATTEMPTED: usize = 0;
const DIAL_OPENED: usize = 1;
const DIAL_CLOSED: usize = 2;
const ACCEPT_OPENED: usize = 3;
const ACCEPT_CLOSED: usize = 4;

/// Every problem kind, in a fixed order, for counting by kind.
pub const PROBLEM_KINDS: [ProblemKind; 28] = [
    ProblemKind::BadCapability,
    ProblemKind::BadData,
    ProblemKind::Command,
    ProblemKind::Connect,
    ProblemKind::DifferentMultifeedKey,
    ProblemKind::Handshake,
    ProblemKind::Idle,
    ProblemKind::Incompatible,
    ProblemKind::InvalidKey,
    ProblemKind::Limit,
    ProblemKind::Listen,
    ProblemKind::Oversized,
    ProblemKind::Malformed,
    ProblemKind::MalformedFrame,
    ProblemKind::MalformedMessage,
    ProblemKind::Metrics,
    ProblemKind::NotActive,
    ProblemKind::Observe,
    ProblemKind::Panic,
    ProblemKind::Protocol,
    ProblemKind::RefusedRequest,
    ProblemKind::Stalled,
    ProblemKind::Storage,
    ProblemKind::Timeout,
    ProblemKind::Truncated,
    ProblemKind::UnknownExtension,
    ProblemKind::UnknownOffer,
    ProblemKind::UnrequestedFeed,
];

fn problem_index(kind: ProblemKind) -> usize {
    PROBLEM_KINDS
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is listed")
}

/// Who decided, as counted: a person, a rule, a remembered decision, accept-all.
pub const DECIDERS: [&str; 4] = ["person", "rule", "memory", "accept_all"];

fn decider_index(by: &DecidedBy) -> usize {
    match by {
        DecidedBy::Person => 0,
        DecidedBy::Rule(_) => 1,
        DecidedBy::Memory { .. } => 2,
        DecidedBy::AcceptAll => 3,
    }
}

/// One feed as the metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedRow {
    /// Local name, if it has one.
    pub name: Option<String>,
    /// Blocks held contiguously from the start.
    pub held: u64,
    /// The longest length a peer reported.
    pub remote: u64,
    /// Block bytes received from peers since the process started.
    pub bytes: u64,
}

/// What is folded from events, under one lock.
#[derive(Debug)]
struct Folded {
    /// At most this many feeds are labelled.
    cap: usize,
    feeds: BTreeMap<FeedKey, FeedRow>,
    /// Feeds seen beyond [`FEED_LABEL_CAP`].
    unlabelled: HashSet<FeedKey, Fast>,
    /// Bytes a connection last reported for a feed, to add only what is new.
    received: HashMap<(PeerId, FeedKey), u64, Fast>,
}

impl Default for Folded {
    fn default() -> Self {
        Folded {
            cap: FEED_LABEL_CAP,
            feeds: BTreeMap::new(),
            unlabelled: HashSet::default(),
            received: HashMap::default(),
        }
    }
}

impl Folded {
    fn row(&mut self, key: FeedKey) -> Option<&mut FeedRow> {
        if !self.feeds.contains_key(&key) {
            if self.feeds.len() >= self.cap {
                self.unlabelled.insert(key);
                return None;
            }
            self.feeds.insert(key, FeedRow::default());
        }
        self.feeds.get_mut(&key)
    }
}

/// The process's running totals; shared by the engine, its peers and a metrics reader.
#[derive(Debug, Default)]
pub struct Stats {
    hc10: [[AtomicU64; 2]; HC10_MESSAGES.len()],
    hc9: [[AtomicU64; 2]; HC9_MESSAGES.len()],
    blocks_received: AtomicU64,
    block_bytes_received: AtomicU64,
    connections: [AtomicU64; 5],
    peers: AtomicI64,
    in_flight: AtomicI64,
    /// The connections' latest smoothed round-trip times, summed, in µs, and how many.
    rtt_sum_us: AtomicI64,
    rtt_connections: AtomicI64,
    feeds_active: AtomicI64,
    /// Offers waiting for a person, summed over the connections (see
    /// [`Stats::offers_pending_changed`]).
    offers_pending: AtomicI64,
    offers_received: AtomicU64,
    refused_observing: AtomicU64,
    decisions: [[AtomicU64; DECIDERS.len()]; 2],
    problems: [[AtomicU64; PROBLEM_KINDS.len()]; 2],
    folded: Mutex<Folded>,
    storage_bytes: OnceLock<Arc<AtomicU64>>,
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Out => 0,
        Direction::In => 1,
    }
}

fn add(counter: &AtomicI64, by: i64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    /// Fresh totals, shared.
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }

    /// The storage folder's running byte count (`Store::bytes`), for its size on disk.
    pub fn set_storage_bytes(&self, bytes: Arc<AtomicU64>) {
        let _ = self.storage_bytes.set(bytes);
    }

    /// Sets how many feeds are labelled (`Limits::max_labelled_feeds`), before any is seen.
    pub fn set_label_cap(&self, cap: usize) {
        self.fold().cap = cap;
    }

    /// How many feeds are labelled at most.
    pub fn label_cap(&self) -> usize {
        self.fold().cap
    }

    /// Bytes of the files in the storage folder, once the engine opened it.
    pub fn storage_bytes(&self) -> Option<u64> {
        self.storage_bytes.get().map(|b| b.load(Ordering::Relaxed))
    }

    /// A dial attempt.
    pub fn dial_attempted(&self) {
        self.connections[DIAL_ATTEMPTED].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection finished its handshake (`dialed`: we dialed it).
    pub fn connection_opened(&self, dialed: bool) {
        let i = if dialed { DIAL_OPENED } else { ACCEPT_OPENED };
        self.connections[i].fetch_add(1, Ordering::Relaxed);
        add(&self.peers, 1);
    }

    /// A connection that had opened ended.
    pub fn connection_closed(&self, dialed: bool) {
        let i = if dialed { DIAL_CLOSED } else { ACCEPT_CLOSED };
        self.connections[i].fetch_add(1, Ordering::Relaxed);
        add(&self.peers, -1);
    }

    /// A decision on an offered key, whoever took it.
    pub fn decided(&self, approved: bool, by: &DecidedBy) {
        self.decided_many(approved, by, 1);
    }

    /// The same decision on `n` offered keys.
    pub fn decided_many(&self, approved: bool, by: &DecidedBy, n: usize) {
        self.decisions[usize::from(approved)][decider_index(by)]
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Feeds replicating with some peer changed by `by`.
    pub fn feeds_active_changed(&self, by: i64) {
        add(&self.feeds_active, by);
    }

    /// Offers waiting for a person changed by `by`: a connection tells what its session
    /// holds, and gives it all back when it ends.
    pub fn offers_pending_changed(&self, by: i64) {
        add(&self.offers_pending, by);
    }

    /// Folds an event into the totals it moves; called for every event the engine emits.
    pub fn observe(&self, ev: &Event) {
        match ev {
            Event::OfferReceived { keys, .. } => {
                self.offers_received
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
            }
            Event::ObserveRefused { .. } => {
                self.refused_observing.fetch_add(1, Ordering::Relaxed);
            }
            Event::Warning { kind, .. } => self.problem(0, *kind),
            Event::Error { kind, .. } => self.problem(1, *kind),
            Event::FeedAdded { key, name, .. } => {
                if let Some(row) = self.fold().row(*key) {
                    if name.is_some() {
                        row.name.clone_from(name);
                    }
                }
            }
            Event::Appended { key, length, .. } => {
                if let Some(row) = self.fold().row(*key) {
                    row.held = row.held.max(*length);
                }
            }
            Event::FeedProgress {
                peer,
                key,
                local_length,
                remote_length,
                bytes,
            } => {
                let mut f = self.fold();
                let last = f.received.insert((*peer, *key), *bytes).unwrap_or(0);
                if let Some(row) = f.row(*key) {
                    row.held = row.held.max(*local_length);
                    row.remote = row.remote.max(*remote_length);
                    row.bytes += bytes.saturating_sub(last);
                }
            }
            Event::FeedSynced { key, length, .. } => {
                if let Some(row) = self.fold().row(*key) {
                    row.held = row.held.max(*length);
                    row.remote = row.remote.max(*length);
                }
            }
            Event::PeerDisconnected { peer, .. } => {
                self.fold().received.retain(|(p, _), _| p != peer);
            }
            _ => {}
        }
    }

    /// A feed in storage, with its name and length (at start).
    pub fn feed_known(&self, key: FeedKey, name: Option<String>, held: u64) {
        if let Some(row) = self.fold().row(key) {
            row.name = name;
            row.held = row.held.max(held);
        }
    }

    fn problem(&self, severity: usize, kind: ProblemKind) {
        self.problems[severity][problem_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    fn fold(&self) -> std::sync::MutexGuard<'_, Folded> {
        self.folded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of every value, for a reader.
    pub fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        let pair = |p: &[AtomicU64; 2]| [load(&p[0]), load(&p[1])];
        let f = self.fold();
        Snapshot {
            hc10: self.hc10.iter().map(pair).collect(),
            hc9: self.hc9.iter().map(pair).collect(),
            blocks_received: load(&self.blocks_received),
            block_bytes_received: load(&self.block_bytes_received),
            dials_attempted: load(&self.connections[DIAL_ATTEMPTED]),
            dials_opened: load(&self.connections[DIAL_OPENED]),
            dials_closed: load(&self.connections[DIAL_CLOSED]),
            accepts_opened: load(&self.connections[ACCEPT_OPENED]),
            accepts_closed: load(&self.connections[ACCEPT_CLOSED]),
            peers: gauge(&self.peers),
            in_flight: gauge(&self.in_flight),
            rtt_avg_seconds: match gauge(&self.rtt_connections) {
                0 => None,
                n => Some(gauge(&self.rtt_sum_us) as f64 / n as f64 / 1e6),
            },
            feeds_active: gauge(&self.feeds_active),
            offers_received: load(&self.offers_received),
            refused_observing: load(&self.refused_observing),
            offers_pending: gauge(&self.offers_pending),
            decisions: self
                .decisions
                .iter()
                .map(|by| by.iter().map(load).collect())
                .collect(),
            problems: self
                .problems
                .iter()
                .map(|k| k.iter().map(load).collect())
                .collect(),
            feeds: f.feeds.iter().map(|(k, r)| (*k, r.clone())).collect(),
            feeds_unlabelled: f.unlabelled.len() as u64,
        }
    }
}

/// Every value at one moment; see [`Stats::snapshot`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Hypercore 10 messages by [`HC10_MESSAGES`] index: `[sent, received]`.
    pub hc10: Vec<[u64; 2]>,
    /// Hypercore 9 messages by [`HC9_MESSAGES`] index: `[sent, received]`.
    pub hc9: Vec<[u64; 2]>,
    /// Data messages received that carried a block.
    pub blocks_received: u64,
    /// Bytes of those blocks.
    pub block_bytes_received: u64,
    /// Dials tried.
    pub dials_attempted: u64,
    /// Dialed connections that finished their handshake.
    pub dials_opened: u64,
    /// Dialed connections that ended after opening.
    pub dials_closed: u64,
    /// Accepted connections that finished their handshake.
    pub accepts_opened: u64,
    /// Accepted connections that ended after opening.
    pub accepts_closed: u64,
    /// Connections open now.
    pub peers: u64,
    /// Block requests sent and not answered yet, on open connections.
    pub in_flight: u64,
    /// The mean of the open connections' smoothed TCP round-trip times, if any reported one.
    pub rtt_avg_seconds: Option<f64>,
    /// Feeds replicating with some peer, counted once per peer.
    pub feeds_active: u64,
    /// Keys offered to us.
    pub offers_received: u64,
    /// Requests refused in observe mode (each also a `observe_refused` event, no warning).
    pub refused_observing: u64,
    /// Offers waiting for a person.
    pub offers_pending: u64,
    /// Decisions: `[declined, approved][decider]`, deciders as in [`DECIDERS`].
    pub decisions: Vec<Vec<u64>>,
    /// Problems: `[warnings, errors][kind]`, kinds as in [`PROBLEM_KINDS`].
    pub problems: Vec<Vec<u64>>,
    /// Labelled feeds.
    pub feeds: Vec<(FeedKey, FeedRow)>,
    /// Feeds seen beyond the label cap.
    pub feeds_unlabelled: u64,
}

impl Snapshot {
    /// A hypercore-stats wire total: `dir` is `Out` for transmitted.
    pub fn ecosystem_wire(&self, name: &str, dir: Direction) -> u64 {
        let d = dir_index(dir);
        let Some((_, hc10, hc9)) = ECOSYSTEM_WIRE.iter().find(|(n, ..)| *n == name) else {
            return 0;
        };
        let sum = |names: &[&str], all: &[&str], counts: &[[u64; 2]]| -> u64 {
            names
                .iter()
                .filter_map(|n| all.iter().position(|a| a == n))
                .map(|i| counts[i][d])
                .sum()
        };
        sum(hc10, &HC10_MESSAGES, &self.hc10) + sum(hc9, &HC9_MESSAGES, &self.hc9)
    }
}

/// One connection's counting: its wire's message totals and the block requests it has in
/// flight, which leave the total when the connection ends.
#[derive(Debug)]
pub struct ConnStats {
    stats: Arc<Stats>,
    wire: Wire,
    in_flight: u64,
}

impl ConnStats {
    /// Counting for a connection on `wire`.
    pub fn new(stats: Arc<Stats>, wire: Wire) -> ConnStats {
        ConnStats {
            stats,
            wire,
            in_flight: 0,
        }
    }

    /// A message of type `index` (in the wire's list) went `dir`.
    pub fn message(&mut self, dir: Direction, index: usize) {
        let (table, request, cancel, answers): (_, _, _, &[usize]) = match self.wire {
            Wire::Hc10 => (
                &self.stats.hc10[..],
                HC10_REQUEST,
                HC10_CANCEL,
                &[HC10_DATA, HC10_NO_DATA],
            ),
            Wire::Hc9 => (&self.stats.hc9[..], HC9_REQUEST, HC9_CANCEL, &[HC9_DATA]),
        };
        if let Some(pair) = table.get(index) {
            pair[dir_index(dir)].fetch_add(1, Ordering::Relaxed);
        }
        let settled = match dir {
            Direction::Out if index == request => {
                self.in_flight += 1;
                add(&self.stats.in_flight, 1);
                return;
            }
            Direction::Out => index == cancel,
            Direction::In => answers.contains(&index),
        };
        if settled && self.in_flight > 0 {
            self.in_flight -= 1;
            add(&self.stats.in_flight, -1);
        }
    }

    /// A received data message carried a block of `bytes` bytes.
    pub fn block_received(&self, bytes: usize) {
        self.stats.blocks_received.fetch_add(1, Ordering::Relaxed);
        self.stats
            .block_bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// One connection's part in the mean round-trip time: its latest sample, which leaves the
/// mean when the connection ends.
#[derive(Debug)]
pub struct RoundTrip {
    stats: Arc<Stats>,
    last_us: Option<i64>,
}

impl RoundTrip {
    /// A connection that has reported no round-trip time yet.
    pub fn new(stats: Arc<Stats>) -> RoundTrip {
        RoundTrip {
            stats,
            last_us: None,
        }
    }

    /// The connection's round-trip time is now `rtt`.
    pub fn set(&mut self, rtt: std::time::Duration) {
        let us = i64::try_from(rtt.as_micros()).unwrap_or(i64::MAX / 1024);
        match self.last_us.replace(us) {
            Some(old) => add(&self.stats.rtt_sum_us, us - old),
            None => {
                add(&self.stats.rtt_sum_us, us);
                add(&self.stats.rtt_connections, 1);
            }
        }
    }
}

impl Drop for RoundTrip {
    fn drop(&mut self) {
        if let Some(old) = self.last_us {
            add(&self.stats.rtt_sum_us, -old);
            add(&self.stats.rtt_connections, -1);
        }
    }
}

impl Drop for ConnStats {
    fn drop(&mut self) {
        add(&self.stats.in_flight, -(self.in_flight as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_leave_the_in_flight_total_when_answered_or_when_the_connection_ends() {
        let stats = Stats::new();
        let mut c = ConnStats::new(stats.clone(), Wire::Hc10);
        for _ in 0..3 {
            c.message(Direction::Out, HC10_REQUEST);
        }
        c.message(Direction::In, HC10_DATA);
        assert_eq!(stats.snapshot().in_flight, 2);
        drop(c);
        assert_eq!(stats.snapshot().in_flight, 0);
    }

    #[test]
    fn ecosystem_totals_add_both_wires() {
        let stats = Stats::new();
        let mut a = ConnStats::new(stats.clone(), Wire::Hc10);
        let mut b = ConnStats::new(stats.clone(), Wire::Hc9);
        a.message(Direction::In, 0);
        b.message(Direction::In, 2);
        b.message(Direction::Out, 2);
        let s = stats.snapshot();
        assert_eq!(s.ecosystem_wire("sync", Direction::In), 2);
        assert_eq!(s.ecosystem_wire("sync", Direction::Out), 1);
    }

    #[test]
    fn feeds_past_the_cap_are_counted_not_labelled() {
        let stats = Stats::new();
        for i in 0..FEED_LABEL_CAP + 5 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            stats.feed_known(FeedKey(key), None, 1);
        }
        let s = stats.snapshot();
        assert_eq!(s.feeds.len(), FEED_LABEL_CAP);
        assert_eq!(s.feeds_unlabelled, 5);
    }
}
