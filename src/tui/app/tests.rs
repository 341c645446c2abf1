use super::*;
use crate::event::Wire;
use ratatui::crossterm::event::{KeyCode, KeyModifiers};

fn key(n: u8) -> FeedKey {
    FeedKey([n; 32])
}

fn press(app: &mut App, code: KeyCode) -> Vec<Command> {
    let k = KeyEvent::new(code, KeyModifiers::NONE);
    app.on_terminal(&TermEvent::Key(k))
}

fn with_offers() -> App {
    let mut app = App::new(Settings::default());
    app.on_event(
        &Event::PeerConnected {
            peer: 7,
            addr: "a".into(),
            initiator: false,
            remote_public_key: "00".repeat(32),
            wire: Wire::Hc10,
        },
        0.0,
    );
    app.on_event(
        &Event::OfferReceived {
            peer: 7,
            keys: vec![key(1), key(2)],
            meta: Default::default(),
        },
        0.0,
    );
    app
}

#[test]
fn a_approves_and_d_declines_the_selected_offer() {
    let mut app = with_offers();
    assert_eq!(
        press(&mut app, KeyCode::Char('a')),
        vec![Command::Approve {
            peer: Some(7),
            key: KeySelection::One(key(1))
        }]
    );
    press(&mut app, KeyCode::Down);
    assert_eq!(
        press(&mut app, KeyCode::Char('d')),
        vec![Command::Decline {
            peer: Some(7),
            key: KeySelection::One(key(2))
        }]
    );
}

#[test]
fn in_observe_mode_approve_and_decline_say_so_instead_of_acting() {
    let mut app = with_offers();
    app.settings.policy = "observe".into();
    for code in [
        KeyCode::Char('a'),
        KeyCode::Char('d'),
        KeyCode::Char('A'),
        KeyCode::Char('D'),
    ] {
        assert!(press(&mut app, code).is_empty(), "{code:?} sends nothing");
        let status = app.status.as_ref().unwrap();
        assert!(
            status.text.contains("observe mode is on"),
            "{}",
            status.text
        );
    }
    assert!(app.run_line("approve 0202").is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("observe mode"));
}

#[test]
fn the_command_line_approves_by_unique_prefix() {
    let mut app = with_offers();
    assert_eq!(
        app.run_line("approve 0202"),
        vec![Command::Approve {
            peer: None,
            key: KeySelection::One(key(2))
        }]
    );
    assert!(app.run_line("approve 0").is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("matches 2"));
    assert!(app.run_line("frobnicate").is_empty());
    assert!(app.status.as_ref().unwrap().error);
    assert_eq!(app.complete("appr").line, "approve ");
    assert_eq!(
        app.complete("approve 01").line,
        format!("approve {}", key(1).to_hex())
    );
}

#[test]
fn freeze_keeps_a_snapshot_while_events_go_on() {
    let mut app = with_offers();
    press(&mut app, KeyCode::Char(' '));
    app.on_event(
        &Event::PeerDisconnected {
            peer: 7,
            reason: "x".into(),
        },
        1.0,
    );
    assert!(app.model().peers[&7].disconnected.is_none());
    press(&mut app, KeyCode::Char(' '));
    assert!(app.model().peers[&7].disconnected.is_some());
}

#[test]
fn quitting_asks_while_transfers_run() {
    let mut app = with_offers();
    app.on_event(
        &Event::FeedProgress {
            peer: 7,
            key: key(1),
            local_length: 1,
            remote_length: 10,
            bytes: 5,
        },
        0.5,
    );
    press(&mut app, KeyCode::Char('q'));
    assert!(!app.quit);
    press(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn connect_to_an_address_dialed_already_says_what_the_engine_said() {
    let mut app = App::new(Settings::default());
    assert_eq!(
        app.run_line("connect 127.0.0.1:4000"),
        vec![Command::Connect {
            addr: "127.0.0.1:4000".into(),
            wire: None
        }]
    );
    assert!(app.status.as_ref().unwrap().text.contains("dialing"));
    app.on_event(
        &Event::Warning {
            peer: None,
            kind: ProblemKind::Command,
            message: "connected to 127.0.0.1:4000 already (peer 3); it is not dialed twice".into(),
        },
        0.0,
    );
    let status = app.status.as_ref().unwrap();
    assert!(
        status.text.contains("it is not dialed twice"),
        "{}",
        status.text
    );
    assert!(!status.error);
    assert!(app.awaiting.is_none());
}

#[test]
fn connect_is_answered_by_its_own_address_not_by_others_dialed_again() {
    let mut app = App::new(Settings::default());
    app.run_line("connect 127.0.0.1:4000");
    // Another kept address, dialed again meanwhile.
    app.on_event(
        &Event::ConnectRetry {
            addr: "127.0.0.1:5000".into(),
            attempt: 1,
            retry_in_ms: 100,
            error: "the connection ended: connection closed by the peer".into(),
        },
        0.0,
    );
    app.on_event(
        &Event::PeerConnected {
            peer: 2,
            addr: "127.0.0.1:5000".into(),
            initiator: true,
            remote_public_key: "00".repeat(32),
            wire: Wire::Hc10,
        },
        0.0,
    );
    app.on_event(
        &Event::Error {
            peer: None,
            kind: ProblemKind::Connect,
            message: "gave up dialing 127.0.0.1:5000 after 30 attempts: refused".into(),
        },
        0.0,
    );
    assert!(app.awaiting.is_some());
    assert!(app.status.as_ref().unwrap().text.contains("dialing"));
    app.on_event(
        &Event::PeerConnected {
            peer: 3,
            addr: "127.0.0.1:4000".into(),
            initiator: true,
            remote_public_key: "00".repeat(32),
            wire: Wire::Hc10,
        },
        0.0,
    );
    let status = app.status.as_ref().unwrap();
    assert_eq!(status.text, "connected to 127.0.0.1:4000 as peer #3");
    assert!(app.awaiting.is_none());
}
