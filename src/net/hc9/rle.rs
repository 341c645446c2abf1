//! The run-length encoding of the bitfields in hypercore 9's `Have` messages
//! (`bitfield-rle`): a sequence of varints, each either a run of equal bytes or a literal.
//!
//! - `v & 1 == 1`: a run of `v >> 2` bytes, all `0xff` if `v & 2`, else all `0x00`;
//! - `v & 1 == 0`: a literal: the next `v >> 1` bytes as they are.
//!
//! Bits are most significant first: block `i` is `byte[i / 8] & (0x80 >> (i % 8))`.

use super::frame::{put_varint, read_varint};

/// Why a received bitfield was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    /// The encoding is cut short or a varint is out of range.
    #[error("the bitfield's encoding is malformed")]
    Malformed,
    /// It decodes to more bytes than the limit.
    #[error("the bitfield decodes to more than {0} bytes")]
    TooLarge(usize),
}

/// Shortest run worth encoding as a run rather than inside a literal.
const MIN_RUN: usize = 4;

/// Encodes `bytes`; trailing zero bytes are left out (a receiver reads missing bytes as 0).
pub fn encode(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    let mut out = Vec::new();
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let run = if b == 0 || b == 0xff {
            bytes[i..].iter().take_while(|&&x| x == b).count()
        } else {
            0
        };
        if run >= MIN_RUN {
            put_literal(&mut out, &bytes[literal_start..i]);
            put_varint(&mut out, (run as u64) << 2 | u64::from(b == 0xff) << 1 | 1);
            i += run;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    put_literal(&mut out, &bytes[literal_start..]);
    out
}

fn put_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_varint(out, (bytes.len() as u64) << 1);
        out.extend_from_slice(bytes);
    }
}

/// Decodes `encoded` into at most `max_bytes` bytes.
pub fn decode(mut encoded: &[u8], max_bytes: usize) -> Result<Vec<u8>, RleError> {
    let mut out = Vec::new();
    while !encoded.is_empty() {
        let v = read_varint(&mut encoded).map_err(|_| RleError::Malformed)?;
        let n = if v & 1 == 1 { v >> 2 } else { v >> 1 };
        let n = usize::try_from(n).map_err(|_| RleError::TooLarge(max_bytes))?;
        if out.len().saturating_add(n) > max_bytes {
            return Err(RleError::TooLarge(max_bytes));
        }
        if v & 1 == 1 {
            let fill = if v & 2 == 2 { 0xff } else { 0 };
            out.resize(out.len() + n, fill);
        } else {
            let literal = encoded.get(..n).ok_or(RleError::Malformed)?;
            out.extend_from_slice(literal);
            encoded = &encoded[n..];
        }
    }
    Ok(out)
}

/// Whether bit `i` is set in a decoded bitfield.
pub fn bit(bytes: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|b| bytes.get(b))
        .is_some_and(|byte| byte & (0x80 >> (i % 8)) != 0)
}

/// Sets bit `i` of a bitfield being built.
pub fn set_bit(bytes: &mut [u8], i: u64) {
    bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bitfield_survives_encoding() {
        let mut bits = vec![0u8; 300];
        for i in (0..2400).filter(|i| i % 7 == 0 || (800..1600).contains(i)) {
            set_bit(&mut bits, i);
        }
        let encoded = encode(&bits);
        // The 100 bytes of 0xff become one varint.
        assert!(encoded.len() < bits.len() - 90, "runs are encoded as runs");
        let decoded = decode(&encoded, 1000).unwrap();
        assert_eq!(decoded[..], bits[..decoded.len()]);
        assert!(bits[decoded.len()..].iter().all(|&b| b == 0));
        for i in 0..2400 {
            assert_eq!(bit(&decoded, i), bit(&bits, i), "bit {i}");
        }
    }

    #[test]
    fn the_javascript_encoding_of_a_short_feed_decodes() {
        // What hypercore 9 sent for a one-block feed in a recorded Cabal session.
        assert_eq!(decode(&[0x02, 0x80], 16).unwrap(), vec![0x80]);
        assert!(bit(&[0x80], 0) && !bit(&[0x80], 1));
    }

    #[test]
    fn absurd_or_broken_bitfields_are_refused() {
        // A run of 2^40 bytes of 0xff.
        let mut huge = Vec::new();
        put_varint(&mut huge, (1u64 << 40) << 2 | 3);
        assert_eq!(decode(&huge, 1 << 20), Err(RleError::TooLarge(1 << 20)));
        // A literal longer than what follows.
        assert_eq!(decode(&[0x08, 1, 2], 64), Err(RleError::Malformed));
        // A varint cut short.
        assert_eq!(decode(&[0x80], 64), Err(RleError::Malformed));
    }
}
