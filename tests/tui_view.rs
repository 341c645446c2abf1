//! The screens, rendered into a test backend from a scripted session, as snapshots.

use std::time::{Duration, Instant};

use feedscope::event::{
    Command, DecidedBy, Direction, Event, KeySelection, ProblemKind, StoppedBy, Wire,
};
use feedscope::tui::app::{App, Pane, Settings};
use feedscope::tui::view;
use feedscope::wire::FeedKey;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Rect;
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
            wire: Wire::Hc10,
        },
        Event::HandshakeReceived {
            peer: 1,
            client: "MULTIFEED".into(),
            version: "5.0.0".into(),
        },
        Event::OfferSent {
            peer: 1,
            keys: vec![key(9)],
            meta: Default::default(),
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
            .map(|(k, v)| (k, v.into()))
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
            wire: Wire::Hc10,
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
        // A Cabal peer on hypercore 9's wire, which names itself by its writer key.
        Event::PeerConnected {
            peer: 3,
            addr: "10.0.0.9:3282".into(),
            initiator: true,
            remote_public_key: "ef".repeat(32),
            wire: Wire::Hc9,
        },
        Event::PeerNamed {
            peer: 3,
            name: "6d1b71de".repeat(8),
        },
        Event::HandshakeReceived {
            peer: 3,
            client: "MULTIFEED".into(),
            version: "4.0.0".into(),
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

/// Lays `app` out for a terminal this size, as the UI does before each frame.
fn sized(app: &mut App, w: u16, h: u16) {
    app.set_area(Rect::new(0, 0, w, h));
}

/// Types a command line and runs it, as the keyboard would.
fn command(app: &mut App, line: &str) -> Vec<Command> {
    press(app, KeyCode::Char(':'));
    for c in line.chars() {
        press(app, KeyCode::Char(c));
    }
    press(app, KeyCode::Enter)
}

fn click(app: &mut App, column: u16, row: u16) {
    app.on_terminal(&TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    }));
}

fn status(app: &App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

/// The screen line that holds `what`.
fn line_with<'a>(screen: &'a str, what: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?}:\n{screen}"))
}

/// The peers list's column header.
fn peers_header(screen: &str) -> &str {
    screen
        .lines()
        .find(|l| l.contains(" peer ") && l.contains("state"))
        .unwrap_or_else(|| panic!("no peers header:\n{screen}"))
}

fn peer(app: &mut App, id: u64, at: f64) {
    app.on_event(
        &Event::PeerConnected {
            peer: id,
            addr: format!("10.0.0.{id}:4000"),
            initiator: true,
            remote_public_key: format!("{id:02x}").repeat(32),
            wire: Wire::Hc10,
        },
        at,
    );
    app.on_event(
        &Event::HandshakeReceived {
            peer: id,
            client: "MULTIFEED".into(),
            version: "5.0.0".into(),
        },
        at,
    );
}

fn warnings(app: &mut App, from: usize, n: usize) {
    for i in from..from + n {
        app.on_event(
            &Event::Warning {
                peer: None,
                kind: ProblemKind::Limit,
                message: format!("line {i}"),
            },
            10.0 + i as f64,
        );
    }
}

#[test]
fn offers_at_80x24() {
    insta::assert_snapshot!(draw(&session(), 80, 24));
}

/// An observer: the header says so, and a peer's requests for our feeds, refused by design,
/// are one plain line of the detail instead of warnings.
#[test]
fn observe_mode_in_the_header_and_refused_requests_in_the_detail() {
    let mut app = App::new(Settings {
        policy: "observe".into(),
        ..settings()
    });
    let events = vec![
        Event::Listening {
            addr: "127.0.0.1:4000".into(),
        },
        Event::PeerConnected {
            peer: 1,
            addr: "10.0.0.5:4000".into(),
            initiator: true,
            remote_public_key: "ab".repeat(32),
            wire: Wire::Hc10,
        },
        Event::HandshakeReceived {
            peer: 1,
            client: "MULTIFEED".into(),
            version: "5.0.0".into(),
        },
        Event::OfferSent {
            peer: 1,
            keys: vec![],
            meta: Default::default(),
        },
        Event::OfferReceived {
            peer: 1,
            keys: vec![key(1)],
            meta: [(key(1), json!({"name": "sensor", "length": 40}).into())]
                .into_iter()
                .collect(),
        },
        Event::RequestReceived {
            peer: 1,
            keys: vec![key(8), key(9)],
        },
        Event::ObserveRefused {
            peer: 1,
            keys: vec![key(8), key(9)],
        },
        Event::RequestReceived {
            peer: 1,
            keys: vec![key(7)],
        },
        Event::ObserveRefused {
            peer: 1,
            keys: vec![key(7)],
        },
    ];
    for (i, ev) in events.iter().enumerate() {
        app.on_event(ev, i as f64 * 0.25);
    }
    let screen = draw(&app, 80, 24);
    assert!(
        line_with(&screen, "feedscope").contains("observe"),
        "{screen}"
    );
    assert!(!screen.contains("warning"), "{screen}");
    insta::assert_snapshot!(screen);
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
fn a_feed_the_peer_stopped_says_so_in_the_active_pane() {
    let mut app = session();
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    let before = draw(&app, 80, 24);
    assert!(!before.contains("stopped"), "{before}");
    app.on_event(
        &Event::FeedStopped {
            peer: 1,
            key: key(1),
            by: StoppedBy::Peer,
        },
        30.0,
    );
    let screen = draw(&app, 80, 24);
    let row = screen
        .lines()
        .find(|l| l.contains("photos"))
        .expect("the feed stays listed");
    assert!(row.contains("stopped"), "{screen}");
    assert!(!row.contains("KB/s"), "no rate shown for it: {screen}");
}

#[test]
fn log_pane_filtered_at_80x24() {
    let mut app = session();
    app.run_line("filter offer");
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn filters_apply_as_they_are_typed_and_escape_puts_them_back() {
    let mut app = session();
    app.run_line("filter offer");
    let filtered = draw(&app, 80, 24);
    let mut app = session();
    press(&mut app, KeyCode::Char(':'));
    for c in "filter offer".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    // Not run yet: the log already shows what Enter would.
    let typing = draw(&app, 80, 24);
    let body = |s: &str| s.lines().skip(1).take(18).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&typing), body(&filtered), "{typing}");
    press(&mut app, KeyCode::Esc);
    let before = draw(&session(), 80, 24);
    let after = draw(&app, 80, 24);
    assert_eq!(
        body(&after),
        body(&before),
        "escape put the screen back: {after}"
    );
    // The peers list filters as it is typed too.
    let mut app = session();
    press(&mut app, KeyCode::Char(':'));
    for c in "peers 10.0".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("10.0.0.7"), "{screen}");
    assert!(!screen.contains("127.0.0.1:50412"), "{screen}");
    press(&mut app, KeyCode::Esc);
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("127.0.0.1:50412"), "{screen}");
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
    sized(&mut app, 80, 24);
    press(&mut app, KeyCode::Char('?'));
    let mut screen = draw(&app, 80, 24);
    for _ in 0..60 {
        if screen.contains("Commands after :") {
            break;
        }
        press(&mut app, KeyCode::Down);
        screen = draw(&app, 80, 24);
    }
    assert!(screen.contains("Commands after :"), "{screen}");
    press(&mut app, KeyCode::End);
    let screen = draw(&app, 80, 24);
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
    // The wire follows its last message; g selects the first.
    press(&mut app, KeyCode::Char('g'));
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("held (1): Synchronize"), "{screen}");
    assert!(
        screen.contains("01091"),
        "the hex dump of the selected message: {screen}"
    );
    insta::assert_snapshot!(screen);
}

// Moving through lists.

#[test]
fn the_log_follows_new_lines_until_scrolled_up_and_again_from_the_end() {
    let mut app = session();
    sized(&mut app, 80, 24);
    app.run_line("filter line");
    warnings(&mut app, 0, 100);
    let screen = draw(&app, 80, 24);
    assert!(line_with(&screen, "line 99").contains("limit: line 99"));
    assert!(screen.contains("following"), "{screen}");
    // Scrolling up stops following: new lines arrive below, the view stays.
    press(&mut app, KeyCode::Up);
    warnings(&mut app, 100, 5);
    let screen = draw(&app, 80, 24);
    let pane = screen.split(" Events ").next().unwrap();
    assert!(pane.contains("line 98"), "{screen}");
    assert!(!pane.contains("limit: line 104"), "{screen}");
    assert!(pane.contains("paused: G follows"), "{screen}");
    // G (or end) follows again.
    press(&mut app, KeyCode::Char('G'));
    warnings(&mut app, 105, 1);
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("limit: line 105"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn moving_down_to_the_last_line_follows_again() {
    let mut app = session();
    sized(&mut app, 80, 24);
    app.run_line("filter line");
    warnings(&mut app, 0, 30);
    press(&mut app, KeyCode::PageUp);
    assert!(!app.follows());
    press(&mut app, KeyCode::PageDown);
    assert!(app.follows(), "a page down to the end follows");
    press(&mut app, KeyCode::Home);
    assert_eq!(app.row, 0);
    press(&mut app, KeyCode::Char('j'));
    warnings(&mut app, 30, 1);
    assert_eq!(app.selected_row(app.log_lines().len()), 1, "stays put");
}

#[test]
fn the_wire_follows_new_messages() {
    let mut app = session();
    sized(&mut app, 120, 40);
    for _ in 0..4 {
        press(&mut app, KeyCode::Tab);
    }
    assert_eq!(app.pane, Pane::Wire);
    for i in 0..60 {
        app.on_event(
            &Event::Wire {
                peer: 1,
                dir: Direction::In,
                channel: "01010101".into(),
                kind: "Data".into(),
                bytes: 100,
                summary: format!("block {i}"),
                hex: "00".into(),
            },
            6.0 + i as f64,
        );
    }
    let screen = draw(&app, 120, 40);
    assert!(screen.contains("block 59"), "{screen}");
    press(&mut app, KeyCode::Char('g'));
    let screen = draw(&app, 120, 40);
    assert!(screen.contains("block 0 "), "{screen}");
    assert!(!screen.contains("block 59"), "{screen}");
}

/// A peer list longer than the screen, each peer offering `n` feeds.
fn many_peers(n: u64) -> App {
    let mut app = App::new(settings());
    for id in 1..=n {
        peer(&mut app, id, id as f64);
    }
    app
}

#[test]
fn page_keys_move_the_peers_list_after_a_peer_move() {
    let mut app = many_peers(100);
    sized(&mut app, 80, 24);
    let page = app.regions.peer_rows.height as usize;
    press(&mut app, KeyCode::Char('l'));
    press(&mut app, KeyCode::PageDown);
    assert_eq!(app.selected_peer().unwrap().id, 2 + page as u64);
    press(&mut app, KeyCode::End);
    assert_eq!(app.selected_peer().unwrap().id, 100);
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("#100"), "{screen}");
    press(&mut app, KeyCode::Char('g'));
    assert_eq!(app.selected_peer().unwrap().id, 1);
    press(&mut app, KeyCode::Char('G'));
    press(&mut app, KeyCode::PageUp);
    assert_eq!(app.selected_peer().unwrap().id, 100 - page as u64);
}

#[test]
fn page_keys_move_the_offers_list() {
    let mut app = App::new(settings());
    peer(&mut app, 1, 0.0);
    app.on_event(
        &Event::OfferReceived {
            peer: 1,
            keys: (1..=60).map(key).collect(),
            meta: Default::default(),
        },
        1.0,
    );
    sized(&mut app, 80, 24);
    press(&mut app, KeyCode::PageDown);
    let page = app.regions.rows.height as usize;
    assert_eq!(app.row, page);
    press(&mut app, KeyCode::End);
    assert_eq!(app.row, 59);
    let screen = draw(&app, 80, 24);
    assert!(screen.contains(&key(60).short()), "{screen}");
    // Only the rows on screen are drawn: the first is out of view (the events pane names
    // it too, so the row is looked for with its decision).
    let row_of = |n: u8| format!("pending    {}", key(n).short());
    assert!(!screen.contains(&row_of(1)), "{screen}");
    press(&mut app, KeyCode::Home);
    assert_eq!(app.row, 0);
    let screen = draw(&app, 80, 24);
    assert!(screen.contains(&row_of(1)), "{screen}");
    assert!(!screen.contains(&row_of(60)), "{screen}");
}

// Sorting.

/// Three peers: #2 has the most pending offers and #3 the fastest download.
fn three_peers() -> App {
    let mut app = many_peers(3);
    for (id, n) in [(1u64, 1u8), (2, 3), (3, 0)] {
        app.on_event(
            &Event::OfferReceived {
                peer: id,
                keys: (0..n).map(|i| key(10 * id as u8 + i)).collect(),
                meta: Default::default(),
            },
            4.0,
        );
    }
    for (t, bytes) in [(5.0, 0), (6.0, 9_000_000)] {
        app.on_event(
            &Event::FeedProgress {
                peer: 3,
                key: key(99),
                local_length: 1,
                remote_length: 100,
                bytes,
            },
            t,
        );
    }
    app
}

#[test]
fn sorting_keeps_the_selected_peer_selected_and_marks_the_column() {
    let mut app = three_peers();
    sized(&mut app, 120, 40);
    press(&mut app, KeyCode::Char('l'));
    assert_eq!(app.selected_peer().unwrap().id, 2);
    // By rate (#3 first), then by pending offers (#2 first): #2 stays selected throughout.
    press(&mut app, KeyCode::Char('o'));
    assert_eq!(app.selected_peer().unwrap().id, 2);
    let screen = draw(&app, 120, 40);
    assert!(peers_header(&screen).contains("rate▼"), "{screen}");
    press(&mut app, KeyCode::Char('o'));
    let screen = draw(&app, 120, 40);
    assert!(peers_header(&screen).contains("n▼"), "{screen}");
    assert_eq!(app.selected_peer().unwrap().id, 2);
    // `a` approves an offer of the peer the user chose, wherever its row went.
    let cmds = press(&mut app, KeyCode::Char('a'));
    assert_eq!(
        cmds,
        vec![Command::Approve {
            peer: Some(2),
            key: KeySelection::One(key(20))
        }]
    );
    insta::assert_snapshot!(screen);
}

// The status line.

#[test]
fn a_message_is_replaced_by_the_next_command_and_goes_stale() {
    let mut app = session();
    command(&mut app, "bogus");
    assert!(status(&app).contains("unknown command"), "{}", status(&app));
    command(&mut app, "filter offer");
    assert_eq!(status(&app), "", "the next command drops it");
    command(&mut app, "bogus");
    press(&mut app, KeyCode::Char('j'));
    assert_eq!(status(&app), "", "the next key drops it");
    command(&mut app, "bogus");
    assert!(!app.tick(Instant::now()));
    assert!(app.tick(Instant::now() + Duration::from_secs(30)));
    assert!(!draw(&app, 80, 24).contains("unknown command"));
}

#[test]
fn the_engine_error_for_a_command_replaces_its_message() {
    let mut app = session();
    let cmds = command(&mut app, "append nosuch hi");
    assert_eq!(cmds.len(), 1);
    assert!(!status(&app).contains("appended"), "{}", status(&app));
    app.on_event(
        &Event::Error {
            peer: None,
            kind: ProblemKind::Command,
            message: "no feed \"nosuch\"".into(),
        },
        7.0,
    );
    let screen = draw(&app, 80, 24);
    let status_line = screen.lines().rev().nth(1).unwrap();
    assert!(
        status_line.contains("append nosuch: no feed \"nosuch\""),
        "{screen}"
    );
    assert!(app.status.as_ref().unwrap().error);
    // And a success says what the engine did.
    command(&mut app, "append notes hi");
    app.on_event(
        &Event::Appended {
            key: key(9),
            name: "notes".into(),
            length: 4,
        },
        8.0,
    );
    assert_eq!(status(&app), "appended to notes: it has 4 block(s)");
}

#[test]
fn a_replay_refuses_commands_that_need_an_engine() {
    let mut app = session();
    app.replay = Some("⏸ paused 3.2s/9.0s".into());
    for line in ["connect 127.0.0.1:4000", "add-feed x", "append notes hi"] {
        assert!(command(&mut app, line).is_empty(), "{line}");
        let s = status(&app);
        assert!(!s.contains("dialing") && s.contains("live session"), "{s}");
        assert!(app.status.as_ref().unwrap().error);
    }
    assert!(press(&mut app, KeyCode::Char('a')).is_empty());
    assert!(status(&app).contains("live session"));
    // Looking around still works.
    command(&mut app, "filter offer");
    assert_eq!(app.pane, Pane::Log);
}

#[test]
fn an_unknown_breakpoint_kind_is_refused_with_the_valid_ones() {
    let mut app = session();
    assert!(command(&mut app, "break Dta").is_empty());
    let s = status(&app);
    assert!(
        s.contains("Data") && s.contains("MULTIFEED_REQUEST_FEEDS"),
        "{s}"
    );
    assert_eq!(
        command(&mut app, "break request_feeds"),
        vec![Command::Break {
            peer: Some(1),
            kind: "MULTIFEED_REQUEST_FEEDS".into()
        }]
    );
    assert_eq!(
        command(&mut app, "break"),
        vec![Command::Break {
            peer: Some(1),
            kind: String::new()
        }]
    );
    assert!(status(&app).contains("cleared"));
}

// Footer and help.

#[test]
fn the_footer_follows_the_mode() {
    let mut app = session();
    let footer = |app: &App| draw(app, 80, 24).lines().last().unwrap().to_string();
    assert!(footer(&app).contains("a approve"), "{}", footer(&app));
    press(&mut app, KeyCode::Char(':'));
    let f = footer(&app);
    assert!(f.contains("enter run") && f.contains("tab complete"), "{f}");
    assert!(!f.contains("a approve"), "{f}");
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('?'));
    let f = footer(&app);
    assert!(f.contains("scroll") && f.contains("esc close"), "{f}");
    press(&mut app, KeyCode::Esc);
    app.on_event(
        &Event::Held {
            peer: 1,
            kind: "Data".into(),
            summary: "block 3".into(),
            waiting: 1,
        },
        9.0,
    );
    let f = footer(&app);
    assert!(f.starts_with("\"n let one through  c continue"), "{f}");
    let screen = draw(&app, 80, 24);
    assert!(line_with(&screen, "#1 ").contains("held"), "{screen}");
    app.replay = Some("⏸ paused".into());
    let f = footer(&app);
    assert!(f.contains("p play/pause") && f.contains("b back"), "{f}");
    assert!(!f.contains("b step"), "{f}");
}

#[test]
fn help_lists_every_command_and_how_to_clear_a_breakpoint() {
    let mut app = session();
    sized(&mut app, 200, 60);
    press(&mut app, KeyCode::Char('?'));
    let mut seen = String::new();
    for _ in 0..10 {
        seen.push_str(&draw(&app, 200, 60));
        press(&mut app, KeyCode::PageDown);
    }
    for c in feedscope::tui::keys::COMMANDS {
        assert!(seen.contains(&c.usage()), "{} missing", c.usage());
    }
    for b in feedscope::tui::keys::BINDINGS {
        let start: Vec<&str> = b.help.split(' ').take(3).collect();
        assert!(seen.contains(&start.join(" ")), "{} missing", b.help);
    }
    assert!(seen.contains("alone: clear its breakpoints"), "{seen}");
    assert!(seen.contains("Mouse"), "{seen}");
}

// Small terminals and the legend.

#[test]
fn a_terminal_too_small_gets_a_notice() {
    let mut app = session();
    sized(&mut app, 50, 12);
    let screen = draw(&app, 50, 12);
    assert!(screen.contains("needs a terminal of at least"), "{screen}");
    assert!(screen.contains("50×12"), "{screen}");
    insta::assert_snapshot!(screen);
    // Keys still work: q quits.
    press(&mut app, KeyCode::Char('q'));
    press(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn the_peers_list_explains_its_states() {
    let screen = draw(&session(), 80, 24);
    for word in ["live", "sync", "gone", "held", "2?"] {
        assert!(
            screen
                .lines()
                .any(|l| l.contains(&format!("{word} ")) && !l.contains("#")),
            "{word} not explained:\n{screen}"
        );
    }
    assert!(peers_header(&screen).contains("state"), "{screen}");
}

// Completion.

#[test]
fn tab_on_an_ambiguous_prefix_shows_the_candidates() {
    let mut app = session();
    press(&mut app, KeyCode::Char(':'));
    press(&mut app, KeyCode::Char('a'));
    press(&mut app, KeyCode::Tab);
    let screen = draw(&app, 80, 24);
    let footer = screen.lines().last().unwrap();
    for c in ["approve", "add-feed", "append"] {
        assert!(footer.contains(c), "{footer}");
    }
    // Key prefixes too: three offered keys start with 0.
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char(':'));
    for c in "approve 0".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    press(&mut app, KeyCode::Tab);
    let screen = draw(&app, 80, 24);
    let footer = screen.lines().last().unwrap();
    assert!(footer.contains("01010101 photos"), "{footer}");
    assert!(footer.contains("02020202 chat"), "{footer}");
    press(&mut app, KeyCode::Char('2'));
    assert!(app.candidates.is_empty(), "typing drops the candidates");
}

// Wire names, widths and the mouse.

#[test]
fn the_wire_shows_message_names_people_know() {
    let mut app = session();
    for (i, kind) in [
        "Extension(MULTIFEED_MANIFEST)",
        "Extension(MULTIFEED_REQUEST_FEEDS)",
        "Data",
    ]
    .iter()
    .enumerate()
    {
        app.on_event(
            &Event::Wire {
                peer: 1,
                dir: Direction::In,
                channel: "root".into(),
                kind: kind.to_string(),
                bytes: 10,
                summary: "x".into(),
                hex: "00".into(),
            },
            6.0 + i as f64,
        );
    }
    for _ in 0..4 {
        press(&mut app, KeyCode::Tab);
    }
    let screen = draw(&app, 200, 60);
    assert!(!screen.contains("Extension("), "{screen}");
    for name in ["MULTIFEED_MANIFEST", "MULTIFEED_REQUEST_FEEDS", "Data"] {
        assert!(screen.contains(name), "{screen}");
    }
    let screen = draw(&app, 80, 24);
    assert!(screen.contains("REQUEST_FEEDS"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn active_pane_at_120x40() {
    let mut app = session();
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    let screen = draw(&app, 120, 40);
    assert!(
        line_with(&screen, "have/peer").contains("progress"),
        "{screen}"
    );
    insta::assert_snapshot!(screen);
}

#[test]
fn active_pane_at_200x60_uses_the_width() {
    let mut app = session();
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    let screen = draw(&app, 200, 60);
    let row = line_with(&screen, "60/120");
    assert!(
        row.matches('█').count() + row.matches('░').count() > 60,
        "{row}"
    );
    assert!(row.contains("50%"), "{row}");
    insta::assert_snapshot!(screen);
}

#[test]
fn active_header_is_whole_at_80x24() {
    let mut app = session();
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    let screen = draw(&app, 80, 24);
    let header = line_with(&screen, "have/peer");
    for column in ["key", "name", "progress", "rate"] {
        assert!(header.contains(column), "{header}");
    }
}

#[test]
fn clicks_select_tabs_peers_and_rows() {
    let mut app = session();
    sized(&mut app, 120, 40);
    let r = app.regions;
    // The second peer row.
    click(&mut app, r.peer_rows.x + 2, r.peer_rows.y + 1);
    assert_eq!(app.selected_peer().unwrap().id, 2);
    click(&mut app, r.peer_rows.x + 2, r.peer_rows.y);
    assert_eq!(app.selected_peer().unwrap().id, 1);
    // The third offer.
    click(&mut app, r.rows.x + 3, r.rows.y + 2);
    assert_eq!(app.row, 2);
    // The Log tab: find its title on the screen.
    let screen = draw(&app, 120, 40);
    let tabs = screen.lines().nth(r.tabs.y as usize + 1).unwrap();
    let col = tabs.trim_end_matches([' ', '"']).chars().count() as u16 - 3;
    sized(&mut app, 120, 40);
    click(&mut app, col, r.tabs.y + 1);
    assert_eq!(app.pane, Pane::Log, "{tabs} at {col}");
    click(&mut app, r.tabs.x + 2, r.tabs.y + 1);
    assert_eq!(app.pane, Pane::Offered);
}

#[test]
fn a_paused_log_keeps_its_line_when_the_ring_drops_the_oldest() {
    let mut app = session();
    sized(&mut app, 80, 24);
    app.run_line("filter line");
    warnings(&mut app, 0, feedscope::tui::model::LOG_CAPACITY);
    for _ in 0..5 {
        press(&mut app, KeyCode::Up);
    }
    let chosen = app.log_lines()[app.row].text.clone();
    warnings(&mut app, 5000, 3);
    assert_eq!(app.log_lines()[app.row].text, chosen);
}
