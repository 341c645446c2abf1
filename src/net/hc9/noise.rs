//! The Noise handshake of hypercore-protocol 8, without I/O.
//!
//! `Noise_XX_25519_ChaChaPoly_BLAKE2b`, empty prologue. Every handshake message travels as
//! `varint(len) ‖ message`, and each side's payload is the protobuf `NoisePayload{nonce}`:
//! `0a 18` and the 24 bytes that, with the split key, seed the sender's transport keystream
//! (see `cipher`). The initiator's first payload is in clear text; it sends the same payload
//! again in its third message.
//!
//! ```text
//! initiator  msg1: e, payload                 →
//!                                             ←  msg2: e, ee, s, es, payload   responder
//!            msg3: s, se, payload             →
//! ```
//!
//! Neither side authenticates the other's static key: multifeed makes a fresh one per
//! connection. What proves a shared feed key is the capability (see `caps`).

use super::frame::{peek_varint, put_varint};

/// The Noise protocol name.
pub const PROTOCOL_NAME: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2b";
/// Bytes of a transport nonce.
pub const NONCE_BYTES: usize = 24;
/// The largest Noise message.
const MAX_MESSAGE: usize = 65535;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// Noise itself failed: a message that does not decrypt, a bad key.
    #[error("Noise handshake error: {0}")]
    Noise(String),
    /// A handshake message without the nonce payload.
    #[error("remote did not include a handshake payload")]
    NoPayload,
    /// The payload's nonce is not 24 bytes, or the payload does not decode.
    #[error("bad handshake payload: {0}")]
    BadPayload(String),
    /// A length prefix over the largest Noise message, or one that is not a varint.
    #[error("handshake message length out of range")]
    BadLength,
    /// Bytes given after the handshake completed.
    #[error("the handshake is already complete")]
    Finished,
}

fn noise(e: snow::Error) -> NoiseError {
    NoiseError::Noise(e.to_string())
}

/// The secrets a handshake uses. [`Secrets::random`] is what a connection uses; fixed ones
/// reproduce a recorded transcript byte for byte and are for tests only.
#[derive(Clone)]
pub struct Secrets {
    /// The X25519 static private key.
    pub static_key: [u8; 32],
    /// A fixed ephemeral private key, or `None` to draw one (always `None` on a real
    /// connection: a fixed ephemeral key gives up forward secrecy).
    pub ephemeral_key: Option<[u8; 32]>,
    /// Our transport nonce, sent in the payload.
    pub nonce: [u8; NONCE_BYTES],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

impl Secrets {
    /// A fresh static key and nonce, and a fresh ephemeral key drawn by Noise.
    pub fn random() -> Result<Self, NoiseError> {
        let keypair = builder()?.generate_keypair().map_err(noise)?;
        let static_key = keypair
            .private
            .as_slice()
            .try_into()
            .map_err(|_| NoiseError::Noise("bad static key length".into()))?;
        Ok(Secrets {
            static_key,
            ephemeral_key: None,
            nonce: rand::random(),
        })
    }
}

fn builder<'a>() -> Result<snow::Builder<'a>, NoiseError> {
    Ok(snow::Builder::new(PROTOCOL_NAME.parse().map_err(noise)?))
}

/// The two transport keys of a completed handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct Split {
    /// Key of what we send.
    pub tx: [u8; 32],
    /// Key of what we receive.
    pub rx: [u8; 32],
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split").finish_non_exhaustive()
    }
}

/// What a completed handshake gives the transport.
#[derive(Debug, Clone)]
pub struct Established {
    /// Whether we sent the first message.
    pub initiator: bool,
    /// The transport keys.
    pub split: Split,
    /// Our nonce: with `split.tx`, it keys what we send.
    pub local_nonce: [u8; NONCE_BYTES],
    /// The peer's nonce: with `split.rx`, it keys what we receive.
    pub remote_nonce: [u8; NONCE_BYTES],
    /// The peer's static public key.
    pub remote_static: [u8; 32],
    /// The Noise handshake hash (64 bytes), the same on both sides.
    pub handshake_hash: Vec<u8>,
    /// Bytes received after the last handshake message: the start of the encrypted stream.
    pub overflow: Vec<u8>,
}

/// One side of the handshake, as a state machine.
///
/// Call [`Handshake::take_send`] after creating it and after every [`Handshake::receive`],
/// and send what it gives; `receive` gives the [`Established`] connection once the handshake
/// is complete (the initiator's last message is then still to be taken and sent).
pub struct Handshake {
    state: Box<snow::HandshakeState>,
    initiator: bool,
    nonce: [u8; NONCE_BYTES],
    remote_nonce: Option<[u8; NONCE_BYTES]>,
    received: Vec<u8>,
    send: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.initiator)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// The NoisePayload: field 1, 24 bytes.
fn encode_payload(nonce: &[u8; NONCE_BYTES]) -> Vec<u8> {
    let mut out = vec![0x0a, NONCE_BYTES as u8];
    out.extend_from_slice(nonce);
    out
}

fn decode_payload(payload: &[u8]) -> Result<[u8; NONCE_BYTES], NoiseError> {
    if payload.is_empty() {
        return Err(NoiseError::NoPayload);
    }
    let nonce = super::message::bytes_field(payload, 1)
        .map_err(|e| NoiseError::BadPayload(e.to_string()))?
        .ok_or_else(|| NoiseError::BadPayload("no nonce".into()))?;
    nonce
        .as_slice()
        .try_into()
        .map_err(|_| NoiseError::BadPayload(format!("a nonce of {} bytes", nonce.len())))
}

impl Handshake {
    /// A handshake with fresh secrets; `initiator` is the side that dialed.
    pub fn new(initiator: bool) -> Result<Self, NoiseError> {
        Self::with_secrets(initiator, Secrets::random()?)
    }

    /// A handshake with the given secrets.
    pub fn with_secrets(initiator: bool, secrets: Secrets) -> Result<Self, NoiseError> {
        let b = builder()?
            .local_private_key(&secrets.static_key)
            .map_err(noise)?;
        let b = match &secrets.ephemeral_key {
            Some(e) => b.fixed_ephemeral_key_for_testing_only(e),
            None => b,
        };
        let state = if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .map_err(noise)?;
        let mut hs = Handshake {
            state: Box::new(state),
            initiator,
            nonce: secrets.nonce,
            remote_nonce: None,
            received: Vec::new(),
            send: Vec::new(),
            done: false,
        };
        if initiator {
            hs.write()?;
        }
        Ok(hs)
    }

    /// Whether we sent the first message.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Bytes to send now (empty if nothing).
    pub fn take_send(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.send)
    }

    /// Takes received bytes, in pieces of any size; gives the connection once complete.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Option<Established>, NoiseError> {
        if self.done {
            return Err(NoiseError::Finished);
        }
        self.received.extend_from_slice(bytes);
        loop {
            let (len, n) = match peek_varint(&self.received) {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(None),
                Err(_) => return Err(NoiseError::BadLength),
            };
            if len > MAX_MESSAGE as u64 {
                return Err(NoiseError::BadLength);
            }
            let end = n + len as usize;
            if self.received.len() < end {
                return Ok(None);
            }
            let message: Vec<u8> = self.received[n..end].to_vec();
            self.received.drain(..end);
            let mut payload = vec![0u8; MAX_MESSAGE];
            let got = self
                .state
                .read_message(&message, &mut payload)
                .map_err(noise)?;
            self.remote_nonce = Some(decode_payload(&payload[..got])?);
            if !self.state.is_handshake_finished() {
                self.write()?;
            }
            if self.state.is_handshake_finished() {
                return self.finish().map(Some);
            }
        }
    }

    /// Writes our next message into the send buffer.
    fn write(&mut self) -> Result<(), NoiseError> {
        let mut message = vec![0u8; MAX_MESSAGE];
        let n = self
            .state
            .write_message(&encode_payload(&self.nonce), &mut message)
            .map_err(noise)?;
        put_varint(&mut self.send, n as u64);
        self.send.extend_from_slice(&message[..n]);
        Ok(())
    }

    fn finish(&mut self) -> Result<Established, NoiseError> {
        self.done = true;
        let remote_static = self
            .state
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| NoiseError::Noise("no remote static key".into()))?;
        let remote_nonce = self.remote_nonce.ok_or(NoiseError::NoPayload)?;
        let handshake_hash = self.state.get_handshake_hash().to_vec();
        // Snow gives (initiator → responder, responder → initiator).
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        let split = if self.initiator {
            Split { tx: i2r, rx: r2i }
        } else {
            Split { tx: r2i, rx: i2r }
        };
        Ok(Established {
            initiator: self.initiator,
            split,
            local_nonce: self.nonce,
            remote_nonce,
            remote_static,
            handshake_hash,
            overflow: std::mem::take(&mut self.received),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a handshake between two sides, handing bytes over in pieces of `chunk`.
    fn run(chunk: usize) -> (Established, Established, Vec<usize>) {
        let mut i = Handshake::new(true).unwrap();
        let mut r = Handshake::new(false).unwrap();
        assert!(r.take_send().is_empty());
        let (mut di, mut dr) = (None, None);
        let mut sizes = Vec::new();
        let mut to_r = i.take_send();
        while di.is_none() || dr.is_none() {
            sizes.push(to_r.len());
            for piece in to_r.chunks(chunk) {
                if let Some(e) = r.receive(piece).unwrap() {
                    dr = Some(e);
                }
            }
            let to_i = r.take_send();
            if to_i.is_empty() {
                break;
            }
            sizes.push(to_i.len());
            for piece in to_i.chunks(chunk) {
                if let Some(e) = i.receive(piece).unwrap() {
                    di = Some(e);
                }
            }
            to_r = i.take_send();
        }
        (di.unwrap(), dr.unwrap(), sizes)
    }

    #[test]
    fn both_sides_agree_on_keys_and_nonces() {
        for chunk in [1, 5, 1000] {
            let (i, r, sizes) = run(chunk);
            // Messages as every capture has them: 3a+58, 7a+122, 5a+90.
            assert_eq!(sizes, [59, 123, 91]);
            assert!(i.initiator && !r.initiator);
            assert_eq!(i.split.tx, r.split.rx);
            assert_eq!(i.split.rx, r.split.tx);
            assert_ne!(i.split.tx, i.split.rx);
            assert_eq!(i.local_nonce, r.remote_nonce);
            assert_eq!(i.remote_nonce, r.local_nonce);
            assert_eq!(i.handshake_hash, r.handshake_hash);
            assert_eq!(i.handshake_hash.len(), 64);
            assert!(i.overflow.is_empty() && r.overflow.is_empty());
        }
    }

    #[test]
    fn bytes_after_the_last_message_are_handed_over() {
        let mut i = Handshake::new(true).unwrap();
        let mut r = Handshake::new(false).unwrap();
        assert_eq!(r.receive(&i.take_send()).unwrap().map(|_| ()), None);
        let done = i.receive(&r.take_send()).unwrap().unwrap();
        let mut last = i.take_send();
        last.extend_from_slice(b"\x01\x02\x03");
        let got = r.receive(&last).unwrap().unwrap();
        assert_eq!(got.overflow, b"\x01\x02\x03");
        assert_eq!(got.remote_static.len(), 32);
        assert_eq!(done.split.tx, got.split.rx);
        assert_eq!(r.receive(b"x").unwrap_err(), NoiseError::Finished);
    }

    fn responder_error(first: &[u8]) -> NoiseError {
        Handshake::new(false).unwrap().receive(first).unwrap_err()
    }

    #[test]
    fn bad_first_messages_are_errors() {
        // A clear-text payload that is empty, has no nonce, or a short one.
        let e = [7u8; 32];
        let with = |payload: &[u8]| {
            let mut m = vec![(32 + payload.len()) as u8];
            m.extend_from_slice(&e);
            m.extend_from_slice(payload);
            m
        };
        assert_eq!(responder_error(&with(b"")), NoiseError::NoPayload);
        assert!(matches!(
            responder_error(&with(b"\x10\x01")),
            NoiseError::BadPayload(_)
        ));
        assert!(matches!(
            responder_error(&with(b"\x0a\x02ab")),
            NoiseError::BadPayload(_)
        ));
        assert!(matches!(
            responder_error(&with(b"\x0a\x30")),
            NoiseError::BadPayload(_)
        ));
        // Too short for a key, too long to be Noise, not a varint.
        assert!(matches!(responder_error(b"\x02ab"), NoiseError::Noise(_)));
        assert_eq!(responder_error(b"\x80\x80\x04"), NoiseError::BadLength);
        assert_eq!(responder_error(&[0xff; 11]), NoiseError::BadLength);
    }

    #[test]
    fn a_tampered_second_message_fails() {
        let mut i = Handshake::new(true).unwrap();
        let mut r = Handshake::new(false).unwrap();
        r.receive(&i.take_send()).unwrap();
        let mut msg2 = r.take_send();
        let last = msg2.len() - 1;
        msg2[last] ^= 1;
        assert!(matches!(i.receive(&msg2), Err(NoiseError::Noise(_))));
    }
}
