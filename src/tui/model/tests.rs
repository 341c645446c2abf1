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
    let meta = [(key(1), json!({"name": "a"}).into())]
        .into_iter()
        .collect();
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

#[test]
fn the_kept_rates_and_peer_count_match_a_count_from_scratch() {
    let mut m = Model::default();
    let mut t = 0.0;
    for peer in 1..=5u64 {
        m.apply(
            &Event::PeerConnected {
                peer,
                addr: format!("127.0.0.1:{peer}"),
                initiator: false,
                remote_public_key: "ab".repeat(32),
                wire: Wire::Hc10,
            },
            t,
        );
    }
    let check = |m: &Model| {
        for p in m.peers.values() {
            // Measured from the samples, as a reader would.
            let measured = |a: &Active| match (a.synced, a.samples.front(), a.samples.back()) {
                (false, Some(x), Some(y)) if y.0 > x.0 => (y.1 - x.1) as f64 / (y.0 - x.0),
                _ => 0.0,
            };
            for a in p.active.values() {
                assert!((a.rate() - measured(a)).abs() < 1e-6);
            }
            let sum: f64 = p.active.values().map(measured).sum();
            assert!((p.rate() - sum).abs() < 1e-6, "{} vs {sum}", p.rate());
        }
        let live: Vec<&PeerView> = m
            .peers
            .values()
            .filter(|p| p.disconnected.is_none())
            .collect();
        assert_eq!(m.connected(), live.len());
        let total: f64 = live.iter().map(|p| p.rate()).sum();
        assert!((m.rate() - total).abs() < 1e-6, "{} vs {total}", m.rate());
    };
    for i in 0..2_000u64 {
        t += 0.01;
        let (peer, k) = (1 + i % 5, (i % 7) as u8);
        let ev = match i % 97 {
            13 => Event::FeedSynced {
                peer,
                key: key(k),
                length: i,
            },
            41 => Event::FeedStopped {
                peer,
                key: key(k),
                by: crate::event::StoppedBy::Us,
            },
            _ => Event::FeedProgress {
                peer,
                key: key(k),
                local_length: i,
                remote_length: 10_000,
                bytes: i * 1024 + (i * 7919) % 1000,
            },
        };
        m.apply(&ev, t);
        if i % 100 == 0 {
            check(&m);
        }
    }
    for peer in [2, 4, 4] {
        m.apply(
            &Event::PeerDisconnected {
                peer,
                reason: "closed".into(),
            },
            t,
        );
    }
    check(&m);
    assert_eq!(m.connected(), 3);
}
