//! Discovery keys and channel capabilities of hypercore-protocol 8 (`hypercore-crypto` 2).
//!
//! ```text
//! discoveryKey(key)     = BLAKE2b-256(key = key,      "hypercore")
//! capability(key)       = BLAKE2b-256(key = split.rx, "hypercore capability" ‖ split.tx ‖ key)
//! remoteCapability(key) = BLAKE2b-256(key = split.tx, "hypercore capability" ‖ split.rx ‖ key)
//! ```
//!
//! An Open carries the sender's capability for the feed instead of the feed key: it proves
//! that the sender knows the key, and is bound to this connection's split keys. Unlike
//! hypercore 10, nothing but the split distinguishes the two sides.

use super::noise::Split;
use crate::net::keyed_hash as keyed;

const CAPABILITY: &[u8] = b"hypercore capability";

/// The discovery key of a feed key: what an Open names instead of the key. The same formula
/// as hypercore 10's.
pub fn discovery_key(key: &[u8; 32]) -> [u8; 32] {
    keyed(key, &[b"hypercore"])
}

impl Split {
    /// The capability we send in our Open of the feed `key`.
    pub fn capability(&self, key: &[u8; 32]) -> [u8; 32] {
        keyed(&self.rx, &[CAPABILITY, &self.tx, key])
    }

    /// The capability the peer must send in its Open of the feed `key`.
    pub fn remote_capability(&self, key: &[u8; 32]) -> [u8; 32] {
        keyed(&self.tx, &[CAPABILITY, &self.rx, key])
    }

    /// Whether a remote Open's capability proves knowledge of `key`. An Open without one
    /// proves nothing, as in JavaScript's `remoteVerified`.
    pub fn verify_remote_capability(&self, key: &[u8; 32], capability: Option<&[u8]>) -> bool {
        capability == Some(&self.remote_capability(key)[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn discovery_keys_are_the_same_as_hypercore_10s() {
        for key in [[0u8; 32], [7; 32], h32(MULTIFEED_DEFAULT_KEY)] {
            assert_eq!(discovery_key(&key), hypercore_protocol::discovery_key(&key));
        }
        assert_eq!(
            hex::encode(discovery_key(&h32(MULTIFEED_DEFAULT_KEY))),
            "c00174c731c721561cf1a8e7457f88d071d8d6b12b42dd7a8b73b254c153d472"
        );
    }

    const MULTIFEED_DEFAULT_KEY: &str =
        "bee80ff3a4ee5e727dc44197cb9d25bf8f19d50b0f3ad2984cfe5b7d14e75de7";

    #[test]
    fn a_captured_session_checks_out_both_ways() {
        // Two real multifeed 6 peers with no feeds, on the default key: each side's transport
        // key as decrypted from the capture, and the capability each sent in its root Open.
        let a = Split {
            tx: h32("0bf45e61baf74df95bf85f296ba6033f128389fca6df8ce293bddf368ce1bf71"),
            rx: h32("8c4bdcfff85290b4827842cb5b305a2c02deae4f5b2db984800aa8f2758813c7"),
        };
        let b = Split { tx: a.rx, rx: a.tx };
        let key = h32(MULTIFEED_DEFAULT_KEY);
        let a_cap = h32("dc76520cdb717a9006e99d8adac2cea8b852b1cfbeaa37495375392abdf78c34");
        let b_cap = h32("100b93f095c1a6b0416f3bdbf0f7b8528ba48a2dcb42709074903d3d544b37e1");
        assert_eq!(a.capability(&key), a_cap);
        assert_eq!(b.capability(&key), b_cap);
        assert!(a.verify_remote_capability(&key, Some(&b_cap)));
        assert!(b.verify_remote_capability(&key, Some(&a_cap)));
        // Not our own, not another key's, not a missing or short one.
        assert!(!a.verify_remote_capability(&key, Some(&a_cap)));
        assert!(!a.verify_remote_capability(&[1; 32], Some(&b_cap)));
        assert!(!a.verify_remote_capability(&key, None));
        assert!(!a.verify_remote_capability(&key, Some(&b_cap[..31])));
    }
}
