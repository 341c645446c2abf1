//! The hypercore 10 connection core, without I/O: protomux channels over one encrypted
//! connection, step mode and wire tracing.
//!
//! [`Conn`] takes decrypted frames and the time as input, and gives encoded frames to send and
//! [`Output`]s to act on, one received item at a time: the peer task (`net::peer`) moves the
//! bytes, runs the timers, and acts on each output before the next item is looked at, so a
//! message can rely on everything before it having been carried out. A second wire generation
//! is a sibling of this module that gives the same outputs.
//!
//! Channel rules, as protomux has them: a channel is usable once both sides opened it with a
//! capability that proves knowledge of the key. A remote open for a key we have not opened
//! yet waits (its early messages are buffered, bounded) until we open it too. Before the root
//! channel is up, a remote open for any other key, or a reject of our root open, means the
//! peer uses a different multifeed key.
//!
//! Every channel but the root carries a payload of the caller's (`T`: the feed's replicator),
//! which the core keeps and hands back but never looks at.
//!
//! This file is one state machine whose channel tables, inbox and out-queue change together,
//! so it stays whole; what only a person debugging needs (step mode, tracing) is in `inspect`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use hypercore_protocol::schema::{NoData, Synchronize};
use hypercore_protocol::{discovery_key, Message};

use crate::event::{Direction, Event, PeerId, ProblemKind, Wire};
use crate::frame::{self, core, Incoming, Item, Msg};
use crate::limits::Limits;
pub use crate::net::output::Output;
use crate::stats::{self, ConnStats, Stats};
use crate::wire::FeedKey;

/// Bytes of a message shown in a `wire` event's hex dump.
const TRACE_HEX_BYTES: usize = 512;
/// Channel messages gathered before a frame is sealed, in bytes.
const FRAME_SOFT_LIMIT: usize = 1 << 20;
/// Blocks gathered before a frame is sealed. A frame is acted on only once it has arrived
/// whole, so an answer to a window of requests goes out in several frames: the downloader
/// verifies the first while the uploader reads and seals the next, and asks for more while
/// the rest is on its way. Sealed as one, the two sides would take turns.
const FRAME_BLOCKS_SOFT_LIMIT: usize = 64;
/// Messages whose room the outgoing list keeps between frames.
const OUT_KEPT: usize = 256;

const NS_INITIATOR: [u8; 32] = [
    0x51, 0x81, 0x2a, 0x2a, 0x35, 0x9b, 0x50, 0x36, 0x95, 0x36, 0x77, 0x5d, 0xf8, 0x9e, 0x18, 0xe4,
    0x77, 0x40, 0xf3, 0xdb, 0x72, 0xac, 0x0a, 0xe7, 0x0b, 0x29, 0x59, 0x4c, 0x19, 0x4d, 0xc3, 0x16,
];
const NS_RESPONDER: [u8; 32] = [
    0x04, 0x38, 0x49, 0x2d, 0x02, 0x97, 0x0c, 0xc1, 0x35, 0x28, 0xac, 0x02, 0x62, 0xbc, 0xa0, 0x07,
    0x4e, 0x09, 0x26, 0x26, 0x02, 0x56, 0x86, 0x5a, 0xcc, 0xc0, 0xbf, 0x15, 0xbd, 0x79, 0x12, 0x7d,
];

/// The capability a side sends for `key`: BLAKE2b-256 keyed by the handshake hash over the
/// side's namespace and the key.
pub fn capability(initiator: bool, handshake_hash: &[u8], key: &[u8; 32]) -> [u8; 32] {
    let ns = if initiator {
        &NS_INITIATOR
    } else {
        &NS_RESPONDER
    };
    crate::net::keyed_hash(handshake_hash, &[ns, key])
}

struct Chan<T> {
    key: [u8; 32],
    remote: Option<u64>,
    /// `None` for the root channel.
    payload: Option<T>,
}

struct PendingOpen {
    remote: u64,
    capability: Option<[u8; 32]>,
    early: Vec<Msg>,
    early_bytes: usize,
}

// Queued for one frame only, so the size of the larger variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Out {
    Control(Vec<u8>),
    Msg(u64, Msg),
}

/// One connection's channels, as a state machine.
pub struct Conn<T> {
    peer: PeerId,
    limits: Limits,
    initiator: bool,
    handshake_hash: Vec<u8>,
    trace: bool,
    /// Looked up for every message (ids are few and bounded: a fast hash is enough).
    chans: HashMap<u64, Chan<T>, crate::FastHash>,
    by_remote: HashMap<u64, u64, crate::FastHash>,
    by_dkey: HashMap<[u8; 32], u64>,
    pending: HashMap<[u8; 32], PendingOpen>,
    pending_by_remote: HashMap<u64, [u8; 32]>,
    early_bytes: usize,
    /// Our opens the peer rejected (it was not ready for them), opened again when it opens.
    rejected: HashMap<[u8; 32], ([u8; 32], T)>,
    next_local: u64,
    root_local: u64,
    root_open: bool,
    /// Received items not looked at yet.
    inbox: VecDeque<Incoming>,
    holding: bool,
    held: VecDeque<Item>,
    held_bytes: usize,
    /// Held items let through and not yet acted on (the oldest of `held`).
    releasing: usize,
    breakpoints: BTreeSet<String>,
    last_ext_in: HashMap<u64, String>,
    outputs: VecDeque<Output<T>>,
    out: Vec<Out>,
    out_bytes: usize,
    /// Blocks among them.
    out_blocks: usize,
    sealed: VecDeque<Vec<u8>>,
    started: Instant,
    last_heard: Instant,
    last_sent: Instant,
    /// The latest time an input brought.
    now: Instant,
    end: Option<(bool, String)>,
    /// The kind of the error that ended the connection, if one did.
    ended_by: Option<ProblemKind>,
    counts: ConnStats,
    /// Messages received that did not decode.
    malformed: usize,
}

/// What a connection is set up with.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The connection's id, for events.
    pub peer: PeerId,
    /// Whether we dialed.
    pub initiator: bool,
    /// The Noise handshake hash, which capabilities are keyed by.
    pub handshake_hash: Vec<u8>,
    /// The multifeed key: the root channel's key.
    pub root_key: [u8; 32],
    /// Report every message as a `wire` event.
    pub trace: bool,
    /// Start holding received messages.
    pub step: bool,
    /// The limits it keeps (`root_open_timeout`, `keepalive_interval`, `idle_timeout`,
    /// `max_pending_opens`, `max_early_*`, `max_held*`).
    pub limits: Limits,
    /// Where messages are counted.
    pub stats: std::sync::Arc<Stats>,
}

impl<T> Conn<T> {
    /// A connection whose handshake just completed; it opens the root channel at once.
    pub fn new(setup: Setup, now: Instant) -> Self {
        let mut conn = Conn {
            peer: setup.peer,
            limits: setup.limits,
            initiator: setup.initiator,
            handshake_hash: setup.handshake_hash,
            trace: setup.trace,
            chans: HashMap::default(),
            by_remote: HashMap::default(),
            by_dkey: HashMap::new(),
            pending: HashMap::new(),
            pending_by_remote: HashMap::new(),
            early_bytes: 0,
            rejected: HashMap::new(),
            next_local: 1,
            root_local: 0,
            root_open: false,
            inbox: VecDeque::new(),
            holding: setup.step,
            held: VecDeque::new(),
            held_bytes: 0,
            releasing: 0,
            breakpoints: BTreeSet::new(),
            last_ext_in: HashMap::new(),
            outputs: VecDeque::new(),
            out: Vec::new(),
            out_bytes: 0,
            out_blocks: 0,
            sealed: VecDeque::new(),
            started: now,
            last_heard: now,
            last_sent: now,
            now,
            end: None,
            ended_by: None,
            counts: ConnStats::new(setup.stats, Wire::Hc10),
            malformed: 0,
        };
        conn.root_local = conn.open_channel(setup.root_key, None);
        conn
    }

    /// Why the connection ended (`true`: an error), once it has.
    pub fn end(&self) -> Option<&(bool, String)> {
        self.end.as_ref()
    }

    /// Ends the connection (the first reason given stays).
    pub fn finish(&mut self, error: bool, reason: String) {
        if self.end.is_none() {
            self.end = Some((error, reason));
        }
    }

    /// The peer closed the connection (a peer of another key rejects our root channel
    /// first, which is reported as such).
    pub fn peer_closed(&mut self) {
        self.finish(false, "connection closed by the peer".into());
    }

    /// Whether to read more from the peer: not while received items wait, nor while step
    /// mode holds too much.
    pub fn may_read(&self) -> bool {
        self.inbox.is_empty()
            && self.held.len() < self.limits.max_held
            && self.held_bytes < self.limits.max_held_bytes
    }

    /// A decrypted frame arrived. A batch's messages are decoded as they are taken.
    pub fn receive(&mut self, bytes: Vec<u8>, now: Instant) {
        self.now = now;
        self.last_heard = now;
        match frame::decode_owned(bytes) {
            Ok(Incoming::Empty) => {}
            Ok(incoming) => self.inbox.push_back(incoming),
            Err(e) => self.warn(ProblemKind::MalformedFrame, format!("dropped a frame: {e}")),
        }
    }

    /// The next received item, in order; a message is counted as it is taken.
    fn next_received(&mut self) -> Option<Item> {
        let item = loop {
            match self.inbox.front_mut()? {
                Incoming::Batch(b) => match b.next_item() {
                    Some(item) => break item,
                    None => {
                        self.inbox.pop_front();
                    }
                },
                _ => {
                    if let Some(Incoming::One(item)) = self.inbox.pop_front() {
                        break item;
                    }
                }
            }
        };
        if let Item::Message(_, Ok(m)) = &item {
            self.count(Direction::In, m);
        }
        Some(item)
    }

    /// The next thing to act on, looking at the next received item if nothing is queued;
    /// `None` once everything received was looked at (or held).
    pub fn poll(&mut self) -> Option<Output<T>> {
        loop {
            if let Some(o) = self.outputs.pop_front() {
                return Some(o);
            }
            if self.end.is_some() {
                return None;
            }
            if self.releasing > 0 {
                self.releasing -= 1;
                let item = self.held.pop_front()?;
                self.held_bytes -= item.weight();
                self.event(Event::Released {
                    peer: self.peer,
                    kind: item.kind(),
                    waiting: self.held.len(),
                });
                self.on_item(item);
                continue;
            }
            let item = self.next_received()?;
            self.receive_item(item);
        }
    }

    /// Time passed: the root-open verdict, the idle timeout and keep-alives.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        // Held messages may include the peer's root open: no verdict while stepping.
        if !self.root_open
            && self.held.is_empty()
            && now.duration_since(self.started) > self.limits.root_open_timeout
        {
            // A peer of another key says so with a channel of its own or a reject, at once;
            // one that opens nothing at all is slow or is no multifeed peer.
            self.fail(
                ProblemKind::Timeout,
                format!(
                    "the peer opened no channel within {:?} of the handshake: it is busy, or it \
                     is no multifeed peer (one with another key than {} says so at once)",
                    self.limits.root_open_timeout,
                    FeedKey(self.chans[&self.root_local].key).short()
                ),
            );
        }
        let idle = self.limits.idle_timeout;
        if now.duration_since(self.last_heard) > idle && self.may_read() {
            self.fail(
                ProblemKind::Idle,
                format!("the peer sent nothing for {idle:?} (no complete frame, not even a keep-alive); dropped"),
            );
        }
        if now.duration_since(self.last_sent) >= self.limits.keepalive_interval
            && self.out.is_empty()
        {
            self.sealed.push_back(Vec::new());
            self.last_sent = now;
        }
    }

    /// Frames ready to send now, without sealing the one being gathered.
    pub fn take_sealed(&mut self) -> Option<Vec<u8>> {
        self.sealed.pop_front()
    }

    /// Seals what is gathered; every frame to send, in order, then comes from
    /// [`Conn::take_sealed`].
    pub fn seal(&mut self, now: Instant) {
        self.now = now;
        if self.out.is_empty() {
            return;
        }
        if self.trace {
            self.trace_out();
        }
        let mut batch: Vec<(u64, Msg)> = Vec::with_capacity(self.out.len());
        for o in self.out.drain(..) {
            match o {
                Out::Control(bytes) => {
                    if !batch.is_empty() {
                        self.sealed
                            .push_back(frame::encode_messages(&std::mem::take(&mut batch)));
                    }
                    self.sealed.push_back(bytes);
                }
                Out::Msg(ch, m) => batch.push((ch, m)),
            }
        }
        if !batch.is_empty() {
            self.sealed.push_back(frame::encode_messages(&batch));
        }
        // Room for the next frame's messages stays, unless a burst made it large.
        if self.out.capacity() > OUT_KEPT {
            self.out = Vec::new();
        }
        self.out_bytes = 0;
        self.out_blocks = 0;
        self.last_sent = now;
    }

    /// Sends a message on a feed channel.
    pub fn send(&mut self, local: u64, msg: Msg) {
        self.push(Out::Msg(local, msg));
    }

    /// Sends an extension message on the root channel.
    pub fn send_root_extension(&mut self, name: &str, payload: Vec<u8>) {
        self.push(Out::Msg(
            self.root_local,
            Msg::Extension {
                name: name.to_string(),
                payload,
            },
        ));
    }

    /// Opens a feed's channel with what it carries; `false` (and the payload dropped) if it
    /// is open or waiting already.
    pub fn open(&mut self, key: FeedKey, payload: T) -> bool {
        let dkey = discovery_key(&key.0);
        if self.by_dkey.contains_key(&dkey) || self.rejected.contains_key(&dkey) {
            return false;
        }
        self.open_channel(key.0, Some(payload));
        self.try_match(dkey);
        true
    }

    /// Closes a feed's channel on our side; returns what it carried.
    pub fn close(&mut self, key: &FeedKey) -> Option<T> {
        let dkey = discovery_key(&key.0);
        let mut payload = self.rejected.remove(&dkey).map(|(_, p)| p);
        self.take_pending(&dkey);
        if let Some(local) = self.by_dkey.remove(&dkey) {
            if let Some(c) = self.chans.remove(&local) {
                if let Some(remote) = c.remote {
                    self.by_remote.remove(&remote);
                }
                payload = payload.or(c.payload);
            }
            self.push(Out::Control(frame::encode_close(local)));
        }
        payload
    }

    /// Our id of a feed's channel, if it is open on both sides.
    pub fn open_channel_of(&self, key: &FeedKey) -> Option<u64> {
        let local = *self.by_dkey.get(&discovery_key(&key.0))?;
        self.chans
            .get(&local)
            .is_some_and(|c| c.remote.is_some())
            .then_some(local)
    }

    /// What a feed channel carries.
    pub fn payload_mut(&mut self, local: u64) -> Option<&mut T> {
        self.chans.get_mut(&local)?.payload.as_mut()
    }

    fn event(&mut self, ev: Event) {
        self.outputs.push_back(Output::Event(ev));
    }

    /// Reports a problem that does not end the connection.
    pub fn warn(&mut self, kind: ProblemKind, message: String) {
        self.event(Event::Warning {
            peer: Some(self.peer),
            kind,
            message,
        });
    }

    /// A received message did not decode: a warning, and past
    /// [`Limits::max_malformed_messages`] (unknown types aside) the end of the connection.
    fn malformed(&mut self, e: frame::FrameError) {
        // A type from a newer protocol is not counted against the peer: it may send one
        // per feed for good.
        if !matches!(e, frame::FrameError::UnknownType(_)) {
            self.malformed += 1;
        }
        let most = self.limits.max_malformed_messages;
        match crate::net::malformed_message(self.malformed, most, &e) {
            (true, why) => self.fail(ProblemKind::MalformedMessage, why),
            (false, why) => self.warn(ProblemKind::MalformedMessage, why),
        }
    }

    /// Reports an error and ends the connection.
    pub fn fail(&mut self, kind: ProblemKind, message: String) {
        self.event(Event::Error {
            peer: Some(self.peer),
            kind,
            message: message.clone(),
        });
        if self.end.is_none() {
            self.ended_by = Some(kind);
        }
        self.finish(true, message);
    }

    /// The kind of the error that ended the connection: `None` while it runs, and when it
    /// ended without one (closed by the peer, a socket error).
    pub fn ended_by(&self) -> Option<ProblemKind> {
        self.ended_by
    }

    fn different_key(&mut self, detail: String) {
        self.fail(
            ProblemKind::DifferentMultifeedKey,
            format!(
                "different multifeed key: the peer does not share our key {} ({detail}); both sides must use the same --key",
                FeedKey(self.chans[&self.root_local].key).short()
            ),
        );
    }

    /// Counts a channel message: every one in and out passes here.
    fn count(&mut self, dir: Direction, m: &Msg) {
        let index = match m {
            Msg::Extension { .. } => Some(stats::HC10_EXTENSION),
            Msg::Core(c) => stats::hc10_index(c),
        };
        if let Some(i) = index {
            self.counts.message(dir, i);
        }
        if let (Direction::In, Msg::Core(Message::Data(d))) = (dir, m) {
            if let Some(b) = &d.block {
                self.counts.block_received(b.value.len());
            }
        }
    }

    fn push(&mut self, o: Out) {
        if let Out::Msg(_, m) = &o {
            self.count(Direction::Out, m);
        }
        self.out_bytes += match &o {
            Out::Control(b) => b.len(),
            Out::Msg(_, Msg::Core(Message::Data(d))) => {
                self.out_blocks += 1;
                d.block.as_ref().map_or(0, |b| b.value.len()) + 256
            }
            Out::Msg(_, Msg::Extension { payload, .. }) => payload.len() + 64,
            Out::Msg(..) => 32,
        };
        self.out.push(o);
        if self.out_bytes >= FRAME_SOFT_LIMIT || self.out_blocks >= FRAME_BLOCKS_SOFT_LIMIT {
            self.seal(self.now);
        }
    }

    /// Forgets a remote open we have not matched, by discovery key.
    fn take_pending(&mut self, dkey: &[u8; 32]) -> Option<PendingOpen> {
        let p = self.pending.remove(dkey)?;
        self.pending_by_remote.remove(&p.remote);
        self.early_bytes -= p.early_bytes;
        Some(p)
    }

    /// Opens our side of a channel; returns its local id.
    fn open_channel(&mut self, key: [u8; 32], payload: Option<T>) -> u64 {
        let dkey = discovery_key(&key);
        let local = self.next_local;
        self.next_local += 1;
        let cap = capability(self.initiator, &self.handshake_hash, &key);
        self.push(Out::Control(frame::encode_open(local, &dkey, &cap)));
        self.chans.insert(
            local,
            Chan {
                key,
                remote: None,
                payload,
            },
        );
        self.by_dkey.insert(dkey, local);
        local
    }

    /// Completes a channel both sides opened, checking the peer's capability.
    fn try_match(&mut self, dkey: [u8; 32]) {
        let Some(&local) = self.by_dkey.get(&dkey) else {
            return;
        };
        let Some(p) = self.take_pending(&dkey) else {
            return;
        };
        let expected = capability(
            !self.initiator,
            &self.handshake_hash,
            &self.chans[&local].key,
        );
        if p.capability != Some(expected) {
            self.fail(
                ProblemKind::BadCapability,
                "the peer opened a channel with a capability that does not match the key; closing the connection".into(),
            );
            return;
        }
        if let Some(c) = self.chans.get_mut(&local) {
            c.remote = Some(p.remote);
        }
        self.by_remote.insert(p.remote, local);
        if local == self.root_local {
            self.root_open = true;
            // The root core is virtual and empty here; saying so keeps a JS peer's replicator
            // quiet.
            self.push(Out::Msg(
                local,
                core(Synchronize {
                    fork: 0,
                    length: 0,
                    remote_length: 0,
                    downloading: true,
                    uploading: true,
                    can_upgrade: false,
                }),
            ));
            self.outputs.push_back(Output::RootOpened);
        } else {
            self.outputs.push_back(Output::FeedOpened { local });
        }
        for m in p.early {
            self.dispatch(local, m);
        }
    }

    fn on_item(&mut self, item: Item) {
        match item {
            Item::Open {
                channel,
                protocol,
                discovery_key,
                capability,
            } => self.on_open(channel, &protocol, &discovery_key, capability),
            Item::Reject { channel } => {
                if channel == self.root_local {
                    self.different_key("the peer rejected our root channel".into());
                } else if let Some(c) = self.chans.remove(&channel) {
                    let dkey = discovery_key(&c.key);
                    self.by_dkey.remove(&dkey);
                    if let Some(payload) = c.payload {
                        self.rejected.insert(dkey, (c.key, payload));
                    }
                }
            }
            Item::Close { channel } => {
                self.last_ext_in.remove(&channel);
                if let Some(dkey) = self.pending_by_remote.get(&channel).copied() {
                    self.take_pending(&dkey);
                }
                if let Some(local) = self.by_remote.remove(&channel) {
                    if local == self.root_local {
                        self.finish(false, "the peer closed the multifeed channel".into());
                    } else if let Some(c) = self.chans.remove(&local) {
                        self.by_dkey.remove(&discovery_key(&c.key));
                        self.push(Out::Control(frame::encode_close(local)));
                        if let Some(payload) = c.payload {
                            self.outputs.push_back(Output::FeedClosed {
                                key: FeedKey(c.key),
                                payload,
                            });
                        }
                    }
                }
            }
            Item::Message(remote, msg) => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        self.malformed(e);
                        return;
                    }
                };
                if let Some(&local) = self.by_remote.get(&remote) {
                    self.dispatch(local, msg);
                } else if let Some(dkey) = self.pending_by_remote.get(&remote) {
                    let weight = msg.weight();
                    let room = self.early_bytes + weight <= self.limits.max_early_bytes;
                    let max_messages = self.limits.max_early_messages;
                    if let Some(p) = self.pending.get_mut(dkey) {
                        if room && p.early.len() < max_messages {
                            p.early.push(msg);
                            p.early_bytes += weight;
                            self.early_bytes += weight;
                        }
                    }
                }
                // Messages for channels that are not open are ignored, as protomux does.
            }
        }
    }

    fn on_open(
        &mut self,
        channel: u64,
        protocol: &str,
        discovery_key: &[u8],
        capability: Option<[u8; 32]>,
    ) {
        let Ok(dkey) = <[u8; 32]>::try_from(discovery_key) else {
            self.push(Out::Control(frame::encode_reject(channel)));
            return;
        };
        // Channel 0 is the control channel; protomux rejects opens of it too.
        if protocol != frame::PROTOCOL_NAME || channel == 0 {
            self.push(Out::Control(frame::encode_reject(channel)));
            return;
        }
        if !self.root_open && !self.by_dkey.contains_key(&dkey) {
            self.push(Out::Control(frame::encode_reject(channel)));
            self.different_key("the peer opened a channel for another key first".into());
            return;
        }
        if self.by_remote.contains_key(&channel) || self.pending_by_remote.contains_key(&channel) {
            self.fail(
                ProblemKind::Protocol,
                format!("the peer opened its channel {channel} again without closing it; closing the connection"),
            );
            return;
        }
        let matched = self
            .by_dkey
            .get(&dkey)
            .is_some_and(|l| self.chans.get(l).is_some_and(|c| c.remote.is_some()));
        if matched {
            self.push(Out::Control(frame::encode_reject(channel)));
            self.warn(
                ProblemKind::Protocol,
                format!("rejected channel {channel}: the peer already has that core open on another channel"),
            );
            return;
        }
        // A second open for a key still waiting replaces the first.
        self.take_pending(&dkey);
        // An open that matches one of ours does not wait, so it never counts against the
        // limit: a flood of opens for unknown keys cannot block the feeds we agreed on.
        let waits = !self.by_dkey.contains_key(&dkey) && !self.rejected.contains_key(&dkey);
        let max = self.limits.max_pending_opens;
        if waits && self.pending.len() >= max {
            self.push(Out::Control(frame::encode_reject(channel)));
            self.warn(
                ProblemKind::Limit,
                format!("rejected a channel: over {max} unmatched opens"),
            );
            return;
        }
        self.pending.insert(
            dkey,
            PendingOpen {
                remote: channel,
                capability,
                early: Vec::new(),
                early_bytes: 0,
            },
        );
        self.pending_by_remote.insert(channel, dkey);
        // A feed whose open the peer rejected earlier is opened again now that the peer
        // opens it.
        if let Some((key, payload)) = self.rejected.remove(&dkey) {
            self.open_channel(key, Some(payload));
        }
        self.try_match(dkey);
    }

    /// A message on a channel open on both sides.
    fn dispatch(&mut self, local: u64, msg: Msg) {
        if local != self.root_local {
            if let Msg::Core(msg) = msg {
                self.outputs.push_back(Output::FeedMessage { local, msg });
            }
            return;
        }
        match msg {
            Msg::Extension { name, payload } => {
                self.outputs
                    .push_back(Output::RootExtension { name, payload });
            }
            // The root core holds no blocks here.
            Msg::Core(Message::Request(r)) => {
                self.push(Out::Msg(local, core(NoData { request: r.id })))
            }
            Msg::Core(_) => {}
        }
    }
}

mod inspect;
#[cfg(test)]
mod tests;
