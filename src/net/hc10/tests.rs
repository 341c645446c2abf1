//! Two connection cores wired to each other in memory: every channel rule without a socket.

use std::time::{Duration, Instant};

use hypercore_protocol::schema::{Request, Synchronize};
use hypercore_protocol::{discovery_key, Message};

use super::*;
use crate::event::Event;

const ROOT: [u8; 32] = [1; 32];
const FEED: [u8; 32] = [2; 32];
const HASH: [u8; 64] = [7; 64];
/// Lowered so that floods stay small.
const L: Limits = Limits {
    max_pending_opens: 16,
    max_early_messages: 8,
    ..Limits::DEFAULT
};

fn conn(peer: PeerId, initiator: bool, root: [u8; 32]) -> Conn<&'static str> {
    Conn::new(
        Setup {
            peer,
            initiator,
            handshake_hash: HASH.to_vec(),
            root_key: root,
            trace: false,
            step: false,
            limits: L,
            stats: Default::default(),
        },
        Instant::now(),
    )
}

/// What one side did, in a form tests can compare.
fn describe(o: Output<&'static str>) -> String {
    match o {
        Output::Event(Event::Warning { kind, .. }) => format!("warning {kind}"),
        Output::Event(Event::Error { kind, .. }) => format!("error {kind}"),
        Output::Event(Event::Held { kind, waiting, .. }) => format!("held {kind} {waiting}"),
        Output::Event(Event::Released { kind, waiting, .. }) => {
            format!("released {kind} {waiting}")
        }
        Output::Event(Event::Wire { dir, kind, .. }) => format!("wire {dir} {kind}"),
        Output::Event(other) => format!("{other:?}"),
        Output::RootOpened => "root opened".into(),
        Output::RootExtension { name, payload } => {
            format!("root {name} {}", String::from_utf8_lossy(&payload))
        }
        Output::FeedOpened { local } => format!("feed opened {local}"),
        Output::FeedMessage { local, msg } => format!("feed {local} {}", msg.name()),
        Output::FeedClosed { key, payload } => format!("feed closed {} {payload}", key.short()),
    }
}

fn drain(c: &mut Conn<&'static str>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(o) = c.poll() {
        out.push(describe(o));
    }
    out
}

/// Moves frames both ways until neither side has anything to send; returns what each side
/// was asked to act on.
fn pump(a: &mut Conn<&'static str>, b: &mut Conn<&'static str>) -> (Vec<String>, Vec<String>) {
    let now = Instant::now();
    let (mut seen_a, mut seen_b) = (drain(a), drain(b));
    for _ in 0..100 {
        a.seal(now);
        b.seal(now);
        let mut moved = false;
        while let Some(f) = a.take_sealed() {
            b.receive(f, now);
            moved = true;
        }
        while let Some(f) = b.take_sealed() {
            a.receive(f, now);
            moved = true;
        }
        seen_a.extend(drain(a));
        seen_b.extend(drain(b));
        if !moved {
            return (seen_a, seen_b);
        }
    }
    panic!("the two sides never went quiet");
}

fn pair() -> (Conn<&'static str>, Conn<&'static str>) {
    let (mut a, mut b) = (conn(1, true, ROOT), conn(2, false, ROOT));
    let (sa, sb) = pump(&mut a, &mut b);
    assert_eq!(sa, ["root opened"]);
    assert_eq!(sb, ["root opened"]);
    (a, b)
}

#[test]
fn the_root_channel_opens_on_both_sides_and_carries_extensions() {
    let (mut a, mut b) = pair();
    a.send_root_extension("MULTIFEED_HANDSHAKE", b"hi".to_vec());
    a.send_root_extension("", b"again".to_vec());
    let (_, sb) = pump(&mut a, &mut b);
    assert_eq!(sb, ["root MULTIFEED_HANDSHAKE hi", "root  again"]);
}

#[test]
fn a_request_on_the_root_channel_gets_no_data() {
    let (mut a, mut b) = pair();
    let root_local = a.root_local;
    a.push(Out::Msg(root_local, core(request(9))));
    let now = Instant::now();
    a.seal(now);
    while let Some(f) = a.take_sealed() {
        b.receive(f, now);
    }
    assert!(drain(&mut b).is_empty());
    b.seal(now);
    let frame = b.take_sealed().expect("an answer");
    let items = frame::decode(&frame).unwrap();
    assert!(matches!(
        &items[..],
        [Item::Message(_, Ok(Msg::Core(Message::NoData(n))))] if n.request == 9
    ));
}

fn request(id: u64) -> Message {
    Message::Request(Request {
        id,
        fork: 0,
        block: None,
        hash: None,
        seek: None,
        upgrade: None,
        manifest: false,
        priority: 0,
    })
}

fn sync() -> Message {
    Message::Synchronize(Synchronize {
        fork: 0,
        length: 3,
        remote_length: 0,
        downloading: true,
        uploading: true,
        can_upgrade: true,
    })
}

#[test]
fn messages_sent_before_the_other_side_opens_arrive_after_it_opens() {
    let (mut a, mut b) = pair();
    assert!(a.open(FeedKey(FEED), "a's feed"));
    let (sa, sb) = pump(&mut a, &mut b);
    assert!(sa.is_empty() && sb.is_empty(), "{sa:?} {sb:?}");
    // a's channel is not open on both sides yet, so a cannot name it open.
    assert_eq!(a.open_channel_of(&FeedKey(FEED)), None);
    let a_local = a.by_dkey[&discovery_key(&FEED)];
    a.send(a_local, Msg::Core(sync()));
    pump(&mut a, &mut b);
    assert!(b.open(FeedKey(FEED), "b's feed"));
    let (sa, sb) = pump(&mut a, &mut b);
    assert_eq!(sa, [format!("feed opened {a_local}")]);
    let b_local = b
        .open_channel_of(&FeedKey(FEED))
        .expect("open on both sides");
    assert_eq!(
        sb,
        [
            format!("feed opened {b_local}"),
            format!("feed {b_local} Synchronize")
        ]
    );
    assert_eq!(b.payload_mut(b_local), Some(&mut "b's feed"));
    assert!(!b.open(FeedKey(FEED), "twice"), "a second open is refused");
}

#[test]
fn a_peer_that_closes_a_feed_gets_its_payload_handed_back() {
    let (mut a, mut b) = pair();
    a.open(FeedKey(FEED), "a's feed");
    b.open(FeedKey(FEED), "b's feed");
    pump(&mut a, &mut b);
    assert_eq!(a.close(&FeedKey(FEED)), Some("a's feed"));
    let (sa, sb) = pump(&mut a, &mut b);
    assert!(sa.is_empty(), "{sa:?}");
    assert_eq!(
        sb,
        [format!("feed closed {} b's feed", FeedKey(FEED).short())]
    );
    assert_eq!(b.open_channel_of(&FeedKey(FEED)), None);
    // Both may open it again.
    assert!(a.open(FeedKey(FEED), "again"));
    assert!(b.open(FeedKey(FEED), "again"));
    let (sa, sb) = pump(&mut a, &mut b);
    assert_eq!((sa.len(), sb.len()), (1, 1), "{sa:?} {sb:?}");
}

#[test]
fn a_peer_with_another_multifeed_key_is_told_so_on_both_sides() {
    let (mut a, mut b) = (conn(1, true, ROOT), conn(2, false, [9; 32]));
    let (sa, sb) = pump(&mut a, &mut b);
    assert!(
        sa.contains(&"error different_multifeed_key".to_string()),
        "{sa:?}"
    );
    assert!(
        sb.contains(&"error different_multifeed_key".to_string()),
        "{sb:?}"
    );
    assert!(a.end().is_some_and(|(error, _)| *error));
    assert!(b.end().is_some());
}

#[test]
fn a_capability_that_does_not_prove_the_key_ends_the_connection() {
    let mut a = conn(1, true, ROOT);
    // The other side signs with another handshake hash: a man in the middle.
    let mut b = Conn::<&'static str>::new(
        Setup {
            peer: 2,
            initiator: false,
            handshake_hash: vec![8; 64],
            root_key: ROOT,
            trace: false,
            step: false,
            limits: L,
            stats: Default::default(),
        },
        Instant::now(),
    );
    let (sa, sb) = pump(&mut a, &mut b);
    assert_eq!(sa, ["error bad_capability"]);
    assert_eq!(sb, ["error bad_capability"]);
}

#[test]
fn a_root_channel_that_never_opens_is_a_timeout() {
    let start = Instant::now();
    let mut a = conn(1, true, ROOT);
    a.handle_timeout(start + L.root_open_timeout / 2);
    assert!(drain(&mut a).is_empty());
    a.handle_timeout(start + L.root_open_timeout + Duration::from_millis(1));
    assert_eq!(drain(&mut a), ["error timeout"]);
}

#[test]
fn silence_is_answered_with_keep_alives_and_ends_the_connection_after_the_idle_timeout() {
    let (mut a, _b) = pair();
    let start = Instant::now();
    a.seal(start);
    while a.take_sealed().is_some() {}
    a.handle_timeout(start + L.keepalive_interval);
    assert_eq!(
        a.take_sealed(),
        Some(Vec::new()),
        "an empty keep-alive frame"
    );
    assert!(a.end().is_none());
    a.handle_timeout(start + L.idle_timeout + Duration::from_secs(1));
    assert_eq!(drain(&mut a), ["error idle"]);
}

#[test]
fn step_mode_holds_every_message_until_it_is_let_through() {
    let (mut a, mut b) = pair();
    b.hold();
    a.send_root_extension("ONE", b"1".to_vec());
    a.send_root_extension("TWO", b"2".to_vec());
    let (_, sb) = pump(&mut a, &mut b);
    assert_eq!(sb, ["held Extension(ONE) 1", "held Extension(TWO) 2"]);
    assert!(b.may_read(), "a few held messages do not stop reading");
    b.step();
    assert_eq!(drain(&mut b), ["released Extension(ONE) 1", "root ONE 1"]);
    b.resume();
    assert_eq!(drain(&mut b), ["released Extension(TWO) 0", "root TWO 2"]);
    a.send_root_extension("THREE", b"3".to_vec());
    let (_, sb) = pump(&mut a, &mut b);
    assert_eq!(sb, ["root THREE 3"], "no longer holding");
}

#[test]
fn a_breakpoint_holds_from_the_first_message_of_its_kind() {
    let (mut a, mut b) = pair();
    b.set_breakpoint("MULTIFEED_MANIFEST".into());
    a.send_root_extension("MULTIFEED_HANDSHAKE", b"h".to_vec());
    a.send_root_extension("MULTIFEED_MANIFEST", b"m".to_vec());
    a.send_root_extension("MULTIFEED_HANDSHAKE", b"after".to_vec());
    let (_, sb) = pump(&mut a, &mut b);
    assert_eq!(
        sb,
        [
            "root MULTIFEED_HANDSHAKE h",
            "held Extension(MULTIFEED_MANIFEST) 1",
            "held Extension(MULTIFEED_HANDSHAKE) 2"
        ]
    );
    b.set_breakpoint(String::new());
    b.resume();
    assert_eq!(drain(&mut b).len(), 4);
}

#[test]
fn traced_connections_report_every_message_both_ways() {
    let mut a = conn(1, true, ROOT);
    a.trace = true;
    let mut b = conn(2, false, ROOT);
    let (sa, _) = pump(&mut a, &mut b);
    assert_eq!(
        sa,
        [
            "wire out Open",
            "wire in Open",
            "root opened",
            "wire out Synchronize",
            "wire in Synchronize"
        ]
    );
}

#[test]
fn unmatched_opens_are_bounded_and_the_rest_rejected_with_a_warning() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    for i in 0..=L.max_pending_opens as u64 {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        key[31] = 0xff;
        let cap = capability(true, &HASH, &key);
        b.receive(frame::encode_open(100 + i, &discovery_key(&key), &cap), now);
    }
    assert_eq!(drain(&mut b), ["warning limit"]);
    assert!(b.end().is_none(), "a flood of opens is not fatal");
    assert_eq!(b.pending.len(), L.max_pending_opens);
    // The honest side's own channels still open.
    assert!(a.open(FeedKey(FEED), "a's feed"));
    assert!(b.open(FeedKey(FEED), "b's feed"));
    let (sa, sb) = pump(&mut a, &mut b);
    assert_eq!((sa.len(), sb.len()), (1, 1), "{sa:?} {sb:?}");
}

#[test]
fn a_channel_opened_twice_by_the_peer_ends_the_connection() {
    let (_a, mut b) = pair();
    let now = Instant::now();
    let cap = capability(true, &HASH, &FEED);
    let open = frame::encode_open(5, &discovery_key(&FEED), &cap);
    b.receive(open.clone(), now);
    b.receive(open, now);
    assert_eq!(drain(&mut b), ["error protocol"]);
}

#[test]
fn early_messages_are_bounded_per_channel() {
    let (_a, mut b) = pair();
    let now = Instant::now();
    let cap = capability(true, &HASH, &FEED);
    b.receive(frame::encode_open(5, &discovery_key(&FEED), &cap), now);
    let many: Vec<(u64, Msg)> = (0..L.max_early_messages + 10)
        .map(|_| (5, Msg::Core(sync())))
        .collect();
    b.receive(frame::encode_messages(&many), now);
    assert!(drain(&mut b).is_empty());
    b.open(FeedKey(FEED), "b's feed");
    let seen = drain(&mut b);
    assert_eq!(
        seen.len(),
        1 + L.max_early_messages,
        "opened, then the kept messages"
    );
}

#[test]
fn malformed_messages_end_the_connection_past_the_limit_and_unknown_types_do_not_count() {
    let (_, mut b) = pair();
    let now = Instant::now();
    let most = L.max_malformed_messages;
    // Types from a newer protocol, many more than the limit: warnings only.
    let mut unknown = vec![0u8, 0, 1];
    for _ in 0..most * 3 {
        unknown.extend_from_slice(&[1, 42]);
    }
    b.receive(unknown, now);
    let seen = drain(&mut b);
    assert_eq!(seen.len(), most * 3);
    assert!(
        seen.iter().all(|s| s == "warning malformed_message"),
        "{seen:?}"
    );
    assert!(b.end().is_none());
    // Messages that do not decode: the limit, then the end.
    let mut bad = vec![0u8, 0, 1];
    for _ in 0..most + 5 {
        bad.extend_from_slice(&[1, 0]);
    }
    b.receive(bad, now);
    let seen = drain(&mut b);
    assert_eq!(seen.len(), most + 1, "the rest of the frame is not read");
    assert_eq!(seen.last().unwrap(), "error malformed_message");
    let (error, reason) = b.end().unwrap();
    assert!(
        *error && reason.contains(&format!("over {most} messages")),
        "{reason}"
    );
}

#[test]
fn the_answer_to_a_window_of_requests_leaves_in_several_frames_that_arrive_in_order() {
    let (mut a, mut b) = pair();
    a.open(FeedKey(FEED), "a's feed");
    b.open(FeedKey(FEED), "b's feed");
    pump(&mut a, &mut b);
    let a_local = a.open_channel_of(&FeedKey(FEED)).expect("open");
    let b_local = b.open_channel_of(&FeedKey(FEED)).expect("open");
    let window = 4 * FRAME_BLOCKS_SOFT_LIMIT + 3;
    for i in 0..window as u64 {
        a.send(
            a_local,
            core(Message::Data(hypercore_protocol::schema::Data {
                request: i,
                fork: 0,
                block: Some(hypercore_schema::DataBlock {
                    index: i,
                    value: vec![i as u8; 1024],
                    nodes: Vec::new(),
                }),
                hash: None,
                seek: None,
                upgrade: None,
            })),
        );
    }
    let now = Instant::now();
    a.seal(now);
    let mut frames = 0;
    while let Some(f) = a.take_sealed() {
        frames += 1;
        b.receive(f, now);
    }
    // The downloader can act on the first blocks while the rest are still on their way.
    assert_eq!(frames, 5, "64 blocks a frame, the rest in a last one");
    let got: Vec<u64> = std::iter::from_fn(|| b.poll())
        .filter_map(|o| match o {
            Output::FeedMessage {
                local,
                msg: Message::Data(d),
            } if local == b_local => Some(d.request),
            _ => None,
        })
        .collect();
    assert_eq!(got, (0..window as u64).collect::<Vec<_>>());
}
