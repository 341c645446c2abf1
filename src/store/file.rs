//! One of a core's files, read and written with positioned I/O on the calling thread, with the
//! tree file's bytes kept in memory while a process-wide budget allows.
//!
//! The library issues dozens of small reads and writes per block; the default backend hands
//! each to a blocking thread pool and back, which on two cores spent most of the time
//! switching threads. These calls hit the page cache and return in microseconds, so they are
//! done in place. Writes are made durable by [`CoreFileIo::sync`], not one by one.
//!
//! The tree file takes about 20 reads of one 40-byte node per replicated block (proof building
//! on one side, the missing-node count and the proof check on the other), each a system call.
//! Its mirror answers them from memory instead. Writes still go to the file first, in the
//! order the library makes them, so what is on disk after a crash is what it was without the
//! mirror; the mirror only ever holds what the file holds.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use random_access_storage::{BoxFuture, RandomAccess, RandomAccessError};

/// Bytes of tree files held in memory by the whole process. A tree holds 80 bytes per block,
/// so this covers about 800,000 blocks over all open feeds; files past it are read from disk.
pub const MAX_MIRRORED_BYTES: usize = 64 << 20;

/// The budget every tree file of the process shares.
pub static TREE_MIRRORS: MirrorBudget = MirrorBudget::new(MAX_MIRRORED_BYTES);

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
    /// The file's bytes, exactly as long as the file.
    Loaded(Vec<u8>),
    /// Not mirrored: not wanted, over the budget, or dropped after a failed write.
    Off,
}

/// A core file (`tree`, `data`, `bitfield` or `oplog`).
#[derive(Debug)]
pub struct CoreFileIo {
    file: File,
    len: AtomicU64,
    mirror: Mutex<Mirror>,
    budget: Option<&'static MirrorBudget>,
}

impl CoreFileIo {
    /// Opens or creates the file; with a budget, its bytes are kept in memory while the budget
    /// allows.
    pub fn open(path: &Path, budget: Option<&'static MirrorBudget>) -> std::io::Result<Self> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(CoreFileIo {
            file,
            len: len.into(),
            mirror: Mutex::new(match budget {
                Some(_) => Mirror::Unloaded,
                None => Mirror::Off,
            }),
            budget,
        })
    }

    /// Forces the file to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }

    fn length(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    /// The mirror, loaded from the file on first use; `Off` once it cannot be had.
    fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        let mut mirror = self.mirror.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*mirror, Mirror::Unloaded) {
            *mirror = self.load().unwrap_or(Mirror::Off);
        }
        mirror
    }

    fn load(&self) -> Option<Mirror> {
        let budget = self.budget?;
        let len = usize::try_from(self.length()).ok()?;
        if !budget.reserve(len) {
            return None;
        }
        let mut bytes = vec![0; len];
        match self.file.read_exact_at(&mut bytes, 0) {
            Ok(()) => Some(Mirror::Loaded(bytes)),
            Err(_) => {
                budget.release(len);
                None
            }
        }
    }

    /// Brings the mirror to `f(bytes)`, with the budget; drops the mirror when it runs out.
    fn update_mirror(&self, mirror: &mut Mirror, f: impl FnOnce(&mut Vec<u8>)) {
        let (Mirror::Loaded(bytes), Some(budget)) = (&mut *mirror, self.budget) else {
            return;
        };
        let before = bytes.len();
        f(bytes);
        let after = bytes.len();
        if after > before && !budget.reserve(after - before) {
            *mirror = Mirror::Off;
            budget.release(before);
        } else if after < before {
            budget.release(before - after);
        }
    }

    fn set_length(&self, len: u64) -> Result<(), RandomAccessError> {
        let mut mirror = self.mirror();
        if let Err(e) = self.file.set_len(len) {
            give_up(&mut mirror, self.budget);
            return Err(e.into());
        }
        self.len.store(len, Ordering::SeqCst);
        self.update_mirror(&mut mirror, |bytes| bytes.resize(len as usize, 0));
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), RandomAccessError> {
        let mut mirror = self.mirror();
        if let Err(e) = self.file.write_all_at(data, offset) {
            // The file may hold part of the write: the mirror can no longer say what it holds.
            give_up(&mut mirror, self.budget);
            return Err(e.into());
        }
        let end = offset + data.len() as u64;
        self.len.fetch_max(end, Ordering::SeqCst);
        self.update_mirror(&mut mirror, |bytes| {
            let (start, end) = (offset as usize, end as usize);
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        });
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
        if let Mirror::Loaded(bytes) = &*self.mirror() {
            if let Some(slice) = bytes.get(offset as usize..end as usize) {
                return Ok(slice.to_vec());
            }
        }
        let mut buf = vec![0; length as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Turns a mirror off, with its bytes back to the budget.
fn give_up(mirror: &mut Mirror, budget: Option<&MirrorBudget>) {
    if let (Mirror::Loaded(bytes), Some(budget)) = (&*mirror, budget) {
        budget.release(bytes.len());
    }
    *mirror = Mirror::Off;
}

impl Drop for CoreFileIo {
    fn drop(&mut self) {
        let budget = self.budget;
        give_up(
            self.mirror.get_mut().unwrap_or_else(|e| e.into_inner()),
            budget,
        );
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
        // Deleting through the end is a truncation; inside the file it zeroes the range.
        if offset.saturating_add(length) >= stored {
            return done(self.set_length(offset));
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
        Write(u64, Vec<u8>),
        Read(u64, u64),
        Del(u64, u64),
        Truncate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..300, proptest::collection::vec(any::<u8>(), 1..80))
                .prop_map(|(o, d)| Op::Write(o, d)),
            4 => (0u64..400, 0u64..90).prop_map(|(o, l)| Op::Read(o, l)),
            1 => (0u64..400, 0u64..90).prop_map(|(o, l)| Op::Del(o, l)),
            1 => (0u64..400).prop_map(Op::Truncate),
        ]
    }

    fn block_on<T>(f: BoxFuture<T>) -> T {
        futures::executor::block_on(f)
    }

    proptest! {
        /// A mirrored file answers every call as a plain one does, holds on disk what the plain
        /// one holds, and its mirror never takes more than its budget or keeps any of it once
        /// dropped. The budget is small, so that mirrors also run out of it mid-way.
        #[test]
        fn a_mirrored_file_behaves_as_the_plain_file(
            ops in proptest::collection::vec(op(), 1..60),
            budget in 0usize..600,
        ) {
            let budget: &'static MirrorBudget = Box::leak(Box::new(MirrorBudget::new(budget)));
            let dir = tempfile::tempdir().unwrap();
            let plain = CoreFileIo::open(&dir.path().join("plain"), None).unwrap();
            let mirrored = CoreFileIo::open(&dir.path().join("mirrored"), Some(budget)).unwrap();
            for op in ops {
                let (a, b) = match &op {
                    Op::Write(o, d) => (
                        block_on(plain.write(*o, d)).map(|()| Vec::new()),
                        block_on(mirrored.write(*o, d)).map(|()| Vec::new()),
                    ),
                    Op::Read(o, l) => (block_on(plain.read(*o, *l)), block_on(mirrored.read(*o, *l))),
                    Op::Del(o, l) => (
                        block_on(plain.del(*o, *l)).map(|()| Vec::new()),
                        block_on(mirrored.del(*o, *l)).map(|()| Vec::new()),
                    ),
                    Op::Truncate(l) => (
                        block_on(plain.truncate(*l)).map(|()| Vec::new()),
                        block_on(mirrored.truncate(*l)).map(|()| Vec::new()),
                    ),
                };
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "{:?}", op);
                prop_assert_eq!(plain.len(), mirrored.len());
                prop_assert!(budget.used() <= budget.max);
                if let Mirror::Loaded(bytes) = &*mirrored.mirror.lock().unwrap() {
                    prop_assert_eq!(budget.used(), bytes.len());
                }
            }
            prop_assert_eq!(
                std::fs::read(dir.path().join("plain")).unwrap(),
                std::fs::read(dir.path().join("mirrored")).unwrap()
            );
            drop(mirrored);
            prop_assert_eq!(budget.used(), 0);
        }
    }

    #[test]
    fn a_file_past_the_budget_is_read_from_disk() {
        let budget: &'static MirrorBudget = Box::leak(Box::new(MirrorBudget::new(100)));
        let dir = tempfile::tempdir().unwrap();
        let file = CoreFileIo::open(&dir.path().join("tree"), Some(budget)).unwrap();
        block_on(file.write(0, &[7; 60])).unwrap();
        assert_eq!(budget.used(), 60, "mirrored while it fits");
        block_on(file.write(60, &[8; 60])).unwrap();
        assert_eq!(budget.used(), 0, "given up past the budget");
        assert_eq!(
            block_on(file.read(50, 20)).unwrap(),
            [[7; 10], [8; 10]].concat()
        );
    }
}
