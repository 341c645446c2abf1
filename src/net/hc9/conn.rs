//! The hypercore-protocol 8 connection core, without I/O: what multifeed 6 and Cabal peers
//! speak. It gives the same [`Output`]s as the hypercore 10 core (`net::hc10`), so the peer
//! task, the multifeed session and everything above do not know which wire a peer speaks.
//!
//! Channel rules, as hypercore-protocol 8 has them: channel ids are the sender's own, from 1
//! up, and channel 0 is the stream itself (Options and the multifeed extensions). A remote
//! Open names a feed by its discovery key and proves it knows the key with a capability keyed
//! by the transport's split keys. Before the root channel is open, a remote Open for another
//! key means the peer uses a different multifeed key (JavaScript multifeed says "Exchange key
//! did not match remote"). Stream extensions are sent by index into the sender's sorted
//! Options list; the receiver maps them back through the sender's latest Options.
//!
//! It takes decrypted frames (after their length) and gives framed plaintext to encrypt and
//! send, one received message at a time, with step mode, breakpoints and wire tracing as on
//! hypercore 10.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::caps::discovery_key;
use super::extensions::{LocalExtensions, RemoteExtensions};
use super::frame::{self, Item, KEEP_ALIVE};
use super::message::{Close, Message, Open};
use super::noise::Split;
use crate::event::{Direction, Event, PeerId, ProblemKind, Wire};
use crate::limits::Limits;
use crate::net::output::Output;
use crate::stats::{ConnStats, Stats};
use crate::wire::{self, FeedKey};

/// Bytes of a message shown in a `wire` event's hex dump.
const TRACE_HEX_BYTES: usize = 512;
/// Framed bytes gathered before they are sealed.
const SEAL_SOFT_LIMIT: usize = 1 << 20;
/// Blocks gathered before they are sealed: the answer to a window of requests leaves in
/// pieces, so that the downloader starts on the first while the rest is being read.
const SEAL_BLOCKS_SOFT_LIMIT: usize = 64;
/// hypercore-protocol 8 ends a stream that is silent for 20 s and pings every 10 s; a
/// keep-alive at least this often keeps a JavaScript peer from timing out.
const KEEPALIVE_AT_MOST: Duration = Duration::from_secs(10);

/// The extensions multifeed 6 registers on the stream, which we speak.
const EXTENSIONS: [&str; 4] = [
    wire::EXT_HANDSHAKE,
    wire::EXT_MANIFEST,
    wire::EXT_REQUEST_FEEDS,
    wire::EXT_REPLICATE_FEEDS,
];

/// What a connection is set up with.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The connection's id, for events.
    pub peer: PeerId,
    /// The transport keys, which capabilities are keyed by.
    pub split: Split,
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
    /// Our writer feed's key, which the connection names us by as Cabal does (its `peer-id`
    /// extension, sent once at the start); `None` sends no name and announces no `peer-id`.
    pub name: Option<FeedKey>,
}

struct Chan<T> {
    key: [u8; 32],
    remote: Option<u64>,
    /// `None` for the root channel.
    payload: Option<T>,
}

struct PendingOpen {
    remote: u64,
    capability: Option<Vec<u8>>,
    early: Vec<Message>,
    early_bytes: usize,
}

/// One connection's channels, as a state machine.
pub struct Conn<T> {
    peer: PeerId,
    limits: Limits,
    split: Split,
    trace: bool,
    chans: HashMap<u64, Chan<T>>,
    by_remote: HashMap<u64, u64>,
    by_dkey: HashMap<[u8; 32], u64>,
    pending: HashMap<[u8; 32], PendingOpen>,
    pending_by_remote: HashMap<u64, [u8; 32]>,
    early_bytes: usize,
    next_local: u64,
    root_local: u64,
    root_open: bool,
    /// The peer closed the root channel: the session ends with its last feed channel.
    root_closed: bool,
    /// Root extensions that came before the peer's root Open.
    early_root: Vec<(String, Vec<u8>)>,
    local_ext: LocalExtensions,
    remote_ext: RemoteExtensions,
    /// The peer's extension names as of the latest Options received, held or not: what a
    /// person reads in traced and held messages.
    arrived_ext: RemoteExtensions,
    told_unknown_extension: bool,
    /// Received messages not looked at yet, by the sender's channel id.
    inbox: VecDeque<(u64, Message)>,
    holding: bool,
    held: VecDeque<(u64, Message)>,
    held_bytes: usize,
    releasing: usize,
    breakpoints: BTreeSet<String>,
    outputs: VecDeque<Output<T, Message>>,
    out: Vec<u8>,
    /// Blocks in `out`.
    out_blocks: usize,
    sealed: VecDeque<Vec<u8>>,
    started: Instant,
    last_heard: Instant,
    last_sent: Instant,
    now: Instant,
    end: Option<(bool, String)>,
    /// The kind of the error that ended the connection, if one did.
    ended_by: Option<ProblemKind>,
    counts: ConnStats,
    /// Messages received that did not decode.
    malformed: usize,
}

fn weight(m: &Message) -> usize {
    match m {
        Message::Data(d) => d.value.as_ref().map_or(0, Vec::len) + 64 * d.nodes.len() + 128,
        Message::Extension(e) => e.payload.len() + 16,
        Message::Have(h) => h.bitfield.as_ref().map_or(0, Vec::len) + 32,
        Message::Unknown { body, .. } => body.len() + 16,
        _ => 32,
    }
}

/// A one-line account of a message, for a person.
fn summary(m: &Message) -> String {
    match m {
        Message::Open(o) => format!("discovery key {}", hex::encode(&o.discovery_key)),
        Message::Options(o) => format!("extensions [{}]", o.extensions.join(", ")),
        Message::Status(s) => format!(
            "uploading {} downloading {}",
            s.uploading(),
            s.downloading()
        ),
        Message::Have(h) => format!(
            "start {} length {}{}",
            h.start,
            h.length(),
            if h.bitfield.is_some() {
                " (bitfield)"
            } else {
                ""
            }
        ),
        Message::Unhave(u) => format!("start {} length {}", u.start, u.length()),
        Message::Want(w) => format!("start {} length {}", w.start, w.length.unwrap_or(0)),
        Message::Unwant(w) => format!("start {} length {}", w.start, w.length.unwrap_or(0)),
        Message::Request(r) => format!("index {} nodes {}", r.index, r.nodes.unwrap_or(0)),
        Message::Cancel(c) => format!("index {}", c.index),
        Message::Data(d) => format!(
            "index {} {} bytes, {} nodes{}",
            d.index,
            d.value.as_ref().map_or(0, Vec::len),
            d.nodes.len(),
            if d.signature.is_some() {
                ", signed"
            } else {
                ""
            }
        ),
        Message::Close(_) => String::new(),
        Message::Extension(e) => format!(
            "{}",
            String::from_utf8_lossy(&e.payload[..e.payload.len().min(200)])
        ),
        Message::Unknown { kind, body } => format!("type {kind}, {} bytes", body.len()),
    }
}

impl<T> Conn<T> {
    /// A connection whose handshake just completed; it opens the root channel at once.
    pub fn new(setup: Setup, now: Instant) -> Self {
        let mut conn = Conn {
            peer: setup.peer,
            limits: setup.limits,
            split: setup.split,
            trace: setup.trace,
            chans: HashMap::new(),
            by_remote: HashMap::new(),
            by_dkey: HashMap::new(),
            pending: HashMap::new(),
            pending_by_remote: HashMap::new(),
            early_bytes: 0,
            next_local: 1,
            root_local: 0,
            root_open: false,
            root_closed: false,
            early_root: Vec::new(),
            local_ext: LocalExtensions::with(EXTENSIONS),
            remote_ext: RemoteExtensions::new(),
            arrived_ext: RemoteExtensions::new(),
            told_unknown_extension: false,
            inbox: VecDeque::new(),
            holding: setup.step,
            held: VecDeque::new(),
            held_bytes: 0,
            releasing: 0,
            breakpoints: BTreeSet::new(),
            outputs: VecDeque::new(),
            out: Vec::new(),
            out_blocks: 0,
            sealed: VecDeque::new(),
            started: now,
            last_heard: now,
            last_sent: now,
            now,
            end: None,
            ended_by: None,
            counts: ConnStats::new(setup.stats, Wire::Hc9),
            malformed: 0,
        };
        conn.root_local = conn.open_channel(setup.root_key, None);
        if let Some(key) = setup.name {
            // As cabal-core's swarm does: right after our root Open, before the peer's.
            conn.local_ext.add(wire::EXT_CABAL_PEER_ID);
            conn.send_root_extension(wire::EXT_CABAL_PEER_ID, wire::encode_peer_id(&key));
        }
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

    /// The peer closed the connection. Before the root channel opened, that is how
    /// multifeed 6 answers a root channel of another key ("Exchange key did not match
    /// remote"): it may close before its own root Open is even sent.
    pub fn peer_closed(&mut self) {
        if self.root_open {
            return self.finish(false, "connection closed by the peer".into());
        }
        self.fail(
            ProblemKind::DifferentMultifeedKey,
            format!(
                "the peer closed the connection before opening the multifeed channel: it most likely uses another multifeed key than ours ({}); both sides must use the same --key",
                FeedKey(self.chans[&self.root_local].key).short()
            ),
        );
    }

    /// Whether to read more from the peer: not while received messages wait, nor while step
    /// mode holds too much.
    pub fn may_read(&self) -> bool {
        self.inbox.is_empty()
            && self.held.len() < self.limits.max_held
            && self.held_bytes < self.limits.max_held_bytes
    }

    /// A decrypted frame's contents arrived (empty: a keep-alive).
    pub fn receive(&mut self, bytes: Vec<u8>, now: Instant) {
        self.now = now;
        self.last_heard = now;
        match frame::decode_frame(&bytes) {
            Ok(Item::KeepAlive) => {}
            Ok(Item::Message { channel, message }) => {
                self.count(Direction::In, &message);
                self.inbox.push_back((channel, message))
            }
            Err(e) => self.malformed(e),
        }
    }

    /// The next thing to act on, looking at the next received message if nothing is queued;
    /// `None` once everything received was looked at (or held).
    pub fn poll(&mut self) -> Option<Output<T, Message>> {
        loop {
            if let Some(o) = self.outputs.pop_front() {
                return Some(o);
            }
            if self.end.is_some() {
                return None;
            }
            if self.releasing > 0 {
                self.releasing -= 1;
                let (ch, m) = self.held.pop_front()?;
                self.held_bytes -= weight(&m);
                self.event(Event::Released {
                    peer: self.peer,
                    kind: self.kind_of(&m),
                    waiting: self.held.len(),
                });
                self.on_message(ch, m);
                continue;
            }
            let (ch, m) = self.inbox.pop_front()?;
            self.receive_message(ch, m);
        }
    }

    /// Time passed: the root-open verdict, the idle timeout and keep-alives.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if !self.root_open
            && self.held.is_empty()
            && now.duration_since(self.started) > self.limits.root_open_timeout
        {
            // Multifeed 6 with another key closes the connection (see `peer_closed`); a
            // peer that keeps it open and says nothing is slow, or no multifeed peer.
            self.fail(
                ProblemKind::Timeout,
                format!(
                    "the peer did not open the multifeed channel within {:?}: it is busy, or it is no multifeed peer; does it share our key {}?",
                    self.limits.root_open_timeout,
                    FeedKey(self.chans[&self.root_local].key).short()
                ),
            );
        }
        let idle = self.limits.idle_timeout;
        if now.duration_since(self.last_heard) > idle && self.may_read() {
            self.fail(
                ProblemKind::Idle,
                format!("the peer sent nothing for {idle:?} (not even a keep-alive); dropped"),
            );
        }
        let every = self.limits.keepalive_interval.min(KEEPALIVE_AT_MOST);
        if now.duration_since(self.last_sent) >= every && self.out.is_empty() {
            self.sealed.push_back(KEEP_ALIVE.to_vec());
            self.last_sent = now;
        }
    }

    /// Framed bytes ready to send now, without sealing what is being gathered.
    pub fn take_sealed(&mut self) -> Option<Vec<u8>> {
        self.sealed.pop_front()
    }

    /// Seals what is gathered; everything to send then comes from [`Conn::take_sealed`].
    pub fn seal(&mut self, now: Instant) {
        self.now = now;
        if self.out.is_empty() {
            return;
        }
        self.sealed.push_back(std::mem::take(&mut self.out));
        self.out_blocks = 0;
        self.last_sent = now;
    }

    /// Sends a message on a feed channel.
    pub fn send(&mut self, local: u64, msg: Message) {
        self.push(local, msg);
    }

    /// Sends a stream extension message (Options first, the first time).
    pub fn send_root_extension(&mut self, name: &str, payload: Vec<u8>) {
        match self.local_ext.send(name, payload) {
            Some(msgs) => {
                for m in msgs {
                    self.push(0, m);
                }
            }
            None => self.warn(
                ProblemKind::Protocol,
                format!("no extension {name} on this wire; not sent"),
            ),
        }
    }

    /// Opens a feed's channel with what it carries; `false` (and the payload dropped) if it
    /// is open already.
    pub fn open(&mut self, key: FeedKey, payload: T) -> bool {
        let dkey = discovery_key(&key.0);
        if self.by_dkey.contains_key(&dkey) {
            return false;
        }
        self.open_channel(key.0, Some(payload));
        self.try_match(dkey);
        true
    }

    /// Closes a feed's channel on our side; returns what it carried.
    pub fn close(&mut self, key: &FeedKey) -> Option<T> {
        let dkey = discovery_key(&key.0);
        self.take_pending(&dkey);
        let local = self.by_dkey.remove(&dkey)?;
        let c = self.chans.remove(&local)?;
        if let Some(remote) = c.remote {
            self.by_remote.remove(&remote);
        }
        self.push(local, Message::Close(Close::default()));
        c.payload
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

    /// Reports a problem that does not end the connection.
    pub fn warn(&mut self, kind: ProblemKind, message: String) {
        self.event(Event::Warning {
            peer: Some(self.peer),
            kind,
            message,
        });
    }

    /// A received message did not decode: a warning, and past
    /// [`Limits::max_malformed_messages`] the end of the connection.
    fn malformed(&mut self, e: frame::FrameError) {
        self.malformed += 1;
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

    /// Starts holding received messages.
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Lets the oldest held message through and keeps holding.
    pub fn step(&mut self) {
        self.holding = true;
        self.releasing = (self.releasing + 1).min(self.held.len());
    }

    /// Lets every held message through and stops holding.
    pub fn resume(&mut self) {
        self.holding = false;
        self.releasing = self.held.len();
    }

    /// Holds when a message of `kind` arrives; an empty kind clears every breakpoint.
    pub fn set_breakpoint(&mut self, kind: String) {
        if kind.is_empty() {
            self.breakpoints.clear();
        } else {
            self.breakpoints.insert(kind);
        }
    }

    fn event(&mut self, ev: Event) {
        self.outputs.push_back(Output::Event(ev));
    }

    /// A message's type, with a stream extension's name spelled out.
    fn kind_of(&self, m: &Message) -> String {
        match m {
            Message::Extension(e) => match self.arrived_ext.name(e.id) {
                Some(name) => format!("Extension({name})"),
                None => format!("Extension(#{})", e.id),
            },
            m => m.name().to_string(),
        }
    }

    fn channel_name(&self, local: Option<u64>, remote: u64) -> String {
        // The stream itself carries the multifeed exchange: shown as the root, as on
        // hypercore 10.
        if remote == 0 && local.is_none() {
            return "root".into();
        }
        match local {
            Some(l) if l == self.root_local => "root".into(),
            Some(l) => match self.chans.get(&l) {
                Some(c) => hex::encode(&c.key[..4]),
                None => format!("channel {l}"),
            },
            None => format!("channel {remote}"),
        }
    }

    fn traced(&mut self, dir: Direction, channel: String, kind: String, ch: u64, m: &Message) {
        let bytes = frame::encode(ch, m);
        let ev = Event::Wire {
            peer: self.peer,
            dir,
            channel,
            kind,
            bytes: bytes.len(),
            summary: summary(m),
            hex: hex::encode(&bytes[..bytes.len().min(TRACE_HEX_BYTES)]),
        };
        self.event(ev);
    }

    /// Counts a message: every one in and out passes here.
    fn count(&mut self, dir: Direction, m: &Message) {
        // The index in `stats::HC9_MESSAGES`: the type number, but for the three below.
        let index = match m {
            Message::Have(h) if h.bitfield.is_some() => 13,
            Message::Extension(_) => 11,
            Message::Unknown { .. } => 12,
            m => usize::from(m.kind()),
        };
        self.counts.message(dir, index);
        if let (Direction::In, Message::Data(d)) = (dir, m) {
            if let Some(v) = &d.value {
                self.counts.block_received(v.len());
            }
        }
    }

    fn push(&mut self, local: u64, m: Message) {
        self.count(Direction::Out, &m);
        if self.trace {
            let channel = if local == 0 {
                "root".into()
            } else {
                self.channel_name(Some(local), local)
            };
            let kind = match &m {
                Message::Extension(e) => format!(
                    "Extension({})",
                    self.local_ext
                        .names()
                        .get(e.id as usize)
                        .cloned()
                        .unwrap_or_default()
                ),
                m => m.name().to_string(),
            };
            self.traced(Direction::Out, channel, kind, local, &m);
        }
        frame::encode_into(&mut self.out, local, &m);
        self.out_blocks += usize::from(matches!(m, Message::Data(_)));
        if self.out.len() >= SEAL_SOFT_LIMIT || self.out_blocks >= SEAL_BLOCKS_SOFT_LIMIT {
            self.seal(self.now);
        }
    }

    /// A received message: traced, then held (step mode) or acted on.
    fn receive_message(&mut self, ch: u64, m: Message) {
        if let (0, Message::Options(o)) = (ch, &m) {
            self.arrived_ext.on_options(o);
        }
        if !self.trace && !self.holding && self.breakpoints.is_empty() {
            self.on_message(ch, m);
            return;
        }
        let kind = self.kind_of(&m);
        if self.trace {
            let local = self.by_remote.get(&ch).copied();
            let channel = self.channel_name(local, ch);
            self.traced(Direction::In, channel, kind.clone(), ch, &m);
        }
        let stop_here = self
            .breakpoints
            .iter()
            .any(|b| kind == *b || kind == format!("Extension({b})"));
        if self.holding || stop_here {
            self.holding = true;
            self.event(Event::Held {
                peer: self.peer,
                kind,
                summary: summary(&m),
                waiting: self.held.len() + 1,
            });
            self.held_bytes += weight(&m);
            self.held.push_back((ch, m));
            return;
        }
        self.on_message(ch, m);
    }

    fn take_pending(&mut self, dkey: &[u8; 32]) -> Option<PendingOpen> {
        let p = self.pending.remove(dkey)?;
        self.pending_by_remote.remove(&p.remote);
        self.early_bytes -= p.early_bytes;
        Some(p)
    }

    fn open_channel(&mut self, key: [u8; 32], payload: Option<T>) -> u64 {
        let dkey = discovery_key(&key);
        let local = self.next_local;
        self.next_local += 1;
        let open = Open {
            discovery_key: dkey.to_vec(),
            capability: Some(self.split.capability(&key).to_vec()),
        };
        self.chans.insert(
            local,
            Chan {
                key,
                remote: None,
                payload,
            },
        );
        self.by_dkey.insert(dkey, local);
        self.push(local, Message::Open(open));
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
        let key = self.chans[&local].key;
        if !self
            .split
            .verify_remote_capability(&key, p.capability.as_deref())
        {
            let why = if local == self.root_local {
                "the peer's capability for the multifeed key does not match: it does not know our key"
            } else {
                "the peer opened a channel with a capability that does not match the key"
            };
            self.fail(
                ProblemKind::BadCapability,
                format!("{why}; closing the connection"),
            );
            return;
        }
        if let Some(c) = self.chans.get_mut(&local) {
            c.remote = Some(p.remote);
        }
        self.by_remote.insert(p.remote, local);
        if local == self.root_local {
            self.root_open = true;
            self.outputs.push_back(Output::RootOpened);
            for (name, payload) in std::mem::take(&mut self.early_root) {
                self.outputs
                    .push_back(Output::RootExtension { name, payload });
            }
        } else {
            self.outputs.push_back(Output::FeedOpened { local });
        }
        for m in p.early {
            self.dispatch(local, m);
        }
    }

    fn on_message(&mut self, ch: u64, m: Message) {
        if ch == 0 {
            return self.on_stream_message(m);
        }
        match m {
            Message::Open(o) => self.on_open(ch, o),
            Message::Close(_) => {
                if let Some(dkey) = self.pending_by_remote.get(&ch).copied() {
                    self.take_pending(&dkey);
                }
                let Some(local) = self.by_remote.remove(&ch) else {
                    return;
                };
                if local == self.root_local {
                    // A peer that is not live closes the root channel once it has set its
                    // feeds replicating, and ends the stream when their channels are closed
                    // too.
                    self.root_closed = true;
                } else if let Some(c) = self.chans.remove(&local) {
                    self.by_dkey.remove(&discovery_key(&c.key));
                    self.push(local, Message::Close(Close::default()));
                    if let Some(payload) = c.payload {
                        self.outputs.push_back(Output::FeedClosed {
                            key: FeedKey(c.key),
                            payload,
                        });
                    }
                }
                if self.root_closed && self.by_remote.is_empty() {
                    self.finish(false, "the peer ended the multifeed session".into());
                }
            }
            m => {
                if let Some(&local) = self.by_remote.get(&ch) {
                    self.dispatch(local, m);
                } else if let Some(dkey) = self.pending_by_remote.get(&ch) {
                    let w = weight(&m);
                    let room = self.early_bytes + w <= self.limits.max_early_bytes;
                    let max_messages = self.limits.max_early_messages;
                    if let Some(p) = self.pending.get_mut(dkey) {
                        if room && p.early.len() < max_messages {
                            p.early.push(m);
                            p.early_bytes += w;
                            self.early_bytes += w;
                        }
                    }
                }
                // Messages for channels nobody opened are ignored, as hypercore-protocol does.
            }
        }
    }

    fn on_stream_message(&mut self, m: Message) {
        match m {
            Message::Options(o) => self.remote_ext.on_options(&o),
            Message::Extension(e) => {
                let Some(name) = self.remote_ext.name(e.id).map(str::to_string) else {
                    if !self.told_unknown_extension {
                        self.told_unknown_extension = true;
                        self.warn(
                            ProblemKind::Protocol,
                            format!(
                                "the peer sent extension #{} that its Options do not list; ignored (and any more like it)",
                                e.id
                            ),
                        );
                    }
                    return;
                };
                // Extensions other peers add (Cabal's `peer-id`) are passed on: the session
                // ignores what it does not know.
                if self.root_open {
                    self.outputs.push_back(Output::RootExtension {
                        name,
                        payload: e.payload,
                    });
                } else {
                    let w = e.payload.len();
                    if self.early_root.len() < self.limits.max_early_messages
                        && self.early_bytes + w <= self.limits.max_early_bytes
                    {
                        self.early_bytes += w;
                        self.early_root.push((name, e.payload));
                    }
                }
            }
            Message::Open(_) => self.fail(
                ProblemKind::Protocol,
                "the peer opened a feed on channel 0, which is the stream itself; closing the connection".into(),
            ),
            // Nothing else means anything on the stream.
            _ => {}
        }
    }

    fn on_open(&mut self, ch: u64, o: Open) {
        let Ok(dkey) = <[u8; 32]>::try_from(o.discovery_key.as_slice()) else {
            self.warn(
                ProblemKind::Protocol,
                format!(
                    "the peer opened channel {ch} with a discovery key of {} bytes; ignored",
                    o.discovery_key.len()
                ),
            );
            return;
        };
        if !self.root_open && !self.by_dkey.contains_key(&dkey) {
            self.fail(
                ProblemKind::DifferentMultifeedKey,
                format!(
                    "different multifeed key: the peer does not share our key {} (it opened a channel for another key first); both sides must use the same --key",
                    FeedKey(self.chans[&self.root_local].key).short()
                ),
            );
            return;
        }
        if self.by_remote.contains_key(&ch) || self.pending_by_remote.contains_key(&ch) {
            self.fail(
                ProblemKind::Protocol,
                format!("the peer opened its channel {ch} again without closing it; closing the connection"),
            );
            return;
        }
        let matched = self
            .by_dkey
            .get(&dkey)
            .is_some_and(|l| self.chans.get(l).is_some_and(|c| c.remote.is_some()));
        if matched {
            self.warn(
                ProblemKind::Protocol,
                format!(
                    "ignored channel {ch}: the peer already has that feed open on another channel"
                ),
            );
            return;
        }
        self.take_pending(&dkey);
        let waits = !self.by_dkey.contains_key(&dkey);
        let max = self.limits.max_pending_opens;
        if waits && self.pending.len() >= max {
            self.warn(
                ProblemKind::Limit,
                format!("ignored channel {ch}: over {max} unmatched opens"),
            );
            return;
        }
        self.pending.insert(
            dkey,
            PendingOpen {
                remote: ch,
                capability: o.capability,
                early: Vec::new(),
                early_bytes: 0,
            },
        );
        self.pending_by_remote.insert(ch, dkey);
        self.try_match(dkey);
    }

    /// A message on a channel open on both sides.
    fn dispatch(&mut self, local: u64, m: Message) {
        // The root feed is virtual: nothing on its channel but its Open and Close matters.
        if local == self.root_local {
            return;
        }
        self.outputs
            .push_back(Output::FeedMessage { local, msg: m });
    }
}
