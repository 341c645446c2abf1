//! Where engine events wait between the engine's channel and the fold: in arrival order, at most
//! [`CAPACITY`] of them, so a busy engine can make neither the UI's memory nor its lag grow.
//!
//! - Progress of one feed from one peer coalesces: a newer `feed_progress` takes the place of
//!   the one still waiting (the model keeps only the latest lengths), unless another event of
//!   that peer came in between, so no progress moves across a sync, a stop or a disconnect.
//! - When the queue is full, a `wire` line (the inspector's history of one message) is dropped
//!   and counted. Any other event makes room by handing the oldest waiting event to the fold at
//!   once: offers, decisions, errors, connects and disconnects are never dropped.

use std::collections::{HashMap, VecDeque};

use crate::event::{Event, PeerId};
use crate::wire::FeedKey;

/// Most events waiting to be folded.
pub const CAPACITY: usize = 16_384;

/// What the inbox did so far, for the screen and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Events taken from the engine.
    pub received: u64,
    /// Progress events that replaced a waiting one of the same feed and peer.
    pub coalesced: u64,
    /// Wire lines dropped because the queue was full.
    pub dropped: u64,
    /// Events waiting now.
    pub waiting: usize,
    /// Most events that ever waited at once.
    pub peak: usize,
}

/// The bounded, coalescing queue of events on their way to the fold.
#[derive(Debug, Default)]
pub struct Inbox {
    /// Waiting events with the time they arrived (seconds into the session).
    queue: VecDeque<(f64, Event)>,
    /// Sequence number of the front of `queue`.
    head: u64,
    /// Where the waiting progress of each feed and peer is, by sequence number.
    progress: HashMap<(PeerId, FeedKey), u64>,
    /// Each peer's newest waiting event that progress must not move across.
    fence: HashMap<PeerId, u64>,
    stats: IngestStats,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes an event that arrived `at` seconds into the session. When the queue is full and
    /// the event cannot be dropped, the oldest waiting event comes back: fold it now.
    pub fn push(&mut self, at: f64, ev: Event) -> Option<(f64, Event)> {
        self.stats.received += 1;
        if let Event::FeedProgress { peer, key, .. } = &ev {
            let slot = (*peer, *key);
            if let Some(&seq) = self.progress.get(&slot) {
                if self.fence.get(peer).is_none_or(|&f| f < seq) {
                    self.queue[(seq - self.head) as usize] = (at, ev);
                    self.stats.coalesced += 1;
                    return None;
                }
            }
        }
        let mut overflow = None;
        if self.queue.len() >= CAPACITY {
            if matches!(ev, Event::Wire { .. }) {
                self.stats.dropped += 1;
                return None;
            }
            overflow = self.pop();
        }
        let seq = self.head + self.queue.len() as u64;
        match &ev {
            Event::FeedProgress { peer, key, .. } => {
                self.progress.insert((*peer, *key), seq);
            }
            Event::Wire { .. } => {}
            other => {
                if let Some(peer) = peer_of(other) {
                    self.fence.insert(peer, seq);
                }
            }
        }
        self.queue.push_back((at, ev));
        self.stats.waiting = self.queue.len();
        self.stats.peak = self.stats.peak.max(self.queue.len());
        overflow
    }

    /// The oldest waiting event, with the time it arrived.
    pub fn pop(&mut self) -> Option<(f64, Event)> {
        let (at, ev) = self.queue.pop_front()?;
        let seq = self.head;
        self.head += 1;
        self.stats.waiting = self.queue.len();
        // Forget positions that pointed at this event, so the maps stay as small as the queue.
        match &ev {
            Event::FeedProgress { peer, key, .. } => {
                let slot = (*peer, *key);
                if self.progress.get(&slot) == Some(&seq) {
                    self.progress.remove(&slot);
                }
            }
            other => {
                if let Some(peer) = peer_of(other) {
                    if self.fence.get(&peer) == Some(&seq) {
                        self.fence.remove(&peer);
                    }
                }
            }
        }
        Some((at, ev))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// What the inbox did so far.
    pub fn stats(&self) -> IngestStats {
        self.stats
    }
}

/// The peer an event concerns, if any.
fn peer_of(ev: &Event) -> Option<PeerId> {
    match ev {
        Event::PeerConnected { peer, .. }
        | Event::HandshakeReceived { peer, .. }
        | Event::PeerNamed { peer, .. }
        | Event::OfferSent { peer, .. }
        | Event::OfferReceived { peer, .. }
        | Event::OfferPending { peer, .. }
        | Event::Decision { peer, .. }
        | Event::FeedStopped { peer, .. }
        | Event::RequestSent { peer, .. }
        | Event::RequestReceived { peer, .. }
        | Event::ObserveRefused { peer, .. }
        | Event::ReplicateSent { peer, .. }
        | Event::ReplicateReceived { peer, .. }
        | Event::FeedProgress { peer, .. }
        | Event::FeedSynced { peer, .. }
        | Event::Wire { peer, .. }
        | Event::Held { peer, .. }
        | Event::Released { peer, .. }
        | Event::PeerDisconnected { peer, .. } => Some(*peer),
        Event::Warning { peer, .. } | Event::Error { peer, .. } => *peer,
        Event::Listening { .. }
        | Event::MetricsListening { .. }
        | Event::ConnectRetry { .. }
        | Event::FeedAdded { .. }
        | Event::Appended { .. }
        | Event::Stopped => None,
    }
}

#[cfg(test)]
mod tests;
