//! What a peer offered us: each key's metadata, and whether it waits for a decision.
//!
//! A hub offers each of its peers every feed it holds: an uploader among a thousand is
//! offered ten thousand keys, and a process of a hundred such sessions keeps a million. So
//! each offered key is one entry of one table, its pending mark in the entry: every key
//! offered is looked up once, not once in each of several sets.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::wire::{FeedKey, FeedMeta, MetaRef, Span};

/// One offered key's entry.
#[derive(Debug, Clone)]
struct Offered {
    key: FeedKey,
    /// Its metadata's buffer among [`RemoteOffer::held`] ([`NO_META`]: none), and where in it.
    texts: u32,
    span: Span,
    /// Waits for a decision (manual policy).
    pending: bool,
}

/// An entry without metadata.
const NO_META: u32 = u32::MAX;

/// A buffer of metadata texts that entries point into, and how many do.
#[derive(Debug, Clone)]
struct Held {
    texts: Option<Arc<str>>,
    users: u32,
}

/// The keys a peer offered, with their metadata and pending marks.
///
/// The entries are a vector in the order first offered, found through a table of their
/// indexes. Keys are only ever added, so an index stays valid; growing moves eight-byte
/// slots instead of 48-byte entries, and the vector grows in place (a large one is
/// remapped, not copied) rather than into a fresh table the size of everything: in a
/// process of a hundred sessions offered ten thousand keys each, growing the tables (moving
/// entries, first touches of new memory) was 7% of its samples.
#[derive(Debug, Clone, Default)]
pub struct RemoteOffer {
    entries: Vec<Offered>,
    /// Each entry's index, with 32 bits of its key's hash: growing the table rehashes from
    /// these alone, without reading the entries (a miss each, scattered over megabytes).
    index: HashTable<Slot>,
    hasher: crate::FastHash,
    /// How many entries are marked pending.
    pending: usize,
    /// The metadata buffers of the manifests that offered the entries: one shared count
    /// taken per manifest, not one per key (an atomic count for each of a hub's ten thousand
    /// offers held up the table's writes around it). A buffer no entry points into any
    /// more is let go and its place reused, so at most one is kept per entry.
    held: Vec<Held>,
    /// Places in `held` let go.
    free: Vec<u32>,
    /// The place in `held` taken last.
    last_held: Option<u32>,
}

/// An entry's index and 32 bits of its key's hash.
#[derive(Debug, Clone, Copy)]
struct Slot {
    at: u32,
    hash: u32,
}

/// The table's hash of a key's 32 bits: multiplied by an odd constant, so that the low bits
/// (which place a slot) and the high ones (which the table compares first) all vary.
fn spread(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl RemoteOffer {
    fn hash32(&self, key: &FeedKey) -> u32 {
        (self.hasher.hash_one(key) >> 32) as u32
    }

    fn find(&self, key: &FeedKey) -> Option<usize> {
        let hash = self.hash32(key);
        self.index
            .find(spread(hash), |s| {
                s.hash == hash && self.entries[s.at as usize].key == *key
            })
            .map(|s| s.at as usize)
    }

    /// Records an offer of `key`, or its new metadata if it was offered before; `true` when
    /// it is new. A new key is marked as waiting for a decision at once when `pending`: the
    /// same lookup, for each of the thousands of keys a hub offers.
    pub fn offer(&mut self, key: FeedKey, meta: Option<MetaRef<'_>>, pending: bool) -> bool {
        let (texts, span) = match meta {
            Some(m) => (self.hold(m.texts), m.span),
            None => (NO_META, Span::default()),
        };
        let hash = self.hash32(&key);
        let entries = &mut self.entries;
        let found = self.index.entry(
            spread(hash),
            |s| s.hash == hash && entries[s.at as usize].key == key,
            |s| spread(s.hash),
        );
        match found {
            hashbrown::hash_table::Entry::Occupied(e) => {
                let o = &mut entries[e.get().at as usize];
                let before = std::mem::replace(&mut o.texts, texts);
                o.span = span;
                self.let_go(before);
                false
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                let at = u32::try_from(entries.len()).expect("fewer than 2^32 offered keys");
                e.insert(Slot { at, hash });
                entries.push(Offered {
                    key,
                    texts,
                    span,
                    pending,
                });
                self.pending += usize::from(pending);
                true
            }
        }
    }

    /// The place of `texts` in `held`, counted once more: the last one held if it is the
    /// same buffer (a manifest's keys come one after another), or a new place.
    fn hold(&mut self, texts: &Arc<str>) -> u32 {
        let same = self.last_held.filter(|&at| {
            let held = &self.held[at as usize].texts;
            held.as_ref().is_some_and(|t| Arc::ptr_eq(t, texts))
        });
        let at = same.unwrap_or_else(|| {
            let held = Held {
                texts: Some(Arc::clone(texts)),
                users: 0,
            };
            let at = match self.free.pop() {
                Some(at) => {
                    self.held[at as usize] = held;
                    at
                }
                None => {
                    self.held.push(held);
                    u32::try_from(self.held.len() - 1).expect("fewer than 2^32 buffers")
                }
            };
            self.last_held = Some(at);
            at
        });
        self.held[at as usize].users += 1;
        at
    }

    /// One entry less points into `held[at]`; the buffer goes with the last.
    fn let_go(&mut self, at: u32) {
        if at == NO_META {
            return;
        }
        let held = &mut self.held[at as usize];
        held.users -= 1;
        if held.users == 0 {
            held.texts = None;
            self.free.push(at);
            if self.last_held == Some(at) {
                self.last_held = None;
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
    pub fn get(&self, key: &FeedKey) -> Option<FeedMeta> {
        let o = &self.entries[self.find(key)?];
        let texts = self
            .held
            .get(o.texts as usize)
            .and_then(|h| h.texts.as_ref());
        Some(texts.map_or_else(FeedMeta::null, |t| FeedMeta::shared(t, o.span)))
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
