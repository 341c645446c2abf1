//! Hashes and signatures of a hypercore tree, in the flavour of hypercore 10 or 9.
//!
//! Both flavours hash with unkeyed BLAKE2b-256 and the same prefixes (0 leaf, 1 parent,
//! 2 tree); hypercore 10 writes the numbers in them little-endian, hypercore 9 big-endian.
//! They sign different bytes: see [`Flavour::signable`].

use std::sync::LazyLock;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

#[cfg(target_arch = "x86_64")]
mod blake2b8;

/// A 32-byte BLAKE2b-256 digest.
pub type Hash = [u8; 32];

/// Which generation of hypercore a tree belongs to: its hashes and what its writer signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// JS hypercore 10 in its default ("compat") mode: little-endian numbers; the signature
    /// covers the tree namespace, the tree hash, the length and the fork (80 bytes).
    Hc10,
    /// JS hypercore 9: big-endian numbers; the signature covers the tree hash and the length
    /// (40 bytes), or the bare tree hash from writers of hypercore 8 and older.
    Hc9,
}

/// One node of the tree: a block's leaf or a parent over two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Flat-tree index.
    pub index: u64,
    /// Bytes of block data under the node.
    pub size: u64,
    /// The node's hash.
    pub hash: Hash,
}

fn blake2b(parts: &[&[u8]]) -> Hash {
    let mut h = hasher();
    for p in parts {
        h.update(p);
    }
    digest(&h)
}

/// BLAKE2b-256, from the SIMD implementation that picks AVX2 at run time: the leaf hash of
/// every block received is on the replication path.
fn params() -> blake2b_simd::Params {
    let mut p = blake2b_simd::Params::new();
    p.hash_length(32);
    p
}

fn hasher() -> blake2b_simd::State {
    params().to_state()
}

fn digest(h: &blake2b_simd::State) -> Hash {
    hash32(&h.finalize())
}

fn hash32(h: &blake2b_simd::Hash) -> Hash {
    h.as_bytes().try_into().expect("a 32-byte BLAKE2b digest")
}

/// Bytes a leaf's hash covers before the block: its type (0) and the block's size.
const LEAF_PREFIX: usize = 1 + 8;

/// hypercore 10's tree namespace: BLAKE2b-256 of BLAKE2b-256("hypercore") and a zero byte.
pub static NS_TREE: LazyLock<Hash> = LazyLock::new(|| {
    let base = blake2b(&[b"hypercore"]);
    blake2b(&[&base, &[0]])
});

impl Flavour {
    fn number(self, n: u64) -> [u8; 8] {
        match self {
            Flavour::Hc10 => n.to_le_bytes(),
            Flavour::Hc9 => n.to_be_bytes(),
        }
    }

    /// What a leaf's hash covers before the block's bytes: the leaf type and the size.
    fn leaf_prefix(self, data: &[u8]) -> [u8; LEAF_PREFIX] {
        let mut prefix = [0; LEAF_PREFIX];
        prefix[1..].copy_from_slice(&self.number(data.len() as u64));
        prefix
    }

    /// The leaf of block `index` holding `data`.
    pub fn leaf(self, index: u64, data: &[u8]) -> Node {
        Node {
            index: 2 * index,
            size: data.len() as u64,
            hash: blake2b(&[&self.leaf_prefix(data), data]),
        }
    }

    /// [`Flavour::leaf`], or the leaf of `data` with `hash` when it was computed already (by
    /// [`Flavour::leaf_hashes`], from these very bytes: a debug build checks it).
    pub fn leaf_with(self, index: u64, data: &[u8], hash: Option<Hash>) -> Node {
        match hash {
            Some(hash) => {
                debug_assert_eq!(hash, self.leaf(index, data).hash);
                Node {
                    index: 2 * index,
                    size: data.len() as u64,
                    hash,
                }
            }
            None => self.leaf(index, data),
        }
    }

    /// The leaf hashes of several blocks at once: the SIMD lanes hash them side by side,
    /// about twice as fast as one after another. Hash `k` is `leaf(_, blocks[k]).hash`.
    ///
    /// Small blocks are copied end to end, each after its prefix, into one buffer, so that
    /// every compression of every leaf, the first and last too, runs four lanes at a time: a
    /// 1 KiB leaf takes nine compressions, two of them one lane at a time otherwise. Runs of
    /// four to eight blocks of one size go eight lanes at a time with AVX-512, where the CPU
    /// has it ([`blake2b8`]). Larger blocks are hashed where they lie, since the copy would
    /// then cost more than it saves.
    pub fn leaf_hashes(self, blocks: &[&[u8]]) -> Vec<Hash> {
        const COPIED_UP_TO: usize = 8 * 1024;
        if blocks.iter().any(|b| b.len() > COPIED_UP_TO) {
            let mut states: Vec<blake2b_simd::State> = blocks
                .iter()
                .map(|data| {
                    let mut h = hasher();
                    h.update(&self.leaf_prefix(data));
                    h
                })
                .collect();
            blake2b_simd::many::update_many(states.iter_mut().zip(blocks.iter().copied()));
            return states.iter().map(digest).collect();
        }
        let total = blocks.iter().map(|b| LEAF_PREFIX + b.len()).sum();
        let mut bytes = Vec::with_capacity(total);
        for data in blocks {
            bytes.extend_from_slice(&self.leaf_prefix(data));
            bytes.extend_from_slice(data);
        }
        let params = params();
        let mut hashes = vec![[0u8; 32]; blocks.len()];
        // Runs of up to eight blocks of one size take AVX-512 where the CPU has it, the rest
        // `blake2b_simd`'s lanes.
        let mut jobs = Vec::new();
        let mut at = 0;
        for (run, chunk) in blocks.chunks(8).enumerate() {
            let bytes_of_run = chunk.iter().map(|b| LEAF_PREFIX + b.len()).sum::<usize>();
            let input = &bytes[at..at + bytes_of_run];
            at += bytes_of_run;
            #[cfg(target_arch = "x86_64")]
            {
                let len = LEAF_PREFIX + chunk[0].len();
                let one_size = chunk.iter().all(|b| LEAF_PREFIX + b.len() == len);
                if chunk.len() >= 4 && one_size && blake2b8::available() {
                    // SAFETY: `available` found AVX-512F.
                    let eight = unsafe { blake2b8::hash(input, len, len, chunk.len()) };
                    hashes[run * 8..run * 8 + chunk.len()].copy_from_slice(&eight[..chunk.len()]);
                    continue;
                }
            }
            let mut rest = input;
            for (i, data) in chunk.iter().enumerate() {
                let (one, after) = rest.split_at(LEAF_PREFIX + data.len());
                rest = after;
                jobs.push((
                    run * 8 + i,
                    blake2b_simd::many::HashManyJob::new(&params, one),
                ));
            }
        }
        blake2b_simd::many::hash_many(jobs.iter_mut().map(|(_, job)| job));
        for (i, job) in &jobs {
            hashes[*i] = hash32(&job.to_hash());
        }
        hashes
    }

    /// The parent at `index` over `a` and `b`, in either order; `None` if their sizes
    /// overflow (only a hostile peer sends such nodes).
    pub fn parent(self, index: u64, a: &Node, b: &Node) -> Option<Node> {
        let (left, right) = if a.index < b.index { (a, b) } else { (b, a) };
        let size = left.size.checked_add(right.size)?;
        Some(Node {
            index,
            size,
            hash: blake2b(&[&[1], &self.number(size), &left.hash, &right.hash]),
        })
    }

    /// The hash of a whole tree, from its roots in ascending order.
    pub fn tree(self, roots: &[Node]) -> Hash {
        let mut h = hasher();
        h.update(&[2]);
        for r in roots {
            h.update(&r.hash);
            h.update(&self.number(r.index));
            h.update(&self.number(r.size));
        }
        digest(&h)
    }

    /// The bytes a writer signs for a tree of `length` blocks with these roots at `fork`.
    pub fn signable(self, roots: &[Node], length: u64, fork: u64) -> Vec<u8> {
        let tree = self.tree(roots);
        match self {
            Flavour::Hc10 => [
                &NS_TREE[..],
                &tree,
                &length.to_le_bytes(),
                &fork.to_le_bytes(),
            ]
            .concat(),
            Flavour::Hc9 => [&tree[..], &length.to_be_bytes()].concat(),
        }
    }

    /// Signs the tree with the writer's key.
    pub fn sign(self, key: &SigningKey, roots: &[Node], length: u64, fork: u64) -> [u8; 64] {
        key.sign(&self.signable(roots, length, fork)).to_bytes()
    }

    /// Whether `signature` is the writer's over this tree.
    pub fn verify(
        self,
        key: &VerifyingKey,
        signature: &[u8],
        roots: &[Node],
        length: u64,
        fork: u64,
    ) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        let signable = self.signable(roots, length, fork);
        if key.verify(&signable, &signature).is_ok() {
            return true;
        }
        // hypercore 9 still accepts what writers of hypercore 8 signed: the bare tree hash.
        self == Flavour::Hc9 && key.verify(&signable[..32], &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaf hashes of blocks of `sizes` (distinct bytes each), computed together and one
    /// by one.
    fn together_and_alone(flavour: Flavour, sizes: &[usize]) -> (Vec<Hash>, Vec<Hash>) {
        let blocks: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 131 + j * 7) as u8).collect())
            .collect();
        let slices: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        let alone = blocks.iter().map(|b| flavour.leaf(0, b).hash).collect();
        (flavour.leaf_hashes(&slices), alone)
    }

    #[test]
    fn the_empty_tree_and_the_namespace_match_javascript() {
        assert!(hex::encode(Flavour::Hc10.tree(&[])).starts_with("bb30a42c"));
        assert_eq!(
            hex::encode(*NS_TREE),
            "9fac70b50ca14efc4e91c833b204e75b8b5aad8b5881bfc0adb5ef38a3275b9c"
        );
    }

    proptest::proptest! {
        /// Hashed together or one by one, every block gets the same leaf.
        #[test]
        fn leaves_hashed_together_match_leaves_hashed_alone(
            sizes in proptest::collection::vec(
                proptest::prop_oneof![0usize..3000, 8000usize..9000],
                0..12,
            ),
            hc9 in proptest::bool::ANY,
        ) {
            let flavour = if hc9 { Flavour::Hc9 } else { Flavour::Hc10 };
            let (together, alone) = together_and_alone(flavour, &sizes);
            proptest::prop_assert_eq!(together, alone);
        }

        /// Runs of blocks of one size (eight lanes at a time where the CPU has AVX-512),
        /// with now and then a block of another size breaking a run.
        #[test]
        fn runs_of_one_size_hash_as_leaves_alone(
            size in proptest::prop_oneof![0usize..300, 1000usize..1100],
            count in 0usize..30,
            other in proptest::option::of((0usize..30, 0usize..300)),
        ) {
            let mut sizes = vec![size; count];
            if let Some((at, n)) = other {
                sizes.insert(at.min(count), n);
            }
            let (together, alone) = together_and_alone(Flavour::Hc10, &sizes);
            proptest::prop_assert_eq!(together, alone);
        }
    }

    #[test]
    fn parents_refuse_sizes_that_overflow() {
        let a = Node {
            index: 0,
            size: u64::MAX,
            hash: [0; 32],
        };
        let b = Node { index: 2, ..a };
        assert!(Flavour::Hc10.parent(1, &a, &b).is_none());
    }
}
