//! Proofs as hypercore 9 sends them (Cabal's wire): a block with the siblings up to its root,
//! then every other root, and the writer's signature of the whole tree.
//!
//! The downloader asks with a "digest" of the nodes on the block's path that it holds
//! ([`Tree::digest_hc9`], hypercore 9's `tree-index.js`), and the uploader leaves those out:
//! a proof then climbs from the block to a node the downloader holds, and needs neither the
//! roots nor the signature. A proof that reaches the roots carries the other roots and the
//! writer's signature; the length it proves is not sent, it follows from its rightmost node,
//! as in hypercore 9's `_verifyRootsAndWrite`. A digest of 0 asks for the whole proof.

use ed25519_dalek::VerifyingKey;

use super::flat::{self, MAX_DEPTH};
use super::hash::{Flavour, Hash, Node};
use super::tree::{NodeSource, ProofError, Tree, Verified, MAX_LENGTH};

/// A hypercore 9 `Data` message, as far as the tree is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hc9Proof {
    /// Block number.
    pub index: u64,
    /// The block's bytes.
    pub value: Vec<u8>,
    /// Siblings from the leaf up to its root, then the other roots in ascending order.
    pub nodes: Vec<Node>,
    /// The writer's signature of the tree the nodes lead to.
    pub signature: Option<Vec<u8>>,
}

fn malformed(why: impl Into<String>) -> ProofError {
    ProofError::Malformed(why.into())
}

impl Tree {
    /// The nodes of the whole hypercore 9 proof of block `index` (its value and signature
    /// are the caller's: the block's bytes and [`Tree::signature`]).
    pub fn proof_hc9(
        &self,
        src: &mut impl NodeSource,
        index: u64,
    ) -> Result<Vec<Node>, ProofError> {
        if index >= self.length {
            return Err(malformed(format!("block {index} is past the end")));
        }
        let leaf = 2 * index;
        let root = self
            .roots
            .iter()
            .find(|r| flat::contains(r.index, leaf))
            .ok_or_else(|| malformed("no root holds the block"))?
            .index;
        let mut nodes = Vec::new();
        let mut ite = leaf;
        while ite != root {
            let s = flat::sibling(ite);
            nodes.push(src.node(s)?.ok_or(ProofError::MissingNode(s))?);
            ite = flat::parent(ite);
        }
        nodes.extend(self.roots.iter().filter(|r| r.index != root));
        Ok(nodes)
    }

    /// The proof of block `index` for a downloader whose request carried `digest`: the
    /// nodes it lacks, and whether the proof reaches the roots (and so needs the signature).
    /// As hypercore 9's `TreeIndex.proof`, without its memory of what was sent before.
    pub fn proof_for_digest_hc9(
        &self,
        src: &mut impl NodeSource,
        index: u64,
        digest: u64,
    ) -> Result<(Vec<Node>, bool), ProofError> {
        if index >= self.length {
            return Err(malformed(format!("block {index} is past the end")));
        }
        if digest == 0 {
            return Ok((self.proof_hc9(src, index)?, true));
        }
        if digest == 1 {
            // The downloader holds the block's hash already.
            return Ok((Vec::new(), false));
        }
        let held = |src: &mut dyn NodeSource, i: u64| -> Result<bool, ProofError> {
            Ok(i < 2 * self.length && src.node(i)?.is_some())
        };
        // What the digest says the downloader holds.
        let mut theirs: Vec<u64> = Vec::new();
        let has_root = digest & 1 == 1;
        let mut bits = digest >> 1;
        let mut next = 2 * index;
        while bits != 0 {
            if flat::depth(next) >= MAX_DEPTH {
                return Err(malformed("the request's digest is deeper than any tree"));
            }
            if bits == 1 && has_root {
                if held(src, next)? {
                    theirs.push(next);
                }
                if flat::sibling(next) < next {
                    next = flat::sibling(next);
                }
                for r in flat::full_roots(flat::right_span(next) + 2) {
                    if held(src, r)? {
                        theirs.push(r);
                    }
                }
                break;
            }
            let sibling = flat::sibling(next);
            if bits & 1 == 1 && held(src, sibling)? {
                theirs.push(sibling);
            }
            next = flat::parent(next);
            bits >>= 1;
        }
        let mut nodes = Vec::new();
        let mut next = 2 * index;
        while !theirs.contains(&next) {
            let sibling = flat::sibling(next);
            if flat::depth(next) >= MAX_DEPTH || !held(src, sibling)? {
                if !self.roots.iter().any(|r| r.index == next) {
                    // Not one of our roots: a gap in what we hold; the whole proof instead.
                    return Ok((self.proof_hc9(src, index)?, true));
                }
                nodes.extend(
                    self.roots
                        .iter()
                        .filter(|r| r.index != next && !theirs.contains(&r.index)),
                );
                return Ok((nodes, true));
            }
            if !theirs.contains(&sibling) {
                nodes.push(src.node(sibling)?.ok_or(ProofError::MissingNode(sibling))?);
            }
            next = flat::parent(next);
        }
        Ok((nodes, false))
    }

    /// The digest of what we hold on block `index`'s path, for a hypercore 9 request (as
    /// `tree-index.js` makes it): 1 if we hold the block's hash; else bit k (k ≥ 1) for the
    /// sibling at height k − 1, and the lowest bit with the one above the last sibling bit
    /// for an ancestor there that we hold.
    pub fn digest_hc9(&self, src: &mut impl NodeSource, index: u64) -> std::io::Result<u64> {
        let leaf = 2 * index;
        if src.node(leaf)?.is_some() {
            return Ok(1);
        }
        let mut digest: u64 = 0;
        let mut next = flat::sibling(leaf);
        let max = (next + 2).max(2 * self.length);
        let mut bit: u64 = 2;
        let mut parent = flat::parent(next);
        while flat::right_span(next) < max || flat::left_span(parent) > 0 {
            if src.node(next)?.is_some() {
                digest += bit;
            }
            if src.node(parent)?.is_some() {
                digest += 2 * bit;
                if digest & 1 == 0 {
                    digest += 1;
                }
                if digest + 1 == 4 * bit {
                    return Ok(1);
                }
                return Ok(digest);
            }
            if flat::depth(parent) >= MAX_DEPTH || bit >= 1 << 60 {
                break;
            }
            next = flat::sibling(parent);
            parent = flat::parent(next);
            bit *= 2;
        }
        Ok(digest)
    }

    /// Checks a hypercore 9 proof against this tree and the writer's `key`; returns what it
    /// adds. A proof of a longer tree upgrades this one.
    pub fn verify_hc9(
        &self,
        src: &mut impl NodeSource,
        proof: &Hc9Proof,
        key: &VerifyingKey,
    ) -> Result<Verified, ProofError> {
        self.verify_hc9_with_leaf(src, proof, key, None)
    }

    /// [`Tree::verify_hc9`] with the block's leaf hash already computed from its bytes (see
    /// [`Flavour::leaf_hashes`]).
    pub fn verify_hc9_with_leaf(
        &self,
        src: &mut impl NodeSource,
        proof: &Hc9Proof,
        key: &VerifyingKey,
        leaf: Option<Hash>,
    ) -> Result<Verified, ProofError> {
        if proof.index >= MAX_LENGTH {
            return Err(malformed("block index out of range"));
        }
        let mut top = self.flavour.leaf_with(proof.index, &proof.value, leaf);
        let mut nodes = vec![top];
        let mut rest = proof.nodes.as_slice();
        // Up the block's own path: with the proof's siblings, or ours where it left them
        // out, until a node we hold (checked before) vouches for the block.
        loop {
            if let Some(held) = src.node(top.index)? {
                if held != top {
                    return Err(ProofError::Checksum(top.index));
                }
                return Ok(Verified {
                    nodes,
                    upgraded: None,
                    block: Some(proof.index),
                });
            }
            if flat::depth(top.index) >= MAX_DEPTH {
                break;
            }
            let sibling = flat::sibling(top.index);
            let n = match rest.split_first() {
                Some((n, tail)) if n.index == sibling => {
                    rest = tail;
                    nodes.push(*n);
                    *n
                }
                _ => match src.node(sibling)? {
                    Some(n) => n,
                    None => break,
                },
            };
            let parent = flat::parent(top.index);
            top = self
                .flavour
                .parent(parent, &top, &n)
                .ok_or_else(|| malformed("node sizes overflow"))?;
            nodes.push(top);
        }
        // The tree the proof speaks of ends where its rightmost node does.
        if let Some(n) = rest
            .iter()
            .find(|n| n.index >= 2 * MAX_LENGTH || flat::depth(n.index) > MAX_DEPTH)
        {
            return Err(malformed(format!(
                "node {} is past the largest tree",
                n.index
            )));
        }
        let right = rest
            .iter()
            .map(|n| n.index)
            .chain([top.index])
            .map(flat::right_span)
            .max()
            .expect("the top is there");
        let length = (right + 2) / 2;
        if length > MAX_LENGTH {
            return Err(malformed("the proof speaks of too long a tree"));
        }
        let mut roots = Vec::new();
        for index in flat::full_roots(2 * length) {
            let root = if index == top.index {
                top
            } else if let Some(n) = rest.iter().find(|n| n.index == index) {
                *n
            } else if let Some(n) = src.node(index)? {
                n
            } else {
                return Err(malformed(format!("the proof lacks root {index}")));
            };
            roots.push(root);
        }
        if !roots.iter().any(|r| r.index == top.index) {
            // The path stopped below a root: its top must be a node we hold.
            match src.node(top.index)? {
                Some(n) if n.hash == top.hash => {}
                Some(_) => return Err(ProofError::Checksum(top.index)),
                None => return Err(ProofError::MissingNode(top.index)),
            }
        }
        let Some(signature) = &proof.signature else {
            return Err(malformed("the proof carries no signature"));
        };
        // Roots we hold already were checked against a signature when they came: a proof
        // that leads to exactly them needs no second check (hypercore 9 checks a signature
        // only when a proof brings roots it does not trust yet).
        let known = length == self.length && roots == self.roots;
        if !known && !self.flavour.verify(key, signature, &roots, length, 0) {
            return Err(ProofError::BadSignature);
        }
        let upgraded = (length > self.length)
            .then(|| -> Result<Tree, ProofError> {
                let byte_length = roots
                    .iter()
                    .try_fold(0u64, |sum, r| sum.checked_add(r.size))
                    .ok_or_else(|| malformed("the tree's byte length overflows"))?;
                Ok(Tree {
                    flavour: Flavour::Hc9,
                    fork: 0,
                    length,
                    byte_length,
                    roots: roots.clone(),
                    signature: Some(
                        signature
                            .as_slice()
                            .try_into()
                            .map_err(|_| malformed("the signature is not 64 bytes"))?,
                    ),
                })
            })
            .transpose()?;
        if upgraded.is_none() && length == self.length && roots != self.roots {
            return Err(ProofError::Checksum(top.index));
        }
        nodes.extend(roots.iter().copied());
        Ok(Verified {
            nodes,
            upgraded,
            block: Some(proof.index),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use std::collections::HashMap;

    fn writer(lengths: &[usize]) -> (Tree, HashMap<u64, Node>, Vec<Vec<u8>>, SigningKey) {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut tree = Tree::new(Flavour::Hc9);
        let mut store = HashMap::new();
        let mut blocks = Vec::new();
        for &n in lengths {
            let batch: Vec<Vec<u8>> = (0..n)
                .map(|_| format!("block-{}", blocks.len() + blocks.len() % 7).into_bytes())
                .collect();
            for node in tree.append(&batch, &key).unwrap() {
                store.insert(node.index, node);
            }
            blocks.extend(batch);
        }
        (tree, store, blocks, key)
    }

    #[test]
    fn proofs_have_the_shape_hypercore_9_sends() {
        let (tree, mut store, _, _) = writer(&[5]);
        let idx = |v: Vec<Node>| v.iter().map(|n| n.index).collect::<Vec<_>>();
        assert_eq!(idx(tree.proof_hc9(&mut store, 0).unwrap()), [2, 5, 8]);
        assert_eq!(idx(tree.proof_hc9(&mut store, 4).unwrap()), [3]);
    }

    fn fetch(w: &Tree, wstore: &mut HashMap<u64, Node>, blocks: &[Vec<u8>], i: u64) -> Hc9Proof {
        Hc9Proof {
            index: i,
            value: blocks[i as usize].clone(),
            nodes: w.proof_hc9(wstore, i).unwrap(),
            signature: w.signature.map(|s| s.to_vec()),
        }
    }

    /// The proof of block `i` cut to what the reader holds, as hypercore 9 sends it.
    fn cut(
        reader: &Tree,
        rstore: &mut HashMap<u64, Node>,
        w: &Tree,
        wstore: &mut HashMap<u64, Node>,
        blocks: &[Vec<u8>],
        i: u64,
    ) -> Hc9Proof {
        let digest = reader.digest_hc9(rstore, i).unwrap();
        let (nodes, signed) = w.proof_for_digest_hc9(wstore, i, digest).unwrap();
        Hc9Proof {
            index: i,
            value: blocks[i as usize].clone(),
            nodes,
            signature: if signed {
                w.signature.map(|s| s.to_vec())
            } else {
                None
            },
        }
    }

    /// Checks `proof` in the reader and takes in what it adds, each node the writer's own.
    fn take_in(
        reader: &mut Tree,
        rstore: &mut HashMap<u64, Node>,
        w: &Tree,
        wstore: &HashMap<u64, Node>,
        proof: &Hc9Proof,
    ) {
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let v = reader.verify_hc9(rstore, proof, &key);
        let v = v.unwrap_or_else(|e| panic!("block {} of {}: {e}", proof.index, w.length));
        for n in &v.nodes {
            assert_eq!(wstore[&n.index], *n);
            rstore.insert(n.index, *n);
        }
        if let Some(t) = v.upgraded {
            assert_eq!(t.roots, w.roots);
            *reader = t;
        }
    }

    proptest::proptest! {
        #[test]
        fn every_block_of_a_growing_feed_verifies_and_mutations_do_not(
            batches in proptest::collection::vec(1usize..30, 1..6),
            picks in proptest::collection::vec(0u64..200, 1..30),
            flip in 0usize..64,
        ) {
            let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
            let mut reader = Tree::new(Flavour::Hc9);
            let mut rstore: HashMap<u64, Node> = HashMap::new();
            for grown in 1..=batches.len() {
                let (w, mut wstore, blocks, _) = writer(&batches[..grown]);
                for &p in &picks {
                    let i = p % w.length;
                    let proof = fetch(&w, &mut wstore, &blocks, i);
                    take_in(&mut reader, &mut rstore, &w, &wstore, &proof);
                    // A wrong byte anywhere is refused.
                    let mut bad = proof.clone();
                    match flip % 4 {
                        3 => bad.nodes.push(Node {
                            index: [u64::MAX - flip as u64, (1 << 63) - 1][flip % 2],
                            size: 1,
                            hash: [0; 32],
                        }),
                        0 => bad.value.push(b'!'),
                        1 if !bad.nodes.is_empty() => {
                            let k = flip % bad.nodes.len();
                            bad.nodes[k].hash[flip % 32] ^= 1;
                        }
                        _ => bad.signature.as_mut().unwrap()[flip] ^= 1,
                    }
                    // Trusting nothing, every wrong byte is refused.
                    let mut nothing: HashMap<u64, Node> = HashMap::new();
                    proptest::prop_assert!(Tree::new(Flavour::Hc9).verify_hc9(&mut nothing, &bad, &key).is_err());
                    // Trusting what it holds, the reader may stop at a node it holds and
                    // leave the rest of the proof unread; nothing wrong is ever taken in.
                    let mut scratch = rstore.clone();
                    if let Ok(v) = reader.verify_hc9(&mut scratch, &bad, &key) {
                        proptest::prop_assert_ne!(flip % 4, 0, "a wrong block was taken in");
                        for n in &v.nodes {
                            proptest::prop_assert_eq!(wstore.get(&n.index), Some(n));
                        }
                    }
                    // A proof cut to the reader's digest, as hypercore 9 sends it.
                    let j = (p * 7 + 3) % w.length;
                    let proof = cut(&reader, &mut rstore, &w, &mut wstore, &blocks, j);
                    take_in(&mut reader, &mut rstore, &w, &wstore, &proof);
                }
                // A proof that a node held vouches for takes no upgrade along; the last
                // block, past what the reader knows, always does.
                let last = w.length - 1;
                let proof = cut(&reader, &mut rstore, &w, &mut wstore, &blocks, last);
                take_in(&mut reader, &mut rstore, &w, &wstore, &proof);
                proptest::prop_assert_eq!(reader.length, w.length);
            }
        }
    }
}
