//! What a peer offered us: each key's metadata, and whether it waits for a decision.
//!
//! A hub offers each of its peers every feed it holds: an uploader among a thousand is
//! offered ten thousand keys, and a process of a hundred such sessions keeps a million. So
//! each offered key is one entry of one table, its pending mark in the entry: every key
//! offered is looked up once, not once in each of several sets.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::wire::{FeedKey, FeedMeta};

/// One offered key's entry.
#[derive(Debug, Clone)]
struct Offered {
    key: FeedKey,
    meta: FeedMeta,
    /// Waits for a decision (manual policy).
    pending: bool,
}

/// The keys a peer offered, with their metadata and pending marks.
///
/// The entries are a vector in the order first offered, found through a table of their
/// indexes. Keys are only ever added, so an index stays valid; growing moves four-byte
/// indexes instead of 48-byte entries, and the vector grows in place (a large one is
/// remapped, not copied) rather than into a fresh table the size of everything: in a
/// process of a hundred sessions offered ten thousand keys each, growing the tables (moving
/// entries, first touches of new memory) was 7% of its samples.
#[derive(Debug, Clone, Default)]
pub struct RemoteOffer {
    entries: Vec<Offered>,
    index: HashTable<u32>,
    hasher: crate::FastHash,
    /// How many entries are marked pending.
    pending: usize,
}

impl RemoteOffer {
    fn find(&self, key: &FeedKey) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&i| self.entries[i as usize].key == *key)
            .map(|&i| i as usize)
    }

    /// Records an offer of `key`, or its new metadata if it was offered before; `true` when
    /// it is new. A new key is marked as waiting for a decision at once when `pending`: the
    /// same lookup, for each of the thousands of keys a hub offers.
    pub fn offer(&mut self, key: FeedKey, meta: FeedMeta, pending: bool) -> bool {
        let hash = self.hasher.hash_one(key);
        let (entries, hasher) = (&mut self.entries, &self.hasher);
        let found = self.index.entry(
            hash,
            |&i| entries[i as usize].key == key,
            |&i| hasher.hash_one(entries[i as usize].key),
        );
        match found {
            hashbrown::hash_table::Entry::Occupied(e) => {
                entries[*e.get() as usize].meta = meta;
                false
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                let at = u32::try_from(entries.len()).expect("fewer than 2^32 offered keys");
                e.insert(at);
                entries.push(Offered { key, meta, pending });
                self.pending += usize::from(pending);
                true
            }
        }
    }

    /// The key no longer waits for a decision.
    pub fn unmark_pending(&mut self, key: &FeedKey) {
        if let Some(o) = self.find(key).map(|i| &mut self.entries[i]) {
            if o.pending {
                o.pending = false;
                self.pending -= 1;
            }
        }
    }

    /// How many keys were offered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was offered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` was offered.
    pub fn contains_key(&self, key: &FeedKey) -> bool {
        self.find(key).is_some()
    }

    /// The metadata offered with `key`.
    pub fn get(&self, key: &FeedKey) -> Option<&FeedMeta> {
        self.find(key).map(|i| &self.entries[i].meta)
    }

    /// How many offered keys wait for a decision.
    pub fn pending_len(&self) -> usize {
        self.pending
    }

    /// The keys that wait for a decision, sorted.
    pub fn pending_keys(&self) -> Vec<FeedKey> {
        let mut keys: Vec<FeedKey> = self
            .entries
            .iter()
            .filter(|o| o.pending)
            .map(|o| o.key)
            .collect();
        keys.sort_unstable();
        keys
    }
}
