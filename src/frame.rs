//! The protomux framing that JavaScript hypercore 10 speaks inside the encrypted stream.
//!
//! One decrypted frame is either a control message (`00 01` open, `00 02` reject, `00 03`
//! close), a batch (`00 00`) of channel messages, or a single channel message
//! (`channel type body`). Hypercore message bodies use the `hypercore-protocol` schema types;
//! extension messages (type 9) are encoded here, because JavaScript writes the payload raw to
//! the end of the message while the crate length-prefixes it.
//!
//! Pure: no I/O. Each message of a batch is decoded within its own declared length, so a bad
//! message is reported alone and its neighbours still arrive.

use compact_encoding::CompactEncoding;
use hypercore_protocol::{schema, Message};

/// The protomux protocol name of hypercore channels.
pub const PROTOCOL_NAME: &str = "hypercore/alpha";
/// Largest plaintext frame the transport carries (3-byte length).
pub const MAX_FRAME_BYTES: usize = 0xFF_FFFF;

const TYPE_EXTENSION: u64 = 9;

/// A message carried on a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// One of the hypercore replication messages (types 0–8).
    Core(Message),
    /// An extension message: a name and a raw payload.
    Extension {
        /// Extension name; an empty name means "the same as the previous one on this channel".
        name: String,
        /// Payload bytes, to the end of the message.
        payload: Vec<u8>,
    },
}

impl Msg {
    /// About how many bytes this message holds in memory, for budgets of buffered messages.
    pub fn weight(&self) -> usize {
        const NODE: usize = 48;
        match self {
            Msg::Extension { name, payload } => name.len() + payload.len() + 32,
            Msg::Core(Message::Data(d)) => {
                64 + d
                    .block
                    .as_ref()
                    .map_or(0, |b| b.value.len() + b.nodes.len() * NODE)
                    + d.hash.as_ref().map_or(0, |h| h.nodes.len() * NODE)
                    + d.seek.as_ref().map_or(0, |s| s.nodes.len() * NODE)
                    + d.upgrade.as_ref().map_or(0, |u| {
                        (u.nodes.len() + u.additional_nodes.len()) * NODE + u.signature.len()
                    })
            }
            Msg::Core(Message::Bitfield(b)) => 32 + b.bitfield.len() * 4,
            Msg::Core(_) => 64,
        }
    }

    /// A short name for display: the message type or the extension name.
    pub fn kind(&self) -> String {
        match self {
            Msg::Core(m) => m.name().to_string(),
            Msg::Extension { name, .. } => format!("Extension({name})"),
        }
    }

    /// The decoded fields, for a person; block contents are summarised, not shown.
    pub fn summary(&self) -> String {
        match self {
            Msg::Extension { name, payload } => {
                let text = String::from_utf8_lossy(&payload[..payload.len().min(200)]);
                let more = if payload.len() > 200 { "…" } else { "" };
                format!("{name} {} bytes: {text}{more}", payload.len())
            }
            Msg::Core(Message::Synchronize(s)) => format!(
                "fork {} length {} remote_length {} can_upgrade {} uploading {} downloading {}",
                s.fork, s.length, s.remote_length, s.can_upgrade, s.uploading, s.downloading
            ),
            Msg::Core(Message::Request(r)) => format!(
                "id {} fork {}{}{}{}{}",
                r.id,
                r.fork,
                r.block
                    .as_ref()
                    .map(|b| format!(" block {} (nodes {})", b.index, b.nodes))
                    .unwrap_or_default(),
                r.hash
                    .as_ref()
                    .map(|b| format!(" hash {}", b.index))
                    .unwrap_or_default(),
                r.seek
                    .as_ref()
                    .map(|b| format!(" seek {}", b.bytes))
                    .unwrap_or_default(),
                r.upgrade
                    .as_ref()
                    .map(|u| format!(" upgrade {}+{}", u.start, u.length))
                    .unwrap_or_default(),
            ),
            Msg::Core(Message::Data(d)) => format!(
                "request {} fork {}{}{}",
                d.request,
                d.fork,
                d.block
                    .as_ref()
                    .map(|b| format!(
                        " block {} ({} bytes, {} nodes)",
                        b.index,
                        b.value.len(),
                        b.nodes.len()
                    ))
                    .unwrap_or_default(),
                d.upgrade
                    .as_ref()
                    .map(|u| format!(" upgrade {}+{} (signed)", u.start, u.length))
                    .unwrap_or_default(),
            ),
            Msg::Core(Message::NoData(n)) => format!("request {}", n.request),
            Msg::Core(Message::Range(r)) => format!(
                "{} {}+{}",
                if r.drop { "drop" } else { "have" },
                r.start,
                r.length
            ),
            Msg::Core(Message::Want(w)) => format!("{}+{}", w.start, w.length),
            Msg::Core(Message::Unwant(w)) => format!("{}+{}", w.start, w.length),
            Msg::Core(Message::Bitfield(b)) => {
                format!("start {} ({} words)", b.start, b.bitfield.len())
            }
            Msg::Core(Message::Cancel(c)) => format!("request {}", c.request),
            Msg::Core(other) => other.name().to_string(),
        }
    }
}

impl Item {
    /// About how many bytes this item holds in memory.
    pub fn weight(&self) -> usize {
        match self {
            Item::Message(_, Ok(m)) => m.weight(),
            Item::Open {
                discovery_key,
                protocol,
                ..
            } => 80 + discovery_key.len() + protocol.len(),
            _ => 64,
        }
    }

    /// The message type, as breakpoints and the inspector name it.
    pub fn kind(&self) -> String {
        match self {
            Item::Open { .. } => "Open".into(),
            Item::Reject { .. } => "Reject".into(),
            Item::Close { .. } => "Close".into(),
            Item::Message(_, Ok(m)) => m.kind(),
            Item::Message(_, Err(_)) => "Malformed".into(),
        }
    }

    /// The decoded fields, for a person.
    pub fn summary(&self) -> String {
        match self {
            Item::Open {
                channel,
                protocol,
                discovery_key,
                capability,
            } => format!(
                "channel {channel} {protocol} discovery key {}{}",
                hex::encode(&discovery_key[..discovery_key.len().min(8)]),
                if capability.is_some() {
                    " with capability"
                } else {
                    " without capability"
                }
            ),
            Item::Reject { channel } | Item::Close { channel } => format!("channel {channel}"),
            Item::Message(ch, Ok(m)) => format!("channel {ch}: {}", m.summary()),
            Item::Message(ch, Err(e)) => format!("channel {ch}: {e}"),
        }
    }
}

/// One item of a decoded plaintext frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// The remote opens a channel with its id, protocol, discovery key and capability.
    Open {
        /// The sender's channel id.
        channel: u64,
        /// Protocol name, `hypercore/alpha` for cores.
        protocol: String,
        /// Channel id bytes: the core's discovery key.
        discovery_key: Vec<u8>,
        /// Proof that the sender knows the key (BLAKE2b keyed by the handshake hash).
        capability: Option<[u8; 32]>,
    },
    /// The remote refuses the channel we opened with this id (it does not know the key).
    Reject {
        /// Our channel id that was refused.
        channel: u64,
    },
    /// The remote closes its channel with this id.
    Close {
        /// The sender's channel id.
        channel: u64,
    },
    /// A channel message with the sender's channel id; `Err` if it failed to decode.
    Message(u64, Result<Msg, FrameError>),
}

/// Why a frame or a message in it could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame ended before a field was complete.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A control message with an unknown type byte.
    #[error("unknown control message type {0}")]
    UnknownControl(u64),
    /// A channel message with an unknown type.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// The body of a known message type did not decode.
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// Message type name.
        kind: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A frame larger than the transport can carry.
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
}

fn uint(buf: &mut &[u8], what: &'static str) -> Result<u64, FrameError> {
    let (v, rest) = u64::decode(buf).map_err(|_| FrameError::Truncated(what))?;
    *buf = rest;
    Ok(v)
}

fn bytes<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], FrameError> {
    let len = uint(buf, what)? as usize;
    if buf.len() < len {
        return Err(FrameError::Truncated(what));
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

/// Decodes one decrypted frame into its items. An empty frame (a keep-alive) has none.
///
/// A control message that fails to decode fails the whole frame, because it leaves the
/// channel tables of both sides in doubt; a bad channel message is one `Err` item.
pub fn decode(frame: &[u8]) -> Result<Vec<Item>, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(frame.len()));
    }
    if frame.is_empty() {
        return Ok(Vec::new());
    }
    if frame[0] == 0 {
        let mut buf = &frame[1..];
        let typ = uint(&mut buf, "control type")?;
        if typ == 0 {
            return decode_batch(buf);
        }
        return Ok(vec![decode_control(typ, buf)?]);
    }
    let mut buf = frame;
    let channel = uint(&mut buf, "channel id")?;
    Ok(vec![Item::Message(channel, decode_msg(buf))])
}

fn decode_control(typ: u64, mut buf: &[u8]) -> Result<Item, FrameError> {
    match typ {
        1 => {
            let channel = uint(&mut buf, "open channel id")?;
            let protocol = bytes(&mut buf, "open protocol")?;
            let protocol = String::from_utf8_lossy(protocol).into_owned();
            let discovery_key = bytes(&mut buf, "open id")?.to_vec();
            let capability = if buf.is_empty() {
                None
            } else {
                let _flags = uint(&mut buf, "open handshake flags")?;
                if buf.len() < 32 {
                    return Err(FrameError::Truncated("open capability"));
                }
                let mut cap = [0u8; 32];
                cap.copy_from_slice(&buf[..32]);
                Some(cap)
            };
            Ok(Item::Open {
                channel,
                protocol,
                discovery_key,
                capability,
            })
        }
        2 => Ok(Item::Reject {
            channel: uint(&mut buf, "reject channel id")?,
        }),
        3 => Ok(Item::Close {
            channel: uint(&mut buf, "close channel id")?,
        }),
        other => Err(FrameError::UnknownControl(other)),
    }
}

fn decode_batch(buf: &[u8]) -> Result<Vec<Item>, FrameError> {
    let (count, start, channel) = check_batch(buf)?;
    let mut out = Vec::with_capacity(count.min(PRESIZED_ITEMS));
    let (mut pos, mut channel) = (start, channel);
    while let Some(item) = batch_next(buf, &mut pos, &mut channel) {
        out.push(item);
    }
    Ok(out)
}

/// Items of a batch that its list is sized for at once; a longer batch grows it.
const PRESIZED_ITEMS: usize = 1024;

/// Reads a batch's body (after its type) through once without keeping anything: how many
/// messages it holds, where the first starts and on which channel. A control message in it
/// that does not decode fails the whole frame, as anywhere else; a body cut short counts
/// what came before (the cut message is one `Err` item when read).
fn check_batch(whole: &[u8]) -> Result<(usize, usize, u64), FrameError> {
    let mut buf = whole;
    let first = uint(&mut buf, "batch channel id")?;
    let (start, mut channel) = (whole.len() - buf.len(), first);
    let mut n = 0;
    while !buf.is_empty() {
        let len = uint(&mut buf, "batch message length")? as usize;
        if len == 0 {
            channel = uint(&mut buf, "batch channel id")?;
            continue;
        }
        let Some(rest) = buf.get(len..) else {
            return Ok((n + 1, start, first));
        };
        if channel == 0 {
            let mut msg = &buf[..len];
            let typ = uint(&mut msg, "control type")?;
            decode_control(typ, msg)?;
        }
        buf = rest;
        n += 1;
    }
    Ok((n, start, first))
}

/// The batch item that starts at `pos` of `buf` (a body [`check_batch`] passed), moving `pos`
/// and `channel` past it; `None` at the end. A message cut short is an `Err` item and ends
/// the batch.
fn batch_next(buf: &[u8], pos: &mut usize, channel: &mut u64) -> Option<Item> {
    let mut rest = buf.get(*pos..)?;
    loop {
        if rest.is_empty() {
            *pos = buf.len();
            return None;
        }
        let Ok(len) = uint(&mut rest, "batch message length") else {
            *pos = buf.len();
            return None;
        };
        if len == 0 {
            let Ok(c) = uint(&mut rest, "batch channel id") else {
                *pos = buf.len();
                return None;
            };
            *channel = c;
            continue;
        }
        let Some(msg) = usize::try_from(len).ok().and_then(|l| rest.get(..l)) else {
            *pos = buf.len();
            return Some(Item::Message(
                *channel,
                Err(FrameError::Truncated("batched message")),
            ));
        };
        *pos = buf.len() - rest.len() + msg.len();
        return Some(if *channel == 0 {
            // Channel 0 inside a batch carries control messages (a corked protomux sends
            // them so); `check_batch` decoded each once already.
            let mut msg = msg;
            match uint(&mut msg, "control type").and_then(|typ| decode_control(typ, msg)) {
                Ok(item) => item,
                Err(e) => Item::Message(0, Err(e)),
            }
        } else {
            Item::Message(*channel, decode_msg(msg))
        });
    }
}

/// A batch frame whose messages are decoded one at a time as they are taken, so that a frame
/// of millions of tiny messages costs its own bytes, not a list of millions of items.
#[derive(Debug)]
pub struct Batch {
    /// The whole frame; messages start at `pos`.
    frame: Vec<u8>,
    pos: usize,
    channel: u64,
}

impl Batch {
    /// The next message of the batch; `None` once all were taken.
    pub fn next_item(&mut self) -> Option<Item> {
        let item = batch_next(&self.frame, &mut self.pos, &mut self.channel);
        if item.is_none() {
            // Nothing more will be read from it.
            self.frame = Vec::new();
        }
        item
    }
}

/// What one decrypted frame holds, read by [`decode_owned`].
#[derive(Debug)]
pub enum Incoming {
    /// Nothing (a keep-alive).
    Empty,
    /// One item.
    One(Item),
    /// A batch, read as it is taken.
    Batch(Batch),
}

/// Reads one decrypted frame as [`decode`] does, except that a batch's messages are decoded
/// when taken from the returned [`Batch`], not all at once.
pub fn decode_owned(frame: Vec<u8>) -> Result<Incoming, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(frame.len()));
    }
    if frame.is_empty() {
        return Ok(Incoming::Empty);
    }
    if frame[0] == 0 {
        let mut buf = &frame[1..];
        let typ = uint(&mut buf, "control type")?;
        if typ != 0 {
            return Ok(Incoming::One(decode_control(typ, buf)?));
        }
        let (_, start, channel) = check_batch(buf)?;
        let pos = frame.len() - buf.len() + start;
        return Ok(Incoming::Batch(Batch {
            frame,
            pos,
            channel,
        }));
    }
    let mut buf = &frame[..];
    let channel = uint(&mut buf, "channel id")?;
    Ok(Incoming::One(Item::Message(channel, decode_msg(buf))))
}

/// Decodes a channel message (type and body) that spans exactly `buf`.
pub fn decode_msg(mut buf: &[u8]) -> Result<Msg, FrameError> {
    let whole = buf;
    let typ = uint(&mut buf, "message type")?;
    if typ == TYPE_EXTENSION {
        let name = bytes(&mut buf, "extension name")?;
        return Ok(Msg::Extension {
            name: String::from_utf8_lossy(name).into_owned(),
            payload: buf.to_vec(),
        });
    }
    if typ > TYPE_EXTENSION {
        return Err(FrameError::UnknownType(typ));
    }
    check_counts(typ, buf)?;
    let (message, _rest) = Message::decode(whole).map_err(|e| FrameError::Malformed {
        kind: type_name(typ),
        reason: e.to_string(),
    })?;
    Ok(Msg::Core(message))
}

/// Smallest encoding of a tree node: index and size (a byte each at least) and a 32-byte hash.
const MIN_NODE_BYTES: usize = 34;

/// Checks every element count a message declares against the bytes that follow it.
///
/// The schema decoders allocate a vector of the declared count before reading its elements,
/// so a few crafted bytes could ask for gigabytes and abort the process. Only `Data` (tree
/// nodes) and `Bitfield` (words) carry such counts; buffers are bounds-checked already.
fn check_counts(typ: u64, mut buf: &[u8]) -> Result<(), FrameError> {
    let bad = |what: &'static str| FrameError::Malformed {
        kind: type_name(typ),
        reason: format!("{what} declares more elements than the message holds"),
    };
    let nodes = |buf: &mut &[u8]| -> Result<(), FrameError> {
        let n = uint(buf, "node count")? as usize;
        if n > buf.len() / MIN_NODE_BYTES {
            return Err(bad("a node list"));
        }
        for _ in 0..n {
            uint(buf, "node index")?;
            uint(buf, "node size")?;
            if buf.len() < 32 {
                return Err(FrameError::Truncated("node hash"));
            }
            *buf = &buf[32..];
        }
        Ok(())
    };
    match typ {
        3 => {
            let Some((&flags, rest)) = buf.split_first() else {
                return Err(FrameError::Truncated("data flags"));
            };
            buf = rest;
            uint(&mut buf, "data request")?;
            uint(&mut buf, "data fork")?;
            if flags & 1 != 0 {
                uint(&mut buf, "block index")?;
                bytes(&mut buf, "block value")?;
                nodes(&mut buf)?;
            }
            if flags & 2 != 0 {
                uint(&mut buf, "hash index")?;
                nodes(&mut buf)?;
            }
            if flags & 4 != 0 {
                uint(&mut buf, "seek bytes")?;
                nodes(&mut buf)?;
            }
            if flags & 8 != 0 {
                uint(&mut buf, "upgrade start")?;
                uint(&mut buf, "upgrade length")?;
                nodes(&mut buf)?;
                nodes(&mut buf)?;
            }
            Ok(())
        }
        7 => {
            uint(&mut buf, "bitfield start")?;
            let n = uint(&mut buf, "bitfield words")? as usize;
            if n > buf.len() {
                return Err(bad("a bitfield"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn type_name(typ: u64) -> &'static str {
    match typ {
        0 => "Synchronize",
        1 => "Request",
        2 => "Cancel",
        3 => "Data",
        4 => "NoData",
        5 => "Want",
        6 => "Unwant",
        7 => "Bitfield",
        8 => "Range",
        _ => "Extension",
    }
}

fn put_uint(out: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; 10];
    let len = v.encoded_size().expect("u64 has a size");
    let rest_len = {
        let rest = v.encode(&mut tmp[..len]).expect("buffer sized for u64");
        rest.len()
    };
    debug_assert_eq!(rest_len, 0);
    out.extend_from_slice(&tmp[..len]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes an open frame for our channel `channel`.
pub fn encode_open(channel: u64, discovery_key: &[u8; 32], capability: &[u8; 32]) -> Vec<u8> {
    let mut out = vec![0, 1];
    put_uint(&mut out, channel);
    put_bytes(&mut out, PROTOCOL_NAME.as_bytes());
    put_bytes(&mut out, discovery_key);
    put_uint(&mut out, 0);
    out.extend_from_slice(capability);
    out
}

/// Encodes a close frame for our channel `channel`.
pub fn encode_close(channel: u64) -> Vec<u8> {
    let mut out = vec![0, 3];
    put_uint(&mut out, channel);
    out
}

/// Encodes a reject frame for the remote's channel `channel`.
pub fn encode_reject(channel: u64) -> Vec<u8> {
    let mut out = vec![0, 2];
    put_uint(&mut out, channel);
    out
}

/// Bytes of the type and body of `msg`, as [`encode_msg_into`] writes them.
fn msg_len(msg: &Msg) -> usize {
    match msg {
        Msg::Extension { name, payload } => {
            uint_len(TYPE_EXTENSION) + uint_len(name.len() as u64) + name.len() + payload.len()
        }
        Msg::Core(m) => m.encoded_size().expect("hypercore messages have a size"),
    }
}

fn uint_len(v: u64) -> usize {
    v.encoded_size().expect("u64 has a size")
}

/// Appends the type and body of `msg` to `out`.
pub fn encode_msg_into(out: &mut Vec<u8>, msg: &Msg) {
    match msg {
        Msg::Extension { name, payload } => {
            put_uint(out, TYPE_EXTENSION);
            put_bytes(out, name.as_bytes());
            out.extend_from_slice(payload);
        }
        Msg::Core(m) => {
            let len = msg_len(msg);
            let start = out.len();
            out.resize(start + len, 0);
            let rest = m
                .encode(&mut out[start..])
                .expect("buffer sized by encoded_size");
            debug_assert!(rest.is_empty());
        }
    }
}

/// Room left after a frame for what the transport's cipher adds in place (a tag byte and a
/// 16-byte MAC), so that encrypting it does not move it to a larger buffer.
const CIPHER_ROOM: usize = 17;

/// Encodes messages as one frame: a single message alone, several as a batch. Each message
/// is encoded in place after its length, in a buffer sized once.
pub fn encode_messages(messages: &[(u64, Msg)]) -> Vec<u8> {
    let mut out = Vec::new();
    match messages {
        [] => {}
        [(channel, msg)] => {
            out.reserve(uint_len(*channel) + msg_len(msg) + CIPHER_ROOM);
            put_uint(&mut out, *channel);
            encode_msg_into(&mut out, msg);
        }
        many => {
            let lens: Vec<usize> = many.iter().map(|(_, m)| msg_len(m)).collect();
            let total: usize = lens.iter().map(|&l| uint_len(l as u64) + l).sum();
            // Channel switches: at most one marker and id per message.
            out.reserve(2 + total + many.len() * 11 + CIPHER_ROOM);
            out.extend_from_slice(&[0, 0]);
            let mut current = many[0].0;
            put_uint(&mut out, current);
            for ((channel, msg), len) in many.iter().zip(lens) {
                if *channel != current {
                    out.push(0);
                    put_uint(&mut out, *channel);
                    current = *channel;
                }
                put_uint(&mut out, len as u64);
                let start = out.len();
                encode_msg_into(&mut out, msg);
                debug_assert_eq!(out.len() - start, len);
            }
        }
    }
    out
}

/// Builds a hypercore message wrapper; a shorthand for `Msg::Core(m.into())`.
pub fn core(m: impl Into<Message>) -> Msg {
    Msg::Core(m.into())
}

/// Re-exported so callers name message bodies through one module.
pub use schema::{Data, NoData, Range, Request, Synchronize};

#[cfg(test)]
mod tests;
