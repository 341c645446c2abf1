//! Opening a feed's files: picking the newest header slot that checks, verifying it, and cutting a torn replica tail back to what verifies.

use super::*;

impl Core {
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
                        staged_nodes: NodeRuns::default(),
                        cache: NodeRuns::default(),
                        staged_data: BTreeMap::new(),
                        staged_bytes: 0,
                        next_offset: None,
                        read_ahead: ReadAhead::default(),
                        dirs_unsynced: false,
                        synced_seq: None,
                        changed: false,
                        damage: None,
                        used: false,
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
        let staged = NodeRuns::default();
        let mut cache = NodeRuns::default();
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
    pub(super) fn at_commit(
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
        let mut cache = NodeRuns::default();
        let staged = NodeRuns::default();
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

    pub(super) fn load_bits(&mut self) -> Result<(), CoreError> {
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
    pub(super) fn check_tail(&mut self) -> Result<Vec<String>, CoreError> {
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
}
