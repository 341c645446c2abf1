//! Two replicators in memory, each over a core made of the pure tree and a block map, with a
//! network between them that reorders, duplicates and drops messages.
//!
//! What a lost message means: the transport is a reliable stream, so the machine never asks
//! again for what it asked once on a channel (no timeouts); a lost request or answer leaves
//! its block in flight until the channel closes. Recovery is a new channel, as a reconnect
//! makes: fresh replicators over the same cores. The properties check that the copy holds
//! only verified blocks and nodes at every step, that without losses it ends complete and
//! byte-exact, and that after losses a new channel completes it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use hypercore_protocol::Message;
use proptest::prelude::*;

use super::machine::{Effect, Effects, Failure, Replicator, View};
use super::{proof_from_wire, proof_to_wire, request_from_wire};
use crate::core::{Flavour, Node, NodeSource, Proof, ProofError, Request, Tree};
use crate::event::Event;
use crate::wire::FeedKey;

/// A core in memory: the tree, its nodes and the blocks held.
#[derive(Debug, Clone)]
pub(super) struct MemCore {
    tree: Tree,
    nodes: Nodes,
    blocks: BTreeMap<u64, Vec<u8>>,
    contiguous: u64,
    key: VerifyingKey,
    secret: Option<SigningKey>,
    /// Nodes and blocks stored since [`MemCore::take_added`], for checking as they come.
    added: Vec<Added>,
}

#[derive(Debug, Clone)]
enum Added {
    Node(Node),
    Block(u64),
}

impl MemCore {
    /// A writer holding [`blocks`]`(n)`, made once per thread and length.
    pub(super) fn writer(n: u64) -> Self {
        thread_local! {
            static WRITERS: std::cell::RefCell<HashMap<u64, MemCore>> = Default::default();
        }
        WRITERS.with_borrow_mut(|w| {
            w.entry(n)
                .or_insert_with(|| MemCore::new_writer(&blocks(n)))
                .clone()
        })
    }

    fn new_writer(blocks: &[Vec<u8>]) -> Self {
        let secret = SigningKey::from_bytes(&[7; 32]);
        let mut core = MemCore::replica(secret.verifying_key());
        let nodes = core.tree.append(blocks, &secret).unwrap();
        core.nodes.extend(nodes);
        core.blocks.extend((0u64..).zip(blocks.iter().cloned()));
        core.contiguous = core.tree.length;
        core.secret = Some(secret);
        core
    }

    /// An empty replica of the feed `key` writes.
    pub(super) fn replica(key: VerifyingKey) -> Self {
        MemCore {
            tree: Tree::new(Flavour::Hc10),
            nodes: Nodes::default(),
            blocks: BTreeMap::new(),
            contiguous: 0,
            key,
            secret: None,
            added: Vec::new(),
        }
    }

    pub(super) fn feed_key(&self) -> FeedKey {
        FeedKey(self.key.to_bytes())
    }

    fn proof(&mut self, req: &Request) -> Result<Proof, ProofError> {
        let mut proof = self.tree.proof(&mut self.nodes, req)?;
        if let Some(b) = &mut proof.block {
            b.value = self
                .blocks
                .get(&b.index)
                .ok_or_else(|| ProofError::Malformed(format!("block {} is not held", b.index)))?
                .clone();
        }
        Ok(proof)
    }

    /// Checks a proof and keeps what it adds, as the disk core stages it; nothing is kept
    /// from a proof that does not check.
    fn apply(&mut self, mut proof: Proof) -> Result<bool, ProofError> {
        let verified = self.tree.verify(&mut self.nodes, &proof, &self.key)?;
        let length = verified
            .upgraded
            .as_ref()
            .map_or(self.tree.length, |t| t.length);
        if verified.upgraded.is_some() && self.secret.is_some() {
            return Err(ProofError::Malformed(
                "an upgrade for a feed we write".into(),
            ));
        }
        if verified.block.is_some_and(|i| i >= length) {
            return Err(ProofError::Malformed("a block past the end".into()));
        }
        let mut changed = false;
        if let Some(up) = verified.upgraded {
            self.tree = up;
            changed = true;
        }
        self.added
            .extend(verified.nodes.iter().copied().map(Added::Node));
        self.nodes.extend(verified.nodes);
        if let Some(i) = verified.block {
            if let std::collections::btree_map::Entry::Vacant(e) = self.blocks.entry(i) {
                e.insert(proof.block.take().map(|b| b.value).unwrap_or_default());
                self.added.push(Added::Block(i));
                while self.blocks.contains_key(&self.contiguous) {
                    self.contiguous += 1;
                }
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// Tree nodes by flat index: small trees, so a vector.
#[derive(Debug, Clone, Default)]
struct Nodes(Vec<Option<Node>>);

impl Nodes {
    fn get(&self, index: u64) -> Option<Node> {
        self.0.get(usize::try_from(index).ok()?).copied().flatten()
    }

    fn extend(&mut self, nodes: impl IntoIterator<Item = Node>) {
        for n in nodes {
            // Indexes come from proofs that verified, inside a tree of a few blocks.
            let i = usize::try_from(n.index).expect("a small tree");
            if i >= self.0.len() {
                self.0.resize(i + 1, None);
            }
            self.0[i] = Some(n);
        }
    }
}

impl NodeSource for Nodes {
    fn node(&mut self, index: u64) -> std::io::Result<Option<Node>> {
        Ok(self.get(index))
    }
}

impl View for MemCore {
    fn length(&self) -> u64 {
        self.tree.length
    }

    fn contiguous_length(&self) -> u64 {
        self.contiguous.min(self.tree.length)
    }

    fn fork(&self) -> u64 {
        self.tree.fork
    }

    fn writable(&self) -> bool {
        self.secret.is_some()
    }

    fn has(&self, index: u64) -> bool {
        index < self.tree.length && self.blocks.contains_key(&index)
    }
}

/// One end of a channel: a replicator, its core, and what it reported.
pub(super) struct Side {
    pub(super) machine: Replicator,
    pub(super) core: MemCore,
    pub(super) warnings: Vec<String>,
    pub(super) events: Vec<Event>,
}

impl Side {
    pub(super) fn new(core: MemCore, peer: u64) -> Self {
        Side {
            machine: Replicator::new(core.feed_key(), peer),
            core,
            warnings: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Carries out effects the way the store driver does; returns the messages to send.
    pub(super) fn carry_out(&mut self, fx: Effects, now: Instant) -> Vec<Message> {
        let mut send = Vec::new();
        let mut queue = VecDeque::from(fx);
        let refused = |e: &dyn std::fmt::Display| Failure::Refused(e.to_string());
        while let Some(effect) = queue.pop_front() {
            let next = match effect {
                Effect::Send(m) => {
                    send.push(m);
                    continue;
                }
                Effect::Event(e) => {
                    self.events.push(e);
                    continue;
                }
                Effect::Warning(w) => {
                    self.warnings.push(w);
                    continue;
                }
                Effect::Grew => continue,
                Effect::Serve(r) => match self.core.proof(&request_from_wire(&r)) {
                    Ok(p) => {
                        send.push(Message::Data(proof_to_wire(p, r.id, r.fork)));
                        continue;
                    }
                    Err(e) => self.machine.on_serve_failed(&r, refused(&e)),
                },
                Effect::Apply(d) => {
                    let applied = match proof_from_wire(d) {
                        Ok(p) => self.core.apply(p).map_err(|e| refused(&e)),
                        Err(e) => Err(refused(&e)),
                    };
                    self.machine.on_applied(applied, &self.core, now)
                }
                Effect::Commit => self.machine.on_committed(Ok(()), &self.core, now),
            };
            for e in next.into_iter().rev() {
                queue.push_front(e);
            }
        }
        send
    }

    fn open(&mut self, now: Instant) -> Vec<Message> {
        let fx = self.machine.on_open(&self.core);
        self.carry_out(fx, now)
    }

    fn receive(&mut self, m: Message, now: Instant) -> Vec<Message> {
        let fx = self.machine.on_message(m, &self.core, now);
        self.carry_out(fx, now)
    }
}

/// What the network does with the message it picks.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Deliver,
    /// Delivered, and a copy stays behind to arrive again later.
    Duplicate,
    Drop,
}

/// One step of the network: which way, which of the waiting messages (an index taken
/// modulo their number, so any of them can overtake the others), and its fate.
type Step = (bool, u16, Fate);

/// A writer and a reader with the messages on their way between them.
struct Net {
    writer: Side,
    reader: Side,
    /// Messages to the reader, and to the writer.
    to_reader: Vec<Message>,
    to_writer: Vec<Message>,
    start: Instant,
    ticks: u32,
}

impl Net {
    fn new(writer: Side, reader: Side) -> Self {
        let mut net = Net {
            writer,
            reader,
            to_reader: Vec::new(),
            to_writer: Vec::new(),
            start: Instant::now(),
            ticks: 0,
        };
        net.open();
        net
    }

    /// Both ends open the channel (or open it again).
    fn open(&mut self) {
        let now = self.now();
        self.to_reader.extend(self.writer.open(now));
        self.to_writer.extend(self.reader.open(now));
    }

    /// Time moves on a little with every message, so progress is sometimes due.
    fn now(&self) -> Instant {
        self.start + Duration::from_millis(7 * u64::from(self.ticks))
    }

    fn step(&mut self, (to_reader, pick, fate): Step) {
        let queue = if to_reader {
            &mut self.to_reader
        } else {
            &mut self.to_writer
        };
        if queue.is_empty() {
            return;
        }
        let i = usize::from(pick) % queue.len();
        let m = match fate {
            Fate::Duplicate => queue[i].clone(),
            Fate::Deliver | Fate::Drop => queue.remove(i),
        };
        if matches!(fate, Fate::Drop) {
            return;
        }
        self.ticks += 1;
        let now = self.now();
        if to_reader {
            let out = self.reader.receive(m, now);
            self.to_writer.extend(out);
            check_added(&mut self.reader.core, &self.writer.core);
        } else {
            let out = self.writer.receive(m, now);
            self.to_reader.extend(out);
        }
    }

    /// Delivers everything in order, nothing lost, until both ends fall silent.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if self.to_reader.is_empty() && self.to_writer.is_empty() {
                check_copy(&self.reader.core, &self.writer.core);
                return;
            }
            let to_reader = !self.to_reader.is_empty();
            self.step((to_reader, 0, Fate::Deliver));
        }
        panic!("the two ends never fell silent");
    }
}

/// What the reader just stored is the writer's: checked as it comes, since a node may be
/// stored again over an earlier one.
fn check_added(reader: &mut MemCore, writer: &MemCore) {
    for added in std::mem::take(&mut reader.added) {
        match added {
            Added::Node(n) => assert_eq!(writer.nodes.get(n.index), Some(n), "node {}", n.index),
            Added::Block(i) => {
                assert!(i < reader.tree.length, "block {i} past the reader's length");
                assert_eq!(writer.blocks.get(&i), reader.blocks.get(&i), "block {i}");
            }
        }
    }
    if reader.tree.length > 0 {
        assert_eq!(reader.tree, writer.tree, "the reader's tree");
    }
}

/// The reader holds nothing the writer did not sign: its tree is the writer's or empty, and
/// every node and block it keeps is the writer's.
fn check_copy(reader: &MemCore, writer: &MemCore) {
    if reader.tree.length > 0 {
        assert_eq!(reader.tree, writer.tree, "the reader's tree");
    }
    for n in reader.nodes.0.iter().flatten() {
        assert_eq!(writer.nodes.get(n.index), Some(*n), "node {}", n.index);
    }
    for (i, b) in &reader.blocks {
        assert!(
            *i < reader.tree.length,
            "block {i} past the reader's length"
        );
        assert_eq!(writer.blocks.get(i), Some(b), "block {i}");
    }
    let contiguous = (0..).find(|i| !reader.blocks.contains_key(i)).unwrap();
    assert_eq!(reader.contiguous, contiguous);
}

fn blocks(n: u64) -> Vec<Vec<u8>> {
    // Sizes vary, so byte offsets matter.
    (0..n)
        .map(|i| vec![i as u8; 1 + (i as usize * 7) % 23])
        .collect()
}

fn pair(n: u64) -> Net {
    let writer = MemCore::writer(n);
    let reader = MemCore::replica(writer.key);
    Net::new(Side::new(writer, 1), Side::new(reader, 2))
}

/// Checks that the reader holds every block and said so.
fn assert_complete(net: &Net, n: u64) {
    let reader = &net.reader;
    assert_eq!(reader.core.contiguous_length(), n);
    assert_eq!(reader.core.blocks.len() as u64, n);
    for (i, b) in blocks(n).iter().enumerate() {
        assert_eq!(reader.core.blocks.get(&(i as u64)), Some(b), "block {i}");
    }
    if n > 0 {
        assert!(
            reader
                .events
                .iter()
                .any(|e| matches!(e, Event::FeedSynced { length, .. } if *length == n)),
            "{:?}",
            reader.events
        );
    }
    assert!(net.writer.warnings.is_empty(), "{:?}", net.writer.warnings);
    for w in &reader.warnings {
        // A duplicated answer is refused as unasked; nothing from an honest writer fails.
        assert!(w.contains("not requested"), "{w}");
    }
}

/// A schedule of network steps, each drawn from one number (cheaper to make than tuples,
/// and it still shrinks to fewer steps): four in five messages are delivered, one in five
/// is duplicated, and with `drops` one in six of all is lost.
fn schedule() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(any::<u32>(), 0..400)
}

/// Feed lengths: mostly small trees, where a case costs little, and some up to 64 blocks.
fn lengths() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..=16, 1 => 17u64..=64]
}

fn decode(x: u32, drops: bool) -> Step {
    let fate = match (x >> 24) % if drops { 12 } else { 10 } {
        0..8 => Fate::Deliver,
        8 | 9 => Fate::Duplicate,
        _ => Fate::Drop,
    };
    (x & 1 == 1, (x >> 1) as u16, fate)
}

#[test]
fn in_order_the_reader_gets_every_block() {
    for n in [0, 1, 2, 7, 64, 300] {
        let mut net = pair(n);
        net.settle();
        assert_complete(&net, n);
        assert!(net.reader.machine.in_order());
    }
}

#[test]
fn after_losses_reopening_the_same_channel_does_not_ask_again() {
    // The one block's request is lost: it stays in flight, and a new Synchronize does not
    // change that. Only a new channel asks for it again.
    let mut net = pair(1);
    while !net
        .to_writer
        .iter()
        .any(|m| matches!(m, Message::Request(r) if r.block.is_some()))
    {
        let to_reader = !net.to_reader.is_empty();
        net.step((to_reader, 0, Fate::Deliver));
    }
    net.to_writer
        .retain(|m| !matches!(m, Message::Request(r) if r.block.is_some()));
    net.settle();
    net.open();
    net.settle();
    assert_eq!(net.reader.core.contiguous_length(), 0);
    let mut net = Net::new(Side::new(net.writer.core, 1), Side::new(net.reader.core, 2));
    net.settle();
    assert_complete(&net, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn reordered_and_duplicated_messages_still_deliver_every_block(
        n in lengths(),
        steps in schedule(),
    ) {
        let mut net = pair(n);
        for s in steps {
            net.step(decode(s, false));
        }
        net.settle();
        assert_complete(&net, n);
    }

    #[test]
    fn after_lost_messages_a_new_channel_completes_the_copy(
        n in lengths(),
        steps in schedule(),
    ) {
        let mut net = pair(n);
        for s in steps {
            net.step(decode(s, true));
        }
        net.settle();
        // What the reader holds was checked at every step; now it reconnects.
        let mut net = Net::new(
            Side::new(net.writer.core, 1),
            Side::new(net.reader.core, 2),
        );
        net.settle();
        assert_complete(&net, n);
    }
}
