//! Proofs as hypercore 9 sends them (Cabal's wire): a block with the siblings up to its root,
//! then every other root, and the writer's signature of the whole tree.
//!
//! The downloader asks with a "digest" of the nodes it holds; feedscope always asks with
//! digest 0 and always answers with the whole proof, which real hypercore 9 peers accept
//! (measured against hypercore 9; see the legacy wire notes). The length a proof proves is
//! not sent: it follows from its rightmost node, as in hypercore 9's `_verifyRootsAndWrite`.

use ed25519_dalek::VerifyingKey;

use super::flat::{self, MAX_DEPTH};
use super::hash::{Flavour, Node};
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

    /// Checks a hypercore 9 proof against this tree and the writer's `key`; returns what it
    /// adds. A proof of a longer tree upgrades this one.
    pub fn verify_hc9(
        &self,
        src: &mut impl NodeSource,
        proof: &Hc9Proof,
        key: &VerifyingKey,
    ) -> Result<Verified, ProofError> {
        if proof.index >= MAX_LENGTH {
            return Err(malformed("block index out of range"));
        }
        let mut top = self.flavour.leaf(proof.index, &proof.value);
        let mut nodes = vec![top];
        let mut rest = proof.nodes.as_slice();
        // Up the block's own path, as far as the proof's siblings go.
        while let Some((n, tail)) = rest.split_first() {
            if flat::depth(top.index) >= MAX_DEPTH || n.index != flat::sibling(top.index) {
                break;
            }
            let parent = flat::parent(top.index);
            top = self
                .flavour
                .parent(parent, &top, n)
                .ok_or_else(|| malformed("node sizes overflow"))?;
            nodes.push(*n);
            nodes.push(top);
            rest = tail;
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
                    let v = reader.verify_hc9(&mut rstore, &proof, &key);
                    let v = v.unwrap_or_else(|e| panic!("block {i} of {}: {e}", w.length));
                    for n in &v.nodes {
                        proptest::prop_assert_eq!(wstore[&n.index], *n);
                        rstore.insert(n.index, *n);
                    }
                    if let Some(t) = v.upgraded {
                        proptest::prop_assert_eq!(&t.roots, &w.roots);
                        reader = t;
                    }
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
                    let mut scratch = rstore.clone();
                    proptest::prop_assert!(Tree::new(Flavour::Hc9).verify_hc9(&mut scratch, &bad, &key).is_err());
                    // Against the tree the reader trusts, whose roots need no second
                    // signature check, a wrong block or node is refused all the same.
                    let signature_only = flip % 4 == 2 || (flip % 4 == 1 && proof.nodes.is_empty());
                    if !signature_only {
                        proptest::prop_assert!(reader.verify_hc9(&mut scratch, &bad, &key).is_err());
                    }
                }
                proptest::prop_assert_eq!(reader.length, w.length);
            }
        }
    }
}
