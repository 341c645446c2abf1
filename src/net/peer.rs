//! One task per connection: the shell around the connection core of the connection's wire
//! ([`crate::net::hc10`] or [`crate::net::hc9::conn`]).
//!
//! It moves bytes between the transport and the core, runs the timers, and acts on the core's
//! outputs: root extensions go to the multifeed [`Session`], feed messages to each feed's
//! replicator ([`FeedChannel`] or [`Hc9Channel`]), decisions to the [`Curator`]. The two
//! wires differ only below [`WireCore`] and [`FeedSide`]: the session, the curator and the
//! storage see the same calls. It owns what needs I/O (storage, the socket's
//! backlog) and nothing the core could decide. It reports upward through [`PeerContext`]: events
//! to the front end, [`Report`]s to the engine, which does the fan-out to other peers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use hypercore_protocol::schema::NoData;
use hypercore_protocol::Message;
use tokio::sync::mpsc;

use crate::core::Hash;
use crate::event::{DecidedBy, Event, KeySelection, PeerId, ProblemKind, StoppedBy, Wire};
use crate::frame::{core, Msg};
use crate::limits::Limits;
use crate::net::hc10;
use crate::net::hc9;
use crate::net::hush::{self, Hush};
use crate::net::output::Output;
use crate::net::replicate::hc9::Hc9Channel;
use crate::net::replicate::{self, FeedChannel, Outcome};
use crate::net::transport::{Transport, TransportError};
use crate::policy::{Curator, Policy};
use crate::session::{Action, FeedNumbers, Outgoing, Session};
use crate::stats::{RoundTrip, Stats};
use crate::store::{Feed, Store, StoreError};
use crate::wire::{self, FeedKey, FeedMeta};

/// What every peer task shares: storage, the offer policy, where to report.
#[derive(Debug)]
pub struct PeerContext {
    /// Storage.
    pub store: Arc<Store>,
    /// The multifeed key.
    pub root_key: FeedKey,
    /// Rules and remembered decisions.
    pub curator: Curator,
    /// Whether `wire` events are wanted.
    pub trace_wire: bool,
    /// Whether new peers start in step mode.
    pub step: bool,
    /// What peers may make us hold or wait for.
    pub limits: Limits,
    /// Running totals; every event emitted is folded into them.
    pub stats: Arc<Stats>,
    /// Events to the front end.
    pub events: mpsc::UnboundedSender<Event>,
    /// Reports to the engine.
    pub reports: mpsc::UnboundedSender<Report>,
    /// Which peers replicate each feed: the only ones a change of our copy concerns.
    pub replicating: Replicating,
    /// Numbers for our feeds, over which every session keeps its offer as bits.
    pub feed_numbers: Arc<FeedNumbers>,
}

/// Which peers replicate each feed, written by peer tasks as feed channels open and close
/// and read by the engine when our copy of a feed changes. Without it every change went to
/// every peer: a hub taking in the feeds of a thousand uploaders queued a message per
/// received batch of blocks for each of a thousand peers, none of which replicated the feed.
#[derive(Debug, Default)]
pub struct Replicating(std::sync::Mutex<HashMap<FeedKey, Vec<PeerId>>>);

impl Replicating {
    /// The peers replicating `key`.
    pub fn peers_of(&self, key: &FeedKey) -> Vec<PeerId> {
        self.0.lock().unwrap().get(key).cloned().unwrap_or_default()
    }

    fn add(&self, key: FeedKey, peer: PeerId) {
        let mut map = self.0.lock().unwrap();
        let peers = map.entry(key).or_default();
        if !peers.contains(&peer) {
            peers.push(peer);
        }
    }

    fn remove(&self, key: &FeedKey, peer: PeerId) {
        let mut map = self.0.lock().unwrap();
        if let Some(peers) = map.get_mut(key) {
            peers.retain(|p| *p != peer);
            if peers.is_empty() {
                map.remove(key);
            }
        }
    }
}

/// The feeds one peer task has said it replicates; when the task ends (or panics) they are
/// taken out of [`Replicating`].
struct Replicated {
    ctx: Arc<PeerContext>,
    peer: PeerId,
    keys: HashSet<FeedKey>,
}

impl Replicated {
    fn add(&mut self, key: FeedKey) {
        if self.keys.insert(key) {
            self.ctx.replicating.add(key, self.peer);
        }
    }

    fn remove(&mut self, key: &FeedKey) {
        if self.keys.remove(key) {
            self.ctx.replicating.remove(key, self.peer);
        }
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        for key in &self.keys {
            self.ctx.replicating.remove(key, self.peer);
        }
    }
}

impl PeerContext {
    /// Publishes an event; a front end that went away is not an error.
    pub fn emit(&self, ev: Event) {
        self.stats.observe(&ev);
        let _ = self.events.send(ev);
    }

    /// Reports a new local feed and has it offered to every peer.
    pub async fn announce(&self, feed: &Feed) {
        self.emit(Event::FeedAdded {
            key: feed.entry.key,
            name: feed.entry.name.clone(),
            writable: feed.entry.writable,
        });
        let _ = self.reports.send(Report::LocalFeed(feed.entry.key));
    }
}

/// Feeds that appeared locally together, as every peer is told of them: one list, and the
/// manifest that offers all of it on each wire, read and encoded once by the first peer
/// that sends it. A hub taking in the feeds of a thousand peers offers most of them to
/// every other peer: ten million offers, each of which read the feed's metadata and
/// encoded it again.
#[derive(Debug)]
pub struct NewFeeds {
    /// The keys, with the wire of each feed (`None`: not in storage, offered on both).
    feeds: Vec<(FeedKey, Option<Wire>)>,
    /// The keys' numbers in the sessions' shared numbering, in the same order.
    numbers: Vec<usize>,
    numbering: Arc<FeedNumbers>,
    /// How many of the feeds are offered on hypercore 10's wire and on 9's.
    on_wire: [usize; 2],
    /// The metadata of the list's feeds on hypercore 10's wire and on 9's, shared by every
    /// peer's `offer_sent` report.
    meta: [tokio::sync::OnceCell<Arc<BTreeMap<FeedKey, FeedMeta>>>; 2],
    /// The manifest bodies offering the whole list, on hypercore 10's wire and on 9's.
    bodies: [tokio::sync::OnceCell<Vec<Vec<u8>>>; 2],
}

impl NewFeeds {
    /// The list of these feeds, their wires read from `store`, numbered by `numbering`.
    pub fn new(keys: Vec<FeedKey>, store: &Store, numbering: &Arc<FeedNumbers>) -> NewFeeds {
        let mut new = NewFeeds {
            numbers: numbering.numbers(keys.iter().copied()),
            numbering: numbering.clone(),
            feeds: keys
                .into_iter()
                .map(|k| (k, store.get(&k).map(|f| f.wire)))
                .collect(),
            on_wire: [0; 2],
            meta: Default::default(),
            bodies: Default::default(),
        };
        new.on_wire = [Wire::Hc10, Wire::Hc9].map(|w| new.numbered_on(w).count());
        new
    }

    /// How many of the feeds are offered on `wire`.
    fn count_on(&self, wire: Wire) -> usize {
        self.on_wire[usize::from(wire == Wire::Hc9)]
    }

    /// The feeds offered on `wire`, in order, with their numbers.
    fn numbered_on(&self, wire: Wire) -> impl Iterator<Item = (FeedKey, usize)> + '_ {
        self.feeds
            .iter()
            .zip(&self.numbers)
            .filter(move |((_, w), _)| w.is_none_or(|w| w == wire))
            .map(|((k, _), n)| (*k, *n))
    }

    /// The keys offered on `wire`, in order.
    fn keys_on(&self, wire: Wire) -> Vec<FeedKey> {
        self.numbered_on(wire).map(|(k, _)| k).collect()
    }

    /// The metadata of the list's feeds on `wire`, read the first time it is asked for.
    async fn meta(&self, wire: Wire, store: &Store) -> &Arc<BTreeMap<FeedKey, FeedMeta>> {
        self.meta[usize::from(wire == Wire::Hc9)]
            .get_or_init(|| async {
                let mut meta = BTreeMap::new();
                for k in self.keys_on(wire) {
                    if let Some(feed) = store.get(&k) {
                        meta.insert(k, feed.offer_meta());
                    }
                }
                Arc::new(meta)
            })
            .await
    }

    /// The manifest bodies offering every feed of the list that is on `wire`.
    async fn bodies(&self, wire: Wire, store: &Store) -> &[Vec<u8>] {
        let meta = self.meta(wire, store).await;
        let cell = &self.bodies[usize::from(wire == Wire::Hc9)];
        cell.get_or_init(|| async { wire::encode_manifests(&self.keys_on(wire), meta) })
            .await
    }
}

/// What a peer task tells the engine, for the other peers.
#[derive(Debug)]
pub enum Report {
    /// A feed appeared locally: offer it to every peer.
    LocalFeed(FeedKey),
    /// Our copy of a feed grew from this peer's data: tell the others.
    FeedGrew(FeedKey, PeerId),
}

/// A message from the engine to one peer task.
#[derive(Debug)]
pub enum PeerCmd {
    /// Feeds appeared locally; offer those the peer does not know. One list is shared by
    /// every peer.
    LocalFeeds(Arc<NewFeeds>),
    /// Our copy of a feed changed; tell the peer if the feed is active with it.
    FeedChanged(FeedKey),
    /// Approve or decline offered keys.
    Decide {
        /// The key, or every pending key.
        key: KeySelection,
        /// `true` for approve.
        approve: bool,
    },
    /// Stop replicating a feed.
    Stop(FeedKey),
    /// Start holding received messages.
    Hold,
    /// Let one held message through.
    Step,
    /// Let all held messages through and stop holding.
    Continue,
    /// Hold when a message of this kind arrives (empty: clear breakpoints).
    Break(String),
    /// End the connection.
    Close(String),
}

/// Why a peer task ended.
#[derive(Debug, Clone, Default)]
pub struct EndReason {
    /// In words, as `peer_disconnected` tells it.
    pub reason: String,
    /// The kind of the error that ended the connection, if one did: whether dialing the
    /// peer again could help.
    pub error: Option<ProblemKind>,
}

/// A connection core, as the peer task drives it: one per wire generation.
pub trait WireCore: Send + 'static {
    /// The wire.
    const WIRE: Wire;
    /// The multifeed protocol version its peers speak.
    const MULTIFEED_VERSION: &'static str;
    /// A replication message of the wire, as received.
    type In: Send + 'static;
    /// A replication message of the wire, as sent.
    type Out: Send + 'static;
    /// What a feed channel carries: the feed's replicator.
    type Feed: FeedSide<In = Self::In, Out = Self::Out>;
    /// See `Conn::receive`.
    fn receive(&mut self, frame: Vec<u8>, now: Instant);
    /// See `Conn::poll`.
    fn poll(&mut self) -> Option<Output<Self::Feed, Self::In>>;
    /// See `Conn::handle_timeout`.
    fn handle_timeout(&mut self, now: Instant);
    /// See `Conn::take_sealed`.
    fn take_sealed(&mut self) -> Option<Vec<u8>>;
    /// See `Conn::seal`.
    fn seal(&mut self, now: Instant);
    /// See `Conn::end`.
    fn end(&self) -> Option<&(bool, String)>;
    /// See `Conn::ended_by`.
    fn ended_by(&self) -> Option<ProblemKind>;
    /// See `Conn::finish`.
    fn finish(&mut self, error: bool, reason: String);
    /// See `Conn::may_read`.
    fn may_read(&self) -> bool;
    /// See `Conn::peer_closed`.
    fn peer_closed(&mut self);
    /// See `Conn::warn`.
    fn warn(&mut self, kind: ProblemKind, message: String);
    /// See `Conn::fail`.
    fn fail(&mut self, kind: ProblemKind, message: String);
    /// See `Conn::send`.
    fn send(&mut self, local: u64, msg: Self::Out);
    /// See `Conn::send_root_extension`.
    fn send_root_extension(&mut self, name: &str, payload: Vec<u8>);
    /// See `Conn::open`.
    fn open(&mut self, key: FeedKey, payload: Self::Feed) -> bool;
    /// See `Conn::close`.
    fn close(&mut self, key: &FeedKey) -> Option<Self::Feed>;
    /// See `Conn::open_channel_of`.
    fn open_channel_of(&self, key: &FeedKey) -> Option<u64>;
    /// See `Conn::payload_mut`.
    fn payload_mut(&mut self, local: u64) -> Option<&mut Self::Feed>;
    /// See `Conn::hold`.
    fn hold(&mut self);
    /// See `Conn::step`.
    fn step(&mut self);
    /// See `Conn::resume`.
    fn resume(&mut self);
    /// See `Conn::set_breakpoint`.
    fn set_breakpoint(&mut self, kind: String);
    /// Whether a message asks for a block, which may wait while the peer reads nothing.
    fn is_block_request(msg: &Self::In) -> bool;
    /// What says "not now" to a block request that cannot wait, if the wire has it.
    fn refusal(msg: &Self::In) -> Option<Self::Out>;
}

/// One feed's replicator, as the peer task drives it.
pub trait FeedSide: Send + 'static {
    /// A replication message of the wire, as received.
    type In: Send;
    /// A replication message of the wire, as sent.
    type Out: Send;
    /// A replicator of `feed` with `peer`.
    fn new(feed: Feed, peer: PeerId) -> Self;
    /// The feed.
    fn key(&self) -> FeedKey;
    /// Both sides opened the channel.
    fn on_open(&mut self) -> impl Future<Output = Outcome<Self::Out>> + Send;
    /// A message arrived.
    fn on_message(&mut self, msg: Self::In) -> impl Future<Output = Outcome<Self::Out>> + Send;
    /// The leaf hashes of the blocks that these messages carry, computed side by side where
    /// the wire's replicator can use them (`None` for the others).
    fn leaf_hashes<'a>(msgs: impl Iterator<Item = &'a Self::In>) -> Vec<Option<Hash>>
    where
        Self::In: 'a,
    {
        msgs.map(|_| None).collect()
    }
    /// A message arrived, with the leaf hash of the block it carries if
    /// [`FeedSide::leaf_hashes`] gave one.
    fn on_message_with_leaf(
        &mut self,
        msg: Self::In,
        _leaf: Option<Hash>,
    ) -> impl Future<Output = Outcome<Self::Out>> + Send {
        self.on_message(msg)
    }
    /// Our copy of the feed changed.
    fn on_local_change(&mut self) -> impl Future<Output = Outcome<Self::Out>> + Send;
    /// The peer said it ends the session once synced, instead of staying live.
    fn peer_not_live(&mut self) {}
}

impl FeedSide for Box<FeedChannel> {
    type In = Message;
    type Out = Msg;
    fn new(feed: Feed, peer: PeerId) -> Self {
        Box::new(FeedChannel::new(feed, peer))
    }
    fn key(&self) -> FeedKey {
        self.key
    }
    async fn on_open(&mut self) -> Outcome<Msg> {
        FeedChannel::on_open(self).await
    }
    async fn on_message(&mut self, msg: Message) -> Outcome<Msg> {
        FeedChannel::on_message(self, msg).await
    }
    fn leaf_hashes<'a>(msgs: impl Iterator<Item = &'a Message>) -> Vec<Option<Hash>> {
        replicate::leaf_hashes(msgs)
    }
    async fn on_message_with_leaf(&mut self, msg: Message, leaf: Option<Hash>) -> Outcome<Msg> {
        FeedChannel::on_message_with_leaf(self, msg, leaf).await
    }
    async fn on_local_change(&mut self) -> Outcome<Msg> {
        FeedChannel::on_local_change(self).await
    }
}

impl FeedSide for Box<Hc9Channel> {
    type In = hc9::Message;
    type Out = hc9::Message;
    fn new(feed: Feed, peer: PeerId) -> Self {
        Box::new(Hc9Channel::new(feed, peer))
    }
    fn key(&self) -> FeedKey {
        self.key
    }
    async fn on_open(&mut self) -> Outcome<hc9::Message> {
        Hc9Channel::on_open(self).await
    }
    async fn on_message(&mut self, msg: hc9::Message) -> Outcome<hc9::Message> {
        Hc9Channel::on_message(self, msg).await
    }
    fn leaf_hashes<'a>(msgs: impl Iterator<Item = &'a hc9::Message>) -> Vec<Option<Hash>> {
        Hc9Channel::leaf_hashes(msgs)
    }
    async fn on_message_with_leaf(
        &mut self,
        msg: hc9::Message,
        leaf: Option<Hash>,
    ) -> Outcome<hc9::Message> {
        Hc9Channel::on_message_with_leaf(self, msg, leaf).await
    }
    async fn on_local_change(&mut self) -> Outcome<hc9::Message> {
        Hc9Channel::on_local_change(self).await
    }
    fn peer_not_live(&mut self) {
        Hc9Channel::peer_not_live(self)
    }
}

/// Implements [`WireCore`] for a connection core whose inherent methods have its names.
macro_rules! wire_core {
    ($conn:ty, $wire:expr, $version:expr, $in:ty, $out:ty, $feed:ty, $is_request:expr, $refusal:expr) => {
        impl WireCore for $conn {
            const WIRE: Wire = $wire;
            const MULTIFEED_VERSION: &'static str = $version;
            type In = $in;
            type Out = $out;
            type Feed = $feed;
            fn receive(&mut self, frame: Vec<u8>, now: Instant) {
                <$conn>::receive(self, frame, now)
            }
            fn poll(&mut self) -> Option<Output<$feed, $in>> {
                <$conn>::poll(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$conn>::handle_timeout(self, now)
            }
            fn take_sealed(&mut self) -> Option<Vec<u8>> {
                <$conn>::take_sealed(self)
            }
            fn seal(&mut self, now: Instant) {
                <$conn>::seal(self, now)
            }
            fn end(&self) -> Option<&(bool, String)> {
                <$conn>::end(self)
            }
            fn ended_by(&self) -> Option<ProblemKind> {
                <$conn>::ended_by(self)
            }
            fn finish(&mut self, error: bool, reason: String) {
                <$conn>::finish(self, error, reason)
            }
            fn may_read(&self) -> bool {
                <$conn>::may_read(self)
            }
            fn peer_closed(&mut self) {
                <$conn>::peer_closed(self)
            }
            fn warn(&mut self, kind: ProblemKind, message: String) {
                <$conn>::warn(self, kind, message)
            }
            fn fail(&mut self, kind: ProblemKind, message: String) {
                <$conn>::fail(self, kind, message)
            }
            fn send(&mut self, local: u64, msg: $out) {
                <$conn>::send(self, local, msg)
            }
            fn send_root_extension(&mut self, name: &str, payload: Vec<u8>) {
                <$conn>::send_root_extension(self, name, payload)
            }
            fn open(&mut self, key: FeedKey, payload: $feed) -> bool {
                <$conn>::open(self, key, payload)
            }
            fn close(&mut self, key: &FeedKey) -> Option<$feed> {
                <$conn>::close(self, key)
            }
            fn open_channel_of(&self, key: &FeedKey) -> Option<u64> {
                <$conn>::open_channel_of(self, key)
            }
            fn payload_mut(&mut self, local: u64) -> Option<&mut $feed> {
                <$conn>::payload_mut(self, local)
            }
            fn hold(&mut self) {
                <$conn>::hold(self)
            }
            fn step(&mut self) {
                <$conn>::step(self)
            }
            fn resume(&mut self) {
                <$conn>::resume(self)
            }
            fn set_breakpoint(&mut self, kind: String) {
                <$conn>::set_breakpoint(self, kind)
            }
            fn is_block_request(msg: &$in) -> bool {
                $is_request(msg)
            }
            fn refusal(msg: &$in) -> Option<$out> {
                $refusal(msg)
            }
        }
    };
}

wire_core!(
    hc10::Conn<Box<FeedChannel>>,
    Wire::Hc10,
    wire::PROTOCOL_VERSION,
    Message,
    Msg,
    Box<FeedChannel>,
    |m: &Message| matches!(m, Message::Request(_)),
    |m: &Message| match m {
        Message::Request(r) => Some(core(NoData { request: r.id })),
        _ => None,
    }
);

wire_core!(
    hc9::conn::Conn<Box<Hc9Channel>>,
    Wire::Hc9,
    wire::PROTOCOL_VERSION_HC9,
    hc9::Message,
    hc9::Message,
    Box<Hc9Channel>,
    |m: &hc9::Message| matches!(m, hc9::Message::Request(_)),
    |m: &hc9::Message| match m {
        hc9::Message::Request(r) => Some(hc9::Message::Unhave(hc9::message::Unhave {
            start: r.index,
            length: None,
        })),
        _ => None,
    }
);

/// Work of the shell, in order: session actions and the events between them.
enum Work {
    Act(Action),
    Emit(Event),
}

/// The task of one connection.
pub struct Peer;

impl Peer {
    /// Runs the connection until it ends, with the core of the connection's wire; returns
    /// why it ended.
    pub async fn run(
        id: PeerId,
        ctx: Arc<PeerContext>,
        transport: Transport,
        commands: mpsc::UnboundedReceiver<PeerCmd>,
    ) -> EndReason {
        let now = Instant::now();
        if let Some(split) = transport.hc9_split() {
            let conn = hc9::conn::Conn::new(
                hc9::conn::Setup {
                    peer: id,
                    split: split.clone(),
                    root_key: ctx.root_key.0,
                    trace: ctx.trace_wire,
                    step: ctx.step,
                    limits: ctx.limits.clone(),
                    stats: ctx.stats.clone(),
                    // An observer offers nothing, so it names itself by no feed either.
                    name: match ctx.curator.policy {
                        Policy::Observe => None,
                        _ => ctx.store.first_writer_on(Wire::Hc9),
                    },
                },
                now,
            );
            return Task::run(id, ctx, transport, conn, commands).await;
        }
        let conn = hc10::Conn::new(
            hc10::Setup {
                peer: id,
                initiator: transport.is_initiator(),
                handshake_hash: transport.handshake_hash().to_vec(),
                root_key: ctx.root_key.0,
                trace: ctx.trace_wire,
                step: ctx.step,
                limits: ctx.limits.clone(),
                stats: ctx.stats.clone(),
            },
            now,
        );
        Task::run(id, ctx, transport, conn, commands).await
    }
}

/// Longest our empty `REPLICATE_FEEDS` waits for the peer's feeds to open (see
/// `Task::hold_replicate`).
const REPLICATE_HOLD: Duration = Duration::from_secs(2);
/// Outputs [`Task::drive`] acts on before it lets the runtime's other tasks run.
const YIELD_EVERY: u32 = 4096;
/// Feed messages at most that [`Task::drive`] takes at once, to hash their blocks together.
const HASHED_TOGETHER: usize = 32;

/// State of one connection.
struct Task<C: WireCore> {
    id: PeerId,
    remote_pk: String,
    ctx: Arc<PeerContext>,
    transport: Transport,
    conn: C,
    session: Session,
    owed: VecDeque<(u64, C::In)>,
    owed_overflow: bool,
    /// The peer's handshake said it is not live.
    peer_not_live: bool,
    /// Observe mode: nothing offered, requested, served or written.
    observing: bool,
    /// The session requests every offer itself: its requests are accept-all's decisions.
    classic: bool,
    /// Active feeds and offers waiting for a person on this connection, as last added to the
    /// shared totals.
    counted: Counted,
    /// Where our empty answer to the peer's request stands (see `hold_replicate`).
    empty_answer: EmptyAnswer,
    /// The peer's `REPLICATE_FEEDS` arrived.
    peer_replicated: bool,
    /// The peer's manifest arrived.
    peer_offered: bool,
    /// Feeds with a channel opened on this connection, as the engine's fan-out knows them.
    replicated: Replicated,
    /// New local feeds being offered, and how many of them are on this wire (see
    /// [`NewFeeds`]).
    offering: Option<(Arc<NewFeeds>, usize)>,
    /// Where replicas made for this connection are handed back (see `start_feed`).
    made: mpsc::UnboundedSender<(FeedKey, Made)>,
    /// How many warnings about this peer are shown (see [`Hush`]).
    hush: std::sync::Mutex<Hush>,
}

/// What a connection last added to the process's gauges.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    active: usize,
    pending: usize,
}

/// A replica made (or found) for a feed agreed on, and whether it is new.
type Made = Result<(Feed, bool), StoreError>;

/// Our empty `REPLICATE_FEEDS` on hc9 (see `Task::hold_replicate`).
#[derive(Debug, Clone, Copy)]
enum EmptyAnswer {
    /// None held yet: one may be.
    Free,
    /// Held back since then.
    Held(Instant),
    /// The held one went out: none is held again.
    Released,
}

impl<C: WireCore> Task<C> {
    async fn run(
        id: PeerId,
        ctx: Arc<PeerContext>,
        transport: Transport,
        conn: C,
        mut commands: mpsc::UnboundedReceiver<PeerCmd>,
    ) -> EndReason {
        let observing = ctx.curator.policy == Policy::Observe;
        // An observer offers nothing (an empty manifest), so it serves nothing either.
        let local_feeds = if observing {
            Default::default()
        } else {
            ctx.store.keys_on(C::WIRE)
        };
        // Offers go through the curator whenever it may say something other than "yes".
        let policy = if observing {
            Policy::Observe
        } else if ctx.curator.policy == Policy::AcceptAll && ctx.curator.rules.is_empty() {
            Policy::AcceptAll
        } else {
            Policy::Manual
        };
        let (made_tx, mut made) = mpsc::unbounded_channel();
        let replicated = Replicated {
            ctx: ctx.clone(),
            peer: id,
            keys: HashSet::new(),
        };
        let mut peer = Task {
            id,
            remote_pk: hex::encode(transport.remote_public_key()),
            session: Session::sharing(ctx.feed_numbers.clone(), policy, local_feeds, &ctx.limits)
                .speaking(C::MULTIFEED_VERSION),
            ctx,
            transport,
            conn,
            owed: VecDeque::new(),
            owed_overflow: false,
            peer_not_live: false,
            observing,
            classic: policy == Policy::AcceptAll,
            counted: Counted::default(),
            empty_answer: EmptyAnswer::Free,
            peer_replicated: false,
            peer_offered: false,
            replicated,
            offering: None,
            made: made_tx,
            hush: std::sync::Mutex::new(Hush::new(Instant::now())),
        };
        // When the backlog was last seen over its limit without a byte written since.
        let mut stalled_since: Option<(Instant, u64)> = None;
        let backlog = peer.transport.backlog();
        let stall = peer.ctx.limits.stall_timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round_trip = RoundTrip::new(peer.ctx.stats.clone());
        while peer.conn.end().is_none() {
            tokio::select! {
                frames = peer.transport.recv(), if peer.conn.may_read() => peer.on_frames(frames),
                _ = backlog.drained(), if peer.transport.congested() => {}
                Some((key, result)) = made.recv() => peer.feed_made(key, result).await,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => peer.on_command(cmd).await,
                    None => peer.conn.finish(false, "engine shut down".into()),
                },
                _ = tick.tick() => {
                    // What arrived while this task was busy elsewhere (waiting for storage,
                    // say) is heard before the peer is judged idle.
                    if peer.conn.may_read() {
                        if let Some(frames) = peer.transport.recv().now_or_never() {
                            peer.on_frames(frames);
                        }
                    }
                    peer.conn.handle_timeout(Instant::now());
                    peer.tell_held_warnings(false);
                    if let Some(rtt) = peer.transport.round_trip_time() {
                        round_trip.set(rtt);
                    }
                    let written = backlog.written_total();
                    if !peer.transport.congested() || stalled_since.is_some_and(|(_, w)| w != written) {
                        stalled_since = None;
                    } else if stalled_since.get_or_insert((Instant::now(), written)).0.elapsed() > stall {
                        peer.conn.fail(
                            ProblemKind::Stalled,
                            format!("the peer read nothing of what we sent for {stall:?}; dropped"),
                        );
                    }
                }
            }
            peer.drive().await;
            peer.release_replicate().await;
            peer.serve_owed().await;
            peer.conn.seal(Instant::now());
            peer.transmit();
            // Sealing may trace what it sealed.
            peer.drive().await;
            peer.count(Counted {
                active: peer.session.active.len(),
                pending: peer.session.remote_offer.pending_len(),
            });
        }
        peer.count(Counted::default());
        peer.tell_held_warnings(true);
        let (_, reason) = peer.conn.end().cloned().unwrap_or_default();
        EndReason {
            reason,
            error: peer.conn.ended_by(),
        }
    }

    /// Hands received frames to the connection core.
    fn on_frames(&mut self, frames: Result<Vec<Vec<u8>>, TransportError>) {
        match frames {
            Ok(frames) => {
                let now = Instant::now();
                for f in frames {
                    self.conn.receive(f, now);
                }
            }
            Err(TransportError::Closed) => self.conn.peer_closed(),
            Err(e) => self.conn.finish(true, e.to_string()),
        }
    }

    /// Keeps the shared counts of active feeds and pending offers in step with this
    /// connection's. The session's own sets are the truth: a process's gauge is the sum of
    /// its connections', with no set of its own to keep (a hub offers each of a thousand
    /// uploaders ten thousand feeds).
    fn count(&mut self, now: Counted) {
        let by = |now: usize, before: usize| now as i64 - before as i64;
        if now.active != self.counted.active {
            let by = by(now.active, self.counted.active);
            self.ctx.stats.feeds_active_changed(by);
        }
        if now.pending != self.counted.pending {
            let by = by(now.pending, self.counted.pending);
            self.ctx.stats.offers_pending_changed(by);
        }
        self.counted = now;
    }

    /// Acts on everything the core has to say, sending frames as they are sealed. Sealed
    /// frames go to the transport at once, so that its backlog, not this task's memory, is
    /// what fills up when the peer reads slowly, and congestion is seen.
    async fn drive(&mut self) {
        let mut taken = 0u32;
        loop {
            self.transmit();
            taken += 1;
            if taken.is_multiple_of(YIELD_EVERY) {
                // A frame of millions of messages does not hold a runtime thread for seconds.
                tokio::task::yield_now().await;
            }
            let Some(o) = self.conn.poll() else {
                return;
            };
            let Output::FeedMessage { local, msg } = o else {
                self.on_output(o).await;
                continue;
            };
            // Feed messages that are ready together go on together, so that the blocks they
            // carry are hashed side by side first; anything else waits its turn after them.
            let after = self.conn.poll();
            let Some(Output::FeedMessage { .. }) = after else {
                // One alone (a live block, a request) has nothing to be hashed beside.
                self.on_feed_message(local, msg, None).await;
                if let Some(o) = after {
                    self.on_output(o).await;
                }
                continue;
            };
            let mut batch = vec![(local, msg)];
            let mut after = after;
            while let Some(Output::FeedMessage { local, msg }) = after {
                batch.push((local, msg));
                after = if batch.len() < HASHED_TOGETHER {
                    self.conn.poll()
                } else {
                    None
                };
            }
            let leaves = C::Feed::leaf_hashes(batch.iter().map(|(_, m)| m));
            for ((local, msg), leaf) in batch.into_iter().zip(leaves) {
                self.on_feed_message(local, msg, leaf).await;
            }
            if let Some(o) = after {
                self.on_output(o).await;
            }
        }
    }

    /// Moves sealed frames to the transport.
    fn transmit(&mut self) {
        while let Some(frame) = self.conn.take_sealed() {
            if let Err(e) = self.transport.send(frame) {
                self.conn.finish(true, e.to_string());
                return;
            }
        }
    }

    /// Publishes an event of this connection. Warnings past the budget are counted (in the
    /// metrics too) and told later in one warning per kind.
    fn emit(&self, ev: Event) {
        match &ev {
            Event::Warning { kind, .. } => {
                let mut hush = self.hush.lock().unwrap_or_else(|p| p.into_inner());
                if !hush.admit(*kind, Instant::now()) {
                    self.ctx.stats.observe(&ev);
                    return;
                }
            }
            // What was held back comes before the error that ends the connection.
            Event::Error { .. } => self.tell_held_warnings(true),
            _ => {}
        }
        self.ctx.emit(ev);
    }

    /// Tells the warnings held back, when the budget allows (or at once: `all`).
    fn tell_held_warnings(&self, all: bool) {
        let held = {
            let mut hush = self.hush.lock().unwrap_or_else(|p| p.into_inner());
            hush.summaries(Instant::now(), all)
        };
        for (kind, n) in held {
            // Each was counted when it happened; this one only tells them.
            let _ = self.ctx.events.send(Event::Warning {
                peer: Some(self.id),
                kind,
                message: hush::summary(kind, n),
            });
        }
    }

    async fn on_output(&mut self, o: Output<C::Feed, C::In>) {
        match o {
            Output::Event(ev) => self.emit(ev),
            Output::RootOpened => {
                let actions = self.session.on_open();
                self.perform(actions).await;
            }
            Output::RootExtension { name, payload } => {
                let actions = self.session.on_extension(&name, &payload);
                self.perform(actions).await;
            }
            Output::FeedOpened { local } => {
                if let Some(fc) = self.conn.payload_mut(local) {
                    let outcome = fc.on_open().await;
                    self.apply_outcome(local, outcome);
                }
                self.release_replicate().await;
            }
            Output::FeedMessage { local, msg } => self.on_feed_message(local, msg, None).await,
            Output::FeedClosed { key, .. } => {
                self.session.on_feed_closed(&key);
                self.replicated.remove(&key);
                self.emit(Event::FeedStopped {
                    peer: self.id,
                    key,
                    by: StoppedBy::Peer,
                });
            }
        }
    }

    async fn on_feed_message(&mut self, local: u64, msg: C::In, leaf: Option<Hash>) {
        // Answers to block requests wait while the peer is not reading what we send: the
        // socket's backlog stays bounded, and reading goes on so that neither side blocks.
        if C::is_block_request(&msg) && (self.transport.congested() || !self.owed.is_empty()) {
            let max = self.ctx.limits.max_owed_requests;
            if self.owed.len() < max {
                self.owed.push_back((local, msg));
            } else {
                if !self.owed_overflow {
                    self.owed_overflow = true;
                    self.conn.warn(
                        ProblemKind::Limit,
                        format!("over {max} block requests wait while the peer reads nothing; refusing them"),
                    );
                }
                if let Some(no) = C::refusal(&msg) {
                    self.conn.send(local, no);
                }
            }
            return;
        }
        if let Some(fc) = self.conn.payload_mut(local) {
            let outcome = fc.on_message_with_leaf(msg, leaf).await;
            self.apply_outcome(local, outcome);
        }
    }

    fn apply_outcome(&mut self, local: u64, outcome: Outcome<C::Out>) {
        for m in outcome.send {
            self.conn.send(local, m);
        }
        for ev in outcome.events {
            self.emit(ev);
        }
        if let Some(w) = outcome.warning {
            self.conn.warn(ProblemKind::BadData, w);
        }
        if outcome.grew {
            if let Some(fc) = self.conn.payload_mut(local) {
                let _ = self.ctx.reports.send(Report::FeedGrew(fc.key(), self.id));
            }
        }
        if outcome.done {
            if let Some(key) = self.conn.payload_mut(local).map(|fc| fc.key()) {
                self.conn.close(&key);
                self.session.on_feed_closed(&key);
                self.replicated.remove(&key);
                self.emit(Event::FeedStopped {
                    peer: self.id,
                    key,
                    by: StoppedBy::Peer,
                });
            }
        }
    }

    /// Answers waiting requests while the connection has room.
    async fn serve_owed(&mut self) {
        while self.conn.end().is_none() && !self.transport.congested() {
            let Some((local, r)) = self.owed.pop_front() else {
                self.owed_overflow = false;
                return;
            };
            if let Some(fc) = self.conn.payload_mut(local) {
                let outcome = fc.on_message(r).await;
                self.apply_outcome(local, outcome);
            }
            self.drive().await;
        }
    }

    /// Carries out the session's actions in order; decisions they lead to are carried out
    /// before the actions after them.
    async fn perform(&mut self, actions: Vec<Action>) {
        let id = self.id;
        let mut work: VecDeque<Work> = actions.into_iter().map(Work::Act).collect();
        while let Some(w) = work.pop_front() {
            let a = match w {
                Work::Emit(ev) => {
                    self.emit(ev);
                    continue;
                }
                Work::Act(a) => a,
            };
            match a {
                Action::Send(o) => {
                    if let (true, Outgoing::Request(keys)) = (self.classic, &o) {
                        self.ctx
                            .stats
                            .decided_many(true, &DecidedBy::AcceptAll, keys.len());
                    }
                    self.send_outgoing(o).await
                }
                Action::HandshakeReceived(h) => {
                    self.peer_not_live = h.live == Some(false);
                    self.emit(Event::HandshakeReceived {
                        peer: id,
                        client: h.client,
                        version: h.version,
                    })
                }
                Action::PeerNamed(key) => self.emit(Event::PeerNamed {
                    peer: id,
                    name: key.to_hex(),
                }),
                Action::OfferReceived { keys, meta } => {
                    self.peer_offered = true;
                    self.emit(Event::OfferReceived {
                        peer: id,
                        keys,
                        meta,
                    })
                }
                Action::RequestReceived(keys) => {
                    self.emit(Event::RequestReceived { peer: id, keys })
                }
                Action::RefusedObserving(keys) => {
                    self.emit(Event::ObserveRefused { peer: id, keys })
                }
                Action::ReplicateReceived(keys) => {
                    self.peer_replicated = true;
                    self.emit(Event::ReplicateReceived { peer: id, keys })
                }
                Action::Pending(keys) => {
                    let (decided, ask) = self.curate(keys);
                    let mut next = Vec::new();
                    if !decided.is_empty() {
                        next.extend(
                            self.session
                                .on_decisions(decided)
                                .into_iter()
                                .map(Work::Act),
                        );
                    }
                    if !ask.is_empty() {
                        next.push(Work::Emit(Event::OfferPending {
                            peer: id,
                            keys: ask,
                        }));
                    }
                    for w in next.into_iter().rev() {
                        work.push_front(w);
                    }
                }
                Action::Decided { key, approved, by } => {
                    self.ctx.stats.decided(approved, &by);
                    // The classic policy's implicit yes is not news.
                    if by != DecidedBy::AcceptAll {
                        self.emit(Event::Decision {
                            peer: id,
                            key,
                            approved,
                            by,
                        })
                    }
                }
                Action::Stop(key) => {
                    self.conn.close(&key);
                    self.replicated.remove(&key);
                    self.emit(Event::FeedStopped {
                        peer: id,
                        key,
                        by: StoppedBy::Us,
                    });
                }
                Action::Warn { kind, message } => self.conn.warn(kind, message),
                Action::Fail { kind, message } => self.conn.fail(kind, message),
                Action::Replicate(keys) => {
                    for key in keys {
                        self.start_feed(key).await;
                    }
                }
            }
        }
    }

    /// Splits offered keys into those the curator decides and those to ask a person about.
    #[allow(clippy::type_complexity)]
    fn curate(&self, keys: Vec<FeedKey>) -> (Vec<(FeedKey, bool, DecidedBy)>, Vec<FeedKey>) {
        let offered = &self.session.remote_offer;
        self.ctx
            .curator
            .decide_all(keys, |k| offered.get(k), &self.remote_pk)
    }

    async fn send_outgoing(&mut self, o: Outgoing) {
        let id = self.id;
        let (name, bodies, event) = match o {
            Outgoing::Handshake(h) => (wire::EXT_HANDSHAKE, vec![wire::encode_handshake(&h)], None),
            Outgoing::Manifest(keys) => {
                let (meta, bodies) = match self.offering.clone() {
                    // New feeds told to every peer: read and encoded once for all of them.
                    Some((new, all)) => {
                        let shared = new.meta(C::WIRE, &self.ctx.store).await;
                        if keys.len() == all {
                            // The whole list: its metadata and bodies as they are.
                            let bodies = new.bodies(C::WIRE, &self.ctx.store).await.to_vec();
                            (Arc::clone(shared), bodies)
                        } else {
                            let meta: BTreeMap<FeedKey, FeedMeta> = keys
                                .iter()
                                .filter_map(|k| shared.get(k).map(|m| (*k, m.clone())))
                                .collect();
                            let bodies = wire::encode_manifests(&keys, &meta);
                            (Arc::new(meta), bodies)
                        }
                    }
                    None => {
                        // Only the offered feeds' metadata: a peer told of one new feed must
                        // not read every feed of a large store.
                        let mut meta: BTreeMap<FeedKey, FeedMeta> = BTreeMap::new();
                        for k in &keys {
                            if let Some(feed) = self.ctx.store.get(k) {
                                meta.insert(*k, feed.offer_meta());
                            }
                        }
                        let bodies = wire::encode_manifests(&keys, &meta);
                        (Arc::new(meta), bodies)
                    }
                };
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
            Outgoing::Replicate(keys) if keys.is_empty() && self.hold_replicate() => {
                if let EmptyAnswer::Free = self.empty_answer {
                    self.empty_answer = EmptyAnswer::Held(Instant::now());
                }
                return;
            }
            Outgoing::Replicate(keys) => (
                wire::EXT_REPLICATE_FEEDS,
                vec![wire::encode_keys(&keys)],
                Some(Event::ReplicateSent { peer: id, keys }),
            ),
        };
        for payload in bodies {
            self.conn.send_root_extension(name, payload);
        }
        if let Some(ev) = event {
            self.emit(ev);
        }
    }

    /// Whether our empty `REPLICATE_FEEDS` must wait. Multifeed 6 ends the whole session
    /// ("no feeds to sync") when an empty answer arrives before its own feeds to us are set
    /// up, which it does only after a feed's `ready`: a fast empty answer cut sessions short.
    /// On that wire, an empty answer waits until the peer's offer is in and, where we asked
    /// for feeds, the peer said what it replicates and opened each of those channels (or
    /// [`REPLICATE_HOLD`] passed).
    fn hold_replicate(&self) -> bool {
        C::WIRE == Wire::Hc9
            && !matches!(self.empty_answer, EmptyAnswer::Released)
            && !self.replicate_ready()
    }

    /// The peer's offer arrived and, if we asked for any of it, the peer said what it
    /// replicates and opened those channels.
    fn replicate_ready(&self) -> bool {
        self.peer_offered
            && (self.session.requested.is_empty()
                || self.peer_replicated
                    && self
                        .session
                        .active
                        .iter()
                        .all(|k| self.conn.open_channel_of(k).is_some()))
    }

    /// Sends the held empty answer once it may go.
    async fn release_replicate(&mut self) {
        let EmptyAnswer::Held(since) = self.empty_answer else {
            return;
        };
        if self.replicate_ready() || since.elapsed() >= REPLICATE_HOLD {
            self.empty_answer = EmptyAnswer::Released;
            self.send_outgoing(Outgoing::Replicate(Vec::new())).await;
        }
    }

    async fn start_feed(&mut self, key: FeedKey) {
        if self.observing {
            return;
        }
        let offered = self
            .session
            .remote_offer
            .get(&key)
            .and_then(|m| wire::offered_name(&m));
        if self.ctx.store.get(&key).is_none() {
            // A new replica's files take a while on a busy disk, and a hub makes thousands:
            // the connection goes on (reading, keep-alives) while they are made, and the
            // channel opens when they are (`feed_made`).
            let store = self.ctx.store.clone();
            let made = self.made.clone();
            tokio::spawn(async move {
                let result = store.get_or_create_replica_on(key, offered, C::WIRE).await;
                let _ = made.send((key, result));
            });
            return;
        }
        let result = self
            .ctx
            .store
            .get_or_create_replica_on(key, offered, C::WIRE)
            .await;
        self.feed_made(key, result).await;
    }

    /// Opens the channel of a feed agreed on, once storage has it.
    async fn feed_made(&mut self, key: FeedKey, result: Made) {
        let feed = match result {
            Ok((feed, created)) => {
                if created {
                    self.ctx.announce(&feed).await;
                }
                feed
            }
            Err(e) => {
                self.session.on_start_failed(&key);
                self.emit(Event::Error {
                    peer: Some(self.id),
                    kind: ProblemKind::Storage,
                    message: e.to_string(),
                });
                return;
            }
        };
        if !self.session.active.contains(&key) || self.conn.end().is_some() {
            // Stopped while its files were made.
            return;
        }
        let mut side = C::Feed::new(feed, self.id);
        if self.peer_not_live {
            side.peer_not_live();
        }
        // Registered before the channel opens: a change after this reaches the channel, one
        // before it is in what the channel reads when it opens.
        self.replicated.add(key);
        self.conn.open(key, side);
    }

    async fn on_command(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::LocalFeeds(..) if self.observing => {}
            PeerCmd::LocalFeeds(new) => {
                // A connection offers only feeds of its own wire generation.
                let all = new.count_on(C::WIRE);
                let keys = new.numbered_on(C::WIRE).map(|(k, n)| (k, Some(n)));
                let actions = self
                    .session
                    .on_numbered_local_feeds(keys, Some(&new.numbering));
                // The manifest these lead to shares what the list has read and encoded.
                self.offering = Some((new, all));
                self.perform(actions).await;
                self.offering = None;
            }
            PeerCmd::FeedChanged(key) => {
                let Some(local) = self.conn.open_channel_of(&key) else {
                    return;
                };
                if let Some(fc) = self.conn.payload_mut(local) {
                    let outcome = fc.on_local_change().await;
                    self.apply_outcome(local, outcome);
                }
            }
            // The engine refuses decisions in observe mode; none is taken or remembered.
            PeerCmd::Decide { .. } if self.observing => {}
            PeerCmd::Decide { key, approve } => {
                let keys: Vec<FeedKey> = match key {
                    KeySelection::One(k) if self.session.remote_offer.contains_key(&k) => vec![k],
                    // A decision for every peer reaches peers that never saw the key.
                    KeySelection::One(_) => return,
                    KeySelection::AllPending => self.session.remote_offer.pending_keys(),
                };
                for k in &keys {
                    if let Err(e) = self.ctx.curator.decisions.remember(*k, approve) {
                        self.conn.warn(ProblemKind::Storage, e);
                    }
                }
                if !keys.is_empty() {
                    self.ctx.store.file_written(crate::policy::DECISIONS_FILE);
                }
                let actions = self.session.on_decisions(
                    keys.into_iter()
                        .map(|k| (k, approve, DecidedBy::Person))
                        .collect(),
                );
                self.perform(actions).await;
            }
            PeerCmd::Stop(key) => {
                if !self.session.active.contains(&key) {
                    return;
                }
                let actions = self.session.on_stop(key);
                self.perform(actions).await;
            }
            PeerCmd::Close(reason) => self.conn.finish(false, reason),
            PeerCmd::Hold => self.conn.hold(),
            PeerCmd::Step => self.conn.step(),
            PeerCmd::Continue => self.conn.resume(),
            PeerCmd::Break(kind) => self.conn.set_breakpoint(kind),
        }
    }
}
