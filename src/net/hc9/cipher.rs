//! The transport of hypercore-protocol 8: one continuous XSalsa20 keystream per direction.
//!
//! A sender's stream is keyed by its split key and its own handshake nonce, and starts with
//! the first byte after its last handshake message. It covers every byte after that,
//! keep-alives included, and is never reset or rekeyed. There is no MAC: a tampered byte
//! decrypts to a wrong byte, and only the frames' own checks (protobuf, proofs, signatures)
//! notice.

use super::noise::{Established, NONCE_BYTES};
use crate::net::arx::XSalsa20;

/// One direction's keystream; encrypting and decrypting are the same operation.
pub struct Keystream {
    cipher: XSalsa20,
    offset: u64,
}

impl std::fmt::Debug for Keystream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystream")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Keystream {
    /// The keystream of `key` and `nonce`, from its start.
    pub fn new(key: &[u8; 32], nonce: &[u8; NONCE_BYTES]) -> Self {
        Keystream {
            cipher: XSalsa20::new(key, nonce),
            offset: 0,
        }
    }

    /// XORs the next `data.len()` bytes of the keystream into `data`.
    pub fn apply(&mut self, data: &mut [u8]) {
        self.cipher.apply(data);
        self.offset += data.len() as u64;
    }

    /// Bytes of the keystream used so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Established {
    /// The keystreams of this connection: (what we send, what we receive).
    pub fn keystreams(&self) -> (Keystream, Keystream) {
        (
            Keystream::new(&self.split.tx, &self.local_nonce),
            Keystream::new(&self.split.rx, &self.remote_nonce),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_continuous_across_pieces() {
        let (key, nonce) = ([3u8; 32], [4u8; NONCE_BYTES]);
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut whole = plain.clone();
        Keystream::new(&key, &nonce).apply(&mut whole);
        assert_ne!(whole, plain);
        let mut pieces = plain.clone();
        let mut ks = Keystream::new(&key, &nonce);
        for c in pieces.chunks_mut(13) {
            ks.apply(c);
        }
        assert_eq!(pieces, whole);
        assert_eq!(ks.offset(), 1000);
        Keystream::new(&key, &nonce).apply(&mut pieces);
        assert_eq!(pieces, plain);
    }

    #[test]
    fn what_one_side_sends_the_other_reads() {
        use crate::net::hc9::Handshake;
        let mut i = Handshake::new(true).unwrap();
        let mut r = Handshake::new(false).unwrap();
        r.receive(&i.take_send()).unwrap();
        let a = i.receive(&r.take_send()).unwrap().unwrap();
        let b = r.receive(&i.take_send()).unwrap().unwrap();
        let ((mut a_tx, mut a_rx), (mut b_tx, mut b_rx)) = (a.keystreams(), b.keystreams());
        for (tx, rx) in [(&mut a_tx, &mut b_rx), (&mut b_tx, &mut a_rx)] {
            for msg in [&b"\x00"[..], b"hello", &[9; 300]] {
                let mut wire = msg.to_vec();
                tx.apply(&mut wire);
                // A one-byte message stays the same once in 256 keystreams.
                if msg.len() > 1 {
                    assert_ne!(wire, msg);
                }
                rx.apply(&mut wire);
                assert_eq!(wire, msg);
            }
        }
        // The two directions use different keystreams.
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.keystreams().0.apply(&mut x);
        b.keystreams().0.apply(&mut y);
        assert_ne!(x, y);
    }
}
