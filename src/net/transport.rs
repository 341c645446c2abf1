//! TCP with 3-byte little-endian length framing and a Noise XX handshake, as JavaScript
//! `Hypercore.createProtocolStream` speaks it.
//!
//! The cipher is the handshake crate's, driven without I/O: this module owns the socket, so
//! end of stream, I/O errors and decryption failures all surface as errors here (the crate's
//! own I/O wrapper swallows end of stream and panics on some errors).

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
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::frame::MAX_FRAME_BYTES;
use crate::limits::Limits;

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
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(3)
        .little_endian()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// The reading side of an encrypted connection, and the cipher that both sides share.
pub struct Transport {
    reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: mpsc::UnboundedSender<Bytes>,
    backlog: Arc<Backlog>,
    cipher: Cipher,
    initiator: bool,
    remote_public_key: [u8; 32],
    handshake_hash: Vec<u8>,
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
async fn write_loop(
    mut sink: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
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
    /// Runs the Noise XX handshake on `stream`; `initiator` is the side that speaks first.
    /// `limits` bounds the handshake's time and the write backlog.
    pub async fn handshake(
        stream: TcpStream,
        initiator: bool,
        limits: &Limits,
    ) -> Result<Self, TransportError> {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let reader = FramedRead::new(read, codec());
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog {
            limit: limits.max_write_backlog,
            ..Backlog::default()
        });
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
            reader,
            writer: tx,
            backlog,
            cipher,
            initiator,
            remote_public_key: [0; 32],
            handshake_hash: Vec::new(),
        };
        tokio::time::timeout(limits.handshake_timeout, t.finish_handshake())
            .await
            .map_err(|_| TransportError::HandshakeTimeout(limits.handshake_timeout))??;
        Ok(t)
    }

    async fn finish_handshake(&mut self) -> Result<(), TransportError> {
        loop {
            self.flush_cipher()?;
            if let (Some(hash), Some(remote)) = (
                self.cipher.handshake_hash(),
                self.cipher.get_remote_static(),
            ) {
                self.handshake_hash = hash.to_vec();
                self.remote_public_key = remote;
                return Ok(());
            }
            let frame = self.read_raw().await?;
            self.cipher.receive_next(frame);
            while let Some(ev) = self.decrypt_next()? {
                // Handshake payloads carry nothing for hypercore; a message this early cannot
                // happen because the remote has no keys yet.
                let _ = ev;
            }
        }
    }

    async fn read_raw(&mut self) -> Result<Vec<u8>, TransportError> {
        loop {
            match self.reader.next().await {
                // A zero-length frame carries nothing and would upset the cipher.
                Some(Ok(frame)) if frame.is_empty() => continue,
                Some(Ok(frame)) => return Ok(frame.to_vec()),
                Some(Err(e)) => return Err(TransportError::Io(e)),
                None => return Err(TransportError::Closed),
            }
        }
    }

    fn decrypt_next(&mut self) -> Result<Option<CipherEvent>, TransportError> {
        self.cipher
            .next_decrypted_message()
            .map_err(|e| TransportError::Crypto(e.to_string()))
    }

    fn flush_cipher(&mut self) -> Result<(), TransportError> {
        while let Some(out) = self
            .cipher
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

    /// Encrypts and sends one plaintext frame (an empty one is a keep-alive).
    pub fn send(&mut self, plaintext: Vec<u8>) -> Result<(), TransportError> {
        self.cipher.queue_msg(plaintext);
        self.flush_cipher()
    }

    /// Waits for the next encrypted frame and returns the plaintext frames it yields.
    /// Cancel-safe: a frame is either fully read and decrypted or not taken at all.
    pub async fn recv(&mut self) -> Result<Vec<Vec<u8>>, TransportError> {
        let frame = self.read_raw().await?;
        self.cipher.receive_next(frame);
        let mut out = Vec::new();
        while let Some(ev) = self.decrypt_next()? {
            if let CipherEvent::Message(m) = ev {
                out.push(m);
            }
        }
        // Decrypting can complete the handshake's last step, which has something to send.
        self.flush_cipher()?;
        Ok(out)
    }
}
