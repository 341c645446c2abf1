use super::*;
use crate::wire::{encode_handshake, encode_keys, encode_manifests};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Manifest(Vec<u8>),
    Decide(u8, bool),
    Replicate(Vec<u8>),
    Request(Vec<u8>),
    LocalFeed(u8),
    Stop(u8),
    PeerClosed(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..8;
    let ks = proptest::collection::vec(0u8..8, 0..5);
    prop_oneof![
        ks.clone().prop_map(Op::Manifest),
        (k.clone(), any::<bool>()).prop_map(|(k, a)| Op::Decide(k, a)),
        ks.clone().prop_map(Op::Replicate),
        ks.prop_map(Op::Request),
        k.clone().prop_map(Op::LocalFeed),
        k.clone().prop_map(Op::Stop),
        k.prop_map(Op::PeerClosed),
    ]
}

fn key(n: u8) -> FeedKey {
    FeedKey([n; 32])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_declined_key_is_requested_and_nothing_is_requested_or_activated_twice(
        manual in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let policy = if manual { Policy::Manual } else { Policy::AcceptAll };
        let mut s = Session::new(policy, BTreeSet::new(), &Limits::DEFAULT);
        s.on_open();
        s.on_extension(wire::EXT_HANDSHAKE, &encode_handshake(&Handshake::ours()));
        let mut declined: BTreeSet<FeedKey> = BTreeSet::new();
        let mut requested: BTreeSet<FeedKey> = BTreeSet::new();
        let mut active: BTreeSet<FeedKey> = BTreeSet::new();
        for op in ops {
            let actions = match op {
                Op::Manifest(ks) => {
                    let keys: Vec<FeedKey> = ks.into_iter().map(key).collect();
                    s.on_extension(wire::EXT_MANIFEST, &encode_manifests(&keys, &BTreeMap::new())[0])
                }
                Op::Decide(k, approve) => {
                    let out = s.on_decision(key(k), approve);
                    if out.iter().any(|a| matches!(a, Action::Decided { .. })) {
                        if approve { declined.remove(&key(k)); } else if !requested.contains(&key(k)) { declined.insert(key(k)); }
                    }
                    out
                }
                Op::Replicate(ks) => {
                    let keys: Vec<FeedKey> = ks.into_iter().map(key).collect();
                    s.on_extension(wire::EXT_REPLICATE_FEEDS, &encode_keys(&keys))
                }
                Op::Request(ks) => {
                    let keys: Vec<FeedKey> = ks.into_iter().map(key).collect();
                    s.on_extension(wire::EXT_REQUEST_FEEDS, &encode_keys(&keys))
                }
                Op::LocalFeed(k) => s.on_local_feed(key(k)),
                Op::Stop(k) => {
                    let out = s.on_stop(key(k));
                    if out == vec![Action::Stop(key(k))] {
                        active.remove(&key(k));
                        requested.remove(&key(k));
                    }
                    out
                }
                Op::PeerClosed(k) => {
                    s.on_feed_closed(&key(k));
                    active.remove(&key(k));
                    requested.remove(&key(k));
                    Vec::new()
                }
            };
            for a in &actions {
                match a {
                    Action::Send(Outgoing::Request(keys)) => {
                        let unique: BTreeSet<_> = keys.iter().collect();
                        prop_assert_eq!(unique.len(), keys.len(), "a key twice in one request");
                        for k in keys {
                            prop_assert!(!declined.contains(k), "declined key requested: {:?}", k);
                            prop_assert!(requested.insert(*k), "key requested twice: {:?}", k);
                        }
                    }
                    Action::Replicate(keys) => {
                        for k in keys {
                            prop_assert!(active.insert(*k), "feed activated twice: {:?}", k);
                        }
                    }
                    _ => {}
                }
            }
            // What the session exposes agrees with what it did.
            prop_assert_eq!(&s.active, &active);
        }
    }
}
