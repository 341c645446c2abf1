//! Hypercores on disk: the one place that knows the storage layout.
//!
//! ```text
//! STORAGE/
//!   LOCK                 held while a feedscope process uses the folder (holds its pid)
//!   feeds.json           the index: key, local name and writability of every feed
//!   cores/<hex key>/     one hypercore each (oplog, tree, bitfield, data)
//! ```
//!
//! The index is written atomically (temporary file, then rename), so a crash leaves the old
//! or the new index, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hypercore::{Hypercore, HypercoreBuilder, PartialKeypair, Storage, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::wire::FeedKey;

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
        /// What the hypercore library said, and what to do.
        reason: String,
    },
    /// No feed by that name or key.
    #[error("no feed {0:?} in this storage; `feedscope feeds --storage DIR` lists them")]
    NoSuchFeed(String),
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
    /// The hypercore, serialised: the library is not safe for concurrent writes to one core.
    pub core: Arc<tokio::sync::Mutex<Hypercore>>,
}

/// A listing row, as `feedscope feeds --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedInfo {
    /// Feed key.
    pub key: FeedKey,
    /// Local name, if any.
    pub name: Option<String>,
    /// Blocks in the feed.
    pub length: u64,
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
    /// Feeds listed in the index that could not be opened, with the reason.
    pub broken: Vec<StoreError>,
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
        fs::create_dir_all(dir.join("cores")).map_err(unusable(dir))?;
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

        let index = read_index(dir)?;
        let mut feeds = BTreeMap::new();
        let mut broken = Vec::new();
        for entry in index.feeds {
            match open_core(dir, &entry, false).await {
                Ok(core) => {
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
            broken,
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
            let info = feed.core.lock().await.info();
            out.push(FeedInfo {
                key: feed.entry.key,
                name: feed.entry.name.clone(),
                length: info.length,
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
        let signing = hypercore::generate_signing_key();
        let key = FeedKey(signing.verifying_key().to_bytes());
        let entry = FeedEntry {
            key,
            name: Some(name.to_string()),
            writable: true,
        };
        let core = build_core(
            &self.dir,
            &entry,
            Some(PartialKeypair {
                public: signing.verifying_key(),
                secret: Some(signing),
            }),
        )
        .await?;
        Ok((self.insert(entry, core)?, true))
    }

    /// Returns the feed with `key`, creating an empty read-only replica if we do not hold it.
    /// The boolean says whether it was created.
    pub async fn get_or_create_replica(&self, key: FeedKey) -> Result<(Feed, bool), StoreError> {
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
        let core = build_core(
            &self.dir,
            &entry,
            Some(PartialKeypair {
                public,
                secret: None,
            }),
        )
        .await?;
        Ok((self.insert(entry, core)?, true))
    }

    fn insert(&self, entry: FeedEntry, core: Hypercore) -> Result<Feed, StoreError> {
        let feed = Feed {
            entry: entry.clone(),
            core: Arc::new(tokio::sync::Mutex::new(core)),
        };
        let mut feeds = self.feeds.lock().unwrap();
        feeds.insert(entry.key, feed.clone());
        let index = Index {
            feeds: feeds.values().map(|f| f.entry.clone()).collect(),
        };
        write_index(&self.dir, &index)?;
        Ok(feed)
    }
}

fn core_dir(dir: &Path, key: &FeedKey) -> PathBuf {
    dir.join("cores").join(key.to_hex())
}

fn display_name(entry: &FeedEntry) -> String {
    entry.name.clone().unwrap_or_else(|| "unnamed".into())
}

async fn open_core(dir: &Path, entry: &FeedEntry, _create: bool) -> Result<Hypercore, StoreError> {
    let path = core_dir(dir, &entry.key);
    if !path.join("oplog").exists() {
        return Err(StoreError::Core {
            key: entry.key.to_hex(),
            name: display_name(entry),
            reason: format!(
                "its files are missing under {}; remove it from feeds.json or restore the folder",
                path.display()
            ),
        });
    }
    let storage = Storage::new_disk(&path, false)
        .await
        .map_err(|e| core_err(entry, &path, e))?;
    HypercoreBuilder::new(storage)
        .open(true)
        .build()
        .await
        .map_err(|e| core_err(entry, &path, e))
}

async fn build_core(
    dir: &Path,
    entry: &FeedEntry,
    key_pair: Option<PartialKeypair>,
) -> Result<Hypercore, StoreError> {
    let path = core_dir(dir, &entry.key);
    fs::create_dir_all(&path).map_err(unusable(&path))?;
    let storage = Storage::new_disk(&path, false)
        .await
        .map_err(|e| core_err(entry, &path, e))?;
    let mut builder = HypercoreBuilder::new(storage);
    if let Some(kp) = key_pair {
        builder = builder.key_pair(kp);
    }
    builder.build().await.map_err(|e| core_err(entry, &path, e))
}

fn core_err(entry: &FeedEntry, path: &Path, e: hypercore::HypercoreError) -> StoreError {
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

    #[tokio::test]
    async fn feeds_survive_a_reopen_with_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let store = Store::open(dir.path()).await.unwrap();
            let (feed, created) = store.create_writable("notes").await.unwrap();
            assert!(created);
            feed.core.lock().await.append(b"hello").await.unwrap();
            feed.core.lock().await.append(b"world").await.unwrap();
            feed.entry.key
        };
        let store = Store::open(dir.path()).await.unwrap();
        let feed = store.by_name("notes").unwrap();
        assert_eq!(feed.entry.key, key);
        let core = feed.core.lock().await;
        assert_eq!(core.info().length, 2);
        assert_eq!(core.get(1).await.unwrap().unwrap(), b"world");
        assert!(core.info().writeable);
    }

    #[tokio::test]
    async fn a_damaged_core_is_reported_and_the_others_open() {
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = {
            let store = Store::open(dir.path()).await.unwrap();
            let (a, _) = store.create_writable("a").await.unwrap();
            a.core.lock().await.append(b"x").await.unwrap();
            let (b, _) = store.create_writable("b").await.unwrap();
            b.core.lock().await.append(b"y").await.unwrap();
            (a.entry.key, b.entry.key)
        };
        fs::remove_file(core_dir(dir.path(), &bad).join("oplog")).unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert!(store.get(&good).is_some());
        assert!(store.get(&bad).is_none());
        assert_eq!(store.broken.len(), 1);
        assert!(store.broken[0].to_string().contains(&bad.to_hex()));
    }
}
