//! The Merkle tree of one feed: appending, proofs for peers and checking theirs.
//!
//! Pure: nodes come from a [`NodeSource`] (the tree file, or a map in tests), and a checked
//! proof comes back as a [`Verified`] change for the caller to store. Proofs have the shape
//! JS hypercore 10 sends and expects (`lib/merkle-tree.js`, `generateProof` and `verify`):
//! the same nodes in the same order, so that either side can be a JS peer.

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::flat::{self, MAX_DEPTH};
use super::hash::{Flavour, Hash, Node};

/// The most blocks a feed may hold: tree indexes are twice a length and stay below 2^63.
pub const MAX_LENGTH: u64 = 1 << MAX_DEPTH;

/// Where a tree's nodes are kept.
pub trait NodeSource {
    /// The stored node at `index`, or `None` if there is none.
    fn node(&mut self, index: u64) -> std::io::Result<Option<Node>>;
}

impl NodeSource for std::collections::HashMap<u64, Node> {
    fn node(&mut self, index: u64) -> std::io::Result<Option<Node>> {
        Ok(self.get(&index).copied())
    }
}

/// Why a proof could not be made or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The proof or request does not have a shape that can be checked or answered.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The writer's signature does not cover the tree the proof builds.
    #[error("the signature does not verify")]
    BadSignature,
    /// The proof leads to a node that differs from the one we hold.
    #[error("node {0} does not match the one we hold")]
    Checksum(u64),
    /// A node the proof needs is not stored here.
    #[error("node {0} is not stored here")]
    MissingNode(u64),
    /// The nodes could not be read.
    #[error("cannot read the tree: {0}")]
    Io(#[from] std::io::Error),
}

fn malformed(why: impl Into<String>) -> ProofError {
    ProofError::Malformed(why.into())
}

/// A block or tree node asked for, with how many levels of proof the asker lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Block number for a block, flat-tree index for a hash.
    pub index: u64,
    /// Levels of the path that the asker does not hold.
    pub nodes: u64,
}

/// What a peer asks a proof for (hypercore 10's Request without seek).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// A block and its path.
    pub block: Option<Want>,
    /// A tree node and its path.
    pub hash: Option<Want>,
    /// The asker's length and how far past it to prove: `(start, length)`.
    pub upgrade: Option<(u64, u64)>,
}

/// A block with the nodes that lead from it towards a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockProof {
    /// Block number.
    pub index: u64,
    /// The block's bytes (left empty by [`Tree::proof`], for the storage to fill in).
    pub value: Vec<u8>,
    /// Siblings from the leaf upwards.
    pub nodes: Vec<Node>,
}

/// A tree node with the nodes that lead from it towards a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashProof {
    /// Flat-tree index.
    pub index: u64,
    /// The node itself, then siblings upwards.
    pub nodes: Vec<Node>,
}

/// The nodes and signature that take a tree from `start` blocks to the writer's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeProof {
    /// The asker's length.
    pub start: u64,
    /// How far past it was asked for.
    pub length: u64,
    /// Nodes up to `start + length`.
    pub nodes: Vec<Node>,
    /// Nodes from there to the writer's length.
    pub additional: Vec<Node>,
    /// The writer's signature of its whole tree.
    pub signature: Vec<u8>,
}

/// An answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proof {
    /// The fork of the tree it proves.
    pub fork: u64,
    /// A block, if one was asked for.
    pub block: Option<BlockProof>,
    /// A node, if one was asked for.
    pub hash: Option<HashProof>,
    /// An upgrade, if one was asked for.
    pub upgrade: Option<UpgradeProof>,
}

/// What a checked proof adds to a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Nodes to store: the ones received and the ones computed from them.
    pub nodes: Vec<Node>,
    /// The tree after the upgrade, if the proof carried one.
    pub upgraded: Option<Tree>,
    /// The number of the block, now known to be right.
    pub block: Option<u64>,
}

/// The signed state of a feed's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Hash flavour.
    pub flavour: Flavour,
    /// Times the writer truncated the feed.
    pub fork: u64,
    /// Blocks in the feed.
    pub length: u64,
    /// Bytes in the feed.
    pub byte_length: u64,
    /// The roots, in ascending index order.
    pub roots: Vec<Node>,
    /// The writer's signature of this state; `None` for an empty tree.
    pub signature: Option<[u8; 64]>,
}

impl Tree {
    /// An empty tree.
    pub fn new(flavour: Flavour) -> Self {
        Tree {
            flavour,
            fork: 0,
            length: 0,
            byte_length: 0,
            roots: Vec::new(),
            signature: None,
        }
    }

    /// The hash over the roots.
    pub fn hash(&self) -> Hash {
        self.flavour.tree(&self.roots)
    }

    /// Appends blocks, signs the new state with `key`, and returns the nodes to store.
    pub fn append<B: AsRef<[u8]>>(
        &mut self,
        blocks: &[B],
        key: &SigningKey,
    ) -> Result<Vec<Node>, ProofError> {
        let mut nodes = Vec::with_capacity(blocks.len() * 2);
        for b in blocks {
            let leaf = self.flavour.leaf(self.length, b.as_ref());
            self.append_root(leaf, &mut nodes)?;
        }
        if !blocks.is_empty() {
            self.signature = Some(self.flavour.sign(key, &self.roots, self.length, self.fork));
        }
        Ok(nodes)
    }

    /// Adds `node` as the newest root and merges the roots it completes; returns the index
    /// of the last root after that.
    fn append_root(&mut self, node: Node, nodes: &mut Vec<Node>) -> Result<u64, ProofError> {
        if flat::depth(node.index) > MAX_DEPTH {
            return Err(malformed(format!("node {} is too deep", node.index)));
        }
        self.length = self
            .length
            .checked_add(flat::leaves(node.index))
            .filter(|&l| l <= MAX_LENGTH)
            .ok_or_else(|| malformed("the tree would grow past the largest length"))?;
        self.byte_length = self
            .byte_length
            .checked_add(node.size)
            .ok_or_else(|| malformed("the tree's byte length overflows"))?;
        self.roots.push(node);
        nodes.push(node);
        let mut ite = node.index;
        while self.roots.len() > 1 {
            let b = self.roots[self.roots.len() - 2];
            if flat::sibling(ite) != b.index {
                break;
            }
            let a = self.roots.pop().expect("two roots");
            self.roots.pop();
            ite = flat::parent(ite);
            let p = self
                .flavour
                .parent(ite, &b, &a)
                .ok_or_else(|| malformed("node sizes overflow"))?;
            nodes.push(p);
            self.roots.push(p);
        }
        Ok(ite)
    }

    /// The proof that answers `req`, with block values left empty. Fails when the request
    /// cannot be answered from this tree (the peer then gets NoData).
    pub fn proof(&self, src: &mut impl NodeSource, req: &Request) -> Result<Proof, ProofError> {
        let head = 2 * self.length;
        let mut out = Proof {
            fork: self.fork,
            ..Proof::default()
        };
        if head == 0 {
            return Ok(out);
        }
        let (from, to) = match req.upgrade {
            Some((start, length)) => {
                let end = start
                    .checked_add(length)
                    .filter(|&e| length > 0 && e <= self.length)
                    .ok_or_else(|| malformed("invalid upgrade"))?;
                (2 * start, 2 * end)
            }
            None => (0, head),
        };
        // The node asked for: its flat index, whether it is a block, the last block under it.
        let asked = match (req.block, req.hash) {
            (Some(b), _) => {
                if b.index >= self.length {
                    return Err(malformed("block past the end"));
                }
                Some((2 * b.index, true, b.index, b.nodes))
            }
            (None, Some(h)) => {
                if h.index >= head || flat::right_span(h.index) >= head {
                    return Err(malformed("node past the end"));
                }
                Some((h.index, false, flat::right_span(h.index) / 2, h.nodes))
            }
            (None, None) => None,
        };
        let get = |src: &mut dyn NodeSource, index: u64| -> Result<Node, ProofError> {
            src.node(index)?.ok_or(ProofError::MissingNode(index))
        };
        let mut path: Option<Vec<Node>> = None;
        let mut sub_tree = head;
        let below_upgrade = |last: u64| req.upgrade.is_none_or(|(start, _)| last < start);
        if let Some((index, is_block, last, levels)) = asked {
            if below_upgrade(last) {
                sub_tree = nodes_to_root(index, levels, to)?;
                path = Some(path_to(src, index, is_block, sub_tree)?);
            } else if req.upgrade.is_some() {
                sub_tree = index;
                if 2 * last >= to {
                    return Err(malformed("block past the upgrade"));
                }
            }
        }
        if let Some((start, length)) = req.upgrade {
            let mut nodes = Vec::new();
            for_upgrade(src, from, to, &mut |src, root| {
                // The block's path replaces the root or sibling it leads to.
                if path.is_none() && flat::contains(root, sub_tree) {
                    let (index, is_block, ..) = asked.expect("the subtree is a node asked for");
                    path = Some(path_to(src, index, is_block, root)?);
                } else {
                    nodes.push(get(src, root)?);
                }
                Ok(())
            })?;
            let mut additional = Vec::new();
            if head > to {
                for_upgrade(src, to, head, &mut |src, root| {
                    additional.push(get(src, root)?);
                    Ok(())
                })?;
            }
            let signature = self
                .signature
                .ok_or_else(|| malformed("this tree has no signature to prove"))?;
            out.upgrade = Some(UpgradeProof {
                start,
                length,
                nodes,
                additional,
                signature: signature.to_vec(),
            });
        }
        match (req.block, req.hash) {
            (Some(b), _) => {
                out.block = Some(BlockProof {
                    index: b.index,
                    value: Vec::new(),
                    nodes: path.unwrap_or_default(),
                })
            }
            (None, Some(h)) => {
                out.hash = Some(HashProof {
                    index: h.index,
                    nodes: path.unwrap_or_default(),
                })
            }
            (None, None) => {}
        }
        Ok(out)
    }

    /// Checks a peer's proof against this tree and the writer's `key`; returns what it adds.
    /// Nothing is changed: the caller stores the result.
    pub fn verify(
        &self,
        src: &mut impl NodeSource,
        proof: &Proof,
        key: &VerifyingKey,
    ) -> Result<Verified, ProofError> {
        self.verify_with_leaf(src, proof, key, None)
    }

    /// [`Tree::verify`] with the block's leaf hash already computed (by
    /// [`Flavour::leaf_hashes`], from these very bytes).
    pub fn verify_with_leaf(
        &self,
        src: &mut impl NodeSource,
        proof: &Proof,
        key: &VerifyingKey,
        leaf: Option<Hash>,
    ) -> Result<Verified, ProofError> {
        if proof.fork != self.fork {
            return Err(malformed(format!(
                "fork {} where ours is {}",
                proof.fork, self.fork
            )));
        }
        // The leaf, then a sibling and a parent per level of the path.
        let path = proof.block.as_ref().map_or(0, |b| b.nodes.len());
        let mut nodes = Vec::with_capacity(1 + 2 * path);
        let unverified = self.verify_path(proof, leaf, &mut nodes)?;
        let mut upgraded = None;
        let mut consumed = false;
        if let Some(up) = &proof.upgrade {
            let mut batch = self.clone();
            consumed = batch.verify_upgrade(up, unverified, &mut nodes)?;
            if batch.length <= self.length {
                return Err(malformed("the upgrade does not extend the tree"));
            }
            if !self
                .flavour
                .verify(key, &up.signature, &batch.roots, batch.length, proof.fork)
            {
                return Err(ProofError::BadSignature);
            }
            batch.signature = Some(
                up.signature
                    .as_slice()
                    .try_into()
                    .map_err(|_| malformed("the signature is not 64 bytes"))?,
            );
            upgraded = Some(batch);
        }
        if let Some(u) = unverified.filter(|_| !consumed) {
            match src.node(u.index)? {
                Some(n) if n.hash == u.hash => {}
                Some(_) => return Err(ProofError::Checksum(u.index)),
                None => return Err(ProofError::MissingNode(u.index)),
            }
        }
        let block = proof.block.as_ref().map(|b| b.index);
        Ok(Verified {
            nodes,
            upgraded,
            block,
        })
    }

    /// Hashes a block or node up its path; returns the (not yet trusted) top node.
    fn verify_path(
        &self,
        proof: &Proof,
        leaf: Option<Hash>,
        nodes: &mut Vec<Node>,
    ) -> Result<Option<Node>, ProofError> {
        let (start, list, mut top) = match (&proof.block, &proof.hash) {
            (Some(b), _) => {
                if b.index >= MAX_LENGTH {
                    return Err(malformed("block index out of range"));
                }
                let leaf = self.flavour.leaf_with(b.index, &b.value, leaf);
                (leaf.index, &b.nodes[..], leaf)
            }
            (None, Some(h)) => match h.nodes.split_first() {
                Some((first, rest)) if first.index == h.index && h.index < 2 * MAX_LENGTH => {
                    (h.index, rest, *first)
                }
                _ => return Err(malformed(format!("expected node {} first", h.index))),
            },
            (None, None) => return Ok(None),
        };
        nodes.push(top);
        let mut ite = start;
        for n in list {
            if flat::depth(ite) >= MAX_DEPTH {
                return Err(malformed("the path climbs past the largest tree"));
            }
            let expected = flat::sibling(ite);
            if n.index != expected {
                return Err(malformed(format!(
                    "expected node {expected}, got node {}",
                    n.index
                )));
            }
            ite = flat::parent(ite);
            top = self
                .flavour
                .parent(ite, &top, n)
                .ok_or_else(|| malformed("node sizes overflow"))?;
            nodes.push(*n);
            nodes.push(top);
        }
        Ok(Some(top))
    }

    /// Grows this tree (a copy) with an upgrade proof; returns whether the block's path top
    /// was used as one of the new nodes.
    fn verify_upgrade(
        &mut self,
        up: &UpgradeProof,
        block_top: Option<Node>,
        nodes: &mut Vec<Node>,
    ) -> Result<bool, ProofError> {
        let end = up
            .start
            .checked_add(up.length)
            .filter(|&e| up.length > 0 && e <= MAX_LENGTH)
            .ok_or_else(|| malformed("invalid upgrade span"))?;
        let mut queue = Queue {
            nodes: &up.nodes,
            next: 0,
            extra: block_top,
        };
        let mut grow = !self.roots.is_empty();
        let mut held = 0;
        for root in flat::full_roots(2 * end) {
            if held < self.roots.len() && self.roots[held].index == root {
                held += 1;
                continue;
            }
            if grow {
                grow = false;
                if held < self.roots.len() {
                    let mut ite = self.roots.last().expect("roots").index;
                    while ite != root {
                        if flat::depth(ite) >= flat::depth(root) {
                            return Err(malformed("the upgrade does not start at our length"));
                        }
                        let node = queue.shift(flat::sibling(ite))?;
                        ite = self.append_root(node, nodes)?;
                    }
                    continue;
                }
            }
            let node = queue.shift(root)?;
            self.append_root(node, nodes)?;
        }
        let extra = &up.additional;
        let mut ite = self
            .roots
            .last()
            .ok_or_else(|| malformed("the upgrade leaves no roots"))?
            .index;
        let mut k = 0;
        while k < extra.len() {
            let s = flat::sibling(ite);
            if extra[k].index != s {
                ite = s;
                break;
            }
            ite = self.append_root(extra[k], nodes)?;
            k += 1;
        }
        while k < extra.len() {
            let node = extra[k];
            k += 1;
            while node.index != ite {
                ite = flat::left_child(ite)
                    .ok_or_else(|| malformed(format!("unexpected node {}", node.index)))?;
            }
            ite = self.append_root(node, nodes)?;
            if flat::depth(ite) >= MAX_DEPTH {
                return Err(malformed("the upgrade grows past the largest tree"));
            }
            ite = flat::sibling(ite);
        }
        Ok(queue.extra.is_none())
    }

    /// Where block `index`'s bytes start: the sizes of everything left of it.
    pub fn byte_offset(&self, src: &mut impl NodeSource, index: u64) -> Result<u64, ProofError> {
        if index == self.length {
            return Ok(self.byte_length);
        }
        let leaf = 2 * index;
        let mut offset = 0;
        for root in &self.roots {
            if leaf > flat::right_span(root.index) {
                offset += root.size;
                continue;
            }
            let mut ite = root.index;
            while ite != leaf {
                let left = flat::left_child(ite).expect("a node above a leaf has children");
                if leaf < ite {
                    ite = left;
                } else {
                    offset += src.node(left)?.ok_or(ProofError::MissingNode(left))?.size;
                    ite = flat::right_child(ite).expect("children");
                }
            }
            return Ok(offset);
        }
        Err(malformed(format!("block {index} is past the end")))
    }

    /// How many levels of block `index`'s path are missing here: what JS hypercore puts in
    /// a request's `nodes`.
    pub fn missing_nodes(&self, src: &mut impl NodeSource, index: u64) -> std::io::Result<u64> {
        let head = 2 * self.length;
        let mut ite = 2 * index;
        if ite >= head {
            return Ok(0);
        }
        let mut count = 0;
        while !flat::contains(ite, head) && src.node(ite)?.is_none() {
            count += 1;
            ite = flat::parent(ite);
        }
        Ok(count)
    }
}

/// The node `levels` above `index`, which must lie inside the tree of `to / 2` blocks.
fn nodes_to_root(index: u64, levels: u64, to: u64) -> Result<u64, ProofError> {
    if levels > u64::from(MAX_DEPTH) {
        return Err(malformed("nodes is out of bounds"));
    }
    let mut ite = index;
    for _ in 0..levels {
        ite = flat::parent(ite);
        if flat::contains(ite, to) {
            return Err(malformed("nodes is out of bounds"));
        }
    }
    Ok(ite)
}

/// The path from `index` up to (not including) `root`: the node itself first for a hash.
fn path_to(
    src: &mut dyn NodeSource,
    index: u64,
    is_block: bool,
    root: u64,
) -> Result<Vec<Node>, ProofError> {
    let mut out = Vec::new();
    let get = |src: &mut dyn NodeSource, i: u64| src.node(i)?.ok_or(ProofError::MissingNode(i));
    if !is_block {
        out.push(get(src, index)?);
    }
    let mut ite = index;
    while ite != root {
        out.push(get(src, flat::sibling(ite))?);
        ite = flat::parent(ite);
    }
    Ok(out)
}

type Visit<'a> = dyn FnMut(&mut dyn NodeSource, u64) -> Result<(), ProofError> + 'a;

/// Visits the nodes that take a tree of `from / 2` blocks to `to / 2`: the right siblings
/// on the way up from the old last block, then each further root whole.
fn for_upgrade(
    src: &mut dyn NodeSource,
    from: u64,
    to: u64,
    visit: &mut Visit<'_>,
) -> Result<(), ProofError> {
    let mut connected = from == 0;
    for root in flat::full_roots(to) {
        if flat::right_span(root) + 2 <= from {
            continue;
        }
        if !connected && flat::contains(root, from - 2) {
            connected = true;
            let target = from - 2;
            let mut ite = target;
            while ite != root {
                let s = flat::sibling(ite);
                if s > target {
                    visit(src, s)?;
                }
                ite = flat::parent(ite);
            }
            continue;
        }
        connected = true;
        visit(src, root)?;
    }
    Ok(())
}

/// The nodes of a proof in the order they are due, and the block's path top that may
/// stand in for one of them.
struct Queue<'a> {
    nodes: &'a [Node],
    next: usize,
    extra: Option<Node>,
}

impl Queue<'_> {
    fn shift(&mut self, index: u64) -> Result<Node, ProofError> {
        if let Some(extra) = self.extra.filter(|e| e.index == index) {
            self.extra = None;
            return Ok(extra);
        }
        let node = self
            .nodes
            .get(self.next)
            .ok_or_else(|| malformed(format!("expected node {index}, got none")))?;
        if node.index != index {
            return Err(malformed(format!(
                "expected node {index}, got node {}",
                node.index
            )));
        }
        self.next += 1;
        Ok(*node)
    }
}
