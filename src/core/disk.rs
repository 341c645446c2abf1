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

use std::collections::{BTreeMap, HashMap};
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

/// Bytes of one node in the tree file.
pub const NODE_BYTES: u64 = 40;
const SLOT_BYTES: u64 = 4096;
const MAGIC: &[u8; 8] = b"FSCORE\x00\x01";
/// Nodes kept in memory after reading them, per feed, before the cache starts over.
pub const NODE_CACHE: usize = 8192;
/// Staged bytes past which an apply commits by itself.
pub const MAX_STAGED_BYTES: usize = 4 << 20;

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

/// The four files of a core, each opened when first used and closed when the feed idles
/// (see [`Core::close_if_idle`]): storage with thousands of feeds holds files open only for
/// the ones in use.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
    handles: [OnceLock<File>; 4],
}

const FILE_NAMES: [&str; 4] = ["header", "tree", "data", "bitfield"];

impl Files {
    /// The files of a core in `dir`; with `create`, all four are created now.
    fn open(dir: &Path, create: bool) -> Result<Files, CoreError> {
        let files = Files {
            dir: dir.to_path_buf(),
            handles: Default::default(),
        };
        if create {
            for which in 0..FILE_NAMES.len() {
                files.get(which, true)?;
            }
        }
        Ok(files)
    }

    fn get(&self, which: usize, create: bool) -> Result<&File, CoreError> {
        let cell = &self.handles[which];
        if let Some(f) = cell.get() {
            return Ok(f);
        }
        let path = self.dir.join(FILE_NAMES[which]);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| {
                // EMFILE: say what to do, not just what happened.
                let source = if source.raw_os_error() == Some(24) {
                    io::Error::other(format!(
                        "{source}: this process has too many files open; raise the limit with `ulimit -n`"
                    ))
                } else {
                    source
                };
                CoreError::Io { path, source }
            })?;
        Ok(cell.get_or_init(|| file))
    }

    fn header(&self) -> Result<&File, CoreError> {
        self.get(0, false)
    }

    fn tree(&self) -> Result<&File, CoreError> {
        self.get(1, false)
    }

    fn data(&self) -> Result<&File, CoreError> {
        self.get(2, false)
    }

    fn bitfield(&self) -> Result<&File, CoreError> {
        self.get(3, false)
    }

    /// Closes whatever is open; the next use opens it again.
    fn close(&mut self) {
        for h in &mut self.handles {
            h.take();
        }
    }

    fn any_open(&self) -> bool {
        self.handles.iter().any(|h| h.get().is_some())
    }

    fn err(&self, name: &str) -> impl FnOnce(io::Error) -> CoreError + '_ {
        let path = self.dir.join(name);
        move |source| CoreError::Io { path, source }
    }
}

/// One committed state, as a header slot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    seq: u64,
    flavour: Flavour,
    key: [u8; 32],
    fork: u64,
    length: u64,
    byte_length: u64,
    tree_hash: [u8; 32],
    signature: Option<[u8; 64]>,
}

impl Header {
    const BYTES: usize = 8 + 8 + 1 + 32 + 8 + 8 + 8 + 32 + 1 + 64;

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::BYTES + 32);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.push(match self.flavour {
            Flavour::Hc10 => 10,
            Flavour::Hc9 => 9,
        });
        b.extend_from_slice(&self.key);
        b.extend_from_slice(&self.fork.to_le_bytes());
        b.extend_from_slice(&self.length.to_le_bytes());
        b.extend_from_slice(&self.byte_length.to_le_bytes());
        b.extend_from_slice(&self.tree_hash);
        b.push(u8::from(self.signature.is_some()));
        b.extend_from_slice(&self.signature.unwrap_or([0; 64]));
        let sum: [u8; 32] = Blake2b::<U32>::digest(&b).into();
        b.extend_from_slice(&sum);
        b
    }

    /// The header in a slot, or `None` if the slot is blank, torn or damaged.
    fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < Self::BYTES + 32 || &b[..8] != MAGIC {
            return None;
        }
        let (body, sum) = b[..Self::BYTES + 32].split_at(Self::BYTES);
        if Blake2b::<U32>::digest(body).as_slice() != sum {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        let flavour = match body[16] {
            10 => Flavour::Hc10,
            9 => Flavour::Hc9,
            _ => return None,
        };
        Some(Header {
            seq: u64_at(8),
            flavour,
            key: body[17..49].try_into().unwrap(),
            fork: u64_at(49),
            length: u64_at(57),
            byte_length: u64_at(65),
            tree_hash: body[73..105].try_into().unwrap(),
            signature: (body[105] == 1).then(|| body[106..170].try_into().unwrap()),
        })
    }
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
    staged_nodes: BTreeMap<u64, Node>,
    cache: HashMap<u64, Node>,
    /// Block bytes not yet written, by byte offset.
    staged_data: BTreeMap<u64, Vec<u8>>,
    staged_bytes: usize,
    /// Whether anything changed since the last commit.
    changed: bool,
    /// What opening found damaged in a feed that still opened.
    pub damage: Option<String>,
    /// When the files were last read or written.
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
        $core.last_used = Instant::now();
        Nodes {
            staged: &$core.staged_nodes,
            cache: &mut $core.cache,
            file: $core.files.tree()?,
        }
    }};
}

/// Nodes as the tree code reads them: staged first, then the cache, then the file.
struct Nodes<'a> {
    staged: &'a BTreeMap<u64, Node>,
    cache: &'a mut HashMap<u64, Node>,
    file: &'a File,
}

impl NodeSource for Nodes<'_> {
    fn node(&mut self, index: u64) -> io::Result<Option<Node>> {
        if let Some(n) = self.staged.get(&index).or_else(|| self.cache.get(&index)) {
            return Ok(Some(*n));
        }
        let mut b = [0u8; NODE_BYTES as usize];
        let Some(at) = index.checked_mul(NODE_BYTES) else {
            return Ok(None);
        };
        match self.file.read_exact_at(&mut b, at) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let node = Node {
            index,
            size: u64::from_le_bytes(b[..8].try_into().unwrap()),
            hash: b[8..].try_into().unwrap(),
        };
        if self.cache.len() >= NODE_CACHE {
            self.cache.clear();
        }
        self.cache.insert(index, node);
        Ok(Some(node))
    }
}

/// Creates a folder only its owner can enter, whatever the umask.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
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
            staged_nodes: BTreeMap::new(),
            cache: HashMap::new(),
            staged_data: BTreeMap::new(),
            staged_bytes: 0,
            changed: true,
            damage: None,
            last_used: Instant::now(),
        };
        core.commit()?;
        core.sync()?;
        fsync_dir(dir).map_err(io_err(dir.to_path_buf()))?;
        Ok(core)
    }

    /// Opens the feed in `dir` at its last commit that checks. Returns notes for the user
    /// about anything it had to cut back.
    pub fn open(dir: &Path) -> Result<(Core, Vec<String>), CoreError> {
        let files = Files::open(dir, false)?;
        let mut slots = Vec::new();
        let mut bad_slots = 0;
        for slot in 0..2 {
            let mut b = vec![0u8; Header::BYTES + 32];
            match files.header()?.read_exact_at(&mut b, slot * SLOT_BYTES) {
                Ok(()) => match Header::decode(&b) {
                    Some(h) => slots.push(h),
                    None if b.iter().any(|&x| x != 0) => bad_slots += 1,
                    None => {}
                },
                // The first commit writes slot 1: a file that ends before it was cut short.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => bad_slots += slot,
                Err(e) => return Err(files.err("header")(e)),
            }
        }
        slots.sort_by_key(|h| std::cmp::Reverse(h.seq));
        if slots.is_empty() {
            return Err(CoreError::Damaged(
                "its header has no valid commit (both slots are blank or damaged)".into(),
            ));
        }
        let secret = read_secret(dir)?;
        let mut notes = Vec::new();
        if bad_slots > 0 {
            notes.push(
                "one of its two header slots does not check (a commit cut short, or damage); it was opened at the other"
                    .to_string(),
            );
        }
        let mut why = String::new();
        for (n, h) in slots.iter().enumerate() {
            match Core::at_commit(&files, h, secret.as_ref()) {
                Ok((tree, key)) => {
                    if n > 0 {
                        notes.push(format!(
                            "its newest commit did not check ({why}); it was opened at the one before, {} blocks",
                            tree.length
                        ));
                    }
                    let mut core = Core {
                        files,
                        key,
                        secret,
                        tree,
                        bits: Bitfield::default(),
                        contiguous: 0,
                        seq: h.seq,
                        staged_nodes: BTreeMap::new(),
                        cache: HashMap::new(),
                        staged_data: BTreeMap::new(),
                        staged_bytes: 0,
                        changed: false,
                        damage: None,
                        last_used: Instant::now(),
                    };
                    core.load_bits()?;
                    notes.extend(core.check_tail()?);
                    // Opened again when first used: opening storage holds no file open.
                    core.files.close();
                    return Ok((core, notes));
                }
                // A writer must not go back to an older length: it would sign other
                // blocks at the same place. A replica just downloads them again.
                Err(e) if secret.is_some() => {
                    return Err(CoreError::Damaged(format!(
                        "its last commit does not check: {e}"
                    )))
                }
                Err(e) => why = e.to_string(),
            }
        }
        Err(CoreError::Damaged(format!(
            "no commit in its header checks: {why}"
        )))
    }

    /// Gives files laid out as this module's (`tree`, `data`, `bitfield`, written by an
    /// earlier build) the header that commits `length` blocks at `fork` under `signature`,
    /// once the roots in `tree` check against them. Then [`Core::open`] opens them.
    pub fn adopt(
        dir: &Path,
        flavour: Flavour,
        key: VerifyingKey,
        secret: Option<SigningKey>,
        (length, fork, signature): (u64, u64, Option<[u8; 64]>),
    ) -> Result<(), CoreError> {
        let io_err = |path: PathBuf| move |source| CoreError::Io { path, source };
        private_dir(dir).map_err(io_err(dir.to_path_buf()))?;
        if length > MAX_LENGTH {
            return Err(CoreError::Damaged(format!("length {length} is too large")));
        }
        if let Some(s) = &secret {
            write_secret(dir, s).map_err(io_err(dir.join("secret")))?;
        }
        let files = Files::open(dir, true)?;
        let staged = BTreeMap::new();
        let mut cache = HashMap::new();
        let mut nodes = Nodes {
            staged: &staged,
            cache: &mut cache,
            file: files.tree()?,
        };
        let mut roots = Vec::new();
        for index in flat::full_roots(2 * length) {
            let root = nodes.node(index).map_err(files.err("tree"))?;
            roots.push(root.ok_or_else(|| {
                CoreError::Damaged(format!("root node {index} is missing from its tree file"))
            })?);
        }
        let header = Header {
            seq: 1,
            flavour,
            key: key.to_bytes(),
            fork,
            length,
            byte_length: roots.iter().map(|r| r.size).sum(),
            tree_hash: flavour.tree(&roots),
            signature,
        };
        Core::at_commit(&files, &header, secret.as_ref())?;
        files.data()?.sync_data().map_err(files.err("data"))?;
        files.tree()?.sync_data().map_err(files.err("tree"))?;
        files
            .bitfield()?
            .sync_data()
            .map_err(files.err("bitfield"))?;
        files
            .header()?
            .write_all_at(&header.encode(), SLOT_BYTES)
            .map_err(files.err("header"))?;
        files.header()?.sync_data().map_err(files.err("header"))?;
        fsync_dir(dir).map_err(io_err(dir.to_path_buf()))
    }

    /// The tree a header commits to, once its roots and signature check.
    fn at_commit(
        files: &Files,
        h: &Header,
        secret: Option<&SigningKey>,
    ) -> Result<(Tree, VerifyingKey), CoreError> {
        let key = VerifyingKey::from_bytes(&h.key)
            .map_err(|e| CoreError::Damaged(format!("its key is not an Ed25519 key: {e}")))?;
        if secret.is_some_and(|s| s.verifying_key() != key) {
            return Err(CoreError::Damaged(
                "its secret key does not belong to its public key".into(),
            ));
        }
        if h.length > MAX_LENGTH {
            return Err(CoreError::Damaged(format!(
                "length {} is too large",
                h.length
            )));
        }
        let mut cache = HashMap::new();
        let staged = BTreeMap::new();
        let mut nodes = Nodes {
            staged: &staged,
            cache: &mut cache,
            file: files.tree()?,
        };
        let mut roots = Vec::new();
        for index in flat::full_roots(2 * h.length) {
            match nodes.node(index).map_err(files.err("tree"))? {
                Some(n) => roots.push(n),
                None => {
                    return Err(CoreError::Damaged(format!(
                        "root node {index} is missing from its tree file"
                    )))
                }
            }
        }
        let tree = Tree {
            flavour: h.flavour,
            fork: h.fork,
            length: h.length,
            byte_length: h.byte_length,
            signature: h.signature,
            roots,
        };
        if tree.hash() != h.tree_hash
            || tree.roots.iter().map(|r| r.size).sum::<u64>() != h.byte_length
        {
            return Err(CoreError::Damaged(
                "its tree file does not match its header".into(),
            ));
        }
        if h.length > 0 {
            let ok = h.signature.is_some_and(|s| {
                h.flavour
                    .verify(&key, &s, &tree.roots, tree.length, tree.fork)
            });
            if !ok {
                return Err(CoreError::Damaged("its signature does not verify".into()));
            }
        }
        Ok((tree, key))
    }

    fn load_bits(&mut self) -> Result<(), CoreError> {
        if self.secret.is_some() {
            self.bits.set_range(0, self.tree.length);
            self.bits.take_dirty();
        } else {
            let bytes =
                fs::read(self.files.dir.join("bitfield")).map_err(self.files.err("bitfield"))?;
            for (page, chunk) in bytes.chunks(PAGE_BYTES).enumerate() {
                if chunk.iter().any(|&b| b != 0) {
                    self.bits.load(page as u64, chunk);
                }
            }
            // Bits past the committed length belong to a commit that never happened.
            self.bits.clear_from(self.tree.length);
            self.bits.take_dirty();
        }
        self.contiguous = self.bits.first_unset(0).min(self.tree.length);
        Ok(())
    }

    /// Checks the last held block against its leaf; a replica drops held blocks from the end
    /// until one checks.
    fn check_tail(&mut self) -> Result<Vec<String>, CoreError> {
        let mut notes = Vec::new();
        let mut dropped = 0u64;
        let mut end = self.tree.length;
        while let Some(i) = self.bits.last_set_below(end) {
            end = i;
            match self.read(i, true) {
                Ok(_) => break,
                // A writer keeps its length (going back would sign other blocks at the
                // same place): it serves the blocks that check and says what is damaged.
                Err(e) if self.secret.is_some() => {
                    self.damage = Some(format!(
                        "its last block does not check ({e}): its data file is damaged or cut short, and blocks that do not check are not served; restore the folder from a backup"
                    ));
                    break;
                }
                Err(_) => {
                    self.bits.set(i, false);
                    dropped += 1;
                    self.changed = true;
                }
            }
        }
        if dropped > 0 {
            self.contiguous = self.contiguous.min(self.bits.first_unset(0));
            self.commit()?;
            notes.push(format!(
                "{dropped} block(s) at the end of its data file were torn or damaged; they will be downloaded again"
            ));
        }
        Ok(notes)
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
        let offset = self.tree.byte_offset(&mut nodes, i).map_err(|e| {
            CoreError::Damaged(format!("cannot find block {i} in its tree file: {e}"))
        })?;
        let leaf = nodes
            .node(2 * i)
            .map_err(self.files.err("tree"))?
            .ok_or_else(|| CoreError::Damaged(format!("the leaf of block {i} is missing")))?;
        let value = if let Some(v) = self.staged_data.get(&offset) {
            v.clone()
        } else {
            let mut v = vec![0; leaf.size as usize];
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
        for n in nodes {
            self.staged_nodes.insert(n.index, n);
        }
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
    pub fn apply(&mut self, mut proof: Proof) -> Result<bool, CoreError> {
        let mut nodes = nodes_of!(self);
        let verified = self.tree.verify(&mut nodes, &proof, &self.key)?;
        let value = proof.block.take().map(|b| b.value);
        self.stage(verified, value)
    }

    /// [`Core::apply`] for a proof from hypercore 9's wire.
    pub fn apply_hc9(&mut self, mut proof: Hc9Proof) -> Result<bool, CoreError> {
        let mut nodes = nodes_of!(self);
        let verified = self.tree.verify_hc9(&mut nodes, &proof, &self.key)?;
        let value = std::mem::take(&mut proof.value);
        self.stage(verified, Some(value))
    }

    /// The hypercore 9 proof of block `index`, bytes and signature included.
    pub fn proof_hc9(&mut self, index: u64) -> Result<Hc9Proof, CoreError> {
        if !self.has(index) {
            return Err(ProofError::Malformed(format!("block {index} is not held")).into());
        }
        let nodes = self.tree.proof_hc9(&mut nodes_of!(self), index)?;
        Ok(Hc9Proof {
            index,
            value: self.read(index, false)?,
            nodes,
            signature: self.tree.signature.map(|s| s.to_vec()),
        })
    }

    /// Stages what a checked proof adds: its nodes, the upgrade, the block's bytes.
    fn stage(&mut self, verified: Verified, value: Option<Vec<u8>>) -> Result<bool, CoreError> {
        let mut changed = false;
        if let Some(up) = verified.upgraded {
            if self.secret.is_some() {
                return Err(ProofError::Malformed("an upgrade for a feed we write".into()).into());
            }
            self.tree = up;
            changed = true;
        }
        for n in &verified.nodes {
            self.staged_nodes.insert(n.index, *n);
        }
        if let Some(i) = verified.block {
            let value = value.unwrap_or_default();
            if i >= self.tree.length {
                return Err(ProofError::Malformed(format!("block {i} is past the end")).into());
            }
            if !self.bits.get(i) {
                let offset = self.tree.byte_offset(&mut nodes_of!(self), i)?;
                self.staged_bytes += value.len();
                self.staged_data.insert(offset, value);
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
        for (offset, run) in merge_runs(&self.staged_data) {
            files
                .data()?
                .write_all_at(run.as_ref(), offset)
                .map_err(files.err("data"))?;
        }
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0;
        let mut next = u64::MAX;
        for (&index, n) in &self.staged_nodes {
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
        if self.cache.len() + nodes.len() < NODE_CACHE {
            self.cache.extend(nodes);
        }
        self.last_used = Instant::now();
        Ok(())
    }

    /// Commits and closes the feed's files if they have not been used for `idle`; the next
    /// use opens them again. Returns whether they were closed.
    pub fn close_if_idle(&mut self, idle: Duration) -> Result<bool, CoreError> {
        if !self.files.any_open() || self.last_used.elapsed() < idle {
            return Ok(false);
        }
        self.commit()?;
        self.files.close();
        Ok(true)
    }

    /// Commits, then makes every commit so far survive a machine crash.
    pub fn sync(&mut self) -> Result<(), CoreError> {
        self.sync_later()?.run()
    }

    /// Commits, and returns the fsyncs that make every commit so far survive a machine
    /// crash, to run without holding the core (they take milliseconds).
    pub fn sync_later(&mut self) -> Result<Durable, CoreError> {
        self.commit()?;
        let mut files = Vec::new();
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
            ));
        }
        Ok(Durable { files })
    }
}

/// The fsyncs of [`Core::sync_later`].
#[derive(Debug)]
pub struct Durable {
    files: Vec<(File, PathBuf)>,
}

impl Durable {
    /// Forces the files to disk, in order.
    pub fn run(self) -> Result<(), CoreError> {
        for (file, path) in self.files {
            file.sync_data()
                .map_err(|source| CoreError::Io { path, source })?;
        }
        Ok(())
    }
}

/// Blocks this large or larger are written on their own, not copied into a run.
const RUN_BLOCK_BYTES: usize = 16 << 10;

/// Joins small writes that touch end to end into one; large blocks stay on their own (a
/// copy of them costs more than the system call it saves).
fn merge_runs(staged: &BTreeMap<u64, Vec<u8>>) -> Vec<(u64, std::borrow::Cow<'_, [u8]>)> {
    use std::borrow::Cow;
    let mut out: Vec<(u64, Cow<'_, [u8]>)> = Vec::new();
    for (&offset, bytes) in staged {
        if bytes.len() < RUN_BLOCK_BYTES {
            if let Some((start, run)) = out.last_mut() {
                let small = matches!(run, Cow::Owned(_)) || run.len() < RUN_BLOCK_BYTES;
                if small && *start + run.len() as u64 == offset && run.len() < RUN_BLOCK_BYTES * 64
                {
                    run.to_mut().extend_from_slice(bytes);
                    continue;
                }
            }
        }
        out.push((offset, Cow::Borrowed(bytes)));
    }
    out
}

fn write_secret(dir: &Path, key: &SigningKey) -> io::Result<()> {
    let path = dir.join("secret");
    let tmp = dir.join("secret.tmp");
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all_at(key.as_bytes(), 0)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)
}

fn read_secret(dir: &Path) -> Result<Option<SigningKey>, CoreError> {
    let path = dir.join("secret");
    match fs::read(&path) {
        Ok(b) => {
            let seed: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                CoreError::Damaged(format!(
                    "its secret key file {} is {} bytes, not 32",
                    path.display(),
                    b.len()
                ))
            })?;
            Ok(Some(SigningKey::from_bytes(&seed)))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CoreError::Io { path, source }),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether others than the owner may read a core's secret key file; the mode if so.
pub fn secret_readable_by_others(dir: &Path) -> Option<u32> {
    let mode = fs::metadata(dir.join("secret")).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests;
