//! The encrypted connection under a peer, in either wire generation:
//!
//! - hypercore 10: TCP with 3-byte little-endian length framing and a Noise XX handshake, as
//!   JavaScript `Hypercore.createProtocolStream` speaks it. The cipher is the handshake
//!   crate's, driven without I/O: this module owns the socket, so end of stream, I/O errors
//!   and decryption failures all surface as errors here (the crate's own I/O wrapper swallows
//!   end of stream and panics on some errors);
//! - hypercore 9 (hypercore-protocol 8, multifeed 6 and Cabal): varint-framed Noise XX
//!   messages, then one XSalsa20 keystream per direction over varint-framed messages
//!   ([`crate::net::hc9`]).
//!
//! A listener tells the two apart by the first bytes the dialing side sends.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hypercore_handshake::{Cipher, CipherEvent, HandshakePattern};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::{BytesCodec, Encoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::event::Wire;
use crate::frame::MAX_FRAME_BYTES;
use crate::limits::Limits;
use crate::net::hc9;

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

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(3)
        .little_endian()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// What an hc9 connection reads per system call at first (tokio-util's default buffer), and
/// once its traffic is bulk.
const HC9_READ_BYTES: usize = 8 << 10;
const HC9_BULK_READ_BYTES: usize = 64 << 10;

/// The reading side of an encrypted connection, and the cipher that both sides share.
pub struct Transport {
    reader: Reader,
    writer: mpsc::UnboundedSender<Bytes>,
    backlog: Arc<Backlog>,
    initiator: bool,
    remote_public_key: [u8; 32],
    handshake_hash: Vec<u8>,
}

/// The reading side and the cipher, per wire. One per connection, so the larger variant
/// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Reader {
    Hc10 {
        frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
        cipher: Box<Cipher>,
    },
    Hc9 {
        bytes: FramedRead<OwnedReadHalf, BytesCodec>,
        tx: hc9::Keystream,
        rx: hc9::Keystream,
        frames: hc9::Decoder,
        split: hc9::Split,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("initiator", &self.initiator)
            .finish()
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

/// Writes encrypted frames to the socket in order, batching whatever is queued into one flush.
async fn write_loop<C: Encoder<Bytes>>(
    mut sink: FramedWrite<OwnedWriteHalf, C>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    backlog: Arc<Backlog>,
) {
    while let Some(first) = rx.recv().await {
        let mut n = first.len();
        if sink.feed(first).await.is_err() {
            return;
        }
        while let Ok(next) = rx.try_recv() {
            n += next.len();
            if sink.feed(next).await.is_err() {
                return;
            }
            // Count what is written as it goes, so a long queue drains visibly.
            if n >= 1 << 20 {
                backlog.written(n);
                n = 0;
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
        backlog.written(n);
    }
    let _ = SinkExt::<Bytes>::close(&mut sink).await;
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
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Self::backlog_for(limits);
        tokio::spawn(write_loop(
            FramedWrite::new(write, codec()),
            rx,
            backlog.clone(),
        ));

        let cipher = if initiator {
            Cipher::new_dht_init_with_pattern(None, HandshakePattern::XX, None, &[])
        } else {
            let keypair = hypercore_handshake::state_machine::hc_specific::generate_keypair()
                .map_err(|e| TransportError::Crypto(e.to_string()))?;
            Cipher::resp_from_private_with_pattern(None, &keypair, HandshakePattern::XX, &[])
        }
        .map_err(|e| TransportError::Crypto(e.to_string()))?;

        let mut t = Transport {
            reader: Reader::Hc10 {
                frames: FramedRead::new(read, codec()),
                cipher: Box::new(cipher),
            },
            writer: tx,
            backlog,
            initiator,
            remote_public_key: [0; 32],
            handshake_hash: Vec::new(),
        };
        t.finish_handshake_hc10().await?;
        Ok(t)
    }

    async fn finish_handshake_hc10(&mut self) -> Result<(), TransportError> {
        loop {
            self.flush_cipher()?;
            let Reader::Hc10 { cipher, .. } = &mut self.reader else {
                unreachable!("an hc10 handshake has an hc10 reader")
            };
            if let (Some(hash), Some(remote)) =
                (cipher.handshake_hash(), cipher.get_remote_static())
            {
                self.handshake_hash = hash.to_vec();
                self.remote_public_key = remote;
                return Ok(());
            }
            let frame = self.read_raw().await?;
            let Reader::Hc10 { cipher, .. } = &mut self.reader else {
                unreachable!("an hc10 handshake has an hc10 reader")
            };
            cipher.receive_next(frame);
            while let Some(ev) = decrypt_next(cipher)? {
                // Handshake payloads carry nothing for hypercore; a message this early cannot
                // happen because the remote has no keys yet.
                let _ = ev;
            }
        }
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
        tokio::spawn(write_loop(
            FramedWrite::new(write, BytesCodec::new()),
            rx,
            backlog.clone(),
        ));
        let mut bytes = FramedRead::new(read, BytesCodec::new());
        let mut hs = hc9::Handshake::new(initiator).map_err(noise)?;
        let send = |out: Vec<u8>| -> Result<(), TransportError> {
            if !out.is_empty() {
                backlog.bytes.fetch_add(out.len(), Ordering::AcqRel);
                writer
                    .send(Bytes::from(out))
                    .map_err(|_| TransportError::Closed)?;
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
        Ok(Transport {
            reader: Reader::Hc9 {
                bytes,
                tx,
                rx: rx_stream,
                frames,
                split: established.split.clone(),
            },
            writer,
            backlog,
            initiator,
            remote_public_key: established.remote_static,
            handshake_hash: established.handshake_hash.clone(),
        })
    }

    async fn read_raw(&mut self) -> Result<Vec<u8>, TransportError> {
        let Reader::Hc10 { frames, .. } = &mut self.reader else {
            unreachable!("only hc10 reads length-framed messages")
        };
        loop {
            match frames.next().await {
                // A zero-length frame carries nothing and would upset the cipher.
                Some(Ok(frame)) if frame.is_empty() => continue,
                Some(Ok(frame)) => return Ok(frame.to_vec()),
                Some(Err(e)) => return Err(TransportError::Io(e)),
                None => return Err(TransportError::Closed),
            }
        }
    }

    fn flush_cipher(&mut self) -> Result<(), TransportError> {
        let Reader::Hc10 { cipher, .. } = &mut self.reader else {
            return Ok(());
        };
        while let Some(out) = cipher
            .get_next_sendable_message()
            .map_err(|e| TransportError::Crypto(e.to_string()))?
        {
            self.backlog.bytes.fetch_add(out.len(), Ordering::AcqRel);
            self.writer
                .send(Bytes::from(out))
                .map_err(|_| TransportError::Closed)?;
        }
        Ok(())
    }

    /// The kernel's smoothed round-trip time of the connection's TCP socket, where the
    /// platform reports one (Linux: `TCP_INFO`).
    pub fn round_trip_time(&self) -> Option<Duration> {
        let half = match &self.reader {
            Reader::Hc10 { frames, .. } => frames.get_ref(),
            Reader::Hc9 { bytes, .. } => bytes.get_ref(),
        };
        tcp_rtt(half.as_ref())
    }

    /// The wire this connection speaks.
    pub fn wire(&self) -> Wire {
        match self.reader {
            Reader::Hc10 { .. } => Wire::Hc10,
            Reader::Hc9 { .. } => Wire::Hc9,
        }
    }

    /// The transport keys of an hc9 connection, which key its channel capabilities.
    pub fn hc9_split(&self) -> Option<&hc9::Split> {
        match &self.reader {
            Reader::Hc9 { split, .. } => Some(split),
            Reader::Hc10 { .. } => None,
        }
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
        match &mut self.reader {
            Reader::Hc10 { cipher, .. } => {
                cipher.queue_msg(plaintext);
                self.flush_cipher()
            }
            Reader::Hc9 { tx, .. } => {
                if plaintext.is_empty() {
                    return Ok(());
                }
                tx.apply(&mut plaintext);
                self.backlog
                    .bytes
                    .fetch_add(plaintext.len(), Ordering::AcqRel);
                self.writer
                    .send(Bytes::from(plaintext))
                    .map_err(|_| TransportError::Closed)
            }
        }
    }

    /// Waits for the next encrypted bytes and returns the plaintext frames they complete (on
    /// hc9, a frame's contents after its length; empty for a keep-alive). Cancel-safe: bytes
    /// are either fully read and decrypted or not taken at all.
    pub async fn recv(&mut self) -> Result<Vec<Vec<u8>>, TransportError> {
        if let Reader::Hc9 {
            bytes, rx, frames, ..
        } = &mut self.reader
        {
            let mut out = Vec::new();
            loop {
                match frames.next_frame() {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => break,
                    Err(e) => {
                        return Err(TransportError::Framing(format!(
                            "the peer broke the stream's framing: {e}"
                        )))
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            let mut chunk = match bytes.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(TransportError::Io(e)),
                None => return Err(TransportError::Closed),
            };
            rx.apply(&mut chunk);
            frames.push(&chunk);
            // A read that filled the first 8 KiB is bulk traffic: read up to 64 KiB per call
            // from then on (a whole 64 KiB block per system call), while connections that only
            // exchange small messages keep the 8 KiB buffer. Dropping the chunk first lets the
            // buffer take its space back instead of allocating anew.
            let bulk = chunk.len() >= HC9_READ_BYTES;
            drop(chunk);
            if bulk {
                bytes.read_buffer_mut().reserve(HC9_BULK_READ_BYTES);
            }
            loop {
                match frames.next_frame() {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => return Ok(out),
                    Err(e) => {
                        return Err(TransportError::Framing(format!(
                            "the peer broke the stream's framing: {e}"
                        )))
                    }
                }
            }
        }
        let frame = self.read_raw().await?;
        let Reader::Hc10 { cipher, .. } = &mut self.reader else {
            unreachable!("checked above")
        };
        cipher.receive_next(frame);
        let mut out = Vec::new();
        while let Some(ev) = decrypt_next(cipher)? {
            if let CipherEvent::Message(m) = ev {
                out.push(m);
            }
        }
        // Decrypting can complete the handshake's last step, which has something to send.
        self.flush_cipher()?;
        Ok(out)
    }
}

fn decrypt_next(cipher: &mut Cipher) -> Result<Option<CipherEvent>, TransportError> {
    cipher
        .next_decrypted_message()
        .map_err(|e| TransportError::Crypto(e.to_string()))
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
