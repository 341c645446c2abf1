//! hypercore 10's transport encryption, as JavaScript's `@hyperswarm/secret-stream` speaks it,
//! without I/O.
//!
//! The Noise XX handshake (`Noise_XX_Ed25519_ChaChaPoly_BLAKE2b`) is the `hypercore_handshake`
//! crate's state machine; what follows it is feedscope's own:
//!
//! - each side sends one 56-byte setup frame: its stream id (BLAKE2b-256 keyed by the
//!   handshake hash over its role's namespace) and a random 24-byte secretstream header;
//! - each direction is then one libsodium `crypto_secretstream_xchacha20poly1305` stream, keyed
//!   by that direction's half of the handshake's split and the sender's header. A message is
//!   its encrypted tag byte, the ciphertext and a 16-byte Poly1305 MAC.
//!
//! The `crypto_secretstream` crate that `hypercore_handshake` drives feeds Poly1305 one
//! 16-byte block per call, computes ChaCha20 four blocks at a time, and shifts each message
//! by a byte to put the tag in front. Here ChaCha20 ([`crate::net::arx`], up to sixteen
//! blocks at a time) is feedscope's own, Poly1305 too for messages under 6 KiB
//! ([`crate::net::poly1305`]; longer ones take the `poly1305` crate whole), and the tag byte
//! is handed back beside the message, for the writer to send before it. The two streams are
//! held to the same bytes in both directions by this module's tests.

use hypercore_handshake::state_machine::{
    HsDone, HsMsgSent, Initiator, InitiatorXxFinalMsg, Responder, ResponderXxAwaitingFinal,
    SecStream, Start,
};
use hypercore_handshake::XX;
use subtle::ConstantTimeEq;

use crate::net::arx::{hchacha20, xor_into, ChaCha20};
use crate::net::poly1305::Poly1305;

/// What a message grows by: the tag byte and the MAC.
pub const ABYTES: usize = 1 + MAC_BYTES;
/// The setup frame: stream id, then header.
pub const SETUP_BYTES: usize = 32 + HEADER_BYTES;
const HEADER_BYTES: usize = 24;
const MAC_BYTES: usize = 16;

/// `crypto.namespace('hyperswarm/secret-stream', 2)` of hypercore-crypto: BLAKE2b-256 of the
/// name's BLAKE2b-256 followed by the index (0: initiator, 1: responder).
const NS_INITIATOR: [u8; 32] = [
    0xa9, 0x31, 0xa0, 0x15, 0x5b, 0x5c, 0x09, 0xe6, 0xd2, 0x86, 0x28, 0x23, 0x6a, 0xf8, 0x3c, 0x4b,
    0x8a, 0x6a, 0xf9, 0xaf, 0x60, 0x98, 0x6e, 0xde, 0xed, 0xe9, 0xdc, 0x5d, 0x63, 0x19, 0x2b, 0xf7,
];
const NS_RESPONDER: [u8; 32] = [
    0x74, 0x2c, 0x9d, 0x83, 0x3d, 0x43, 0x0a, 0xf4, 0xc4, 0x8a, 0x87, 0x05, 0xe9, 0x16, 0x31, 0xee,
    0xcf, 0x29, 0x54, 0x42, 0xbb, 0xca, 0x18, 0x99, 0x6e, 0x59, 0x70, 0x97, 0x72, 0x3b, 0x10, 0x61,
];

/// Messages of this many bytes and more are authenticated by the `poly1305` crate
/// (`State::mac`) on a CPU without AVX-512 IFMA. Below, feedscope's own is faster (a whole
/// 4 KiB message sealed at 1.7 against 1.6 GB/s), above, the crate's (8 KiB: 2.0 against
/// 1.8 GB/s), as `cargo bench --locked --bench cipher` measures them. With IFMA,
/// feedscope's own takes every message.
const LONG_MESSAGE: usize = 6 << 10;

/// libsodium's tags: a plain message, and the bit after which both sides rekey.
const TAG_MESSAGE: u8 = 0;
const TAG_REKEY: u8 = 2;

/// Why a secret stream could not go on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// The Noise handshake failed.
    #[error("Noise handshake failed: {0}")]
    Handshake(String),
    /// The peer's setup frame is not 56 bytes.
    #[error("the peer's secret-stream setup is {0} bytes, not {SETUP_BYTES}")]
    SetupLength(usize),
    /// The peer's stream id is not the one its handshake gives.
    #[error("the peer's secret-stream id does not match the handshake")]
    StreamId,
    /// A message is shorter than its tag and MAC.
    #[error("an encrypted message of {0} bytes is shorter than its {ABYTES}-byte tag and MAC")]
    Short(usize),
    /// A message's MAC does not match: it was changed, or is not the stream's next.
    #[error("a message failed authentication")]
    Forged,
}

/// One direction's stream state: the subkey and the nonce (a 32-bit little-endian counter,
/// then 8 bytes that each message's MAC is folded into).
struct State {
    key: [u8; 32],
    nonce: [u8; 12],
}

impl State {
    fn new(key: &[u8; 32], header: &[u8; HEADER_BYTES]) -> Self {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&1u32.to_le_bytes());
        nonce[4..].copy_from_slice(&header[16..]);
        State {
            key: hchacha20(key, header[..16].try_into().expect("16 bytes")),
            nonce,
        }
    }

    /// The keystream of a message of `len` bytes: its Poly1305 key, the keystream of block
    /// 1 (over which the tag byte goes), and the text's, which starts at block 2: `Text`
    /// holds its first batch, computed with the first two blocks.
    fn begin(&self, len: usize) -> ([u8; 32], [u8; 64], Text) {
        let cipher = ChaCha20::new(&self.key, &self.nonce);
        let (first, width) = cipher.first_blocks(2 + len.div_ceil(64));
        (
            first[0][..32].try_into().expect("32 bytes"),
            first[1],
            Text {
                cipher,
                first,
                width,
            },
        )
    }

    /// The MAC of a message with no associated data: its 64-byte tag block, the ciphertext,
    /// as many zero bytes as the ciphertext is past a multiple of 16 (libsodium's padding,
    /// kept for compatibility), and the two lengths. Without AVX-512 IFMA, long messages go
    /// to the `poly1305` crate, whose AVX2 backend is faster once its setup is paid for.
    fn mac(key: &[u8; 32], block: &[u8; 64], text: &[u8]) -> [u8; MAC_BYTES] {
        let mut sizes = [0u8; 16];
        sizes[8..].copy_from_slice(&(64 + text.len() as u64).to_le_bytes());
        let pad = &[0; 16][..text.len() % 16];
        if text.len() < LONG_MESSAGE || crate::net::poly1305::vectored() {
            let mut mac = Poly1305::new(key);
            for part in [&block[..], text, pad, &sizes] {
                mac.update(part);
            }
            return mac.finalize();
        }
        use poly1305::universal_hash::{KeyInit, UniversalHash};
        let mut mac = poly1305::Poly1305::new(key.into());
        mac.update_padded(block);
        let whole = text.len() - text.len() % 16;
        mac.update_padded(&text[..whole]);
        let mut last = [0u8; 48];
        let tail = &text[whole..];
        for (at, part) in [(0, tail), (tail.len(), pad), (2 * tail.len(), &sizes[..])] {
            last[at..at + part.len()].copy_from_slice(part);
        }
        mac.compute_unpadded(&last[..2 * tail.len() + 16]).into()
    }

    /// After a message: its MAC folded into the nonce, the counter advanced, and a new key
    /// when the tag asks for one or the counter wraps.
    fn advance(&mut self, mac: &[u8; MAC_BYTES], tag: u8) {
        for (n, m) in self.nonce[4..].iter_mut().zip(mac) {
            *n ^= m;
        }
        let counter = u32::from_le_bytes(self.nonce[..4].try_into().expect("4 bytes"));
        let counter = counter.wrapping_add(1);
        self.nonce[..4].copy_from_slice(&counter.to_le_bytes());
        if tag & TAG_REKEY != 0 || counter == 0 {
            self.rekey();
        }
    }

    fn rekey(&mut self) {
        let mut next = [0u8; 40];
        next[..32].copy_from_slice(&self.key);
        next[32..].copy_from_slice(&self.nonce[4..]);
        ChaCha20::new(&self.key, &self.nonce).apply_from(0, &mut next);
        self.key.copy_from_slice(&next[..32]);
        self.nonce[..4].copy_from_slice(&1u32.to_le_bytes());
        self.nonce[4..].copy_from_slice(&next[32..]);
    }
}

/// A message's keystream from block 2 on.
struct Text {
    cipher: ChaCha20,
    /// The first batch, whose blocks from 2 on are the text's first.
    first: [[u8; 64]; crate::net::arx::LANES],
    width: usize,
}

impl Text {
    /// XORs the text's keystream into `text`.
    fn apply(&self, text: &mut [u8]) {
        let first = self.first[2..self.width].as_flattened();
        let n = first.len().min(text.len());
        xor_into(&mut text[..n], first);
        self.cipher.apply_from(self.width as u64, &mut text[n..]);
    }
}

/// The sending direction.
pub struct Push(State);

/// The receiving direction.
pub struct Pull(State);

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Push")
    }
}

impl std::fmt::Debug for Pull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pull")
    }
}

impl Push {
    /// A stream under `key` starting from `header`.
    pub fn new(key: &[u8; 32], header: &[u8; HEADER_BYTES]) -> Self {
        Push(State::new(key, header))
    }

    /// Encrypts `text` in place and appends its MAC; gives back the encrypted tag byte, which
    /// goes on the wire before it.
    pub fn seal(&mut self, text: &mut Vec<u8>) -> u8 {
        self.seal_tagged(text, TAG_MESSAGE)
    }

    fn seal_tagged(&mut self, text: &mut Vec<u8>, tag: u8) -> u8 {
        let (poly_key, mut block, stream) = self.0.begin(text.len());
        block[0] ^= tag;
        stream.apply(text);
        let mac = State::mac(&poly_key, &block, text);
        text.extend_from_slice(&mac);
        self.0.advance(&mac, tag);
        block[0]
    }
}

impl Pull {
    /// A stream under `key` starting from `header`.
    pub fn new(key: &[u8; 32], header: &[u8; HEADER_BYTES]) -> Self {
        Pull(State::new(key, header))
    }

    /// Checks and decrypts one received message (tag byte, ciphertext, MAC) in place; on
    /// success `message` holds the text. A message that fails changes neither the stream nor
    /// `message`.
    pub fn open(&mut self, message: &mut Vec<u8>) -> Result<(), StreamError> {
        self.open_tagged(message).map(|_| ())
    }

    fn open_tagged(&mut self, message: &mut Vec<u8>) -> Result<u8, StreamError> {
        let len = message.len();
        if len < ABYTES {
            return Err(StreamError::Short(len));
        }
        let (poly_key, mut block, stream) = self.0.begin(len - ABYTES);
        let tag = block[0] ^ message[0];
        block[0] = message[0];
        let end = len - MAC_BYTES;
        let expected = State::mac(&poly_key, &block, &message[1..end]);
        if !bool::from(expected[..].ct_eq(&message[end..])) {
            return Err(StreamError::Forged);
        }
        stream.apply(&mut message[1..end]);
        message.copy_within(1..end, 0);
        message.truncate(end - 1);
        self.0.advance(&expected, tag);
        Ok(tag)
    }
}

/// The stream id a side sends in its setup frame.
fn stream_id(handshake_hash: &[u8], initiator: bool) -> [u8; 32] {
    let ns = if initiator {
        &NS_INITIATOR
    } else {
        &NS_RESPONDER
    };
    crate::net::keyed_hash(handshake_hash, &[ns])
}

/// What a finished handshake gives: the sending stream and its setup frame, the key of the
/// receiving stream, and what the connection's capabilities and peer list need.
pub struct Keys {
    /// Encrypts what we send.
    pub push: Push,
    /// The frame to send right after the handshake, before anything encrypted.
    pub setup: Vec<u8>,
    /// Opens the receiving stream from the peer's setup frame.
    pub pull: PullKey,
    /// The Noise handshake hash, the same on both sides.
    pub handshake_hash: Vec<u8>,
    /// The peer's Noise static public key.
    pub remote_static: [u8; 32],
}

/// The receiving direction's key, waiting for the peer's setup frame.
pub struct PullKey {
    key: [u8; 32],
    expected_id: [u8; 32],
}

impl std::fmt::Debug for PullKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullKey")
    }
}

impl PullKey {
    /// The receiving stream that the peer's setup frame starts.
    pub fn open(self, setup: &[u8]) -> Result<Pull, StreamError> {
        if setup.len() != SETUP_BYTES {
            return Err(StreamError::SetupLength(setup.len()));
        }
        if !bool::from(setup[..32].ct_eq(&self.expected_id[..])) {
            return Err(StreamError::StreamId);
        }
        let header = setup[32..].try_into().expect("24 bytes");
        Ok(Pull::new(&self.key, header))
    }
}

/// One side of the Noise XX handshake, one message at a time: [`Handshake::start`] gives
/// the initiator's first message, then each received message may give one to send, until
/// the keys are there. (Each state is boxed: the crate's carries a 1 KiB message buffer.)
pub enum Handshake {
    /// The initiator sent its first message.
    InitiatorSent(Box<SecStream<Initiator<XX, HsMsgSent>>>),
    /// The responder waits for the first message.
    ResponderStart(Box<SecStream<Responder<XX, Start>>>),
    /// The responder answered and waits for the last message.
    ResponderAnswered(Box<SecStream<Responder<XX, ResponderXxAwaitingFinal>>>),
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handshake::InitiatorSent(_) => "Handshake::InitiatorSent",
            Handshake::ResponderStart(_) => "Handshake::ResponderStart",
            Handshake::ResponderAnswered(_) => "Handshake::ResponderAnswered",
        })
    }
}

/// What a handshake step gives.
pub enum Step {
    /// Send this message and wait for the next.
    Send(Handshake, Vec<u8>),
    /// Done: send `last` (the initiator's third message; none for the responder), then the
    /// keys' setup frame.
    Done {
        /// The handshake's last message, if it is ours.
        last: Option<Vec<u8>>,
        /// The streams.
        keys: Keys,
    },
}

fn failed(e: impl std::fmt::Display) -> StreamError {
    StreamError::Handshake(e.to_string())
}

impl Handshake {
    /// Starts a handshake: the initiator's first message to send, or a responder with a
    /// fresh key pair waiting for one.
    pub fn start(initiator: bool) -> Result<(Handshake, Option<Vec<u8>>), StreamError> {
        if initiator {
            let (sent, msg) = SecStream::<Initiator<XX, Start>>::new_initiator_xx(&[])
                .and_then(|s| s.write_msg(None))
                .map_err(failed)?;
            Ok((Handshake::InitiatorSent(Box::new(sent)), Some(msg)))
        } else {
            let keypair = hypercore_handshake::state_machine::hc_specific::generate_keypair()
                .map_err(failed)?;
            let start = SecStream::<Responder<XX, Start>>::new_responder_xx(&keypair, &[])
                .map_err(failed)?;
            Ok((Handshake::ResponderStart(Box::new(start)), None))
        }
    }

    /// Takes the peer's next handshake message.
    pub fn receive(self, msg: &[u8]) -> Result<Step, StreamError> {
        match self {
            Handshake::InitiatorSent(s) => {
                let (s, _payload): (SecStream<Initiator<XX, InitiatorXxFinalMsg>>, _) =
                    (*s).read_msg(msg).map_err(failed)?;
                let (done, last) = s.write_msg().map_err(failed)?;
                Ok(Step::Done {
                    last: Some(last),
                    keys: keys(done, true)?,
                })
            }
            Handshake::ResponderStart(s) => {
                let (s, _payload) = (*s).read_msg(msg).map_err(failed)?;
                let (s, [answer, _]) = s.write_msg(None).map_err(failed)?;
                Ok(Step::Send(
                    Handshake::ResponderAnswered(Box::new(s)),
                    answer,
                ))
            }
            Handshake::ResponderAnswered(s) => {
                let (done, _payload) = (*s).read_msg(msg).map_err(failed)?;
                Ok(Step::Done {
                    last: None,
                    keys: keys(done, false)?,
                })
            }
        }
    }
}

/// Either side's finished handshake, as the one operation both have.
trait Finished {
    fn split(&mut self) -> ([u8; 32], [u8; 32]);
    fn remote(&self) -> Option<[u8; 32]>;
    /// The handshake hash (the crate gives it once its own setup frame is made, which is
    /// dropped: ours is made here).
    fn hash(self) -> Result<Vec<u8>, StreamError>;
}

macro_rules! finished {
    ($side:ident) => {
        impl Finished for SecStream<$side<XX, HsDone>> {
            fn split(&mut self) -> ([u8; 32], [u8; 32]) {
                self.split_handshake()
            }
            fn remote(&self) -> Option<[u8; 32]> {
                self.get_remote_static()
            }
            fn hash(self) -> Result<Vec<u8>, StreamError> {
                let (ready, _setup) = self.write_msg().map_err(failed)?;
                Ok(ready.handshake_hash().to_vec())
            }
        }
    };
}
finished!(Initiator);
finished!(Responder);

fn keys(mut done: impl Finished, initiator: bool) -> Result<Keys, StreamError> {
    let (tx, rx) = done.split();
    let remote_static = done
        .remote()
        .ok_or_else(|| failed("the peer sent no static key"))?;
    let handshake_hash = done.hash()?;
    let header: [u8; HEADER_BYTES] = rand::random();
    let mut setup = Vec::with_capacity(SETUP_BYTES);
    setup.extend_from_slice(&stream_id(&handshake_hash, initiator));
    setup.extend_from_slice(&header);
    Ok(Keys {
        push: Push::new(&tx, &header),
        setup,
        pull: PullKey {
            key: rx,
            expected_id: stream_id(&handshake_hash, !initiator),
        },
        handshake_hash,
        remote_static,
    })
}

#[cfg(test)]
mod tests;
