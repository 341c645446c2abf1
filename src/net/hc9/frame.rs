//! Framing of hypercore-protocol 8 (`simple-message-channels`), inside the decrypted stream.
//!
//! ```text
//! frame  = varint(len) ‖ varint(channel << 4 | type) ‖ body     len = bytes after the length
//! len 0  = a keep-alive: no header, no body
//! ```
//!
//! Varints are unsigned LEB128. A frame longer than [`MAX_FRAME_BYTES`] ends the stream, as
//! in JavaScript. [`Decoder`] takes the stream in chunks of any size and gives whole frames.

use super::message::Message;

/// Largest `len` a frame may declare (JavaScript's `maxSize`, 8 MiB).
pub const MAX_FRAME_BYTES: u64 = 8 * 1024 * 1024;

/// The most bytes an unsigned LEB128 `u64` takes.
const MAX_VARINT_BYTES: usize = 10;

/// What is wrong with received bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes end inside a varint or a field.
    #[error("truncated message")]
    Truncated,
    /// A varint is longer than ten bytes or does not fit in 64 bits.
    #[error("varint out of range")]
    VarintOverflow,
    /// A frame declares more than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is over the 8 MiB limit")]
    TooLarge(u64),
    /// A message body does not decode.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

impl FrameError {
    /// Whether the stream cannot go on after this error, as [`Decoder`] gives it: the frame
    /// boundaries are lost. Other errors concern one frame's body, which has been skipped.
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::TooLarge(_) | FrameError::VarintOverflow)
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes `v` takes as a varint.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a varint from the front of `buf` and advances it.
pub fn read_varint(buf: &mut &[u8]) -> Result<u64, FrameError> {
    match peek_varint(buf)? {
        Some((v, n)) => {
            *buf = &buf[n..];
            Ok(v)
        }
        None => Err(FrameError::Truncated),
    }
}

/// A varint at the front of `buf` and its length, or `None` if `buf` ends inside it.
pub fn peek_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_VARINT_BYTES) {
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && bits > 1 {
            return Err(FrameError::VarintOverflow);
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_BYTES {
        Err(FrameError::VarintOverflow)
    } else {
        Ok(None)
    }
}

/// One item of the decrypted stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An empty frame, sent to keep the connection from timing out.
    KeepAlive,
    /// A message on a channel (the sender's id; 0 is the stream itself).
    Message {
        /// The sender's channel id.
        channel: u64,
        /// The message.
        message: Message,
    },
}

/// Appends the frame of `message` on `channel` to `out`.
///
/// Nothing is checked: a caller keeps blocks small enough for the frame to stay within
/// [`MAX_FRAME_BYTES`], or the peer ends the stream.
pub fn encode_into(out: &mut Vec<u8>, channel: u64, message: &Message) {
    let header = channel << 4 | u64::from(message.kind());
    let mut body = Vec::new();
    message.encode_body(&mut body);
    put_varint(out, (varint_len(header) + body.len()) as u64);
    put_varint(out, header);
    out.extend_from_slice(&body);
}

/// The frame of `message` on `channel`.
pub fn encode(channel: u64, message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, channel, message);
    out
}

/// The keep-alive frame.
pub const KEEP_ALIVE: [u8; 1] = [0];

/// Decodes one frame's contents (after its length): header and body. Errors concern this
/// frame only: none is fatal.
pub fn decode_frame(mut frame: &[u8]) -> Result<Item, FrameError> {
    if frame.is_empty() {
        return Ok(Item::KeepAlive);
    }
    let decoded = read_varint(&mut frame).and_then(|header| {
        Ok(Item::Message {
            channel: header >> 4,
            message: Message::decode((header & 15) as u8, frame)?,
        })
    });
    decoded.map_err(|e| match e {
        FrameError::VarintOverflow => FrameError::Malformed("varint out of range"),
        e => e,
    })
}

/// Frames out of a byte stream that arrives in pieces.
///
/// [`Decoder::push`] the bytes as they come, then call [`Decoder::next`] until it gives
/// `Ok(None)`. A body that does not decode is given as an error and skipped; a fatal error
/// ([`FrameError::is_fatal`]) is given again on every later call.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    failed: Option<FrameError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet given as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item>, FrameError> {
        match self.next_frame()? {
            Some(frame) => decode_frame(&frame).map(Some),
            None => Ok(None),
        }
    }

    /// The contents of the next whole frame (after its length, to be decoded with
    /// [`decode_frame`]), `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rest = &self.buf[self.pos..];
        let (len, n) = match peek_varint(rest) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        if len > MAX_FRAME_BYTES {
            return Err(self.fail(FrameError::TooLarge(len)));
        }
        let len = len as usize;
        if rest.len() - n < len {
            return Ok(None);
        }
        let frame = rest[n..n + len].to_vec();
        self.pos += n + len;
        Ok(Some(frame))
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.buf = Vec::new();
        self.pos = 0;
        self.failed = Some(e.clone());
        e
    }
}
