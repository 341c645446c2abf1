//! The x86-64 kernels: Salsa20's rounds on SSE2's four lanes and on AVX2's eight, written with
//! the vector instructions themselves (the compiler does not find them in the portable lane
//! arrays on its own), and the keystream turned from lanes back into blocks with shuffles.

use std::arch::x86_64::*;

use super::counters;

/// `step`, `quarter` and `rounds` for one vector type, as `super` has them for lane arrays.
macro_rules! rounds {
    ($feature:literal, $v:ty, $add:ident, $xor:ident, $or:ident, $sll:ident, $srl:ident) => {
        /// `t ^ ((a + b) <<< LEFT)`, with `RIGHT = 32 - LEFT`.
        #[inline]
        #[target_feature(enable = $feature)]
        fn step<const LEFT: i32, const RIGHT: i32>(t: $v, a: $v, b: $v) -> $v {
            let s = $add(a, b);
            $xor(t, $or($sll::<LEFT>(s), $srl::<RIGHT>(s)))
        }

        #[inline]
        #[target_feature(enable = $feature)]
        fn quarter(x: &mut [$v; 16], a: usize, b: usize, c: usize, d: usize) {
            x[b] = step::<7, 25>(x[b], x[a], x[d]);
            x[c] = step::<9, 23>(x[c], x[b], x[a]);
            x[d] = step::<13, 19>(x[d], x[c], x[b]);
            x[a] = step::<18, 14>(x[a], x[d], x[c]);
        }

        /// The twenty rounds, then the input added back: the keystream, one word a vector.
        #[inline]
        #[target_feature(enable = $feature)]
        fn keystream(start: &[$v; 16]) -> [$v; 16] {
            let mut x = *start;
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

    rounds!(
        "sse2",
        __m128i,
        _mm_add_epi32,
        _mm_xor_si128,
        _mm_or_si128,
        _mm_slli_epi32,
        _mm_srli_epi32
    );

    #[inline]
    #[target_feature(enable = "sse2")]
    fn xor_into(out: &mut [u8], v: __m128i) {
        let out: &mut [u8; 16] = out.try_into().expect("16 bytes");
        let p = out.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `p` points to 16 bytes that `out` lends us; the accesses are unaligned.
        unsafe { _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), v)) };
    }

    /// XORs Salsa20 blocks `counter .. counter + 4` of `input` into `out`.
    #[target_feature(enable = "sse2")]
    pub fn xor_blocks(input: &[u32; 16], counter: u64, out: &mut [[u8; 64]; 4]) {
        let mut start = [_mm_setzero_si128(); 16];
        for (v, w) in start.iter_mut().zip(input) {
            *v = _mm_set1_epi32(*w as i32);
        }
        for (v, words) in start[8..10].iter_mut().zip(counters::<4>(counter)) {
            let [a, b, c, d] = words.map(|w| w as i32);
            *v = _mm_setr_epi32(a, b, c, d);
        }
        let x = keystream(&start);
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

    rounds!(
        "avx2",
        __m256i,
        _mm256_add_epi32,
        _mm256_xor_si256,
        _mm256_or_si256,
        _mm256_slli_epi32,
        _mm256_srli_epi32
    );

    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor_into(out: &mut [u8], v: __m256i) {
        let out: &mut [u8; 32] = out.try_into().expect("32 bytes");
        let p = out.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `p` points to 32 bytes that `out` lends us; the accesses are unaligned.
        unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), v)) };
    }

    /// XORs Salsa20 blocks `counter .. counter + 8` of `input` into `out`.
    #[target_feature(enable = "avx2")]
    pub fn xor_blocks(input: &[u32; 16], counter: u64, out: &mut [[u8; 64]; 8]) {
        let mut start = [_mm256_setzero_si256(); 16];
        for (v, w) in start.iter_mut().zip(input) {
            *v = _mm256_set1_epi32(*w as i32);
        }
        for (v, words) in start[8..10].iter_mut().zip(counters::<8>(counter)) {
            let [a, b, c, d, e, f, g, h] = words.map(|w| w as i32);
            *v = _mm256_setr_epi32(a, b, c, d, e, f, g, h);
        }
        let x = keystream(&start);
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
