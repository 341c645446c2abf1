use super::*;
use serde_json::json;

fn key(n: u8) -> FeedKey {
    FeedKey([n; 32])
}

fn connected() -> Model {
    let mut m = Model::default();
    m.apply(
        &Event::PeerConnected {
            peer: 1,
            addr: "127.0.0.1:9".into(),
            initiator: true,
            remote_public_key: "ab".repeat(32),
            wire: Wire::Hc10,
        },
        0.0,
    );
    m.apply(
        &Event::HandshakeReceived {
            peer: 1,
            client: "MULTIFEED".into(),
            version: "5.0.0".into(),
        },
        0.1,
    );
    m
}

#[test]
fn offers_are_pending_until_requested_or_decided() {
    let mut m = connected();
    let meta = [(key(1), json!({"name": "a"}))].into_iter().collect();
    m.apply(
        &Event::OfferReceived {
            peer: 1,
            keys: vec![key(1), key(2)],
            meta,
        },
        0.2,
    );
    let p = &m.peers[&1];
    assert_eq!(p.pending(), 2);
    assert_eq!(p.remote_offer[&key(1)].meta, json!({"name": "a"}));
    m.apply(
        &Event::Decision {
            peer: 1,
            key: key(2),
            approved: false,
            by: crate::event::DecidedBy::Person,
        },
        0.3,
    );
    m.apply(
        &Event::RequestSent {
            peer: 1,
            keys: vec![key(1)],
        },
        0.3,
    );
    let p = &m.peers[&1];
    assert_eq!(p.remote_offer[&key(1)].state, OfferState::Requested);
    assert_eq!(p.remote_offer[&key(2)].state, OfferState::Declined);
    assert_eq!(p.pending(), 0);
}

#[test]
fn progress_gives_lengths_rate_and_sync() {
    let mut m = connected();
    for (i, t) in [(1u64, 1.0), (2, 2.0)] {
        if i == 2 {
            let a = &m.peers[&1].active[&key(3)];
            assert!(a.rate() == 0.0 || a.samples.len() == 1);
        }
        m.apply(
            &Event::FeedProgress {
                peer: 1,
                key: key(3),
                local_length: i * 10,
                remote_length: 20,
                bytes: i * 1000,
            },
            t,
        );
    }
    let a = &m.peers[&1].active[&key(3)];
    assert_eq!(a.local_length, 20);
    assert!(a.synced);
    assert_eq!(a.rate(), 0.0, "a synced feed moves nothing");
    assert_eq!(a.deltas(), vec![1000]);
}

#[test]
fn the_log_is_a_bounded_ring() {
    let mut m = Model::default();
    for i in 0..(LOG_CAPACITY + 10) {
        m.apply(
            &Event::Warning {
                peer: None,
                kind: crate::event::ProblemKind::Limit,
                message: i.to_string(),
            },
            i as f64,
        );
    }
    assert_eq!(m.log.len(), LOG_CAPACITY);
    assert_eq!(m.log.front().unwrap().text, "limit: 10");
}

#[test]
fn a_disconnect_keeps_the_peer_with_its_reason() {
    let mut m = connected();
    m.apply(
        &Event::PeerDisconnected {
            peer: 1,
            reason: "closed".into(),
        },
        1.0,
    );
    assert_eq!(m.peers[&1].state(), "gone");
    assert_eq!(m.connected(), 0);
}
