//! The UI's cost with 1,000 peers × 10 feeds in the model: how fast the model folds events,
//! and how long a full frame takes to render. `cargo bench --locked --bench tui`.

use std::collections::BTreeMap;
use std::time::Instant;

use feedscope::event::{Event, Wire};
use feedscope::tui::app::{App, Settings};
use feedscope::tui::view;
use feedscope::wire::FeedKey;
use ratatui::backend::TestBackend;
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
        let meta: BTreeMap<FeedKey, serde_json::Value> = keys
            .iter()
            .map(|k| {
                (
                    *k,
                    serde_json::json!({"name": "feed", "length": 100, "byte_length": 102400}),
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

fn main() {
    let mut app = App::new(Settings {
        key: "bee80ff3".into(),
        policy: "manual".into(),
        ..Default::default()
    });
    for (i, e) in setup_events().iter().enumerate() {
        app.on_event(e, i as f64 * 1e-6);
    }

    // Ingest: progress events, the bulk of what a busy engine sends.
    let n = 1_000_000u64;
    let progress: Vec<Event> = (0..n)
        .map(|i| Event::FeedProgress {
            peer: 1 + i % PEERS,
            key: key(1 + i % PEERS, (i / PEERS) % FEEDS),
            local_length: i / 1000,
            remote_length: 100_000,
            bytes: i * 1024,
        })
        .collect();
    let t = Instant::now();
    for (i, e) in progress.iter().enumerate() {
        app.on_event(e, 1.0 + i as f64 * 1e-6);
    }
    let ingest = n as f64 / t.elapsed().as_secs_f64();

    let mut frames = Vec::new();
    for (w, h) in [(80u16, 24u16), (160, 48), (240, 70)] {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let rounds = 300;
        // One warm-up frame, then the measured ones.
        term.draw(|f| view::render(f, &app)).unwrap();
        let t = Instant::now();
        for _ in 0..rounds {
            term.draw(|f| view::render(f, &app)).unwrap();
        }
        frames.push((w, h, t.elapsed().as_secs_f64() * 1000.0 / rounds as f64));
    }

    println!("| UI, {PEERS} peers × {FEEDS} feeds in the model | feedscope | target |");
    println!("| --- | --- | --- |");
    println!(
        "| model ingest (progress events) | {:.0} events/s | ≥ 200,000 events/s |",
        ingest
    );
    for (w, h, ms) in frames {
        println!("| full frame at {w}×{h} | {ms:.3} ms | ≤ 2 ms |");
    }
}
