//! The kit for running engines in one process: seed a storage folder with feeds, configure
//! an engine on it, learn the address it listens on, wait for an event with a deadline.
//!
//! `feedscope soak` and `feedscope demo` are built on it, and so are the in-process tests of
//! this tree. The integration tests and the benches compile this same file into their shared
//! kit (`tests/common/mod.rs`), so it uses only the library's public API, through the
//! `feedscope` crate name, and no development-only crate.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use feedscope::engine::Config;
use feedscope::event::{Event, Wire};
use feedscope::store::{Store, StoreError};
use feedscope::wire::{FeedKey, DEFAULT_MULTIFEED_KEY};
use tokio::sync::mpsc::UnboundedReceiver;

/// Blocks per append while seeding, to bound the memory a batch holds.
pub const SEED_BATCH: usize = 500;

/// The multifeed key the kit's engines share: multifeed's own.
pub fn key() -> FeedKey {
    FeedKey::parse(DEFAULT_MULTIFEED_KEY).expect("the default key parses")
}

/// An engine's configuration on `storage` with [`key`]: listening on a free loopback port if
/// `listen`, dialing `connect`, the rest as [`Config::new`] has it.
pub fn config(storage: impl Into<PathBuf>, listen: bool, connect: Vec<String>) -> Config {
    Config {
        listen: listen.then(|| "127.0.0.1:0".to_string()),
        connect,
        ..Config::new(storage.into(), key())
    }
}

/// Block `index` of feed `name`: its name and index repeated to `size` bytes.
pub fn block(name: &str, index: usize, size: usize) -> Vec<u8> {
    format!("{name}:{index}:")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(size)
        .collect()
}

/// Blocks `0..n` of feed `name`, each `size` bytes (see [`block`]), made as they are taken.
pub fn blocks(name: &str, n: usize, size: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..n).map(move |i| block(name, i, size))
}

/// Creates a writable feed in the storage folder `dir` for each name with its blocks, appended
/// [`SEED_BATCH`] at a time and synced; returns the feeds' keys in order. The store is closed
/// again on return, so that an engine can open the folder.
pub async fn seed<N, B>(
    dir: &Path,
    feeds: impl IntoIterator<Item = (N, B)>,
) -> Result<Vec<FeedKey>, StoreError>
where
    N: AsRef<str>,
    B: IntoIterator,
    B::Item: AsRef<[u8]>,
{
    seed_on(dir, feeds.into_iter().map(|(n, b)| (n, Wire::Hc10, b))).await
}

/// [`seed`] with each feed's generation: hypercore 10 or hypercore 9 (Cabal's wire).
pub async fn seed_on<N, B>(
    dir: &Path,
    feeds: impl IntoIterator<Item = (N, Wire, B)>,
) -> Result<Vec<FeedKey>, StoreError>
where
    N: AsRef<str>,
    B: IntoIterator,
    B::Item: AsRef<[u8]>,
{
    let store = Store::open(dir).await?;
    let mut keys = Vec::new();
    for (name, wire, blocks) in feeds {
        let (feed, _) = store.create_writable_on(name.as_ref(), wire).await?;
        let mut blocks = blocks.into_iter().peekable();
        while blocks.peek().is_some() {
            let batch: Vec<B::Item> = blocks.by_ref().take(SEED_BATCH).collect();
            feed.append(&batch).await?;
        }
        feed.sync().await?;
        keys.push(feed.entry.key);
    }
    Ok(keys)
}

/// The first item of `events` that `pred` accepts; `None` if `deadline` passes or the channel
/// closes first.
pub async fn wait_for<T>(
    events: &mut UnboundedReceiver<T>,
    deadline: Instant,
    mut pred: impl FnMut(&T) -> bool,
) -> Option<T> {
    loop {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return Some(ev),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Why an engine gave no address to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotListening {
    /// It reported an error first (the message).
    Error(String),
    /// Its events ended first.
    Stopped,
    /// The time was up.
    Timeout,
}

/// The address an engine reports it listens on, read from its `events` for at most `within`.
pub async fn listening(
    events: &mut UnboundedReceiver<Event>,
    within: Duration,
) -> Result<String, NotListening> {
    let found = wait_for(events, Instant::now() + within, |ev| {
        matches!(ev, Event::Listening { .. } | Event::Error { .. })
    })
    .await;
    match found {
        Some(Event::Listening { addr }) => Ok(addr),
        Some(Event::Error { message, .. }) => Err(NotListening::Error(message)),
        Some(_) => unreachable!("only listening and error events are taken"),
        None if events.is_closed() => Err(NotListening::Stopped),
        None => Err(NotListening::Timeout),
    }
}

/// A memory figure of process `pid` (`self` for this one) from `/proc/PID/status`, such as
/// `VmRSS` or `VmHWM`, in bytes (Linux).
pub fn memory(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}
