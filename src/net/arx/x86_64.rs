//! The x86-64 kernels: Salsa20's and ChaCha20's rounds on SSE2's four lanes, AVX2's eight
//! and AVX-512's sixteen, written with the vector instructions themselves (the compiler does
//! not find them in the portable lane arrays on its own), and the keystream turned from
//! lanes back into blocks with shuffles.

use std::arch::x86_64::*;

use super::{counters, Core};

/// Salsa20's and ChaCha20's rounds for one vector type, as `super` has them for lane arrays.
/// The module supplies `rotl::<LEFT, RIGHT>`, a rotation left by `LEFT` (`RIGHT = 32 - LEFT`).
macro_rules! rounds {
    ($feature:literal, $v:ty, $add:ident, $xor:ident) => {
        /// `t ^ ((a + b) <<< LEFT)`.
        #[inline]
        #[target_feature(enable = $feature)]
        fn step<const LEFT: i32, const RIGHT: i32>(t: $v, a: $v, b: $v) -> $v {
            $xor(t, rotl::<LEFT, RIGHT>($add(a, b)))
        }

        #[inline]
        #[target_feature(enable = $feature)]
        fn quarter(x: &mut [$v; 16], a: usize, b: usize, c: usize, d: usize) {
            x[b] = step::<7, 25>(x[b], x[a], x[d]);
            x[c] = step::<9, 23>(x[c], x[b], x[a]);
            x[d] = step::<13, 19>(x[d], x[c], x[b]);
            x[a] = step::<18, 14>(x[a], x[d], x[c]);
        }

        /// ChaCha20's quarter round.
        #[inline]
        #[target_feature(enable = $feature)]
        fn chacha_quarter(x: &mut [$v; 16], a: usize, b: usize, c: usize, d: usize) {
            x[a] = $add(x[a], x[b]);
            x[d] = rotl::<16, 16>($xor(x[d], x[a]));
            x[c] = $add(x[c], x[d]);
            x[b] = rotl::<12, 20>($xor(x[b], x[c]));
            x[a] = $add(x[a], x[b]);
            x[d] = rotl::<8, 24>($xor(x[d], x[a]));
            x[c] = $add(x[c], x[d]);
            x[b] = rotl::<7, 25>($xor(x[b], x[c]));
        }

        /// The twenty rounds of `core`, then the input added back: the keystream, one word a
        /// vector.
        #[inline]
        #[target_feature(enable = $feature)]
        fn keystream(core: Core, start: &[$v; 16]) -> [$v; 16] {
            let mut x = *start;
            match core {
                Core::Salsa => {
                    for _ in 0..10 {
                        quarter(&mut x, 0, 4, 8, 12);
                        quarter(&mut x, 5, 9, 13, 1);
                        quarter(&mut x, 10, 14, 2, 6);
                        quarter(&mut x, 15, 3, 7, 11);
                        quarter(&mut x, 0, 1, 2, 3);
                        quarter(&mut x, 5, 6, 7, 4);
                        quarter(&mut x, 10, 11, 8, 9);
                        quarter(&mut x, 15, 12, 13, 14);
                    }
                }
                Core::ChaCha => {
                    for _ in 0..10 {
                        chacha_quarter(&mut x, 0, 4, 8, 12);
                        chacha_quarter(&mut x, 1, 5, 9, 13);
                        chacha_quarter(&mut x, 2, 6, 10, 14);
                        chacha_quarter(&mut x, 3, 7, 11, 15);
                        chacha_quarter(&mut x, 0, 5, 10, 15);
                        chacha_quarter(&mut x, 1, 6, 11, 12);
                        chacha_quarter(&mut x, 2, 7, 8, 13);
                        chacha_quarter(&mut x, 3, 4, 9, 14);
                    }
                }
            }
            for (x, s) in x.iter_mut().zip(start) {
                *x = $add(*x, *s);
            }
            x
        }
    };
}

/// Four blocks at a time in 128-bit vectors; SSE2 is part of x86-64.
pub mod sse2 {
    use super::*;

    rounds!("sse2", __m128i, _mm_add_epi32, _mm_xor_si128);

    #[inline]
    #[target_feature(enable = "sse2")]
    fn rotl<const LEFT: i32, const RIGHT: i32>(s: __m128i) -> __m128i {
        _mm_or_si128(_mm_slli_epi32::<LEFT>(s), _mm_srli_epi32::<RIGHT>(s))
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn xor_into(out: &mut [u8], v: __m128i) {
        let out: &mut [u8; 16] = out.try_into().expect("16 bytes");
        let p = out.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `p` points to 16 bytes that `out` lends us; the accesses are unaligned.
        unsafe { _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), v)) };
    }

    /// XORs `core`'s blocks `counter .. counter + 4` of `input` into `out`.
    #[target_feature(enable = "sse2")]
    pub fn xor_blocks(core: Core, input: &[u32; 16], counter: u64, out: &mut [[u8; 64]; 4]) {
        let mut start = [_mm_setzero_si128(); 16];
        for (v, w) in start.iter_mut().zip(input) {
            *v = _mm_set1_epi32(*w as i32);
        }
        let at = core.counter_words();
        for (v, words) in start[at].iter_mut().zip(counters::<4>(counter)) {
            let [a, b, c, d] = words.map(|w| w as i32);
            *v = _mm_setr_epi32(a, b, c, d);
        }
        let x = keystream(core, &start);
        // Words 4g..4g+4 of the four blocks, transposed into four rows of one block each.
        for g in 0..4 {
            let [a, b, c, d] = [x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]];
            let (ab_low, ab_high) = (_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
            let (cd_low, cd_high) = (_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
            let rows = [
                _mm_unpacklo_epi64(ab_low, cd_low),
                _mm_unpackhi_epi64(ab_low, cd_low),
                _mm_unpacklo_epi64(ab_high, cd_high),
                _mm_unpackhi_epi64(ab_high, cd_high),
            ];
            for (block, row) in out.iter_mut().zip(rows) {
                xor_into(&mut block[16 * g..16 * g + 16], row);
            }
        }
    }
}

/// Eight blocks at a time in 256-bit vectors, for CPUs that have AVX2.
pub mod avx2 {
    use super::*;

    rounds!("avx2", __m256i, _mm256_add_epi32, _mm256_xor_si256);

    /// Rotations by whole bytes (ChaCha20's 16 and 8) are one byte shuffle.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rotl<const LEFT: i32, const RIGHT: i32>(s: __m256i) -> __m256i {
        match LEFT {
            16 => _mm256_shuffle_epi8(
                s,
                _mm256_setr_epi8(
                    2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5,
                    10, 11, 8, 9, 14, 15, 12, 13,
                ),
            ),
            8 => _mm256_shuffle_epi8(
                s,
                _mm256_setr_epi8(
                    3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5, 6,
                    11, 8, 9, 10, 15, 12, 13, 14,
                ),
            ),
            _ => _mm256_or_si256(_mm256_slli_epi32::<LEFT>(s), _mm256_srli_epi32::<RIGHT>(s)),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor_into(out: &mut [u8], v: __m256i) {
        let out: &mut [u8; 32] = out.try_into().expect("32 bytes");
        let p = out.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `p` points to 32 bytes that `out` lends us; the accesses are unaligned.
        unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), v)) };
    }

    /// XORs `core`'s blocks `counter .. counter + 8` of `input` into `out`.
    #[target_feature(enable = "avx2")]
    pub fn xor_blocks(core: Core, input: &[u32; 16], counter: u64, out: &mut [[u8; 64]; 8]) {
        let mut start = [_mm256_setzero_si256(); 16];
        for (v, w) in start.iter_mut().zip(input) {
            *v = _mm256_set1_epi32(*w as i32);
        }
        let at = core.counter_words();
        for (v, words) in start[at].iter_mut().zip(counters::<8>(counter)) {
            let [a, b, c, d, e, f, g, h] = words.map(|w| w as i32);
            *v = _mm256_setr_epi32(a, b, c, d, e, f, g, h);
        }
        let x = keystream(core, &start);
        // As in SSE2, within each 128-bit half: `rows[g][k]` holds words 4g..4g+4 of block
        // k in its low half and of block k + 4 in its high half.
        let mut rows = [[_mm256_setzero_si256(); 4]; 4];
        for (g, row) in rows.iter_mut().enumerate() {
            let [a, b, c, d] = [x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]];
            let (ab_low, ab_high) = (_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
            let (cd_low, cd_high) = (_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
            *row = [
                _mm256_unpacklo_epi64(ab_low, cd_low),
                _mm256_unpackhi_epi64(ab_low, cd_low),
                _mm256_unpacklo_epi64(ab_high, cd_high),
                _mm256_unpackhi_epi64(ab_high, cd_high),
            ];
        }
        // Two such groups side by side make 32 contiguous bytes of one block.
        for pair in 0..2 {
            let (first, second) = (rows[2 * pair], rows[2 * pair + 1]);
            let at = 32 * pair..32 * pair + 32;
            for k in 0..4 {
                let low = _mm256_permute2x128_si256::<0x20>(first[k], second[k]);
                let high = _mm256_permute2x128_si256::<0x31>(first[k], second[k]);
                xor_into(&mut out[k][at.clone()], low);
                xor_into(&mut out[k + 4][at.clone()], high);
            }
        }
    }
}

/// Sixteen blocks at a time in 512-bit vectors, with AVX-512's own rotation and its 32
/// registers, for CPUs that have AVX-512F.
pub mod avx512 {
    use super::*;

    rounds!("avx512f", __m512i, _mm512_add_epi32, _mm512_xor_si512);

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rotl<const LEFT: i32, const RIGHT: i32>(s: __m512i) -> __m512i {
        _mm512_rol_epi32::<LEFT>(s)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn xor_into(out: &mut [u8; 64], v: __m512i) {
        let p = out.as_mut_ptr().cast::<__m512i>();
        // SAFETY: `p` points to 64 bytes that `out` lends us; the accesses are unaligned.
        unsafe { _mm512_storeu_si512(p, _mm512_xor_si512(_mm512_loadu_si512(p), v)) };
    }

    /// XORs `core`'s blocks `counter .. counter + 16` of `input` into `out`.
    #[target_feature(enable = "avx512f")]
    pub fn xor_blocks(core: Core, input: &[u32; 16], counter: u64, out: &mut [[u8; 64]; 16]) {
        let mut start = [_mm512_setzero_si512(); 16];
        for (v, w) in start.iter_mut().zip(input) {
            *v = _mm512_set1_epi32(*w as i32);
        }
        let at = core.counter_words();
        for (v, words) in start[at].iter_mut().zip(counters::<16>(counter)) {
            let w = words.map(|w| w as i32);
            *v = _mm512_setr_epi32(
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10], w[11], w[12],
                w[13], w[14], w[15],
            );
        }
        let x = keystream(core, &start);
        // As in SSE2, within each 128-bit quarter: `rows[g][k]` holds words 4g..4g+4 of
        // blocks k, k + 4, k + 8 and k + 12, one in each quarter.
        let mut rows = [[_mm512_setzero_si512(); 4]; 4];
        for (g, row) in rows.iter_mut().enumerate() {
            let [a, b, c, d] = [x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]];
            let (ab_low, ab_high) = (_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
            let (cd_low, cd_high) = (_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
            *row = [
                _mm512_unpacklo_epi64(ab_low, cd_low),
                _mm512_unpackhi_epi64(ab_low, cd_low),
                _mm512_unpacklo_epi64(ab_high, cd_high),
                _mm512_unpackhi_epi64(ab_high, cd_high),
            ];
        }
        // Quarter q of the four groups' rows, side by side, is all of block k + 4q.
        for k in 0..4 {
            let [a, b, c, d] = [rows[0][k], rows[1][k], rows[2][k], rows[3][k]];
            let ab_low = _mm512_shuffle_i32x4::<0x44>(a, b);
            let ab_high = _mm512_shuffle_i32x4::<0xee>(a, b);
            let cd_low = _mm512_shuffle_i32x4::<0x44>(c, d);
            let cd_high = _mm512_shuffle_i32x4::<0xee>(c, d);
            xor_into(&mut out[k], _mm512_shuffle_i32x4::<0x88>(ab_low, cd_low));
            xor_into(
                &mut out[k + 4],
                _mm512_shuffle_i32x4::<0xdd>(ab_low, cd_low),
            );
            xor_into(
                &mut out[k + 8],
                _mm512_shuffle_i32x4::<0x88>(ab_high, cd_high),
            );
            xor_into(
                &mut out[k + 12],
                _mm512_shuffle_i32x4::<0xdd>(ab_high, cd_high),
            );
        }
    }
}
