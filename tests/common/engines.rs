//! In-process feedscope engines on loopback with seeded temporary storage, and their events
//! stamped as they arrive: two of them as a [`Pair`], or one at a time with [`launch`]. Built on
//! [`super::kit`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use feedscope::engine::{self, Engine};
use feedscope::event::{Command, Event, Wire};
use feedscope::wire::FeedKey;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::kit;

/// Warnings and errors echoed to stderr before the rest are only counted.
const MAX_ECHOED_PROBLEMS: usize = 20;

static PROBLEMS: AtomicUsize = AtomicUsize::new(0);

/// Which engine of a [`Pair`] an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The listener.
    A,
    /// The dialer.
    B,
}

/// An event with the side it came from and the moment the bench received it.
pub struct Stamped {
    pub side: Side,
    pub at: Instant,
    pub event: Event,
}

/// A feed to create before the engine starts.
pub struct FeedSpec {
    pub name: String,
    pub blocks: usize,
    pub size: usize,
    /// Its generation: hypercore 10 unless [`FeedSpec::on`] says otherwise.
    pub wire: Wire,
}

impl FeedSpec {
    pub fn new(name: impl Into<String>, blocks: usize, size: usize) -> Self {
        FeedSpec {
            name: name.into(),
            blocks,
            size,
            wire: Wire::Hc10,
        }
    }

    /// The same feed of generation `wire`.
    pub fn on(self, wire: Wire) -> Self {
        FeedSpec { wire, ..self }
    }
}

/// A fresh temporary storage folder holding `feeds` (blocks as [`kit::block`] makes them);
/// returns it with the feeds' keys in order. The store is closed again on return, so that an
/// engine can open the folder.
pub async fn seeded(feeds: &[FeedSpec]) -> (TempDir, Vec<FeedKey>) {
    let dir = tempfile::tempdir().expect("temporary storage");
    let specs = feeds
        .iter()
        .map(|f| (&f.name, f.wire, kit::blocks(&f.name, f.blocks, f.size)));
    let keys = kit::seed_on(dir.path(), specs).await.expect("seed storage");
    (dir, keys)
}

/// The SHA-256 of blocks `0..blocks` of feed `name` as [`kit::block`] makes them, hex.
pub fn expected_digest(name: &str, blocks: usize, size: usize) -> String {
    let mut hash = Sha256::new();
    for block in kit::blocks(name, blocks, size) {
        hash.update(block);
    }
    hex::encode(hash.finalize())
}

/// The SHA-256 (hex) of the first `length` blocks that the storage folder `dir` holds of
/// feed `key`, read back from disk; an error if it lacks one. The folder must not be open.
pub async fn held_digest(
    dir: &std::path::Path,
    key: &FeedKey,
    length: u64,
) -> Result<String, String> {
    let store = feedscope::store::Store::open(dir)
        .await
        .map_err(|e| format!("cannot open the receiver's storage: {e}"))?;
    let feed = store
        .get(key)
        .ok_or("the receiver's storage lacks the feed")?;
    let mut core = feed.core.lock().await;
    let mut hash = Sha256::new();
    for i in 0..length {
        match core.get(i) {
            Ok(Some(block)) => hash.update(block),
            Ok(None) => return Err(format!("the receiver lacks block {i}")),
            Err(e) => return Err(format!("block {i} does not read back: {e}")),
        }
    }
    Ok(hex::encode(hash.finalize()))
}

/// A running engine and the storage folder it owns.
pub struct Running {
    pub commands: mpsc::UnboundedSender<Command>,
    done: JoinHandle<()>,
    _dir: TempDir,
}

/// A listener `A` and a dialer `B`, with the events of both on one channel.
pub struct Pair {
    pub a: Running,
    pub b: Running,
    events: mpsc::UnboundedReceiver<Stamped>,
    /// The moment just before `B` was started: the start of every "from connect" figure.
    pub t0: Instant,
}

impl Pair {
    /// Starts `A` listening on a free loopback port, then `B` dialing it.
    pub async fn start(a_dir: TempDir, b_dir: TempDir) -> Pair {
        Pair::start_on(a_dir, b_dir, Wire::Hc10).await
    }

    /// [`Pair::start`] with `B` dialing on `wire` (a listener accepts both).
    pub async fn start_on(a_dir: TempDir, b_dir: TempDir, wire: Wire) -> Pair {
        let b_config = feedscope::engine::Config {
            wire,
            ..kit::config(b_dir.path(), false, vec![])
        };
        Pair::start_with(a_dir, b_dir, b_config).await
    }

    /// [`Pair::start`] with `B` configured by `b_config` (whose storage must be `b_dir`), to
    /// which `A`'s address is added to dial.
    pub async fn start_with(
        a_dir: TempDir,
        b_dir: TempDir,
        mut b_config: feedscope::engine::Config,
    ) -> Pair {
        let (tx, mut events) = mpsc::unbounded_channel();
        let a = launch(
            Side::A,
            a_dir,
            Some("127.0.0.1:0".into()),
            vec![],
            tx.clone(),
        )
        .await;
        let addr = listening(&mut events, Duration::from_secs(10))
            .await
            .expect("engine A listens within 10 s");
        b_config.connect.push(addr);
        let t0 = Instant::now();
        let b = launch_with(Side::B, b_dir, b_config, tx).await;
        Pair { a, b, events, t0 }
    }

    /// Feeds events to `done` until it returns true, and returns that event's arrival time;
    /// `None` if `deadline` passes first or both engines stop.
    pub async fn wait(
        &mut self,
        deadline: Instant,
        done: impl FnMut(&Stamped) -> bool,
    ) -> Option<Instant> {
        wait_events(&mut self.events, deadline, done).await
    }

    /// Asks both engines to quit and waits for them (checkpoints included), but not forever.
    pub async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }

    /// Stops both engines and hands back `B`'s storage.
    pub async fn stop_keeping_b(self) -> TempDir {
        self.a.stop().await;
        self.b.stop_keeping().await
    }
}

impl Running {
    /// Asks the engine to quit and waits for it (checkpoints included), but not forever.
    pub async fn stop(self) {
        self.stop_keeping().await;
    }

    /// [`Running::stop`], handing back its storage instead of removing it.
    pub async fn stop_keeping(self) -> TempDir {
        let _ = self.commands.send(Command::Quit);
        let abort = self.done.abort_handle();
        if tokio::time::timeout(Duration::from_secs(60), self.done)
            .await
            .is_err()
        {
            eprintln!("an engine did not stop within 60 s; aborted");
            abort.abort();
        }
        self._dir
    }
}

/// Feeds events to `done` until it returns true, and returns that event's arrival time;
/// `None` if `deadline` passes first or every engine stops.
pub async fn wait_events(
    events: &mut mpsc::UnboundedReceiver<Stamped>,
    deadline: Instant,
    done: impl FnMut(&Stamped) -> bool,
) -> Option<Instant> {
    kit::wait_for(events, deadline, done).await.map(|ev| ev.at)
}

/// The address an engine reports it listens on, if it does within `within`.
pub async fn listening(
    events: &mut mpsc::UnboundedReceiver<Stamped>,
    within: Duration,
) -> Option<String> {
    let ev = kit::wait_for(events, Instant::now() + within, |ev| {
        matches!(ev.event, Event::Listening { .. })
    })
    .await?;
    match ev.event {
        Event::Listening { addr } => Some(addr),
        _ => None,
    }
}

/// Starts one engine on `dir` that listens on a free loopback port (`listen`) or dials
/// `connect`, with its events stamped as side `side`.
pub async fn launch(
    side: Side,
    dir: TempDir,
    listen: Option<String>,
    connect: Vec<String>,
    tx: mpsc::UnboundedSender<Stamped>,
) -> Running {
    let config = feedscope::engine::Config {
        listen,
        ..kit::config(dir.path(), false, connect)
    };
    launch_with(side, dir, config, tx).await
}

/// [`launch`] with a configuration of the caller's (whose storage must be `dir`).
pub async fn launch_with(
    side: Side,
    dir: TempDir,
    config: feedscope::engine::Config,
    tx: mpsc::UnboundedSender<Stamped>,
) -> Running {
    let Engine {
        commands,
        mut events,
        done,
    } = engine::start(config).await.expect("engine starts");
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let at = Instant::now();
            echo_problem(side, &event);
            if tx.send(Stamped { side, at, event }).is_err() {
                break;
            }
        }
    });
    Running {
        commands,
        done,
        _dir: dir,
    }
}

fn echo_problem(side: Side, event: &Event) {
    if matches!(event, Event::Warning { .. } | Event::Error { .. })
        && PROBLEMS.fetch_add(1, Ordering::Relaxed) < MAX_ECHOED_PROBLEMS
    {
        eprintln!(
            "[{side:?}] {}",
            serde_json::to_string(event).unwrap_or_default()
        );
    }
}

/// Tracks which expected feeds have reported `FeedSynced` at a given length, and how many
/// blocks have arrived in all, to tell how far a run got when it times out.
pub struct SyncTracker {
    expected: HashSet<(Side, FeedKey)>,
    pending: HashSet<(Side, FeedKey)>,
    length: u64,
    held: HashMap<(Side, FeedKey), u64>,
}

impl SyncTracker {
    /// Expects each `(side, key)` to reach `length` blocks, seen from `side`.
    pub fn new(expected: impl IntoIterator<Item = (Side, FeedKey)>, length: u64) -> Self {
        let expected: HashSet<_> = expected.into_iter().collect();
        SyncTracker {
            pending: expected.clone(),
            expected,
            length,
            held: HashMap::new(),
        }
    }

    /// Takes note of an event; true once every expected feed has synced.
    pub fn observe(&mut self, ev: &Stamped) -> bool {
        let (key, local) = match &ev.event {
            Event::FeedSynced { key, length, .. } => {
                if *length >= self.length {
                    self.pending.remove(&(ev.side, *key));
                }
                (*key, *length)
            }
            Event::FeedProgress {
                key, local_length, ..
            } => (*key, *local_length),
            _ => return self.pending.is_empty(),
        };
        if self.expected.contains(&(ev.side, key)) {
            let held = self.held.entry((ev.side, key)).or_default();
            *held = (*held).max(local);
        }
        self.pending.is_empty()
    }

    /// How far replication got, e.g. "612/1000 feeds synced, 63100/100000 blocks".
    pub fn describe(&self) -> String {
        let (total, blocks) = (self.expected.len(), self.held.values().sum::<u64>());
        format!(
            "{}/{total} feeds synced, {blocks}/{} blocks",
            total - self.pending.len(),
            total as u64 * self.length
        )
    }
}

/// User and system CPU seconds of process `pid` (`"self"` for this one) so far, from
/// `/proc/PID/stat`; zeros if it cannot be read.
pub fn cpu_seconds(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name, which may hold spaces: utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let mut ticks = rest
        .split_whitespace()
        .skip(11)
        .map(|t| t.parse::<f64>().unwrap_or(0.0));
    // In clock ticks, which Linux reports at 100 a second.
    let (user, system) = (ticks.next().unwrap_or(0.0), ticks.next().unwrap_or(0.0));
    (user / 100.0, system / 100.0)
}

/// The process's peak resident set size (VmHWM) in bytes.
pub fn peak_rss() -> Option<u64> {
    kit::memory("self", "VmHWM")
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so that a later [`peak_rss`] covers only
/// what follows. Returns whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    release_freed_memory();
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Hands the heap that set-up freed back to the system, so that the peak measured next is the
/// engines' own and not what seeding left resident. glibc keeps freed memory otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only returns unused heap pages to the system; it is thread-safe.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
