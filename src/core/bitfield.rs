//! Which blocks of a feed are held: one bit a block, least significant bit first, in pages
//! of [`PAGE_BITS`].
//!
//! Pages that are all set are kept as runs and pages that are all clear are not kept at
//! all, so memory follows how scattered the held blocks are, not how many there are: a
//! writer's or a fully downloaded feed's bitfield is one run whatever its length.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Bytes in a page, as laid out in the bitfield file (page `p` at byte `p * PAGE_BYTES`).
pub const PAGE_BYTES: usize = 4096;
/// Blocks a page covers.
pub const PAGE_BITS: u64 = PAGE_BYTES as u64 * 8;

type Page = Box<[u8; PAGE_BYTES]>;

/// The held blocks of one feed.
#[derive(Debug, Default, Clone)]
pub struct Bitfield {
    /// Runs of full pages: first page to one past the last.
    full: BTreeMap<u64, u64>,
    /// Pages with some bits set and some clear, with how many are set.
    /// Looked up for every block, so hashed fast (with a per-process seed).
    partial: HashMap<u64, (Page, u32), crate::FastHash>,
    /// Pages changed since [`Bitfield::take_dirty`].
    dirty: BTreeSet<u64>,
}

impl Bitfield {
    /// Whether block `i` is held.
    pub fn get(&self, i: u64) -> bool {
        let page = i / PAGE_BITS;
        if let Some((p, _)) = self.partial.get(&page) {
            let bit = (i % PAGE_BITS) as usize;
            return p[bit / 8] & (1 << (bit % 8)) != 0;
        }
        self.page_full(page)
    }

    fn page_full(&self, page: u64) -> bool {
        self.full
            .range(..=page)
            .next_back()
            .is_some_and(|(_, &end)| page < end)
    }

    /// Marks block `i` held or not.
    pub fn set(&mut self, i: u64, value: bool) {
        self.set_bits(i, i + 1, value);
    }

    /// Marks blocks `start..end` held.
    pub fn set_range(&mut self, start: u64, end: u64) {
        self.set_bits(start, end, true);
    }

    /// Clears every bit from block `from` on (bits past a committed length are not held).
    pub fn clear_from(&mut self, from: u64) {
        let first = from / PAGE_BITS;
        let mut pages: Vec<u64> = self
            .partial
            .keys()
            .copied()
            .filter(|&p| p >= first)
            .collect();
        for (&s, &e) in &self.full {
            if e > first {
                // A run is at most as long as a feed; only clearing a huge, never committed
                // tail walks it.
                pages.extend(s.max(first)..e);
            }
        }
        for page in pages {
            let start = (page * PAGE_BITS).max(from);
            self.set_bits(start, (page + 1) * PAGE_BITS, false);
        }
    }

    /// Sets or clears `start..end`, a page at a time.
    fn set_bits(&mut self, start: u64, end: u64, value: bool) {
        let mut i = start;
        while i < end {
            let page = i / PAGE_BITS;
            let page_start = page * PAGE_BITS;
            let stop = end.min(page_start + PAGE_BITS);
            let whole = i == page_start && stop == page_start + PAGE_BITS;
            let already = if value {
                self.page_full(page)
            } else {
                !self.page_full(page) && !self.partial.contains_key(&page)
            };
            if !already {
                self.dirty.insert(page);
                if whole {
                    self.partial.remove(&page);
                    if value {
                        self.add_full(page);
                    } else {
                        self.remove_full(page);
                    }
                } else {
                    let (mut bytes, mut ones) = self.take_page(page);
                    for bit in (i - page_start) as usize..(stop - page_start) as usize {
                        let mask = 1 << (bit % 8);
                        let was = bytes[bit / 8] & mask != 0;
                        if value && !was {
                            bytes[bit / 8] |= mask;
                            ones += 1;
                        } else if !value && was {
                            bytes[bit / 8] &= !mask;
                            ones -= 1;
                        }
                    }
                    self.put_page(page, bytes, ones);
                }
            }
            i = stop;
        }
    }

    /// The first block at or after `from` that is not held.
    pub fn first_unset(&self, from: u64) -> u64 {
        let mut i = from;
        loop {
            let page = i / PAGE_BITS;
            if let Some((_, &end)) = self.full.range(..=page).next_back().filter(|r| page < *r.1) {
                i = end * PAGE_BITS;
                continue;
            }
            let Some((p, _)) = self.partial.get(&page) else {
                return i;
            };
            let mut bit = (i % PAGE_BITS) as usize;
            while bit < PAGE_BYTES * 8 {
                let byte = p[bit / 8];
                if byte == 0xff && bit.is_multiple_of(8) {
                    bit += 8;
                    continue;
                }
                if byte & (1 << (bit % 8)) == 0 {
                    return page * PAGE_BITS + bit as u64;
                }
                bit += 1;
            }
            i = (page + 1) * PAGE_BITS;
        }
    }

    /// The last block below `end` that is held.
    pub fn last_set_below(&self, end: u64) -> Option<u64> {
        let mut end = end;
        while end > 0 {
            let page = (end - 1) / PAGE_BITS;
            if self.page_full(page) {
                return Some(end - 1);
            }
            if let Some((p, _)) = self.partial.get(&page) {
                let from = (end - 1 - page * PAGE_BITS) as usize;
                if let Some(bit) = (0..=from).rev().find(|&b| p[b / 8] & (1 << (b % 8)) != 0) {
                    return Some(page * PAGE_BITS + bit as u64);
                }
            }
            // The next page down that holds anything.
            let below_partial = self.partial.keys().copied().filter(|&k| k < page).max();
            let below_full = self.full.range(..page).next_back().map(|(_, &e)| e - 1);
            end = match below_partial.max(below_full) {
                Some(k) => (k + 1) * PAGE_BITS,
                None => return None,
            };
        }
        None
    }

    /// How many blocks below `end` are held.
    pub fn count_below(&self, end: u64) -> u64 {
        let mut n = 0;
        for (&s, &e) in &self.full {
            let (s, e) = (s * PAGE_BITS, (e * PAGE_BITS).min(end));
            n += e.saturating_sub(s);
        }
        for (&page, (p, ones)) in &self.partial {
            let start = page * PAGE_BITS;
            if start >= end {
                continue;
            }
            if end - start >= PAGE_BITS {
                n += u64::from(*ones);
                continue;
            }
            let bits = (end - start) as usize;
            let whole: u32 = p[..bits / 8].iter().map(|b| b.count_ones()).sum();
            let rest = if bits.is_multiple_of(8) {
                0
            } else {
                (p[bits / 8] & ((1u8 << (bits % 8)) - 1)).count_ones()
            };
            n += u64::from(whole + rest);
        }
        n
    }

    /// Loads page `page` from its bytes in the file.
    pub fn load(&mut self, page: u64, bytes: &[u8]) {
        let mut p: Page = Box::new([0; PAGE_BYTES]);
        p[..bytes.len().min(PAGE_BYTES)].copy_from_slice(&bytes[..bytes.len().min(PAGE_BYTES)]);
        let ones = p.iter().map(|b| b.count_ones()).sum();
        self.put_page(page, p, ones);
        self.dirty.remove(&page);
    }

    /// The pages changed since the last call, with their bytes, in page order.
    pub fn take_dirty(&mut self) -> Vec<(u64, Page)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty.into_iter().map(|p| (p, self.page_bytes(p))).collect()
    }

    /// The pages changed since the last [`Bitfield::take_dirty`], with their bytes, in page
    /// order; they stay marked changed.
    pub fn dirty_pages(&self) -> Vec<(u64, Page)> {
        self.dirty
            .iter()
            .map(|&p| (p, self.page_bytes(p)))
            .collect()
    }

    /// Whether there are changes not yet taken.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    fn page_bytes(&self, page: u64) -> Page {
        if let Some((p, _)) = self.partial.get(&page) {
            return p.clone();
        }
        Box::new([if self.page_full(page) { 0xff } else { 0 }; PAGE_BYTES])
    }

    fn take_page(&mut self, page: u64) -> (Page, u32) {
        if let Some(p) = self.partial.remove(&page) {
            return p;
        }
        if self.page_full(page) {
            self.remove_full(page);
            return (Box::new([0xff; PAGE_BYTES]), PAGE_BITS as u32);
        }
        (Box::new([0; PAGE_BYTES]), 0)
    }

    fn put_page(&mut self, page: u64, bytes: Page, ones: u32) {
        self.dirty.insert(page);
        self.partial.remove(&page);
        if u64::from(ones) == PAGE_BITS {
            self.add_full(page);
        } else {
            if self.page_full(page) {
                self.remove_full(page);
            }
            if ones > 0 {
                self.partial.insert(page, (bytes, ones));
            }
        }
    }

    fn add_full(&mut self, page: u64) {
        if self.page_full(page) {
            return;
        }
        let (mut start, mut end) = (page, page + 1);
        if let Some((&s, &e)) = self.full.range(..page).next_back() {
            if e == page {
                start = s;
                self.full.remove(&s);
            }
        }
        if let Some(e) = self.full.remove(&(page + 1)) {
            end = e;
        }
        self.full.insert(start, end);
    }

    fn remove_full(&mut self, page: u64) {
        let Some((&s, &e)) = self.full.range(..=page).next_back() else {
            return;
        };
        if page >= e {
            return;
        }
        self.full.remove(&s);
        if s < page {
            self.full.insert(s, page);
        }
        if page + 1 < e {
            self.full.insert(page + 1, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn agrees_with_a_plain_set(
            ops in proptest::collection::vec((0u8..4, 0u64..4 * PAGE_BITS, 0u64..2 * PAGE_BITS), 0..40)
        ) {
            let mut bits = Bitfield::default();
            let mut model = vec![false; 7 * PAGE_BITS as usize];
            for (op, at, len) in ops {
                let (a, e) = (at as usize, (at + len) as usize);
                match op {
                    0 => { bits.set(at, true); model[a] = true; }
                    1 => { bits.set(at, false); model[a] = false; }
                    2 => { bits.set_range(at, at + len); model[a..e].fill(true); }
                    _ => { bits.clear_from(at); model[a..].fill(false); }
                }
                for probe in [0, at.saturating_sub(1), at, at + len, PAGE_BITS - 1, PAGE_BITS, 3 * PAGE_BITS + 5] {
                    proptest::prop_assert_eq!(bits.get(probe), model[probe as usize]);
                }
                let first = model.iter().position(|&b| !b).unwrap() as u64;
                proptest::prop_assert_eq!(bits.first_unset(0), first);
                let below = at + len;
                let last = model[..below as usize].iter().rposition(|&b| b).map(|i| i as u64);
                proptest::prop_assert_eq!(bits.last_set_below(below), last);
                let count = model[..below as usize].iter().filter(|&&b| b).count() as u64;
                proptest::prop_assert_eq!(bits.count_below(below), count);
            }
            // What goes to disk reads back the same.
            let mut again = Bitfield::default();
            for (page, bytes) in bits.clone().take_dirty() {
                again.load(page, &bytes[..]);
            }
            for (i, &held) in model.iter().enumerate() {
                proptest::prop_assert_eq!(again.get(i as u64), held);
            }
        }
    }

    #[test]
    fn a_long_run_costs_one_entry() {
        let mut bits = Bitfield::default();
        bits.set_range(0, 10_000 * PAGE_BITS);
        assert_eq!(bits.full.len(), 1);
        assert!(bits.partial.is_empty());
        assert_eq!(bits.first_unset(0), 10_000 * PAGE_BITS);
    }
}
