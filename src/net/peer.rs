//! One task per connection: channels, the multifeed exchange on the root channel, and a
//! [`FeedChannel`] for every agreed feed.
//!
//! Channel rules, as protomux has them: a channel is usable once both sides opened it with a
//! capability that proves knowledge of the key. A remote open for a key we have not opened
//! yet waits (its early messages are buffered, bounded) until we open it too. Before the root
//! channel is up, a remote open for any other key, or a reject of our root open, means the
//! peer uses a different multifeed key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blake2::digest::{FixedOutput, Mac};
use blake2::Blake2bMac;
use hypercore_protocol::schema::{NoData, Request, Synchronize};
use hypercore_protocol::{discovery_key, Message};
use tokio::sync::mpsc;

use crate::engine::{PeerCmd, Shared};
use crate::event::{Event, PeerId};
use crate::frame::{self, core, Item, Msg};
use crate::net::replicate::FeedChannel;
use crate::net::transport::{Transport, TransportError};
use crate::session::{Action, Outgoing, Policy, Session};
use crate::wire::{self, FeedKey, FeedMeta};

/// Time allowed between the Noise handshake and the root channel opening on both sides.
pub const ROOT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// After this long without sending, we send an empty keep-alive frame.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A peer that sends nothing, not even a keep-alive, for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Remote opens we have not matched yet, at most; more are rejected.
pub const MAX_PENDING_OPENS: usize = 1024;
/// Messages buffered per not-yet-matched remote channel, at most; more are dropped.
pub const MAX_EARLY_MESSAGES: usize = 1024;
/// Bytes of messages buffered for all not-yet-matched remote channels of a connection, at
/// most; more are dropped.
pub const MAX_EARLY_BYTES: usize = 8 << 20;
/// Received messages held in step mode, at most; reading pauses beyond it.
pub const MAX_HELD: usize = 10_000;
/// Bytes of received messages held in step mode, at most; reading pauses beyond it.
pub const MAX_HELD_BYTES: usize = 64 << 20;
/// Block requests waiting for an answer while the connection is congested, at most; more
/// are answered with NoData (the peer may ask again).
pub const MAX_OWED_REQUESTS: usize = 1 << 18;
/// A congested connection that writes nothing to its socket for this long (the peer reads
/// nothing) is dropped; a slow reader is not.
pub const STALL_TIMEOUT: Duration = IDLE_TIMEOUT;
/// Bytes of a message shown in a `wire` event's hex dump.
const TRACE_HEX_BYTES: usize = 512;
/// Channel messages gathered before a frame is sent.
const FRAME_SOFT_LIMIT: usize = 1 << 20;

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
    let mut mac = <Blake2bMac<blake2::digest::consts::U32> as Mac>::new_from_slice(handshake_hash)
        .expect("a handshake hash is a valid BLAKE2b key");
    Mac::update(
        &mut mac,
        if initiator {
            &NS_INITIATOR
        } else {
            &NS_RESPONDER
        },
    );
    Mac::update(&mut mac, key);
    mac.finalize_fixed().into()
}

enum Role {
    Root,
    Feed(Box<FeedChannel>),
}

struct Chan {
    key: [u8; 32],
    remote: Option<u64>,
    role: Role,
}

struct PendingOpen {
    remote: u64,
    capability: Option<[u8; 32]>,
    early: Vec<Msg>,
    early_bytes: usize,
}

// Queued for one flush only, so the size of the larger variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Out {
    Control(Vec<u8>),
    Msg(u64, Msg),
}

/// Why a peer task ended.
pub type EndReason = String;

/// State of one connection.
pub struct Peer {
    id: PeerId,
    remote_pk: String,
    shared: Arc<Shared>,
    transport: Transport,
    session: Session,
    chans: HashMap<u64, Chan>,
    by_remote: HashMap<u64, u64>,
    by_dkey: HashMap<[u8; 32], u64>,
    pending: HashMap<[u8; 32], PendingOpen>,
    pending_by_remote: HashMap<u64, [u8; 32]>,
    early_bytes: usize,
    rejected: HashMap<[u8; 32], Box<FeedChannel>>,
    next_local: u64,
    root_local: u64,
    root_open: bool,
    out: Vec<Out>,
    out_bytes: usize,
    last_sent: Instant,
    end: Option<(bool, String)>,
    holding: bool,
    held: std::collections::VecDeque<Item>,
    held_bytes: usize,
    breakpoints: std::collections::BTreeSet<String>,
    last_ext_in: HashMap<u64, String>,
    owed: std::collections::VecDeque<(u64, Request)>,
    owed_overflow: bool,
}

impl Peer {
    /// Runs the connection until it ends; returns why.
    pub async fn run(
        id: PeerId,
        shared: Arc<Shared>,
        transport: Transport,
        mut commands: mpsc::UnboundedReceiver<PeerCmd>,
    ) -> EndReason {
        let local_feeds = shared.offer_meta().await;
        let mut peer = Peer {
            id,
            // Offers go through the curator whenever it may say something other than "yes".
            session: Session::new(
                if shared.policy == Policy::AcceptAll && shared.curator.rules.is_empty() {
                    Policy::AcceptAll
                } else {
                    Policy::Manual
                },
                local_feeds,
            ),
            remote_pk: hex::encode(transport.remote_public_key()),
            shared,
            transport,
            chans: HashMap::new(),
            by_remote: HashMap::new(),
            by_dkey: HashMap::new(),
            pending: HashMap::new(),
            pending_by_remote: HashMap::new(),
            early_bytes: 0,
            rejected: HashMap::new(),
            next_local: 1,
            root_local: 0,
            root_open: false,
            out: Vec::new(),
            out_bytes: 0,
            last_sent: Instant::now(),
            end: None,
            holding: false,
            held: Default::default(),
            held_bytes: 0,
            breakpoints: Default::default(),
            last_ext_in: HashMap::new(),
            owed: Default::default(),
            owed_overflow: false,
        };
        peer.holding = peer.shared.step;
        let root_key = peer.shared.root_key.0;
        peer.root_local = peer.open_channel(root_key, Role::Root);
        let started = Instant::now();
        let mut last_heard = Instant::now();
        // When the backlog was last seen over its limit without a byte written since.
        let mut stalled_since: Option<(Instant, u64)> = None;
        let backlog = peer.transport.backlog();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while peer.end.is_none() {
            tokio::select! {
                frames = peer.transport.recv(), if peer.may_read() => match frames {
                    Ok(frames) => {
                        last_heard = Instant::now();
                        for f in frames {
                            peer.on_frame(&f).await;
                        }
                    }
                    Err(TransportError::Closed) => peer.finish(false, "connection closed by the peer".into()),
                    Err(e) => peer.finish(true, e.to_string()),
                },
                _ = backlog.drained(), if peer.transport.congested() => {}
                cmd = commands.recv() => match cmd {
                    Some(cmd) => peer.on_command(cmd).await,
                    None => peer.finish(false, "engine shut down".into()),
                },
                _ = tick.tick() => {
                    // Held messages may include the peer's root open: no verdict while stepping.
                    if !peer.root_open && peer.held.is_empty() && started.elapsed() > ROOT_OPEN_TIMEOUT {
                        peer.different_key(format!(
                            "the root channel did not open within {ROOT_OPEN_TIMEOUT:?}"
                        ));
                    }
                    if last_heard.elapsed() > IDLE_TIMEOUT && peer.may_read() {
                        peer.fail(
                            "idle",
                            format!("the peer sent nothing for {IDLE_TIMEOUT:?} (no complete frame, not even a keep-alive); dropped"),
                        );
                    }
                    let written = backlog.written_total();
                    if !peer.transport.congested() || stalled_since.is_some_and(|(_, w)| w != written) {
                        stalled_since = None;
                    } else if stalled_since.get_or_insert((Instant::now(), written)).0.elapsed() > STALL_TIMEOUT {
                        peer.fail(
                            "stalled",
                            format!("the peer read nothing of what we sent for {STALL_TIMEOUT:?}; dropped"),
                        );
                    }
                    if peer.last_sent.elapsed() >= KEEPALIVE_INTERVAL {
                        if let Err(e) = peer.transport.send(Vec::new()) {
                            peer.finish(true, e.to_string());
                        }
                        peer.last_sent = Instant::now();
                    }
                }
            }
            peer.serve_owed().await;
            if let Err(e) = peer.flush() {
                peer.finish(true, e.to_string());
            }
        }
        let (_, reason) = peer.end.take().unwrap_or_default();
        reason
    }

    /// Whether to read more from the peer: not while step mode holds too much.
    fn may_read(&self) -> bool {
        self.held.len() < MAX_HELD && self.held_bytes < MAX_HELD_BYTES
    }

    /// Forgets a remote open we have not matched, by discovery key.
    fn take_pending(&mut self, dkey: &[u8; 32]) -> Option<PendingOpen> {
        let p = self.pending.remove(dkey)?;
        self.pending_by_remote.remove(&p.remote);
        self.early_bytes -= p.early_bytes;
        Some(p)
    }

    fn finish(&mut self, error: bool, reason: String) {
        if self.end.is_none() {
            self.end = Some((error, reason));
        }
    }

    fn emit(&self, ev: Event) {
        self.shared.emit(ev);
    }

    fn warn(&self, kind: &str, message: String) {
        self.emit(Event::Warning {
            peer: Some(self.id),
            kind: kind.into(),
            message,
        });
    }

    fn fail(&mut self, kind: &str, message: String) {
        self.emit(Event::Error {
            peer: Some(self.id),
            kind: kind.into(),
            message: message.clone(),
        });
        self.finish(true, message);
    }

    fn different_key(&mut self, detail: String) {
        self.fail(
            "different_multifeed_key",
            format!(
                "different multifeed key: the peer does not share our key {} ({detail}); both sides must use the same --key",
                self.shared.root_key.short()
            ),
        );
    }

    fn push(&mut self, o: Out) {
        self.out_bytes += match &o {
            Out::Control(b) => b.len(),
            Out::Msg(_, Msg::Core(Message::Data(d))) => {
                d.block.as_ref().map_or(0, |b| b.value.len()) + 256
            }
            Out::Msg(_, Msg::Extension { payload, .. }) => payload.len() + 64,
            Out::Msg(..) => 32,
        };
        self.out.push(o);
        if self.out_bytes >= FRAME_SOFT_LIMIT {
            if let Err(e) = self.flush() {
                self.finish(true, e.to_string());
            }
        }
    }

    /// Encodes everything queued: control frames alone, channel messages batched.
    fn flush(&mut self) -> Result<(), TransportError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut batch: Vec<(u64, Msg)> = Vec::new();
        if self.shared.trace_wire {
            for o in &self.out {
                match o {
                    Out::Control(bytes) => {
                        let (kind, summary) =
                            match frame::decode(bytes).ok().and_then(|mut v| v.pop()) {
                                Some(item) => (item.kind(), item.summary()),
                                None => ("Control".into(), String::new()),
                            };
                        self.trace("out", None, kind, bytes, summary);
                    }
                    Out::Msg(ch, m) => {
                        let bytes = frame::encode_messages(&[(*ch, m.clone())]);
                        self.trace(
                            "out",
                            Some(*ch),
                            m.kind(),
                            &bytes,
                            format!("channel {ch}: {}", m.summary()),
                        );
                    }
                }
            }
        }
        for o in std::mem::take(&mut self.out) {
            match o {
                Out::Control(bytes) => {
                    if !batch.is_empty() {
                        self.transport
                            .send(frame::encode_messages(&std::mem::take(&mut batch)))?;
                    }
                    self.transport.send(bytes)?;
                }
                Out::Msg(ch, m) => batch.push((ch, m)),
            }
        }
        if !batch.is_empty() {
            self.transport.send(frame::encode_messages(&batch))?;
        }
        self.out_bytes = 0;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn send_msg(&mut self, local: u64, msg: Msg) {
        self.push(Out::Msg(local, msg));
    }

    /// Opens our side of a channel; returns its local id.
    fn open_channel(&mut self, key: [u8; 32], role: Role) -> u64 {
        let dkey = discovery_key(&key);
        let local = self.next_local;
        self.next_local += 1;
        let cap = capability(
            self.transport.is_initiator(),
            self.transport.handshake_hash(),
            &key,
        );
        self.push(Out::Control(frame::encode_open(local, &dkey, &cap)));
        self.chans.insert(
            local,
            Chan {
                key,
                remote: None,
                role,
            },
        );
        self.by_dkey.insert(dkey, local);
        local
    }

    async fn try_match(&mut self, dkey: [u8; 32]) {
        let Some(&local) = self.by_dkey.get(&dkey) else {
            return;
        };
        let Some(p) = self.take_pending(&dkey) else {
            return;
        };
        let key = self.chans[&local].key;
        let expected = capability(
            !self.transport.is_initiator(),
            self.transport.handshake_hash(),
            &key,
        );
        if p.capability != Some(expected) {
            self.fail(
                "bad_capability",
                "the peer opened a channel with a capability that does not match the key; closing the connection".into(),
            );
            return;
        }
        if let Some(c) = self.chans.get_mut(&local) {
            c.remote = Some(p.remote);
        }
        self.by_remote.insert(p.remote, local);
        self.on_channel_open(local).await;
        for m in p.early {
            self.dispatch(local, m).await;
        }
    }

    async fn on_channel_open(&mut self, local: u64) {
        if local == self.root_local {
            self.root_open = true;
            // The root core is virtual and empty here; saying so keeps a JS peer's replicator quiet.
            self.send_msg(
                local,
                core(Synchronize {
                    fork: 0,
                    length: 0,
                    remote_length: 0,
                    downloading: true,
                    uploading: true,
                    can_upgrade: false,
                }),
            );
            let actions = self.session.on_open();
            self.perform(actions).await;
            return;
        }
        let outcome = match self.chans.get_mut(&local).map(|c| &mut c.role) {
            Some(Role::Feed(fc)) => fc.on_open().await,
            _ => return,
        };
        self.apply_outcome(local, outcome).await;
    }

    async fn apply_outcome(&mut self, local: u64, outcome: crate::net::replicate::Outcome) {
        for m in outcome.send {
            self.send_msg(local, m);
        }
        for ev in outcome.events {
            self.emit(ev);
        }
        if let Some(w) = outcome.warning {
            self.warn("bad_data", w);
        }
        if outcome.grew {
            if let Some(Chan {
                role: Role::Feed(fc),
                ..
            }) = self.chans.get(&local)
            {
                self.shared.feed_changed(fc.key, Some(self.id));
            }
        }
    }

    async fn on_frame(&mut self, bytes: &[u8]) {
        let items = match frame::decode(bytes) {
            Ok(items) => items,
            Err(e) => {
                self.warn("malformed_frame", format!("dropped a frame: {e}"));
                return;
            }
        };
        for item in items {
            self.receive(item).await;
        }
    }

    /// The type of a received item, with compressed extension names spelled out.
    fn item_kind(&mut self, item: &Item) -> String {
        if let Item::Message(ch, Ok(Msg::Extension { name, .. })) = item {
            if name.is_empty() {
                let last = self.last_ext_in.get(ch).cloned().unwrap_or_default();
                return format!("Extension({last})");
            }
            // Only channels the peer opened: others cannot grow this map.
            if self.by_remote.contains_key(ch) || self.pending_by_remote.contains_key(ch) {
                self.last_ext_in.insert(*ch, name.clone());
            }
        }
        item.kind()
    }

    fn channel_name(&self, local: Option<u64>) -> String {
        match local {
            None => "control".into(),
            Some(l) if l == self.root_local => "root".into(),
            Some(l) => match self.chans.get(&l) {
                Some(c) => hex::encode(&c.key[..4]),
                None => format!("channel {l}"),
            },
        }
    }

    fn trace(&self, dir: &str, local: Option<u64>, kind: String, bytes: &[u8], summary: String) {
        self.emit(Event::Wire {
            peer: self.id,
            dir: dir.into(),
            channel: self.channel_name(local),
            kind,
            bytes: bytes.len(),
            summary,
            hex: hex::encode(&bytes[..bytes.len().min(TRACE_HEX_BYTES)]),
        });
    }

    /// A received item: traced, then held (step mode) or acted on.
    async fn receive(&mut self, item: Item) {
        let kind = self.item_kind(&item);
        if self.shared.trace_wire {
            let (local, bytes) = match &item {
                Item::Message(remote, Ok(m)) => (
                    self.by_remote.get(remote).copied(),
                    frame::encode_messages(&[(*remote, m.clone())]),
                ),
                Item::Open { channel, .. } | Item::Close { channel } => {
                    (None, frame::encode_close(*channel))
                }
                Item::Reject { channel } => (None, frame::encode_reject(*channel)),
                Item::Message(..) => (None, Vec::new()),
            };
            let bytes = match &item {
                Item::Open {
                    channel,
                    discovery_key,
                    capability,
                    ..
                } => {
                    let dk: [u8; 32] = discovery_key.as_slice().try_into().unwrap_or([0; 32]);
                    frame::encode_open(*channel, &dk, &capability.unwrap_or([0; 32]))
                }
                _ => bytes,
            };
            self.trace("in", local, kind.clone(), &bytes, item.summary());
        }
        let stop_here = self
            .breakpoints
            .iter()
            .any(|b| kind == *b || kind == format!("Extension({b})"));
        if self.holding || stop_here {
            self.holding = true;
            self.emit(Event::Held {
                peer: self.id,
                kind,
                summary: item.summary(),
                waiting: self.held.len() + 1,
            });
            self.held_bytes += item.weight();
            self.held.push_back(item);
            return;
        }
        self.on_item(item).await;
    }

    /// Lets the oldest held item through.
    async fn release_one(&mut self) {
        if let Some(item) = self.held.pop_front() {
            self.held_bytes -= item.weight();
            self.emit(Event::Released {
                peer: self.id,
                kind: item.kind(),
                waiting: self.held.len(),
            });
            self.on_item(item).await;
        }
    }

    async fn on_item(&mut self, item: Item) {
        match item {
            Item::Open {
                channel,
                protocol,
                discovery_key,
                capability,
            } => {
                let Ok(dkey) = <[u8; 32]>::try_from(discovery_key.as_slice()) else {
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
                if self.by_remote.contains_key(&channel)
                    || self.pending_by_remote.contains_key(&channel)
                {
                    self.fail(
                        "protocol",
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
                        "protocol",
                        format!("rejected channel {channel}: the peer already has that core open on another channel"),
                    );
                    return;
                }
                // A second open for a key still waiting replaces the first.
                self.take_pending(&dkey);
                if self.pending.len() >= MAX_PENDING_OPENS {
                    self.push(Out::Control(frame::encode_reject(channel)));
                    self.warn(
                        "limit",
                        format!("rejected a channel: over {MAX_PENDING_OPENS} unmatched opens"),
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
                // A feed whose open the peer rejected earlier (it was not ready for it then)
                // is opened again now that the peer opens it.
                if let Some(fc) = self.rejected.remove(&dkey) {
                    self.open_channel(fc.key.0, Role::Feed(fc));
                }
                self.try_match(dkey).await;
            }
            Item::Reject { channel } => {
                if channel == self.root_local {
                    self.different_key("the peer rejected our root channel".into());
                } else if let Some(c) = self.chans.remove(&channel) {
                    let dkey = discovery_key(&c.key);
                    self.by_dkey.remove(&dkey);
                    if let Role::Feed(fc) = c.role {
                        self.rejected.insert(dkey, fc);
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
                        self.session.on_feed_closed(&FeedKey(c.key));
                        self.push(Out::Control(frame::encode_close(local)));
                    }
                }
            }
            Item::Message(remote, msg) => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        self.warn("malformed_message", format!("dropped a message: {e}"));
                        return;
                    }
                };
                if let Some(&local) = self.by_remote.get(&remote) {
                    self.dispatch(local, msg).await;
                } else if let Some(dkey) = self.pending_by_remote.get(&remote) {
                    let weight = msg.weight();
                    let room = self.early_bytes + weight <= MAX_EARLY_BYTES;
                    if let Some(p) = self.pending.get_mut(dkey) {
                        if room && p.early.len() < MAX_EARLY_MESSAGES {
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

    async fn dispatch(&mut self, local: u64, msg: Msg) {
        if local == self.root_local {
            match msg {
                Msg::Extension { name, payload } => {
                    let actions = self.session.on_extension(&name, &payload);
                    self.perform(actions).await;
                }
                // The root core holds no blocks here.
                Msg::Core(Message::Request(r)) => {
                    self.send_msg(local, core(NoData { request: r.id }))
                }
                Msg::Core(_) => {}
            }
            return;
        }
        // Answers to block requests wait while the peer is not reading what we send: the
        // socket's backlog stays bounded, and reading goes on so that neither side blocks.
        let msg = match msg {
            Msg::Core(Message::Request(r))
                if self.transport.congested() || !self.owed.is_empty() =>
            {
                if self.owed.len() < MAX_OWED_REQUESTS {
                    self.owed.push_back((local, r));
                } else {
                    if !self.owed_overflow {
                        self.owed_overflow = true;
                        self.warn(
                            "limit",
                            format!("over {MAX_OWED_REQUESTS} block requests wait while the peer reads nothing; answering NoData"),
                        );
                    }
                    self.send_msg(local, core(NoData { request: r.id }));
                }
                return;
            }
            m => m,
        };
        let outcome = match (self.chans.get_mut(&local).map(|c| &mut c.role), msg) {
            (Some(Role::Feed(fc)), Msg::Core(m)) => fc.on_message(m).await,
            _ => return,
        };
        self.apply_outcome(local, outcome).await;
    }

    /// Answers waiting requests while the connection has room.
    async fn serve_owed(&mut self) {
        while self.end.is_none() && !self.transport.congested() {
            let Some((local, r)) = self.owed.pop_front() else {
                self.owed_overflow = false;
                return;
            };
            let outcome = match self.chans.get_mut(&local).map(|c| &mut c.role) {
                Some(Role::Feed(fc)) => fc.on_message(Message::Request(r)).await,
                _ => continue,
            };
            self.apply_outcome(local, outcome).await;
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        let id = self.id;
        for a in actions {
            match a {
                Action::Send(o) => self.send_outgoing(o).await,
                Action::HandshakeReceived(h) => self.emit(Event::HandshakeReceived {
                    peer: id,
                    client: h.client,
                    version: h.version,
                }),
                Action::OfferReceived { keys, meta } => self.emit(Event::OfferReceived {
                    peer: id,
                    keys,
                    meta,
                }),
                Action::RequestReceived(keys) => {
                    self.emit(Event::RequestReceived { peer: id, keys })
                }
                Action::ReplicateReceived(keys) => {
                    self.emit(Event::ReplicateReceived { peer: id, keys })
                }
                Action::Pending(keys) => {
                    let mut decided = Vec::new();
                    let mut ask = Vec::new();
                    for key in keys {
                        let meta = self
                            .session
                            .remote_offer
                            .get(&key)
                            .cloned()
                            .unwrap_or_default();
                        match self.shared.curator.decide(&key, &meta, &self.remote_pk) {
                            Some((approve, by)) => decided.push((key, approve, Some(by))),
                            None => ask.push(key),
                        }
                    }
                    if !decided.is_empty() {
                        let actions = self.session.on_decisions(decided);
                        Box::pin(self.perform(actions)).await;
                    }
                    if !ask.is_empty() {
                        self.emit(Event::OfferPending {
                            peer: id,
                            keys: ask,
                        });
                    }
                }
                // The classic policy's implicit yes is not news.
                Action::Decided { reason, .. } if reason.as_deref() == Some("accept-all") => {}
                Action::Decided {
                    key,
                    approved,
                    reason,
                } => self.emit(Event::Decision {
                    peer: id,
                    key,
                    approved,
                    by: reason,
                }),
                Action::Stop(key) => self.stop_feed(key),
                Action::Warn { kind, message } => self.warn(kind, message),
                Action::Fail { kind, message } => self.fail(kind, message),
                Action::Replicate(keys) => {
                    for key in keys {
                        self.start_feed(key).await;
                    }
                }
            }
        }
    }

    async fn send_outgoing(&mut self, o: Outgoing) {
        let id = self.id;
        let root = self.root_local;
        let (name, bodies, event) = match o {
            Outgoing::Handshake(h) => (wire::EXT_HANDSHAKE, vec![wire::encode_handshake(&h)], None),
            Outgoing::Manifest(keys) => {
                let all = self.shared.offer_meta().await;
                let meta: BTreeMap<FeedKey, FeedMeta> = keys
                    .iter()
                    .filter_map(|k| all.get(k).map(|m| (*k, m.clone())))
                    .collect();
                let bodies = wire::encode_manifests(&keys, &meta);
                (
                    wire::EXT_MANIFEST,
                    bodies,
                    Some(Event::OfferSent {
                        peer: id,
                        keys,
                        meta,
                    }),
                )
            }
            Outgoing::Request(keys) => (
                wire::EXT_REQUEST_FEEDS,
                vec![wire::encode_keys(&keys)],
                Some(Event::RequestSent { peer: id, keys }),
            ),
            Outgoing::Replicate(keys) => (
                wire::EXT_REPLICATE_FEEDS,
                vec![wire::encode_keys(&keys)],
                Some(Event::ReplicateSent { peer: id, keys }),
            ),
        };
        for payload in bodies {
            self.send_msg(
                root,
                Msg::Extension {
                    name: name.to_string(),
                    payload,
                },
            );
        }
        if let Some(ev) = event {
            self.emit(ev);
        }
    }

    async fn start_feed(&mut self, key: FeedKey) {
        let feed = match self.shared.replica(key).await {
            Ok(feed) => feed,
            Err(e) => {
                self.session.active.remove(&key);
                self.emit(Event::Error {
                    peer: Some(self.id),
                    kind: "storage".into(),
                    message: e.to_string(),
                });
                return;
            }
        };
        let dkey = discovery_key(&key.0);
        if self.by_dkey.contains_key(&dkey) || self.rejected.contains_key(&dkey) {
            return;
        }
        self.open_channel(key.0, Role::Feed(Box::new(FeedChannel::new(feed, self.id))));
        // Boxed: opening a channel can start the exchange, which can start another feed.
        Box::pin(self.try_match(dkey)).await;
    }

    /// Closes a feed's channel on request; what is stored stays.
    fn stop_feed(&mut self, key: FeedKey) {
        let dkey = discovery_key(&key.0);
        self.rejected.remove(&dkey);
        self.take_pending(&dkey);
        if let Some(local) = self.by_dkey.remove(&dkey) {
            if let Some(c) = self.chans.remove(&local) {
                if let Some(remote) = c.remote {
                    self.by_remote.remove(&remote);
                }
            }
            self.push(Out::Control(frame::encode_close(local)));
        }
        self.emit(Event::FeedStopped { peer: self.id, key });
    }

    async fn on_command(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::LocalFeed(key, meta) => {
                let actions = self.session.on_local_feed(key, meta);
                self.perform(actions).await;
            }
            PeerCmd::FeedChanged(key) => {
                let dkey = discovery_key(&key.0);
                let Some(&local) = self.by_dkey.get(&dkey) else {
                    return;
                };
                let open = self.chans.get(&local).is_some_and(|c| c.remote.is_some());
                if !open {
                    return;
                }
                let outcome = match self.chans.get_mut(&local).map(|c| &mut c.role) {
                    Some(Role::Feed(fc)) => fc.on_local_change().await,
                    _ => return,
                };
                self.apply_outcome(local, outcome).await;
            }
            PeerCmd::Decide { key, approve } => {
                let keys: Vec<FeedKey> = match key {
                    Some(k) if self.session.remote_offer.contains_key(&k) => vec![k],
                    // A decision for every peer reaches peers that never saw the key.
                    Some(_) => return,
                    None => self.session.pending.iter().copied().collect(),
                };
                for k in &keys {
                    if let Err(e) = self.shared.curator.decisions.remember(*k, approve) {
                        self.warn("storage", e);
                    }
                }
                let actions = self
                    .session
                    .on_decisions(keys.into_iter().map(|k| (k, approve, None)).collect());
                self.perform(actions).await;
            }
            PeerCmd::Stop(key) => {
                if !self.session.active.contains(&key) {
                    return;
                }
                let actions = self.session.on_stop(key);
                self.perform(actions).await;
            }
            PeerCmd::Close(reason) => self.finish(false, reason),
            PeerCmd::Hold => self.holding = true,
            PeerCmd::Step => {
                self.holding = true;
                self.release_one().await;
            }
            PeerCmd::Continue => {
                self.holding = false;
                while !self.held.is_empty() && self.end.is_none() {
                    self.release_one().await;
                    if self.out_bytes > 0 {
                        if let Err(e) = self.flush() {
                            self.finish(true, e.to_string());
                        }
                    }
                }
            }
            PeerCmd::Break(kind) => {
                if kind.is_empty() {
                    self.breakpoints.clear();
                } else {
                    self.breakpoints.insert(kind);
                }
            }
        }
    }
}
