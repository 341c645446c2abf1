//! Replication of one feed with one peer as a state machine: messages, a view of the core and
//! the time go in, [`Effect`]s come out. No I/O, no clock, no lock, no store: the driver
//! ([`super::FeedChannel`]) holds the core's lock for a whole call, shows the core through
//! [`View`], and carries out the effects in order.
//!
//! Downloading: when the peer's length is ahead of ours, ask for an upgrade (the signed new
//! length), then keep up to [`WINDOW`] block requests in flight. Uploading: answer each
//! request with a proof ([`Effect::Serve`]), or `NoData`. Announcing: after a local change, a
//! `Synchronize` with the new length and a `Range` of what we hold let the peer ask for it
//! (live replication).
//!
//! Three effects need an answer before the machine goes on, and each is the last of its
//! batch: [`Effect::Apply`] ([`Replicator::on_applied`]), [`Effect::Commit`]
//! ([`Replicator::on_committed`]) and a failed [`Effect::Serve`]
//! ([`Replicator::on_serve_failed`]). The view passed with an answer must show the core as it
//! is after the effect.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::FastHash as Fast;
use std::time::{Duration, Instant};

use hypercore_protocol::schema::{Data, NoData, Range, Request, Synchronize};
use hypercore_protocol::Message;
use hypercore_schema::{RequestBlock, RequestUpgrade};

use super::remote::{bit_runs, RemoteHave};
use super::shape::{check_answer, MAX_LENGTH};
pub use super::shape::{nodes_after, nodes_to_ask};
use crate::event::{Event, PeerId, ProblemKind};
use crate::wire::FeedKey;

/// Block requests kept in flight per feed and connection.
pub const WINDOW: usize = 256;
/// Least time between two progress events of one feed on one connection.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// What the machine reads of the core: a consistent state for the length of one call.
pub trait View {
    /// Blocks in the feed, held or not.
    fn length(&self) -> u64;
    /// Blocks held from the start without a gap.
    fn contiguous_length(&self) -> u64;
    /// The writer's truncation count.
    fn fork(&self) -> u64;
    /// Whether we write this feed (then it is never downloaded).
    fn writable(&self) -> bool;
    /// Whether block `index` is held.
    fn has(&self, index: u64) -> bool;
}

/// Something for the driver to do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Send this message to the peer.
    Send(Message),
    /// Answer this request with the core's proof for it. If the proof cannot be made, tell
    /// [`Replicator::on_serve_failed`] and carry out what it returns in place of this.
    Serve(Request),
    /// Check this answer against the core and apply it, under the lock the view was read
    /// with, then tell [`Replicator::on_applied`].
    Apply(Data),
    /// Commit what the core staged, then tell [`Replicator::on_committed`]: what it returns
    /// reports what was committed.
    Commit,
    /// Publish this event.
    Event(Event),
    /// Something the peer did wrong (the session survives); a later one replaces it.
    Warning(String),
    /// Our copy of the feed grew: other peers should hear of it.
    Grew,
}

/// The effects of one call, in the order they are to be carried out.
pub type Effects = Vec<Effect>;

/// Why the core could not do what an effect asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Our own storage failed: not the peer's fault.
    Storage(String),
    /// The proof or request does not check, or cannot be answered from this tree.
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Inflight {
    Upgrade,
    Block(u64),
}

/// A call the machine waits for before it goes on.
#[derive(Debug)]
enum Pending {
    Apply {
        counted_short: bool,
        block_len: u64,
    },
    Commit {
        progress: Option<u64>,
        synced: Option<u64>,
        grew: bool,
    },
}

/// State of one feed's replication with one peer.
#[derive(Debug)]
pub struct Replicator {
    key: FeedKey,
    peer: PeerId,
    remote_length: u64,
    remote_fork: u64,
    have: RemoteHave,
    remote_synced: bool,
    /// Requests by id. Ids are ours and hashed with a per-process seed: a fast hash is enough
    /// (the block path looks each up twice).
    inflight: HashMap<u64, Inflight, Fast>,
    /// Upgrade requests among `inflight` (0 or 1), kept so the pump need not scan them.
    upgrades_in_flight: usize,
    blocks_in_flight: BTreeSet<u64>,
    /// Blocks in flight whose node count assumes the block before them arrives first.
    counted_short: HashSet<u64, Fast>,
    /// Whether node counts may assume that answers come in the order they were asked for;
    /// off for good once an answer counted that way does not verify.
    in_order: bool,
    unavailable: BTreeSet<u64>,
    /// Blocks below this were all considered by the last request scan: each is held, in
    /// flight or unavailable. Anything that can make one of them wanted again resets it.
    scanned: u64,
    next_request: u64,
    /// Block bytes received.
    bytes: u64,
    last_progress: Option<Instant>,
    reported_synced: Option<u64>,
    announced: (u64, u64),
    last_announce: Option<Instant>,
    reported_unreadable: bool,
    /// The newest fork of the peer's that a `truncated` warning told of.
    warned_fork: u64,
    pending: Option<Pending>,
}

impl Replicator {
    /// Replication of feed `key` with `peer`; nothing is sent until [`Replicator::on_open`].
    pub fn new(key: FeedKey, peer: PeerId) -> Self {
        Replicator {
            key,
            peer,
            remote_length: 0,
            remote_fork: 0,
            have: RemoteHave::default(),
            remote_synced: false,
            inflight: HashMap::default(),
            upgrades_in_flight: 0,
            blocks_in_flight: BTreeSet::new(),
            counted_short: HashSet::default(),
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
            warned_fork: 0,
            pending: None,
        }
    }

    /// Block bytes received and stored so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether node counts still assume answers in the order they were asked for.
    pub fn in_order(&self) -> bool {
        self.in_order
    }

    /// Both sides opened the channel: say what we have.
    pub fn on_open(&mut self, view: &impl View) -> Effects {
        let mut fx = Effects::new();
        self.announce(view, &mut fx, true);
        fx
    }

    /// Our copy changed (a local append, or blocks from another peer): tell this peer.
    pub fn on_local_change(&mut self, view: &impl View) -> Effects {
        let mut fx = Effects::new();
        self.announce(view, &mut fx, false);
        fx
    }

    fn announce(&mut self, view: &impl View, fx: &mut Effects, force: bool) {
        let (length, contiguous) = (view.length(), view.contiguous_length());
        if !force && (length, contiguous) == self.announced {
            return;
        }
        self.announced = (length, contiguous);
        fx.push(Effect::Send(
            Synchronize {
                fork: view.fork(),
                length,
                remote_length: self.remote_length,
                downloading: true,
                uploading: true,
                can_upgrade: true,
            }
            .into(),
        ));
        if contiguous > 0 {
            fx.push(Effect::Send(
                Range {
                    drop: false,
                    start: 0,
                    length: contiguous,
                }
                .into(),
            ));
        }
    }

    /// A hypercore message arrived from the peer.
    pub fn on_message(&mut self, msg: Message, view: &impl View, now: Instant) -> Effects {
        let mut fx = Effects::new();
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
                if s.fork > view.fork() && s.fork > self.warned_fork && !view.writable() {
                    self.warned_fork = s.fork;
                    fx.push(Effect::Event(Event::Warning {
                        peer: Some(self.peer),
                        kind: ProblemKind::Truncated,
                        message: format!(
                            "the writer of feed {} truncated it (the peer is at fork {}, this \
                             copy at fork {}); feedscope does not follow truncated feeds, so \
                             its copy stays at length {} and takes no more blocks from this peer",
                            self.key.short(),
                            s.fork,
                            view.fork(),
                            view.length()
                        ),
                    }));
                }
                // A JS peer asks us for an upgrade only once our Synchronize confirms its
                // length, so every change of its length is answered.
                if changed {
                    self.announce(view, &mut fx, true);
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
            Message::Request(r) => self.serve(r, view, &mut fx),
            Message::Data(d) => {
                let Some(what) = self.take_inflight(d.request) else {
                    fx.push(Effect::Warning(format!(
                        "peer sent data for feed {} that was not requested (request id {}); ignored",
                        self.key.short(),
                        d.request
                    )));
                    return fx;
                };
                let mut counted_short = false;
                if let Inflight::Block(i) = what {
                    self.blocks_in_flight.remove(&i);
                    counted_short = self.counted_short.remove(&i);
                }
                if d.block.is_none() && d.hash.is_none() && d.seek.is_none() && d.upgrade.is_none()
                {
                    // An empty core answers with an empty Data: it has nothing, like NoData.
                    self.not_there(what);
                    self.pump(view, &mut fx);
                    return fx;
                }
                // The driver applies it under the lock this view was read with: no other
                // peer's upgrade comes between the check and the proof.
                if let Err(why) = check_answer(what, &d, view.length()) {
                    fx.push(Effect::Warning(format!(
                        "rejected data for feed {}: {why}; nothing was written",
                        self.key.short()
                    )));
                    self.not_there(what);
                    return fx;
                }
                let block_len = d.block.as_ref().map_or(0, |b| b.value.len() as u64);
                self.pending = Some(Pending::Apply {
                    counted_short,
                    block_len,
                });
                fx.push(Effect::Apply(d));
                return fx;
            }
            Message::NoData(n) => match self.take_inflight(n.request) {
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
        self.go_on(view, now, false, fx)
    }

    /// What was asked is not to be had from this peer for now: a block is not asked again
    /// until it says it holds it, a length not until its next Synchronize.
    fn not_there(&mut self, what: Inflight) {
        match what {
            Inflight::Block(i) => {
                self.unavailable.insert(i);
            }
            Inflight::Upgrade => self.remote_synced = false,
        }
    }

    /// The result of an [`Effect::Apply`]: `Ok(true)` if the core took something new from it,
    /// `Ok(false)` if it held all of it already. `view` shows the core after it.
    pub fn on_applied(
        &mut self,
        result: Result<bool, Failure>,
        view: &impl View,
        now: Instant,
    ) -> Effects {
        let Some(Pending::Apply {
            counted_short,
            block_len,
        }) = self.pending.take()
        else {
            debug_assert!(false, "on_applied without an Apply");
            return Effects::new();
        };
        let mut fx = Effects::new();
        let mut grew = false;
        match result {
            Ok(true) => {
                self.bytes += block_len;
                grew = true;
                fx.push(Effect::Grew);
            }
            Ok(false) => self.scanned = 0,
            Err(Failure::Storage(e)) => {
                self.scanned = 0;
                self.storage_failed("store a received block", &e, &mut fx);
            }
            Err(Failure::Refused(e)) if counted_short => {
                // Not the peer's fault: the block before it did not arrive first.
                // Asked again, counted from what we hold.
                tracing::debug!(feed = %self.key.short(), "short-counted proof: {e}");
                self.in_order = false;
                self.scanned = 0;
            }
            Err(Failure::Refused(e)) => {
                // The block is wanted again (from this peer or another).
                self.scanned = 0;
                fx.push(Effect::Warning(format!(
                    "rejected data for feed {} that does not verify ({e}); nothing was written",
                    self.key.short()
                )));
            }
        }
        self.go_on(view, now, grew, fx)
    }

    /// The proof for an [`Effect::Serve`] could not be made: what to do instead.
    pub fn on_serve_failed(&mut self, r: &Request, failure: Failure) -> Effects {
        let mut fx = Effects::new();
        if let Failure::Storage(e) = failure {
            let what = r
                .block
                .as_ref()
                .map_or("an upgrade proof".to_string(), |b| {
                    format!("block {}", b.index)
                });
            self.storage_failed(&format!("read {what} to serve it"), &e, &mut fx);
        }
        // A request this tree cannot answer (a JS peer answers it with NoData too).
        fx.push(Effect::Send(NoData { request: r.id }.into()));
        fx
    }

    /// The result of an [`Effect::Commit`]; `view` shows the core after it.
    pub fn on_committed(
        &mut self,
        result: Result<(), String>,
        view: &impl View,
        now: Instant,
    ) -> Effects {
        let Some(Pending::Commit {
            progress,
            synced,
            grew,
        }) = self.pending.take()
        else {
            debug_assert!(false, "on_committed without a Commit");
            return Effects::new();
        };
        let mut fx = Effects::new();
        match result {
            Err(e) => self.storage_failed("write received blocks", &e, &mut fx),
            Ok(()) => {
                if let Some(local_length) = progress {
                    self.last_progress = Some(now);
                    fx.push(Effect::Event(Event::FeedProgress {
                        peer: self.peer,
                        key: self.key,
                        local_length,
                        remote_length: self.remote_length,
                        bytes: self.bytes,
                    }));
                }
                if let Some(length) = synced {
                    self.reported_synced = Some(length);
                    fx.push(Effect::Event(Event::FeedSynced {
                        peer: self.peer,
                        key: self.key,
                        length,
                    }));
                }
            }
        }
        self.announce_growth(view, now, grew, &mut fx);
        fx
    }

    /// After a message: ask for what the window allows, report progress, announce growth.
    fn go_on(&mut self, view: &impl View, now: Instant, grew: bool, mut fx: Effects) -> Effects {
        self.pump(view, &mut fx);
        let contiguous = view.contiguous_length();
        let synced =
            self.remote_synced && self.remote_length > 0 && contiguous >= self.remote_length;
        let due = self
            .last_progress
            .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_INTERVAL);
        let progress = (grew && (due || synced)).then_some(contiguous);
        let synced = (synced && self.reported_synced != Some(contiguous)).then_some(contiguous);
        if progress.is_some() || synced.is_some() {
            // What a progress or synced event reports is committed first: it survives a
            // kill from the moment the event is out.
            self.pending = Some(Pending::Commit {
                progress,
                synced,
                grew,
            });
            fx.push(Effect::Commit);
            return fx;
        }
        self.announce_growth(view, now, grew, &mut fx);
        fx
    }

    /// Tells the peer what we hold now and then, not after every block: it only needs it to
    /// ask us for blocks, and a Range per block doubles the messages of a transfer.
    fn announce_growth(&mut self, view: &impl View, now: Instant, grew: bool, fx: &mut Effects) {
        let due = self
            .last_announce
            .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_INTERVAL);
        if grew
            && (due
                || self
                    .reported_synced
                    .is_some_and(|l| l >= self.remote_length))
        {
            self.last_announce = Some(now);
            self.announce(view, fx, false);
        }
    }

    fn serve(&mut self, r: Request, view: &impl View, fx: &mut Effects) {
        let length = view.length();
        // Requests a proof cannot answer get NoData at once, as JS hypercore answers them; a
        // JS peer never sends them to a healthy core.
        let upgrade_ok = r.upgrade.as_ref().is_none_or(|u| {
            u.length > 0
                && u.start
                    .checked_add(u.length)
                    .is_some_and(|end| end <= length)
        });
        let block_ok = r.block.as_ref().is_none_or(|b| {
            b.index < length
                && view.has(b.index)
                && r.upgrade.as_ref().is_none_or(|u| {
                    u.start
                        .checked_add(u.length)
                        .is_some_and(|end| b.index < end)
                })
        });
        let answerable = r.fork == view.fork()
            && r.seek.is_none()
            && r.hash.is_none()
            && (r.block.is_some() || r.upgrade.is_some())
            && upgrade_ok
            && block_ok;
        if answerable {
            fx.push(Effect::Serve(r));
        } else {
            fx.push(Effect::Send(NoData { request: r.id }.into()));
        }
    }

    /// Reports, once per channel, that our own storage failed (not the peer).
    fn storage_failed(&mut self, doing: &str, e: &str, fx: &mut Effects) {
        if self.reported_unreadable {
            return;
        }
        self.reported_unreadable = true;
        fx.push(Effect::Event(Event::Error {
            peer: Some(self.peer),
            kind: ProblemKind::Storage,
            message: format!(
                "feed {}: cannot {doing} ({e}); its files may be damaged: check with `feedscope cat --key {}`, and restore the folder from a backup or replicate the feed again",
                self.key.short(),
                self.key
            ),
        }));
    }

    /// Asks for what the window allows.
    /// The request `id` answered (or refused), if it was ours.
    fn take_inflight(&mut self, id: u64) -> Option<Inflight> {
        let what = self.inflight.remove(&id);
        if what == Some(Inflight::Upgrade) {
            self.upgrades_in_flight -= 1;
        }
        what
    }

    fn pump(&mut self, view: &impl View, fx: &mut Effects) {
        // A peer on another fork answers every request with NoData.
        if !self.remote_synced || view.writable() || self.remote_fork != view.fork() {
            return;
        }
        let (length, contiguous, fork) = (view.length(), view.contiguous_length(), view.fork());
        if self.remote_length > length && self.upgrades_in_flight == 0 {
            let id = self.take_id();
            self.inflight.insert(id, Inflight::Upgrade);
            self.upgrades_in_flight += 1;
            fx.push(Effect::Send(
                Request {
                    id,
                    fork,
                    block: None,
                    hash: None,
                    seek: None,
                    upgrade: Some(RequestUpgrade {
                        start: length,
                        length: self.remote_length - length,
                    }),
                    manifest: false,
                    priority: 0,
                }
                .into(),
            ));
        }
        // Ask for what the peer says it has. A peer that sent no Range (an older feedscope
        // did not) is asked for every block below its length, and a NoData marks a block as
        // not there.
        let have_upto = if self.have.seen {
            length.min(self.have.end())
        } else {
            length.min(self.remote_length)
        };
        let mut index = contiguous.max(self.scanned);
        while self.blocks_in_flight.len() < WINDOW && index < have_upto {
            if self.have.seen && !self.have.contains(index) {
                index = self.have.next_from(index).unwrap_or(have_upto);
                continue;
            }
            if !self.blocks_in_flight.contains(&index)
                && !self.unavailable.contains(&index)
                && !view.has(index)
            {
                // A peer answers in the order it was asked (feedscope does): a block asked for
                // right after the one before it will find that block's path stored, and needs
                // only the nodes up to where the two paths meet. A peer that answers out of
                // order only turns this off (see `in_order`).
                let before_held = index > 0 && view.has(index - 1);
                let before_first =
                    index > 0 && self.in_order && self.blocks_in_flight.contains(&(index - 1));
                let held_below = if before_held || before_first {
                    index
                } else {
                    contiguous
                };
                let counted = nodes_to_ask(index, length, held_below);
                // Answers in order also store the right halves beside the block before's
                // path (see `nodes_after`): about one node a block instead of two.
                let nodes = if self.in_order && (before_held || before_first) {
                    nodes_after(index, length).min(counted)
                } else {
                    counted
                };
                if (before_first && !before_held) || nodes < counted {
                    self.counted_short.insert(index);
                }
                let id = self.take_id();
                self.inflight.insert(id, Inflight::Block(index));
                self.blocks_in_flight.insert(index);
                fx.push(Effect::Send(
                    Request {
                        id,
                        fork,
                        block: Some(RequestBlock { index, nodes }),
                        hash: None,
                        seek: None,
                        upgrade: None,
                        manifest: false,
                        priority: 0,
                    }
                    .into(),
                ));
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
}
