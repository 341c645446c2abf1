//! One of a core's files, read and written with positioned I/O on the calling thread. The
//! tree, the bitfield and a replica's oplog are mirrored in memory, while a process-wide
//! budget allows, and hold their writes back until the core's data is cut, the core is synced,
//! too many writes are held, or the engine's timer puts them down.
//!
//! The library issues dozens of small reads and writes per block; the default backend hands
//! each to a blocking thread pool and back, which on two cores spent most of the time
//! switching threads. These calls hit the page cache and return in microseconds, so they are
//! done in place. Writes are made durable by [`CoreFileIo::sync`], not one by one.
//!
//! The tree file takes about 20 reads of one 40-byte node per replicated block (proof building
//! on one side, the missing-node count and the proof check on the other), each a system call;
//! its mirror answers them from memory. Its writes come in runs of one node each; held back,
//! a run goes down as one write. The library checkpoints every fourth block (tree, bitfield,
//! oplog header, oplog cut back); held back, a hundred checkpoints go down as one. A replica's
//! oplog entries are dropped when it reopens anyway (see `roll_back_replica` in the store), so
//! holding them back costs nothing a crash would have kept. [`WriteOrder`] says in which order
//! held writes go down, and why that leaves the disk in a state the library can open after any
//! crash.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use random_access_storage::{BoxFuture, RandomAccess, RandomAccessError};

/// Bytes of mirrors the whole process holds. A tree holds 80 bytes per block and a bitfield
/// one bit, so this covers about 800,000 blocks over all open feeds; past it, files are read
/// from and written to disk directly.
pub const MAX_MIRRORED_BYTES: usize = 64 << 20;

/// The budget the mirrors of every core file of the process share.
pub static MIRRORS: MirrorBudget = MirrorBudget::new(MAX_MIRRORED_BYTES);

/// Bytes that mirrors may hold together, and how many they hold now.
#[derive(Debug)]
pub struct MirrorBudget {
    used: AtomicUsize,
    max: usize,
}

impl MirrorBudget {
    /// A budget of `max` bytes.
    pub const fn new(max: usize) -> Self {
        MirrorBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes`, or says there is not enough left.
    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[derive(Debug)]
enum Mirror {
    /// Not read yet: the first access reads the whole file, so opening many cores stays cheap.
    Unloaded,
    /// The file's bytes as the library last wrote them, and the byte ranges of those writes
    /// that are not in the file yet.
    Loaded {
        bytes: Vec<u8>,
        held: Vec<(usize, usize)>,
        /// The shortest length the file was cut to since its writes last went down: the file
        /// goes down to it, then out to the length of `bytes`, before the held writes.
        cut: Option<usize>,
        /// What `bytes` took from the budget: the memory asked for, not only the length.
        reserved: usize,
    },
    /// Not mirrored: not wanted, over the budget, or given up after a failed write.
    Off,
}

/// Writes held back at most, per file, before they are put down anyway.
const MAX_HELD_WRITES: usize = 1024;

/// How a core file reaches the disk.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// Mirrored, its writes and cuts held back.
    Held(Hold),
    /// Written at once, after what the core's other files hold back: a writable core's oplog,
    /// whose entries are the only copy of what was appended.
    Ordered,
    /// Written at once, while the other files go on holding theirs: a core's data, which the
    /// library writes before anything that points to it. Cutting it or zeroing a range in it
    /// still waits for the held writes, which may point into what goes.
    Unordered,
}

/// How a held file is mirrored and ordered.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// Held writes of files of lower rank go down first.
    pub rank: u8,
    /// The memory its mirror counts against.
    pub budget: &'static MirrorBudget,
    /// Written after the others in each of the library's checkpoints (the oplog, whose header
    /// ends one): when it is written, no checkpoint is half made, and all files may go down.
    pub last: bool,
}

/// The files of one core, in step.
///
/// Held writes are put down before an [`Keep::Ordered`] file is written, before any file of
/// the core is cut or synced, and when [`CoreFileIo::put_down_held`] says so. Held files go
/// down in rank order: the tree, the bitfield, then the oplog. The library writes a checkpoint
/// as bitfield, tree, then oplog header; a process that died between its bitfield and its tree
/// writes would leave blocks marked present whose tree nodes are missing, a core that cannot
/// serve them. In rank order the tree is always on disk before the bitfield that points into
/// it, and both before the oplog header that stops replaying the entries they replace. A
/// crash between two files leaves new tree and bitfield under an older header, as a crash in
/// the library's own checkpoint does. Held writes next to each other go down as one.
#[derive(Debug, Default)]
pub struct WriteOrder {
    /// The files that can hold writes, in rank order.
    holders: Mutex<Vec<(u8, Weak<CoreFileIo>)>>,
}

impl WriteOrder {
    fn register(&self, rank: u8, file: Weak<CoreFileIo>) {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        let at = holders.partition_point(|(r, _)| *r <= rank);
        holders.insert(at, (rank, file));
    }

    /// Puts down what every file of the core holds back, in rank order.
    fn put_down_all(&self) -> std::io::Result<()> {
        self.put_down_ranked(|_| true)
    }

    /// Puts down what the files ranked below `rank` hold back, in rank order.
    fn put_down_below(&self, rank: u8) -> std::io::Result<()> {
        self.put_down_ranked(|r| r < rank)
    }

    /// Puts down what the files ranked up to `rank` hold back, in rank order.
    fn put_down_up_to(&self, rank: u8) -> std::io::Result<()> {
        self.put_down_ranked(|r| r <= rank)
    }

    fn put_down_ranked(&self, pick: impl Fn(u8) -> bool) -> std::io::Result<()> {
        let holders: Vec<Arc<CoreFileIo>> = self
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(rank, _)| pick(*rank))
            .filter_map(|(_, f)| f.upgrade())
            .collect();
        // Every mirror is locked, in rank order, before any goes down: a sync on another
        // thread must not put the bitfield down with a write held after the tree went down.
        let mut mirrors: Vec<MutexGuard<'_, Mirror>> = holders
            .iter()
            .map(|f| f.mirror.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        for (file, mirror) in holders.iter().zip(mirrors.iter_mut()) {
            file.put_down(mirror)?;
        }
        Ok(())
    }
}

/// A core file (`tree`, `data`, `bitfield` or `oplog`).
#[derive(Debug)]
pub struct CoreFileIo {
    file: File,
    /// The length as the library sees it, held writes included.
    len: AtomicU64,
    mirror: Mutex<Mirror>,
    hold: Option<Hold>,
    /// Writes to it wait for what the core's files hold back.
    ordered: bool,
    order: Arc<WriteOrder>,
    #[cfg(test)]
    put_down_at: AtomicU64,
}

#[cfg(test)]
static PUT_DOWNS: AtomicU64 = AtomicU64::new(0);

impl CoreFileIo {
    /// Opens or creates one file of a core; all files of a core share one `order`. A held
    /// file's bytes are kept in memory while its budget allows, and its writes wait (see
    /// [`WriteOrder`]).
    pub fn open(path: &Path, keep: Keep, order: Arc<WriteOrder>) -> std::io::Result<Arc<Self>> {
        let (hold, ordered) = match keep {
            Keep::Held(hold) => (Some(hold), true),
            Keep::Ordered => (None, true),
            Keep::Unordered => (None, false),
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let opened = Arc::new(CoreFileIo {
            file,
            len: len.into(),
            mirror: Mutex::new(match hold {
                Some(_) => Mirror::Unloaded,
                None => Mirror::Off,
            }),
            hold,
            ordered,
            order: order.clone(),
            #[cfg(test)]
            put_down_at: AtomicU64::new(0),
        });
        if let Some(hold) = hold {
            order.register(hold.rank, Arc::downgrade(&opened));
        }
        Ok(opened)
    }

    /// Puts down what the core's files hold back, in rank order.
    pub fn put_down_held(&self) -> std::io::Result<()> {
        self.order.put_down_all()
    }

    /// Puts down what the core's files hold back and lets go of this file's mirror if it ends
    /// checkpoints (the oplog of a replica that is done for now): it is read again on its next
    /// write. Its memory would otherwise stay taken by every idle replica.
    pub fn release_if_last(&self) -> std::io::Result<()> {
        if !self.hold.is_some_and(|h| h.last) {
            return Ok(());
        }
        self.order.put_down_all()?;
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*mirror, Mirror::Loaded { held, cut, .. } if held.is_empty() && cut.is_none())
        {
            give_up(&mut mirror, self.budget());
            *mirror = Mirror::Unloaded;
        }
        Ok(())
    }

    /// Puts down what the core's files hold back, then forces this file to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.order.put_down_all()?;
        self.file.sync_all()
    }

    fn length(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    fn budget(&self) -> Option<&'static MirrorBudget> {
        self.hold.map(|h| h.budget)
    }

    /// The mirror, loaded from the file on first use; `Off` once it cannot be had.
    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*mirror, Mirror::Unloaded) {
            *mirror = self.load().unwrap_or(Mirror::Off);
        }
        mirror
    }

    fn load(&self) -> Option<Mirror> {
        let budget = self.budget()?;
        let len = usize::try_from(self.length()).ok()?;
        if !budget.reserve(len) {
            return None;
        }
        let mut bytes = vec![0; len];
        match self.file.read_exact_at(&mut bytes, 0) {
            Ok(()) => Some(Mirror::Loaded {
                bytes,
                held: Vec::new(),
                cut: None,
                reserved: len,
            }),
            Err(_) => {
                budget.release(len);
                None
            }
        }
    }

    fn put_down(&self, mirror: &mut Mirror) -> std::io::Result<()> {
        #[cfg(test)]
        if matches!(mirror, Mirror::Loaded { held, .. } if !held.is_empty()) {
            self.put_down_at.store(
                PUT_DOWNS.fetch_add(1, Ordering::SeqCst) + 1,
                Ordering::SeqCst,
            );
        }
        put_down(&self.file, mirror)
    }

    fn set_length(&self, len: u64) -> Result<(), RandomAccessError> {
        if self.hold.is_some() && self.resize_held(len) {
            return Ok(());
        }
        self.order.put_down_all()?;
        let mut mirror = self.mirror();
        if let Err(e) = self.file.set_len(len) {
            give_up(&mut mirror, self.budget());
            return Err(e.into());
        }
        self.len.store(len, Ordering::SeqCst);
        if let (
            Mirror::Loaded {
                bytes, reserved, ..
            },
            Some(budget),
        ) = (&mut *mirror, self.budget())
        {
            if !grow(bytes, reserved, len as usize, budget) {
                give_up(&mut mirror, self.budget());
            }
        }
        Ok(())
    }

    /// Holds a change of length back in the mirror, if there is one with budget for it.
    fn resize_held(&self, len: u64) -> bool {
        let mut mirror = self.mirror();
        let (
            Mirror::Loaded {
                bytes,
                held,
                cut,
                reserved,
            },
            Some(budget),
        ) = (&mut *mirror, self.budget())
        else {
            return false;
        };
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        let before = bytes.len();
        if !grow(bytes, reserved, len, budget) {
            return false;
        }
        held.retain_mut(|(start, end)| {
            *end = (*end).min(len);
            start < end
        });
        *cut = Some(cut.unwrap_or(before).min(len));
        self.len.store(len as u64, Ordering::SeqCst);
        true
    }

    /// Holds a write back in the mirror, if there is one with budget for it, and room
    /// unless `past_cap`.
    fn hold(&self, offset: u64, data: &[u8], past_cap: bool) -> Held {
        let mut mirror = self.mirror();
        let (
            Mirror::Loaded {
                bytes,
                held,
                reserved,
                ..
            },
            Some(budget),
        ) = (&mut *mirror, self.budget())
        else {
            return Held::NoMirror;
        };
        let (start, end) = (offset as usize, offset as usize + data.len());
        if held.len() >= MAX_HELD_WRITES && !past_cap {
            return Held::Full;
        }
        if bytes.len() < end && !grow(bytes, reserved, end, budget) {
            return Held::NoBudget;
        }
        bytes[start..end].copy_from_slice(data);
        held.push((start, end));
        self.len.fetch_max(end as u64, Ordering::SeqCst);
        Held::Yes
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), RandomAccessError> {
        let Some(hold) = self.hold else {
            // Files without a `hold` skip the mirror on every write.
            if self.ordered {
                self.order.put_down_all()?;
            }
            return self.write_through(offset, data);
        };
        match self.hold(offset, data, false) {
            Held::Yes => return Ok(()),
            Held::Full => {
                // In the middle of a checkpoint the library may have written the bitfield and
                // not yet the tree: only the tree may go down ahead of the rest (nodes nothing
                // points to yet are harmless). The file that ends checkpoints puts all down.
                if hold.last {
                    self.order.put_down_all()?;
                } else {
                    self.order.put_down_up_to(0)?;
                }
                if let Held::Yes = self.hold(offset, data, true) {
                    return Ok(());
                }
            }
            Held::NoMirror | Held::NoBudget => {}
        }
        // A mirror that cannot take the write is given up, after what it and the files ranked
        // before it hold went down: the file is written and read directly from now on.
        self.order.put_down_up_to(hold.rank)?;
        give_up(&mut self.mirror(), self.budget());
        self.write_through(offset, data)
    }

    fn write_through(&self, offset: u64, data: &[u8]) -> Result<(), RandomAccessError> {
        self.file.write_all_at(data, offset)?;
        self.len
            .fetch_max(offset + data.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    fn read_at(&self, offset: u64, length: u64) -> Result<Vec<u8>, RandomAccessError> {
        let stored = self.length();
        let end = offset.checked_add(length).filter(|&end| end <= stored);
        let Some(end) = end else {
            return Err(RandomAccessError::OutOfBounds {
                offset,
                end: Some(offset.saturating_add(length)),
                length: stored,
            });
        };
        if let Mirror::Loaded { bytes, .. } = &*self.mirror() {
            if let Some(slice) = bytes.get(offset as usize..end as usize) {
                return Ok(slice.to_vec());
            }
        }
        let mut buf = vec![0; length as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// What became of a write offered to the mirror.
enum Held {
    Yes,
    /// Too many writes held: put them down and offer it again.
    Full,
    NoMirror,
    NoBudget,
}

/// A growing mirror takes at least this much more memory at a time.
const MIN_GROWTH: usize = 4096;

/// Sets a mirror's length to `len`, zero-filled; false if the budget cannot cover it.
/// Memory is taken from the budget as it is asked for (`reserved`, not the length), in steps
/// of an eighth of what the mirror holds and at least [`MIN_GROWTH`]: appends stay amortised
/// constant time, without the doubling that would leave most mirrors half empty.
fn grow(bytes: &mut Vec<u8>, reserved: &mut usize, len: usize, budget: &MirrorBudget) -> bool {
    if len > *reserved {
        let step = len.max(*reserved + (*reserved / 8).max(MIN_GROWTH));
        // Near the end of the budget, only what is needed.
        let target = match [step, len]
            .into_iter()
            .find(|t| budget.reserve(t - *reserved))
        {
            Some(target) => target,
            None => return false,
        };
        bytes.reserve_exact(target - bytes.len());
        *reserved = target;
    }
    bytes.resize(len, 0);
    true
}

/// Bytes between two held writes that are rewritten, unchanged, to make one write of both: a
/// system call costs more than copying a page.
const MAX_BRIDGED_GAP: usize = 4096;

/// Writes the ranges a mirror holds back to the file, ranges near each other as one write,
/// after cutting the file as it was cut. Outside the held ranges the mirror holds what the
/// file holds (below the cut), so bridging a gap writes the bytes already there. After an
/// error the cut and the ranges stay held, to be tried again.
fn put_down(file: &File, mirror: &mut Mirror) -> std::io::Result<()> {
    let Mirror::Loaded {
        bytes, held, cut, ..
    } = mirror
    else {
        return Ok(());
    };
    if let Some(at) = *cut {
        file.set_len(at as u64)?;
        file.set_len(bytes.len() as u64)?;
    }
    if held.is_empty() {
        *cut = None;
        return Ok(());
    }
    held.sort_unstable();
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(held.len());
    for &(start, end) in held.iter() {
        match runs.last_mut() {
            Some(run) if start <= run.1 + MAX_BRIDGED_GAP => run.1 = run.1.max(end),
            _ => runs.push((start, end)),
        }
    }
    for &(start, end) in &runs {
        file.write_all_at(&bytes[start..end], start as u64)?;
    }
    held.clear();
    *cut = None;
    Ok(())
}

/// Turns a mirror off, with its bytes back to the budget. Whatever it held back is dropped:
/// callers put it down first.
fn give_up(mirror: &mut Mirror, budget: Option<&MirrorBudget>) {
    if let (Mirror::Loaded { reserved, .. }, Some(budget)) = (&*mirror, budget) {
        budget.release(*reserved);
    }
    *mirror = Mirror::Off;
}

impl Drop for CoreFileIo {
    fn drop(&mut self) {
        let budget = self.budget();
        // Files ranked before this one go down first, as they would have.
        let below = match self.hold {
            Some(hold) => self.order.put_down_below(hold.rank),
            None => Ok(()),
        };
        let mirror = self.mirror.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = below.and_then(|()| put_down(&self.file, mirror)) {
            tracing::error!("a core file lost its last writes on close: {e}");
        }
        give_up(mirror, budget);
    }
}

fn done<T: Send + 'static>(
    r: Result<T, RandomAccessError>,
) -> BoxFuture<Result<T, RandomAccessError>> {
    Box::pin(std::future::ready(r))
}

impl RandomAccess for CoreFileIo {
    fn write(&self, offset: u64, data: &[u8]) -> BoxFuture<Result<(), RandomAccessError>> {
        done(self.write_at(offset, data))
    }

    fn read(&self, offset: u64, length: u64) -> BoxFuture<Result<Vec<u8>, RandomAccessError>> {
        done(self.read_at(offset, length))
    }

    fn del(&self, offset: u64, length: u64) -> BoxFuture<Result<(), RandomAccessError>> {
        let stored = self.length();
        if offset > stored {
            return done(Err(RandomAccessError::OutOfBounds {
                offset,
                end: None,
                length: stored,
            }));
        }
        if length == 0 {
            return done(Ok(()));
        }
        // Deleting through the end is a truncation; inside the file it zeroes the range, after
        // the held writes that may point into it.
        if offset.saturating_add(length) >= stored {
            return done(self.set_length(offset));
        }
        if let Err(e) = self.order.put_down_all() {
            return done(Err(e.into()));
        }
        done(self.write_at(offset, &vec![0u8; length as usize]))
    }

    fn truncate(&self, length: u64) -> BoxFuture<Result<(), RandomAccessError>> {
        done(self.set_length(length))
    }

    fn len(&self) -> u64 {
        self.length()
    }

    fn sync_all(&self) -> BoxFuture<Result<(), RandomAccessError>> {
        done(self.sync().map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Writes to the held file (`true`: the second one, ranked after the first).
        Write(bool, u64, Vec<u8>),
        Read(bool, u64, u64),
        Del(bool, u64, u64),
        Truncate(bool, u64),
        /// Appends to the core's written-through file, which puts the held writes down.
        WriteOther(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        let which = proptest::bool::ANY;
        prop_oneof![
            4 => (which, 0u64..300, proptest::collection::vec(any::<u8>(), 1..80))
                .prop_map(|(w, o, d)| Op::Write(w, o, d)),
            4 => (which, 0u64..400, 0u64..90).prop_map(|(w, o, l)| Op::Read(w, o, l)),
            1 => (which, 0u64..400, 0u64..90).prop_map(|(w, o, l)| Op::Del(w, o, l)),
            1 => (which, 0u64..400).prop_map(|(w, l)| Op::Truncate(w, l)),
            2 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Op::WriteOther),
        ]
    }

    fn block_on<T>(f: BoxFuture<T>) -> T {
        futures::executor::block_on(f)
    }

    fn budget(max: usize) -> &'static MirrorBudget {
        Box::leak(Box::new(MirrorBudget::new(max)))
    }

    /// How the store keeps its file of `rank`: 0 the tree, 1 the bitfield, 2 a replica's
    /// oplog, which ends checkpoints.
    fn held(rank: u8, budget: &'static MirrorBudget) -> Option<Hold> {
        Some(Hold {
            rank,
            budget,
            last: rank == 2,
        })
    }

    fn open(
        dir: &Path,
        name: &str,
        hold: Option<Hold>,
        order: &Arc<WriteOrder>,
    ) -> Arc<CoreFileIo> {
        let keep = hold.map_or(Keep::Ordered, Keep::Held);
        CoreFileIo::open(&dir.join(name), keep, order.clone()).unwrap()
    }

    fn held_writes(file: &CoreFileIo) -> usize {
        match &*file.mirror.lock().unwrap() {
            Mirror::Loaded { held, .. } => held.len(),
            _ => 0,
        }
    }

    #[test]
    fn data_writes_leave_held_writes_held_and_cuts_go_down_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let budget = budget(1 << 20);
        let order = Arc::default();
        let tree = open(dir.path(), "tree", held(0, budget), &order);
        let oplog = open(dir.path(), "oplog", held(2, budget), &order);
        let data =
            CoreFileIo::open(&dir.path().join("data"), Keep::Unordered, order.clone()).unwrap();
        block_on(oplog.write(0, &[7; 100])).unwrap();
        block_on(oplog.sync_all()).unwrap();
        block_on(tree.write(0, &[1; 40])).unwrap();
        block_on(oplog.truncate(10)).unwrap();
        block_on(oplog.write(10, &[8; 5])).unwrap();
        block_on(data.write(0, b"block")).unwrap();
        assert_eq!(held_writes(&tree), 1, "a data write puts nothing down");
        assert_eq!(oplog.len(), 15);
        assert_eq!(
            block_on(oplog.read(0, 15)).unwrap(),
            [&[7u8; 10][..], &[8; 5]].concat()
        );
        let disk = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(disk("oplog"), [7; 100], "the cut is held too");
        oplog.put_down_held().unwrap();
        assert_eq!(disk("oplog"), [&[7u8; 10][..], &[8; 5]].concat());
        assert_eq!(disk("tree"), [1; 40]);
        assert!(tree.put_down_at.load(Ordering::SeqCst) < oplog.put_down_at.load(Ordering::SeqCst));
        // Cut, then grown by a truncate: the grown part reads as zeros, on disk too.
        block_on(oplog.truncate(4)).unwrap();
        block_on(oplog.truncate(8)).unwrap();
        oplog.put_down_held().unwrap();
        assert_eq!(disk("oplog"), [[7u8; 4], [0; 4]].concat());
    }

    proptest! {
        /// Two held files answer every call as plain ones do. Whenever the third file of their
        /// core changes, and after a sync, their disk holds what the plain files' disk holds.
        /// Mirrors never take more than their budget, and give all of it back when dropped.
        /// The budget is small, so that mirrors also run out of it mid-way.
        #[test]
        fn held_files_behave_as_plain_files(
            ops in proptest::collection::vec(op(), 1..60),
            budget in (0usize..900).prop_map(budget),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let disk = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
            let (plain_order, order) = (Arc::default(), Arc::default());
            let plain = [
                open(dir.path(), "plain0", None, &plain_order),
                open(dir.path(), "plain1", None, &plain_order),
            ];
            let held = [
                open(dir.path(), "held0", held(0, budget), &order),
                open(dir.path(), "held1", held(1, budget), &order),
            ];
            let other = open(dir.path(), "other", None, &order);
            let same_disk = || disk("plain0") == disk("held0") && disk("plain1") == disk("held1");
            for op in ops {
                let unit = |r: Result<(), RandomAccessError>| r.map(|()| Vec::new());
                let (a, b) = match &op {
                    Op::Write(w, o, d) => {
                        let w = *w as usize;
                        (unit(block_on(plain[w].write(*o, d))), unit(block_on(held[w].write(*o, d))))
                    }
                    Op::Read(w, o, l) => {
                        let w = *w as usize;
                        (block_on(plain[w].read(*o, *l)), block_on(held[w].read(*o, *l)))
                    }
                    Op::Del(w, o, l) => {
                        let w = *w as usize;
                        (unit(block_on(plain[w].del(*o, *l))), unit(block_on(held[w].del(*o, *l))))
                    }
                    Op::Truncate(w, l) => {
                        let w = *w as usize;
                        (unit(block_on(plain[w].truncate(*l))), unit(block_on(held[w].truncate(*l))))
                    }
                    Op::WriteOther(d) => {
                        block_on(other.write(other.len(), d)).unwrap();
                        prop_assert!(same_disk(), "put down before the other file changes");
                        (Ok(Vec::new()), Ok(Vec::new()))
                    }
                };
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "{:?}", op);
                prop_assert_eq!(plain[0].len(), held[0].len());
                prop_assert_eq!(plain[1].len(), held[1].len());
                prop_assert!(budget.used() <= budget.max);
                let mut mirrored = 0;
                for file in &held {
                    if let Mirror::Loaded { bytes, reserved, .. } = &*file.mirror.lock().unwrap() {
                        prop_assert!(*reserved >= bytes.len() && bytes.capacity() >= *reserved);
                        mirrored += reserved;
                    }
                }
                prop_assert_eq!(budget.used(), mirrored);
            }
            block_on(other.sync_all()).unwrap();
            prop_assert!(same_disk(), "after a sync");
            drop(held);
            prop_assert_eq!(budget.used(), 0);
        }
    }

    #[test]
    fn held_writes_go_down_in_rank_order_whatever_order_they_were_made_in() {
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::default();
        let budget = budget(1 << 20);
        let bitfield = open(dir.path(), "bitfield", held(1, budget), &order);
        let tree = open(dir.path(), "tree", held(0, budget), &order);
        let oplog = open(dir.path(), "oplog", None, &order);
        // The library's checkpoint: bitfield first, then tree, then the oplog header.
        block_on(bitfield.write(0, &[0xff; 4])).unwrap();
        for node in [2u64, 0, 1, 3, 9, 8] {
            block_on(tree.write(node * 40, &[node as u8 + 1; 40])).unwrap();
        }
        assert_eq!((held_writes(&bitfield), held_writes(&tree)), (1, 6));
        assert!(
            std::fs::read(dir.path().join("tree")).unwrap().is_empty(),
            "held back"
        );
        block_on(oplog.write(0, b"header")).unwrap();
        assert_eq!((held_writes(&bitfield), held_writes(&tree)), (0, 0));
        let (t, b) = (
            tree.put_down_at.load(Ordering::SeqCst),
            bitfield.put_down_at.load(Ordering::SeqCst),
        );
        assert!(
            0 < t && t < b,
            "the tree went down before the bitfield: {t} {b}"
        );
        let disk = std::fs::read(dir.path().join("tree")).unwrap();
        assert_eq!(disk.len(), 400);
        assert_eq!(
            (disk[360], disk[200]),
            (10, 0),
            "node 9 written, node 5 never"
        );
    }

    #[test]
    fn held_writes_go_down_on_close_in_rank_order() {
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::default();
        let budget = budget(1 << 20);
        let tree = open(dir.path(), "tree", held(0, budget), &order);
        let bitfield = open(dir.path(), "bitfield", held(1, budget), &order);
        block_on(bitfield.write(0, &[1; 4])).unwrap();
        block_on(tree.write(0, &[2; 40])).unwrap();
        // Dropped bitfield first: the tree still goes down before it.
        let tree_seen = Arc::downgrade(&tree);
        drop(bitfield);
        assert_eq!(std::fs::read(dir.path().join("bitfield")).unwrap(), [1; 4]);
        assert!(
            tree.put_down_at.load(Ordering::SeqCst) > 0,
            "tree went down first"
        );
        drop(tree);
        assert!(tree_seen.upgrade().is_none());
        assert_eq!(std::fs::read(dir.path().join("tree")).unwrap(), [2; 40]);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_long_run_of_writes_goes_down_in_batches_and_stays_mirrored() {
        let dir = tempfile::tempdir().unwrap();
        let budget = budget(1 << 20);
        let tree = open(dir.path(), "tree", held(0, budget), &Arc::default());
        let writes = MAX_HELD_WRITES + 10;
        for node in 0..writes as u64 {
            block_on(tree.write(node * 40, &[node as u8; 40])).unwrap();
        }
        assert_eq!(
            held_writes(&tree),
            10,
            "the first {MAX_HELD_WRITES} went down"
        );
        assert!(budget.used() >= writes * 40, "still mirrored");
        let disk = std::fs::read(dir.path().join("tree")).unwrap();
        assert_eq!(disk.len(), MAX_HELD_WRITES * 40);
        let last = block_on(tree.read((writes as u64 - 1) * 40, 40)).unwrap();
        assert_eq!(last, [(writes - 1) as u8; 40]);
    }

    #[test]
    fn a_file_at_its_cap_never_puts_the_bitfield_down_ahead_of_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let budget = budget(1 << 22);
        let order = Arc::default();
        let tree = open(dir.path(), "tree", held(0, budget), &order);
        let bitfield = open(dir.path(), "bitfield", held(1, budget), &order);
        let oplog = open(dir.path(), "oplog", held(2, budget), &order);
        let disk = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        // A checkpoint in the making: its bitfield writes are made, its tree writes are not.
        for i in 0..=MAX_HELD_WRITES as u64 {
            block_on(bitfield.write(i * 8, &[1; 8])).unwrap();
        }
        assert!(
            disk("bitfield").is_empty(),
            "the bitfield holds on past its cap"
        );
        assert_eq!(held_writes(&bitfield), MAX_HELD_WRITES + 1);
        for i in 0..=MAX_HELD_WRITES as u64 {
            block_on(tree.write(i * 40, &[2; 40])).unwrap();
        }
        assert!(!disk("tree").is_empty(), "the tree may go down ahead");
        assert!(disk("bitfield").is_empty());
        // The oplog ends the checkpoint: at its cap, everything goes down.
        for i in 0..=MAX_HELD_WRITES as u64 {
            block_on(oplog.write(i * 4, &[3; 4])).unwrap();
        }
        assert_eq!(disk("bitfield").len(), (MAX_HELD_WRITES + 1) * 8);
        assert_eq!(disk("tree").len(), (MAX_HELD_WRITES + 1) * 40);
        assert_eq!(held_writes(&bitfield), 0);
    }

    #[test]
    fn a_released_oplog_gives_its_memory_back_and_is_read_again_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let budget = budget(1 << 20);
        let order = Arc::default();
        let tree = open(dir.path(), "tree", held(0, budget), &order);
        let oplog = open(dir.path(), "oplog", held(2, budget), &order);
        block_on(tree.write(0, &[1; 40])).unwrap();
        block_on(oplog.write(0, &[2; 100])).unwrap();
        tree.release_if_last().unwrap();
        assert_eq!(
            held_writes(&tree),
            1,
            "only the file that ends checkpoints lets go"
        );
        oplog.release_if_last().unwrap();
        assert!(matches!(*oplog.mirror.lock().unwrap(), Mirror::Unloaded));
        assert_eq!(std::fs::read(dir.path().join("oplog")).unwrap(), [2; 100]);
        assert_eq!(
            std::fs::read(dir.path().join("tree")).unwrap(),
            [1; 40],
            "in rank order"
        );
        let tree_only = match &*tree.mirror.lock().unwrap() {
            Mirror::Loaded { reserved, .. } => *reserved,
            _ => 0,
        };
        assert_eq!(budget.used(), tree_only, "the oplog's memory went back");
        block_on(oplog.write(100, &[3; 10])).unwrap();
        assert_eq!(held_writes(&oplog), 1, "mirrored again");
        let read = block_on(oplog.read(95, 10)).unwrap();
        assert_eq!(read, [[2u8; 5], [3; 5]].concat());
    }

    #[test]
    fn a_file_past_the_budget_is_read_from_disk() {
        let budget = budget(100);
        let dir = tempfile::tempdir().unwrap();
        let tree = open(dir.path(), "tree", held(0, budget), &Arc::default());
        block_on(tree.write(0, &[7; 60])).unwrap();
        assert_eq!(budget.used(), 60, "mirrored while it fits");
        block_on(tree.write(60, &[8; 60])).unwrap();
        assert_eq!(budget.used(), 0, "given up past the budget");
        assert_eq!(
            block_on(tree.read(50, 20)).unwrap(),
            [[7; 10], [8; 10]].concat()
        );
        assert_eq!(std::fs::read(dir.path().join("tree")).unwrap().len(), 120);
    }
}
