//! Feeds on disk: the one place that knows the storage layout.
//!
//! ```text
//! STORAGE/               0700
//!   LOCK                 held while a feedscope process uses the folder (holds its pid)
//!   feeds.json           the index of our own named feeds: key, name, writability
//!   cores/<hex key>/     one feed each (see `core::disk` for its files and commit
//!                        protocol); a folder not in the index is a replica of someone
//!                        else's feed
//! ```
//!
//! The index is written atomically (temporary file, then rename), so a crash leaves the old
//! or the new index, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::core::disk::{private_dir, secret_readable_by_others};
use crate::core::{Core, CoreError, Flavour};
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
}

impl Feed {
    /// What a manifest offers of this feed: its length, byte length and name.
    pub async fn offer_meta(&self) -> FeedMeta {
        let info = self.core.lock().await.info();
        let mut m = serde_json::json!({ "length": info.length, "byte_length": info.byte_length });
        if let Some(name) = &self.entry.name {
            m["name"] = serde_json::json!(name);
        }
        m
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
        let appended = self.core.lock().await.append(blocks);
        appended.map_err(|e| self.err("cannot append", e))
    }

    /// Commits what the feed staged and closes its files if it idles, unless the core is in
    /// use (then `None`: the next call catches up).
    pub fn try_commit(&self) -> Option<Result<(), StoreError>> {
        let mut core = self.core.try_lock().ok()?;
        let done = core
            .commit()
            .and_then(|()| core.close_if_idle(CLOSE_FILES_AFTER));
        Some(
            done.map(drop)
                .map_err(|e| self.err("cannot write to disk", e)),
        )
    }

    /// Commits what the feed staged.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let committed = self.core.lock().await.commit();
        committed.map_err(|e| self.err("cannot write to disk", e))
    }

    /// Commits and forces the feed's files to disk, so that it survives a machine crash.
    /// Returns the length made durable.
    pub async fn sync(&self) -> Result<u64, StoreError> {
        let mut core = self.core.lock().await;
        let length = core.info().length;
        let durable = core.sync_later();
        drop(core);
        let durable = durable.map_err(|e| self.err("cannot sync to disk", e))?;
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
        Ok(length)
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
}

/// The storage folder, locked for this process.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: File,
    feeds: Mutex<BTreeMap<FeedKey, Feed>>,
    /// Held while a feed is created, so that two peers offering the same new key (or two
    /// commands naming the same new feed) build it once.
    creating: tokio::sync::Mutex<()>,
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
        private_dir(&dir.join("cores")).map_err(unusable(dir))?;
        let lock_path = dir.join("LOCK");
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
        lock.set_len(0).map_err(unusable(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(unusable(&lock_path))?;

        let mut index = read_index(dir)?;
        // Replicas are not in the index: their folder name is their key and they have no name.
        let listed: std::collections::HashSet<FeedKey> =
            index.feeds.iter().map(|f| f.key).collect();
        for entry in fs::read_dir(dir.join("cores")).map_err(unusable(dir))? {
            let name = entry.map_err(unusable(dir))?.file_name();
            if let Ok(key) = FeedKey::parse(&name.to_string_lossy()) {
                if !listed.contains(&key) {
                    index.feeds.push(FeedEntry {
                        key,
                        name: None,
                        writable: false,
                    });
                }
            }
        }
        let mut feeds = BTreeMap::new();
        let mut broken = Vec::new();
        let mut notes = Vec::new();
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
                    feeds.insert(
                        entry.key,
                        Feed {
                            entry,
                            core: Arc::new(tokio::sync::Mutex::new(core)),
                        },
                    );
                }
                Err(e) => broken.push(e),
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            feeds: Mutex::new(feeds),
            creating: tokio::sync::Mutex::new(()),
            broken,
            notes,
        })
    }

    /// The storage folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every open feed.
    pub fn feeds(&self) -> Vec<Feed> {
        self.feeds.lock().unwrap().values().cloned().collect()
    }

    /// The manifest metadata of every feed, by key.
    pub async fn offer_meta(&self) -> BTreeMap<FeedKey, FeedMeta> {
        let mut out = BTreeMap::new();
        for feed in self.feeds() {
            out.insert(feed.entry.key, feed.offer_meta().await);
        }
        out
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
            });
        }
        out
    }

    /// Returns the feed named `name`, creating a new writable one if there is none.
    /// The boolean says whether it was created.
    pub async fn create_writable(&self, name: &str) -> Result<(Feed, bool), StoreError> {
        if let Some(feed) = self.by_name(name) {
            return Ok((feed, false));
        }
        let _creating = self.creating.lock().await;
        if let Some(feed) = self.by_name(name) {
            return Ok((feed, false));
        }
        let secret = SigningKey::from_bytes(&rand::random());
        let entry = FeedEntry {
            key: FeedKey(secret.verifying_key().to_bytes()),
            name: Some(name.to_string()),
            writable: true,
        };
        let path = core_dir(&self.dir, &entry.key);
        let core = Core::create(&path, Flavour::Hc10, secret.verifying_key(), Some(secret))
            .map_err(|e| core_err(&entry, &path, e))?;
        Ok((self.insert(entry, core)?, true))
    }

    /// Returns the feed with `key`, creating an empty read-only replica if we do not hold it.
    /// The boolean says whether it was created.
    pub async fn get_or_create_replica(&self, key: FeedKey) -> Result<(Feed, bool), StoreError> {
        if let Some(feed) = self.get(&key) {
            return Ok((feed, false));
        }
        let _creating = self.creating.lock().await;
        if let Some(feed) = self.get(&key) {
            return Ok((feed, false));
        }
        let entry = FeedEntry {
            key,
            name: None,
            writable: false,
        };
        let public = VerifyingKey::from_bytes(&key.0).map_err(|e| StoreError::Core {
            key: key.to_hex(),
            name: "unnamed".into(),
            reason: format!("not a valid ed25519 public key: {e}"),
        })?;
        let path = core_dir(&self.dir, &key);
        let core = Core::create(&path, Flavour::Hc10, public, None)
            .map_err(|e| core_err(&entry, &path, e))?;
        Ok((self.insert(entry, core)?, true))
    }

    fn insert(&self, entry: FeedEntry, core: Core) -> Result<Feed, StoreError> {
        let feed = Feed {
            entry: entry.clone(),
            core: Arc::new(tokio::sync::Mutex::new(core)),
        };
        let mut feeds = self.feeds.lock().unwrap();
        feeds.insert(entry.key, feed.clone());
        // Only named (our own) feeds need the index; replicas are found by their folders.
        if entry.name.is_some() {
            let index = Index {
                feeds: feeds
                    .values()
                    .filter(|f| f.entry.name.is_some())
                    .map(|f| f.entry.clone())
                    .collect(),
            };
            write_index(&self.dir, &index)?;
        }
        Ok(feed)
    }
}

/// The largest block a feed takes: one wire frame, less room for its proof (62 levels of
/// nodes, a signature and the message's own fields fit in far less than the 64 KiB kept).
pub const MAX_BLOCK_BYTES: usize = crate::frame::MAX_FRAME_BYTES - 64 * 1024;

/// How long a feed's files stay open after their last use.
pub const CLOSE_FILES_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

fn core_dir(dir: &Path, key: &FeedKey) -> PathBuf {
    dir.join("cores").join(key.to_hex())
}

fn display_name(entry: &FeedEntry) -> String {
    entry.name.clone().unwrap_or_else(|| "unnamed".into())
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

fn read_index(dir: &Path) -> Result<Index, StoreError> {
    let path = dir.join("feeds.json");
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
    let path = dir.join("feeds.json");
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_open_of_the_same_storage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).await.unwrap();
        let err = Store::open(dir.path()).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("in use"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_asked_for_at_once_by_many_peers_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).await.unwrap());
        // Several rounds: the race, when there is one, does not show every time.
        for _ in 0..20 {
            let key = FeedKey(
                SigningKey::from_bytes(&rand::random())
                    .verifying_key()
                    .to_bytes(),
            );
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (store, start) = (store.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        store.get_or_create_replica(key).await.unwrap()
                    })
                })
                .collect();
            let mut created = 0;
            let mut cores = Vec::new();
            for t in tasks {
                let (feed, new) = t.await.unwrap();
                created += usize::from(new);
                cores.push(feed.core);
            }
            assert_eq!(created, 1, "one peer creates it, the others get it");
            assert!(
                cores.iter().all(|c| Arc::ptr_eq(c, &cores[0])),
                "one core in memory"
            );
        }
    }

    #[tokio::test]
    async fn feeds_survive_a_reopen_with_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let store = Store::open(dir.path()).await.unwrap();
            let (feed, created) = store.create_writable("notes").await.unwrap();
            assert!(created);
            feed.append(&[b"hello"]).await.unwrap();
            feed.append(&[b"world"]).await.unwrap();
            feed.entry.key
        };
        let store = Store::open(dir.path()).await.unwrap();
        let feed = store.by_name("notes").unwrap();
        assert_eq!(feed.entry.key, key);
        let mut core = feed.core.lock().await;
        assert_eq!(core.info().length, 2);
        assert_eq!(core.get(1).unwrap().unwrap(), b"world");
        assert!(core.info().writeable);
    }

    #[tokio::test]
    async fn a_damaged_core_is_reported_and_the_others_open() {
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = {
            let store = Store::open(dir.path()).await.unwrap();
            let (a, _) = store.create_writable("a").await.unwrap();
            a.append(&[b"x"]).await.unwrap();
            let (b, _) = store.create_writable("b").await.unwrap();
            b.append(&[b"y"]).await.unwrap();
            (a.entry.key, b.entry.key)
        };
        fs::remove_file(core_dir(dir.path(), &bad).join("header")).unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert!(store.get(&good).is_some());
        assert!(store.get(&bad).is_none());
        assert_eq!(store.broken.len(), 1);
        assert!(store.broken[0].to_string().contains(&bad.to_hex()));
    }

    #[tokio::test]
    async fn storage_of_the_earlier_format_that_cannot_be_read_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let key = FeedKey([7; 32]);
        let old = core_dir(dir.path(), &key);
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("oplog"), b"old").unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.broken.len(), 1);
        let msg = store.broken[0].to_string();
        assert!(
            msg.contains("earlier build") || msg.contains("replicated again"),
            "{msg}"
        );
        assert_eq!(fs::read(old.join("oplog")).unwrap(), b"old");
    }

    /// A storage folder as builds before feedscope's own core wrote it, with the hypercore
    /// crate itself: a writer of 47 blocks and a replica holding some of them.
    async fn earlier_storage(dir: &Path, blocks: &[Vec<u8>]) -> (FeedKey, Vec<u64>) {
        use hypercore::{HypercoreBuilder, PartialKeypair, Storage};
        use hypercore_schema::{RequestBlock, RequestUpgrade};
        let secret = SigningKey::from_bytes(&[7; 32]);
        let key = FeedKey(secret.verifying_key().to_bytes());
        let open = |sub: &str, secret: Option<SigningKey>| {
            let path = dir.join(sub).join("cores").join(key.to_hex());
            async move {
                let storage = Storage::new_disk(&path, false).await.unwrap();
                HypercoreBuilder::new(storage)
                    .key_pair(PartialKeypair {
                        public: SigningKey::from_bytes(&[7; 32]).verifying_key(),
                        secret,
                    })
                    .build()
                    .await
                    .unwrap()
            }
        };
        let w = open("w", Some(secret)).await;
        for chunk in blocks.chunks(10) {
            w.append_batch(chunk).await.unwrap();
        }
        let r = open("r", None).await;
        let upgrade = Some(RequestUpgrade {
            start: 0,
            length: blocks.len() as u64,
        });
        let p = w
            .create_proof(None, None, None, upgrade)
            .await
            .unwrap()
            .unwrap();
        assert!(r.verify_and_apply_proof(p).await.unwrap());
        let fetched: Vec<u64> = (0..blocks.len() as u64).filter(|i| i % 3 != 1).collect();
        for &i in &fetched {
            let nodes = r.missing_nodes(i).await.unwrap();
            let block = Some(RequestBlock { index: i, nodes });
            let p = w
                .create_proof(block, None, None, None)
                .await
                .unwrap()
                .unwrap();
            assert!(r.verify_and_apply_proof(p).await.unwrap());
        }
        let index = Index {
            feeds: vec![FeedEntry {
                key,
                name: Some("old".into()),
                writable: true,
            }],
        };
        write_index(&dir.join("w"), &index).unwrap();
        (key, fetched)
    }

    #[tokio::test]
    async fn storage_of_earlier_builds_is_converted_on_open_and_keeps_every_block() {
        let dir = tempfile::tempdir().unwrap();
        let blocks: Vec<Vec<u8>> = (0..47u8).map(|i| vec![i; 100 + i as usize]).collect();
        let (key, fetched) = earlier_storage(dir.path(), &blocks).await;
        for round in 0..2 {
            let w = Store::open(&dir.path().join("w")).await.unwrap();
            assert!(w.broken.is_empty(), "{:?}", w.broken);
            let converted = w.notes.iter().any(|n| n.contains("converted"));
            assert_eq!(converted, round == 0, "{:?}", w.notes);
            let feed = w.by_name("old").unwrap();
            {
                let mut core = feed.core.lock().await;
                assert!(core.info().writeable);
                for (i, b) in blocks.iter().enumerate() {
                    assert_eq!(&core.get(i as u64).unwrap().unwrap(), b, "block {i}");
                }
            }
            let r = Store::open(&dir.path().join("r")).await.unwrap();
            assert!(r.broken.is_empty(), "{:?}", r.broken);
            let mut core = r.get(&key).unwrap().core.lock_owned().await;
            assert_eq!(core.info().length, 47);
            for i in 0..47 {
                assert_eq!(core.has(i), fetched.contains(&i), "block {i}");
                if core.has(i) {
                    assert_eq!(core.get(i).unwrap().unwrap(), blocks[i as usize]);
                }
            }
        }
        // Once converted, it is an ordinary feed: it grows, and nothing is said on opening.
        let w = Store::open(&dir.path().join("w")).await.unwrap();
        assert!(w.notes.is_empty(), "{:?}", w.notes);
        assert_eq!(
            w.by_name("old").unwrap().append(&[b"new"]).await.unwrap(),
            48
        );
    }

    #[tokio::test]
    async fn storage_and_secret_keys_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).await.unwrap();
        let (feed, _) = store.create_writable("mine").await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let core = core_dir(store.dir(), &feed.entry.key);
        assert_eq!(mode(&dir.path().join("s").join("cores")), 0o700);
        assert_eq!(mode(&core), 0o700);
        assert_eq!(mode(&core.join("secret")), 0o600);
        drop((feed, store));
        fs::set_permissions(core.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&dir.path().join("s")).await.unwrap();
        assert!(
            store.notes.iter().any(|n| n.contains("chmod 600")),
            "{:?}",
            store.notes
        );
    }
}
