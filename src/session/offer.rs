//! Sets of our own feeds, one per session, kept as a bit per feed.
//!
//! A hub with accept-all offers every feed it holds to every peer: a thousand peers and ten
//! thousand feeds are ten million (feed, peer) offers. Held as a set of 32-byte keys per
//! session, that was about 47 bytes an offer (470 MB); held as bits over numbers that every
//! session of the process shares, it is one bit (1.25 KB a peer).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::wire::FeedKey;

/// Numbers for our feeds' keys, in the order they were first offered; shared by the
/// sessions of one process so that each can keep its sets as bits.
#[derive(Debug, Default)]
pub struct FeedNumbers(RwLock<Numbers>);

#[derive(Debug, Default)]
struct Numbers {
    by_key: HashMap<FeedKey, u32>,
    keys: Vec<FeedKey>,
}

impl Numbers {
    /// The number of `key`, the next one if it has none yet.
    fn give(&mut self, key: FeedKey) -> usize {
        let next = self.keys.len() as u32;
        let n = *self.by_key.entry(key).or_insert(next);
        if n == next {
            self.keys.push(key);
        }
        n as usize
    }
}

impl FeedNumbers {
    /// A new, empty numbering, to share.
    pub fn new() -> Arc<FeedNumbers> {
        Arc::new(FeedNumbers::default())
    }

    /// The number of `key`, given now if it has none yet.
    fn number(&self, key: FeedKey) -> usize {
        if let Some(n) = self.get(&key) {
            return n;
        }
        self.0.write().unwrap().give(key)
    }

    /// The numbers of `keys`, given now to those that have none, under one lock: a list
    /// of new feeds told to a thousand peers is numbered once, not once for each of them.
    pub fn numbers(&self, keys: impl IntoIterator<Item = FeedKey>) -> Vec<usize> {
        let mut numbers = self.0.write().unwrap();
        keys.into_iter().map(|key| numbers.give(key)).collect()
    }

    /// The number of `key`, if it has one.
    fn get(&self, key: &FeedKey) -> Option<usize> {
        self.0.read().unwrap().by_key.get(key).map(|n| *n as usize)
    }

    /// The keys of these numbers, in the same order.
    fn keys(&self, numbers: impl Iterator<Item = usize>) -> Vec<FeedKey> {
        let inner = self.0.read().unwrap();
        numbers.map(|n| inner.keys[n]).collect()
    }
}

/// A set of our feeds' keys, as a bit per number of a shared [`FeedNumbers`].
#[derive(Debug, Clone)]
pub struct KeySet {
    numbers: Arc<FeedNumbers>,
    bits: Vec<u64>,
    len: usize,
}

impl KeySet {
    /// An empty set over `numbers`.
    pub fn new(numbers: Arc<FeedNumbers>) -> KeySet {
        KeySet {
            numbers,
            bits: Vec::new(),
            len: 0,
        }
    }

    /// Adds `key`; `true` if it was not in the set.
    pub fn insert(&mut self, key: FeedKey) -> bool {
        let n = self.numbers.number(key);
        self.insert_number(n)
    }

    /// Adds the key numbered `n` by `numbers` ([`FeedNumbers::numbers`]), without a look
    /// at the numbering; `true` if it was not in the set. `None` when the set is kept over
    /// another numbering.
    pub fn insert_numbered(&mut self, numbers: &Arc<FeedNumbers>, n: usize) -> Option<bool> {
        Arc::ptr_eq(&self.numbers, numbers).then(|| self.insert_number(n))
    }

    fn insert_number(&mut self, n: usize) -> bool {
        let (word, bit) = (n / 64, 1u64 << (n % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit != 0 {
            return false;
        }
        self.bits[word] |= bit;
        self.len += 1;
        true
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &FeedKey) -> bool {
        self.numbers.get(key).is_some_and(|n| {
            self.bits
                .get(n / 64)
                .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
        })
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Vec<FeedKey> {
        let numbers = self.bits.iter().enumerate().flat_map(|(i, w)| {
            let w = *w;
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i * 64 + b)
        });
        let mut keys = self.numbers.keys(numbers);
        keys.sort_unstable();
        keys
    }

    /// Moves every key of `other` into this set, leaving `other` empty.
    pub fn take_from(&mut self, other: &mut KeySet) {
        if Arc::ptr_eq(&self.numbers, &other.numbers) {
            if self.bits.len() < other.bits.len() {
                self.bits.resize(other.bits.len(), 0);
            }
            for (mine, theirs) in self.bits.iter_mut().zip(&other.bits) {
                *mine |= theirs;
            }
            self.len = self.bits.iter().map(|w| w.count_ones() as usize).sum();
        } else {
            for key in other.keys() {
                self.insert(key);
            }
        }
        other.bits = Vec::new();
        other.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> FeedKey {
        FeedKey([n; 32])
    }

    #[test]
    fn sets_over_one_numbering_hold_their_own_keys() {
        let numbers = FeedNumbers::new();
        let mut a = KeySet::new(numbers.clone());
        let mut b = KeySet::new(numbers);
        assert!(a.insert(key(3)));
        assert!(!a.insert(key(3)));
        for n in 0..100 {
            b.insert(key(n));
        }
        assert!(a.contains(&key(3)) && !a.contains(&key(4)) && !a.contains(&key(200)));
        assert_eq!((a.len(), b.len()), (1, 100));
        assert_eq!(b.keys(), (0..100).map(key).collect::<Vec<_>>());
        a.take_from(&mut b);
        assert_eq!((a.len(), b.len()), (100, 0));
        assert!(a.contains(&key(99)) && !b.contains(&key(99)));
    }

    #[test]
    fn a_list_numbered_once_fills_sets_as_keys_do() {
        let numbers = FeedNumbers::new();
        KeySet::new(numbers.clone()).insert(key(5));
        let mut by_key = KeySet::new(numbers.clone());
        let list = [key(7), key(5), key(9), key(7)];
        let given = numbers.numbers(list);
        assert_eq!(given, vec![1, 0, 2, 1], "known keys keep their numbers");
        let mut by_number = KeySet::new(numbers.clone());
        for (k, n) in list.iter().zip(&given) {
            let fresh = by_number.insert_numbered(&numbers, *n);
            assert_eq!(fresh, Some(by_key.insert(*k)));
        }
        assert_eq!(by_number.keys(), by_key.keys());
        assert_eq!(by_number.len(), 3);
        // Another numbering's numbers mean nothing here.
        assert_eq!(by_number.insert_numbered(&FeedNumbers::new(), 0), None);
    }
}
