//! The files of one feed, opened lazily; the header slot format; the secret key file.

use super::*;

pub(super) const SLOT_BYTES: u64 = 4096;

pub(super) const MAGIC: &[u8; 8] = b"FSCORE\x00\x01";

/// The four files of a core, each opened when first used and closed when the feed idles
/// (see [`Core::close_if_idle`]): storage with thousands of feeds holds files open only for
/// the ones in use.
#[derive(Debug)]
pub(super) struct Files {
    pub(super) dir: PathBuf,
    pub(super) handles: [OnceLock<File>; 4],
}

/// The files of a core, in its folder.
pub const FILE_NAMES: [&str; 4] = ["header", "tree", "data", "bitfield"];

impl Files {
    /// The files of a core in `dir`; with `create`, all four are created now.
    pub(super) fn open(dir: &Path, create: bool) -> Result<Files, CoreError> {
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

    pub(super) fn get(&self, which: usize, create: bool) -> Result<&File, CoreError> {
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

    pub(super) fn header(&self) -> Result<&File, CoreError> {
        self.get(0, false)
    }

    pub(super) fn tree(&self) -> Result<&File, CoreError> {
        self.get(1, false)
    }

    pub(super) fn data(&self) -> Result<&File, CoreError> {
        self.get(2, false)
    }

    pub(super) fn bitfield(&self) -> Result<&File, CoreError> {
        self.get(3, false)
    }

    /// Closes whatever is open; the next use opens it again.
    pub(super) fn close(&mut self) {
        for h in &mut self.handles {
            h.take();
        }
    }

    pub(super) fn any_open(&self) -> bool {
        self.handles.iter().any(|h| h.get().is_some())
    }

    /// The error of a failed read or write of file `name`; its path is made only if it fails.
    pub(super) fn err<'a>(&'a self, name: &'a str) -> impl FnOnce(io::Error) -> CoreError + 'a {
        move |source| CoreError::Io {
            path: self.dir.join(name),
            source,
        }
    }
}

/// One committed state, as a header slot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) seq: u64,
    pub(super) flavour: Flavour,
    pub(super) key: [u8; 32],
    pub(super) fork: u64,
    pub(super) length: u64,
    pub(super) byte_length: u64,
    pub(super) tree_hash: [u8; 32],
    pub(super) signature: Option<[u8; 64]>,
}

impl Header {
    pub(super) const BYTES: usize = 8 + 8 + 1 + 32 + 8 + 8 + 8 + 32 + 1 + 64;

    pub(super) fn encode(&self) -> Vec<u8> {
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
    pub(super) fn decode(b: &[u8]) -> Option<Header> {
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

/// Creates a folder only its owner can enter, whatever the umask.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

pub(super) fn write_secret(dir: &Path, key: &SigningKey) -> io::Result<()> {
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

pub(super) fn read_secret(dir: &Path) -> Result<Option<SigningKey>, CoreError> {
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

pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether others than the owner may read a core's secret key file; the mode if so.
pub fn secret_readable_by_others(dir: &Path) -> Option<u32> {
    let mode = fs::metadata(dir.join("secret")).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}
