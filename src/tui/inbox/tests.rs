use super::*;
use crate::event::{Direction, ProblemKind};

fn key(n: u8) -> FeedKey {
    FeedKey([n; 32])
}

fn progress(peer: PeerId, k: u8, local: u64) -> Event {
    Event::FeedProgress {
        peer,
        key: key(k),
        local_length: local,
        remote_length: 100,
        bytes: local * 1024,
    }
}

fn wire(peer: PeerId, n: usize) -> Event {
    Event::Wire {
        peer,
        dir: Direction::In,
        channel: "root".into(),
        kind: "Data".into(),
        bytes: n,
        summary: String::new(),
        hex: String::new(),
    }
}

fn offer(peer: PeerId, k: u8) -> Event {
    Event::OfferReceived {
        peer,
        keys: vec![key(k)],
        meta: Default::default(),
    }
}

fn drain(inbox: &mut Inbox) -> Vec<(f64, Event)> {
    std::iter::from_fn(|| inbox.pop()).collect()
}

#[test]
fn successive_progress_of_one_feed_folds_as_the_latest() {
    let mut inbox = Inbox::new();
    for i in 0..50 {
        assert!(inbox.push(i as f64, progress(1, 1, i)).is_none());
    }
    inbox.push(50.0, progress(1, 2, 7));
    inbox.push(51.0, progress(2, 1, 9));
    assert_eq!(
        drain(&mut inbox),
        vec![
            (49.0, progress(1, 1, 49)),
            (50.0, progress(1, 2, 7)),
            (51.0, progress(2, 1, 9))
        ]
    );
    let s = inbox.stats();
    assert_eq!(
        (s.received, s.coalesced, s.dropped, s.waiting),
        (52, 49, 0, 0)
    );
}

#[test]
fn progress_never_moves_across_another_event_of_its_peer() {
    let mut inbox = Inbox::new();
    let synced = Event::FeedSynced {
        peer: 1,
        key: key(1),
        length: 10,
    };
    inbox.push(0.0, progress(1, 1, 5));
    inbox.push(1.0, synced.clone());
    inbox.push(2.0, progress(1, 1, 20));
    inbox.push(3.0, progress(1, 1, 30));
    assert_eq!(
        drain(&mut inbox),
        vec![
            (0.0, progress(1, 1, 5)),
            (1.0, synced),
            (3.0, progress(1, 1, 30))
        ]
    );
}

#[test]
fn another_peers_events_and_wire_lines_do_not_stop_coalescing() {
    let mut inbox = Inbox::new();
    inbox.push(0.0, progress(1, 1, 5));
    inbox.push(1.0, offer(2, 3));
    inbox.push(2.0, wire(1, 10));
    inbox.push(3.0, progress(1, 1, 6));
    let got: Vec<Event> = drain(&mut inbox).into_iter().map(|(_, e)| e).collect();
    assert_eq!(got, vec![progress(1, 1, 6), offer(2, 3), wire(1, 10)]);
}

#[test]
fn a_full_queue_drops_wire_lines_and_counts_them() {
    let mut inbox = Inbox::new();
    for i in 0..CAPACITY {
        assert!(inbox.push(0.0, wire(1, i)).is_none());
    }
    for i in 0..5 {
        assert!(inbox.push(1.0, wire(1, CAPACITY + i)).is_none());
    }
    let s = inbox.stats();
    assert_eq!((s.dropped, s.waiting, s.peak), (5, CAPACITY, CAPACITY));
    // The ones kept are the first ones, in order.
    let got = drain(&mut inbox);
    assert_eq!(got.len(), CAPACITY);
    assert_eq!(got.last().unwrap().1, wire(1, CAPACITY - 1));
}

#[test]
fn a_full_queue_loses_no_offer_error_or_disconnect() {
    let mut inbox = Inbox::new();
    let mut folded = Vec::new();
    let important = |i: usize| match i % 3 {
        0 => offer(i as PeerId, 1),
        1 => Event::Error {
            peer: Some(i as PeerId),
            kind: ProblemKind::Protocol,
            message: format!("bad {i}"),
        },
        _ => Event::PeerDisconnected {
            peer: i as PeerId,
            reason: "closed".into(),
        },
    };
    let n = CAPACITY + 1_000;
    for i in 0..n {
        if let Some((_, ev)) = inbox.push(i as f64, important(i)) {
            folded.push(ev);
        }
        assert!(inbox.len() <= CAPACITY);
    }
    folded.extend(drain(&mut inbox).into_iter().map(|(_, e)| e));
    assert_eq!(folded, (0..n).map(important).collect::<Vec<_>>());
    assert_eq!(inbox.stats().dropped, 0);
}

#[test]
fn its_bookkeeping_empties_with_the_queue() {
    let mut inbox = Inbox::new();
    for round in 0..3u64 {
        for peer in 0..100 {
            inbox.push(0.0, progress(peer, 1, round));
            inbox.push(0.0, offer(peer, 2));
            inbox.push(0.0, progress(peer, 1, round + 1));
        }
        drain(&mut inbox);
        assert!(inbox.progress.is_empty() && inbox.fence.is_empty());
    }
}
