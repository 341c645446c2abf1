//! Poly1305 (RFC 8439), the one-time authenticator of hypercore 10's secret stream: the
//! message's 16-byte blocks evaluated as a polynomial modulo 2^130 − 5 at the key's clamped
//! `r`, plus the key's `s`.
//!
//! The accumulator is three limbs of 44, 44 and 42 bits, multiplied as 64 × 64 → 128-bit
//! products: a few dozen instructions a block, and nothing to set up. On a CPU with
//! AVX-512 IFMA, runs of 16 blocks and more go eight at a time ([`ifma`]). Elsewhere the
//! `poly1305` crate's AVX2 backend is faster on long inputs, but its setup and finish cost
//! more than a kilobyte of this one's blocks, and the stream's messages are mostly a
//! kilobyte or less (`cargo bench --locked --bench cipher`).

#[cfg(target_arch = "x86_64")]
mod ifma;

const MASK44: u64 = (1 << 44) - 1;
const MASK42: u64 = (1 << 42) - 1;

/// A Poly1305 computation under one key; the key must never be used for another message.
#[derive(Clone)]
pub struct Poly1305 {
    r: [u64; 3],
    h: [u64; 3],
    pad: [u64; 2],
    /// A partial block waiting for more bytes.
    buffer: [u8; 16],
    buffered: usize,
    /// The powers of `r` for eight blocks at a time, made on the first long run.
    #[cfg(target_arch = "x86_64")]
    powers: Option<ifma::Powers>,
}

/// Runs of full blocks this long and longer go eight blocks at a time, where the CPU can:
/// below, working out the powers of `r` costs more than it saves.
#[cfg(target_arch = "x86_64")]
const VECTOR_RUN: usize = 256;

/// Whether this CPU computes long runs eight blocks at a time.
pub fn vectored() -> bool {
    // The standard library caches what the CPU has.
    #[cfg(target_arch = "x86_64")]
    return ifma::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `h` with each limb's carry moved up, and the top limb's past 2^130 folded back in
/// times 5: limbs under 2^44, 2^44 + 1 and 2^42.
fn carried([mut h0, mut h1, mut h2]: [u64; 3]) -> [u64; 3] {
    h1 += h0 >> 44;
    h0 &= MASK44;
    h2 += h1 >> 44;
    h1 &= MASK44;
    h0 += (h2 >> 42) * 5;
    h2 &= MASK42;
    h1 += h0 >> 44;
    h0 &= MASK44;
    [h0, h1, h2]
}

/// `a · r` modulo 2^130 − 5, limbs as [`Poly1305::blocks`] leaves them.
fn product(a: [u64; 3], r: [u64; 3]) -> [u64; 3] {
    let [h0, h1, h2] = a;
    let [r0, r1, r2] = r;
    let (s1, s2) = (r1 * 20, r2 * 20);
    let mul = |a: u64, b: u64| u128::from(a) * u128::from(b);
    let d0 = mul(h0, r0) + mul(h1, s2) + mul(h2, s1);
    let mut d1 = mul(h0, r1) + mul(h1, r0) + mul(h2, s2);
    let mut d2 = mul(h0, r2) + mul(h1, r1) + mul(h2, r0);
    d1 += d0 >> 44;
    let mut h0 = d0 as u64 & MASK44;
    d2 += d1 >> 44;
    let mut h1 = d1 as u64 & MASK44;
    let h2 = d2 as u64 & MASK42;
    h0 += (d2 >> 42) as u64 * 5;
    h1 += h0 >> 44;
    h0 &= MASK44;
    [h0, h1, h2]
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

impl Poly1305 {
    /// A computation under `key`: `r` (clamped) then `s`.
    pub fn new(key: &[u8; 32]) -> Self {
        let (t0, t1) = (le64(&key[..8]), le64(&key[8..16]));
        let r = [
            t0 & 0xffc_0fff_ffff,
            ((t0 >> 44) | (t1 << 20)) & 0xfff_ffc0_ffff,
            (t1 >> 24) & 0x0f_ffff_fc0f,
        ];
        Poly1305 {
            r,
            h: [0; 3],
            pad: [le64(&key[16..24]), le64(&key[24..32])],
            buffer: [0; 16],
            buffered: 0,
            #[cfg(target_arch = "x86_64")]
            powers: None,
        }
    }

    /// Adds whole 16-byte blocks; `high` is 2^128 over the limbs (1 << 40 in the top one) for
    /// full blocks, 0 for the last, already padded, one.
    fn blocks(&mut self, data: &[u8], high: u64) {
        #[cfg(target_arch = "x86_64")]
        let data = if data.len() >= VECTOR_RUN && high != 0 && vectored() {
            let run = data.len() - data.len() % ifma::STEP;
            let r = self.r;
            let powers = self.powers.get_or_insert_with(|| ifma::Powers::of(r));
            // SAFETY: `vectored` found AVX-512F and IFMA; `run` is whole steps, at least two.
            unsafe { ifma::blocks(&mut self.h, powers, &data[..run]) };
            &data[run..]
        } else {
            data
        };
        let r = self.r;
        let mut h = self.h;
        for block in data.chunks_exact(16) {
            let (t0, t1) = (le64(&block[..8]), le64(&block[8..]));
            h[0] += t0 & MASK44;
            h[1] += ((t0 >> 44) | (t1 << 20)) & MASK44;
            h[2] += ((t1 >> 24) & MASK42) | high;
            h = product(h, r);
        }
        self.h = h;
    }

    /// Adds `data` to the message.
    pub fn update(&mut self, mut data: &[u8]) {
        if self.buffered > 0 {
            let n = (16 - self.buffered).min(data.len());
            self.buffer[self.buffered..self.buffered + n].copy_from_slice(&data[..n]);
            self.buffered += n;
            data = &data[n..];
            if self.buffered < 16 {
                return;
            }
            let block = self.buffer;
            self.blocks(&block, 1 << 40);
            self.buffered = 0;
        }
        let whole = data.len() - data.len() % 16;
        self.blocks(&data[..whole], 1 << 40);
        let rest = &data[whole..];
        self.buffer[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// The tag of the message.
    pub fn finalize(mut self) -> [u8; 16] {
        if self.buffered > 0 {
            // The last partial block: a 1 byte after it, zeros to the end, no 2^128.
            let mut last = [0u8; 16];
            last[..self.buffered].copy_from_slice(&self.buffer[..self.buffered]);
            last[self.buffered] = 1;
            self.blocks(&last, 0);
        }
        // Carry fully, twice round the top limb.
        let [mut h0, mut h1, mut h2] = carried(carried(self.h));
        // h − p = h + 5 − 2^130: taken when it does not go below zero, in constant time.
        let mut g0 = h0 + 5;
        let mut g1 = h1 + (g0 >> 44);
        g0 &= MASK44;
        let g2 = (h2 + (g1 >> 44)).wrapping_sub(1 << 42);
        g1 &= MASK44;
        let take_g = (g2 >> 63).wrapping_sub(1);
        h0 = (h0 & !take_g) | (g0 & take_g);
        h1 = (h1 & !take_g) | (g1 & take_g);
        h2 = (h2 & !take_g) | (g2 & take_g & MASK42);
        // Plus s, modulo 2^128.
        let [t0, t1] = self.pad;
        h0 += t0 & MASK44;
        h1 += (((t0 >> 44) | (t1 << 20)) & MASK44) + (h0 >> 44);
        h0 &= MASK44;
        h2 += ((t1 >> 24) & MASK42) + (h1 >> 44);
        h1 &= MASK44;
        let low = h0 | (h1 << 44);
        let high = (h1 >> 20) | (h2 << 24);
        let mut tag = [0u8; 16];
        tag[..8].copy_from_slice(&low.to_le_bytes());
        tag[8..].copy_from_slice(&high.to_le_bytes());
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poly1305::universal_hash::KeyInit;
    use proptest::prelude::*;

    #[test]
    fn rfc_8439_vector() {
        // RFC 8439, 2.5.2.
        let key = hex::decode("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
            .unwrap();
        let mut p = Poly1305::new(key.as_slice().try_into().unwrap());
        p.update(b"Cryptographic Forum Research Group");
        assert_eq!(
            hex::encode(p.finalize()),
            "a8061dc1305136c6c22b8baf0c0127a9"
        );
    }

    /// Eight blocks at a time give the scalar code's tag, from any accumulator before them.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_lanes_agree_with_one() {
        if !vectored() {
            eprintln!("no AVX-512 IFMA here: nothing to compare");
            return;
        }
        for (seed, len) in [256, 272, 384, 1000, 1024, 4096, 65_536]
            .into_iter()
            .enumerate()
        {
            let key: [u8; 32] = crate::noise(0x100 + seed as u64, 32).try_into().unwrap();
            let message = crate::noise(0x200 + seed as u64, len);
            for lead in [0, 16, 48] {
                let mut vector = Poly1305::new(&key);
                vector.update(&message[..lead]);
                vector.update(&message[lead..]);
                let mut scalar = Poly1305::new(&key);
                for block in message.chunks(16) {
                    scalar.update(block);
                }
                assert_eq!(
                    vector.finalize(),
                    scalar.finalize(),
                    "{len} bytes after {lead}"
                );
            }
        }
    }

    proptest! {
        /// The same tag as the `poly1305` crate for any key and message, fed in any pieces.
        #[test]
        fn the_tag_is_the_crates(
            key in any::<[u8; 32]>(),
            // Past a few hundred bytes on a CPU with IFMA, eight blocks at a time.
            message in prop::collection::vec(any::<u8>(), 0..3000),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let theirs = poly1305::Poly1305::new(&key.into()).compute_unpadded(&message);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(message.len() + 1)).collect();
            at.sort();
            let mut ours = Poly1305::new(&key);
            let mut from = 0;
            for cut in at.into_iter().chain([message.len()]) {
                ours.update(&message[from..cut]);
                from = cut;
            }
            prop_assert_eq!(ours.finalize(), <[u8; 16]>::from(theirs));
        }

        /// Accumulators near and past 2^130 − 5: keys with every bit of `r` that clamping
        /// leaves, and messages of all ones.
        #[test]
        fn the_largest_values_reduce_as_the_crates(s in any::<[u8; 16]>(), blocks in 1usize..200) {
            let mut key = [0xffu8; 32];
            key[16..].copy_from_slice(&s);
            let message = vec![0xffu8; 16 * blocks];
            let theirs = poly1305::Poly1305::new(&key.into()).compute_unpadded(&message);
            let mut ours = Poly1305::new(&key);
            ours.update(&message);
            prop_assert_eq!(ours.finalize(), <[u8; 16]>::from(theirs));
        }
    }
}
