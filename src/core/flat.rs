//! Flat-tree indexes: block `i` is node `2i`, a parent sits between its children.
//!
//! ```text
//!        3
//!    1       5
//!  0   2   4   6      <- leaves: blocks 0, 1, 2, 3
//! ```
//!
//! Every function takes an index below 2^63; callers bound what peers send before asking.

/// The deepest level a node may sit at: the root over 2^62 blocks, the most any feed holds.
pub const MAX_DEPTH: u32 = 62;

/// How many levels above the leaves `index` sits (the number of its trailing 1 bits).
pub fn depth(index: u64) -> u32 {
    (!index).trailing_zeros()
}

/// The position of `index` among the nodes of its level, from the left.
pub fn offset(index: u64) -> u64 {
    index >> (depth(index) + 1)
}

/// The index of the node at `depth`, `offset`.
pub fn index(depth: u32, offset: u64) -> u64 {
    ((2 * offset + 1) << depth) - 1
}

/// The node above `index`.
pub fn parent(index: u64) -> u64 {
    let d = depth(index);
    self::index(d + 1, offset(index) >> 1)
}

/// The other child of `index`'s parent.
pub fn sibling(index: u64) -> u64 {
    let d = depth(index);
    self::index(d, offset(index) ^ 1)
}

/// The left child of `index`, or `None` for a leaf.
pub fn left_child(index: u64) -> Option<u64> {
    let d = depth(index);
    (d > 0).then(|| self::index(d - 1, offset(index) << 1))
}

/// The right child of `index`, or `None` for a leaf.
pub fn right_child(index: u64) -> Option<u64> {
    let d = depth(index);
    (d > 0).then(|| self::index(d - 1, (offset(index) << 1) + 1))
}

/// The first leaf index under `index`.
pub fn left_span(index: u64) -> u64 {
    offset(index) << (depth(index) + 1)
}

/// The last leaf index under `index`.
pub fn right_span(index: u64) -> u64 {
    ((offset(index) + 1) << (depth(index) + 1)) - 2
}

/// How many blocks sit under `index`.
pub fn leaves(index: u64) -> u64 {
    1 << depth(index)
}

/// Whether the leaf or node index `x` lies under `index` (or is it).
pub fn contains(index: u64, x: u64) -> bool {
    left_span(index) <= x && x <= right_span(index)
}

/// The roots of a tree of `head / 2` blocks, left to right: the largest whole subtrees that
/// cover it, each the greatest power of two of what is left.
pub fn full_roots(head: u64) -> Vec<u64> {
    let mut roots = Vec::new();
    let mut leaves = head / 2;
    let mut offset = 0u64;
    while leaves > 0 {
        let run = 1u64 << (63 - leaves.leading_zeros());
        roots.push(offset + run - 1);
        offset += 2 * run;
        leaves -= run;
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_javascript_flat_tree() {
        assert_eq!(full_roots(26), [7, 19, 24]);
        assert_eq!(full_roots(2 * 32769), [32767, 65536]);
        assert!(full_roots(0).is_empty());
        assert_eq!(parent(0), 1);
        assert_eq!(parent(2), 1);
        assert_eq!(parent(1), 3);
        assert_eq!(parent(5), 3);
        assert_eq!(sibling(1), 5);
        assert_eq!(sibling(24), 26);
        assert_eq!(depth(7), 3);
        assert_eq!(left_span(7), 0);
        assert_eq!(right_span(7), 14);
        assert_eq!(left_span(19), 16);
        assert_eq!(right_span(19), 22);
        assert_eq!(left_child(3), Some(1));
        assert_eq!(right_child(3), Some(5));
        assert_eq!(left_child(4), None);
        assert!(contains(7, 14) && !contains(7, 16));
    }

    #[test]
    fn the_deepest_root_fits() {
        let roots = full_roots(2 * (1u64 << MAX_DEPTH));
        assert_eq!(roots, [(1u64 << MAX_DEPTH) - 1]);
        assert_eq!(depth(roots[0]), MAX_DEPTH);
        assert_eq!(leaves(roots[0]), 1 << MAX_DEPTH);
    }
}
