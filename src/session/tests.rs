use super::*;
use crate::wire::{encode_handshake, encode_keys, encode_manifests, OfferMeta};
use std::collections::BTreeMap;

fn key(n: u8) -> FeedKey {
    FeedKey([n; 32])
}

fn feeds(keys: &[u8]) -> BTreeSet<FeedKey> {
    keys.iter().map(|n| key(*n)).collect()
}

fn handshake() -> Vec<u8> {
    encode_handshake(&Handshake::ours())
}

fn manifest(keys: &[u8]) -> Vec<u8> {
    let keys: Vec<FeedKey> = keys.iter().map(|n| key(*n)).collect();
    encode_manifests(&keys, &BTreeMap::new()).remove(0)
}

fn list(keys: &[u8]) -> Vec<u8> {
    encode_keys(&keys.iter().map(|n| key(*n)).collect::<Vec<_>>())
}

fn ready(policy: Policy, local: &[u8]) -> Session {
    ready_within(policy, local, &Limits::DEFAULT)
}

fn ready_within(policy: Policy, local: &[u8], limits: &Limits) -> Session {
    let mut s = Session::new(policy, feeds(local), limits);
    s.on_open();
    s.on_extension(wire::EXT_HANDSHAKE, &handshake());
    s
}

fn sent(actions: &[Action]) -> Vec<Outgoing> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(o) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

fn replicated(actions: &[Action]) -> Vec<FeedKey> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Replicate(k) => k.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn warned(actions: &[Action], kind: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Warn { kind: k, .. } if k.as_str() == kind))
}

#[test]
fn open_sends_handshake_and_compatible_handshake_sends_manifest() {
    let mut s = Session::new(Policy::AcceptAll, feeds(&[1, 2]), &Limits::DEFAULT);
    assert_eq!(
        sent(&s.on_open()),
        vec![Outgoing::Handshake(Handshake::ours())]
    );
    let out = s.on_extension(wire::EXT_HANDSHAKE, &handshake());
    assert_eq!(sent(&out), vec![Outgoing::Manifest(vec![key(1), key(2)])]);
    assert!(s.is_ready());
}

#[test]
fn version_mismatch_fails_the_session() {
    let mut s = Session::new(Policy::AcceptAll, feeds(&[1]), &Limits::DEFAULT);
    let out = s.on_extension(
        wire::EXT_HANDSHAKE,
        br#"{"client":"MULTIFEED","version":"4.0.0"}"#,
    );
    assert!(
        matches!(&out[0], Action::Fail { kind: ProblemKind::Incompatible, message } if message.contains("4.0.0"))
    );
    assert!(s.is_failed());
    assert!(
        sent(&out).is_empty(),
        "nothing is offered to an incompatible peer"
    );
    assert!(s
        .on_extension(wire::EXT_MANIFEST, &manifest(&[9]))
        .is_empty());
}

#[test]
fn client_mismatch_fails_the_session() {
    let mut s = Session::new(Policy::AcceptAll, feeds(&[]), &Limits::DEFAULT);
    let out = s.on_extension(
        wire::EXT_HANDSHAKE,
        br#"{"client":"OTHER","version":"5.0.0"}"#,
    );
    assert!(matches!(
        &out[0],
        Action::Fail {
            kind: ProblemKind::Incompatible,
            ..
        }
    ));
}

#[test]
fn accept_all_requests_every_new_offer_once() {
    let mut s = ready(Policy::AcceptAll, &[]);
    let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[5, 6]));
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(5), key(6)])]);
    let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[6, 7]));
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(7)])]);
}

#[test]
fn request_for_unoffered_key_is_refused() {
    let mut s = ready(Policy::AcceptAll, &[1]);
    let out = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1, 2]));
    assert_eq!(sent(&out), vec![Outgoing::Replicate(vec![key(1)])]);
    assert_eq!(replicated(&out), vec![key(1)]);
    assert!(warned(&out, "refused_request"));
}

#[test]
fn an_observer_refuses_every_request_without_a_warning() {
    let mut s = ready(Policy::Observe, &[]);
    let out = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1, 2]));
    assert_eq!(sent(&out), vec![Outgoing::Replicate(vec![])]);
    assert!(replicated(&out).is_empty());
    assert!(!warned(&out, "refused_request"));
    assert!(out.contains(&Action::RefusedObserving(vec![key(1), key(2)])));
}

#[test]
fn unrequested_key_in_replicate_is_ignored() {
    let mut s = ready(Policy::AcceptAll, &[]);
    s.on_extension(wire::EXT_MANIFEST, &manifest(&[3]));
    let out = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[3, 4]));
    assert_eq!(replicated(&out), vec![key(3)]);
    assert!(warned(&out, "unrequested_feed"));
}

#[test]
fn active_feed_is_not_replicated_twice() {
    let mut s = ready(Policy::AcceptAll, &[1]);
    s.on_extension(wire::EXT_MANIFEST, &manifest(&[1]));
    let first = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1]));
    assert_eq!(replicated(&first), vec![key(1)]);
    let second = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[1]));
    assert!(replicated(&second).is_empty());
    let third = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1]));
    assert!(replicated(&third).is_empty());
}

#[test]
fn invalid_keys_are_dropped_with_a_warning() {
    let mut s = ready(Policy::AcceptAll, &[]);
    let body = format!(r#"{{"keys":["{}","nothex"]}}"#, key(8));
    let out = s.on_extension(wire::EXT_MANIFEST, body.as_bytes());
    assert!(warned(&out, "invalid_key"));
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(8)])]);
}

#[test]
fn malformed_json_is_a_warning_and_the_session_goes_on() {
    let mut s = ready(Policy::AcceptAll, &[]);
    let out = s.on_extension(wire::EXT_MANIFEST, b"\x00garbage");
    assert!(warned(&out, "malformed"));
    assert!(!s.is_failed());
    let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[2]));
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(2)])]);
}

#[test]
fn empty_name_means_the_previous_extension() {
    let mut s = ready(Policy::AcceptAll, &[]);
    s.on_extension(wire::EXT_MANIFEST, &manifest(&[1]));
    let out = s.on_extension("", &manifest(&[2]));
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(2)])]);
}

#[test]
fn nothing_is_processed_before_the_handshake() {
    let mut s = Session::new(Policy::AcceptAll, feeds(&[1]), &Limits::DEFAULT);
    let out = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1]));
    assert!(warned(&out, "protocol"));
    assert!(replicated(&out).is_empty());
}

#[test]
fn manual_policy_waits_for_a_decision() {
    let mut s = ready(Policy::Manual, &[]);
    let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[1, 2]));
    assert!(sent(&out).is_empty());
    assert!(out.contains(&Action::Pending(vec![key(1), key(2)])));
    let out = s.on_decision(key(1), true);
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(1)])]);
    let out = s.on_decision(key(2), false);
    assert!(sent(&out).is_empty());
    assert!(out.contains(&Action::Decided {
        key: key(2),
        approved: false,
        by: DecidedBy::Person
    }));
    // A re-offer of a declined key is not queued again and never requested.
    let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[2]));
    assert!(sent(&out).is_empty());
    assert!(!out.iter().any(|a| matches!(a, Action::Pending(_))));
    // The peer cannot push a declined key on us.
    let out = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[2]));
    assert!(replicated(&out).is_empty());
}

#[test]
fn offers_past_the_limit_are_ignored_with_a_warning() {
    let limits = Limits {
        max_remote_offer: 40,
        max_keys_per_message: 15,
        ..Limits::DEFAULT
    };
    let mut s = ready_within(Policy::Manual, &[], &limits);
    let keys: Vec<FeedKey> = (0..=limits.max_remote_offer as u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            FeedKey(k)
        })
        .collect();
    let mut warned_limit = false;
    for chunk in keys.chunks(limits.max_keys_per_message) {
        let body = encode_manifests(chunk, &BTreeMap::new()).remove(0);
        warned_limit |= warned(&s.on_extension(wire::EXT_MANIFEST, &body), "limit");
    }
    assert!(warned_limit);
    assert_eq!(s.remote_offer.len(), limits.max_remote_offer);
    // A message over the key limit is refused whole.
    let body = encode_manifests(&keys[..16], &BTreeMap::new()).remove(0);
    assert!(warned(
        &s.on_extension(wire::EXT_MANIFEST, &body),
        "oversized"
    ));
}

#[test]
fn a_connection_replicates_at_most_the_feed_limit() {
    let limits = Limits {
        max_active_feeds: 30,
        ..Limits::DEFAULT
    };
    let mut s = ready_within(Policy::AcceptAll, &[], &limits);
    let keys: Vec<FeedKey> = (0..limits.max_active_feeds as u32 + 5)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            FeedKey(k)
        })
        .collect();
    let mut actions = Vec::new();
    for body in encode_manifests(&keys, &BTreeMap::new()) {
        actions.extend(s.on_extension(wire::EXT_MANIFEST, &body));
    }
    let limit = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::Warn {
                kind: ProblemKind::Limit,
                message,
            } => Some(message.clone()),
            _ => None,
        })
    };
    let requested: usize = sent(&actions)
        .iter()
        .map(|o| match o {
            Outgoing::Request(k) => k.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(
        requested, limits.max_active_feeds,
        "no more requested than can run"
    );
    assert!(limit(&actions)
        .unwrap()
        .starts_with("5 feeds not requested"));
    let actions = s.on_extension(wire::EXT_REPLICATE_FEEDS, &encode_keys(&keys));
    assert_eq!(replicated(&actions).len(), limits.max_active_feeds);
    assert_eq!(s.active.len(), limits.max_active_feeds);

    // Served the other way: only what fits is promised in REPLICATE_FEEDS.
    let local: Vec<u8> = Vec::new();
    let mut s = ready_within(Policy::AcceptAll, &local, &limits);
    for k in &keys {
        s.on_local_feed(*k);
    }
    let actions = s.on_extension(wire::EXT_REQUEST_FEEDS, &encode_keys(&keys));
    let promised: usize = sent(&actions)
        .iter()
        .map(|o| match o {
            Outgoing::Replicate(k) => k.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(promised, limits.max_active_feeds);
    assert_eq!(replicated(&actions).len(), limits.max_active_feeds);
    assert!(limit(&actions).unwrap().starts_with("5 feeds not served"));
}

#[test]
fn batched_decisions_send_one_request() {
    let mut s = ready(Policy::Manual, &[]);
    s.on_extension(wire::EXT_MANIFEST, &manifest(&[1, 2, 3]));
    let out = s.on_decisions(vec![
        (key(1), true, DecidedBy::Rule("allow 01".into())),
        (key(2), false, DecidedBy::Person),
        (key(3), true, DecidedBy::Person),
    ]);
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(1), key(3)])]);
    assert_eq!(s.remote_offer.pending_len(), 0);
}

#[test]
fn a_stopped_feed_can_be_approved_again() {
    let mut s = ready(Policy::AcceptAll, &[]);
    s.on_extension(wire::EXT_MANIFEST, &manifest(&[1]));
    s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[1]));
    assert_eq!(s.on_stop(key(1)), vec![Action::Stop(key(1))]);
    assert!(s.active.is_empty());
    let out = s.on_decision(key(1), true);
    assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(1)])]);
    let out = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[1]));
    assert_eq!(replicated(&out), vec![key(1)]);
}

#[test]
fn new_local_feed_is_offered_once_and_not_back_to_its_source() {
    let mut s = ready(Policy::AcceptAll, &[]);
    s.on_extension(wire::EXT_MANIFEST, &manifest(&[4]));
    assert_eq!(
        sent(&s.on_local_feed(key(3))),
        vec![Outgoing::Manifest(vec![key(3)])]
    );
    assert!(s.on_local_feed(key(3)).is_empty());
    assert!(s.on_local_feed(key(4)).is_empty());
}

#[test]
fn feeds_added_before_the_handshake_go_in_the_first_manifest() {
    let mut s = Session::new(Policy::AcceptAll, feeds(&[1]), &Limits::DEFAULT);
    s.on_open();
    assert!(s.on_local_feed(key(2)).is_empty());
    let out = s.on_extension(wire::EXT_HANDSHAKE, &handshake());
    assert_eq!(sent(&out), vec![Outgoing::Manifest(vec![key(1), key(2)])]);
}

#[test]
fn cabals_peer_id_names_the_peer_and_a_bad_one_is_a_warning() {
    let mut s = Session::new(Policy::AcceptAll, feeds(&[]), &Limits::DEFAULT);
    s.on_open();
    // Cabal may send it before the multifeed handshake.
    for bad in [
        &br#"{"id":"abc"}"#[..],
        br#"{"id":7}"#,
        br#"["x"]"#,
        b"\xff",
    ] {
        let actions = s.on_extension(wire::EXT_CABAL_PEER_ID, bad);
        assert!(warned(&actions, "malformed"), "{bad:?}: {actions:?}");
    }
    assert_eq!(named_by(&mut s, 7), vec![Action::PeerNamed(key(7))]);
    // The first name stays, as in Cabal: later ones are ignored.
    assert!(named_by(&mut s, 8).is_empty());
    assert!(!s.is_failed());
}

fn named_by(s: &mut Session, n: u8) -> Vec<Action> {
    let id = key(n).to_hex();
    s.on_extension(
        wire::EXT_CABAL_PEER_ID,
        format!(r#"{{"id":"{id}"}}"#).as_bytes(),
    )
}

#[test]
fn remote_offers_count_pending_marks_once_and_only_on_offered_keys() {
    let mut r = RemoteOffer::default();
    assert!(r.offer(key(1), None, true));
    assert!(r.offer(key(2), None, true));
    assert!(r.offer(key(3), None, false));
    let named = OfferMeta::from_entries(vec![(key(1), serde_json::json!({"name": "a"}).into())]);
    assert!(
        !r.offer(key(1), named.find(&key(1)), true),
        "offered again: new metadata, still one pending mark"
    );
    assert!(
        !r.offer(key(3), None, true),
        "offered again: not newly pending"
    );
    assert_eq!(r.len(), 3);
    assert_eq!(r.get(&key(1)).unwrap().to_string(), r#"{"name":"a"}"#);
    assert_eq!(r.pending_len(), 2);
    assert_eq!(r.pending_keys(), vec![key(1), key(2)]);
    r.unmark_pending(&key(1));
    r.unmark_pending(&key(1));
    r.unmark_pending(&key(3));
    r.unmark_pending(&key(4));
    assert_eq!(r.pending_len(), 1);
    assert_eq!(r.pending_keys(), vec![key(2)]);
}

#[test]
fn remote_offers_keep_a_manifests_metadata_while_a_key_points_into_it() {
    let meta = |keys: &[u8], name: &str| {
        let entries = keys
            .iter()
            .map(|&n| {
                (
                    key(n),
                    serde_json::json!({ "name": format!("{name}{n}") }).into(),
                )
            })
            .collect();
        OfferMeta::from_entries(entries)
    };
    let (first, second) = (meta(&[1, 2], "a"), meta(&[2, 3], "b"));
    let count = |m: &OfferMeta| std::sync::Arc::strong_count(m.find(&key(2)).unwrap().texts);
    let mut r = RemoteOffer::default();
    for k in [1, 2] {
        r.offer(key(k), first.find(&key(k)), true);
    }
    assert_eq!(count(&first), 2, "held once for both keys");
    for k in [2, 3] {
        r.offer(key(k), second.find(&key(k)), true);
    }
    assert_eq!(count(&first), 2, "key 1 still points into the first");
    assert_eq!(r.get(&key(1)).unwrap().to_string(), r#"{"name":"a1"}"#);
    assert_eq!(r.get(&key(2)).unwrap().to_string(), r#"{"name":"b2"}"#);
    r.offer(key(1), None, true);
    assert_eq!(count(&first), 1, "let go with its last key");
    assert!(r.get(&key(1)).unwrap().is_null());
    // Its place is taken by the next manifest's buffer.
    let third = meta(&[1], "c");
    r.offer(key(1), third.find(&key(1)), true);
    assert_eq!(r.get(&key(1)).unwrap().to_string(), r#"{"name":"c1"}"#);
    assert_eq!(r.get(&key(3)).unwrap().to_string(), r#"{"name":"b3"}"#);
    assert_eq!(count(&second), 2);
}

#[test]
fn remote_offers_find_every_key_after_the_table_grows() {
    let mut r = RemoteOffer::default();
    let many = |i: u32| {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[31] = (i % 251) as u8;
        FeedKey(k)
    };
    for i in 0..50_000 {
        assert!(r.offer(many(i), None, i % 3 == 0));
    }
    for i in (0..50_000).step_by(7) {
        assert!(!r.offer(many(i), None, true), "{i} again");
    }
    assert_eq!(r.len(), 50_000);
    assert_eq!(r.pending_len(), (0..50_000).filter(|i| i % 3 == 0).count());
    assert!((0..50_000).all(|i| r.contains_key(&many(i))));
    assert!((50_000..50_100).all(|i| !r.contains_key(&many(i))));
}
