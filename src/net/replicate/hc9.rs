//! Replication of one hypercore 9 feed on one hypercore-protocol 8 channel, as multifeed 6
//! and Cabal peers do it:
//!
//! - a downloader sends `Want{0, 1048576}` (ranges are multiples of 8192); the uploader
//!   answers with a `Have` of its length and a run-length encoded bitfield of the range;
//! - the downloader asks with `Request{index}` (digest 0: it always gets the whole proof)
//!   and checks each `Data` against the writer's signature of hypercore 9's tree;
//! - new blocks are announced with `Have{start, length}` to a peer that sent a `Want`;
//! - a side that needs nothing more says `Status{downloading: false}`; a peer that is not
//!   live closes the channel once neither side downloads.
//!
//! Each call takes the core's lock once and does everything under it, so a received block
//! is checked and written without another peer's change in between, and what a progress or
//! synced event reports is committed before the event goes out.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::core::hc9::Hc9Proof;
use crate::core::{self as fcore, Core, CoreError};
use crate::event::{Event, PeerId};
use crate::net::hc9::message::{Data, Have, Message, Node, Request, Status, Unhave, Want};
use crate::net::hc9::rle;
use crate::store::Feed;
use crate::wire::FeedKey;

use super::{Outcome, PROGRESS_INTERVAL};

/// Blocks asked for and not yet answered, per channel.
pub const WINDOW: usize = 256;
/// The range one `Want` covers, as hypercore 9 sends it.
const WANT_SPAN: u64 = 1024 * 1024;
/// Most bytes a received `Have` bitfield may decode to (2^30 blocks).
const MAX_HAVE_BITFIELD_BYTES: usize = 1 << 27;
/// Most positions looked at for a block to ask for, per message.
const SCAN_LIMIT: u64 = 1 << 16;

/// What the remote holds: ranges that arrived as Haves, as a sparse bitfield.
type Held = fcore::bitfield::Bitfield;

/// One hypercore 9 feed's replication with one peer.
#[derive(Debug)]
pub struct Hc9Channel {
    /// The feed.
    pub key: FeedKey,
    /// Block bytes received on this channel.
    pub bytes: u64,
    feed: Feed,
    peer: PeerId,
    remote: Held,
    remote_length: u64,
    in_flight: BTreeSet<u64>,
    /// Where the next search for a block to ask for starts.
    cursor: u64,
    /// End of the ranges we said we want.
    want_end: u64,
    /// The peer sent a Want: it hears of new blocks.
    remote_wants: bool,
    /// Blocks we told the peer about.
    announced: u64,
    /// What our last Status said of downloading (`None`: no Status sent; hypercore 9's
    /// default is "downloading").
    said_downloading: Option<bool>,
    reported_synced: Option<u64>,
    last_progress: Option<Instant>,
    told_bad_data: bool,
    /// The peer ends the session once synced (multifeed's default), instead of staying live.
    peer_not_live: bool,
}

impl Hc9Channel {
    /// A channel for `feed` with `peer`; nothing is sent until [`Hc9Channel::on_open`].
    pub fn new(feed: Feed, peer: PeerId) -> Self {
        Hc9Channel {
            key: feed.entry.key,
            bytes: 0,
            feed,
            peer,
            remote: Held::default(),
            remote_length: 0,
            in_flight: BTreeSet::new(),
            cursor: 0,
            want_end: 0,
            remote_wants: false,
            announced: 0,
            said_downloading: None,
            reported_synced: None,
            last_progress: None,
            told_bad_data: false,
            peer_not_live: false,
        }
    }

    /// The peer is not live: once neither side downloads, the channel is done, as hypercore
    /// 9 has it.
    pub fn peer_not_live(&mut self) {
        self.peer_not_live = true;
    }

    /// The feed this channel replicates.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Both sides opened the channel: a writer says it only uploads; a reader says what it
    /// wants.
    pub async fn on_open(&mut self) -> Outcome<Message> {
        let lock = self.feed.core.clone();
        let core = lock.lock().await;
        let mut out = Outcome::default();
        if core.info().writeable {
            self.said_downloading = Some(false);
            out.send.push(Message::Status(Status {
                uploading: Some(true),
                downloading: Some(false),
            }));
        } else {
            self.want_more(&mut out);
        }
        out
    }

    /// Our copy grew (a local append, or blocks from another peer): tell the peer.
    pub async fn on_local_change(&mut self) -> Outcome<Message> {
        let lock = self.feed.core.clone();
        let core = lock.lock().await;
        let mut out = Outcome::default();
        self.announce(&core, &mut out);
        out
    }

    /// A message arrived on this channel.
    pub async fn on_message(&mut self, msg: Message) -> Outcome<Message> {
        self.on_message_with_leaf(msg, None).await
    }

    /// The leaf hashes of the blocks that these messages' Data carry, hashed side by side.
    pub fn leaf_hashes<'a>(msgs: impl Iterator<Item = &'a Message>) -> Vec<Option<fcore::Hash>> {
        let values = msgs.map(|m| match m {
            Message::Data(Data { value: Some(v), .. }) => Some(&v[..]),
            _ => None,
        });
        super::leaves_of(fcore::Flavour::Hc9, values.collect())
    }

    /// [`Hc9Channel::on_message`]; `leaf` is the leaf hash of the block a Data message
    /// carries, if [`Hc9Channel::leaf_hashes`] computed it already.
    pub async fn on_message_with_leaf(
        &mut self,
        msg: Message,
        leaf: Option<fcore::Hash>,
    ) -> Outcome<Message> {
        let lock = self.feed.core.clone();
        let mut core = lock.lock().await;
        let mut out = Outcome::default();
        let now = Instant::now();
        match msg {
            Message::Want(w) => self.on_want(&core, w, &mut out),
            Message::Have(h) => self.on_have(h, &mut out),
            Message::Unhave(u) => {
                let end = u.start.saturating_add(u.length());
                for i in u.start..end.min(u.start.saturating_add(SCAN_LIMIT)) {
                    self.remote.set(i, false);
                    self.in_flight.remove(&i);
                }
                self.cursor = self.cursor.min(u.start);
            }
            Message::Request(r) => self.serve(&mut core, r, &mut out),
            Message::Data(d) => self.on_data(&mut core, d, leaf, &mut out),
            // A peer that is not live and needs nothing more is done with a channel we do not
            // download on; where we download, it waits for our Status and closes it itself.
            Message::Status(s) => {
                if self.peer_not_live && !s.downloading() && self.said_downloading == Some(false) {
                    out.done = true;
                }
            }
            Message::Unwant(_) | Message::Cancel(_) => {}
            other => out.warning = Some(format!("ignored {} on a feed channel", other.name())),
        }
        self.go_on(&mut core, now, &mut out);
        out
    }

    /// Asks to hear of the next range of blocks.
    fn want_more(&mut self, out: &mut Outcome<Message>) {
        out.send.push(Message::Want(Want {
            start: self.want_end,
            length: Some(WANT_SPAN),
        }));
        self.want_end += WANT_SPAN;
    }

    fn on_want(&mut self, core: &Core, w: Want, out: &mut Outcome<Message>) {
        self.remote_wants = true;
        let length = core.info().length;
        let end = w.start.saturating_add(w.length.unwrap_or(0)).min(length);
        if w.start >= end {
            return;
        }
        // The length first, as hypercore 9 sends it, then what we hold of the range.
        out.send.push(Message::Have(Have {
            start: length - 1,
            ..Have::default()
        }));
        let mut bits = vec![0u8; (end - w.start).div_ceil(8) as usize];
        for i in w.start..end {
            if core.has(i) {
                rle::set_bit(&mut bits, i - w.start);
            }
        }
        out.send.push(Message::Have(Have {
            start: w.start,
            length: Some(w.length.unwrap_or(0)),
            bitfield: Some(rle::encode(&bits)),
            ack: None,
        }));
        self.announced = self.announced.max(core.info().contiguous_length);
    }

    fn on_have(&mut self, h: Have, out: &mut Outcome<Message>) {
        let length = h.length();
        let Some(end) = h
            .start
            .checked_add(length)
            .filter(|&e| e <= fcore::MAX_LENGTH)
        else {
            out.warning = Some(format!(
                "ignored a Have of {length} blocks from {}: past any feed's length",
                h.start
            ));
            return;
        };
        self.cursor = self.cursor.min(h.start);
        match &h.bitfield {
            Some(encoded) => {
                let bits = match rle::decode(encoded, MAX_HAVE_BITFIELD_BYTES) {
                    Ok(bits) => bits,
                    Err(e) => {
                        out.warning = Some(format!("ignored a Have: {e}"));
                        return;
                    }
                };
                let span = (bits.len() as u64 * 8).min(length);
                let mut i = 0;
                while i < span {
                    let byte = bits[(i / 8) as usize];
                    if byte == 0xff && i % 8 == 0 && i + 8 <= span {
                        self.remote.set_range(h.start + i, h.start + i + 8);
                        self.remote_length = self.remote_length.max(h.start + i + 8);
                        i += 8;
                        continue;
                    }
                    if byte & (0x80 >> (i % 8)) != 0 {
                        self.remote.set(h.start + i, true);
                        self.remote_length = self.remote_length.max(h.start + i + 1);
                    }
                    i += 1;
                }
            }
            None => {
                self.remote.set_range(h.start, end);
                self.remote_length = self.remote_length.max(end);
            }
        }
        while self.remote_length > self.want_end && !self.writable() {
            self.want_more(out);
        }
    }

    fn writable(&self) -> bool {
        self.feed.entry.writable
    }

    fn serve(&mut self, core: &mut Core, r: Request, out: &mut Outcome<Message>) {
        if r.bytes.is_some_and(|b| b > 0) {
            out.warning = Some("ignored a Request by byte offset: not served".into());
            return;
        }
        if !core.has(r.index) {
            out.send.push(Message::Unhave(Unhave {
                start: r.index,
                length: None,
            }));
            return;
        }
        match core.proof_hc9(r.index, r.nodes.unwrap_or(0)) {
            Ok(p) => out.send.push(Message::Data(Data {
                index: p.index,
                value: Some(p.value),
                nodes: p
                    .nodes
                    .into_iter()
                    .map(|n| Node {
                        index: n.index,
                        hash: n.hash.to_vec(),
                        size: n.size,
                    })
                    .collect(),
                signature: p.signature,
            })),
            Err(e) => {
                out.events.push(storage_problem(
                    self.peer,
                    &self.key,
                    format!("cannot serve block {}: {e}", r.index),
                ));
                out.send.push(Message::Unhave(Unhave {
                    start: r.index,
                    length: None,
                }));
            }
        }
    }

    fn on_data(
        &mut self,
        core: &mut Core,
        d: Data,
        leaf: Option<fcore::Hash>,
        out: &mut Outcome<Message>,
    ) {
        if !self.in_flight.remove(&d.index) {
            // Blocks nobody asked for are not written.
            return;
        }
        let mut nodes = Vec::with_capacity(d.nodes.len());
        for n in &d.nodes {
            let Ok(hash) = <[u8; 32]>::try_from(n.hash.as_slice()) else {
                self.bad_data(
                    format!("block {}: a proof node of {} bytes", d.index, n.hash.len()),
                    out,
                );
                return;
            };
            nodes.push(fcore::Node {
                index: n.index,
                size: n.size,
                hash,
            });
        }
        let len = d.value.as_ref().map_or(0, Vec::len) as u64;
        // Hashed together only for a block that came with bytes.
        let leaf = leaf.filter(|_| d.value.is_some());
        let proof = Hc9Proof {
            index: d.index,
            value: d.value.unwrap_or_default(),
            nodes,
            signature: d.signature,
        };
        match core.apply_hc9_with_leaf(proof, leaf) {
            Ok(true) => {
                self.bytes += len;
                out.grew = true;
            }
            Ok(false) => {}
            Err(e @ (CoreError::Io { .. } | CoreError::Damaged(_))) => {
                out.events.push(storage_problem(
                    self.peer,
                    &self.key,
                    format!("cannot store block {}: {e}", d.index),
                ));
            }
            Err(e) => self.bad_data(format!("block {} does not verify: {e}", d.index), out),
        }
    }

    fn bad_data(&mut self, why: String, out: &mut Outcome<Message>) {
        // The block is not written; it may be asked for again (from this peer or another).
        self.cursor = 0;
        if !self.told_bad_data {
            self.told_bad_data = true;
            out.warning = Some(format!("{why}; nothing written"));
        }
    }

    /// After a message: ask for what the window allows, report progress and sync, and say
    /// whether we still download.
    fn go_on(&mut self, core: &mut Core, now: Instant, out: &mut Outcome<Message>) {
        self.pump(core, out);
        let contiguous = core.info().contiguous_length;
        let synced = self.remote_length > 0 && contiguous >= self.remote_length;
        let due = self
            .last_progress
            .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_INTERVAL);
        let progress = out.grew && (due || synced);
        let newly_synced = synced && self.reported_synced != Some(contiguous);
        if progress || newly_synced {
            // What an event reports is on disk before the event is out.
            let committed = core.commit();
            self.feed.committed(core);
            if let Err(e) = committed {
                out.events.push(storage_problem(
                    self.peer,
                    &self.key,
                    format!("cannot write received blocks: {e}"),
                ));
                return;
            }
        }
        if progress {
            self.last_progress = Some(now);
            out.events.push(Event::FeedProgress {
                peer: self.peer,
                key: self.key,
                local_length: contiguous,
                remote_length: self.remote_length,
                bytes: self.bytes,
            });
        }
        if newly_synced {
            self.reported_synced = Some(contiguous);
            out.events.push(Event::FeedSynced {
                peer: self.peer,
                key: self.key,
                length: contiguous,
            });
        }
        if !self.writable() {
            let downloading = !synced || self.remote_length == 0;
            if self.said_downloading.unwrap_or(true) != downloading {
                self.said_downloading = Some(downloading);
                out.send.push(Message::Status(Status {
                    uploading: Some(true),
                    downloading: Some(downloading),
                }));
            }
        }
    }

    /// Asks for blocks the peer has and we do not, up to [`WINDOW`] at a time.
    fn pump(&mut self, core: &mut Core, out: &mut Outcome<Message>) {
        if self.writable() {
            return;
        }
        let contiguous = core.info().contiguous_length;
        // Past the end, start over: blocks skipped while in flight, or announced since, may
        // be missing still.
        if self.cursor >= self.remote_length {
            self.cursor = contiguous;
        }
        self.cursor = self.cursor.max(contiguous);
        let mut looked = 0;
        while self.in_flight.len() < WINDOW && self.cursor < self.remote_length {
            if looked >= SCAN_LIMIT {
                return;
            }
            looked += 1;
            let i = self.cursor;
            self.cursor += 1;
            if self.remote.get(i) && !core.has(i) && !self.in_flight.contains(&i) {
                self.in_flight.insert(i);
                // The nodes we hold on its path, so that the proof leaves them out; a tree
                // file we cannot read asks for the whole proof.
                let digest = core.digest_hc9(i).unwrap_or(0);
                out.send.push(Message::Request(Request {
                    index: i,
                    bytes: Some(0),
                    hash: Some(false),
                    nodes: Some(digest),
                }));
            }
        }
    }

    /// Tells a peer that wanted blocks about the ones we hold beyond what it heard of.
    fn announce(&mut self, core: &Core, out: &mut Outcome<Message>) {
        let held = core.info().contiguous_length;
        if !self.remote_wants || held <= self.announced {
            return;
        }
        out.send.push(Message::Have(Have {
            start: self.announced,
            length: Some(held - self.announced),
            ..Have::default()
        }));
        self.announced = held;
    }
}

fn storage_problem(peer: PeerId, key: &FeedKey, message: String) -> Event {
    Event::Error {
        peer: Some(peer),
        kind: crate::event::ProblemKind::Storage,
        message: format!("feed {}: {message}", key.short()),
    }
}
