//! The UI with a thousand peers: the `/` search on the peers list, what it hides, and the
//! intake of a busy engine's events (coalesced, bounded, its drops shown).

use feedscope::event::{Direction, Event, Wire};
use feedscope::tui::app::{App, Focus, Settings};
use feedscope::tui::inbox::{Inbox, CAPACITY};
use feedscope::tui::{ingest, view};
use feedscope::wire::FeedKey;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::Terminal;

fn settings() -> Settings {
    Settings {
        key: "bee80ff3".into(),
        policy: "manual".into(),
        ..Default::default()
    }
}

fn key(peer: u64, feed: u64) -> FeedKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&peer.to_be_bytes());
    k[8..16].copy_from_slice(&feed.to_be_bytes());
    FeedKey(k)
}

fn connected(peer: u64) -> Event {
    Event::PeerConnected {
        peer,
        addr: format!("10.0.{}.{}:4000", peer / 256, peer % 256),
        initiator: false,
        remote_public_key: "ab".repeat(32),
        wire: Wire::Hc10,
    }
}

/// `n` peers, each replicating `feeds` feeds.
fn peers(n: u64, feeds: u64) -> App {
    let mut app = App::new(settings());
    for p in 1..=n {
        app.on_event(&connected(p), 0.0);
        let keys: Vec<FeedKey> = (0..feeds).map(|f| key(p, f)).collect();
        app.on_event(
            &Event::RequestSent {
                peer: p,
                keys: keys.clone(),
            },
            0.0,
        );
        app.on_event(&Event::ReplicateReceived { peer: p, keys }, 0.0);
    }
    app
}

fn draw(app: &mut App, w: u16, h: u16) -> String {
    app.set_area(Rect::new(0, 0, w, h));
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::render(f, app)).unwrap();
    t.backend().to_string()
}

fn press(app: &mut App, code: KeyCode) {
    app.on_terminal(&TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn search(app: &mut App, text: &str) {
    press(app, KeyCode::Char('/'));
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

fn status(app: &App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

/// The peers list: the left columns of the screen's body.
fn list(screen: &str, width: usize) -> String {
    screen
        .lines()
        .skip(1)
        .map(|l| l.chars().take(width).collect::<String>() + "\n")
        .collect()
}

#[test]
fn a_long_peers_list_says_which_rows_it_shows() {
    let mut app = peers(1_000, 0);
    let screen = draw(&mut app, 240, 70);
    assert!(screen.contains(" Peers 1–57 of 1000 "), "{screen}");
    press(&mut app, KeyCode::Char('l'));
    press(&mut app, KeyCode::End);
    let screen = draw(&mut app, 240, 70);
    assert!(screen.contains(" Peers 944–1000 of 1000 "), "{screen}");
    assert!(
        list(&screen, 44).contains("#1000 10.0.3.232:4000"),
        "{screen}"
    );
}

#[test]
fn slash_lists_only_the_matching_peers_as_it_is_typed_and_counts_the_hidden() {
    let mut app = peers(1_000, 0);
    draw(&mut app, 80, 24);
    search(&mut app, "10.0.2.");
    let screen = draw(&mut app, 80, 24);
    // The 256 peers of 10.0.2.x; the first of them is selected, the rest of the list hidden.
    assert!(screen.contains("/10.0.2."), "{screen}");
    assert!(screen.contains("enter keep  esc cancel"), "{screen}");
    assert!(screen.contains(" Peers 1–15/256 · 744 hidden "), "{screen}");
    assert_eq!(app.selected_peer().unwrap().id, 512);
    let shown = list(&screen, 31);
    assert!(shown.contains("#512 10.0.2.0:4000"), "{screen}");
    assert!(!shown.contains("10.0.1."), "{screen}");

    // Enter keeps it; home and end then move in the matches.
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.focus, Focus::Peers);
    assert!(status(&app).starts_with("256 of 1000 peers match \"10.0.2.\""));
    press(&mut app, KeyCode::End);
    assert_eq!(app.selected_peer().unwrap().id, 767);
    let screen = draw(&mut app, 80, 24);
    assert!(screen.contains(" 242–256/256 · 744 hidden "), "{screen}");
    // Four-digit ids leave the address 14 columns at this width.
    assert!(
        list(&screen, 31).contains("#767 10.0.2.255:400"),
        "{screen}"
    );
    press(&mut app, KeyCode::Home);
    assert_eq!(app.selected_peer().unwrap().id, 512);
}

#[test]
fn a_search_for_one_peer_jumps_to_it_and_escape_puts_the_list_back() {
    let mut app = peers(1_000, 10);
    draw(&mut app, 240, 70);
    search(&mut app, "#700");
    let screen = draw(&mut app, 240, 70);
    assert!(screen.contains(" Peers 1/1000 · 999 hidden "), "{screen}");
    // The right side is about the match: its ten feeds.
    assert!(screen.contains("Requested 10"), "{screen}");
    assert_eq!(app.selected_peer().unwrap().id, 700);
    press(&mut app, KeyCode::Esc);
    let screen = draw(&mut app, 240, 70);
    assert!(screen.contains(" Peers 1–57 of 1000 "), "{screen}");
    assert_eq!(app.selected_peer().unwrap().id, 1);
    assert!(app.input.is_none());
}

#[test]
fn a_search_that_matches_nothing_says_so() {
    let mut app = peers(50, 0);
    search(&mut app, "nosuch");
    press(&mut app, KeyCode::Enter);
    let screen = draw(&mut app, 80, 24);
    assert!(screen.contains("no peer matches \"nosuch\""), "{screen}");
    assert!(screen.contains("0/50 · 50 hidden"), "{screen}");
    assert!(status(&app).contains("/ and enter alone lists them all"));
    // The search opens with what is searched for; emptied, every peer is back.
    press(&mut app, KeyCode::Char('/'));
    for _ in 0.."nosuch".len() {
        press(&mut app, KeyCode::Backspace);
    }
    press(&mut app, KeyCode::Enter);
    let screen = draw(&mut app, 80, 24);
    assert!(!screen.contains("hidden"), "{screen}");
    assert!(screen.contains("#1 "), "{screen}");
}

#[test]
fn help_lists_the_search_and_its_keys() {
    let mut app = peers(3, 0);
    press(&mut app, KeyCode::Char('?'));
    let screen = draw(&mut app, 100, 70);
    assert!(screen.contains("search the peers list"), "{screen}");
    assert!(screen.contains("Peer search (/)"), "{screen}");
    assert!(
        screen.contains("keep the search; home/end/pgup/pgdn then move"),
        "{screen}"
    );
}

fn progress(peer: u64, feed: u64, local: u64) -> Event {
    Event::FeedProgress {
        peer,
        key: key(peer, feed),
        local_length: local,
        remote_length: 100,
        bytes: local * 1024,
    }
}

fn wire(peer: u64, n: usize) -> Event {
    Event::Wire {
        peer,
        dir: Direction::In,
        channel: "root".into(),
        kind: "Data".into(),
        bytes: n,
        summary: format!("index {n}"),
        hex: String::new(),
    }
}

/// Runs the UI's intake until the engine's channel and the inbox are empty (bounded).
fn ingest_all(
    app: &mut App,
    inbox: &mut Inbox,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> usize {
    let mut folded = 0;
    for _ in 0..10_000 {
        folded += ingest(app, inbox, rx, None, 1.0, &mut None).unwrap().folded;
        if inbox.is_empty() && rx.is_empty() {
            return folded;
        }
    }
    panic!("the intake never caught up");
}

#[test]
fn a_burst_of_progress_from_a_thousand_peers_folds_as_the_latest_of_each_feed() {
    let mut app = peers(1_000, 10);
    let mut inbox = Inbox::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for round in 1..=20 {
        for p in 1..=1_000 {
            for f in 0..10 {
                tx.send(progress(p, f, round * 5)).unwrap();
            }
        }
    }
    let folded = ingest_all(&mut app, &mut inbox, &mut rx);
    // At most one fold per feed and peer in each turn that takes events (four of them), not
    // one per event.
    assert!(folded <= 40_000, "{folded}");
    let s = inbox.stats();
    assert_eq!(s.received, 200_000);
    assert_eq!(s.coalesced as usize + folded, 200_000);
    assert_eq!(s.dropped, 0);
    assert!(s.peak <= CAPACITY);
    // Every feed shows its last progress: 100 of 100, synced.
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    let screen = draw(&mut app, 240, 70);
    assert_eq!(screen.matches("100/100").count(), 10, "{screen}");
    assert!(!screen.contains("dropped"), "{screen}");
}

#[test]
fn wire_lines_beyond_the_bound_are_dropped_counted_and_shown_but_no_offer_is() {
    let mut app = peers(2, 0);
    let mut inbox = Inbox::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..CAPACITY + 500 {
        tx.send(wire(1, n)).unwrap();
    }
    let offered = key(2, 7);
    tx.send(Event::OfferReceived {
        peer: 2,
        keys: vec![offered],
        meta: [(offered, serde_json::json!({"name": "kept"}).into())]
            .into_iter()
            .collect(),
    })
    .unwrap();
    tx.send(Event::PeerDisconnected {
        peer: 1,
        reason: "closed by the peer".into(),
    })
    .unwrap();
    ingest_all(&mut app, &mut inbox, &mut rx);
    assert_eq!(inbox.stats().dropped, 500);
    let screen = draw(&mut app, 160, 48);
    assert!(screen.contains("dropped 500 wire"), "{screen}");
    assert!(screen.contains("peers 1 "), "{screen}");
    press(&mut app, KeyCode::Char('l'));
    let screen = draw(&mut app, 160, 48);
    assert!(screen.contains("kept"), "{screen}");
    assert!(screen.contains("pending"), "{screen}");
}
