//! The screens, rendered into a test backend from a scripted session, as snapshots.

use std::collections::BTreeMap;

use feedscope::event::{Command, DecidedBy, Direction, Event, KeySelection, ProblemKind};
use feedscope::tui::app::{App, Settings};
use feedscope::tui::view;
use feedscope::wire::FeedKey;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use serde_json::json;

fn key(n: u8) -> FeedKey {
    FeedKey([n; 32])
}

fn settings() -> Settings {
    Settings {
        key: "bee80ff3".into(),
        policy: "manual".into(),
        storage: "/data/feedscope".into(),
        log_file: "/data/feedscope/logs/feedscope.log".into(),
        no_color: false,
    }
}

/// Two peers: one offering three feeds (one approved and syncing), one gone.
fn session() -> App {
    let mut app = App::new(settings());
    let events = vec![
        Event::Listening {
            addr: "127.0.0.1:4000".into(),
        },
        Event::FeedAdded {
            key: key(9),
            name: Some("notes".into()),
            writable: true,
        },
        Event::PeerConnected {
            peer: 1,
            addr: "127.0.0.1:50412".into(),
            initiator: false,
            remote_public_key: "ab".repeat(32),
        },
        Event::HandshakeReceived {
            peer: 1,
            client: "MULTIFEED".into(),
            version: "5.0.0".into(),
        },
        Event::OfferSent {
            peer: 1,
            keys: vec![key(9)],
            meta: BTreeMap::new(),
        },
        Event::OfferReceived {
            peer: 1,
            keys: vec![key(1), key(2), key(3)],
            meta: [
                (
                    key(1),
                    json!({"name": "photos", "length": 120, "byte_length": 5_000_000}),
                ),
                (
                    key(2),
                    json!({"name": "chat", "length": 3, "byte_length": 300}),
                ),
            ]
            .into_iter()
            .collect(),
        },
        Event::OfferPending {
            peer: 1,
            keys: vec![key(1), key(2), key(3)],
        },
        Event::Decision {
            peer: 1,
            key: key(1),
            approved: true,
            by: DecidedBy::Person,
        },
        Event::RequestSent {
            peer: 1,
            keys: vec![key(1)],
        },
        Event::ReplicateReceived {
            peer: 1,
            keys: vec![key(1)],
        },
        Event::FeedProgress {
            peer: 1,
            key: key(1),
            local_length: 30,
            remote_length: 120,
            bytes: 1_250_000,
        },
        Event::PeerConnected {
            peer: 2,
            addr: "10.0.0.7:4000".into(),
            initiator: true,
            remote_public_key: "cd".repeat(32),
        },
        Event::Error {
            peer: Some(2),
            kind: ProblemKind::Incompatible,
            message: "version mismatch: peer speaks 4.0.0".into(),
        },
        Event::PeerDisconnected {
            peer: 2,
            reason: "version mismatch: peer speaks 4.0.0".into(),
        },
    ];
    for (i, ev) in events.iter().enumerate() {
        app.on_event(ev, i as f64 * 0.25);
    }
    app.on_event(
        &Event::FeedProgress {
            peer: 1,
            key: key(1),
            local_length: 60,
            remote_length: 120,
            bytes: 2_500_000,
        },
        5.0,
    );
    app
}

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::render(f, app)).unwrap();
    t.backend().to_string()
}

fn press(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.on_terminal(&TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

#[test]
fn offers_at_80x24() {
    insta::assert_snapshot!(draw(&session(), 80, 24));
}

#[test]
fn offers_at_160x48() {
    insta::assert_snapshot!(draw(&session(), 160, 48));
}

#[test]
fn active_pane_at_80x24() {
    let mut app = session();
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn log_pane_filtered_at_80x24() {
    let mut app = session();
    app.run_line("filter offer");
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn help_at_80x24() {
    let mut app = session();
    press(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn empty_screen_tells_how_to_get_a_peer() {
    let mut app = App::new(settings());
    app.on_event(
        &Event::Listening {
            addr: "127.0.0.1:4000".into(),
        },
        0.0,
    );
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("others can dial"), "{screen}");
    assert!(screen.contains("127.0.0.1:4000"), "{screen}");
}

#[test]
fn approving_from_the_screen_sends_the_selected_key() {
    let mut app = session();
    press(&mut app, KeyCode::Down);
    let cmds = press(&mut app, KeyCode::Char('a'));
    assert_eq!(
        cmds,
        vec![Command::Approve {
            peer: Some(1),
            key: KeySelection::One(key(2))
        }]
    );
    assert!(draw(&app, 80, 24).contains("approved 02020202 from peer #1"));
}

#[test]
fn replay_timeline_at_80x24() {
    let mut app = session();
    app.replay = Some("⏸ 3.2s/9.0s  event 14/40  x2".into());
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("event 14/40"), "{screen}");
    assert!(
        screen.contains("p play"),
        "the footer shows the replay keys: {screen}"
    );
    insta::assert_snapshot!(screen);
}

#[test]
fn help_scrolls_to_the_commands_and_the_log_path_at_80x24() {
    let mut app = session();
    press(&mut app, KeyCode::Char('?'));
    for _ in 0..10 {
        press(&mut app, KeyCode::Down);
    }
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("Commands after :"), "{screen}");
    assert!(screen.contains("feedscope.log"), "{screen}");
}

#[test]
fn wire_inspector_at_80x24() {
    let mut app = session();
    let wire = [
        ("out", "root", "Extension(MULTIFEED_HANDSHAKE)", 43, "channel 1: MULTIFEED_HANDSHAKE 40 bytes: {\"client\":\"MULTIFEED\",\"version\":\"5.0.0\"}", "0109134d554c54494645454445"),
        ("in", "01010101", "Request", 9, "channel 2: id 1 fork 0 upgrade 0+120", "0201000008007800"),
        ("in", "01010101", "Data", 1100, "request 1 fork 0 block 0 (1024 bytes, 2 nodes)", "020301000100"),
    ];
    for (i, (dir, channel, kind, bytes, summary, hex)) in wire.iter().enumerate() {
        app.on_event(
            &Event::Wire {
                peer: 1,
                dir: if *dir == "in" {
                    Direction::In
                } else {
                    Direction::Out
                },
                channel: channel.to_string(),
                kind: kind.to_string(),
                bytes: *bytes,
                summary: summary.to_string(),
                hex: hex.to_string(),
            },
            6.0 + i as f64 * 0.001,
        );
    }
    app.on_event(
        &Event::Held {
            peer: 1,
            kind: "Synchronize".into(),
            summary: "channel 2: fork 0 length 120".into(),
            waiting: 1,
        },
        6.1,
    );
    for _ in 0..4 {
        press(&mut app, KeyCode::Tab);
    }
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("held (1): Synchronize"), "{screen}");
    assert!(
        screen.contains("01091"),
        "the hex dump of the selected message: {screen}"
    );
    insta::assert_snapshot!(screen);
}
