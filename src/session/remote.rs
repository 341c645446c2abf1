//! What a peer offered us: each key's metadata, and whether it waits for a decision.
//!
//! A hub offers each of its peers every feed it holds: an uploader among a thousand is
//! offered ten thousand keys, and a process of a hundred such sessions keeps a million. So
//! each offered key is one entry of one table, its pending mark in the entry: every key
//! offered is looked up once, not once in each of several sets.

use std::collections::hash_map::{Entry, HashMap};

use crate::wire::{FeedKey, FeedMeta};

/// One offered key's entry.
#[derive(Debug, Clone)]
struct Offered {
    meta: FeedMeta,
    /// Waits for a decision (manual policy).
    pending: bool,
}

/// The keys a peer offered, with their metadata and pending marks.
#[derive(Debug, Clone, Default)]
pub struct RemoteOffer {
    offered: HashMap<FeedKey, Offered, crate::FastHash>,
    /// How many entries are marked pending.
    pending: usize,
}

impl RemoteOffer {
    /// Records an offer of `key`, or its new metadata if it was offered before; `true` when
    /// it is new.
    pub fn offer(&mut self, key: FeedKey, meta: FeedMeta) -> bool {
        match self.offered.entry(key) {
            Entry::Occupied(mut e) => {
                e.get_mut().meta = meta;
                false
            }
            Entry::Vacant(e) => {
                e.insert(Offered {
                    meta,
                    pending: false,
                });
                true
            }
        }
    }

    /// Marks an offered key as waiting for a decision; `false` if it is not offered or
    /// waits already.
    pub fn mark_pending(&mut self, key: &FeedKey) -> bool {
        match self.offered.get_mut(key) {
            Some(o) if !o.pending => {
                o.pending = true;
                self.pending += 1;
                true
            }
            _ => false,
        }
    }

    /// The key no longer waits for a decision.
    pub fn unmark_pending(&mut self, key: &FeedKey) {
        if let Some(o) = self.offered.get_mut(key) {
            if o.pending {
                o.pending = false;
                self.pending -= 1;
            }
        }
    }

    /// How many keys were offered.
    pub fn len(&self) -> usize {
        self.offered.len()
    }

    /// Whether nothing was offered.
    pub fn is_empty(&self) -> bool {
        self.offered.is_empty()
    }

    /// Whether `key` was offered.
    pub fn contains_key(&self, key: &FeedKey) -> bool {
        self.offered.contains_key(key)
    }

    /// The metadata offered with `key`.
    pub fn get(&self, key: &FeedKey) -> Option<&FeedMeta> {
        self.offered.get(key).map(|o| &o.meta)
    }

    /// How many offered keys wait for a decision.
    pub fn pending_len(&self) -> usize {
        self.pending
    }

    /// The keys that wait for a decision, sorted.
    pub fn pending_keys(&self) -> Vec<FeedKey> {
        let mut keys: Vec<FeedKey> = self
            .offered
            .iter()
            .filter(|(_, o)| o.pending)
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys
    }
}
