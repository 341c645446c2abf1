//! What a peer says it holds: the spans of its `Range` and `Bitfield` messages.

use std::collections::BTreeMap;

use super::shape::MAX_LENGTH;

/// Separate spans of blocks a peer says it holds that we keep track of, at most; a span
/// that does not touch a known one is forgotten beyond it (its blocks are not asked for).
pub const MAX_REMOTE_SPANS: usize = 4096;

/// The runs of set bits in `words` (32 blocks a word, least significant bit first), as
/// half-open block spans counted from `start`; at most about [`MAX_REMOTE_SPANS`] of them.
pub(super) fn bit_runs(start: u64, words: &[u32]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (w, &word) in words.iter().enumerate() {
        // No more spans than can be kept: a hostile bitfield costs at most this much work.
        if word == 0 || runs.len() > MAX_REMOTE_SPANS {
            continue;
        }
        let first = start.saturating_add(w as u64 * 32);
        if word == u32::MAX && first.saturating_add(32) < MAX_LENGTH {
            match runs.last_mut() {
                Some((_, end)) if *end == first => *end = first + 32,
                _ => runs.push((first, first + 32)),
            }
            continue;
        }
        for bit in 0..32u64 {
            if word & (1 << bit) == 0 {
                continue;
            }
            let Some(i) = start
                .checked_add(w as u64 * 32 + bit)
                .filter(|&i| i < MAX_LENGTH)
            else {
                return runs;
            };
            match runs.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => runs.push((i, i + 1)),
            }
        }
    }
    runs
}

/// The blocks a peer said it holds (its `Range` and `Bitfield` messages), as separate
/// half-open spans.
#[derive(Debug, Default)]
pub(super) struct RemoteHave {
    /// Whether the peer sent any Range at all.
    pub(super) seen: bool,
    spans: BTreeMap<u64, u64>,
}

impl RemoteHave {
    pub(super) fn add(&mut self, start: u64, end: u64) {
        self.seen = true;
        if start >= end {
            return;
        }
        // Spans are disjoint and never adjacent, so their ends grow with their starts.
        let touching: Vec<(u64, u64)> = self
            .spans
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        if touching.is_empty() && self.spans.len() >= MAX_REMOTE_SPANS {
            return;
        }
        let (mut lo, mut hi) = (start, end);
        for (s, e) in touching {
            self.spans.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.spans.insert(lo, hi);
    }

    pub(super) fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let cut: Vec<(u64, u64)> = self
            .spans
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in cut {
            self.spans.remove(&s);
            if s < start {
                self.spans.insert(s, start);
            }
            if e > end {
                self.spans.insert(end, e);
            }
        }
    }

    pub(super) fn contains(&self, index: u64) -> bool {
        self.spans
            .range(..=index)
            .next_back()
            .is_some_and(|(_, &e)| index < e)
    }

    /// The first held block at or after `index`.
    pub(super) fn next_from(&self, index: u64) -> Option<u64> {
        if self.contains(index) {
            return Some(index);
        }
        self.spans.range(index..).next().map(|(&s, _)| s)
    }

    /// One past the last block the peer holds.
    pub(super) fn end(&self) -> u64 {
        self.spans.values().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn bitfield_words_become_runs_of_blocks() {
        // Blocks 0-2 and 31-33, then 70.
        let words = [0b111 | (1 << 31), 0b11, 1 << 6];
        assert_eq!(bit_runs(100, &words), [(100, 103), (131, 134), (170, 171)]);
        assert_eq!(bit_runs(0, &[u32::MAX, u32::MAX, 1]), [(0, 65)]);
        assert!(bit_runs(u64::MAX - 3, &[u32::MAX])
            .iter()
            .all(|&(_, e)| e <= MAX_LENGTH));
    }

    proptest::proptest! {
        #[test]
        fn remote_spans_agree_with_a_plain_set(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u64..64, 0u64..16), 0..40)
        ) {
            let mut have = RemoteHave::default();
            let mut model = BTreeSet::new();
            for (drop, start, length) in ops {
                if drop {
                    have.remove(start, start + length);
                    for i in start..start + length {
                        model.remove(&i);
                    }
                } else {
                    have.add(start, start + length);
                    model.extend(start..start + length);
                }
                for i in 0..80 {
                    proptest::prop_assert_eq!(have.contains(i), model.contains(&i), "block {}", i);
                    proptest::prop_assert_eq!(
                        have.next_from(i),
                        model.range(i..).next().copied(),
                        "next from {}", i
                    );
                }
                proptest::prop_assert_eq!(have.end(), model.last().map_or(0, |l| l + 1));
                // Disjoint and never adjacent.
                let spans: Vec<(u64, u64)> = have.spans.iter().map(|(&s, &e)| (s, e)).collect();
                for w in spans.windows(2) {
                    proptest::prop_assert!(w[0].1 < w[1].0, "{:?}", spans);
                }
            }
        }
    }
}
