//! One feed on disk: its files, what a commit writes, and what opening checks.
//!
//! ```text
//! <core dir>/            0700
//!   header               two 4 KiB slots; each a checksummed commit (see `Header`)
//!   secret               a writer's Ed25519 seed, 32 bytes, 0600; absent for replicas
//!   tree                 node i at byte 40*i: u64 size, then its 32-byte hash; zeros: none
//!   data                 the blocks back to back, each at its byte offset in the feed
//!   bitfield             a replica's held blocks, bit i at byte i/8, bit i%8
//! ```
//!
//! **Commit protocol.** Changes are staged in memory. A commit writes the staged blocks to
//! `data`, the staged nodes to `tree` and the changed pages to `bitfield`, and only then the
//! header slot that the previous commit did not use, with a sequence number one higher and a
//! BLAKE2b checksum. Nothing a committed header refers to is ever overwritten with other
//! bytes. So a process killed at any instant leaves either the old commit or the new one,
//! and opening takes the valid slot with the higher sequence number. [`Core::sync`] makes
//! the files durable against a machine crash as well: it fsyncs `data`, `tree` and `bitfield`
//! first and the header after.
//!
//! **Opening checks** both header slots, that the committed roots are in `tree` and hash to
//! the committed tree hash under a valid signature, and that the last held block is in
//! `data` and matches its leaf. A replica whose tail is torn is cut back to the blocks that
//! check; anything else damaged is an error for this feed alone. Blocks are checked against
//! their leaf each time they are read, so damage further back is found when a block is used.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::bitfield::{Bitfield, PAGE_BYTES};
use super::flat;
use super::hash::{Flavour, Node};
use super::hc9::Hc9Proof;
use super::tree::{NodeSource, Proof, ProofError, Request, Tree, Verified, MAX_LENGTH};

mod files;
mod open;
mod runs;

pub use files::FILE_NAMES;
use files::{fsync_dir, read_secret, write_secret, Files, Header, SLOT_BYTES};
pub use files::{private_dir, secret_readable_by_others};
use runs::{Lookup, NodeRuns, RUN as NODE_RUN};

/// Bytes of one node in the tree file.
pub const NODE_BYTES: u64 = 40;
/// Nodes kept in memory after reading them, per feed, before the cache starts over.
pub const NODE_CACHE: usize = 8192;
/// Staged bytes past which an apply commits by itself.
pub const MAX_STAGED_BYTES: usize = 4 << 20;
/// Bytes read from `data` at once when blocks are read one after another (served in order).
pub const READ_AHEAD_BYTES: usize = 64 << 10;

/// Everything that can go wrong with one feed's files.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The files hold something that does not check.
    #[error("{0}")]
    Damaged(String),
    /// A peer's proof was refused (nothing was written).
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The feed has no secret key here.
    #[error("this feed is not writable here")]
    NotWritable,
}

/// A summary of a feed's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Blocks in the feed, held or not.
    pub length: u64,
    /// Blocks held from the start without a gap.
    pub contiguous_length: u64,
    /// Bytes in the feed.
    pub byte_length: u64,
    /// The writer's truncation count.
    pub fork: u64,
    /// Whether we hold the secret key.
    pub writeable: bool,
    /// Hash flavour.
    pub flavour: Flavour,
}

/// A feed: its tree, which blocks it holds, and its files.
pub struct Core {
    files: Files,
    key: VerifyingKey,
    secret: Option<SigningKey>,
    tree: Tree,
    bits: Bitfield,
    contiguous: u64,
    /// The sequence number of the last commit.
    seq: u64,
    /// Nodes not yet written, and nodes read lately.
    staged_nodes: NodeRuns,
    cache: NodeRuns,
    /// Block bytes not yet written, by byte offset; blocks staged end to end share one run.
    staged_data: BTreeMap<u64, Vec<u8>>,
    staged_bytes: usize,
    /// The block after the last one read or staged, and where its bytes start: the next
    /// block in order needs no walk down the tree to find them.
    next_offset: Option<(u64, u64)>,
    /// Bytes of `data` read ahead of the block asked for.
    read_ahead: ReadAhead,
    /// Whether anything changed since the last commit.
    changed: bool,
    /// Whether the feed's folder was created and not yet made durable (its entry in its
    /// parent folder, and the files' entries in it).
    dirs_unsynced: bool,
    /// The header sequence number known to be on the disk itself ([`Core::synced`]): a
    /// sync with nothing committed since has nothing to force.
    synced_seq: Option<u64>,
    /// What opening found damaged in a feed that still opened.
    pub damage: Option<String>,
    /// Whether the files were read or written since [`Core::close_if_idle`] last looked (a
    /// flag, not a clock read on every use).
    used: bool,
    /// When [`Core::close_if_idle`] last found the files used.
    last_used: Instant,
}

impl std::fmt::Debug for Core {
    // Never the secret key: a debug print may end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("dir", &self.files.dir)
            .field("key", &hex::encode(self.key.as_bytes()))
            .field("writable", &self.secret.is_some())
            .field("tree", &self.tree)
            .field("contiguous", &self.contiguous)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The [`Nodes`] of a core, borrowing only the fields they need, so that the tree can be
/// borrowed beside them.
macro_rules! nodes_of {
    ($core:expr) => {{
        $core.used = true;
        Nodes {
            staged: &$core.staged_nodes,
            cache: &mut $core.cache,
            file: $core.files.tree()?,
        }
    }};
}

/// Nodes as the tree code reads them: staged first, then the cache (nodes read or written
/// lately, and runs known to be empty), then the file.
struct Nodes<'a> {
    staged: &'a NodeRuns,
    cache: &'a mut NodeRuns,
    file: &'a File,
}

impl NodeSource for Nodes<'_> {
    fn node(&mut self, index: u64) -> io::Result<Option<Node>> {
        if let Some(n) = self.staged.node(index) {
            return Ok(Some(n));
        }
        match self.cache.get(index) {
            Lookup::Found(n) => return Ok(Some(n)),
            // Its run was read and the node was not there; what a commit writes since is
            // staged or cached.
            Lookup::Absent => return Ok(None),
            Lookup::Unknown => {}
        }
        // Nodes near each other are used together (a block's path, the next block's): one
        // read brings in the aligned run of NODE_RUN nodes around the one asked for.
        let first = index - index % NODE_RUN;
        let Some(at) = first.checked_mul(NODE_BYTES) else {
            return Ok(None);
        };
        let mut b = [0u8; (NODE_RUN * NODE_BYTES) as usize];
        let got = read_up_to(self.file, &mut b, at)?;
        // Bounded both ways: by the nodes held, and by the runs known to be empty (a long
        // download looks up many nodes it does not hold yet).
        if (self.cache.filled() + 1) * NODE_RUN as usize > NODE_CACHE
            || self.cache.runs() >= NODE_CACHE
        {
            self.cache.clear();
        }
        let read = b[..got]
            .chunks_exact(NODE_BYTES as usize)
            .enumerate()
            .filter(|(_, raw)| raw.iter().any(|&x| x != 0))
            .map(|(k, raw)| Node {
                index: first + k as u64,
                size: u64::from_le_bytes(raw[..8].try_into().unwrap()),
                hash: raw[8..].try_into().unwrap(),
            });
        self.cache.fill(first / NODE_RUN, read);
        Ok(self.cache.node(index))
    }
}

impl Core {
    /// Creates an empty feed in `dir`: a writer's if `secret` is given, else a replica of
    /// `key`. The first commit is durable before this returns.
    pub fn create(
        dir: &Path,
        flavour: Flavour,
        key: VerifyingKey,
        secret: Option<SigningKey>,
    ) -> Result<Core, CoreError> {
        let mut core = Core::create_unsynced(dir, flavour, key, secret)?;
        core.sync()?;
        Ok(core)
    }

    /// [`Core::create`] without waiting for the disk: the feed's folder and first commit
    /// become durable with its first [`Core::sync`]. For a replica, which holds nothing a
    /// machine crash could lose until then: a folder whose creation never reached the disk
    /// holds no commit, and the store removes it when it opens (it is fetched again).
    pub fn create_unsynced(
        dir: &Path,
        flavour: Flavour,
        key: VerifyingKey,
        secret: Option<SigningKey>,
    ) -> Result<Core, CoreError> {
        let io_err = |path: PathBuf| move |source| CoreError::Io { path, source };
        private_dir(dir).map_err(io_err(dir.to_path_buf()))?;
        if let Some(s) = &secret {
            write_secret(dir, s).map_err(io_err(dir.join("secret")))?;
        }
        let files = Files::open(dir, true)?;
        let mut core = Core {
            files,
            key,
            secret,
            tree: Tree::new(flavour),
            bits: Bitfield::default(),
            contiguous: 0,
            seq: 0,
            staged_nodes: NodeRuns::default(),
            cache: NodeRuns::default(),
            staged_data: BTreeMap::new(),
            staged_bytes: 0,
            next_offset: None,
            read_ahead: ReadAhead::default(),
            changed: true,
            dirs_unsynced: true,
            synced_seq: None,
            damage: None,
            used: false,
            last_used: Instant::now(),
        };
        core.commit()?;
        Ok(core)
    }

    /// The feed's key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// A summary of the feed.
    pub fn info(&self) -> Info {
        Info {
            length: self.tree.length,
            contiguous_length: self.contiguous,
            byte_length: self.tree.byte_length,
            fork: self.tree.fork,
            writeable: self.secret.is_some(),
            flavour: self.tree.flavour,
        }
    }

    /// The bytes of the core's four files, read from the handles it holds (one `fstat`
    /// each); `None` when one of them is closed (an idle feed's are).
    pub fn file_bytes(&self) -> Option<u64> {
        self.files
            .handles
            .iter()
            .map(|h| h.get().and_then(|f| f.metadata().ok()).map(|m| m.len()))
            .sum()
    }

    /// How many blocks are held (a count over the bitfield: not for every message).
    pub fn held(&self) -> u64 {
        if self.secret.is_some() {
            self.tree.length
        } else {
            self.bits.count_below(self.tree.length)
        }
    }

    /// The signed tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Whether block `i` is held.
    pub fn has(&self, i: u64) -> bool {
        i < self.tree.length && self.bits.get(i)
    }

    /// Block `i`, or `None` if it is not held. A block that does not match its leaf is an
    /// error: the data file is damaged there.
    pub fn get(&mut self, i: u64) -> Result<Option<Vec<u8>>, CoreError> {
        if !self.has(i) {
            return Ok(None);
        }
        self.read(i, true).map(Some)
    }

    /// Block `i`'s bytes, checked against its leaf if `check`.
    fn read(&mut self, i: u64, check: bool) -> Result<Vec<u8>, CoreError> {
        let mut nodes = nodes_of!(self);
        let in_order = self.next_offset.filter(|&(next, _)| next == i);
        let offset = match in_order {
            Some((_, offset)) => offset,
            None => self.tree.byte_offset(&mut nodes, i).map_err(|e| {
                CoreError::Damaged(format!("cannot find block {i} in its tree file: {e}"))
            })?,
        };
        let leaf = nodes
            .node(2 * i)
            .map_err(self.files.err("tree"))?
            .ok_or_else(|| CoreError::Damaged(format!("the leaf of block {i} is missing")))?;
        let size = leaf.size as usize;
        let value = if let Some(v) = staged_slice(&self.staged_data, offset, size) {
            v.to_vec()
        } else if let Some(v) = self.read_ahead.get(offset, size) {
            v.to_vec()
        } else if in_order.is_some() && size < READ_AHEAD_BYTES / 4 {
            let file = self.files.data()?;
            let end = self.tree.byte_length.min(offset + READ_AHEAD_BYTES as u64);
            self.read_ahead
                .fill(file, offset, end)
                .map_err(self.files.err("data"))?;
            match self.read_ahead.get(offset, size) {
                Some(v) => v.to_vec(),
                None => {
                    return Err(CoreError::Damaged(format!(
                        "block {i} is cut short in the data file"
                    )))
                }
            }
        } else {
            let mut v = vec![0; size];
            self.files
                .data()?
                .read_exact_at(&mut v, offset)
                .map_err(self.files.err("data"))?;
            v
        };
        if check && self.tree.flavour.leaf(i, &value) != leaf {
            return Err(CoreError::Damaged(format!(
                "block {i} does not match its hash: the data file is damaged there"
            )));
        }
        self.next_offset = Some((i + 1, offset + leaf.size));
        if offset + leaf.size >= self.tree.byte_length {
            // The last block: nothing further to read ahead, and an idle buffer per feed
            // adds up over thousands of feeds.
            self.read_ahead.clear();
        }
        Ok(value)
    }

    /// Appends blocks to a writer's feed and commits them; returns the new length.
    pub fn append<B: AsRef<[u8]>>(&mut self, blocks: &[B]) -> Result<u64, CoreError> {
        let Some(secret) = self.secret.clone() else {
            return Err(CoreError::NotWritable);
        };
        let start = self.tree.length;
        let offset = self.tree.byte_length;
        let mut tree = self.tree.clone();
        let nodes = tree.append(blocks, &secret)?;
        self.staged_nodes.extend(nodes);
        let mut run = Vec::new();
        for b in blocks {
            run.extend_from_slice(b.as_ref());
        }
        if !run.is_empty() {
            self.staged_bytes += run.len();
            self.staged_data.insert(offset, run);
        }
        self.tree = tree;
        self.bits.set_range(start, self.tree.length);
        self.bits.take_dirty();
        self.contiguous = self.tree.length;
        self.changed = true;
        self.commit()?;
        Ok(self.tree.length)
    }

    /// The proof that answers a peer's request, block bytes included.
    pub fn proof(&mut self, req: &Request) -> Result<Proof, CoreError> {
        let mut proof = self.tree.proof(&mut nodes_of!(self), req)?;
        if let Some(b) = &mut proof.block {
            if !self.has(b.index) {
                return Err(ProofError::Malformed(format!("block {} is not held", b.index)).into());
            }
            // Not checked here: the peer checks it, and hashing every block served would
            // double the hashing of a transfer. A short or missing block is still an error.
            b.value = self.read(b.index, false)?;
        }
        Ok(proof)
    }

    /// How many levels of block `i`'s path are missing here.
    pub fn missing_nodes(&mut self, i: u64) -> Result<u64, CoreError> {
        let mut nodes = nodes_of!(self);
        self.tree
            .missing_nodes(&mut nodes, i)
            .map_err(self.files.err("tree"))
    }

    /// Checks a peer's proof and stages what it adds. Returns whether it added anything.
    /// Nothing is staged when it does not check.
    pub fn apply(&mut self, proof: Proof) -> Result<bool, CoreError> {
        self.apply_with_leaf(proof, None)
    }

    /// [`Core::apply`] with the block's leaf hash already computed from its bytes (see
    /// [`Flavour::leaf_hashes`]).
    pub fn apply_with_leaf(
        &mut self,
        mut proof: Proof,
        leaf: Option<super::hash::Hash>,
    ) -> Result<bool, CoreError> {
        let mut nodes = nodes_of!(self);
        let verified = self
            .tree
            .verify_with_leaf(&mut nodes, &proof, &self.key, leaf)?;
        let value = proof.block.take().map(|b| b.value);
        self.stage(verified, value)
    }

    /// [`Core::apply`] for a proof from hypercore 9's wire.
    pub fn apply_hc9(&mut self, proof: Hc9Proof) -> Result<bool, CoreError> {
        self.apply_hc9_with_leaf(proof, None)
    }

    /// [`Core::apply_hc9`] with the block's leaf hash already computed from its bytes.
    pub fn apply_hc9_with_leaf(
        &mut self,
        mut proof: Hc9Proof,
        leaf: Option<super::hash::Hash>,
    ) -> Result<bool, CoreError> {
        let mut nodes = nodes_of!(self);
        let verified = self
            .tree
            .verify_hc9_with_leaf(&mut nodes, &proof, &self.key, leaf)?;
        let value = std::mem::take(&mut proof.value);
        self.stage(verified, Some(value))
    }

    /// The hypercore 9 proof of block `index` for a request that carried `digest` (0: the
    /// whole proof), bytes included, and the signature when the proof reaches the roots.
    pub fn proof_hc9(&mut self, index: u64, digest: u64) -> Result<Hc9Proof, CoreError> {
        if !self.has(index) {
            return Err(ProofError::Malformed(format!("block {index} is not held")).into());
        }
        let (nodes, signed) =
            self.tree
                .proof_for_digest_hc9(&mut nodes_of!(self), index, digest)?;
        Ok(Hc9Proof {
            index,
            value: self.read(index, false)?,
            nodes,
            signature: if signed {
                self.tree.signature.map(|s| s.to_vec())
            } else {
                None
            },
        })
    }

    /// The digest of what we hold on block `index`'s path, for a hypercore 9 request.
    pub fn digest_hc9(&mut self, index: u64) -> Result<u64, CoreError> {
        let mut nodes = nodes_of!(self);
        self.tree
            .digest_hc9(&mut nodes, index)
            .map_err(self.files.err("tree"))
    }

    /// Stages what a checked proof adds: its nodes, the upgrade, the block's bytes.
    fn stage(&mut self, verified: Verified, value: Option<Vec<u8>>) -> Result<bool, CoreError> {
        let mut changed = false;
        if let Some(up) = verified.upgraded {
            if self.secret.is_some() {
                return Err(ProofError::Malformed("an upgrade for a feed we write".into()).into());
            }
            if up.fork != self.tree.fork {
                self.next_offset = None;
            }
            self.tree = up;
            changed = true;
        }
        self.staged_nodes.extend(verified.nodes.iter().copied());
        if let Some(i) = verified.block {
            let value = value.unwrap_or_default();
            if i >= self.tree.length {
                return Err(ProofError::Malformed(format!("block {i} is past the end")).into());
            }
            if !self.bits.get(i) {
                let offset = match self.next_offset {
                    Some((next, offset)) if next == i => offset,
                    _ => self.tree.byte_offset(&mut nodes_of!(self), i)?,
                };
                self.next_offset = Some((i + 1, offset + value.len() as u64));
                self.staged_bytes += value.len();
                stage_data(&mut self.staged_data, offset, value);
                self.bits.set(i, true);
                if i == self.contiguous {
                    self.contiguous = self.bits.first_unset(i).min(self.tree.length);
                }
                changed = true;
            }
        }
        self.changed |= changed || !verified.nodes.is_empty();
        if self.staged_bytes >= MAX_STAGED_BYTES {
            self.commit()?;
        }
        Ok(changed)
    }

    /// Writes what is staged, then the header that commits it (see the module's commit
    /// protocol). Without [`Core::sync`] it survives the process, not the machine.
    pub fn commit(&mut self) -> Result<(), CoreError> {
        if !self.changed {
            return Ok(());
        }
        // Nothing staged is dropped until the header that commits it is written: a write
        // that fails leaves it staged, to be tried again.
        let files = &self.files;
        for (&offset, run) in &self.staged_data {
            files
                .data()?
                .write_all_at(run, offset)
                .map_err(files.err("data"))?;
        }
        if !self.staged_data.is_empty() {
            // What was read ahead may predate these blocks (a replica's gaps read as zeros).
            self.read_ahead.clear();
        }
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0;
        let mut next = u64::MAX;
        for n in self.staged_nodes.sorted() {
            let index = n.index;
            if index != next && !run.is_empty() {
                files
                    .tree()?
                    .write_all_at(&run, run_start * NODE_BYTES)
                    .map_err(files.err("tree"))?;
                run.clear();
            }
            if run.is_empty() {
                run_start = index;
            }
            run.extend_from_slice(&n.size.to_le_bytes());
            run.extend_from_slice(&n.hash);
            next = index + 1;
        }
        if !run.is_empty() {
            files
                .tree()?
                .write_all_at(&run, run_start * NODE_BYTES)
                .map_err(files.err("tree"))?;
        }
        if self.secret.is_none() {
            for (page, bytes) in self.bits.dirty_pages() {
                files
                    .bitfield()?
                    .write_all_at(&bytes[..], page * PAGE_BYTES as u64)
                    .map_err(files.err("bitfield"))?;
            }
        }
        let header = Header {
            seq: self.seq + 1,
            flavour: self.tree.flavour,
            key: self.key.to_bytes(),
            fork: self.tree.fork,
            length: self.tree.length,
            byte_length: self.tree.byte_length,
            tree_hash: self.tree.hash(),
            signature: self.tree.signature,
        };
        files
            .header()?
            .write_all_at(&header.encode(), (header.seq % 2) * SLOT_BYTES)
            .map_err(files.err("header"))?;
        self.seq = header.seq;
        self.changed = false;
        self.bits.take_dirty();
        self.staged_data.clear();
        self.staged_bytes = 0;
        let nodes = std::mem::take(&mut self.staged_nodes);
        if (self.cache.filled() + nodes.filled()) * NODE_RUN as usize <= NODE_CACHE {
            self.cache.absorb(nodes);
        } else {
            // Written but not cached: the runs they are in must be read again.
            self.cache.forget_runs_of(&nodes);
        }
        self.used = true;
        Ok(())
    }

    /// Whether any of the feed's files is open.
    pub fn files_open(&self) -> bool {
        self.files.any_open()
    }

    /// Commits and closes the feed's files if they have not been used for `idle`; the next
    /// use opens them again. Returns whether they were closed.
    pub fn close_if_idle(&mut self, idle: Duration) -> Result<bool, CoreError> {
        if std::mem::take(&mut self.used) {
            self.last_used = Instant::now();
        }
        if !self.files.any_open() || self.last_used.elapsed() < idle {
            return Ok(false);
        }
        self.commit()?;
        self.files.close();
        self.read_ahead = ReadAhead::default();
        Ok(true)
    }

    /// Commits, then makes every commit so far survive a machine crash.
    pub fn sync(&mut self) -> Result<(), CoreError> {
        let durable = self.sync_later()?;
        let seq = durable.seq;
        durable.run()?;
        self.synced(seq);
        Ok(())
    }

    /// Notes that the commits up to `seq` (a [`Durable::seq`]) are on the disk.
    pub fn synced(&mut self, seq: u64) {
        self.synced_seq = Some(self.synced_seq.map_or(seq, |s| s.max(seq)));
    }

    /// Commits, and returns the fsyncs that make every commit so far survive a machine
    /// crash, to run without holding the core (they take milliseconds).
    pub fn sync_later(&mut self) -> Result<Durable, CoreError> {
        self.commit()?;
        let seq = self.seq;
        let mut files = Vec::new();
        // Nothing committed since the last sync: nothing to force, and no file to open (a
        // store of ten thousand feeds syncs them all when it stops).
        if self.synced_seq == Some(seq) && !self.dirs_unsynced {
            return Ok(Durable { files, seq });
        }
        // The header last: it must not reach the disk ahead of what it commits.
        for which in [2, 1, 3, 0] {
            let path = self.files.dir.join(FILE_NAMES[which]);
            let file = self.files.get(which, false)?.try_clone();
            files.push((
                file.map_err(|source| CoreError::Io {
                    path: path.clone(),
                    source,
                })?,
                path,
                false,
            ));
        }
        // A new feed's folder: the entries of its files, then its own entry.
        if std::mem::take(&mut self.dirs_unsynced) {
            let dir = self.files.dir.clone();
            for d in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
                let handle = File::open(d).map_err(|source| CoreError::Io {
                    path: d.to_path_buf(),
                    source,
                })?;
                files.push((handle, d.to_path_buf(), true));
            }
        }
        Ok(Durable { files, seq })
    }
}

/// The fsyncs of [`Core::sync_later`].
#[derive(Debug)]
pub struct Durable {
    /// Each file, its path for errors, and whether to sync its metadata too (folders).
    files: Vec<(File, PathBuf, bool)>,
    /// The header sequence number these make durable, for [`Core::synced`].
    pub seq: u64,
}

impl Durable {
    /// Forces the files to disk, in order.
    pub fn run(self) -> Result<(), CoreError> {
        for (file, path, whole) in self.files {
            let synced = if whole {
                file.sync_all()
            } else {
                file.sync_data()
            };
            synced.map_err(|source| CoreError::Io { path, source })?;
        }
        Ok(())
    }
}

/// Staged runs stop growing at this size; a block this large or larger is a run of its own
/// (copying it into a run costs more than the system call it saves).
const RUN_BYTES: usize = 1 << 20;

/// Stages a block's bytes at `offset`, at the end of the run before it when they touch.
fn stage_data(staged: &mut BTreeMap<u64, Vec<u8>>, offset: u64, value: Vec<u8>) {
    if value.len() < RUN_BYTES / 64 {
        if let Some(mut last) = staged.last_entry() {
            let start = *last.key();
            let run = last.get_mut();
            if start + run.len() as u64 == offset && run.len() + value.len() <= RUN_BYTES {
                if run.capacity() - run.len() < value.len() {
                    // The whole run at once: growing it step by step copied it each time.
                    // Room not written to costs no resident memory.
                    run.reserve_exact(RUN_BYTES - run.len());
                }
                run.extend_from_slice(&value);
                return;
            }
        }
    }
    staged.insert(offset, value);
}

/// The staged bytes `offset..offset + size`, if one staged run holds them all.
fn staged_slice(staged: &BTreeMap<u64, Vec<u8>>, offset: u64, size: usize) -> Option<&[u8]> {
    let (&start, run) = staged.range(..=offset).next_back()?;
    let from = usize::try_from(offset - start).ok()?;
    run.get(from..from.checked_add(size)?)
}

/// Reads `buf.len()` bytes of `file` from `at`, or as many as it holds; how many were read.
fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Bytes of `data` read in one system call ahead of blocks read in order.
#[derive(Default)]
struct ReadAhead {
    start: u64,
    bytes: Vec<u8>,
}

impl ReadAhead {
    fn get(&self, offset: u64, size: usize) -> Option<&[u8]> {
        let from = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.bytes.get(from..from.checked_add(size)?)
    }

    /// Reads `start..end` of `file`, or as much of it as the file holds.
    fn fill(&mut self, file: &File, start: u64, end: u64) -> io::Result<()> {
        self.start = start;
        self.bytes.resize(end.saturating_sub(start) as usize, 0);
        match read_up_to(file, &mut self.bytes, start) {
            Ok(got) => {
                self.bytes.truncate(got);
                Ok(())
            }
            Err(e) => {
                self.clear();
                Err(e)
            }
        }
    }

    /// Forgets what was read, and lets go of its memory.
    fn clear(&mut self) {
        self.bytes = Vec::new();
    }
}

#[cfg(test)]
mod tests;
