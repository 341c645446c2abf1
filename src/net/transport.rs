//! The encrypted connection under a peer, in either wire generation:
//!
//! - hypercore 10: TCP with 3-byte little-endian length framing, a Noise XX handshake and a
//!   secret stream per direction, as JavaScript `Hypercore.createProtocolStream` speaks it
//!   ([`crate::net::secret_stream`], without I/O): this module owns the socket, so end of
//!   stream, I/O errors and decryption failures all surface as errors here;
//! - hypercore 9 (hypercore-protocol 8, multifeed 6 and Cabal): varint-framed Noise XX
//!   messages, then one XSalsa20 keystream per direction over varint-framed messages
//!   ([`crate::net::hc9`]).
//!
//! A listener tells the two apart by the first bytes the dialing side sends.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::{BytesCodec, FramedRead};

use crate::event::Wire;
use crate::frame::MAX_FRAME_BYTES;
use crate::limits::Limits;
use crate::net::framed::FrameReader;
use crate::net::hc9;
use crate::net::secret_stream::{self, Handshake, Pull, PullKey, Push, Step, StreamError};

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// Noise or decryption failed.
    #[error("encryption failed: {0}")]
    Crypto(String),
    /// No complete handshake within `Limits::handshake_timeout`.
    #[error("no Noise handshake within {0:?}; is the other side a hypercore peer?")]
    HandshakeTimeout(Duration),
    /// The peer speaks a wire feedscope does not.
    #[error("{0}")]
    Unsupported(String),
    /// The peer broke the framing of the stream.
    #[error("{0}")]
    Framing(String),
}

/// Which side of a connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialed, speaking this wire.
    Dial(Wire),
    /// We accepted: the dialing side's first bytes say which wire it speaks.
    Accept,
}

/// The first bytes a dialing side sends, as far as they tell its wire: `None` until enough
/// arrived.
///
/// - hypercore-protocol 8 (hc9): `varint(58)` and the Noise XX first message, a 32-byte
///   ephemeral key and the cleartext payload `0a 18` + 24-byte nonce;
/// - hypercore-protocol 6 (multifeed 4, Mapeo classic): `varint(61)`, channel 0 type 0, and
///   a cleartext `Feed{discoveryKey, nonce}` (`0a 20` …);
/// - anything else is taken for hypercore 10 (3-byte length, then its Noise message).
pub fn sniff(first: &[u8]) -> Option<Result<Wire, String>> {
    const HC9_MSG1: usize = 1 + 32 + 2;
    match first.first()? {
        0x3a => {
            if first.len() < HC9_MSG1 {
                return None;
            }
            Some(Ok(if first[33..35] == [0x0a, 0x18] {
                Wire::Hc9
            } else {
                Wire::Hc10
            }))
        }
        0x3d => {
            if first.len() < 4 {
                return None;
            }
            Some(if first[1..4] == [0x00, 0x0a, 0x20] {
                Err("the peer speaks hypercore-protocol 6 (multifeed 4, Mapeo classic), which feedscope does not support: it speaks hypercore 10 and hypercore-protocol 8 (multifeed 6, Cabal)".into())
            } else {
                Ok(Wire::Hc10)
            })
        }
        _ => Some(Ok(Wire::Hc10)),
    }
}

/// What an hc9 connection reads per system call at first (tokio-util's default buffer), and
/// once its traffic is bulk: four 64 KiB blocks, so that their leaf hashes can be computed
/// side by side (one block a read left the downloader hashing one lane at a time).
const HC9_READ_BYTES: usize = 8 << 10;
const HC9_BULK_READ_BYTES: usize = 256 << 10;
/// Reads in a row that fill less than [`HC9_READ_BYTES`] after which a bulk buffer is given
/// back: a connection whose transfer is over does not keep 256 KiB.
const HC9_SMALL_READS_TO_SHRINK: u32 = 64;

/// An encrypted connection: the plaintext frames that a reading task decrypts, the sending
/// half of the cipher, and the writer's queue.
///
/// Reading and decrypting run in a task of their own, one frame ahead of the peer task that
/// acts on what arrives: on a busy connection the two run on two cores. The reading task
/// stops at the frame after the one it handed over until that one is taken, so what it
/// holds is bounded.
pub struct Transport {
    incoming: mpsc::Receiver<Result<Vec<Vec<u8>>, TransportError>>,
    reading: tokio::task::AbortHandle,
    sealer: Sealer,
    writer: mpsc::UnboundedSender<Outbound>,
    backlog: Arc<Backlog>,
    initiator: bool,
    remote_public_key: [u8; 32],
    handshake_hash: Vec<u8>,
    split: Option<hc9::Split>,
    /// The kernel's smoothed round-trip time in µs as the reading task last read it; 0: none.
    rtt: Arc<AtomicU64>,
}

/// How frames are encrypted for sending, per wire.
enum Sealer {
    /// hypercore 10: the sending secret stream (the receiving one is the reading task's).
    Hc10(Push),
    /// hypercore 9: the outgoing XSalsa20 keystream (the incoming one is the reading task's).
    Hc9(Box<hc9::Keystream>),
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.reading.abort();
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("initiator", &self.initiator)
            .finish()
    }
}

/// What the writer sends: a frame's bytes, and on hypercore 10 the secret stream's encrypted
/// tag byte, which goes between the frame's length and these bytes (so that sealing a frame
/// never moves it).
#[derive(Debug)]
struct Outbound {
    lead: Option<u8>,
    body: Bytes,
}

impl Outbound {
    fn plain(body: Vec<u8>) -> Self {
        Outbound {
            lead: None,
            body: Bytes::from(body),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.lead.is_some()) + self.body.len()
    }
}

/// Bytes handed to the writer and not yet written to the socket.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Bytes beyond which the connection counts as congested: the peer task then stops
    /// answering block requests until the peer has read some of it.
    limit: usize,
    bytes: AtomicUsize,
    written: AtomicU64,
    drained: Notify,
}

impl Backlog {
    /// Waits until a congested connection has written enough to be below the limit.
    pub async fn drained(&self) {
        self.drained.notified().await
    }

    /// Bytes written to the socket since the connection began.
    pub fn written_total(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn written(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::AcqRel);
        let before = self.bytes.fetch_sub(n, Ordering::AcqRel);
        if before > self.limit && before - n <= self.limit {
            self.drained.notify_one();
        }
    }
}

/// Writes encrypted frames to the socket in order, whatever is queued in one vectored write
/// where the socket takes it, each frame's bytes as they were queued (no copy into a write
/// buffer). With `length_prefix` (hypercore 10) each frame goes after its 3-byte
/// little-endian length; hc9 frames carry their own framing.
async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    backlog: Arc<Backlog>,
    length_prefix: bool,
) {
    // Pieces not yet written, each with the frame bytes it completes (0 for a prefix).
    let mut pieces: VecDeque<(Bytes, usize)> = VecDeque::new();
    let mut queued = 0usize;
    let mut closed = false;
    loop {
        if pieces.is_empty() {
            if closed {
                break;
            }
            match rx.recv().await {
                Some(frame) => {
                    if !queue(&mut pieces, &mut queued, frame, length_prefix) {
                        return;
                    }
                }
                None => break,
            }
        }
        // Whatever else is queued joins this write, up to a bound.
        while queued < WRITE_GATHER_BYTES {
            match rx.try_recv() {
                Ok(frame) => {
                    if !queue(&mut pieces, &mut queued, frame, length_prefix) {
                        return;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let slices: Vec<IoSlice<'_>> = pieces
            .iter()
            .take(WRITE_GATHER_PIECES)
            .map(|(b, _)| IoSlice::new(b))
            .collect();
        let mut n = match socket.write_vectored(&slices).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        drop(slices);
        // Take what was written off the front; a frame counts as written when its last byte is.
        let mut written = 0;
        while n > 0 {
            let (front, counts) = pieces.front_mut().expect("written bytes were queued");
            if n >= front.len() {
                n -= front.len();
                queued -= front.len();
                written += *counts;
                pieces.pop_front();
            } else {
                bytes::Buf::advance(front, n);
                queued -= n;
                n = 0;
            }
        }
        if written > 0 {
            backlog.written(written);
        }
    }
    let _ = socket.shutdown().await;
}

/// Bytes gathered into one vectored write at most (more wait for the next).
const WRITE_GATHER_BYTES: usize = 1 << 20;
/// Pieces in one vectored write at most (the kernel takes up to 1,024).
const WRITE_GATHER_PIECES: usize = 256;

/// Queues a frame to write; `false` for one too long for a 3-byte length (the connection
/// cannot go on: the peer would misread everything after it).
fn queue(
    pieces: &mut VecDeque<(Bytes, usize)>,
    queued: &mut usize,
    frame: Outbound,
    prefix: bool,
) -> bool {
    let len = frame.len();
    let mut head = [0u8; 4];
    let mut head_len = 0;
    if prefix {
        if len > MAX_FRAME_BYTES {
            tracing::warn!("a frame of {len} bytes is over the {MAX_FRAME_BYTES}-byte limit");
            return false;
        }
        head[..3].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
        head_len = 3;
    }
    if let Some(lead) = frame.lead {
        head[head_len] = lead;
        head_len += 1;
    }
    if head_len > 0 {
        pieces.push_back((Bytes::copy_from_slice(&head[..head_len]), 0));
    }
    *queued += head_len + frame.body.len();
    pieces.push_back((frame.body, len));
    true
}

impl Transport {
    /// Runs the Noise XX handshake of the connection's wire on `stream`. `limits` bounds the
    /// handshake's time (telling the wire apart included) and the write backlog.
    pub async fn handshake(
        stream: TcpStream,
        role: Role,
        limits: &Limits,
    ) -> Result<Self, TransportError> {
        let _ = stream.set_nodelay(true);
        let timeout = limits.handshake_timeout;
        let connect = async {
            let wire = match role {
                Role::Dial(wire) => wire,
                Role::Accept => sniff_stream(&stream).await?,
            };
            let initiator = matches!(role, Role::Dial(_));
            match wire {
                Wire::Hc10 => Self::handshake_hc10(stream, initiator, limits).await,
                Wire::Hc9 => Self::handshake_hc9(stream, initiator, limits).await,
            }
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| TransportError::HandshakeTimeout(timeout))?
    }

    fn backlog_for(limits: &Limits) -> Arc<Backlog> {
        Arc::new(Backlog {
            limit: limits.max_write_backlog,
            ..Backlog::default()
        })
    }

    async fn handshake_hc10(
        stream: TcpStream,
        initiator: bool,
        limits: &Limits,
    ) -> Result<Self, TransportError> {
        let (read, write) = stream.into_split();
        let (writer, rx) = mpsc::unbounded_channel();
        let backlog = Self::backlog_for(limits);
        tokio::spawn(write_loop(write, rx, backlog.clone(), true));

        let send = |frame: Vec<u8>| send_plain(&writer, &backlog, frame);
        let (mut hs, first) = Handshake::start(initiator).map_err(crypto)?;
        if let Some(first) = first {
            send(first)?;
        }
        let mut frames = FrameReader::new(read, MAX_FRAME_BYTES);
        let keys = loop {
            match hs
                .receive(&read_frame(&mut frames).await?)
                .map_err(crypto)?
            {
                Step::Send(next, msg) => {
                    send(msg)?;
                    hs = next;
                }
                Step::Done { last, keys } => {
                    if let Some(last) = last {
                        send(last)?;
                    }
                    break keys;
                }
            }
        };
        let secret_stream::Keys {
            push,
            setup,
            pull,
            handshake_hash,
            remote_static,
        } = keys;
        send(setup)?;
        let rtt = Arc::new(AtomicU64::new(rtt_micros(frames.get_ref().as_ref())));
        let (out, incoming) = mpsc::channel(1);
        let reading = tokio::spawn(read_loop_hc10(frames, pull, out, rtt.clone())).abort_handle();
        Ok(Transport {
            incoming,
            reading,
            sealer: Sealer::Hc10(push),
            writer,
            backlog,
            initiator,
            remote_public_key: remote_static,
            handshake_hash,
            split: None,
            rtt,
        })
    }

    async fn handshake_hc9(
        stream: TcpStream,
        initiator: bool,
        limits: &Limits,
    ) -> Result<Self, TransportError> {
        let noise =
            |e: hc9::NoiseError| TransportError::Crypto(format!("Noise handshake error: {e}"));
        let (read, write) = stream.into_split();
        let (writer, rx) = mpsc::unbounded_channel();
        let backlog = Self::backlog_for(limits);
        tokio::spawn(write_loop(write, rx, backlog.clone(), false));
        let mut bytes = FramedRead::new(read, BytesCodec::new());
        let mut hs = hc9::Handshake::new(initiator).map_err(noise)?;
        let send = |out: Vec<u8>| -> Result<(), TransportError> {
            if !out.is_empty() {
                send_plain(&writer, &backlog, out)?;
            }
            Ok(())
        };
        send(hs.take_send())?;
        let established = loop {
            let chunk = match bytes.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(TransportError::Io(e)),
                None => return Err(TransportError::Closed),
            };
            let done = hs.receive(&chunk).map_err(noise)?;
            send(hs.take_send())?;
            if let Some(done) = done {
                break done;
            }
        };
        let (tx, mut rx_stream) = established.keystreams();
        let mut frames = hc9::Decoder::new();
        let mut overflow = established.overflow.clone();
        rx_stream.apply(&mut overflow);
        frames.push(&overflow);
        let rtt = Arc::new(AtomicU64::new(rtt_micros(bytes.get_ref().as_ref())));
        let (out, incoming) = mpsc::channel(1);
        let reading =
            tokio::spawn(read_loop_hc9(bytes, rx_stream, frames, out, rtt.clone())).abort_handle();
        Ok(Transport {
            incoming,
            reading,
            sealer: Sealer::Hc9(Box::new(tx)),
            writer,
            backlog,
            initiator,
            remote_public_key: established.remote_static,
            handshake_hash: established.handshake_hash.clone(),
            split: Some(established.split.clone()),
            rtt,
        })
    }

    /// The kernel's smoothed round-trip time of the connection's TCP socket, where the
    /// platform reports one (Linux: `TCP_INFO`), as last read while reading.
    pub fn round_trip_time(&self) -> Option<Duration> {
        match self.rtt.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The wire this connection speaks.
    pub fn wire(&self) -> Wire {
        match self.sealer {
            Sealer::Hc10(_) => Wire::Hc10,
            Sealer::Hc9(_) => Wire::Hc9,
        }
    }

    /// The transport keys of an hc9 connection, which key its channel capabilities.
    pub fn hc9_split(&self) -> Option<&hc9::Split> {
        self.split.as_ref()
    }

    /// Whether we started the Noise handshake.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// The peer's Noise static public key.
    pub fn remote_public_key(&self) -> [u8; 32] {
        self.remote_public_key
    }

    /// The Noise handshake hash, the same on both sides; it keys channel capabilities.
    pub fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    /// Whether more than `Limits::max_write_backlog` bytes wait to be written to the socket.
    pub fn congested(&self) -> bool {
        self.backlog.bytes.load(Ordering::Acquire) > self.backlog.limit
    }

    /// The write backlog, to wait on while the transport itself is busy reading.
    pub fn backlog(&self) -> Arc<Backlog> {
        self.backlog.clone()
    }

    /// Encrypts and sends what the connection core sealed: one plaintext frame on hc10 (an
    /// empty one is a keep-alive), framed bytes on hc9.
    pub fn send(&mut self, mut plaintext: Vec<u8>) -> Result<(), TransportError> {
        match &mut self.sealer {
            Sealer::Hc10(push) => {
                let lead = push.seal(&mut plaintext);
                let frame = Outbound {
                    lead: Some(lead),
                    body: Bytes::from(plaintext),
                };
                self.backlog.bytes.fetch_add(frame.len(), Ordering::AcqRel);
                self.writer.send(frame).map_err(|_| TransportError::Closed)
            }
            Sealer::Hc9(tx) => {
                if plaintext.is_empty() {
                    return Ok(());
                }
                tx.apply(&mut plaintext);
                send_plain(&self.writer, &self.backlog, plaintext)
            }
        }
    }

    /// Waits for the plaintext frames of the next encrypted bytes (on hc9, a frame's contents
    /// after its length; empty for a keep-alive). Cancel-safe: frames are either returned or
    /// left for the next call.
    pub async fn recv(&mut self) -> Result<Vec<Vec<u8>>, TransportError> {
        self.incoming
            .recv()
            .await
            .unwrap_or(Err(TransportError::Closed))
    }
}

/// Queues bytes that need no sealing (handshake messages, the setup frame, hc9's already
/// encrypted bytes) for the writer.
fn send_plain(
    writer: &mpsc::UnboundedSender<Outbound>,
    backlog: &Backlog,
    bytes: Vec<u8>,
) -> Result<(), TransportError> {
    backlog.bytes.fetch_add(bytes.len(), Ordering::AcqRel);
    writer
        .send(Outbound::plain(bytes))
        .map_err(|_| TransportError::Closed)
}

fn crypto(e: StreamError) -> TransportError {
    TransportError::Crypto(e.to_string())
}

/// The next non-empty length-framed frame (a zero-length frame carries nothing: JavaScript
/// peers send them to keep the connection alive).
async fn read_frame(frames: &mut FrameReader<OwnedReadHalf>) -> Result<Vec<u8>, TransportError> {
    loop {
        match frames.next().await {
            Ok(Some(frame)) if frame.is_empty() => continue,
            Ok(Some(frame)) => return Ok(frame),
            Err(e) => return Err(TransportError::Io(e)),
            Ok(None) => return Err(TransportError::Closed),
        }
    }
}

/// How often the reading task reads the kernel's round-trip time.
const RTT_EVERY: Duration = Duration::from_millis(250);

/// Reads the kernel's round-trip time of `stream` into `rtt` if `RTT_EVERY` has passed.
fn sample_rtt(stream: &TcpStream, rtt: &AtomicU64, last: &mut Option<std::time::Instant>) {
    if last.is_none_or(|t| t.elapsed() >= RTT_EVERY) {
        *last = Some(std::time::Instant::now());
        rtt.store(rtt_micros(stream), Ordering::Relaxed);
    }
}

/// The kernel's round-trip time of `stream` in µs (at least 1), or 0 where there is none.
fn rtt_micros(stream: &TcpStream) -> u64 {
    tcp_rtt(stream).map_or(0, |d| d.as_micros().clamp(1, u64::MAX as u128) as u64)
}

/// Reads and decrypts hypercore 10 frames until the connection ends or the transport is
/// dropped; the end is handed over as an error. The first frame is the peer's secret-stream
/// setup.
async fn read_loop_hc10(
    mut frames: FrameReader<OwnedReadHalf>,
    pull: PullKey,
    out: mpsc::Sender<Result<Vec<Vec<u8>>, TransportError>>,
    rtt: Arc<AtomicU64>,
) {
    let opened = match read_frame(&mut frames).await {
        Ok(setup) => pull.open(&setup).map_err(crypto),
        Err(e) => Err(e),
    };
    let mut pull: Pull = match opened {
        Ok(pull) => pull,
        Err(e) => {
            let _ = out.send(Err(e)).await;
            return;
        }
    };
    let mut sampled = None;
    loop {
        let got = read_frame(&mut frames).await.and_then(|mut frame| {
            pull.open(&mut frame).map_err(crypto)?;
            Ok(vec![frame])
        });
        sample_rtt(frames.get_ref().as_ref(), &rtt, &mut sampled);
        let end = got.is_err();
        if out.send(got).await.is_err() || end {
            return;
        }
    }
}

/// Reads, decrypts and unframes hypercore 9 bytes until the connection ends or the
/// transport is dropped; the end is handed over as an error.
async fn read_loop_hc9(
    mut bytes: FramedRead<OwnedReadHalf, BytesCodec>,
    mut rx: hc9::Keystream,
    mut frames: hc9::Decoder,
    out: mpsc::Sender<Result<Vec<Vec<u8>>, TransportError>>,
    rtt: Arc<AtomicU64>,
) {
    let mut sampled = None;
    let mut small_reads = 0u32;
    loop {
        let mut got = Vec::new();
        let unframed = loop {
            match frames.next_frame() {
                Ok(Some(frame)) => got.push(frame),
                Ok(None) => break Ok(()),
                Err(e) => {
                    break Err(TransportError::Framing(format!(
                        "the peer broke the stream's framing: {e}"
                    )))
                }
            }
        };
        let got = match unframed {
            Ok(()) if !got.is_empty() => Ok(got),
            Ok(()) => {
                match bytes.next().await {
                    Some(Ok(mut chunk)) => {
                        rx.apply(&mut chunk);
                        frames.push(&chunk);
                        sample_rtt(bytes.get_ref().as_ref(), &rtt, &mut sampled);
                        // A read that filled the first 8 KiB is bulk traffic: read up to 256
                        // KiB per call from then on, while connections that only exchange
                        // small messages keep the 8 KiB buffer, and go back to it once their
                        // bulk traffic is over. Dropping the chunk first lets the buffer take
                        // its space back instead of allocating anew.
                        let read = chunk.len();
                        drop(chunk);
                        size_hc9_buffer(bytes.read_buffer_mut(), read, &mut small_reads);
                    }
                    Some(Err(e)) => {
                        let _ = out.send(Err(TransportError::Io(e))).await;
                        return;
                    }
                    None => {
                        let _ = out.send(Err(TransportError::Closed)).await;
                        return;
                    }
                }
                continue;
            }
            Err(e) => Err(e),
        };
        let end = got.is_err();
        if out.send(got).await.is_err() || end {
            return;
        }
    }
}

/// Sizes an hc9 connection's read buffer after a read of `read` bytes (see
/// [`HC9_BULK_READ_BYTES`]); `small_reads` counts the small reads in a row.
fn size_hc9_buffer(buffer: &mut bytes::BytesMut, read: usize, small_reads: &mut u32) {
    if read >= HC9_READ_BYTES {
        *small_reads = 0;
        buffer.reserve(HC9_BULK_READ_BYTES);
    } else if buffer.capacity() > HC9_READ_BYTES {
        *small_reads += 1;
        if *small_reads >= HC9_SMALL_READS_TO_SHRINK && buffer.is_empty() {
            *buffer = bytes::BytesMut::with_capacity(HC9_READ_BYTES);
            *small_reads = 0;
        }
    }
}

/// Waits until the dialing side's first bytes tell its wire, without taking them.
async fn sniff_stream(stream: &TcpStream) -> Result<Wire, TransportError> {
    let mut first = [0u8; 64];
    let mut seen = 0;
    loop {
        stream.readable().await?;
        let n = match stream.peek(&mut first).await {
            Ok(0) => return Err(TransportError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(TransportError::Io(e)),
        };
        match sniff(&first[..n]) {
            Some(Ok(wire)) => return Ok(wire),
            Some(Err(why)) => return Err(TransportError::Unsupported(why)),
            // Only part of the first message is here: wait for more, without spinning.
            None if n == seen => tokio::time::sleep(Duration::from_millis(2)).await,
            None => seen = n,
        }
    }
}

#[cfg(target_os = "linux")]
fn tcp_rtt(stream: &TcpStream) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain data, so all zeros is a valid value; getsockopt writes at
    // most `len` bytes into it, and the descriptor stays open for the call (`stream` is
    // borrowed).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_rtt > 0).then(|| Duration::from_micros(info.tcpi_rtt.into()))
}

#[cfg(not(target_os = "linux"))]
fn tcp_rtt(_: &TcpStream) -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hc9_read_buffer_grows_for_bulk_traffic_and_shrinks_once_it_is_over() {
        let mut buffer = bytes::BytesMut::with_capacity(HC9_READ_BYTES);
        let mut small = 0;
        size_hc9_buffer(&mut buffer, 100, &mut small);
        assert_eq!(
            buffer.capacity(),
            HC9_READ_BYTES,
            "small messages keep 8 KiB"
        );
        size_hc9_buffer(&mut buffer, HC9_READ_BYTES, &mut small);
        assert!(buffer.capacity() >= HC9_BULK_READ_BYTES);
        // A few small reads in the middle of a transfer keep the bulk buffer.
        for _ in 1..HC9_SMALL_READS_TO_SHRINK {
            size_hc9_buffer(&mut buffer, 10, &mut small);
        }
        size_hc9_buffer(&mut buffer, HC9_BULK_READ_BYTES, &mut small);
        assert!(buffer.capacity() >= HC9_BULK_READ_BYTES);
        for _ in 0..HC9_SMALL_READS_TO_SHRINK {
            size_hc9_buffer(&mut buffer, 10, &mut small);
        }
        assert_eq!(buffer.capacity(), HC9_READ_BYTES, "the transfer is over");
    }
}
