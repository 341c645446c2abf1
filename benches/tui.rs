//! The UI's cost with 1,000 peers × 10 feeds in the model: how fast the model folds events,
//! how long a full frame takes to render, and whether the UI's intake keeps up with an engine
//! that sends what 1,000 peers × 10 feeds make. `cargo bench --locked --bench tui`.

use std::time::{Duration, Instant};

use feedscope::event::{Direction, Event, Wire};
use feedscope::tui::app::{App, Settings};
use feedscope::tui::inbox::Inbox;
use feedscope::tui::{ingest, view, FRAME_INTERVAL};
use feedscope::wire::FeedKey;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

const PEERS: u64 = 1_000;
const FEEDS: u64 = 10;

fn key(peer: u64, feed: u64) -> FeedKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&peer.to_le_bytes());
    k[8..16].copy_from_slice(&feed.to_le_bytes());
    FeedKey(k)
}

fn setup_events() -> Vec<Event> {
    let mut evs = Vec::new();
    for p in 1..=PEERS {
        evs.push(Event::PeerConnected {
            peer: p,
            addr: format!("127.0.0.1:{}", 10_000 + p),
            initiator: p % 2 == 0,
            remote_public_key: "ab".repeat(32),
            wire: Wire::Hc10,
        });
        let keys: Vec<FeedKey> = (0..FEEDS).map(|f| key(p, f)).collect();
        let meta: feedscope::wire::OfferMeta = keys
            .iter()
            .map(|k| {
                (
                    *k,
                    serde_json::json!({"name": "feed", "length": 100, "byte_length": 102400})
                        .into(),
                )
            })
            .collect();
        evs.push(Event::OfferReceived {
            peer: p,
            keys: keys.clone(),
            meta,
        });
        evs.push(Event::RequestSent {
            peer: p,
            keys: keys.clone(),
        });
        evs.push(Event::ReplicateReceived { peer: p, keys });
    }
    evs
}

fn progress(i: u64) -> Event {
    Event::FeedProgress {
        peer: 1 + i % PEERS,
        key: key(1 + i % PEERS, (i / PEERS) % FEEDS),
        local_length: i / 1000,
        remote_length: 100_000,
        bytes: i * 1024,
    }
}

/// A `Data` message as `--trace-wire` reports it: its fields and its first 512 bytes in hex.
fn wire(i: u64) -> Event {
    Event::Wire {
        peer: 1 + i % PEERS,
        dir: Direction::In,
        channel: "0a1b2c3d".into(),
        kind: "Data".into(),
        bytes: 1_100,
        summary: format!("request {i} block {i} nodes 3"),
        hex: "ab".repeat(512),
    }
}

/// CPU time this thread has run, in nanoseconds (Linux).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// The median wall time of a full frame of `app` at `w`×`h`, and the thread's CPU time per
/// frame (from /proc), in milliseconds.
fn time_frames(app: &mut App, w: u16, h: u16) -> (f64, Option<f64>) {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    let rounds = 300;
    app.set_area(ratatui::layout::Rect::new(0, 0, w, h));
    // One warm-up frame, then the measured ones.
    term.draw(|f| view::render(f, app)).unwrap();
    let mut walls = Vec::with_capacity(rounds);
    let cpu = thread_cpu_ns();
    for _ in 0..rounds {
        let t = Instant::now();
        term.draw(|f| view::render(f, app)).unwrap();
        walls.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu_ms = cpu
        .zip(thread_cpu_ns())
        .map(|(a, b)| (b - a) as f64 / 1e6 / rounds as f64);
    walls.sort_by(f64::total_cmp);
    (walls[rounds / 2], cpu_ms)
}

/// One peer, a hub, offering 10,000 feeds with their metadata; its offers on screen.
fn hub_peer() -> App {
    let mut app = App::new(Settings {
        key: "bee80ff3".into(),
        policy: "manual".into(),
        ..Default::default()
    });
    app.on_event(
        &Event::PeerConnected {
            peer: 1,
            addr: "127.0.0.1:10001".into(),
            initiator: false,
            remote_public_key: "ab".repeat(32),
            wire: Wire::Hc10,
        },
        0.0,
    );
    let keys: Vec<FeedKey> = (0..10_000).map(|f| key(1, f)).collect();
    let meta = keys
        .iter()
        .map(|k| {
            let m = serde_json::json!({"name": "feed", "length": 100, "byte_length": 102400});
            (*k, m.into())
        })
        .collect();
    app.on_event(
        &Event::OfferReceived {
            peer: 1,
            keys,
            meta,
        },
        0.1,
    );
    // The peers list, then the peer's panes, whose first is its offers.
    app.on_terminal(&TermEvent::Key(KeyEvent::new(
        KeyCode::Char('l'),
        KeyModifiers::NONE,
    )));
    app
}

fn model() -> App {
    let mut app = App::new(Settings {
        key: "bee80ff3".into(),
        policy: "manual".into(),
        ..Default::default()
    });
    for (i, e) in setup_events().iter().enumerate() {
        app.on_event(e, i as f64 * 1e-6);
    }
    app
}

/// What the intake did while an engine sent for a while.
struct Intake {
    sent: u64,
    secs: f64,
    channel_peak: usize,
    inbox_peak: usize,
    coalesced: u64,
    dropped: u64,
    frames: u32,
    slowest_turn_ms: f64,
}

/// Runs the UI's intake and a 240×70 frame every 33 ms, as the live loop does, while another
/// thread sends `per_ms(i)` events each millisecond for `secs` (or as fast as it can, with
/// `flat_out`), each `wire_every`-th of them a wire line and the rest progress.
fn intake(secs: f64, per_ms: u64, flat_out: bool, wire_every: u64) -> Intake {
    let mut app = model();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let producer = std::thread::spawn(move || {
        let start = Instant::now();
        let mut i = 0u64;
        let mut tick = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..per_ms {
                let ev = if wire_every > 0 && i.is_multiple_of(wire_every) {
                    wire(i)
                } else {
                    progress(i)
                };
                tx.send(ev).unwrap();
                i += 1;
            }
            if !flat_out {
                tick += 1;
                let due = start + Duration::from_millis(tick);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
        i
    });
    let mut inbox = Inbox::new();
    let mut term = Terminal::new(TestBackend::new(240, 70)).unwrap();
    let start = Instant::now();
    let mut last_frame = start;
    let (mut channel_peak, mut frames, mut slowest) = (0, 0, 0.0f64);
    loop {
        channel_peak = channel_peak.max(rx.len());
        let t = Instant::now();
        let turn = ingest(
            &mut app,
            &mut inbox,
            &mut rx,
            None,
            start.elapsed().as_secs_f64(),
            &mut None,
        )
        .unwrap();
        if last_frame.elapsed() >= FRAME_INTERVAL {
            app.set_area(ratatui::layout::Rect::new(0, 0, 240, 70));
            term.draw(|f| view::render(f, &app)).unwrap();
            last_frame = Instant::now();
            frames += 1;
        }
        slowest = slowest.max(t.elapsed().as_secs_f64() * 1000.0);
        if producer.is_finished() && inbox.is_empty() && rx.is_empty() {
            break;
        }
        if turn.folded == 0 {
            // The live loop sleeps until the channel has something; a millisecond is close.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let sent = producer.join().unwrap();
    let s = inbox.stats();
    Intake {
        sent,
        secs: start.elapsed().as_secs_f64(),
        channel_peak,
        inbox_peak: s.peak,
        coalesced: s.coalesced,
        dropped: s.dropped,
        frames,
        slowest_turn_ms: slowest,
    }
}

fn main() {
    let mut app = model();

    // Ingest: progress events, the bulk of what a busy engine sends.
    let n = std::env::var_os("FEEDSCOPE_BENCH_FRAMES_ONLY").map_or(1_000_000u64, |_| 1_000);
    let events: Vec<Event> = (0..n).map(progress).collect();
    let t = Instant::now();
    for (i, e) in events.iter().enumerate() {
        app.on_event(e, 1.0 + i as f64 * 1e-6);
    }
    let ingest = n as f64 / t.elapsed().as_secs_f64();

    // Wall time per frame (the median, which a busy machine's preemptions do not move) and the
    // thread's CPU time per frame (from /proc, in nanoseconds).
    let mut frames = Vec::new();
    for (w, h, tabs) in [
        (80u16, 24u16, 0),
        (160, 48, 0),
        (240, 70, 0),
        (240, 70, 2),
        (240, 70, 3),
    ] {
        // Tabs from the first pane: 2 is the Active pane, 5 more the Log.
        for _ in 0..tabs {
            app.on_terminal(&TermEvent::Key(KeyEvent::new(
                KeyCode::Tab,
                KeyModifiers::NONE,
            )));
        }
        let pane = ["", "", ", Active pane", ", Log pane"][tabs.min(3)];
        let (wall, cpu) = time_frames(&mut app, w, h);
        frames.push((format!("{w}×{h}{pane}"), wall, cpu));
    }
    let (wall, cpu) = time_frames(&mut hub_peer(), 240, 70);
    frames.push((
        "240×70, one peer offering 10,000 feeds".to_string(),
        wall,
        cpu,
    ));

    println!("| UI, {PEERS} peers × {FEEDS} feeds in the model | feedscope | target |");
    println!("| --- | --- | --- |");
    println!(
        "| model ingest (progress events) | {:.0} events/s | ≥ 200,000 events/s |",
        ingest
    );
    for (at, ms, cpu) in frames {
        let cpu = cpu.map_or(String::new(), |c| format!(", {c:.3} ms CPU"));
        println!("| full frame at {at} | {ms:.3} ms{cpu} | ≤ 2 ms |");
    }

    if std::env::var_os("FEEDSCOPE_BENCH_FRAMES_ONLY").is_some() {
        return;
    }
    // Progress of every feed every 100 ms (the engine's most), then the same with a
    // `--trace-wire` line for every progress event, then an engine sending as fast as it can.
    let runs = [
        ("progress, 100,000/s", intake(3.0, 100, false, 0)),
        (
            "progress + wire lines, 200,000/s",
            intake(3.0, 200, false, 2),
        ),
        (
            "progress, as fast as one thread sends",
            intake(2.0, 1_000, true, 0),
        ),
        (
            "progress + wire, as fast as one thread sends",
            intake(2.0, 1_000, true, 2),
        ),
    ];
    println!();
    println!("| engine sends | events/s | channel peak | inbox peak | coalesced | dropped | frames | slowest turn |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (what, r) in runs {
        println!(
            "| {what} | {:.0} | {} | {} | {} | {} | {} in {:.1} s | {:.1} ms |",
            r.sent as f64 / r.secs,
            r.channel_peak,
            r.inbox_peak,
            r.coalesced,
            r.dropped,
            r.frames,
            r.secs,
            r.slowest_turn_ms
        );
    }
}
