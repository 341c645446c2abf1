//! Replication of one feed on one channel, both directions, from the core's proof API.
//!
//! Downloading: when the peer's length is ahead of ours, ask for an upgrade (the signed new
//! length), then keep up to [`WINDOW`] block requests in flight. Uploading: answer each
//! request with a proof, or `NoData`. Announcing: after a local change, a `Synchronize` with
//! the new length and a `Range` of what we hold let the peer ask for it (live replication).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use hypercore_protocol::schema::{Data, NoData, Range, Request, Synchronize};
use hypercore_protocol::Message;
use hypercore_schema::{DataBlock, DataUpgrade, RequestBlock, RequestUpgrade};

use crate::core::{self as fcore, CoreError};

use crate::event::{Event, PeerId, ProblemKind};
use crate::frame::{core, Msg};
use crate::store::Feed;
use crate::wire::FeedKey;

/// Block requests kept in flight per feed and connection.
pub const WINDOW: usize = 256;
/// Least time between two progress events of one feed on one connection.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// Separate spans of blocks a peer says it holds that we keep track of, at most; a span
/// that does not touch a known one is forgotten beyond it (its blocks are not asked for).
pub const MAX_REMOTE_SPANS: usize = 4096;
/// Largest feed length taken from a peer: tree indexes are twice a length, and the proof
/// code does not check its arithmetic.
const MAX_LENGTH: u64 = u64::MAX / 4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Inflight {
    Upgrade,
    Block(u64),
}

/// The outcome of handling one message, for the peer task.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Messages to send on this channel.
    pub send: Vec<Msg>,
    /// Events to publish.
    pub events: Vec<Event>,
    /// Our copy of the feed grew: other peers should hear of it.
    pub grew: bool,
    /// Something the peer did wrong (the session survives).
    pub warning: Option<String>,
}

/// State of one feed's replication with one peer.
#[derive(Debug)]
pub struct FeedChannel {
    /// The feed.
    pub key: FeedKey,
    feed: Feed,
    peer: PeerId,
    remote_length: u64,
    remote_fork: u64,
    have: RemoteHave,
    remote_synced: bool,
    inflight: HashMap<u64, Inflight>,
    blocks_in_flight: BTreeSet<u64>,
    /// Blocks in flight whose node count assumes the block before them arrives first.
    counted_short: HashSet<u64>,
    /// Whether node counts may assume that answers come in the order they were asked for;
    /// off for good once an answer counted that way does not verify.
    in_order: bool,
    unavailable: BTreeSet<u64>,
    /// Blocks below this were all considered by the last request scan: each is held, in
    /// flight or unavailable. Anything that can make one of them wanted again resets it.
    scanned: u64,
    next_request: u64,
    /// Block bytes received on this channel.
    pub bytes: u64,
    last_progress: Option<Instant>,
    reported_synced: Option<u64>,
    announced: (u64, u64),
    last_announce: Option<Instant>,
    reported_unreadable: bool,
}

impl FeedChannel {
    /// A channel for `feed` with `peer`; nothing is sent until [`FeedChannel::on_open`].
    pub fn new(feed: Feed, peer: PeerId) -> Self {
        FeedChannel {
            key: feed.entry.key,
            feed,
            peer,
            remote_length: 0,
            remote_fork: 0,
            have: RemoteHave::default(),
            remote_synced: false,
            inflight: HashMap::new(),
            blocks_in_flight: BTreeSet::new(),
            counted_short: HashSet::new(),
            in_order: true,
            unavailable: BTreeSet::new(),
            scanned: 0,
            next_request: 1,
            bytes: 0,
            last_progress: None,
            reported_synced: None,
            announced: (u64::MAX, u64::MAX),
            last_announce: None,
            reported_unreadable: false,
        }
    }

    /// The feed this channel replicates.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Both sides opened the channel: say what we have.
    pub async fn on_open(&mut self) -> Outcome {
        let mut out = Outcome::default();
        self.announce(&mut out, true).await;
        out
    }

    /// Our copy changed (a local append, or blocks from another peer): tell this peer.
    pub async fn on_local_change(&mut self) -> Outcome {
        let mut out = Outcome::default();
        self.announce(&mut out, false).await;
        out
    }

    async fn announce(&mut self, out: &mut Outcome, force: bool) {
        let info = self.feed.core.lock().await.info();
        let now = (info.length, info.contiguous_length);
        if !force && now == self.announced {
            return;
        }
        self.announced = now;
        out.send.push(core(Synchronize {
            fork: info.fork,
            length: info.length,
            remote_length: self.remote_length,
            downloading: true,
            uploading: true,
            can_upgrade: true,
        }));
        if info.contiguous_length > 0 {
            out.send.push(core(Range {
                drop: false,
                start: 0,
                length: info.contiguous_length,
            }));
        }
    }

    /// A hypercore message arrived on this channel.
    pub async fn on_message(&mut self, msg: Message) -> Outcome {
        let mut out = Outcome::default();
        match msg {
            Message::Synchronize(mut s) => {
                s.length = s.length.min(MAX_LENGTH);
                let changed = !self.remote_synced
                    || s.length != self.remote_length
                    || s.fork != self.remote_fork;
                self.remote_synced = true;
                if changed {
                    self.unavailable.clear();
                    self.scanned = 0;
                }
                self.remote_fork = s.fork;
                self.remote_length = s.length;
                // A JS peer asks us for an upgrade only once our Synchronize confirms its
                // length, so every change of its length is answered.
                if changed {
                    self.announce(&mut out, true).await;
                }
            }
            Message::Range(r) => {
                let end = r.start.saturating_add(r.length).min(MAX_LENGTH);
                if r.drop {
                    self.have.remove(r.start, end);
                } else {
                    self.have.add(r.start, end);
                    // Blocks it said it lacked in that span may be there now.
                    let mut span = self.unavailable.split_off(&r.start);
                    let mut after = span.split_off(&end);
                    self.unavailable.append(&mut after);
                    self.scanned = self.scanned.min(r.start);
                }
            }
            Message::Request(r) => self.serve(r, &mut out).await,
            Message::Data(d) => {
                let Some(what) = self.inflight.remove(&d.request) else {
                    out.warning = Some(format!(
                        "peer sent data for feed {} that was not requested (request id {}); ignored",
                        self.key.short(),
                        d.request
                    ));
                    return out;
                };
                let mut counted_short = false;
                if let Inflight::Block(i) = what {
                    self.blocks_in_flight.remove(&i);
                    counted_short = self.counted_short.remove(&i);
                }
                if d.block.is_none() && d.hash.is_none() && d.seek.is_none() && d.upgrade.is_none()
                {
                    // An empty core answers with an empty Data: it has nothing, like NoData.
                    match what {
                        Inflight::Block(i) => {
                            self.unavailable.insert(i);
                        }
                        Inflight::Upgrade => self.remote_synced = false,
                    }
                    self.pump(&mut out).await;
                    return out;
                }
                // One lock for the check and the proof: no other peer's upgrade in between.
                let core_handle = self.feed.core.clone();
                let hc = core_handle.lock().await;
                if let Err(why) = check_answer(what, &d, hc.info().length) {
                    out.warning = Some(format!(
                        "rejected data for feed {}: {why}; nothing was written",
                        self.key.short()
                    ));
                    match what {
                        Inflight::Block(i) => {
                            self.unavailable.insert(i);
                        }
                        Inflight::Upgrade => self.remote_synced = false,
                    }
                    return out;
                }
                let block_len = d.block.as_ref().map_or(0, |b| b.value.len() as u64);
                let mut hc = hc;
                let applied = proof_from_wire(d).and_then(|p| hc.apply(p));
                drop(hc);
                match applied {
                    Ok(true) => {
                        self.bytes += block_len;
                        out.grew = true;
                    }
                    Ok(false) => self.scanned = 0,
                    Err(e @ (CoreError::Io { .. } | CoreError::Damaged(_))) => {
                        self.scanned = 0;
                        self.storage_error("store a received block", &e, &mut out);
                    }
                    Err(e) if counted_short => {
                        // Not the peer's fault: the block before it did not arrive first.
                        // Asked again, counted from what we hold.
                        tracing::debug!(feed = %self.key.short(), "short-counted proof: {e}");
                        self.in_order = false;
                        self.scanned = 0;
                    }
                    Err(e) => {
                        // The block is wanted again (from this peer or another).
                        self.scanned = 0;
                        out.warning = Some(proof_warning(&self.key, e));
                    }
                }
            }
            Message::NoData(n) => match self.inflight.remove(&n.request) {
                Some(Inflight::Block(i)) => {
                    self.blocks_in_flight.remove(&i);
                    self.counted_short.remove(&i);
                    self.unavailable.insert(i);
                }
                // The peer cannot prove the length it announced (yet): wait for its next
                // Synchronize instead of asking again at once.
                Some(Inflight::Upgrade) => self.remote_synced = false,
                None => {}
            },
            // A bitfield says block by block what the peer holds, from `start`: the same as
            // one Range per run of set bits.
            Message::Bitfield(b) => {
                for (start, end) in bit_runs(b.start, &b.bitfield) {
                    self.have.add(start, end);
                    self.scanned = self.scanned.min(start);
                }
            }
            // Want, Unwant and Cancel carry hints this replicator does not need: it asks for
            // what it lacks and answers every request it can.
            _ => {}
        }
        self.pump(&mut out).await;
        self.progress(&mut out).await;
        // Tell the peer what we hold now and then, not after every block: it only needs it
        // to ask us for blocks, and a Range per block doubles the messages of a transfer.
        let due = self
            .last_announce
            .is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
        if out.grew
            && (due
                || self
                    .reported_synced
                    .is_some_and(|l| l >= self.remote_length))
        {
            self.last_announce = Some(Instant::now());
            self.announce(&mut out, false).await;
        }
        out
    }

    async fn serve(&mut self, r: Request, out: &mut Outcome) {
        let mut hc = self.feed.core.lock().await;
        let info = hc.info();
        // Requests a proof cannot answer get NoData at once, as JS hypercore answers them; a
        // JS peer never sends them to a healthy core.
        let upgrade_ok = r.upgrade.as_ref().is_none_or(|u| {
            u.length > 0
                && u.start
                    .checked_add(u.length)
                    .is_some_and(|end| end <= info.length)
        });
        let block_ok = r.block.as_ref().is_none_or(|b| {
            b.index < info.length
                && hc.has(b.index)
                && r.upgrade.as_ref().is_none_or(|u| {
                    u.start
                        .checked_add(u.length)
                        .is_some_and(|end| b.index < end)
                })
        });
        let answerable = r.fork == info.fork
            && r.seek.is_none()
            && r.hash.is_none()
            && (r.block.is_some() || r.upgrade.is_some())
            && upgrade_ok
            && block_ok;
        let proof = answerable.then(|| hc.proof(&request_from_wire(&r)));
        drop(hc);
        match proof {
            Some(Ok(p)) => out.send.push(core(proof_to_wire(p, r.id, r.fork))),
            Some(Err(e @ (CoreError::Io { .. } | CoreError::Damaged(_)))) => {
                let what = r
                    .block
                    .as_ref()
                    .map_or("an upgrade proof".to_string(), |b| {
                        format!("block {}", b.index)
                    });
                self.storage_error(&format!("read {what} to serve it"), &e, out);
                out.send.push(core(NoData { request: r.id }))
            }
            // A request this tree cannot answer (a JS peer answers it with NoData too).
            Some(Err(_)) | None => out.send.push(core(NoData { request: r.id })),
        }
    }

    /// Reports, once per channel, that our own storage failed (not the peer).
    fn storage_error(&mut self, doing: &str, e: &CoreError, out: &mut Outcome) {
        if self.reported_unreadable {
            return;
        }
        self.reported_unreadable = true;
        out.events.push(Event::Error {
            peer: Some(self.peer),
            kind: ProblemKind::Storage,
            message: format!(
                "feed {}: cannot {doing} ({e}); its files may be damaged: check with `feedscope cat --key {}`, and restore the folder from a backup or replicate the feed again",
                self.key.short(),
                self.key
            ),
        });
    }

    /// Sends the requests the window allows.
    async fn pump(&mut self, out: &mut Outcome) {
        if !self.remote_synced {
            return;
        }
        let core_handle = self.feed.core.clone();
        let hc = core_handle.lock().await;
        let info = hc.info();
        if info.writeable {
            return;
        }
        let upgrading = self.inflight.values().any(|v| *v == Inflight::Upgrade);
        if self.remote_length > info.length && !upgrading {
            let id = self.take_id();
            self.inflight.insert(id, Inflight::Upgrade);
            out.send.push(core(Request {
                id,
                fork: info.fork,
                block: None,
                hash: None,
                seek: None,
                upgrade: Some(RequestUpgrade {
                    start: info.length,
                    length: self.remote_length - info.length,
                }),
                manifest: false,
                priority: 0,
            }));
        }
        // Ask for what the peer says it has. A peer that sent no Range (an older feedscope
        // did not) is asked for every block below its length, and a NoData marks a block as
        // not there.
        let have_upto = if self.have.seen {
            info.length.min(self.have.end())
        } else {
            info.length.min(self.remote_length)
        };
        let mut index = info.contiguous_length.max(self.scanned);
        while self.blocks_in_flight.len() < WINDOW && index < have_upto {
            if self.have.seen && !self.have.contains(index) {
                index = self.have.next_from(index).unwrap_or(have_upto);
                continue;
            }
            if !self.blocks_in_flight.contains(&index)
                && !self.unavailable.contains(&index)
                && !hc.has(index)
            {
                // A peer answers in the order it was asked (feedscope does): a block asked for
                // right after the one before it will find that block's path stored, and needs
                // only the nodes up to where the two paths meet. A peer that answers out of
                // order only turns this off (see `in_order`).
                let before_held = index > 0 && hc.has(index - 1);
                let before_first =
                    index > 0 && self.in_order && self.blocks_in_flight.contains(&(index - 1));
                let held_below = if before_held || before_first {
                    index
                } else {
                    info.contiguous_length
                };
                let nodes = nodes_to_ask(index, info.length, held_below);
                if before_first && !before_held {
                    self.counted_short.insert(index);
                }
                let id = self.take_id();
                self.inflight.insert(id, Inflight::Block(index));
                self.blocks_in_flight.insert(index);
                out.send.push(core(Request {
                    id,
                    fork: info.fork,
                    block: Some(RequestBlock { index, nodes }),
                    hash: None,
                    seek: None,
                    upgrade: None,
                    manifest: false,
                    priority: 0,
                }));
            }
            index += 1;
        }
        self.scanned = index;
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    async fn progress(&mut self, out: &mut Outcome) {
        let mut hc = self.feed.core.lock().await;
        let info = hc.info();
        let synced = self.remote_synced
            && self.remote_length > 0
            && info.contiguous_length >= self.remote_length;
        let due = self
            .last_progress
            .is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
        let report_synced = synced && self.reported_synced != Some(info.contiguous_length);
        if (out.grew && (due || synced)) || report_synced {
            // What a progress or synced event reports is committed first: it survives a
            // kill from the moment the event is out.
            if let Err(e) = hc.commit() {
                drop(hc);
                self.storage_error("write received blocks", &e, out);
                return;
            }
        }
        drop(hc);
        if out.grew && (due || synced) {
            self.last_progress = Some(Instant::now());
            out.events.push(Event::FeedProgress {
                peer: self.peer,
                key: self.key,
                local_length: info.contiguous_length,
                remote_length: self.remote_length,
                bytes: self.bytes,
            });
        }
        if synced && self.reported_synced != Some(info.contiguous_length) {
            self.reported_synced = Some(info.contiguous_length);
            out.events.push(Event::FeedSynced {
                peer: self.peer,
                key: self.key,
                length: info.contiguous_length,
            });
        }
    }
}

/// How many tree nodes to ask for with block `index` of a replica whose tree has `length`
/// blocks, `contiguous` of them held from the start: the nodes from the block's leaf up to,
/// and not counting, the first node known to be stored.
///
/// A replica stores the whole path from each verified leaf up to its root, and every root of
/// its length; so a node is surely stored when its span starts below `contiguous` or when it
/// is a root. Nodes that arrived as siblings in other proofs may be stored too and are asked
/// for again: a proof with more nodes than needed verifies just the same, while one with too
/// few does not. This counts in a few integer steps what the core's `missing_nodes` finds
/// with a tree read per level, a cost that was a sixth of the CPU time of a download.
pub fn nodes_to_ask(index: u64, length: u64, contiguous: u64) -> u64 {
    if index >= length {
        return 0;
    }
    let mut level = 0u32;
    // A span of 2^63 blocks would be the root of a tree longer than any length taken.
    while level < 63 {
        let start = index >> level << level;
        let parent_end = (index >> (level + 1) << (level + 1)) + (2 << level);
        if start < contiguous || parent_end > length {
            break;
        }
        level += 1;
    }
    u64::from(level)
}

/// Checks that a Data message answers what its request asked, in a shape the proof code can
/// take: that code trusts the shape of a proof and can panic on a malformed one (and a panic
/// there leaves the core's locks poisoned for good).
fn check_answer(what: Inflight, d: &Data, our_length: u64) -> Result<(), String> {
    if d.hash.is_some() || d.seek.is_some() {
        return Err("it carries a hash or seek proof that was not asked for".into());
    }
    match what {
        Inflight::Block(i) => {
            if d.upgrade.is_some() {
                return Err(format!(
                    "it answers block {i} with an upgrade that was not asked for"
                ));
            }
            match &d.block {
                Some(b) if b.index == i => Ok(()),
                Some(b) => Err(format!("it answers block {i} with block {}", b.index)),
                None => Err(format!("it answers block {i} without the block")),
            }
        }
        Inflight::Upgrade => {
            if d.block.is_some() {
                return Err("it answers an upgrade with a block that was not asked for".into());
            }
            let Some(u) = &d.upgrade else {
                return Err("it answers an upgrade request without an upgrade".into());
            };
            let end = u.start.checked_add(u.length).filter(|&e| e <= MAX_LENGTH);
            match end {
                Some(end) if u.length > 0 && u.start <= our_length && end > our_length => Ok(()),
                _ => Err(format!(
                    "its upgrade (start {}, length {}) does not extend our length {our_length}",
                    u.start, u.length
                )),
            }
        }
    }
}

/// The runs of set bits in `words` (32 blocks a word, least significant bit first), as
/// half-open block spans counted from `start`; at most about [`MAX_REMOTE_SPANS`] of them.
fn bit_runs(start: u64, words: &[u32]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (w, &word) in words.iter().enumerate() {
        // No more spans than can be kept: a hostile bitfield costs at most this much work.
        if word == 0 || runs.len() > MAX_REMOTE_SPANS {
            continue;
        }
        let first = start.saturating_add(w as u64 * 32);
        if word == u32::MAX && first.saturating_add(32) < MAX_LENGTH {
            match runs.last_mut() {
                Some((_, end)) if *end == first => *end = first + 32,
                _ => runs.push((first, first + 32)),
            }
            continue;
        }
        for bit in 0..32u64 {
            if word & (1 << bit) == 0 {
                continue;
            }
            let Some(i) = start
                .checked_add(w as u64 * 32 + bit)
                .filter(|&i| i < MAX_LENGTH)
            else {
                return runs;
            };
            match runs.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => runs.push((i, i + 1)),
            }
        }
    }
    runs
}

/// The blocks a peer said it holds (its `Range` and `Bitfield` messages), as separate
/// half-open spans.
#[derive(Debug, Default)]
struct RemoteHave {
    /// Whether the peer sent any Range at all.
    seen: bool,
    spans: BTreeMap<u64, u64>,
}

impl RemoteHave {
    fn add(&mut self, start: u64, end: u64) {
        self.seen = true;
        if start >= end {
            return;
        }
        // Spans are disjoint and never adjacent, so their ends grow with their starts.
        let touching: Vec<(u64, u64)> = self
            .spans
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        if touching.is_empty() && self.spans.len() >= MAX_REMOTE_SPANS {
            return;
        }
        let (mut lo, mut hi) = (start, end);
        for (s, e) in touching {
            self.spans.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.spans.insert(lo, hi);
    }

    fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let cut: Vec<(u64, u64)> = self
            .spans
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in cut {
            self.spans.remove(&s);
            if s < start {
                self.spans.insert(s, start);
            }
            if e > end {
                self.spans.insert(end, e);
            }
        }
    }

    fn contains(&self, index: u64) -> bool {
        self.spans
            .range(..=index)
            .next_back()
            .is_some_and(|(_, &e)| index < e)
    }

    /// The first held block at or after `index`.
    fn next_from(&self, index: u64) -> Option<u64> {
        if self.contains(index) {
            return Some(index);
        }
        self.spans.range(index..).next().map(|(&s, _)| s)
    }

    /// One past the last block the peer holds.
    fn end(&self) -> u64 {
        self.spans.values().next_back().copied().unwrap_or(0)
    }
}

fn proof_warning(key: &FeedKey, e: CoreError) -> String {
    format!(
        "rejected data for feed {} that does not verify ({e}); nothing was written",
        key.short()
    )
}

fn node_from_wire(n: &hypercore_schema::Node) -> Result<fcore::Node, CoreError> {
    let hash = n.hash.as_slice().try_into().map_err(|_| {
        fcore::ProofError::Malformed(format!(
            "node {} has a hash of {} bytes",
            n.index,
            n.hash.len()
        ))
    })?;
    Ok(fcore::Node {
        index: n.index,
        size: n.length,
        hash,
    })
}

fn nodes_from_wire(nodes: &[hypercore_schema::Node]) -> Result<Vec<fcore::Node>, CoreError> {
    nodes.iter().map(node_from_wire).collect()
}

fn node_to_wire(n: fcore::Node) -> hypercore_schema::Node {
    hypercore_schema::Node::new(n.index, n.hash.to_vec(), n.size)
}

/// A peer's Data message as a proof for our core.
fn proof_from_wire(d: Data) -> Result<fcore::Proof, CoreError> {
    Ok(fcore::Proof {
        fork: d.fork,
        block: match d.block {
            Some(b) => Some(fcore::BlockProof {
                index: b.index,
                nodes: nodes_from_wire(&b.nodes)?,
                value: b.value,
            }),
            None => None,
        },
        hash: match d.hash {
            Some(h) => Some(fcore::HashProof {
                index: h.index,
                nodes: nodes_from_wire(&h.nodes)?,
            }),
            None => None,
        },
        upgrade: match d.upgrade {
            Some(u) => Some(fcore::UpgradeProof {
                start: u.start,
                length: u.length,
                nodes: nodes_from_wire(&u.nodes)?,
                additional: nodes_from_wire(&u.additional_nodes)?,
                signature: u.signature,
            }),
            None => None,
        },
    })
}

/// A peer's request as our core takes it (seek left out: it is never answered).
pub fn request_from_wire(r: &Request) -> fcore::Request {
    fcore::Request {
        block: r.block.as_ref().map(|b| fcore::Want {
            index: b.index,
            nodes: b.nodes,
        }),
        hash: r.hash.as_ref().map(|h| fcore::Want {
            index: h.index,
            nodes: h.nodes,
        }),
        upgrade: r.upgrade.as_ref().map(|u| (u.start, u.length)),
    }
}

/// Our proof as the Data message answering request `id` (whose fork it echoes).
pub fn proof_to_wire(p: fcore::Proof, id: u64, fork: u64) -> Data {
    Data {
        request: id,
        fork,
        block: p.block.map(|b| DataBlock {
            index: b.index,
            value: b.value,
            nodes: b.nodes.into_iter().map(node_to_wire).collect(),
        }),
        hash: p.hash.map(|h| hypercore_schema::DataHash {
            index: h.index,
            nodes: h.nodes.into_iter().map(node_to_wire).collect(),
        }),
        seek: None,
        upgrade: p.upgrade.map(|u| DataUpgrade {
            start: u.start,
            length: u.length,
            nodes: u.nodes.into_iter().map(node_to_wire).collect(),
            additional_nodes: u.additional.into_iter().map(node_to_wire).collect(),
            signature: u.signature,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use hypercore_protocol::schema::NoData;
    use hypercore_schema::{DataBlock, DataUpgrade};

    /// The upgrade part of the writer's Data answering `upgrade`.
    async fn wire_proof(
        writer: &crate::store::Feed,
        block: Option<RequestBlock>,
        upgrade: Option<RequestUpgrade>,
    ) -> Data {
        let p = writer
            .core
            .lock()
            .await
            .proof(&fcore::Request {
                block: block.map(|b| fcore::Want {
                    index: b.index,
                    nodes: b.nodes,
                }),
                hash: None,
                upgrade: upgrade.map(|u| (u.start, u.length)),
            })
            .unwrap();
        proof_to_wire(p, 0, 0)
    }

    fn sync(length: u64) -> Message {
        Message::Synchronize(Synchronize {
            fork: 0,
            length,
            remote_length: 0,
            downloading: true,
            uploading: true,
            can_upgrade: true,
        })
    }

    fn requests(out: &Outcome) -> Vec<Request> {
        out.send
            .iter()
            .filter_map(|m| match m {
                Msg::Core(Message::Request(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn an_upgrade_the_peer_cannot_give_is_asked_again_only_after_its_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (feed, _) = store
            .get_or_create_replica(FeedKey(
                ed25519_dalek::SigningKey::from_bytes(&rand::random())
                    .verifying_key()
                    .to_bytes(),
            ))
            .await
            .unwrap();
        let mut ch = FeedChannel::new(feed, 1);
        let out = ch.on_message(sync(5)).await;
        let up = requests(&out);
        assert_eq!(up.len(), 1);
        assert!(up[0].upgrade.is_some());
        let out = ch
            .on_message(Message::NoData(NoData { request: up[0].id }))
            .await;
        assert!(requests(&out).is_empty(), "no request storm after NoData");
        let out = ch.on_message(sync(5)).await;
        assert_eq!(requests(&out).len(), 1, "asked again after the next sync");
    }

    #[tokio::test]
    async fn requests_with_overflowing_ranges_get_no_data_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (feed, _) = store.create_writable("w").await.unwrap();
        feed.append(&[b"x"]).await.unwrap();
        let mut ch = FeedChannel::new(feed, 1);
        let out = ch
            .on_message(Message::Request(Request {
                id: 7,
                fork: 0,
                block: Some(RequestBlock { index: 0, nodes: 0 }),
                hash: None,
                seek: None,
                upgrade: Some(RequestUpgrade {
                    start: u64::MAX,
                    length: 2,
                }),
                manifest: false,
                priority: 0,
            }))
            .await;
        assert!(out
            .send
            .iter()
            .any(|m| matches!(m, Msg::Core(Message::NoData(n)) if n.request == 7)));
    }

    async fn replica_of(key: FeedKey) -> (tempfile::TempDir, FeedChannel) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (feed, _) = store.get_or_create_replica(key).await.unwrap();
        (dir, FeedChannel::new(feed, 1))
    }

    async fn replica() -> (tempfile::TempDir, FeedChannel) {
        replica_of(FeedKey(
            ed25519_dalek::SigningKey::from_bytes(&rand::random())
                .verifying_key()
                .to_bytes(),
        ))
        .await
    }

    fn data(request: u64, block: Option<DataBlock>, upgrade: Option<DataUpgrade>) -> Message {
        Message::Data(Data {
            request,
            fork: 0,
            block,
            hash: None,
            seek: None,
            upgrade,
        })
    }

    fn upgrade(start: u64, length: u64) -> DataUpgrade {
        DataUpgrade {
            start,
            length,
            nodes: Vec::new(),
            additional_nodes: Vec::new(),
            signature: vec![0; 64],
        }
    }

    #[tokio::test]
    async fn malformed_upgrades_are_refused_before_the_proof_code_sees_them() {
        for (start, length) in [(0, 0), (u64::MAX, 2), (1, 3), (0, u64::MAX / 2)] {
            let (_dir, mut ch) = replica().await;
            let up = requests(&ch.on_message(sync(5)).await);
            let out = ch
                .on_message(data(up[0].id, None, Some(upgrade(start, length))))
                .await;
            let w = out.warning.expect("a warning names the fault");
            assert!(w.contains("does not extend our length 0"), "{w}");
            assert!(!out.grew);
            // The core still answers: nothing inside it panicked.
            assert_eq!(ch.feed().core.lock().await.info().length, 0);
            assert!(
                requests(&ch.on_message(sync(6)).await)[0].upgrade.is_some(),
                "asked again after the next sync"
            );
        }
    }

    #[tokio::test]
    async fn answers_that_do_not_match_their_request_are_refused() {
        let (_dir, mut ch) = replica().await;
        let up = requests(&ch.on_message(sync(5)).await);
        let block = DataBlock {
            index: 0,
            value: b"x".to_vec(),
            nodes: Vec::new(),
        };
        let out = ch.on_message(data(up[0].id, Some(block), None)).await;
        assert!(out
            .warning
            .unwrap()
            .contains("block that was not asked for"));
        let out = ch.on_message(data(up[0].id, None, None)).await;
        assert!(
            out.warning.unwrap().contains("not requested"),
            "a replayed answer is refused"
        );
    }

    #[tokio::test]
    async fn only_blocks_the_peer_says_it_holds_are_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (writer, _) = store.create_writable("w").await.unwrap();
        let lines: Vec<String> = (0..10).map(|i| format!("block {i}")).collect();
        writer.append(&lines).await.unwrap();
        let (_dir, mut ch) = replica_of(writer.entry.key).await;
        let up = requests(&ch.on_message(sync(10)).await);
        let proof = wire_proof(&writer, None, up[0].upgrade.clone()).await;
        let range = |start, length| {
            Message::Range(Range {
                drop: false,
                start,
                length,
            })
        };
        ch.on_message(range(0, 3)).await;
        let out = ch.on_message(data(up[0].id, None, proof.upgrade)).await;
        assert!(out.warning.is_none(), "{:?}", out.warning);
        let asked = |out: &Outcome| -> Vec<u64> {
            requests(out)
                .iter()
                .filter_map(|r| r.block.as_ref().map(|b| b.index))
                .collect()
        };
        assert_eq!(asked(&out), [0, 1, 2]);
        // A block it then says it lacks is not asked again until a Range covers it.
        let id = requests(&out)[1].id;
        let out = ch.on_message(Message::NoData(NoData { request: id })).await;
        assert!(asked(&out).is_empty());
        let out = ch.on_message(range(7, 2)).await;
        assert_eq!(asked(&out), [7, 8], "a later span, and not block 1 again");
        let out = ch.on_message(range(1, 1)).await;
        assert_eq!(asked(&out), [1]);
    }

    #[test]
    fn bitfield_words_become_runs_of_blocks() {
        // Blocks 0-2 and 31-33, then 70.
        let words = [0b111 | (1 << 31), 0b11, 1 << 6];
        assert_eq!(bit_runs(100, &words), [(100, 103), (131, 134), (170, 171)]);
        assert_eq!(bit_runs(0, &[u32::MAX, u32::MAX, 1]), [(0, 65)]);
        assert!(bit_runs(u64::MAX - 3, &[u32::MAX])
            .iter()
            .all(|&(_, e)| e <= MAX_LENGTH));
    }

    proptest::proptest! {
        #[test]
        fn remote_spans_agree_with_a_plain_set(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u64..64, 0u64..16), 0..40)
        ) {
            let mut have = RemoteHave::default();
            let mut model = BTreeSet::new();
            for (drop, start, length) in ops {
                if drop {
                    have.remove(start, start + length);
                    for i in start..start + length {
                        model.remove(&i);
                    }
                } else {
                    have.add(start, start + length);
                    model.extend(start..start + length);
                }
                for i in 0..80 {
                    proptest::prop_assert_eq!(have.contains(i), model.contains(&i), "block {}", i);
                    proptest::prop_assert_eq!(
                        have.next_from(i),
                        model.range(i..).next().copied(),
                        "next from {}", i
                    );
                }
                proptest::prop_assert_eq!(have.end(), model.last().map_or(0, |l| l + 1));
                // Disjoint and never adjacent.
                let spans: Vec<(u64, u64)> = have.spans.iter().map(|(&s, &e)| (s, e)).collect();
                for w in spans.windows(2) {
                    proptest::prop_assert!(w[0].1 < w[1].0, "{:?}", spans);
                }
            }
        }
    }

    /// Replicates up to `total` blocks into a replica the way the download loop does: the
    /// writer grows by each step's count, the replica upgrades to it and asks for a batch of
    /// blocks, every count of nodes worked out before any of the batch's answers arrive. Each
    /// count must be at least the core's own, and each proof made with it must verify.
    async fn fetch_with_counted_nodes(total: u64, steps: Vec<(u64, Vec<u64>, bool)>) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = Store::open(a.path()).await.unwrap();
        let (w, _) = src.create_writable("w").await.unwrap();
        let blocks: Vec<Vec<u8>> = (0..total).map(|i| i.to_le_bytes().to_vec()).collect();
        let key = w.entry.key;
        let mut dst = Some(Store::open(b.path()).await.unwrap());
        let mut r = dst
            .as_ref()
            .unwrap()
            .get_or_create_replica(key)
            .await
            .unwrap()
            .0;
        let mut wc = w.core.lock().await;
        let mut length = 0;
        for (grow, picks, reopen) in steps {
            if reopen {
                r.sync().await.unwrap();
                drop((r, dst.take()));
                let store = Store::open(b.path()).await.unwrap();
                assert!(store.broken.is_empty(), "{:?}", store.broken);
                r = store.get(&key).unwrap();
                dst = Some(store);
            }
            let mut rc = r.core.lock().await;
            let to = (length + grow).min(total);
            if to > length {
                // The writer grows as it goes, as a live feed does.
                wc.append(&blocks[length as usize..to as usize]).unwrap();
                let p = wc
                    .proof(&fcore::Request {
                        upgrade: Some((length, to - length)),
                        ..fcore::Request::default()
                    })
                    .unwrap();
                assert!(rc.apply(p).unwrap());
                length = to;
            }
            let info = rc.info();
            assert_eq!(info.length, length);
            let mut asked = Vec::new();
            for i in picks.into_iter().map(|p| p % length.max(1)) {
                if length == 0 || rc.has(i) || asked.iter().any(|&(j, _)| j == i) {
                    continue;
                }
                let nodes = nodes_to_ask(i, info.length, info.contiguous_length);
                let exact = rc.missing_nodes(i).unwrap();
                assert!(nodes >= exact, "block {i} of {length}: {nodes} < {exact}");
                asked.push((i, nodes));
            }
            for (i, nodes) in asked {
                let p = wc
                    .proof(&fcore::Request {
                        block: Some(fcore::Want { index: i, nodes }),
                        ..fcore::Request::default()
                    })
                    .unwrap();
                let applied = rc.apply(p);
                assert!(
                    matches!(applied, Ok(true)),
                    "block {i} of {length} with {nodes} nodes: {applied:?}"
                );
                assert_eq!(rc.get(i).unwrap().unwrap(), blocks[i as usize]);
            }
        }
    }

    #[tokio::test]
    async fn counted_nodes_verify_in_order_and_out_of_order() {
        let all: Vec<u64> = (0..100).collect();
        let backwards: Vec<u64> = (0..100).rev().collect();
        fetch_with_counted_nodes(100, vec![(100, all, false)]).await;
        fetch_with_counted_nodes(100, vec![(100, backwards, false)]).await;
        let steps = (0..10)
            .map(|s| (7, (0..7).map(|i| s * 7 + i).collect(), s % 3 == 2))
            .collect();
        fetch_with_counted_nodes(70, steps).await;
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn counted_nodes_are_never_too_few(
            total in 1u64..300,
            steps in proptest::collection::vec(
                (1u64..120, proptest::collection::vec(0u64..300, 0..60), proptest::bool::weighted(0.2)),
                1..6,
            ),
        ) {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fetch_with_counted_nodes(total, steps));
        }
    }

    fn core_messages(out: Outcome, into: &mut Vec<Message>, warnings: &mut Vec<String>) {
        warnings.extend(out.warning);
        into.extend(out.send.into_iter().filter_map(|m| match m {
            Msg::Core(m) => Some(m),
            _ => None,
        }));
    }

    /// Replicates `blocks` from a writer's channel to a replica's until both fall silent. With
    /// `reverse`, each batch of answers reaches the replica last first. Returns the warnings,
    /// the block requests and the proof nodes they asked for.
    async fn shuttle(blocks: &[Vec<u8>], reverse: bool) -> (Vec<String>, usize, u64, FeedChannel) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = Store::open(a.path()).await.unwrap();
        let (w, _) = src.create_writable("w").await.unwrap();
        w.append(blocks).await.unwrap();
        let dst = Store::open(b.path()).await.unwrap();
        let (r, _) = dst.get_or_create_replica(w.entry.key).await.unwrap();
        let (mut server, mut client) = (FeedChannel::new(w, 1), FeedChannel::new(r, 2));
        let (mut to_client, mut to_server, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
        core_messages(server.on_open().await, &mut to_client, &mut warnings);
        core_messages(client.on_open().await, &mut to_server, &mut warnings);
        let (mut requests, mut nodes) = (0, 0);
        for _ in 0..10_000 {
            if to_client.is_empty() && to_server.is_empty() {
                break;
            }
            for m in std::mem::take(&mut to_server) {
                if let Message::Request(Request { block: Some(b), .. }) = &m {
                    requests += 1;
                    nodes += b.nodes;
                }
                core_messages(server.on_message(m).await, &mut to_client, &mut warnings);
            }
            let (mut answers, others): (Vec<Message>, Vec<Message>) =
                std::mem::take(&mut to_client)
                    .into_iter()
                    .partition(|m| matches!(m, Message::Data(_)));
            if reverse {
                answers.reverse();
            }
            for m in others.into_iter().chain(answers) {
                core_messages(client.on_message(m).await, &mut to_server, &mut warnings);
            }
        }
        {
            let mut rc = client.feed().core.lock().await;
            assert_eq!(rc.info().contiguous_length, blocks.len() as u64);
            for (i, block) in blocks.iter().enumerate() {
                assert_eq!(&rc.get(i as u64).unwrap().unwrap(), block, "block {i}");
            }
        }
        (warnings, requests, nodes, client)
    }

    #[tokio::test]
    async fn blocks_asked_for_in_a_row_carry_few_nodes_and_answers_out_of_order_still_land() {
        let blocks: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_le_bytes().repeat(20)).collect();
        let (warnings, requests, nodes, client) = shuttle(&blocks, false).await;
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(requests, blocks.len(), "each block asked for once");
        assert!(client.in_order);
        // Counted from the contiguous length alone, a window of 256 asks for about 8 nodes a
        // block here; counted from the block before, about 2.
        assert!(
            nodes <= 3 * requests as u64,
            "{nodes} nodes for {requests} blocks"
        );

        // Last first: the short counts miss, and the channel goes back to full counts without
        // a warning, since the peer did nothing wrong.
        let (warnings, requests, _, client) = shuttle(&blocks, true).await;
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!client.in_order);
        assert!(requests < 2 * blocks.len(), "{requests} requests");
    }

    #[test]
    fn counted_nodes_stop_at_roots_and_at_held_spans() {
        // One block: its leaf is the root.
        assert_eq!(nodes_to_ask(0, 1, 0), 0);
        // Eight blocks, none held: from a leaf up to the root is three levels.
        assert_eq!(nodes_to_ask(5, 8, 0), 3);
        // Block 0 held: the node over blocks 4..8 is not known, the root above it is.
        assert_eq!(nodes_to_ask(5, 8, 1), 3);
        // Blocks 0..5 held: the node over 4..6 holds block 4.
        assert_eq!(nodes_to_ask(5, 8, 5), 1);
        // Seven blocks: roots over 0..4, 4..6 and 6; block 6 is a root.
        assert_eq!(nodes_to_ask(6, 7, 0), 0);
        assert_eq!(nodes_to_ask(5, 7, 0), 1);
        assert_eq!(nodes_to_ask(9, 7, 0), 0, "past the end");
    }
}
