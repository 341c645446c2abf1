//! Poly1305 eight blocks at a time, with AVX-512's 52-bit multiply-adds (IFMA).
//!
//! Horner's rule, split over eight lanes: lane `j` takes blocks `j`, `j + 8`, `j + 16`, …
//! and multiplies its accumulator by `r^8` before adding the next, so the eight products of
//! a step are independent. At the end lane `j` is multiplied by `r^(8 - j)` and the lanes
//! summed: `Σ mᵢ·r^(n − i + 1)`, what one lane would have computed block by block.
//!
//! The limbs are the scalar code's (44, 44 and 42 bits), which IFMA multiplies whole: each
//! product comes as its low 52 bits and its high part, the high part landing 8 bits up in
//! the next limb (2^52 = 2^8 · 2^44), or, from the top limb, at 2^140 = 5 · 2^10 modulo
//! 2^130 − 5.

use std::arch::x86_64::{
    __m512i, _mm512_add_epi64, _mm512_and_si512, _mm512_loadu_si512, _mm512_madd52hi_epu64,
    _mm512_madd52lo_epu64, _mm512_or_si512, _mm512_permutex2var_epi64, _mm512_reduce_add_epi64,
    _mm512_set1_epi64, _mm512_setr_epi64, _mm512_setzero_si512, _mm512_slli_epi64,
    _mm512_srli_epi64,
};

use super::{carried, product, MASK42, MASK44};

/// Bytes of the eight blocks one step takes.
pub(super) const STEP: usize = 128;

/// Whether this CPU has the instructions.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512ifma")
}

/// What the lanes multiply by: `r^8` in every lane for each step, and `r^8 … r^1` (lane 0
/// first) for the end; each with its top two limbs times 20 (products past 2^130 fold back
/// in times 5 · 4).
#[derive(Clone)]
pub(super) struct Powers {
    step: [u64; 5],
    end: [[u64; 8]; 5],
}

impl Powers {
    /// The powers of `r` (its limbs).
    pub(super) fn of(r: [u64; 3]) -> Powers {
        let mut powers = [r; 8];
        for i in 1..8 {
            powers[i] = product(powers[i - 1], r);
        }
        let limbs = |p: [u64; 3]| [p[0], p[1], p[2], p[1] * 20, p[2] * 20];
        let mut end = [[0; 8]; 5];
        for (lane, p) in powers.iter().rev().enumerate() {
            for (limb, v) in limbs(*p).into_iter().enumerate() {
                end[limb][lane] = v;
            }
        }
        Powers {
            step: limbs(powers[7]),
            end,
        }
    }
}

/// Three limbs of eight lanes.
type Lanes = [__m512i; 3];

/// `a · b` modulo 2^130 − 5, lane by lane; `b` with its top limbs times 20. Limbs of `a` under
/// 2^46 and of `b` under 2^44 (2^49 times 20) give limbs under 2^44, 2^44 + 1 and 2^42.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn multiply(a: Lanes, b: &[__m512i; 5]) -> Lanes {
    let [a0, a1, a2] = a;
    let [b0, b1, b2, s1, s2] = *b;
    let zero = _mm512_setzero_si512();
    let lo = |pairs: [(__m512i, __m512i); 3]| {
        let [(x0, y0), (x1, y1), (x2, y2)] = pairs;
        let acc = _mm512_madd52lo_epu64(zero, x0, y0);
        let acc = _mm512_madd52lo_epu64(acc, x1, y1);
        _mm512_madd52lo_epu64(acc, x2, y2)
    };
    let hi = |pairs: [(__m512i, __m512i); 3]| {
        let [(x0, y0), (x1, y1), (x2, y2)] = pairs;
        let acc = _mm512_madd52hi_epu64(zero, x0, y0);
        let acc = _mm512_madd52hi_epu64(acc, x1, y1);
        _mm512_madd52hi_epu64(acc, x2, y2)
    };
    let limb0 = [(a0, b0), (a1, s2), (a2, s1)];
    let limb1 = [(a0, b1), (a1, b0), (a2, s2)];
    let limb2 = [(a0, b2), (a1, b1), (a2, b0)];
    let (lo0, hi0) = (lo(limb0), hi(limb0));
    let (lo1, hi1) = (lo(limb1), hi(limb1));
    let (lo2, hi2) = (lo(limb2), hi(limb2));
    // High parts 8 bits up into the next limb; the top limb's times 5 · 2^10 into the first.
    let wrapped = _mm512_add_epi64(_mm512_slli_epi64::<12>(hi2), _mm512_slli_epi64::<10>(hi2));
    let mut t0 = _mm512_add_epi64(lo0, wrapped);
    let mut t1 = _mm512_add_epi64(lo1, _mm512_slli_epi64::<8>(hi0));
    let mut t2 = _mm512_add_epi64(lo2, _mm512_slli_epi64::<8>(hi1));
    let (m44, m42) = (
        _mm512_set1_epi64(MASK44 as i64),
        _mm512_set1_epi64(MASK42 as i64),
    );
    t1 = _mm512_add_epi64(t1, _mm512_srli_epi64::<44>(t0));
    t0 = _mm512_and_si512(t0, m44);
    t2 = _mm512_add_epi64(t2, _mm512_srli_epi64::<44>(t1));
    t1 = _mm512_and_si512(t1, m44);
    let top = _mm512_srli_epi64::<42>(t2);
    t2 = _mm512_and_si512(t2, m42);
    t0 = _mm512_add_epi64(t0, _mm512_add_epi64(top, _mm512_slli_epi64::<2>(top)));
    t1 = _mm512_add_epi64(t1, _mm512_srli_epi64::<44>(t0));
    t0 = _mm512_and_si512(t0, m44);
    [t0, t1, t2]
}

/// Eight full blocks as limbs, block `j` in lane `j`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn load(step: &[u8]) -> Lanes {
    debug_assert_eq!(step.len(), STEP);
    // SAFETY: `step` holds 128 bytes; unaligned loads.
    let (first, second) = unsafe {
        (
            _mm512_loadu_si512(step.as_ptr().cast()),
            _mm512_loadu_si512(step[64..].as_ptr().cast()),
        )
    };
    let low =
        _mm512_permutex2var_epi64(first, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), second);
    let high =
        _mm512_permutex2var_epi64(first, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), second);
    let m44 = _mm512_set1_epi64(MASK44 as i64);
    let middle = _mm512_or_si512(_mm512_srli_epi64::<44>(low), _mm512_slli_epi64::<20>(high));
    [
        _mm512_and_si512(low, m44),
        _mm512_and_si512(middle, m44),
        // The top 40 bits, and 2^128 (a full block's 1 past its end) at bit 40.
        _mm512_or_si512(_mm512_srli_epi64::<24>(high), _mm512_set1_epi64(1 << 40)),
    ]
}

/// Adds `data`, whole steps of eight full blocks (at least one), to the accumulator `h`.
///
/// # Safety
/// The CPU must have AVX-512F and IFMA ([`available`]).
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) unsafe fn blocks(h: &mut [u64; 3], powers: &Powers, data: &[u8]) {
    debug_assert!(!data.is_empty() && data.len().is_multiple_of(STEP));
    let vector = |limbs: &[u64; 8]| {
        // SAFETY: eight u64s; an unaligned load.
        unsafe { _mm512_loadu_si512(limbs.as_ptr().cast()) }
    };
    let step = powers.step.map(|v| _mm512_set1_epi64(v as i64));
    let end = [
        vector(&powers.end[0]),
        vector(&powers.end[1]),
        vector(&powers.end[2]),
        vector(&powers.end[3]),
        vector(&powers.end[4]),
    ];
    let mut steps = data.chunks_exact(STEP);
    let mut acc = load(steps.next().expect("at least one step"));
    // The accumulator so far joins the first block.
    let first = h.map(|v| {
        let mut lanes = [0u64; 8];
        lanes[0] = v;
        vector(&lanes)
    });
    for (limb, v) in acc.iter_mut().zip(first) {
        *limb = _mm512_add_epi64(*limb, v);
    }
    for next in steps {
        let m = load(next);
        let p = multiply(acc, &step);
        acc = [0, 1, 2].map(|i| _mm512_add_epi64(p[i], m[i]));
    }
    // The lanes' sums, each limb under 2^47.
    let sums = multiply(acc, &end).map(|v| _mm512_reduce_add_epi64(v) as u64);
    *h = carried(sums);
}
