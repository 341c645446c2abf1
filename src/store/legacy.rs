//! Reading a feed folder written by the Rust `hypercore` crate (`=0.17.0-alpha.1`), which
//! feedscope used before it had its own core, without that crate.
//!
//! ```text
//! cores/<hex key>/
//!   oplog      two 4 KiB header slots, then entries (decoded here)
//!   tree       node i at byte 40*i: u64 LE size, 32-byte hash     } the same bytes as
//!   data       each block at its byte offset in the feed          } feedscope's own core
//!   bitfield   bit i at byte i/8, bit i%8; 4096-byte pages        } (see `core::disk`)
//! ```
//!
//! **Layout of `tree`, `data` and `bitfield`: they match feedscope's byte for byte**, as
//! read in the crate's source:
//!
//! - `tree` (`tree/merkle_tree.rs`, `flush_nodes`): node `i` is written at `40 * i` as
//!   `node.length` in fixed-width little-endian u64, then the 32-byte hash; nodes are read
//!   back from `40 * index`. Places never written are holes or file gaps and read as zeros;
//!   the crate never writes a node of all zeros (flushing one of its "blank" nodes panics).
//!   A truncation cuts the file (`flush_truncation`).
//! - `data` (`data/mod.rs`): a batch is written at the feed's byte length, a replicated
//!   block at its byte offset; `clear` punches a hole (zeros).
//! - `bitfield` (`bitfield/fixed.rs`, `dynamic.rs`): pages of 32768 bits are written whole,
//!   page `p` at `p * 4096`, as 1024 little-endian u32 words with bit `j` of a page in word
//!   `j / 32`, bit `j % 32`; so bit `i` of the feed is byte `i / 8`, bit `i % 8` (least
//!   significant first). (Its *reader* is broken for more than one page, which does not
//!   change what is on disk.)
//!
//! **But the files can lag the oplog.** The crate writes `tree` and `bitfield`, and the
//! header, only at a checkpoint (every fourth append or applied proof, or once the entries
//! pass 64 KiB); in between, new tree nodes, bitfield changes and the new length exist only
//! as oplog entries. So a reader must lay [`Legacy::oplog_nodes`] over `tree` and
//! [`Legacy::oplog_bitfield`] over `bitfield` (in order); `data` is always written first.
//!
//! **Oplog** (`oplog/mod.rs`, `header.rs`, `entry.rs`). Every header and entry is a frame:
//! u32 LE CRC-32 (IEEE) of the next 4 bytes and the body; u32 LE `len << 2 | partial << 1 |
//! header bit`; `len` bytes of body. Header slots are at 0 and 4096, entries from 8192. Of
//! two valid slots the first is newest if their bits are equal, else the second; the
//! entries belong to that header if their bit is the XOR of the slots' bits (with one valid
//! slot: 0 if it is the first, 1 if the second); an entry that is torn, fails its checksum
//! or carries the other bit ends the log, and trailing partial entries (an unfinished
//! atomic batch) are dropped. This is what JS hypercore 10 does; the crate reads the same
//! slots but errors on a bad checksum and ignores the bit. Bodies use compact-encoding
//! (varints: < 0xfd one byte, else 0xfd/0xfe/0xff then u16/u32/u64 LE; buffers and arrays
//! are a varint count first):
//!
//! - header: version 1, flags (2 manifest, 4 key pair), key [32], manifest (version 0, hash
//!   0 = BLAKE2b, type 1, signer: 0 = Ed25519, namespace [32], public key [32]), key pair
//!   (buffer public key, buffer secret key = seed ‖ public key or empty), user data
//!   (array of strings), tree (fork, length, buffer root hash, buffer signature), hints
//!   (array of strings reorgs, contiguous length).
//! - entry: flags, then as the flags say, in this order: 1 user data (array of strings),
//!   2 tree nodes (array of index, size, hash [32]), 4 tree upgrade (fork, ancestors,
//!   length, buffer signature), 8 bitfield (drop byte, start, length). The crate's own
//!   decoder tests flag 2 for the last three; this follows its encoder.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::core::hash::Node;

/// What a feed folder of the earlier format holds.
///
/// Its `tree`, `data` and `bitfield` files are laid out as feedscope's own (see the module
/// documentation), once `oplog_nodes` and `oplog_bitfield` are laid over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Legacy {
    /// The feed's public key.
    pub public_key: [u8; 32],
    /// The Ed25519 seed (first 32 bytes of the 64-byte secret) if writable.
    pub secret_key: Option<[u8; 32]>,
    /// The tree length as of the header plus any oplog entries that extend it.
    pub length: u64,
    /// The fork of that tree.
    pub fork: u64,
    /// The writer's signature of that tree; `None` for an empty feed.
    pub signature: Option<[u8; 64]>,
    /// Tree nodes held only in the oplog, by index (a later entry's node replaces an
    /// earlier one); they belong in `tree` and may be missing from it.
    pub oplog_nodes: Vec<Node>,
    /// Bitfield changes held only in the oplog, oldest first; apply them in order over
    /// `bitfield`.
    pub oplog_bitfield: Vec<BitfieldChange>,
}

/// One bitfield change from the oplog: blocks `start..start + length` marked held, or not
/// held if `drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitfieldChange {
    /// Whether the blocks are dropped (cleared) rather than marked held.
    pub drop: bool,
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub length: u64,
}

/// Reads the feed folder `dir` of the earlier format (only its `oplog`; the other files are
/// left to the caller). Errors describe what is wrong and never panic on damaged input.
pub fn read_legacy(dir: &Path) -> Result<Legacy, String> {
    let path = dir.join("oplog");
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode_oplog(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

const SLOT_BYTES: usize = 4096;
const ENTRIES_AT: usize = 2 * SLOT_BYTES;
const LEADER_BYTES: usize = 8;

/// The whole oplog file.
fn decode_oplog(file: &[u8]) -> Result<Legacy, String> {
    if file.is_empty() {
        return Err(
            "the oplog is empty (not a hypercore feed folder, or it was never \
                    written)"
                .into(),
        );
    }
    let slot = |i: usize| file.get(i * SLOT_BYTES..file.len().min((i + 1) * SLOT_BYTES));
    let h1 = slot(0).and_then(|s| frame(s, 0));
    let h2 = slot(1).and_then(|s| frame(s, 0));
    // Which header is newest, and the bit its entries carry (see the module documentation).
    let (newest, which, entry_bit) = match (h1, h2) {
        (Some(a), Some(b)) if a.header_bit == b.header_bit => (a, "first", false),
        (Some(_), Some(b)) => (b, "second", true),
        (Some(a), None) => (a, "first", false),
        (None, Some(b)) => (b, "second", true),
        (None, None) => {
            return Err(format!(
                "neither header slot holds a valid header (the file is {} bytes; a torn or \
                 damaged oplog, or not one written by hypercore 0.17)",
                file.len()
            ))
        }
    };
    let header = decode_header(newest.body)
        .map_err(|e| format!("the {which} header slot is damaged: {e}"))?;

    let mut legacy = Legacy {
        public_key: header.public_key,
        secret_key: header.secret_key,
        length: header.length,
        fork: header.fork,
        signature: header.signature,
        oplog_nodes: Vec::new(),
        oplog_bitfield: Vec::new(),
    };

    // The entries: up to the first that is torn, fails its checksum or is stale.
    let mut entries = Vec::new();
    let mut at = ENTRIES_AT;
    while let Some(f) = frame(file, at) {
        if f.header_bit != entry_bit {
            break;
        }
        let n = entries.len();
        let entry = decode_entry(f.body).map_err(|e| format!("oplog entry {n}: {e}"))?;
        entries.push((entry, f.partial));
        at = f.end;
    }
    // An atomic batch that did not finish.
    while entries.last().is_some_and(|(_, partial)| *partial) {
        entries.pop();
    }

    let mut nodes = BTreeMap::new();
    for (n, (entry, _)) in entries.into_iter().enumerate() {
        for node in entry.nodes {
            nodes.insert(node.index, node);
        }
        if let Some(b) = entry.bitfield {
            legacy.oplog_bitfield.push(b);
        }
        if let Some(up) = entry.upgrade {
            if up.ancestors < legacy.length {
                return Err(format!(
                    "oplog entry {n} truncates the feed from {} to {} blocks (fork {}); \
                     this reader does not replay truncations",
                    legacy.length, up.ancestors, up.fork
                ));
            }
            legacy.length = up.length;
            legacy.fork = up.fork;
            legacy.signature = Some(up.signature);
        }
    }
    legacy.oplog_nodes = nodes.into_values().collect();
    Ok(legacy)
}

/// One frame of the oplog.
struct Frame<'a> {
    body: &'a [u8],
    header_bit: bool,
    partial: bool,
    /// Where the next frame starts.
    end: usize,
}

/// The frame at `at`, or `None` if there is none there: too short, zero length, torn or
/// failing its checksum.
fn frame(buf: &[u8], at: usize) -> Option<Frame<'_>> {
    let leader = buf.get(at..at.checked_add(LEADER_BYTES)?)?;
    let checksum = u32::from_le_bytes(leader[0..4].try_into().ok()?);
    let word = u32::from_le_bytes(leader[4..8].try_into().ok()?);
    let len = usize::try_from(word >> 2).ok()?;
    if len == 0 {
        return None;
    }
    let end = at.checked_add(LEADER_BYTES)?.checked_add(len)?;
    let body = buf.get(at + LEADER_BYTES..end)?;
    if crc32(&buf[at + 4..end]) != checksum {
        return None;
    }
    Some(Frame {
        body,
        header_bit: word & 1 == 1,
        partial: word & 2 == 2,
        end,
    })
}

/// What this reader needs from a header.
struct Header {
    public_key: [u8; 32],
    secret_key: Option<[u8; 32]>,
    fork: u64,
    length: u64,
    signature: Option<[u8; 64]>,
}

fn decode_header(body: &[u8]) -> Result<Header, String> {
    let mut r = Reader::new(body);
    let version = r.u8("version")?;
    if version != 1 {
        return Err(format!("header version {version}, expected 1"));
    }
    let flags = r.u8("flags")?;
    if flags & !(2 | 4) != 0 {
        return Err(format!(
            "header flags {flags:#x} (an external or unknown field), expected at most 0x6"
        ));
    }
    let key: [u8; 32] = r.array("key")?;
    if flags & 2 != 0 {
        decode_manifest(&mut r, &key)?;
    }
    let (public_key, secret_key) = if flags & 4 != 0 {
        decode_key_pair(&mut r)?
    } else {
        (key, None)
    };
    if public_key != key {
        return Err("the key pair's public key is not the feed key".into());
    }
    VerifyingKey::from_bytes(&public_key)
        .map_err(|_| "the feed key is not a valid Ed25519 public key".to_string())?;
    skip_strings(&mut r, "user data")?;
    let fork = r.varint("tree fork")?;
    let length = r.varint("tree length")?;
    let root_hash = r.buffer("tree root hash")?;
    if !root_hash.is_empty() && root_hash.len() != 32 {
        return Err(format!("a tree root hash of {} bytes", root_hash.len()));
    }
    let signature = r.buffer("tree signature")?;
    let signature = match signature.len() {
        0 => None,
        64 => Some(signature.try_into().expect("64 bytes")),
        n => return Err(format!("a tree signature of {n} bytes, expected 64")),
    };
    if length > 0 && signature.is_none() {
        return Err(format!("a tree of {length} blocks without a signature"));
    }
    skip_strings(&mut r, "reorg hints")?;
    r.varint("contiguous length")?;
    r.finish("header")?;
    Ok(Header {
        public_key,
        secret_key,
        fork,
        length,
        signature,
    })
}

/// The default manifest the crate writes: a single Ed25519 signer, whose key is the feed's.
fn decode_manifest(r: &mut Reader<'_>, key: &[u8; 32]) -> Result<(), String> {
    let [version, hash, kind, signature] = r.array("manifest")?;
    if (version, hash, kind, signature) != (0, 0, 1, 0) {
        return Err(format!(
            "a manifest (version {version}, hash {hash}, type {kind}, signature {signature}) \
             other than one BLAKE2b/Ed25519 signer"
        ));
    }
    let _namespace: [u8; 32] = r.array("manifest namespace")?;
    let signer: [u8; 32] = r.array("manifest signer")?;
    if &signer != key {
        return Err("the manifest's signer is not the feed key".into());
    }
    Ok(())
}

fn decode_key_pair(r: &mut Reader<'_>) -> Result<([u8; 32], Option<[u8; 32]>), String> {
    let public: [u8; 32] = r
        .buffer("public key")?
        .try_into()
        .map_err(|_| "a public key that is not 32 bytes".to_string())?;
    let secret = r.buffer("secret key")?;
    let seed = match secret.len() {
        0 => None,
        64 => {
            let seed: [u8; 32] = secret[..32].try_into().expect("32 bytes");
            if secret[32..] != public
                || SigningKey::from_bytes(&seed).verifying_key().to_bytes() != public
            {
                return Err("the secret key does not belong to the public key".into());
            }
            Some(seed)
        }
        n => return Err(format!("a secret key of {n} bytes, expected 64 or none")),
    };
    Ok((public, seed))
}

struct Upgrade {
    fork: u64,
    ancestors: u64,
    length: u64,
    signature: [u8; 64],
}

struct Entry {
    nodes: Vec<Node>,
    upgrade: Option<Upgrade>,
    bitfield: Option<BitfieldChange>,
}

fn decode_entry(body: &[u8]) -> Result<Entry, String> {
    let mut r = Reader::new(body);
    let flags = r.u8("flags")?;
    if flags & !0xf != 0 {
        return Err(format!("unknown entry flags {flags:#x}"));
    }
    if flags & 1 != 0 {
        skip_strings(&mut r, "user data")?;
    }
    let mut nodes = Vec::new();
    if flags & 2 != 0 {
        let count = r.count("tree nodes", 1 + 1 + 32)?;
        for _ in 0..count {
            let index = r.varint("node index")?;
            let size = r.varint("node size")?;
            let hash = r.array("node hash")?;
            nodes.push(Node { index, size, hash });
        }
    }
    let upgrade = if flags & 4 != 0 {
        let fork = r.varint("upgrade fork")?;
        let ancestors = r.varint("upgrade ancestors")?;
        let length = r.varint("upgrade length")?;
        let signature = r.buffer("upgrade signature")?;
        let signature = signature
            .try_into()
            .map_err(|_| format!("an upgrade signature of {} bytes", signature.len()))?;
        Some(Upgrade {
            fork,
            ancestors,
            length,
            signature,
        })
    } else {
        None
    };
    let bitfield = if flags & 8 != 0 {
        let drop = r.u8("bitfield drop")? & 1 == 1;
        let start = r.varint("bitfield start")?;
        let length = r.varint("bitfield length")?;
        if start.checked_add(length).is_none() {
            return Err(format!("a bitfield range {start} + {length} past 2^64"));
        }
        Some(BitfieldChange {
            drop,
            start,
            length,
        })
    } else {
        None
    };
    r.finish("entry")?;
    Ok(Entry {
        nodes,
        upgrade,
        bitfield,
    })
}

/// An array of strings (compact-encoding), skipped.
fn skip_strings(r: &mut Reader<'_>, what: &str) -> Result<(), String> {
    for _ in 0..r.count(what, 1)? {
        r.buffer(what)?;
    }
    Ok(())
}

/// A compact-encoding decoder over one frame's body; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let out = self
            .at
            .checked_add(n)
            .and_then(|end| self.buf.get(self.at..end))
            .ok_or_else(|| {
                format!(
                    "{what}: {n} bytes needed at byte {} of {}",
                    self.at,
                    self.buf.len()
                )
            })?;
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.bytes(N, what)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.bytes(1, what)?[0])
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        Ok(match self.u8(what)? {
            0xfd => u16::from_le_bytes(self.array(what)?).into(),
            0xfe => u32::from_le_bytes(self.array(what)?).into(),
            0xff => u64::from_le_bytes(self.array(what)?),
            x => x.into(),
        })
    }

    /// A count of items of at least `min_bytes` each, checked against what is left.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, String> {
        let n = self.varint(what)?;
        let left = self.buf.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n.checked_mul(min_bytes).is_some_and(|b| b <= left) => Ok(n),
            _ => Err(format!(
                "{what}: a count of {n} with {left} bytes left at byte {}",
                self.at
            )),
        }
    }

    /// A length-prefixed buffer (or string).
    fn buffer(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.count(what, 1)?;
        self.bytes(n, what)
    }

    fn finish(&self, what: &str) -> Result<(), String> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes left over after the {what} ({} bytes)",
                self.buf.len() - self.at,
                self.buf.len()
            ))
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and `crc32fast`), which the oplog's frames use.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests;
