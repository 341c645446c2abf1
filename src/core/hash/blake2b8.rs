//! BLAKE2b-256 of up to eight messages of one length at once, with AVX-512.
//!
//! Each 512-bit register holds one of the sixteen working words for eight messages, so a
//! round of the compression is the scalar round on eight lanes, with AVX-512's own 64-bit
//! rotations (AVX2 has none, and `blake2b_simd` computes four lanes with shuffles and
//! shifts). A block's sixteen message words are gathered from the eight messages, which lie
//! at a fixed distance from each other; the last, partial block of each is copied into a
//! zeroed block first. The messages share a length, so they share the byte counter and the
//! last-block flag.

use std::arch::x86_64::{
    __m512i, _mm512_add_epi64, _mm512_i64gather_epi64, _mm512_ror_epi64, _mm512_set1_epi64,
    _mm512_setr_epi64, _mm512_storeu_si512, _mm512_xor_si512,
};

use super::Hash;

const IV: [u64; 8] = [
    0x6a09_e667_f3bc_c908,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
    0xa54f_f53a_5f1d_36f1,
    0x510e_527f_ade6_82d1,
    0x9b05_688c_2b3e_6c1f,
    0x1f83_d9ab_fb41_bd6b,
    0x5be0_cd19_137e_2179,
];

/// The message word order of each round (RFC 7693); rounds 10 and 11 repeat 0 and 1.
const SIGMA: [[usize; 16]; 12] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
];

const BLOCK: usize = 128;

/// Whether this CPU has the instructions.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The mixing function on lanes `a`, `b`, `c`, `d` of `v` with message words `x` and `y`.
#[inline]
#[target_feature(enable = "avx512f")]
fn g(v: &mut [__m512i; 16], [a, b, c, d]: [usize; 4], x: __m512i, y: __m512i) {
    v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), x);
    v[d] = _mm512_ror_epi64::<32>(_mm512_xor_si512(v[d], v[a]));
    v[c] = _mm512_add_epi64(v[c], v[d]);
    v[b] = _mm512_ror_epi64::<24>(_mm512_xor_si512(v[b], v[c]));
    v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), y);
    v[d] = _mm512_ror_epi64::<16>(_mm512_xor_si512(v[d], v[a]));
    v[c] = _mm512_add_epi64(v[c], v[d]);
    v[b] = _mm512_ror_epi64::<63>(_mm512_xor_si512(v[b], v[c]));
}

/// One compression of eight lanes: `counted` bytes of each message so far, this block's
/// included; `last` for the final block.
#[inline]
#[target_feature(enable = "avx512f")]
fn compress(h: &mut [__m512i; 8], m: &[__m512i; 16], counted: u64, last: bool) {
    let iv = IV.map(|w| _mm512_set1_epi64(w as i64));
    let mut v = [
        h[0],
        h[1],
        h[2],
        h[3],
        h[4],
        h[5],
        h[6],
        h[7],
        iv[0],
        iv[1],
        iv[2],
        iv[3],
        _mm512_xor_si512(iv[4], _mm512_set1_epi64(counted as i64)),
        iv[5],
        if last {
            _mm512_xor_si512(iv[6], _mm512_set1_epi64(-1))
        } else {
            iv[6]
        },
        iv[7],
    ];
    for s in &SIGMA {
        g(&mut v, [0, 4, 8, 12], m[s[0]], m[s[1]]);
        g(&mut v, [1, 5, 9, 13], m[s[2]], m[s[3]]);
        g(&mut v, [2, 6, 10, 14], m[s[4]], m[s[5]]);
        g(&mut v, [3, 7, 11, 15], m[s[6]], m[s[7]]);
        g(&mut v, [0, 5, 10, 15], m[s[8]], m[s[9]]);
        g(&mut v, [1, 6, 11, 12], m[s[10]], m[s[11]]);
        g(&mut v, [2, 7, 8, 13], m[s[12]], m[s[13]]);
        g(&mut v, [3, 4, 9, 14], m[s[14]], m[s[15]]);
    }
    for i in 0..8 {
        h[i] = _mm512_xor_si512(h[i], _mm512_xor_si512(v[i], v[i + 8]));
    }
}

/// The sixteen words of a block of each lane: lane `j`'s at `base + offsets[j]`.
///
/// # Safety
/// Each lane's 128 bytes must be readable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gather(base: *const u8, offsets: __m512i) -> [__m512i; 16] {
    std::array::from_fn(|w| {
        let at = _mm512_add_epi64(offsets, _mm512_set1_epi64(8 * w as i64));
        // SAFETY: the caller's promise; gathers need no alignment.
        unsafe { _mm512_i64gather_epi64::<1>(at, base.cast()) }
    })
}

/// The BLAKE2b-256 digests of `count` messages (1 to 8) of `len` bytes each, message `j` at
/// `j * stride` in `bytes`; the digests past `count` are not meaningful.
///
/// # Safety
/// The CPU must have AVX-512F ([`available`]).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn hash(bytes: &[u8], stride: usize, len: usize, count: usize) -> [Hash; 8] {
    assert!((1..=8).contains(&count));
    assert!(
        bytes.len() >= (count - 1) * stride + len,
        "the messages lie in `bytes`"
    );
    // Lanes past `count` hash the first message again.
    let lane = |j: usize| if j < count { (j * stride) as i64 } else { 0 };
    let offsets = _mm512_setr_epi64(
        lane(0),
        lane(1),
        lane(2),
        lane(3),
        lane(4),
        lane(5),
        lane(6),
        lane(7),
    );
    // Parameters: a 32-byte digest, no key, fanout and depth 1.
    let mut h = IV.map(|w| _mm512_set1_epi64(w as i64));
    h[0] = _mm512_xor_si512(h[0], _mm512_set1_epi64(0x0101_0020));
    // Every block but the last whole; the last one (possibly all of the message) padded.
    let blocks = len.div_ceil(BLOCK).max(1);
    for b in 0..blocks - 1 {
        let at = _mm512_add_epi64(offsets, _mm512_set1_epi64((b * BLOCK) as i64));
        // SAFETY: block `b` ends before the last block begins, within each message.
        let m = unsafe { gather(bytes.as_ptr(), at) };
        compress(&mut h, &m, ((b + 1) * BLOCK) as u64, false);
    }
    let from = (blocks - 1) * BLOCK;
    let mut tails = [[0u8; BLOCK]; 8];
    for (j, tail) in tails.iter_mut().enumerate().take(count) {
        let start = j * stride + from;
        tail[..len - from].copy_from_slice(&bytes[start..j * stride + len]);
    }
    let per_lane = _mm512_setr_epi64(0, 128, 256, 384, 512, 640, 768, 896);
    // SAFETY: eight blocks of 128 bytes; lanes past `count` read a zeroed one.
    let m = unsafe { gather(tails.as_ptr().cast(), per_lane) };
    compress(&mut h, &m, len as u64, true);
    let mut words = [[0u64; 8]; 4];
    for (word, lanes) in words.iter_mut().enumerate() {
        // SAFETY: eight u64s; an unaligned store.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), h[word]) };
    }
    std::array::from_fn(|j| {
        let mut digest = [0u8; 32];
        for (word, lanes) in words.iter().enumerate() {
            digest[8 * word..8 * word + 8].copy_from_slice(&lanes[j].to_le_bytes());
        }
        digest
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn theirs(message: &[u8]) -> Hash {
        let digest = blake2b_simd::Params::new().hash_length(32).hash(message);
        digest.as_bytes().try_into().unwrap()
    }

    proptest! {
        /// Each lane's digest is `blake2b_simd`'s of its message, for any length (across
        /// block boundaries), distance between messages and number of them.
        #[test]
        fn eight_lanes_hash_as_blake2b_simd_does(
            len in 0usize..700,
            gap in 0usize..40,
            count in 1usize..=8,
            seed in any::<u64>(),
        ) {
            if !available() {
                return Ok(());
            }
            let stride = len + gap;
            let bytes = crate::noise(seed, (count - 1) * stride + len);
            // SAFETY: `available` found AVX-512F.
            let ours = unsafe { hash(&bytes, stride, len, count) };
            for (j, digest) in ours.iter().enumerate().take(count) {
                prop_assert_eq!(*digest, theirs(&bytes[j * stride..j * stride + len]), "lane {}", j);
            }
        }
    }

    #[test]
    fn the_empty_message_and_exact_blocks() {
        if !available() {
            return;
        }
        for len in [0, 1, 127, 128, 129, 256, 1033] {
            let bytes = vec![0xa5u8; 8 * len];
            // SAFETY: `available` found AVX-512F.
            let ours = unsafe { hash(&bytes, len, len, 8) };
            for digest in ours {
                assert_eq!(digest, theirs(&bytes[..len]), "{len} bytes");
            }
        }
    }

    #[test]
    fn from_ivs_known_digest() {
        // BLAKE2b-256 of "abc".
        if !available() {
            return;
        }
        // SAFETY: `available` found AVX-512F.
        let ours = unsafe { hash(b"abc", 3, 3, 1) };
        assert_eq!(
            hex::encode(ours[0]),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
    }
}
