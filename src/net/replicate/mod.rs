//! Replication of one feed on one channel, both directions, from the core's proof API.
//!
//! Hypercore 9 feeds (Cabal's wire) replicate through [`hc9::Hc9Channel`] instead.
//!
//! Two layers: [`machine::Replicator`] makes every protocol decision (window, requests in
//! flight, what the peer holds, upgrades, progress) without I/O; [`FeedChannel`] drives it
//! for one store feed. Each call of the driver takes the core's lock once, shows the core to
//! the machine through [`machine::View`], and carries out the machine's effects under that
//! lock: a received proof is checked and applied without another peer's change in between,
//! and what a progress or synced event reports is committed before the event is out.

pub mod hc9;
pub mod machine;
mod remote;
mod shape;

use std::collections::VecDeque;
use std::time::Instant;

use hypercore_protocol::schema::{Data, Request};
use hypercore_protocol::Message;
use hypercore_schema::{DataBlock, DataUpgrade};

use crate::core::{self as fcore, Core, CoreError};

use crate::event::{Event, PeerId};
use crate::frame::{core, Msg};
use crate::store::Feed;
use crate::wire::FeedKey;

pub use machine::{nodes_after, nodes_to_ask, PROGRESS_INTERVAL, WINDOW};
use machine::{Effect, Effects, Failure, Replicator, View};
pub use remote::MAX_REMOTE_SPANS;

/// The outcome of handling one message, for the peer task; `M` is the wire's message.
#[derive(Debug)]
pub struct Outcome<M = Msg> {
    /// Messages to send on this channel.
    pub send: Vec<M>,
    /// Events to publish.
    pub events: Vec<Event>,
    /// Our copy of the feed grew: other peers should hear of it.
    pub grew: bool,
    /// Something the peer did wrong (the session survives).
    pub warning: Option<String>,
    /// The channel's work is over (a peer that is not live needs nothing more): close it.
    pub done: bool,
}

impl<M> Default for Outcome<M> {
    fn default() -> Self {
        Outcome {
            send: Vec::new(),
            events: Vec::new(),
            grew: false,
            warning: None,
            done: false,
        }
    }
}

/// One feed's replication with one peer: a [`Replicator`] over a store feed.
#[derive(Debug)]
pub struct FeedChannel {
    /// The feed.
    pub key: FeedKey,
    /// Block bytes received on this channel.
    pub bytes: u64,
    feed: Feed,
    machine: Replicator,
}

impl FeedChannel {
    /// A channel for `feed` with `peer`; nothing is sent until [`FeedChannel::on_open`].
    pub fn new(feed: Feed, peer: PeerId) -> Self {
        FeedChannel {
            key: feed.entry.key,
            bytes: 0,
            machine: Replicator::new(feed.entry.key, peer),
            feed,
        }
    }

    /// The feed this channel replicates.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Both sides opened the channel: say what we have.
    pub async fn on_open(&mut self) -> Outcome {
        let mut hc = self.feed.core.lock().await;
        let fx = self.machine.on_open(&*hc);
        let out = carry_out(
            &mut self.machine,
            &self.feed,
            &mut hc,
            fx,
            Instant::now(),
            None,
        );
        self.bytes = self.machine.bytes();
        out
    }

    /// Our copy changed (a local append, or blocks from another peer): tell this peer.
    pub async fn on_local_change(&mut self) -> Outcome {
        let mut hc = self.feed.core.lock().await;
        let fx = self.machine.on_local_change(&*hc);
        let out = carry_out(
            &mut self.machine,
            &self.feed,
            &mut hc,
            fx,
            Instant::now(),
            None,
        );
        self.bytes = self.machine.bytes();
        out
    }

    /// A hypercore message arrived on this channel.
    pub async fn on_message(&mut self, msg: Message) -> Outcome {
        self.on_message_with_leaf(msg, None).await
    }

    /// [`FeedChannel::on_message`]; `leaf` is the leaf hash of the block a Data message
    /// carries, if [`leaf_hashes`] computed it already.
    pub async fn on_message_with_leaf(
        &mut self,
        msg: Message,
        leaf: Option<fcore::Hash>,
    ) -> Outcome {
        let mut hc = self.feed.core.lock().await;
        let now = Instant::now();
        let fx = self.machine.on_message(msg, &*hc, now);
        let out = carry_out(&mut self.machine, &self.feed, &mut hc, fx, now, leaf);
        self.bytes = self.machine.bytes();
        out
    }
}

/// Carries out the machine's effects in order, with the core's lock held throughout;
/// effects that need an answer are answered at once and what follows from it comes next.
/// The leaf hashes of the blocks that these messages' Data carry, hashed side by side; `None`
/// for a message without a block.
pub fn leaf_hashes<'a>(msgs: impl Iterator<Item = &'a Message>) -> Vec<Option<fcore::Hash>> {
    let values = msgs.map(|m| match m {
        Message::Data(Data { block: Some(b), .. }) => Some(&b.value[..]),
        _ => None,
    });
    leaves_of(fcore::Flavour::Hc10, values.collect())
}

/// The `flavour` leaf hashes of these blocks, hashed side by side, in their places (`None`
/// where there is no block, and everywhere when fewer than two would be hashed together).
pub fn leaves_of(flavour: fcore::Flavour, values: Vec<Option<&[u8]>>) -> Vec<Option<fcore::Hash>> {
    let blocks: Vec<&[u8]> = values.iter().flatten().copied().collect();
    if blocks.len() < 2 {
        return vec![None; values.len()];
    }
    let mut hashes = flavour.leaf_hashes(&blocks).into_iter();
    values
        .iter()
        .map(|v| v.and_then(|_| hashes.next()))
        .collect()
}

/// `leaf`, if given, is the leaf hash of the block of the Data message these effects answer
/// (there is at most one Apply among them).
fn carry_out(
    machine: &mut Replicator,
    feed: &Feed,
    hc: &mut Core,
    fx: Effects,
    now: Instant,
    mut leaf: Option<fcore::Hash>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut queue = VecDeque::from(fx);
    while let Some(effect) = queue.pop_front() {
        let next = match effect {
            Effect::Send(m) => {
                out.send.push(Msg::Core(m));
                continue;
            }
            Effect::Event(e) => {
                out.events.push(e);
                continue;
            }
            Effect::Warning(w) => {
                out.warning = Some(w);
                continue;
            }
            Effect::Grew => {
                out.grew = true;
                continue;
            }
            Effect::Serve(r) => match hc.proof(&request_from_wire(&r)) {
                Ok(p) => {
                    out.send.push(core(proof_to_wire(p, r.id, r.fork)));
                    continue;
                }
                Err(e) => machine.on_serve_failed(&r, failure(e)),
            },
            Effect::Apply(d) => {
                let applied = proof_from_wire(d).and_then(|p| hc.apply_with_leaf(p, leaf.take()));
                machine.on_applied(applied.map_err(failure), &*hc, now)
            }
            Effect::Commit => {
                let committed = hc.commit().map_err(|e| e.to_string());
                feed.committed(hc);
                machine.on_committed(committed, &*hc, now)
            }
        };
        for e in next.into_iter().rev() {
            queue.push_front(e);
        }
    }
    out
}

/// Our core as the machine sees it.
impl View for Core {
    fn length(&self) -> u64 {
        self.tree().length
    }

    fn contiguous_length(&self) -> u64 {
        self.info().contiguous_length
    }

    fn fork(&self) -> u64 {
        self.tree().fork
    }

    fn writable(&self) -> bool {
        self.info().writeable
    }

    fn has(&self, index: u64) -> bool {
        Core::has(self, index)
    }
}

/// Whose fault a core error is: our storage's, or the peer's proof or request.
fn failure(e: CoreError) -> Failure {
    match e {
        CoreError::Io { .. } | CoreError::Damaged(_) => Failure::Storage(e.to_string()),
        _ => Failure::Refused(e.to_string()),
    }
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
mod memory;
#[cfg(test)]
mod tests;
