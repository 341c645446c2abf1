//! The JSON of every event and command, pinned: headless mode, recordings and scripts read
//! these bytes, so a change to the Rust types must not change them. The samples cover every
//! variant (the match below stops compiling when one is added) and every kind of problem.

use std::collections::BTreeMap;

use feedscope::event::{
    Command, DecidedBy, Direction, Event, KeySelection, ProblemKind, StoppedBy, Wire,
};
use feedscope::wire::FeedKey;
use serde_json::json;

const A: FeedKey = FeedKey([0xaa; 32]);
const B: FeedKey = FeedKey([0xbb; 32]);

/// Every problem kind the engine reports, as documented in the README.
const PROBLEMS: &[&str] = &[
    "bad_capability",
    "bad_data",
    "command",
    "connect",
    "different_multifeed_key",
    "handshake",
    "idle",
    "incompatible",
    "invalid_key",
    "limit",
    "listen",
    "malformed",
    "malformed_frame",
    "malformed_message",
    "not_active",
    "panic",
    "protocol",
    "refused_request",
    "stalled",
    "storage",
    "unknown_extension",
    "unknown_offer",
    "unrequested_feed",
    "oversized",
    "metrics",
    "observe",
    "timeout",
    "truncated",
];

/// The kind named `name`, read the way a script's JSON is.
fn problem(name: &str) -> ProblemKind {
    let kind: ProblemKind = serde_json::from_value(json!(name)).unwrap();
    assert_eq!(kind.as_str(), name);
    kind
}

fn events() -> Vec<Event> {
    let meta: BTreeMap<_, feedscope::wire::FeedMeta> = BTreeMap::from([(
        A,
        json!({"length": 3, "byte_length": 12, "name": "notes"}).into(),
    )]);
    let mut all = vec![
        Event::Listening {
            addr: "127.0.0.1:4000".into(),
        },
        Event::ConnectRetry {
            addr: "127.0.0.1:4001".into(),
            attempt: 2,
            retry_in_ms: 200,
            error: "Connection refused (os error 111)".into(),
        },
        Event::PeerConnected {
            peer: 1,
            addr: "127.0.0.1:50000".into(),
            initiator: true,
            remote_public_key: "cc".repeat(32),
            wire: Wire::Hc10,
        },
        Event::PeerNamed {
            peer: 1,
            name: "dd".repeat(32),
        },
        Event::HandshakeReceived {
            peer: 1,
            client: "feedscope".into(),
            version: "1.0.0".into(),
        },
        Event::OfferSent {
            peer: 1,
            keys: vec![A],
            meta: meta.clone().into(),
        },
        Event::OfferReceived {
            peer: 1,
            keys: vec![A, B],
            meta: meta.into_iter().collect(),
        },
        Event::OfferPending {
            peer: 1,
            keys: vec![B],
        },
        Event::Decision {
            peer: 1,
            key: A,
            approved: true,
            by: DecidedBy::Person,
        },
        Event::Decision {
            peer: 1,
            key: A,
            approved: false,
            by: DecidedBy::Rule("deny aa".into()),
        },
        Event::Decision {
            peer: 1,
            key: A,
            approved: true,
            by: DecidedBy::Memory { approved: true },
        },
        Event::FeedStopped {
            peer: 1,
            key: A,
            by: StoppedBy::Us,
        },
        Event::FeedStopped {
            peer: 1,
            key: A,
            by: StoppedBy::Peer,
        },
        Event::RequestSent {
            peer: 1,
            keys: vec![A],
        },
        Event::RequestReceived {
            peer: 1,
            keys: vec![B],
        },
        Event::ReplicateSent {
            peer: 1,
            keys: vec![B],
        },
        Event::ReplicateReceived {
            peer: 1,
            keys: vec![A],
        },
        Event::FeedAdded {
            key: A,
            name: Some("notes".into()),
            writable: true,
        },
        Event::FeedAdded {
            key: B,
            name: None,
            writable: false,
        },
        Event::Appended {
            key: A,
            name: "notes".into(),
            length: 4,
        },
        Event::FeedProgress {
            peer: 1,
            key: B,
            local_length: 2,
            remote_length: 5,
            bytes: 2048,
        },
        Event::FeedSynced {
            peer: 1,
            key: B,
            length: 5,
        },
        Event::Wire {
            peer: 1,
            dir: Direction::In,
            channel: "root".into(),
            kind: "Extension(MULTIFEED_MANIFEST)".into(),
            bytes: 70,
            summary: "channel 1: MULTIFEED_MANIFEST".into(),
            hex: "0102".into(),
        },
        Event::Wire {
            peer: 1,
            dir: Direction::Out,
            channel: "control".into(),
            kind: "Open".into(),
            bytes: 80,
            summary: "channel 1".into(),
            hex: String::new(),
        },
        Event::Held {
            peer: 1,
            kind: "Data".into(),
            summary: "channel 2: Data".into(),
            waiting: 1,
        },
        Event::Released {
            peer: 1,
            kind: "Data".into(),
            waiting: 0,
        },
        Event::PeerDisconnected {
            peer: 1,
            reason: "connection closed by the peer".into(),
        },
        Event::Stopped,
        Event::MetricsListening {
            addr: "127.0.0.1:9464".into(),
        },
    ];
    for (i, kind) in PROBLEMS.iter().enumerate() {
        let peer = (i % 2 == 0).then_some(1);
        all.push(Event::Warning {
            peer,
            kind: problem(kind),
            message: format!("a {kind} warning"),
        });
        all.push(Event::Error {
            peer,
            kind: problem(kind),
            message: format!("a {kind} error"),
        });
    }
    all.push(Event::ObserveRefused {
        peer: 1,
        keys: vec![A, B],
    });
    all
}

fn commands() -> Vec<Command> {
    vec![
        Command::Approve {
            peer: Some(1),
            key: KeySelection::One(A),
        },
        Command::Approve {
            peer: None,
            key: KeySelection::AllPending,
        },
        Command::Decline {
            peer: None,
            key: KeySelection::One(B),
        },
        Command::Decline {
            peer: Some(2),
            key: KeySelection::AllPending,
        },
        Command::Stop {
            peer: Some(1),
            key: A,
        },
        Command::Hold { peer: None },
        Command::Step { peer: Some(1) },
        Command::Continue { peer: None },
        Command::Break {
            peer: None,
            kind: "Data".into(),
        },
        Command::Break {
            peer: Some(1),
            kind: String::new(),
        },
        Command::Connect {
            addr: "127.0.0.1:4000".into(),
            wire: None,
        },
        Command::Connect {
            addr: "127.0.0.1:4000".into(),
            wire: Some(Wire::Hc9),
        },
        Command::AddFeed {
            name: "notes".into(),
            wire: None,
        },
        Command::AddFeed {
            name: "notes".into(),
            wire: Some(Wire::Hc9),
        },
        Command::Append {
            feed: "notes".into(),
            data: Some("hello".into()),
            data_hex: None,
        },
        Command::Append {
            feed: "notes".into(),
            data: None,
            data_hex: Some("00ff".into()),
        },
        Command::Quit,
    ]
}

/// A kind the metrics do not count would stop the peer that reports it.
#[test]
fn every_problem_kind_is_counted_by_the_metrics() {
    for name in PROBLEMS {
        assert!(
            feedscope::stats::PROBLEM_KINDS.contains(&problem(name)),
            "{name} is not in stats::PROBLEM_KINDS"
        );
    }
    assert_eq!(feedscope::stats::PROBLEM_KINDS.len(), PROBLEMS.len());
}

#[test]
fn every_event_keeps_its_json() {
    let all = events();
    let mut seen: Vec<&str> = all.iter().map(Event::type_name).collect();
    seen.sort();
    seen.dedup();
    let mut types = Event::TYPES.to_vec();
    types.sort();
    assert_eq!(seen, types, "a sample of every type");
    let lines: Vec<String> = all
        .iter()
        .map(|e| {
            let line = serde_json::to_string(e).unwrap();
            let tag = serde_json::from_str::<serde_json::Value>(&line).unwrap()["type"].clone();
            assert_eq!(tag, e.type_name(), "{line} is of the type it names");
            let back: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(&back, e, "{line} reads back as it was written");
            line
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn every_command_keeps_its_json() {
    let lines: Vec<String> = commands()
        .iter()
        .map(|c| {
            let line = serde_json::to_string(c).unwrap();
            let back: Command = serde_json::from_str(&line).unwrap();
            assert_eq!(&back, c, "{line} reads back as it was written");
            line
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn commands_as_people_write_them_still_parse() {
    for line in [
        r#"{"cmd":"approve","key":"*"}"#,
        r#"{"cmd":"decline","peer":3,"key":"*"}"#,
        r#"{"cmd":"break","kind":""}"#,
        r#"{"cmd":"append","feed":"notes","data":"hi"}"#,
        r#"{"cmd":"quit"}"#,
    ] {
        let c: Command = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let again: Command = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, again);
    }
}
