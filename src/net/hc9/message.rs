//! The messages of hypercore-protocol 8, as `simple-hypercore-protocol`'s proto2 schema has
//! them, encoded and decoded by hand.
//!
//! Encoding writes fields in tag order and only those that are set (an `Option` that is
//! `Some`, a non-empty repeated field), as the JavaScript encoder writes only defined fields;
//! so a decoded message encodes back to the same bytes. Decoding fills in nothing: absent
//! optional fields stay `None`, and the accessors (`Have::length()`, …) give the schema's
//! defaults. Unknown fields are skipped; a missing required field, a known field with the
//! wrong wire type, or a truncated body is an error. No input makes the decoder panic or
//! allocate more than the body's own size.

use super::frame::{put_varint, read_varint, FrameError};

/// Message type numbers (the low four bits of a frame header).
pub mod kind {
    /// [`super::Open`].
    pub const OPEN: u8 = 0;
    /// [`super::Options`].
    pub const OPTIONS: u8 = 1;
    /// [`super::Status`].
    pub const STATUS: u8 = 2;
    /// [`super::Have`].
    pub const HAVE: u8 = 3;
    /// [`super::Unhave`].
    pub const UNHAVE: u8 = 4;
    /// [`super::Want`].
    pub const WANT: u8 = 5;
    /// [`super::Unwant`].
    pub const UNWANT: u8 = 6;
    /// [`super::Request`].
    pub const REQUEST: u8 = 7;
    /// [`super::Cancel`].
    pub const CANCEL: u8 = 8;
    /// [`super::Data`].
    pub const DATA: u8 = 9;
    /// [`super::Close`].
    pub const CLOSE: u8 = 10;
    /// [`super::Extension`].
    pub const EXTENSION: u8 = 15;
}

/// Opens a channel for the feed whose discovery key it names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Open {
    /// 1 (required): the feed's discovery key.
    pub discovery_key: Vec<u8>,
    /// 2: proof that the sender knows the feed key (see `caps`).
    pub capability: Option<Vec<u8>>,
}

/// The extensions a side speaks; on channel 0 they are the stream's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// 1 (repeated): extension names, sorted; an extension's id is its index here.
    pub extensions: Vec<String>,
    /// 2: ask the receiver to acknowledge every Data with a Have.
    pub ack: Option<bool>,
}

/// Whether the sender uploads and downloads this feed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// 1: the sender serves blocks.
    pub uploading: Option<bool>,
    /// 2: the sender wants blocks.
    pub downloading: Option<bool>,
}

/// Blocks the sender has: a range, or a run-length encoded bitfield over the range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Have {
    /// 1 (required): first block.
    pub start: u64,
    /// 2: number of blocks (default 1).
    pub length: Option<u64>,
    /// 3: `bitfield-rle` bits, most significant bit first, from `start`.
    pub bitfield: Option<Vec<u8>>,
    /// 4: an acknowledgement of Data.
    pub ack: Option<bool>,
}

/// Blocks the sender no longer has (or refuses as unrequested).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unhave {
    /// 1 (required): first block.
    pub start: u64,
    /// 2: number of blocks (default 1).
    pub length: Option<u64>,
}

/// A range of blocks the sender would like to hear Haves about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Want {
    /// 1 (required): first block.
    pub start: u64,
    /// 2: number of blocks (0 when absent).
    pub length: Option<u64>,
}

/// Withdraws a [`Want`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unwant {
    /// 1 (required): first block.
    pub start: u64,
    /// 2: number of blocks (0 when absent).
    pub length: Option<u64>,
}

/// Asks for one block (or, with `hash`, only its proof).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// 1 (required): the block.
    pub index: u64,
    /// 2: a byte offset to seek to instead of an index.
    pub bytes: Option<u64>,
    /// 3: only the hash and proof, not the value.
    pub hash: Option<bool>,
    /// 4: the digest: which proof nodes the sender already holds.
    pub nodes: Option<u64>,
}

/// Cancels a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cancel {
    /// 1 (required): the block.
    pub index: u64,
    /// 2: the byte offset, as requested.
    pub bytes: Option<u64>,
    /// 3: as requested.
    pub hash: Option<bool>,
}

/// One Merkle tree node of a [`Data`] proof.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// 1 (required): flat-tree index.
    pub index: u64,
    /// 2 (required): the node's hash (32 bytes from an honest peer).
    pub hash: Vec<u8>,
    /// 3 (required): bytes of data under the node.
    pub size: u64,
}

/// A block with its proof.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Data {
    /// 1 (required): the block.
    pub index: u64,
    /// 2: its bytes (absent for a hash-only answer).
    pub value: Option<Vec<u8>>,
    /// 3 (repeated): the proof's nodes.
    pub nodes: Vec<Node>,
    /// 4: the writer's signature of the tree the proof leads to.
    pub signature: Option<Vec<u8>>,
}

/// Closes the sender's channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Close {
    /// 1: set only to refuse a channel the sender never opened.
    pub discovery_key: Option<Vec<u8>>,
}

/// An extension message: not protobuf, `varint(id) ‖ payload`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extension {
    /// Index into the sender's latest [`Options`] list on the same channel.
    pub id: u64,
    /// The payload, raw to the end of the frame.
    pub payload: Vec<u8>,
}

/// Any message of the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 0.
    Open(Open),
    /// Type 1.
    Options(Options),
    /// Type 2.
    Status(Status),
    /// Type 3.
    Have(Have),
    /// Type 4.
    Unhave(Unhave),
    /// Type 5.
    Want(Want),
    /// Type 6.
    Unwant(Unwant),
    /// Type 7.
    Request(Request),
    /// Type 8.
    Cancel(Cancel),
    /// Type 9.
    Data(Data),
    /// Type 10.
    Close(Close),
    /// Type 15.
    Extension(Extension),
    /// Types 11–14, which no version defines; kept so the caller decides.
    Unknown {
        /// The type number.
        kind: u8,
        /// The body, undecoded.
        body: Vec<u8>,
    },
}

impl Have {
    /// Number of blocks, with the schema's default of 1.
    pub fn length(&self) -> u64 {
        self.length.unwrap_or(1)
    }
}

impl Unhave {
    /// Number of blocks, with the schema's default of 1.
    pub fn length(&self) -> u64 {
        self.length.unwrap_or(1)
    }
}

impl Status {
    /// Whether the sender uploads (false when absent).
    pub fn uploading(&self) -> bool {
        self.uploading.unwrap_or(false)
    }

    /// Whether the sender downloads (false when absent).
    pub fn downloading(&self) -> bool {
        self.downloading.unwrap_or(false)
    }
}

// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// One decoded field value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn malformed(why: &'static str) -> FrameError {
    FrameError::Malformed(why)
}

/// Reads the next `(tag, value)` of a protobuf body.
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Option<(u64, Value<'a>)>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let key = read_varint(buf)?;
    let (tag, wire) = (key >> 3, key & 7);
    if tag == 0 {
        return Err(malformed("field number 0"));
    }
    let value = match wire {
        VARINT => Value::Varint(read_varint(buf)?),
        LEN => {
            let n = read_varint(buf)?;
            if n > buf.len() as u64 {
                return Err(FrameError::Truncated);
            }
            let (b, rest) = buf.split_at(n as usize);
            *buf = rest;
            Value::Bytes(b)
        }
        FIXED64 | FIXED32 => {
            let n = if wire == FIXED64 { 8 } else { 4 };
            if buf.len() < n {
                return Err(FrameError::Truncated);
            }
            *buf = &buf[n..];
            Value::Other
        }
        _ => return Err(malformed("unsupported protobuf wire type")),
    };
    Ok(Some((tag, value)))
}

/// The last value of bytes field `tag` in a protobuf body, skipping every other field.
pub(super) fn bytes_field(mut body: &[u8], tag: u64) -> Result<Option<Vec<u8>>, FrameError> {
    let mut found = None;
    while let Some((t, v)) = next_field(&mut body)? {
        if t == tag {
            found = Some(bytes(v)?);
        }
    }
    Ok(found)
}

fn uint(v: Value<'_>) -> Result<u64, FrameError> {
    match v {
        Value::Varint(n) => Ok(n),
        _ => Err(malformed("a number field has another wire type")),
    }
}

fn boolean(v: Value<'_>) -> Result<bool, FrameError> {
    uint(v).map(|n| n != 0)
}

fn bytes(v: Value<'_>) -> Result<Vec<u8>, FrameError> {
    match v {
        Value::Bytes(b) => Ok(b.to_vec()),
        _ => Err(malformed("a bytes field has another wire type")),
    }
}

fn required<T>(v: Option<T>) -> Result<T, FrameError> {
    v.ok_or(malformed("a required field is missing"))
}

fn put_key(out: &mut Vec<u8>, tag: u64, wire: u64) {
    put_varint(out, tag << 3 | wire);
}

fn put_uint(out: &mut Vec<u8>, tag: u64, v: Option<u64>) {
    if let Some(v) = v {
        put_key(out, tag, VARINT);
        put_varint(out, v);
    }
}

fn put_bool(out: &mut Vec<u8>, tag: u64, v: Option<bool>) {
    put_uint(out, tag, v.map(u64::from));
}

fn put_bytes(out: &mut Vec<u8>, tag: u64, v: Option<&[u8]>) {
    if let Some(b) = v {
        put_key(out, tag, LEN);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

/// A `start`/`length` pair, the body of Unhave, Want and Unwant.
fn decode_range(mut buf: &[u8]) -> Result<(u64, Option<u64>), FrameError> {
    let (mut start, mut length) = (None, None);
    while let Some((tag, v)) = next_field(&mut buf)? {
        match tag {
            1 => start = Some(uint(v)?),
            2 => length = Some(uint(v)?),
            _ => {}
        }
    }
    Ok((required(start)?, length))
}

fn encode_range(out: &mut Vec<u8>, start: u64, length: Option<u64>) {
    put_uint(out, 1, Some(start));
    put_uint(out, 2, length);
}

fn decode_node(mut buf: &[u8]) -> Result<Node, FrameError> {
    let (mut index, mut hash, mut size) = (None, None, None);
    while let Some((tag, v)) = next_field(&mut buf)? {
        match tag {
            1 => index = Some(uint(v)?),
            2 => hash = Some(bytes(v)?),
            3 => size = Some(uint(v)?),
            _ => {}
        }
    }
    Ok(Node {
        index: required(index)?,
        hash: required(hash)?,
        size: required(size)?,
    })
}

fn encode_node(n: &Node) -> Vec<u8> {
    let mut out = Vec::with_capacity(n.hash.len() + 24);
    put_uint(&mut out, 1, Some(n.index));
    put_bytes(&mut out, 2, Some(&n.hash));
    put_uint(&mut out, 3, Some(n.size));
    out
}

impl Message {
    /// The type number of this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Open(_) => kind::OPEN,
            Message::Options(_) => kind::OPTIONS,
            Message::Status(_) => kind::STATUS,
            Message::Have(_) => kind::HAVE,
            Message::Unhave(_) => kind::UNHAVE,
            Message::Want(_) => kind::WANT,
            Message::Unwant(_) => kind::UNWANT,
            Message::Request(_) => kind::REQUEST,
            Message::Cancel(_) => kind::CANCEL,
            Message::Data(_) => kind::DATA,
            Message::Close(_) => kind::CLOSE,
            Message::Extension(_) => kind::EXTENSION,
            Message::Unknown { kind, .. } => *kind & 15,
        }
    }

    /// The message's name, as the wire inspector shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Open(_) => "Open",
            Message::Options(_) => "Options",
            Message::Status(_) => "Status",
            Message::Have(_) => "Have",
            Message::Unhave(_) => "Unhave",
            Message::Want(_) => "Want",
            Message::Unwant(_) => "Unwant",
            Message::Request(_) => "Request",
            Message::Cancel(_) => "Cancel",
            Message::Data(_) => "Data",
            Message::Close(_) => "Close",
            Message::Extension(_) => "Extension",
            Message::Unknown { .. } => "Unknown",
        }
    }

    /// Decodes the body of a message of type `kind` (0–15).
    pub fn decode(kind: u8, body: &[u8]) -> Result<Message, FrameError> {
        let mut buf = body;
        let buf = &mut buf;
        Ok(match kind {
            kind::OPEN => {
                let mut m = Open::default();
                let mut dk = None;
                while let Some((tag, v)) = next_field(buf)? {
                    match tag {
                        1 => dk = Some(bytes(v)?),
                        2 => m.capability = Some(bytes(v)?),
                        _ => {}
                    }
                }
                m.discovery_key = required(dk)?;
                Message::Open(m)
            }
            kind::OPTIONS => {
                let mut m = Options::default();
                while let Some((tag, v)) = next_field(buf)? {
                    match tag {
                        1 => m.extensions.push(
                            String::from_utf8(bytes(v)?)
                                .map_err(|_| malformed("an extension name is not UTF-8"))?,
                        ),
                        2 => m.ack = Some(boolean(v)?),
                        _ => {}
                    }
                }
                Message::Options(m)
            }
            kind::STATUS => {
                let mut m = Status::default();
                while let Some((tag, v)) = next_field(buf)? {
                    match tag {
                        1 => m.uploading = Some(boolean(v)?),
                        2 => m.downloading = Some(boolean(v)?),
                        _ => {}
                    }
                }
                Message::Status(m)
            }
            kind::HAVE => {
                let mut m = Have::default();
                let mut start = None;
                while let Some((tag, v)) = next_field(buf)? {
                    match tag {
                        1 => start = Some(uint(v)?),
                        2 => m.length = Some(uint(v)?),
                        3 => m.bitfield = Some(bytes(v)?),
                        4 => m.ack = Some(boolean(v)?),
                        _ => {}
                    }
                }
                m.start = required(start)?;
                Message::Have(m)
            }
            kind::UNHAVE => {
                let (start, length) = decode_range(body)?;
                Message::Unhave(Unhave { start, length })
            }
            kind::WANT => {
                let (start, length) = decode_range(body)?;
                Message::Want(Want { start, length })
            }
            kind::UNWANT => {
                let (start, length) = decode_range(body)?;
                Message::Unwant(Unwant { start, length })
            }
            kind::REQUEST | kind::CANCEL => {
                let (mut index, mut bytes_, mut hash, mut nodes) = (None, None, None, None);
                while let Some((tag, v)) = next_field(buf)? {
                    match tag {
                        1 => index = Some(uint(v)?),
                        2 => bytes_ = Some(uint(v)?),
                        3 => hash = Some(boolean(v)?),
                        4 if kind == kind::REQUEST => nodes = Some(uint(v)?),
                        _ => {}
                    }
                }
                let index = required(index)?;
                if kind == kind::REQUEST {
                    Message::Request(Request {
                        index,
                        bytes: bytes_,
                        hash,
                        nodes,
                    })
                } else {
                    Message::Cancel(Cancel {
                        index,
                        bytes: bytes_,
                        hash,
                    })
                }
            }
            kind::DATA => {
                let mut m = Data::default();
                let mut index = None;
                while let Some((tag, v)) = next_field(buf)? {
                    match tag {
                        1 => index = Some(uint(v)?),
                        2 => m.value = Some(bytes(v)?),
                        3 => match v {
                            Value::Bytes(b) => m.nodes.push(decode_node(b)?),
                            _ => return Err(malformed("a node has another wire type")),
                        },
                        4 => m.signature = Some(bytes(v)?),
                        _ => {}
                    }
                }
                m.index = required(index)?;
                Message::Data(m)
            }
            kind::CLOSE => {
                let mut m = Close::default();
                while let Some((tag, v)) = next_field(buf)? {
                    if tag == 1 {
                        m.discovery_key = Some(bytes(v)?);
                    }
                }
                Message::Close(m)
            }
            kind::EXTENSION => {
                let id = read_varint(buf)?;
                Message::Extension(Extension {
                    id,
                    payload: buf.to_vec(),
                })
            }
            _ => Message::Unknown {
                kind: kind & 15,
                body: body.to_vec(),
            },
        })
    }

    /// Appends the encoded body (no frame header) to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Message::Open(m) => {
                put_bytes(out, 1, Some(&m.discovery_key));
                put_bytes(out, 2, m.capability.as_deref());
            }
            Message::Options(m) => {
                for name in &m.extensions {
                    put_bytes(out, 1, Some(name.as_bytes()));
                }
                put_bool(out, 2, m.ack);
            }
            Message::Status(m) => {
                put_bool(out, 1, m.uploading);
                put_bool(out, 2, m.downloading);
            }
            Message::Have(m) => {
                put_uint(out, 1, Some(m.start));
                put_uint(out, 2, m.length);
                put_bytes(out, 3, m.bitfield.as_deref());
                put_bool(out, 4, m.ack);
            }
            Message::Unhave(m) => encode_range(out, m.start, m.length),
            Message::Want(m) => encode_range(out, m.start, m.length),
            Message::Unwant(m) => encode_range(out, m.start, m.length),
            Message::Request(m) => {
                put_uint(out, 1, Some(m.index));
                put_uint(out, 2, m.bytes);
                put_bool(out, 3, m.hash);
                put_uint(out, 4, m.nodes);
            }
            Message::Cancel(m) => {
                put_uint(out, 1, Some(m.index));
                put_uint(out, 2, m.bytes);
                put_bool(out, 3, m.hash);
            }
            Message::Data(m) => {
                put_uint(out, 1, Some(m.index));
                put_bytes(out, 2, m.value.as_deref());
                for n in &m.nodes {
                    put_bytes(out, 3, Some(&encode_node(n)));
                }
                put_bytes(out, 4, m.signature.as_deref());
            }
            Message::Close(m) => put_bytes(out, 1, m.discovery_key.as_deref()),
            Message::Extension(m) => {
                put_varint(out, m.id);
                out.extend_from_slice(&m.payload);
            }
            Message::Unknown { body, .. } => out.extend_from_slice(body),
        }
    }
}
