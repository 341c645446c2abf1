//! The shape of what we ask and what we take: how many proof nodes a block request asks for,
//! and whether an answer matches its request before the proof code sees it.

use hypercore_protocol::schema::Data;

use super::machine::Inflight;

/// Largest feed length taken from a peer: tree indexes are twice a length, and the proof
/// code does not check its arithmetic.
pub(super) const MAX_LENGTH: u64 = u64::MAX / 4;

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

/// How many tree nodes to ask for with block `index` (above 0) of a replica whose tree has
/// `length` blocks, when block `index - 1` is held or its answer is applied first.
///
/// Every proof a replica takes stores its path with the sibling of each node on it, so the
/// nodes it stores come in pairs, and the whole path of a held block up to its root is
/// stored. Going up from block `index`'s leaf, the first node that is a right child (bit
/// `level` of `index` set) starts at `index`; its left sibling ends at `index` and lies on
/// the path of block `index - 1`, so it is stored, and so is the node. A root is stored too.
/// So the count is the number of trailing zero bits of `index`, or fewer below a root: half
/// the blocks need none (their leaf came with the block before), and one on average.
pub fn nodes_after(index: u64, length: u64) -> u64 {
    if index >= length {
        return 0;
    }
    let mut level = 0u32;
    while level < 63 && index >> level & 1 == 0 {
        let parent_end = (index >> (level + 1) << (level + 1)) + (2 << level);
        if parent_end > length {
            break;
        }
        level += 1;
    }
    u64::from(level)
}

/// Checks that a Data message answers what its request asked, in a shape the proof code can
/// take: that code trusts the shape of a proof and can panic on a malformed one (and a panic
/// there leaves the core's locks poisoned for good).
pub(super) fn check_answer(what: Inflight, d: &Data, our_length: u64) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn after_the_block_before_an_odd_block_needs_no_node_and_an_even_one_its_low_zeros() {
        assert_eq!(nodes_after(5, 8), 0, "leaf 5 came with block 4");
        assert_eq!(
            nodes_after(6, 8),
            1,
            "leaf 7; the node over 6..8 beside 4..6"
        );
        assert_eq!(nodes_after(4, 8), 2, "leaf 5 and the node over 6..8");
        assert_eq!(nodes_after(8, 16), 3);
        // Roots stop the count: in 7 blocks, block 6 is a root, and 4..6 is one.
        assert_eq!(nodes_after(6, 7), 0);
        assert_eq!(nodes_after(4, 6), 1);
        assert_eq!(nodes_after(4, 7), 1);
        assert_eq!(nodes_after(9, 7), 0, "past the end");
        for i in 1..64 {
            for length in i + 1..80 {
                assert!(nodes_after(i, length) <= nodes_to_ask(i, length, i));
            }
        }
    }
}
