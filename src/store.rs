//! Feeds on disk: the one place that knows the storage layout.
//!
//! ```text
//! STORAGE/               0700
//!   LOCK                 held while a feedscope process uses the folder (holds its pid);
//!                        removed when the store closes cleanly, left by a crash (and then
//!                        simply taken over: the lock is the `flock`, not the file)
//!   feeds.json           the index of our own named feeds, oldest first: key, name,
//!                        writability
//!   cores/<hex key>/     one feed each (see `core::disk` for its files and commit
//!                        protocol); a folder not in the index is a replica of someone
//!                        else's feed
//! ```
//!
//! The index is written atomically (temporary file, then rename), so a crash leaves the old
//! or the new index, never half of one.
//!
//! Over 600 lines because opening storage (lock, index, replica folders, damage notes) and the
//! feeds' own operations keep one set of error texts; the legacy converter has its own file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::core::disk::{private_dir, secret_readable_by_others, FILE_NAMES};
use crate::core::{Core, CoreError, Flavour};
use crate::event::Wire;
use crate::wire::{FeedKey, FeedMeta};

mod legacy;

/// Everything that can go wrong with the storage folder.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the lock.
    #[error("storage {dir} is in use by another feedscope ({holder}); stop it or pass another --storage")]
    InUse {
        /// The folder.
        dir: PathBuf,
        /// Who holds it, as far as the lock file says.
        holder: String,
    },
    /// The folder cannot be created, read or written.
    #[error("storage {dir} is not usable: {source}; check that the folder exists and is writable")]
    Unusable {
        /// The folder or file.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The index file is not readable JSON.
    #[error("storage index {path} is damaged: {reason}; restore it from a backup or move it away to start a fresh index")]
    BadIndex {
        /// Index path.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// A hypercore could not be opened or written.
    #[error("feed {key} ({name}): {reason}")]
    Core {
        /// Feed key, hex.
        key: String,
        /// Local name or "unnamed".
        name: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// No feed by that name or key.
    #[error("no feed {0:?} in this storage; `feedscope feeds --storage DIR` lists them")]
    NoSuchFeed(String),
    /// A block too large to ever cross the wire.
    #[error("a block of {size} bytes cannot be replicated: a block holds at most {limit} bytes (one wire frame less its proof); split it")]
    BlockTooLarge {
        /// The block's size.
        size: usize,
        /// [`MAX_BLOCK_BYTES`].
        limit: usize,
    },
    /// The feed exists, as a feed of the other wire generation.
    #[error(
        "feed {feed} is a {has} feed, not {asked}: a feed keeps the generation it was made with"
    )]
    OtherWire {
        /// The feed.
        feed: String,
        /// Its generation.
        has: Wire,
        /// The one asked for.
        asked: Wire,
    },
    /// The feed exists but we hold no secret key for it.
    #[error("feed {0} is not writable here: it was replicated from a peer")]
    NotWritable(String),
}

/// What the index remembers of a feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Feed key.
    pub key: FeedKey,
    /// Local name; feeds replicated from peers have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether we hold its secret key.
    pub writable: bool,
    /// The name the peer that first offered a replicated feed gave it in its manifest; shown,
    /// never used to find the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    feeds: Vec<FeedEntry>,
}

/// A feed that is open: its index entry and its core.
#[derive(Debug, Clone)]
pub struct Feed {
    /// Index entry.
    pub entry: FeedEntry,
    /// The core; one task at a time reads or changes it.
    pub core: Arc<tokio::sync::Mutex<Core>>,
    /// The feed's generation: a connection offers and serves only feeds of its own wire.
    pub wire: Wire,
    /// The size of its files, as last measured.
    size: Arc<FeedSize>,
}

/// What one feed's files add to the storage folder's byte count.
#[derive(Debug)]
struct FeedSize {
    dir: PathBuf,
    /// The bytes of the folder's other files (a writer's secret key), which do not change.
    others: u64,
    bytes: AtomicU64,
    /// The core's state when its files were last measured: unchanged, they are too.
    mark: Mutex<Option<Mark>>,
    total: Arc<AtomicU64>,
}

/// What a commit can change of a core: length, contiguous length, byte length, fork, blocks
/// held.
type Mark = (u64, u64, u64, u64, u64);

fn mark_of(core: &Core) -> Mark {
    let info = core.info();
    (
        info.length,
        info.contiguous_length,
        info.byte_length,
        info.fork,
        core.held(),
    )
}

impl FeedSize {
    /// The size of the feed in `dir`, counted into `total`; `others` is what its files
    /// other than the core's four hold, when known (a replica just made: a hub makes
    /// thousands, and listing each folder cost a dozen system calls), else the folder is
    /// listed.
    fn new(dir: PathBuf, total: Arc<AtomicU64>, core: &Core, others: Option<u64>) -> FeedSize {
        let others = others.unwrap_or_else(|| {
            let four: u64 = FILE_NAMES
                .iter()
                .filter_map(|name| fs::metadata(dir.join(name)).ok())
                .map(|m| m.len())
                .sum();
            files_bytes(&dir).saturating_sub(four)
        });
        let size = FeedSize {
            others,
            dir,
            bytes: AtomicU64::new(0),
            mark: Mutex::new(None),
            total,
        };
        size.measure(core);
        size
    }

    /// Reads the sizes of the feed's files and moves the total by the difference: from the
    /// core's open handles where it holds them all (a hub measures after every commit of
    /// thousands of feeds; listing the folder cost a path lookup per file), else by listing
    /// the folder. Called with the core locked, so no commit runs meanwhile.
    fn measure(&self, core: &Core) {
        let now = match core.file_bytes() {
            Some(four) => self.others + four,
            None => files_bytes(&self.dir),
        };
        let before = self.bytes.swap(now, Ordering::Relaxed);
        // Wrapping arithmetic: the total moves down as well as up.
        self.total
            .fetch_add(now.wrapping_sub(before), Ordering::Relaxed);
        *self.mark.lock().unwrap() = Some(mark_of(core));
    }

    /// The length and byte length of the feed as last measured (after its last commit or
    /// append).
    fn offered(&self) -> (u64, u64) {
        let mark = *self.mark.lock().unwrap();
        mark.map_or((0, 0), |(length, _, byte_length, _, _)| {
            (length, byte_length)
        })
    }

    /// [`FeedSize::measure`], if the core changed since the last time.
    fn measure_if_changed(&self, core: &Core) {
        if *self.mark.lock().unwrap() != Some(mark_of(core)) {
            self.measure(core);
        }
    }
}

/// Bytes of the regular files under `dir`, following no links.
fn files_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

impl Feed {
    /// What a manifest offers of this feed: its length, byte length and name.
    pub fn offer_meta(&self) -> FeedMeta {
        // From the last commit's mark, not the core: a hub offering thousands of feeds to
        // a thousand peers must not wait on the lock of every feed being downloaded.
        let (length, byte_length) = self.size.offered();
        let mut m = serde_json::json!({ "length": length, "byte_length": byte_length });
        if let Some(name) = &self.entry.name {
            m["name"] = serde_json::json!(name);
        }
        m.into()
    }

    fn err(&self, what: &str, e: CoreError) -> StoreError {
        StoreError::Core {
            key: self.entry.key.to_hex(),
            name: display_name(&self.entry),
            reason: format!("{what}: {e}"),
        }
    }

    /// Appends blocks to a writable feed and commits them; returns its new length. They
    /// survive the process from here on, and a machine crash after [`Feed::sync`].
    pub async fn append<B: AsRef<[u8]>>(&self, blocks: &[B]) -> Result<u64, StoreError> {
        if !self.entry.writable {
            return Err(StoreError::NotWritable(display_name(&self.entry)));
        }
        if let Some(b) = blocks.iter().find(|b| b.as_ref().len() > MAX_BLOCK_BYTES) {
            return Err(StoreError::BlockTooLarge {
                size: b.as_ref().len(),
                limit: MAX_BLOCK_BYTES,
            });
        }
        let mut core = self.core.lock().await;
        let appended = core.append(blocks);
        self.size.measure(&core);
        appended.map_err(|e| self.err("cannot append", e))
    }

    /// Has the store count what the last commit wrote; the replicators call it after their
    /// own commits, with the core still locked.
    pub fn committed(&self, core: &Core) {
        self.size.measure_if_changed(core);
    }

    /// Commits what the feed staged and closes its files if it has not been used for
    /// `idle`, unless the core is in use (then `None`: the next call catches up). Returns
    /// whether its files are still open.
    pub fn try_commit(&self, idle: std::time::Duration) -> Option<Result<bool, StoreError>> {
        let mut core = self.core.try_lock().ok()?;
        let committed = core.commit();
        self.size.measure_if_changed(&core);
        let done = committed.and_then(|()| core.close_if_idle(idle));
        Some(
            done.map(|_| core.files_open())
                .map_err(|e| self.err("cannot write to disk", e)),
        )
    }

    /// Commits what the feed staged.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let mut core = self.core.lock().await;
        let committed = core.commit();
        self.size.measure_if_changed(&core);
        committed.map_err(|e| self.err("cannot write to disk", e))
    }

    /// Commits and forces the feed's files to disk, so that it survives a machine crash.
    /// Returns the length made durable.
    pub async fn sync(&self) -> Result<u64, StoreError> {
        let mut core = self.core.lock().await;
        let length = core.info().length;
        let durable = core.sync_later();
        self.size.measure_if_changed(&core);
        drop(core);
        let durable = durable.map_err(|e| self.err("cannot sync to disk", e))?;
        let seq = durable.seq;
        // Off the async threads and without the core: peers are served meanwhile.
        let synced = tokio::task::spawn_blocking(move || durable.run())
            .await
            .unwrap_or_else(|e| {
                Err(CoreError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e),
                })
            });
        synced.map_err(|e| self.err("cannot sync to disk", e))?;
        self.core.lock().await.synced(seq);
        Ok(length)
    }

    /// Commits and closes the feed's files; the next use opens them again.
    pub async fn close_files(&self) -> Result<(), StoreError> {
        let mut core = self.core.lock().await;
        let closed = core.close_if_idle(std::time::Duration::ZERO);
        self.size.measure_if_changed(&core);
        closed
            .map(|_| ())
            .map_err(|e| self.err("cannot write to disk", e))
    }
}

/// A listing row, as `feedscope feeds --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedInfo {
    /// Feed key.
    pub key: FeedKey,
    /// Local name, if any.
    pub name: Option<String>,
    /// Blocks in the feed, as far as we know it.
    pub length: u64,
    /// Blocks of it held here.
    pub held: u64,
    /// Bytes in the feed.
    pub byte_length: u64,
    /// Whether we hold its secret key.
    pub writable: bool,
    /// For a replicated feed, the name its offering peer gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_name: Option<String>,
    /// The feed's wire generation.
    #[serde(default)]
    pub wire: Wire,
}

/// The storage folder, locked for this process.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: File,
    /// Whether the lock file goes when the store closes: a writer's always (it holds our
    /// pid), an observer's only if it made the file.
    remove_lock: bool,
    /// The lock file is gone: the folder is no longer in use.
    released: std::sync::atomic::AtomicBool,
    feeds: Mutex<BTreeMap<FeedKey, Feed>>,
    /// Our own (named) feeds in the order they were created, which is the index's order.
    named: Mutex<Vec<FeedKey>>,
    /// Bytes of the folder's files: the feeds' (each [`FeedSize`]) and those at the top.
    bytes: Arc<AtomicU64>,
    /// The files at the top of the folder (the lock, the index, remembered decisions) by
    /// name, with their size as last measured.
    top_files: Mutex<BTreeMap<String, u64>>,
    /// Held while a feed is created, so that two peers offering the same new key (or two
    /// commands naming the same new feed) build it once.
    creating: tokio::sync::Mutex<()>,
    /// Replicas being created, each held while it is, so that two peers offering the same
    /// new key build it once while replicas of other keys are built beside it.
    creating_replicas: Mutex<HashMap<FeedKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Blocking threads making replicas' files at once: a few, as a file system takes
    /// only so many new folders in parallel, and each thread holds memory.
    replica_files: tokio::sync::Semaphore,
    /// Feeds that could not be opened, or opened with damage found, with the reason.
    pub broken: Vec<StoreError>,
    /// Notes for warnings: replicas cut back to what checks, storage converted from earlier
    /// builds, secret keys others can read.
    pub notes: Vec<String>,
}

fn unusable(dir: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Unusable {
        dir: dir.to_path_buf(),
        source,
    }
}

impl Store {
    /// Opens (creating if needed) and locks a storage folder, and opens every feed in it.
    pub async fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(dir, true).await
    }

    /// [`Store::open`] for a process that writes nothing (observe mode): it takes the lock
    /// but leaves the pid of the last writer in the lock file, so that no byte changes.
    pub async fn open_observing(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(dir, false).await
    }

    async fn open_as(dir: &Path, writer: bool) -> Result<Store, StoreError> {
        private_dir(&dir.join("cores")).map_err(unusable(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let existed = lock_path.exists();
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(unusable(&lock_path))?;
        if lock.try_lock().is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "unknown process".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(StoreError::InUse {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        if writer {
            lock.set_len(0).map_err(unusable(&lock_path))?;
            write!(lock, "{}", std::process::id()).map_err(unusable(&lock_path))?;
        }

        let mut index = read_index(dir)?;
        let named: Vec<FeedKey> = index.feeds.iter().map(|f| f.key).collect();
        // Replicas are not in the index: their folder name is their key and they have no name.
        let listed: std::collections::HashSet<FeedKey> =
            index.feeds.iter().map(|f| f.key).collect();
        let settled = settle_creations(dir, &listed);
        for entry in fs::read_dir(dir.join("cores")).map_err(unusable(dir))? {
            let name = entry.map_err(unusable(dir))?.file_name();
            if let Ok(key) = FeedKey::parse(&name.to_string_lossy()) {
                if !listed.contains(&key) {
                    index.feeds.push(FeedEntry {
                        key,
                        name: None,
                        writable: false,
                        offered_name: read_offered_name(&core_dir(dir, &key)),
                    });
                }
            }
        }
        let mut feeds = BTreeMap::new();
        let mut broken = Vec::new();
        let mut notes = settled;
        let bytes = Arc::new(AtomicU64::new(0));
        for entry in index.feeds {
            let path = core_dir(dir, &entry.key);
            match open_core(&path, &entry) {
                Ok((core, core_notes)) => {
                    if let Some(damage) = &core.damage {
                        broken.push(StoreError::Core {
                            key: entry.key.to_hex(),
                            name: display_name(&entry),
                            reason: damage.clone(),
                        });
                    }
                    for note in core_notes {
                        notes.push(format!(
                            "feed {} ({}): {note}",
                            entry.key,
                            display_name(&entry)
                        ));
                    }
                    if let Some(mode) = secret_readable_by_others(&path) {
                        notes.push(format!(
                            "the secret key of feed {} is readable by other users (mode {mode:o}): run `chmod 600 {}` and `chmod 700 {}`",
                            entry.key,
                            path.join("secret").display(),
                            path.display()
                        ));
                    }
                    let wire = wire_of(core.info().flavour);
                    let size = Arc::new(FeedSize::new(path, bytes.clone(), &core, None));
                    feeds.insert(
                        entry.key,
                        Feed {
                            entry,
                            core: Arc::new(tokio::sync::Mutex::new(core)),
                            wire,
                            size,
                        },
                    );
                }
                Err(_) if !entry.writable && never_committed(&path) => {
                    match fs::remove_dir_all(&path) {
                        Ok(()) => notes.push(format!(
                            "feed {}: its replica was created just before the machine stopped and holds nothing; removed (it is fetched again when offered)",
                            entry.key
                        )),
                        Err(e) => broken.push(StoreError::Core {
                            key: entry.key.to_hex(),
                            name: display_name(&entry),
                            reason: format!(
                                "its replica never held a commit, and {} cannot be removed: {e}",
                                path.display()
                            ),
                        }),
                    }
                }
                Err(e) => broken.push(e),
            }
        }
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            remove_lock: writer || !existed,
            released: std::sync::atomic::AtomicBool::new(false),
            feeds: Mutex::new(feeds),
            named: Mutex::new(named),
            bytes,
            top_files: Mutex::new(BTreeMap::new()),
            creating: tokio::sync::Mutex::new(()),
            creating_replicas: Mutex::default(),
            replica_files: tokio::sync::Semaphore::new(REPLICA_FILES_AT_ONCE),
            broken,
            notes,
        };
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    store.file_written(&e.file_name().to_string_lossy());
                }
            }
        }
        Ok(store)
    }

    /// Says the folder is no longer in use, once everything is written: removes the lock
    /// file (where it is ours to remove, see `remove_lock`) while the lock is still held.
    /// Dropping the store does it too; a crash leaves the file, which the next open takes
    /// over as it is. Nothing may be written to the folder afterwards.
    pub fn release(&self) {
        if self.remove_lock && !self.released.swap(true, Ordering::SeqCst) {
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            self.file_written(LOCK_FILE);
        }
    }

    /// Bytes of the files in the storage folder, kept up to date as the store and its feeds
    /// write them (feeds are counted at each commit): shared, so that a reader such as the
    /// metrics endpoint never waits on storage or walks the folder.
    pub fn bytes(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    /// Counts the current size of `name`, a file at the top of the storage folder that was
    /// just written (or removed).
    pub fn file_written(&self, name: &str) {
        let now = fs::metadata(self.dir.join(name)).map_or(0, |m| m.len());
        let before = self
            .top_files
            .lock()
            .unwrap()
            .insert(name.to_string(), now)
            .unwrap_or(0);
        self.bytes
            .fetch_add(now.wrapping_sub(before), Ordering::Relaxed);
    }

    /// The storage folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every open feed.
    pub fn feeds(&self) -> Vec<Feed> {
        self.feeds.lock().unwrap().values().cloned().collect()
    }

    /// The keys of every feed of one wire generation, without touching the feeds.
    pub fn keys_on(&self, wire: Wire) -> BTreeSet<FeedKey> {
        self.feeds
            .lock()
            .unwrap()
            .values()
            .filter(|f| f.wire == wire)
            .map(|f| f.entry.key)
            .collect()
    }

    /// The feed with this key, if we hold it.
    pub fn get(&self, key: &FeedKey) -> Option<Feed> {
        self.feeds.lock().unwrap().get(key).cloned()
    }

    /// The writable or named feed with this local name.
    pub fn by_name(&self, name: &str) -> Option<Feed> {
        self.feeds
            .lock()
            .unwrap()
            .values()
            .find(|f| f.entry.name.as_deref() == Some(name))
            .cloned()
    }

    /// Listing rows for every feed.
    pub async fn list(&self) -> Vec<FeedInfo> {
        let mut out = Vec::new();
        for feed in self.feeds() {
            let core = feed.core.lock().await;
            let (info, held) = (core.info(), core.held());
            drop(core);
            out.push(FeedInfo {
                key: feed.entry.key,
                name: feed.entry.name.clone(),
                length: info.length,
                held,
                byte_length: info.byte_length,
                writable: feed.entry.writable,
                offered_name: feed.entry.offered_name.clone(),
                wire: feed.wire,
            });
        }
        out
    }

    /// Returns the feed named `name`, creating a new writable hypercore 10 one if there is
    /// none. The boolean says whether it was created.
    pub async fn create_writable(&self, name: &str) -> Result<(Feed, bool), StoreError> {
        self.create_writable_on(name, Wire::Hc10).await
    }

    /// [`Store::create_writable`] of generation `wire`. A feed of that name on the other wire
    /// is an error: a feed never changes generation.
    pub async fn create_writable_on(
        &self,
        name: &str,
        wire: Wire,
    ) -> Result<(Feed, bool), StoreError> {
        let existing = |feed: Feed| same_wire(feed, wire, display_name);
        if let Some(feed) = self.by_name(name) {
            return existing(feed);
        }
        let _creating = self.creating.lock().await;
        if let Some(feed) = self.by_name(name) {
            return existing(feed);
        }
        let secret = SigningKey::from_bytes(&rand::random());
        let entry = FeedEntry {
            key: FeedKey(secret.verifying_key().to_bytes()),
            name: Some(name.to_string()),
            writable: true,
            offered_name: None,
        };
        // A writer is made under a name that open ignores, listed in the index, and only then
        // moved to its place: a crash at any step leaves either nothing the index lists (the
        // unfinished folder is removed at the next open) or a listed feed whose move the next
        // open completes. Nothing was appended to it before this returns.
        let staging = creating_dir(&self.dir, &entry.key);
        let path = core_dir(&self.dir, &entry.key);
        drop(
            Core::create(
                &staging,
                flavour(wire),
                secret.verifying_key(),
                Some(secret),
            )
            .map_err(|e| core_err(&entry, &staging, e))?,
        );
        {
            let feeds = self.feeds.lock().unwrap();
            let mut index = self.index_of(&feeds);
            index.feeds.push(entry.clone());
            write_index(&self.dir, &index)?;
            self.file_written(INDEX_FILE);
        }
        finish_creating(&self.dir, &entry.key).map_err(unusable(&path))?;
        let core = Core::open(&path)
            .map(|(core, _)| core)
            .map_err(|e| core_err(&entry, &path, e))?;
        Ok((self.insert(entry, core, None)?, true))
    }

    /// Returns the feed with `key`, creating an empty read-only replica if we do not hold it.
    /// The boolean says whether it was created.
    /// `offered_name` is what the offering peer called it, kept for display (see
    /// [`crate::wire::offered_name`]).
    pub async fn get_or_create_replica(
        &self,
        key: FeedKey,
        offered_name: Option<String>,
    ) -> Result<(Feed, bool), StoreError> {
        self.get_or_create_replica_on(key, offered_name, Wire::Hc10)
            .await
    }

    /// [`Store::get_or_create_replica`] of generation `wire`. A feed we hold on the other
    /// wire is an error: its blocks cannot be served or checked on this one.
    pub async fn get_or_create_replica_on(
        &self,
        key: FeedKey,
        offered_name: Option<String>,
        wire: Wire,
    ) -> Result<(Feed, bool), StoreError> {
        let existing =
            |feed: Feed| same_wire(feed, wire, |e| format!("{key} ({})", display_name(e)));
        if let Some(feed) = self.get(&key) {
            return existing(feed);
        }
        let slot = self
            .creating_replicas
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .clone();
        let created = {
            let _creating = slot.lock().await;
            match self.get(&key) {
                Some(feed) => existing(feed),
                None => self.create_replica(key, offered_name, wire).await,
            }
        };
        // Taken out once the feed is in `feeds`: whoever comes later finds it there. After a
        // failure, only by the last caller holding the slot: were it taken out while another
        // still waits on it, that caller and a newcomer on a new slot would both try to make
        // the feed's files at once. Clones are made under the map's lock, so the count
        // cannot grow while it is read.
        let mut creating = self.creating_replicas.lock().unwrap();
        if creating.get(&key).is_some_and(|s| {
            Arc::ptr_eq(s, &slot) && (created.is_ok() || Arc::strong_count(&slot) == 2)
        }) {
            creating.remove(&key);
        }
        drop(creating);
        created
    }

    async fn create_replica(
        &self,
        key: FeedKey,
        offered_name: Option<String>,
        wire: Wire,
    ) -> Result<(Feed, bool), StoreError> {
        let entry = FeedEntry {
            key,
            name: None,
            writable: false,
            offered_name,
        };
        let public = VerifyingKey::from_bytes(&key.0).map_err(|e| StoreError::Core {
            key: key.to_hex(),
            name: "unnamed".into(),
            reason: format!("not a valid ed25519 public key: {e}"),
        })?;
        let path = core_dir(&self.dir, &key);
        // Not synced here: a replica holds nothing yet, and the fsyncs would hold up the
        // peer that asked for it. Its first sync (at its first `feed_synced`, or the
        // engine's periodic one) makes the folder durable. Made on a blocking thread: a
        // folder and its files take milliseconds on a busy file system, and a hub taking
        // in thousands of feeds would keep the runtime's threads from every socket.
        let name = entry.offered_name.clone();
        let made = {
            let _permit = self.replica_files.acquire().await;
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let core = Core::create_unsynced(&path, flavour(wire), public, None)?;
                // Shown only: a name that cannot be written is no reason to refuse it. Its
                // bytes are all the folder holds beside the core's files.
                let named = name.filter(|n| fs::write(path.join(OFFERED_NAME_FILE), n).is_ok());
                Ok((core, named.map_or(0, |n| n.len() as u64)))
            })
            .await
        };
        let (core, others) = match made {
            Ok(made) => made.map_err(|e| core_err(&entry, &path, e))?,
            Err(e) => {
                return Err(StoreError::Core {
                    key: key.to_hex(),
                    name: "unnamed".into(),
                    reason: format!("creating its files failed: {e}"),
                })
            }
        };
        Ok((self.insert(entry, core, Some(others))?, true))
    }

    /// Adds the open feed; `others` as [`FeedSize::new`] takes it.
    fn insert(
        &self,
        entry: FeedEntry,
        core: Core,
        others: Option<u64>,
    ) -> Result<Feed, StoreError> {
        let wire = wire_of(core.info().flavour);
        let dir = core_dir(&self.dir, &entry.key);
        let size = FeedSize::new(dir, self.bytes.clone(), &core, others);
        let feed = Feed {
            entry: entry.clone(),
            core: Arc::new(tokio::sync::Mutex::new(core)),
            wire,
            size: Arc::new(size),
        };
        let mut feeds = self.feeds.lock().unwrap();
        feeds.insert(entry.key, feed.clone());
        // Only named (our own) feeds need the index; replicas are found by their folders.
        if entry.name.is_some() {
            {
                let mut named = self.named.lock().unwrap();
                if !named.contains(&entry.key) {
                    named.push(entry.key);
                }
            }
            write_index(&self.dir, &self.index_of(&feeds))?;
            self.file_written(INDEX_FILE);
        }
        Ok(feed)
    }

    /// The index of our own feeds that are open, oldest first.
    fn index_of(&self, feeds: &BTreeMap<FeedKey, Feed>) -> Index {
        let named = self.named.lock().unwrap();
        Index {
            feeds: named
                .iter()
                .filter_map(|k| feeds.get(k))
                .filter(|f| f.entry.name.is_some())
                .map(|f| f.entry.clone())
                .collect(),
        }
    }

    /// Our writable feed of generation `wire` that was created first, if any: the one a
    /// connection of that wire names us by (Cabal's `peer-id`). Storage written by builds
    /// that kept the index sorted by key gives the first by key instead.
    pub fn first_writer_on(&self, wire: Wire) -> Option<FeedKey> {
        let feeds = self.feeds.lock().unwrap();
        let named = self.named.lock().unwrap();
        named
            .iter()
            .filter_map(|k| feeds.get(k))
            .find(|f| f.entry.writable && f.wire == wire)
            .map(|f| f.entry.key)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.release();
    }
}

/// The lock file's name, at the top of the storage folder.
const LOCK_FILE: &str = "LOCK";

/// An existing feed, if it is of generation `wire`; `shown` names it in the error otherwise.
fn same_wire(
    feed: Feed,
    wire: Wire,
    shown: impl Fn(&FeedEntry) -> String,
) -> Result<(Feed, bool), StoreError> {
    if feed.wire == wire {
        Ok((feed, false))
    } else {
        Err(StoreError::OtherWire {
            feed: shown(&feed.entry),
            has: feed.wire,
            asked: wire,
        })
    }
}

/// The hash flavour of a wire generation's feeds.
fn flavour(wire: Wire) -> Flavour {
    match wire {
        Wire::Hc10 => Flavour::Hc10,
        Wire::Hc9 => Flavour::Hc9,
    }
}

/// The wire generation of a feed of this hash flavour.
fn wire_of(flavour: Flavour) -> Wire {
    match flavour {
        Flavour::Hc10 => Wire::Hc10,
        Flavour::Hc9 => Wire::Hc9,
    }
}

/// A replica's offered name lives in its own folder, beside its core's files: written once,
/// with the feed, and no index rewrite for every replica.
const OFFERED_NAME_FILE: &str = "offered-name";

/// The offered name kept in a replica's folder, checked as when it was received.
fn read_offered_name(core_dir: &Path) -> Option<String> {
    let bytes = fs::read(core_dir.join(OFFERED_NAME_FILE)).ok()?;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned();
    crate::wire::offered_name(&serde_json::json!({ "name": text }).into())
}

/// The largest block a feed takes: one wire frame, less room for its proof (62 levels of
/// nodes, a signature and the message's own fields fit in far less than the 64 KiB kept).
pub const MAX_BLOCK_BYTES: usize = crate::frame::MAX_FRAME_BYTES - 64 * 1024;

/// How long a feed's files stay open after their last use.
pub const CLOSE_FILES_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Feeds holding files open past which an idle feed's files are closed at once rather than
/// after [`CLOSE_FILES_AFTER`]: a hub taking in thousands of feeds at once would otherwise
/// hold four files for each and run out of file descriptors.
pub const MANY_OPEN_FEEDS: usize = 256;

/// Replicas whose files are made at the same time, each on a blocking thread.
const REPLICA_FILES_AT_ONCE: usize = 4;

fn core_dir(dir: &Path, key: &FeedKey) -> PathBuf {
    dir.join("cores").join(key.to_hex())
}

/// Where a new writer is made before the index lists it (see [`Store::create_writable_on`]).
fn creating_dir(dir: &Path, key: &FeedKey) -> PathBuf {
    dir.join("cores")
        .join(format!("{CREATING}{}", key.to_hex()))
}

const CREATING: &str = ".creating-";

/// Moves a new writer from its staging folder to its place, durably.
fn finish_creating(dir: &Path, key: &FeedKey) -> std::io::Result<()> {
    fs::rename(creating_dir(dir, key), core_dir(dir, key))?;
    File::open(dir.join("cores"))?.sync_all()
}

/// Settles writers whose creation a crash interrupted: one the index lists is moved to its
/// place; one it does not list never held an acknowledged block and is removed. Says what it
/// did, one note per folder.
fn settle_creations(dir: &Path, listed: &std::collections::HashSet<FeedKey>) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir.join("cores")) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = name
            .strip_prefix(CREATING)
            .and_then(|k| FeedKey::parse(k).ok())
        else {
            continue;
        };
        let done = if listed.contains(&key) && !core_dir(dir, &key).exists() {
            finish_creating(dir, &key)
                .map(|()| "finished its creation, which a crash had interrupted")
        } else {
            fs::remove_dir_all(entry.path())
                .map(|()| "removed a creation that a crash interrupted before the feed was listed; nothing had been appended to it")
        };
        notes.push(match done {
            Ok(what) => format!("feed {key}: {what}"),
            Err(e) => format!(
                "feed {key}: could not settle {}: {e}",
                entry.path().display()
            ),
        });
    }
    notes
}

fn display_name(entry: &FeedEntry) -> String {
    entry.name.clone().unwrap_or_else(|| "unnamed".into())
}

/// Whether a replica's folder holds no commit and no block: its creation did not reach the
/// disk before the machine stopped (see [`Core::create_unsynced`]).
fn never_committed(path: &Path) -> bool {
    if path.join("secret").exists() || path.join("oplog").exists() {
        return false;
    }
    let blank = |name: &str| match fs::read(path.join(name)) {
        Ok(bytes) => bytes.iter().all(|&b| b == 0),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    let empty = |name: &str| fs::metadata(path.join(name)).map_or(true, |m| m.len() == 0);
    blank("header") && empty("data") && empty("tree")
}

/// Opens one feed's core, converting storage of earlier builds first.
fn open_core(path: &Path, entry: &FeedEntry) -> Result<(Core, Vec<String>), StoreError> {
    let mut notes = Vec::new();
    if !path.join("header").exists() && path.join("oplog").exists() {
        notes.push(convert_legacy(path, entry)?);
    }
    if !path.join("header").exists() {
        let reason = format!(
            "its files are missing under {}; remove it from feeds.json or restore the folder",
            path.display()
        );
        return Err(StoreError::Core {
            key: entry.key.to_hex(),
            name: display_name(entry),
            reason,
        });
    }
    let mut opened = Core::open(path).map_err(|e| core_err(entry, path, e))?;
    notes.append(&mut opened.1);
    opened.1 = notes;
    if FeedKey(opened.0.key().to_bytes()) != entry.key {
        return Err(StoreError::Core {
            key: entry.key.to_hex(),
            name: display_name(entry),
            reason: format!("{} holds another feed's key", path.display()),
        });
    }
    if opened.0.info().writeable != entry.writable {
        return Err(StoreError::Core {
            key: entry.key.to_hex(),
            name: display_name(entry),
            reason: if entry.writable {
                format!(
                    "its secret key file is missing from {}: restore it from a backup",
                    path.display()
                )
            } else {
                format!(
                    "{} holds a secret key but feeds.json does not list the feed",
                    path.display()
                )
            },
        });
    }
    Ok(opened)
}

/// Converts a feed stored by builds before feedscope's own core (hypercore 0.17's files):
/// its tree, data and bitfield are already laid out as the core's, so what its log holds
/// is laid over them and a header committed; the log is kept beside them, renamed.
fn convert_legacy(path: &Path, entry: &FeedEntry) -> Result<String, StoreError> {
    let fail = |reason: String| {
        StoreError::Core {
        key: entry.key.to_hex(),
        name: display_name(entry),
        reason: format!(
            "{} holds the feed in the format of earlier builds and it cannot be converted: {reason}; its files are left as they were: {}",
            path.display(),
            if entry.writable {
                "open it with the earlier build to keep appending, or move the folder away to start over"
            } else {
                "move the folder away and the feed is replicated again from a peer"
            }
        ),
    }
    };
    let old = legacy::read_legacy(path).map_err(&fail)?;
    if old.public_key != entry.key.0 {
        return Err(fail("its log names another key".into()));
    }
    let public = VerifyingKey::from_bytes(&old.public_key).map_err(|e| fail(e.to_string()))?;
    let secret = old.secret_key.map(|s| SigningKey::from_bytes(&s));
    if secret.is_some() != entry.writable {
        return Err(fail(if entry.writable {
            "its log holds no secret key".into()
        } else {
            "its log holds a secret key, but feeds.json does not list the feed".into()
        }));
    }
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let tree = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join("tree"))?;
        for n in &old.oplog_nodes {
            let mut b = n.size.to_le_bytes().to_vec();
            b.extend_from_slice(&n.hash);
            tree.write_all_at(&b, n.index * crate::core::disk::NODE_BYTES)?;
        }
        if !old.oplog_bitfield.is_empty() {
            let mut bits = crate::core::bitfield::Bitfield::default();
            let bytes = fs::read(path.join("bitfield")).unwrap_or_default();
            for (page, chunk) in bytes.chunks(crate::core::bitfield::PAGE_BYTES).enumerate() {
                bits.load(page as u64, chunk);
            }
            for change in &old.oplog_bitfield {
                let end = change.start.saturating_add(change.length);
                if change.drop {
                    for i in change.start..end {
                        bits.set(i, false);
                    }
                } else {
                    bits.set_range(change.start, end);
                }
            }
            let file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path.join("bitfield"))?;
            for (page, bytes) in bits.take_dirty() {
                file.write_all_at(&bytes[..], page * crate::core::bitfield::PAGE_BYTES as u64)?;
            }
        }
        Ok(())
    };
    write().map_err(|e| fail(e.to_string()))?;
    Core::adopt(
        path,
        Flavour::Hc10,
        public,
        secret,
        (old.length, old.fork, old.signature),
    )
    .map_err(|e| fail(e.to_string()))?;
    let kept = path.join("oplog.converted");
    fs::rename(path.join("oplog"), &kept).map_err(|e| fail(e.to_string()))?;
    Ok(format!(
        "converted from the storage format of earlier builds ({} blocks); the old log is kept as {}",
        old.length,
        kept.display()
    ))
}

fn core_err(entry: &FeedEntry, path: &Path, e: CoreError) -> StoreError {
    StoreError::Core {
        key: entry.key.to_hex(),
        name: display_name(entry),
        reason: format!(
            "cannot open {}: {e}; the other feeds are unaffected — move this folder away to drop the feed",
            path.display()
        ),
    }
}

/// The index's file name, at the top of the storage folder.
const INDEX_FILE: &str = "feeds.json";

fn read_index(dir: &Path) -> Result<Index, StoreError> {
    let path = dir.join(INDEX_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::BadIndex {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
        Err(e) => Err(StoreError::Unusable {
            dir: path,
            source: e,
        }),
    }
}

fn write_index(dir: &Path, index: &Index) -> Result<(), StoreError> {
    let path = dir.join(INDEX_FILE);
    let tmp = dir.join("feeds.json.tmp");
    let bytes = serde_json::to_vec_pretty(index).expect("index serialises");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(unusable(&path))
}

#[cfg(test)]
mod tests;
