//! Replication speed, feedscope ↔ feedscope in one process, on the workloads and speed targets
//! feedscope holds itself to, beside the JavaScript baseline of the same wire where there is
//! one: JS hypercore 10 ↔ JS hypercore 10 for the hypercore 10 rows, JS multifeed 6 ↔ JS
//! multifeed 6 (hypercore 9 on hypercore-protocol 8, Cabal's wire) for the `hc9-` rows. Each
//! wire's rows print in a table of their own, whose JS column names that baseline.
//!
//! `cargo bench --locked --bench replication` prints a table and writes it as JSON to
//! `target/bench-replication.json`. Arguments after `--` make a partial run, which leaves the
//! JSON file alone: words select the workloads whose id contains them (e.g. `one-feed-1k`;
//! the `hc9-` rows only for words that contain `hc9`, e.g. `hc9` or `hc9-one-feed-1k`),
//! `--no-js` skips the JS baseline, and `--blocks=N` sets the block count of the one-feed
//! workloads (smaller runs for profilers).
//!
//! Both engines share this process and its tokio runtime. Every "from connect" time starts just
//! before the dialing engine starts, so it includes its TCP connect, the Noise handshake and the
//! multifeed exchange. MB is 10^6 bytes.
//!
//! The `hc9-` rows (`cargo bench --locked --bench replication -- hc9`) all move one feed from a
//! listener to a dialer that downloads it, and time them the same way: from the moment the
//! downloader connects to the moment the bench learns that it holds every block. When feedscope
//! downloads, the clock starts just before its engine starts dialing (so engine start, TCP
//! connect, Noise handshake and the multifeed exchange are all inside) and stops when the bench
//! receives its `feed_synced` at full length. When JS multifeed 6 downloads (`tests/js-cabal/
//! peer.js --digest`, in its own node process), the clock starts when the bench reads the
//! dialer's `connected` line (the TCP connection is up, before the handshake) and stops when it
//! reads its `synced` line, which peer.js prints once it holds every block and has hashed them
//! as they arrived. The JS ↔ JS baseline is two such processes, measured by this bench exactly
//! as the feedscope → JS row is. After every run the receiver's blocks are checked byte-exact:
//! the SHA-256 of what it holds (read back from its storage after the clock stops, on the
//! feedscope side) against the SHA-256 of what was sent.
//!
//! Over 600 lines on purpose: each workload sits beside the target it is held to and the row
//! it prints, so that one file shows what is measured, against what, and how it is reported.
//! The machinery it shares with the tests is in their kit (`tests/common/`).
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::engines::{
    cpu_seconds, expected_digest, held_digest, launch, launch_with, listening, peak_rss,
    reset_peak_rss, seeded, wait_events, FeedSpec, Pair, Side, Stamped, SyncTracker,
};
use common::js::{self, JsPeer};
use common::js_cabal;
use common::kit;
use feedscope::event::{Command, Event, Wire};
use feedscope::wire::FeedKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::block_in_place;

/// Longest any one workload may run before it reports a timeout.
const BUDGET: Duration = Duration::from_secs(120);
const KIB: usize = 1024;
const LIVE_SAMPLES: usize = 500;

/// A figure we measured, with a detail for the reader (e.g. the time behind a rate).
struct Measure {
    value: f64,
    unit: &'static str,
    note: String,
}

impl Measure {
    fn text(&self) -> String {
        let value = match self.unit {
            "s" => format!("{:.2} s", self.value),
            "ms" => format!("{:.2} ms", self.value),
            unit => format!("{:.1} {unit}", self.value),
        };
        if self.note.is_empty() {
            value
        } else {
            format!("{value} ({})", self.note)
        }
    }
}

enum Target {
    AtMost(f64),
    /// At least the JS ↔ JS rate of the same workload.
    AtLeastJs,
    /// At least this many times the JS ↔ JS rate of the same workload.
    AtLeastTimesJs(f64),
    /// Finishing is the target.
    Finish,
}

struct Row {
    id: &'static str,
    /// The wire of the workload, and so the JS baseline its JS column holds.
    wire: Wire,
    workload: String,
    ours: Result<Measure, String>,
    /// The JS rate in MB/s, or why there is none; `None` where no JS baseline applies.
    js: Option<Result<f64, String>>,
    target_text: &'static str,
    target: Target,
}

impl Row {
    fn new(
        id: &'static str,
        workload: impl Into<String>,
        ours: Result<Measure, String>,
        target_text: &'static str,
        target: Target,
    ) -> Row {
        Row {
            id,
            wire: Wire::Hc10,
            workload: workload.into(),
            ours,
            js: None,
            target_text,
            target,
        }
    }

    fn ratio(&self) -> Option<f64> {
        match (&self.ours, &self.js) {
            (Ok(m), Some(Ok(js))) if *js > 0.0 => Some(m.value / js),
            _ => None,
        }
    }

    fn met(&self) -> bool {
        match (&self.ours, &self.target) {
            (Ok(m), Target::AtMost(t)) => m.value <= *t,
            (Ok(_), Target::Finish) => true,
            (Ok(_), Target::AtLeastJs) => self.ratio().is_some_and(|r| r >= 1.0),
            (Ok(_), Target::AtLeastTimesJs(x)) => self.ratio().is_some_and(|r| r >= *x),
            (Err(_), _) => false,
        }
    }
}

fn elapsed(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

fn timeout_text(what: &str) -> String {
    format!("did not finish in {} s: {what}", BUDGET.as_secs())
}

/// One feed of `blocks` × `size` bytes of generation `wire` from A to B, B dialing on that
/// wire: MB/s from connect to synced, once B's storage is found to hold exactly those bytes.
async fn one_feed(wire: Wire, blocks: usize, size: usize) -> Result<Measure, String> {
    let (a_dir, keys) = seeded(&[FeedSpec::new("bulk", blocks, size).on(wire)]).await;
    let b_dir = tempfile::tempdir().expect("temporary storage");
    let mut pair = Pair::start_on(a_dir, b_dir, wire).await;
    let t0 = pair.t0;
    let mut sync = SyncTracker::new([(Side::B, keys[0])], blocks as u64);
    let end = pair.wait(t0 + BUDGET, |ev| sync.observe(ev)).await;
    let b_dir = pair.stop_keeping_b().await;
    let secs = elapsed(t0, end.ok_or_else(|| timeout_text(&sync.describe()))?);
    check_held(b_dir.path(), &keys[0], blocks, size).await?;
    Ok(rate(blocks * size, secs))
}

/// Whether the storage folder `dir` holds feed `key` as the kit's `bulk` blocks, byte-exact.
async fn check_held(
    dir: &std::path::Path,
    key: &FeedKey,
    blocks: usize,
    size: usize,
) -> Result<(), String> {
    let held = held_digest(dir, key, blocks as u64).await?;
    if held == expected_digest("bulk", blocks, size) {
        Ok(())
    } else {
        Err("the receiver holds other bytes than were sent".into())
    }
}

/// One feed of `blocks` × 1 KiB from A to B (time from connect to synced, and the peak RSS of
/// both engines), then how long B's storage takes to open again.
async fn million(blocks: usize) -> Vec<Row> {
    let workload = format!("1 feed × {blocks} × 1 KiB");
    let (a_dir, keys) = seeded(&[FeedSpec::new("million", blocks, KIB)]).await;
    reset_peak_rss();
    let b_dir = tempfile::tempdir().expect("temporary storage");
    // Both engines of the pair run in this process; the bench only waits for their events.
    let cpu0 = cpu_seconds("self");
    let mut pair = Pair::start(a_dir, b_dir).await;
    let t0 = pair.t0;
    let mut sync = SyncTracker::new([(Side::B, keys[0])], blocks as u64);
    let end = pair
        .wait(t0 + 2 * BUDGET, |ev| sync.observe(ev))
        .await
        .ok_or_else(|| timeout_text(&sync.describe()));
    let cpu1 = cpu_seconds("self");
    let (user, system) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let cpu = user + system;
    let rss = peak_rss();
    let b_dir = pair.stop_keeping_b().await;
    let time = end.map(|end| Measure {
        value: elapsed(t0, end),
        unit: "s",
        note: format!("{:.1} MB/s", (blocks * KIB) as f64 / elapsed(t0, end) / 1e6),
    });
    let rss = rss.map_or(Err("no /proc/self/status".to_string()), |b| {
        Ok(Measure {
            value: b as f64 / 1e6,
            unit: "MB",
            note: String::new(),
        })
    });
    let started = Instant::now();
    let opened = match feedscope::store::Store::open(b_dir.path()).await {
        Ok(store) => {
            let took = started.elapsed().as_secs_f64() * 1e3;
            let held = match store.get(&keys[0]) {
                Some(feed) => feed.core.lock().await.held(),
                None => 0,
            };
            if held == blocks as u64 {
                Ok(Measure {
                    value: took,
                    unit: "ms",
                    note: String::new(),
                })
            } else {
                Err(format!("reopened with {held} of {blocks} blocks"))
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let cpu_per_block = time.as_ref().map_err(Clone::clone).map(|_| Measure {
        value: cpu * 1e6 / blocks as f64,
        unit: "µs",
        note: format!("{user:.2} s user + {system:.2} s system"),
    });
    vec![
        Row::new(
            "million",
            format!("{workload}: connect → synced"),
            time,
            "≤ 10 s",
            Target::AtMost(10.0),
        ),
        Row::new(
            "million-cpu",
            format!("{workload}: CPU per block, both engines"),
            cpu_per_block,
            "≤ 8 µs",
            Target::AtMost(8.0),
        ),
        Row::new(
            "million-rss",
            format!("{workload}: peak RSS, both engines"),
            rss,
            "≤ 200 MB",
            Target::AtMost(200.0),
        ),
        Row::new(
            "million-open",
            format!("{workload}: opening the downloaded storage"),
            opened,
            "≤ 200 ms",
            Target::AtMost(200.0),
        ),
    ]
}

/// How long a JS peer may take to start and create its feed.
const JS_SETUP: Duration = Duration::from_secs(120);

fn rate(bytes: usize, secs: f64) -> Measure {
    Measure {
        value: bytes as f64 / secs / 1e6,
        unit: "MB/s",
        note: format!("{secs:.2} s"),
    }
}

/// Runs of each kind in the metrics row, alternating: the machine's load drifts, and
/// alternating spreads the drift over both kinds.
const SCRAPE_RUNS: usize = 10;
/// How often the scraper of the metrics row asks for `/metrics`.
const SCRAPE_EVERY: Duration = Duration::from_millis(10);

/// One `GET /metrics`, read to its end; whether it answered 200.
fn scrape_once(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_end(&mut answer).is_ok()
        && answer.starts_with(b"HTTP/1.1 200")
}

/// One feed of `blocks` × `size` bytes from A to B, as [`one_feed`]; with `scraped`, B serves
/// its metrics and a scraper thread asks for them every [`SCRAPE_EVERY`] until B has synced.
/// Returns the time from connect to synced and how long each answered scrape took.
async fn one_feed_scraped(
    blocks: usize,
    size: usize,
    scraped: bool,
) -> Result<(f64, Vec<Duration>), String> {
    let (a_dir, keys) = seeded(&[FeedSpec::new("bulk", blocks, size)]).await;
    let b_dir = tempfile::tempdir().expect("temporary storage");
    let config = feedscope::engine::Config {
        metrics: scraped.then(|| "127.0.0.1:0".to_string()),
        ..common::kit::config(b_dir.path(), false, vec![])
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut scraper = None;
    let mut pair = Pair::start_with(a_dir, b_dir, config).await;
    let t0 = pair.t0;
    let mut sync = SyncTracker::new([(Side::B, keys[0])], blocks as u64);
    let end = Pair::wait(&mut pair, t0 + BUDGET, |ev| {
        if let (Event::MetricsListening { addr }, None) = (&ev.event, &scraper) {
            let (addr, stop) = (addr.clone(), stop.clone());
            scraper = Some(std::thread::spawn(move || {
                let mut answered = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let asked = std::time::Instant::now();
                    if scrape_once(&addr) {
                        answered.push(asked.elapsed());
                    }
                    std::thread::sleep(SCRAPE_EVERY);
                }
                answered
            }));
        }
        sync.observe(ev)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = scraper
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    pair.stop().await;
    let secs = elapsed(t0, end.ok_or_else(|| timeout_text(&sync.describe()))?);
    if scraped && answered.is_empty() {
        return Err("the scraper got no answer".into());
    }
    Ok((secs, answered))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Replication of 10,000 × 1 KiB with and without a scraper polling `/metrics` every 10 ms,
/// [`SCRAPE_RUNS`] of each, alternating: the median rate of each, their spread, and the cost.
async fn metrics_rows(blocks: usize) -> Vec<Row> {
    let size = KIB;
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut scrapes: Vec<Duration> = Vec::new();
    let mut failed = None;
    for i in 0..2 * SCRAPE_RUNS {
        let scraped = i % 2 == 1;
        match one_feed_scraped(blocks, size, scraped).await {
            Ok((secs, answered)) => {
                rates[usize::from(scraped)].push((blocks * size) as f64 / secs / 1e6);
                scrapes.extend(answered);
            }
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        let row = |id, what: &str| Row::new(id, what, Err(e.clone()), "", Target::Finish);
        return vec![
            row("metrics-off", "metrics off"),
            row("metrics-on", "metrics on"),
        ];
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("median of {}, {lo:.1}–{hi:.1}", v.len())
    };
    let [mut off, mut on] = rates;
    let (off_text, on_text) = (spread(&off), spread(&on));
    let (off_m, on_m) = (median(&mut off), median(&mut on));
    let cost = (off_m - on_m) / off_m * 100.0;
    scrapes.sort();
    let ms = |q: f64| scrapes[((scrapes.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let (p50, p99, count) = (ms(0.5), ms(0.99), scrapes.len());
    vec![
        Row::new(
            "metrics-off",
            format!("1 feed × {blocks} × 1 KiB, no metrics endpoint"),
            Ok(Measure {
                value: off_m,
                unit: "MB/s",
                note: off_text,
            }),
            "",
            Target::Finish,
        ),
        Row::new(
            "metrics-on",
            format!("the same, /metrics scraped every 10 ms ({count} scrapes)"),
            Ok(Measure {
                value: on_m,
                unit: "MB/s",
                note: on_text,
            }),
            "",
            Target::Finish,
        ),
        Row::new(
            "metrics-cost",
            "slower with the scraper than without (median vs median)",
            Ok(Measure {
                value: cost,
                unit: "%",
                note: String::new(),
            }),
            "≤ 5 %",
            Target::AtMost(5.0),
        ),
        Row::new(
            "metrics-scrape-p99",
            "one scrape during the transfer, request to last byte, p99",
            Ok(Measure {
                value: p99,
                unit: "ms",
                note: format!("p50 {p50:.2} ms"),
            }),
            "≤ 50 ms",
            Target::AtMost(50.0),
        ),
    ]
}

/// JS hypercore 10 (`peer.mjs`) serves one feed of `blocks` × `size` bytes and feedscope
/// downloads it: MB/s from just before feedscope starts dialing to its `feed_synced`.
async fn js_to_feedscope(blocks: usize, size: usize) -> Result<Measure, String> {
    let (count, bytes) = (blocks.to_string(), size.to_string());
    let args = [
        "--listen",
        "0",
        "--feeds",
        "1",
        "--blocks",
        &count,
        "--block-size",
        &bytes,
    ];
    let mut js = block_in_place(|| JsPeer::spawn(&args))?;
    let (_, created) =
        block_in_place(|| js.wait_stamped(JS_SETUP, |v| v["type"] == "feed_created"))?;
    let (_, listening) =
        block_in_place(|| js.wait_stamped(JS_SETUP, |v| v["type"] == "listening"))?;
    let key = FeedKey::parse(created["key"].as_str().unwrap_or_default())
        .map_err(|e| format!("peer.mjs made a feed with a bad key: {e}"))?;
    let addr = format!("127.0.0.1:{}", listening["port"]);
    let dir = tempfile::tempdir().expect("temporary storage");
    let (tx, mut events) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let node = launch(Side::B, dir, None, vec![addr], tx).await;
    let mut sync = SyncTracker::new([(Side::B, key)], blocks as u64);
    let end = wait_events(&mut events, t0 + BUDGET, |ev| sync.observe(ev)).await;
    node.stop().await;
    block_in_place(|| js.stop());
    let secs = elapsed(t0, end.ok_or_else(|| timeout_text(&sync.describe()))?);
    Ok(rate(blocks * size, secs))
}

/// feedscope serves one feed of `blocks` × `size` bytes and JS hypercore 10 (`peer.mjs`)
/// downloads it: MB/s from the JS peer's `connected` to its `synced`, as in the JS ↔ JS
/// baseline, after checking the SHA-256 of what it holds.
async fn feedscope_to_js(blocks: usize, size: usize) -> Result<Measure, String> {
    let (dir, keys) = seeded(&[FeedSpec::new("bulk", blocks, size)]).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let node = launch(Side::A, dir, Some("127.0.0.1:0".into()), vec![], tx).await;
    let addr = listening(&mut events, JS_SETUP)
        .await
        .ok_or("the feedscope engine did not listen")?;
    let measured = async {
        let mut js = block_in_place(|| JsPeer::spawn(&["--connect", &addr]))?;
        let (t0, _) = block_in_place(|| js.wait_stamped(JS_SETUP, |v| v["type"] == "connected"))?;
        let key = keys[0].to_hex();
        let synced = block_in_place(|| {
            js.wait_stamped(BUDGET, |v| {
                v["type"] == "synced" && v["key"] == key.as_str() && v["length"] == blocks
            })
        });
        block_in_place(|| js.stop());
        let (end, synced) = synced?;
        let mut expected = Sha256::new();
        for i in 0..blocks {
            expected.update(kit::block("bulk", i, size));
        }
        if synced["digest"] != hex::encode(expected.finalize()).as_str() {
            return Err(format!("JS holds other bytes than were sent: {synced}"));
        }
        Ok(rate(blocks * size, elapsed(t0, end)))
    }
    .await;
    node.stop().await;
    measured
}

/// JS multifeed 6 (`tests/js-cabal/peer.js`) serves one feed of `blocks` × `size` bytes and
/// feedscope dials it on Cabal's wire and downloads it: MB/s from just before feedscope starts
/// dialing to its `feed_synced`, once its storage is found to hold exactly those bytes.
async fn hc9_js_to_feedscope(blocks: usize, size: usize) -> Result<Measure, String> {
    let (js, addr, key) = block_in_place(|| js_cabal::serve("bulk", blocks, size, JS_SETUP))?;
    let key =
        FeedKey::parse(&key).map_err(|e| format!("peer.js made a feed with a bad key: {e}"))?;
    let dir = tempfile::tempdir().expect("temporary storage");
    let config = feedscope::engine::Config {
        wire: Wire::Hc9,
        ..kit::config(dir.path(), false, vec![addr])
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let node = launch_with(Side::B, dir, config, tx).await;
    let mut sync = SyncTracker::new([(Side::B, key)], blocks as u64);
    let end = wait_events(&mut events, t0 + BUDGET, |ev| sync.observe(ev)).await;
    let dir = node.stop_keeping().await;
    drop(js);
    let secs = elapsed(t0, end.ok_or_else(|| timeout_text(&sync.describe()))?);
    check_held(dir.path(), &key, blocks, size).await?;
    Ok(rate(blocks * size, secs))
}

/// feedscope serves one hypercore 9 feed of `blocks` × `size` bytes and JS multifeed 6 dials it
/// and downloads it: MB/s as [`js_cabal::download`] times it, after its digest check.
async fn hc9_feedscope_to_js(blocks: usize, size: usize) -> Result<Measure, String> {
    let (dir, keys) = seeded(&[FeedSpec::new("bulk", blocks, size).on(Wire::Hc9)]).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let node = launch(Side::A, dir, Some("127.0.0.1:0".into()), vec![], tx).await;
    let measured = match listening(&mut events, JS_SETUP).await {
        Some(addr) => block_in_place(|| {
            js_cabal::download(&addr, &keys[0].to_hex(), ("bulk", blocks, size), BUDGET)
        }),
        None => Err("the feedscope engine did not listen".into()),
    };
    node.stop().await;
    Ok(rate(blocks * size, measured?))
}

/// 25 feeds on each side, each 1,000 × 1 KiB, replicated both ways on one connection.
async fn both_ways() -> Result<Measure, String> {
    let specs = |prefix: &str| -> Vec<FeedSpec> {
        (0..25)
            .map(|i| FeedSpec::new(format!("{prefix}{i}"), 1_000, KIB))
            .collect()
    };
    let (a_dir, a_keys) = seeded(&specs("a")).await;
    let (b_dir, b_keys) = seeded(&specs("b")).await;
    let expected = a_keys
        .iter()
        .map(|k| (Side::B, *k))
        .chain(b_keys.iter().map(|k| (Side::A, *k)));
    let mut sync = SyncTracker::new(expected, 1_000);
    let mut pair = Pair::start(a_dir, b_dir).await;
    let t0 = pair.t0;
    let end = pair.wait(t0 + BUDGET, |ev| sync.observe(ev)).await;
    pair.stop().await;
    let secs = elapsed(t0, end.ok_or_else(|| timeout_text(&sync.describe()))?);
    Ok(Measure {
        value: secs,
        unit: "s",
        note: String::new(),
    })
}

/// 1,000 feeds × 100 × 1 KiB offered by A: time to the last REPLICATE_FEEDS that A sends,
/// time until B holds them all, and the process's peak RSS meanwhile.
async fn thousand_feeds() -> Vec<Row> {
    let specs: Vec<FeedSpec> = (0..1_000)
        .map(|i| FeedSpec::new(format!("f{i}"), 100, KIB))
        .collect();
    let (a_dir, keys) = seeded(&specs).await;
    let b_dir = tempfile::tempdir().expect("temporary storage");
    // Seeding is set-up: the peak that counts starts here.
    let rss_reset = reset_peak_rss();
    let mut unserved: HashSet<_> = keys.iter().copied().collect();
    let mut served_at = None;
    let mut sync = SyncTracker::new(keys.iter().map(|k| (Side::B, *k)), 100);
    let mut pair = Pair::start(a_dir, b_dir).await;
    let t0 = pair.t0;
    let end = pair
        .wait(t0 + BUDGET, |ev| {
            if let (Side::A, Event::ReplicateSent { keys, .. }) = (ev.side, &ev.event) {
                for key in keys {
                    unserved.remove(key);
                }
                if unserved.is_empty() && served_at.is_none() {
                    served_at = Some(ev.at);
                }
            }
            sync.observe(ev)
        })
        .await;
    let rss = peak_rss();
    pair.stop().await;

    let served = match served_at {
        Some(at) => Ok(Measure {
            value: elapsed(t0, at) * 1e3,
            unit: "ms",
            note: String::new(),
        }),
        None => Err(timeout_text(&format!(
            "{}/1000 keys in REPLICATE_FEEDS",
            1_000 - unserved.len()
        ))),
    };
    let synced = match end {
        Some(at) => Ok(Measure {
            value: elapsed(t0, at),
            unit: "s",
            note: String::new(),
        }),
        None => Err(timeout_text(&sync.describe())),
    };
    let rss = match rss {
        Some(bytes) => Ok(Measure {
            value: bytes as f64 / 1e6,
            unit: "MB",
            note: if rss_reset {
                "both engines".into()
            } else {
                "both engines, seeding included".into()
            },
        }),
        None => Err("cannot read VmHWM from /proc/self/status".into()),
    };
    vec![
        Row::new(
            "thousand-feeds-offer",
            "1,000 feeds: connect → every REPLICATE_FEEDS sent",
            served,
            "≤ 250 ms",
            Target::AtMost(250.0),
        ),
        Row::new(
            "thousand-feeds-sync",
            "1,000 feeds × 100 × 1 KiB: connect → all synced",
            synced,
            "all synced, no stall",
            Target::Finish,
        ),
        Row::new(
            "thousand-feeds-rss",
            "peak RSS during the 1,000-feed run",
            rss,
            "≤ 150 MB",
            Target::AtMost(150.0),
        ),
    ]
}

/// After a sync, single 1 KiB appends on A, one at a time: append → FeedSynced on B.
/// Returns p50 and p99 in ms.
async fn live() -> Result<(Measure, Measure), String> {
    let (a_dir, keys) = seeded(&[FeedSpec::new("live", 1, KIB)]).await;
    let key = keys[0];
    let b_dir = tempfile::tempdir().expect("temporary storage");
    let mut pair = Pair::start(a_dir, b_dir).await;
    let deadline = pair.t0 + BUDGET;
    let synced_at = |length: u64| {
        move |ev: &Stamped| {
            ev.side == Side::B
                && matches!(ev.event, Event::FeedSynced { key: k, length: l, .. } if k == key && l == length)
        }
    };
    let mut samples = Vec::with_capacity(LIVE_SAMPLES);
    let mut outcome = Ok(());
    if pair.wait(deadline, synced_at(1)).await.is_none() {
        outcome = Err(timeout_text("the first block never synced"));
    }
    for i in 0..LIVE_SAMPLES {
        if outcome.is_err() {
            break;
        }
        let data = String::from_utf8(kit::block("live", i + 1, KIB)).expect("ASCII block");
        let sent = Instant::now();
        let _ = pair.a.commands.send(Command::Append {
            feed: "live".into(),
            data: Some(data),
            data_hex: None,
        });
        match pair.wait(deadline, synced_at(i as u64 + 2)).await {
            Some(at) => samples.push(at.saturating_duration_since(sent)),
            None => outcome = Err(timeout_text(&format!("{i}/{LIVE_SAMPLES} samples"))),
        }
    }
    pair.stop().await;
    outcome?;
    samples.sort();
    let quantile = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        Measure {
            value: samples[rank - 1].as_secs_f64() * 1e3,
            unit: "ms",
            note: String::new(),
        }
    };
    Ok((quantile(0.50), quantile(0.99)))
}

/// What the command line asks for.
struct Options {
    filters: Vec<String>,
    js: bool,
    blocks: Option<usize>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            filters: Vec::new(),
            js: true,
            blocks: None,
        };
        // `cargo bench` passes `--bench`, which is ignored like any unknown option.
        for arg in std::env::args().skip(1) {
            if arg == "--no-js" {
                options.js = false;
            } else if let Some(n) = arg.strip_prefix("--blocks=") {
                options.blocks = Some(n.parse().expect("--blocks=N takes a number"));
            } else if !arg.starts_with("--") {
                options.filters.push(arg);
            }
        }
        options
    }

    /// Whether a word selects workload `id`. The `hc9-` rows are selected only by words that
    /// say `hc9`, so that `one-feed-1k` keeps meaning the hypercore 10 row.
    fn selected(&self, id: &str) -> bool {
        let hc9 = id.starts_with("hc9-");
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| id.contains(f.as_str()) && (!hc9 || f.contains("hc9")))
    }

    fn full(&self) -> bool {
        self.filters.is_empty() && self.js && self.blocks.is_none()
    }
}

/// JS ↔ JS rates by wire and workload (blocks, block size), each measured once per run.
type Baselines = HashMap<(Wire, usize, usize), Result<f64, String>>;

async fn baseline(
    baselines: &mut Baselines,
    wire: Wire,
    blocks: usize,
    size: usize,
) -> Result<f64, String> {
    if let Some(known) = baselines.get(&(wire, blocks, size)) {
        return known.clone();
    }
    let measured = match wire {
        Wire::Hc10 => js::baseline(blocks, size).await,
        Wire::Hc9 => block_in_place(|| js_cabal::baseline(blocks, size, BUDGET)),
    };
    baselines.insert((wire, blocks, size), measured.clone());
    measured
}

/// feedscope ↔ feedscope on `wire`, held to `times` that wire's JS ↔ JS rate (JS hypercore
/// 10, or JS multifeed 6 on Cabal's wire); not met without the JS baseline (`--no-js`).
async fn one_feed_row(
    options: &Options,
    baselines: &mut Baselines,
    id: &'static str,
    (blocks, size): (usize, usize),
    (target_text, times): (&'static str, f64),
    wire: Wire,
) -> Row {
    let blocks = options.blocks.unwrap_or(blocks);
    let pair = match wire {
        Wire::Hc10 => "",
        Wire::Hc9 => "feedscope ↔ feedscope, ",
    };
    let mut row = Row::new(
        id,
        format!("{pair}1 feed × {blocks} × {} KiB", size / KIB),
        one_feed(wire, blocks, size).await,
        target_text,
        Target::AtLeastTimesJs(times),
    );
    row.wire = wire;
    if options.js {
        row.js = Some(baseline(baselines, wire, blocks, size).await);
    }
    row
}

/// feedscope with the JS peer of `wire` (JS hypercore 10, or JS multifeed 6 on Cabal's wire),
/// one direction, beside that wire's JS ↔ JS rate.
async fn mixed_row(
    options: &Options,
    baselines: &mut Baselines,
    id: &'static str,
    (blocks, size): (usize, usize),
    js_serves: bool,
    wire: Wire,
) -> Row {
    let blocks = options.blocks.unwrap_or(blocks);
    let (what, measured) = match (wire, js_serves) {
        (Wire::Hc10, true) => ("JS → feedscope", js_to_feedscope(blocks, size).await),
        (Wire::Hc10, false) => ("feedscope → JS", feedscope_to_js(blocks, size).await),
        (Wire::Hc9, true) => ("JS → feedscope", hc9_js_to_feedscope(blocks, size).await),
        (Wire::Hc9, false) => ("feedscope → JS", hc9_feedscope_to_js(blocks, size).await),
    };
    let mut row = Row::new(
        id,
        format!("{what}, 1 feed × {blocks} × {} KiB", size / KIB),
        measured,
        "≥ JS ↔ JS",
        Target::AtLeastJs,
    );
    row.wire = wire;
    row.js = Some(baseline(baselines, wire, blocks, size).await);
    row
}

async fn run(options: &Options) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut baselines = Baselines::new();
    let b = &mut baselines;
    let selected = |id: &str| {
        let yes = options.selected(id);
        if yes {
            eprintln!("running {id} …");
        }
        yes
    };
    // feedscope ↔ feedscope, then with the JS peer at the other end (which needs node, so
    // `--no-js` leaves those out): hypercore 10 against JS hypercore 10 ↔ JS, then Cabal's
    // wire against JS multifeed 6 ↔ JS multifeed 6.
    type Own = [(&'static str, (usize, usize), (&'static str, f64)); 2];
    type Mixed = [(&'static str, (usize, usize), bool); 4];
    let plans: [(Wire, Own, Mixed); 2] = [
        (
            Wire::Hc10,
            [
                ("one-feed-1k", (10_000, KIB), ("≥ 25× JS ↔ JS", 25.0)),
                ("one-feed-64k", (1_000, 64 * KIB), ("≥ 5× JS ↔ JS", 5.0)),
            ],
            [
                ("js-to-feedscope-1k", (10_000, KIB), true),
                ("feedscope-to-js-1k", (10_000, KIB), false),
                ("js-to-feedscope-64k", (1_000, 64 * KIB), true),
                ("feedscope-to-js-64k", (1_000, 64 * KIB), false),
            ],
        ),
        (
            Wire::Hc9,
            [
                ("hc9-one-feed-1k", (10_000, KIB), ("≥ 10× JS ↔ JS", 10.0)),
                ("hc9-one-feed-64k", (1_000, 64 * KIB), ("≥ 4× JS ↔ JS", 4.0)),
            ],
            [
                ("hc9-js-to-feedscope-1k", (10_000, KIB), true),
                ("hc9-feedscope-to-js-1k", (10_000, KIB), false),
                ("hc9-js-to-feedscope-64k", (1_000, 64 * KIB), true),
                ("hc9-feedscope-to-js-64k", (1_000, 64 * KIB), false),
            ],
        ),
    ];
    for (wire, own, mixed) in plans {
        for (id, workload, target) in own {
            if selected(id) {
                rows.push(one_feed_row(options, b, id, workload, target, wire).await);
            }
        }
        for (id, workload, js_serves) in mixed {
            if options.js && selected(id) {
                rows.push(mixed_row(options, b, id, workload, js_serves, wire).await);
            }
        }
    }
    if selected("both-ways") {
        rows.push(Row::new(
            "both-ways",
            "50 feeds (25 per side) × 1,000 × 1 KiB, both ways",
            both_ways().await,
            "≤ 0.25 s",
            Target::AtMost(0.25),
        ));
    }
    if selected("live") {
        let (p50, p99) = match live().await {
            Ok((p50, p99)) => (Ok(p50), Ok(p99)),
            Err(e) => (Err(e.clone()), Err(e)),
        };
        rows.push(Row::new(
            "live-p50",
            "live append → synced on the reader, p50 of 500",
            p50,
            "≤ 2 ms",
            Target::AtMost(2.0),
        ));
        rows.push(Row::new(
            "live-p99",
            "live append → synced on the reader, p99 of 500",
            p99,
            "≤ 20 ms",
            Target::AtMost(20.0),
        ));
    }
    if selected("metrics") {
        rows.extend(metrics_rows(options.blocks.unwrap_or(10_000)).await);
    }
    if selected("million") {
        rows.extend(million(options.blocks.unwrap_or(1_000_000)).await);
    }
    // Last, so that the heavier storage of this run does not weigh on the others.
    if selected("thousand-feeds") {
        rows.extend(thousand_feeds().await);
    }
    rows
}

/// One table per wire, each naming its JS ↔ JS baseline, then why a baseline is missing.
fn print_tables(rows: &[Row]) {
    for (wire, title, js_header) in [
        (Wire::Hc10, "hypercore 10", "JS hypercore 10 ↔ JS"),
        (Wire::Hc9, "Cabal's wire (hc9)", "JS multifeed 6 ↔ JS (hc9)"),
    ] {
        let of_wire: Vec<&Row> = rows.iter().filter(|r| r.wire == wire).collect();
        if !of_wire.is_empty() {
            println!("\n{title}; ratio = feedscope / {js_header}\n");
            print_table(&of_wire, js_header);
        }
    }
    let mut reasons: Vec<&String> = rows
        .iter()
        .filter_map(|r| match &r.js {
            Some(Err(e)) => Some(e),
            _ => None,
        })
        .collect();
    reasons.dedup();
    for reason in reasons {
        println!("JS n/a: {reason}");
    }
}

fn print_table(rows: &[&Row], js_header: &str) {
    let header = ["workload", "feedscope", js_header, "ratio", "target", "met"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.workload.clone(),
                match &r.ours {
                    Ok(m) => m.text(),
                    Err(e) => e.clone(),
                },
                match &r.js {
                    None => "—".into(),
                    Some(Ok(rate)) => format!("{rate:.1} MB/s"),
                    Some(Err(_)) => "n/a".into(),
                },
                r.ratio().map_or("—".into(), |x| format!("{x:.1}×")),
                r.target_text.to_string(),
                if r.met() { "yes" } else { "NO" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&header.map(String::from));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(row);
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "os": std::env::consts::OS,
    })
}

fn to_json(rows: &[Row]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (value, unit, note) = match &r.ours {
                Ok(m) => (json!(m.value), json!(m.unit), json!(m.note)),
                Err(e) => (Value::Null, Value::Null, json!(e)),
            };
            let (js, js_note) = match &r.js {
                None => (Value::Null, Value::Null),
                Some(Ok(rate)) => (json!(rate), Value::Null),
                Some(Err(e)) => (Value::Null, json!(e)),
            };
            json!({
                "id": r.id,
                "wire": r.wire.as_str(),
                "workload": r.workload,
                "feedscope": value,
                "unit": unit,
                "note": note,
                "js_mb_per_s": js,
                "js_note": js_note,
                "ratio": r.ratio(),
                "target": r.target_text,
                "met": r.met(),
            })
        })
        .collect();
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({ "unix_time": unix_time, "machine": machine(), "rows": rows })
}

fn main() {
    // The 1,000-feed run holds 8,000 files open, as the feedscope binary would be allowed to.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(run(&options));
    print_tables(&rows);
    if options.full() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-replication.json");
        let text = serde_json::to_string_pretty(&to_json(&rows)).expect("JSON");
        match std::fs::write(&path, text + "\n") {
            Ok(()) => println!("written to {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}
