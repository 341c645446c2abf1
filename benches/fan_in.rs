//! Many uploaders into one hub: N peers, each holding 10 feeds × 100 blocks of 1 KiB, dial one
//! `feedscope run` child with accept-all on empty storage. Prints the time from the first dial
//! to the hub holding every block of every feed, and the hub's peak RSS (`VmHWM`).
//!
//! ```sh
//! cargo bench --locked --bench fan_in              # 100, 300 and 1,000 peers
//! cargo bench --locked --bench fan_in -- 1000      # one count
//! ```
//!
//! The peers are engines in worker processes (this bench, started again), 100 to a process,
//! each process on one thread. They are uploaders: their
//! policy is manual and nobody approves, so the hub's offers (every feed of every other peer)
//! wait there and are never downloaded. The hub runs as its own process, so its figures are
//! its own. The CPU column is the time the hub and the uploaders' processes used until the
//! hub held everything. With `FAN_IN_LINES=1` the bench also tells how many JSON lines (and
//! bytes) of each type the hub printed, `FAN_IN_HUB=PATH` runs another build's hub,
//! `FAN_IN_HUB_LOG=FILE` keeps the hub's lines (all but the offers it sent),
//! `FAN_IN_HUB_SKIP=TYPES` has the hub leave those event types out of its lines (`run
//! --skip`; `offer_sent` are most of its bytes) and `FAN_IN_SEEDS=DIR` keeps the uploaders'
//! folders for the next run. The hubs' folders are deleted after the last run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kit;
use feedscope::engine::{self, Engine};
use feedscope::event::{Command, Event};
use feedscope::policy::Policy;

const FEEDS: usize = 10;
const BLOCKS: usize = 100;
const BLOCK_SIZE: usize = 1024;

/// Seeds the storage folders of `n` peers under `base` (the ones not seeded yet).
fn seed(rt: &tokio::runtime::Runtime, base: &Path, n: usize) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = (0..n).map(|i| base.join(format!("peer-{i}"))).collect();
    let began = Instant::now();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, dir) in dirs.iter().enumerate() {
            if dir.exists() {
                continue;
            }
            let dir = dir.clone();
            set.spawn(async move {
                let feeds: Vec<(String, Vec<Vec<u8>>)> = (0..FEEDS)
                    .map(|f| {
                        let name = format!("p{i}-f{f}");
                        let blocks = kit::blocks(&name, BLOCKS, BLOCK_SIZE).collect();
                        (name, blocks)
                    })
                    .collect();
                kit::seed(&dir, feeds).await.expect("a seeded peer");
            });
            // A few at a time: each seed syncs its feeds.
            while set.len() >= 16 {
                set.join_next().await.unwrap().expect("a seeding task");
            }
        }
        while let Some(r) = set.join_next().await {
            r.expect("a seeding task");
        }
    });
    eprintln!("seeded {n} peers in {:.1} s", began.elapsed().as_secs_f64());
    dirs
}

struct Figures {
    synced: Option<Duration>,
    /// CPU time of the hub and of every uploader together, until all was synced.
    cpu: (f64, f64),
    peak_rss: u64,
    rss_after: u64,
    fds_peak: usize,
}

/// CPU seconds (user and system together) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = common::engines::cpu_seconds(&pid.to_string());
    user + system
}

/// The hub's open descriptors. Linux 6.2 and later give the count as the size of
/// `/proc/PID/fd`; listing thousands of entries (older kernels) costs the cores the run
/// shares.
fn fds(pid: &str) -> usize {
    let dir = format!("/proc/{pid}/fd");
    match std::fs::metadata(&dir).map(|m| m.len()) {
        Ok(n) if n > 0 => n as usize,
        _ => std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0),
    }
}

/// Peers per worker process: each peer's engine holds its feeds' files, and one process may
/// hold only so many.
const PEERS_PER_WORKER: usize = 100;

/// A worker process: starts a peer engine on each folder named on the command line, dialing
/// `addr`, and quits them all when its stdin ends.
fn worker(addr: &str, dirs: &[String]) {
    // One thread: ten worker processes share the two cores with the hub, and a second
    // thread in each only adds wake-ups and switches between them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let began = Instant::now();
    rt.block_on(async {
        let mut commands = Vec::new();
        let mut drains = Vec::new();
        for dir in dirs {
            let mut config = kit::config(dir, false, vec![addr.to_string()]);
            config.policy = Policy::Manual;
            let Engine {
                commands: c,
                mut events,
                done,
            } = engine::start(config).await.expect("a peer starts");
            commands.push(c);
            // Every peer's events are read and dropped, so its channel does not grow; the
            // first errors and ends are told, so that a run that does not finish says why.
            let dir = dir.clone();
            drains.push(tokio::spawn(async move {
                let mut told = 0;
                while let Some(ev) = events.recv().await {
                    let why = match &ev {
                        Event::Error { message, .. } => format!("error: {message}"),
                        Event::PeerDisconnected { reason, .. }
                            if !reason.contains("shutting down") =>
                        {
                            format!("disconnected: {reason}")
                        }
                        _ => continue,
                    };
                    if told < 3 {
                        told += 1;
                        let t = began.elapsed().as_secs_f64();
                        eprintln!("uploader {dir} at {t:.0} s: {why}");
                    }
                }
                let _ = done.await;
            }));
        }
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
        })
        .await
        .unwrap();
        for c in &commands {
            let _ = c.send(Command::Quit);
        }
        for d in drains {
            let _ = tokio::time::timeout(Duration::from_secs(60), d).await;
        }
    });
}

/// What the hub's reader thread tells the bench.
enum Heard {
    Listening(String),
    /// Feeds the hub holds in full, when the line saying so was read.
    Synced(usize, Instant),
    Error(String),
}

/// Reads the hub's JSON lines, parsing only the few it needs: with 1,000 peers the hub reports
/// every offer it sends, millions of keys (gigabytes). Lines are read as bytes into one
/// buffer, and only those it needs are checked as text.
fn read_hub(stdout: std::process::ChildStdout, tx: std::sync::mpsc::Sender<Heard>) {
    use std::io::BufRead;
    let mut synced = HashSet::new();
    // FAN_IN_HUB_LOG=FILE keeps every line but the offers sent, for a run that goes wrong.
    let mut log = std::env::var_os("FAN_IN_HUB_LOG")
        .map(|f| std::io::BufWriter::new(std::fs::File::create(f).expect("the hub's log")));
    // Lines and bytes of each type, told at the end when FAN_IN_LINES is set.
    let count_lines = std::env::var_os("FAN_IN_LINES").is_some();
    let mut kinds: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, stdout);
    let mut bytes = Vec::new();
    let keep_all = log.is_some() || count_lines;
    loop {
        // Most lines are offers sent, which nothing here looks at: skipped in the reader's
        // buffer, not copied out.
        if !keep_all {
            match reader.fill_buf() {
                Ok([]) | Err(_) => break,
                // The start of this line only: a short line may end within the 40 bytes.
                Ok(buf) if buf.len() >= 40 && is_offer_sent(line_start(&buf[..40])) => {
                    match reader.skip_until(b'\n') {
                        Ok(0) | Err(_) => break,
                        Ok(_) => continue,
                    }
                }
                Ok(_) => {}
            }
        }
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]);
        let whole = || String::from_utf8_lossy(&bytes).trim_end().to_string();
        if let Some(log) = log.as_mut() {
            if !is_offer_sent(head.as_bytes()) {
                use std::io::Write;
                let _ = writeln!(log, "{}", whole().chars().take(1000).collect::<String>());
            }
        }
        if count_lines {
            let t = head.split('"').nth(3).unwrap_or("?").to_string();
            if t == "warning" && kinds.get("warning").is_none_or(|w| w.0 < 3) {
                eprintln!("hub: {}", whole().chars().take(700).collect::<String>());
            }
            let e = kinds.entry(t).or_default();
            e.0 += 1;
            e.1 += bytes.len() as u64;
        }
        let heard = if head.contains("\"feed_synced\"") {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if v["length"].as_u64() < Some(BLOCKS as u64) {
                continue;
            }
            synced.insert(v["key"].as_str().unwrap_or_default().to_string());
            Heard::Synced(synced.len(), Instant::now())
        } else if head.contains("\"listening\"") {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            Heard::Listening(v["addr"].as_str().unwrap_or_default().to_string())
        } else if head.contains("\"error\"") {
            Heard::Error(whole().chars().take(300).collect())
        } else {
            continue;
        };
        // Read on when nobody listens, so the hub never blocks on a full pipe.
        let _ = tx.send(heard);
    }
    for (k, (n, b)) in kinds {
        eprintln!("hub lines {k}: {n} lines, {b} bytes");
    }
}

/// `bytes` up to the first line break.
fn line_start(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == b'\n').next().unwrap_or(bytes)
}

/// Whether the start of a hub line is an `offer_sent` event's.
fn is_offer_sent(head: &[u8]) -> bool {
    head.windows(12).any(|w| w == b"\"offer_sent\"")
}

/// One run against a fresh hub; the hub's folder is returned, to be deleted after the
/// last run.
fn run(dirs: &[PathBuf]) -> (Figures, tempfile::TempDir) {
    let n = dirs.len();
    let hub_dir = tempfile::tempdir().expect("a temporary folder");
    let limit = (n + 16).to_string();
    // Another build's hub may be compared against the same uploaders.
    let hub_bin = std::env::var("FAN_IN_HUB").unwrap_or_else(|_| common::bin().to_string());
    let mut hub = std::process::Command::new(hub_bin)
        .args([
            "run",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--max-peers",
            &limit,
        ])
        .arg("--storage")
        .arg(hub_dir.path())
        .args(
            std::env::var("FAN_IN_HUB_SKIP")
                .map(|types| vec!["--skip".to_string(), types])
                .unwrap_or_default(),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the hub starts");
    let pid = hub.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = hub.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || read_hub(stdout, tx));
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Heard::Listening(addr)) => addr,
        _ => panic!("the hub did not listen"),
    };
    let exe = std::env::current_exe().expect("this bench's path");
    let began = Instant::now();
    let mut workers: Vec<std::process::Child> = dirs
        .chunks(PEERS_PER_WORKER)
        .map(|chunk| {
            std::process::Command::new(&exe)
                .arg("--worker")
                .arg(&addr)
                .args(chunk)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("a worker starts")
        })
        .collect();
    let expected = n * FEEDS;
    // Listing the hub's thousands of descriptors after every event took a fifth of the two
    // cores from the run it measures: ten times a second is enough for a peak.
    let (mut fds_peak, mut fds_counted) = (0, began);
    let deadline = began + Duration::from_secs(300);
    let (mut at, mut synced, mut errors) = (None, 0, Vec::new());
    let mut told = began;
    while Instant::now() < deadline && at.is_none() {
        if told.elapsed() >= Duration::from_secs(10) {
            told = Instant::now();
            let cpu = cpu_seconds(hub.id());
            let t = began.elapsed().as_secs_f64();
            eprintln!("{t:.0} s: {synced} of {expected} feeds synced, hub CPU {cpu:.1} s");
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Heard::Synced(count, when)) => {
                synced = count;
                if count >= expected {
                    at = Some(when.duration_since(began));
                }
            }
            Ok(Heard::Error(e)) if errors.len() < 5 => errors.push(e),
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if fds_counted.elapsed() >= Duration::from_millis(100) {
            fds_counted = Instant::now();
            fds_peak = fds_peak.max(fds(&pid));
        }
    }
    let cpu = (
        cpu_seconds(hub.id()),
        workers.iter().map(|w| cpu_seconds(w.id())).sum(),
    );
    if at.is_none() {
        eprintln!("{n} peers: only {synced} of {expected} feeds synced within 300 s");
    }
    if !errors.is_empty() {
        eprintln!("{n} peers: the hub reported errors, e.g. {errors:#?}");
    }
    let peak_rss = kit::memory(&pid, "VmHWM").unwrap_or(0);
    let rss_after = kit::memory(&pid, "VmRSS").unwrap_or(0);
    for w in &mut workers {
        drop(w.stdin.take());
    }
    for mut w in workers {
        let _ = w.wait();
    }
    drop(hub.stdin.take());
    // The reader drains the hub's last lines while it stops.
    drop(rx);
    let _ = hub.wait();
    let _ = reader.join();
    let figures = Figures {
        synced: at,
        cpu,
        peak_rss,
        rss_after,
        fds_peak,
    };
    (figures, hub_dir)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker(&args[1], &args[2..]);
    }
    let counts: Vec<usize> = {
        let given: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if given.is_empty() {
            vec![100, 300, 1000]
        } else {
            given
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // FAN_IN_SEEDS=DIR keeps the uploaders' folders there, for the next run to reuse.
    let (_temporary, base) = match std::env::var_os("FAN_IN_SEEDS") {
        Some(dir) => (None, PathBuf::from(dir)),
        None => {
            let t = tempfile::tempdir().expect("a temporary folder");
            let path = t.path().to_path_buf();
            (Some(t), path)
        }
    };
    let most = counts.iter().copied().max().unwrap_or(0);
    let dirs = seed(&rt, &base, most);
    println!(
        "| peers × {FEEDS} feeds × {BLOCKS} blocks of 1 KiB → one hub, accept-all | connect → all synced | CPU: hub, uploaders | hub peak RSS | hub RSS after | hub peak fds |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    // Each hub's folder is deleted after the last run, not before the next: an ext4 without
    // a journal skips the inodes freed in the last minutes when it makes files, and the
    // next hub, making 50,000, took half again as long after a run's folder was deleted.
    let mut hub_dirs = Vec::new();
    for n in counts {
        let (f, hub_dir) = run(&dirs[..n]);
        hub_dirs.push(hub_dir);
        let time = f.synced.map_or("not within 300 s".to_string(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        });
        println!(
            "| {n} | {time} | {:.1} s, {:.1} s | {:.0} MB | {:.0} MB | {} |",
            f.cpu.0,
            f.cpu.1,
            f.peak_rss as f64 / 1e6,
            f.rss_after as f64 / 1e6,
            f.fds_peak
        );
    }
}
