//! The two ciphers of the wires, computing up to sixteen 64-byte blocks of keystream at a
//! time: XSalsa20 (Salsa20 with HSalsa20's 192-bit nonce extension), Cabal's wire's, and
//! ChaCha20 (RFC 8439: a 96-bit nonce and a 32-bit block counter), under hypercore 10's
//! secret stream.
//!
//! The blocks are lanes: every word of the state is a vector with one `u32` per block, and
//! each step of a round does the same thing to all of them. On x86-64 the kernels
//! (`x86_64.rs`) use SSE2 (four blocks, any x86-64 CPU), AVX2 (eight) or AVX-512 (sixteen),
//! the best the CPU has, detected once per stream at run time. Other targets run the same
//! rounds on arrays of four `u32`, vectorised as well as their compiler can.

/// The four words of "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// Which cipher's rounds a kernel runs: the two are the same shape (a 16-word state of
/// add, rotate and XOR, the input added back at the end) with different quarter rounds and
/// word layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Core {
    /// Salsa20: the 64-bit block counter in words 8 and 9.
    Salsa,
    /// ChaCha20 (RFC 8439): the 32-bit block counter in word 12.
    ChaCha,
}

impl Core {
    /// The state words that hold the block counter, low word first.
    fn counter_words(self) -> std::ops::Range<usize> {
        match self {
            Core::Salsa => 8..10,
            Core::ChaCha => 12..13,
        }
    }
}

/// Blocks computed together.
pub const LANES: usize = 16;

/// Keystream bytes computed together.
pub const BATCH_BYTES: usize = 64 * LANES;

/// One word of the state across `L` blocks.
type Word<const L: usize> = [u32; L];

/// The block counters `counter .. counter + L`: their low words, then their high words.
fn counters<const L: usize>(counter: u64) -> [[u32; L]; 2] {
    let n: [u64; L] = std::array::from_fn(|l| counter.wrapping_add(l as u64));
    [n.map(|n| n as u32), n.map(|n| (n >> 32) as u32)]
}

/// `t ^ ((a + b) <<< r)` in every lane: the one step Salsa20's rounds are made of.
#[inline(always)]
fn step<const L: usize>(t: Word<L>, a: Word<L>, b: Word<L>, r: u32) -> Word<L> {
    let mut out = t;
    for l in 0..L {
        out[l] ^= a[l].wrapping_add(b[l]).rotate_left(r);
    }
    out
}

#[inline(always)]
fn quarter<const L: usize>(x: &mut [Word<L>; 16], a: usize, b: usize, c: usize, d: usize) {
    x[b] = step(x[b], x[a], x[d], 7);
    x[c] = step(x[c], x[b], x[a], 9);
    x[d] = step(x[d], x[c], x[b], 13);
    x[a] = step(x[a], x[d], x[c], 18);
}

/// ChaCha20's quarter round in every lane.
#[inline(always)]
fn chacha_quarter<const L: usize>(x: &mut [Word<L>; 16], a: usize, b: usize, c: usize, d: usize) {
    let [mut va, mut vb, mut vc, mut vd] = [x[a], x[b], x[c], x[d]];
    for (((a, b), c), d) in va.iter_mut().zip(&mut vb).zip(&mut vc).zip(&mut vd) {
        *a = a.wrapping_add(*b);
        *d = (*d ^ *a).rotate_left(16);
        *c = c.wrapping_add(*d);
        *b = (*b ^ *c).rotate_left(12);
        *a = a.wrapping_add(*b);
        *d = (*d ^ *a).rotate_left(8);
        *c = c.wrapping_add(*d);
        *b = (*b ^ *c).rotate_left(7);
    }
    [x[a], x[b], x[c], x[d]] = [va, vb, vc, vd];
}

/// ChaCha20's twenty rounds (ten column rounds, each followed by a diagonal round).
#[inline(always)]
fn chacha_rounds<const L: usize>(x: &mut [Word<L>; 16]) {
    for _ in 0..10 {
        chacha_quarter(x, 0, 4, 8, 12);
        chacha_quarter(x, 1, 5, 9, 13);
        chacha_quarter(x, 2, 6, 10, 14);
        chacha_quarter(x, 3, 7, 11, 15);
        chacha_quarter(x, 0, 5, 10, 15);
        chacha_quarter(x, 1, 6, 11, 12);
        chacha_quarter(x, 2, 7, 8, 13);
        chacha_quarter(x, 3, 4, 9, 14);
    }
}

/// Salsa20's twenty rounds (ten column rounds, each followed by a row round).
#[inline(always)]
fn rounds<const L: usize>(x: &mut [Word<L>; 16]) {
    for _ in 0..10 {
        quarter(x, 0, 4, 8, 12);
        quarter(x, 5, 9, 13, 1);
        quarter(x, 10, 14, 2, 6);
        quarter(x, 15, 3, 7, 11);
        quarter(x, 0, 1, 2, 3);
        quarter(x, 5, 6, 7, 4);
        quarter(x, 10, 11, 8, 9);
        quarter(x, 15, 12, 13, 14);
    }
}

/// XORs `core`'s blocks `counter .. counter + L` of the state `input` (whose counter words
/// are ignored) into `out`, in order. The kernel of targets other than x86-64; tested
/// everywhere.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn xor_blocks<const L: usize>(
    core: Core,
    input: &[u32; 16],
    counter: u64,
    out: &mut [[u8; 64]; L],
) {
    let mut start = [[0u32; L]; 16];
    for (lanes, word) in start.iter_mut().zip(input) {
        *lanes = [*word; L];
    }
    let at = core.counter_words();
    for (lanes, words) in start[at].iter_mut().zip(counters(counter)) {
        *lanes = words;
    }
    let mut x = start;
    match core {
        Core::Salsa => rounds(&mut x),
        Core::ChaCha => chacha_rounds(&mut x),
    }
    for (i, (lanes, first)) in x.iter().zip(&start).enumerate() {
        for l in 0..L {
            let word = lanes[l].wrapping_add(first[l]);
            for (o, k) in out[l][4 * i..4 * i + 4].iter_mut().zip(word.to_le_bytes()) {
                *o ^= k;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_64;

/// The portable kernel: XORs `core`'s blocks `counter ..` into `out`, four at a time.
fn batch_portable(core: Core, input: &[u32; 16], counter: u64, out: &mut [[u8; 64]]) {
    for (i, four) in out.chunks_exact_mut(4).enumerate() {
        let four = four.try_into().expect("four blocks");
        let counter = counter.wrapping_add(4 * i as u64);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of x86-64; every CPU this code runs on has it.
        unsafe {
            x86_64::sse2::xor_blocks(core, input, counter, four)
        };
        #[cfg(not(target_arch = "x86_64"))]
        xor_blocks::<4>(core, input, counter, four);
    }
}

/// The instructions a stream computes its blocks with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Whatever the target has without asking the CPU (SSE2 on x86-64).
    Portable,
    /// AVX2, on an x86-64 CPU that has it.
    Avx2,
    /// AVX-512F, on an x86-64 CPU that has it.
    Avx512,
}

impl Backend {
    /// Every backend, slowest first.
    pub const ALL: [Backend; 3] = [Backend::Portable, Backend::Avx2, Backend::Avx512];

    /// The fastest backend this CPU runs.
    pub fn detect() -> Backend {
        Self::ALL
            .into_iter()
            .rev()
            .find(|b| b.available())
            .unwrap_or(Backend::Portable)
    }

    /// Whether this CPU can run this backend.
    pub fn available(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Blocks its widest kernel computes at once.
    fn lanes(self) -> usize {
        match self {
            Backend::Portable => 4,
            Backend::Avx2 => 8,
            Backend::Avx512 => 16,
        }
    }

    /// How many blocks to compute for `blocks`: a multiple of its narrowest kernel worth
    /// running (AVX2's eight, where there is AVX2: SSE2's four take as long and rotate with
    /// shifts), and at most its widest.
    fn width(self, blocks: usize) -> usize {
        let narrowest = if self == Backend::Portable { 4 } else { 8 };
        blocks.max(1).next_multiple_of(narrowest).min(self.lanes())
    }

    /// XORs `core`'s blocks `counter ..` of `input` into `out`, a multiple of four blocks,
    /// with the widest kernels that fit.
    fn xor(self, core: Core, input: &[u32; 16], counter: u64, out: &mut [[u8; 64]]) {
        debug_assert_eq!(out.len() % 4, 0);
        let mut done = 0;
        // SAFETY (all three): a backend other than `Portable` is only made where the CPU
        // has its instructions: `detect` checks them, and `with_backend` refuses it
        // otherwise.
        #[cfg(target_arch = "x86_64")]
        {
            if self == Backend::Avx512 {
                for sixteen in out.chunks_exact_mut(16) {
                    let at = counter.wrapping_add(done as u64);
                    let sixteen = sixteen.try_into().expect("sixteen blocks");
                    unsafe { x86_64::avx512::xor_blocks(core, input, at, sixteen) };
                    done += 16;
                }
            }
            if self != Backend::Portable {
                for eight in out[done..].chunks_exact_mut(8) {
                    let at = counter.wrapping_add(done as u64);
                    let eight = eight.try_into().expect("eight blocks");
                    unsafe { x86_64::avx2::xor_blocks(core, input, at, eight) };
                    done += 8;
                }
            }
        }
        batch_portable(
            core,
            input,
            counter.wrapping_add(done as u64),
            &mut out[done..],
        );
    }
}

fn words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut out = [0u32; N];
    for (w, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes(b.try_into().expect("four bytes"));
    }
    out
}

/// HSalsa20: the subkey that XSalsa20 runs Salsa20 with, from the key and the nonce's first
/// 16 bytes.
pub fn hsalsa20(key: &[u8; 32], nonce: &[u8; 16]) -> [u32; 8] {
    let (k, n) = (words::<8>(key), words::<4>(nonce));
    let input = [
        SIGMA[0], k[0], k[1], k[2], k[3], SIGMA[1], n[0], n[1], n[2], n[3], SIGMA[2], k[4], k[5],
        k[6], k[7], SIGMA[3],
    ];
    let mut x = input.map(|w| [w]);
    rounds::<1>(&mut x);
    [0, 5, 10, 15, 6, 7, 8, 9].map(|i| x[i][0])
}

/// An XSalsa20 keystream that can be applied in pieces of any length: each call goes on
/// where the last one stopped, mid-block or not.
#[derive(Clone)]
pub struct XSalsa20 {
    /// The Salsa20 state of the subkey and the nonce's last 8 bytes; the counter is apart.
    input: [u32; 16],
    /// The block the next batch starts with.
    counter: u64,
    /// The last batch of keystream; bytes before `used` are spent.
    batch: [[u8; 64]; LANES],
    used: usize,
    backend: Backend,
}

impl std::fmt::Debug for XSalsa20 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XSalsa20")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl XSalsa20 {
    /// The keystream of `key` and `nonce`, from its start, on the fastest backend this CPU has.
    pub fn new(key: &[u8; 32], nonce: &[u8; 24]) -> XSalsa20 {
        Self::with_backend(key, nonce, Backend::detect()).expect("a detected backend runs")
    }

    /// The same keystream on a chosen backend, or `None` where this CPU cannot run it.
    pub fn with_backend(key: &[u8; 32], nonce: &[u8; 24], backend: Backend) -> Option<XSalsa20> {
        if !backend.available() {
            return None;
        }
        let sub = hsalsa20(key, nonce[..16].try_into().expect("16 bytes"));
        let n = words::<2>(&nonce[16..]);
        let input = [
            SIGMA[0], sub[0], sub[1], sub[2], sub[3], SIGMA[1], n[0], n[1], 0, 0, SIGMA[2], sub[4],
            sub[5], sub[6], sub[7], SIGMA[3],
        ];
        Some(XSalsa20 {
            input,
            counter: 0,
            batch: [[0; 64]; LANES],
            used: BATCH_BYTES,
            backend,
        })
    }

    /// The backend this stream computes with.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// XORs the next batch of keystream into `out`.
    fn xor_batch(&mut self, out: &mut [[u8; 64]; LANES]) {
        self.backend
            .xor(Core::Salsa, &self.input, self.counter, out);
        // The stream is 2^70 bytes long; no connection gets to the wrap.
        self.counter = self.counter.wrapping_add(LANES as u64);
    }

    /// XORs the next `data.len()` bytes of the keystream into `data`.
    pub fn apply(&mut self, data: &mut [u8]) {
        // What is left of the last batch first, then whole batches straight into `data`, then
        // one more batch for the rest, kept for the next call.
        let n = (BATCH_BYTES - self.used).min(data.len());
        let (now, data) = data.split_at_mut(n);
        xor_into(now, &self.batch.as_flattened()[self.used..]);
        self.used += n;
        let mut batches = data.chunks_exact_mut(BATCH_BYTES);
        for batch in &mut batches {
            let (blocks, _) = batch.as_chunks_mut::<64>();
            self.xor_batch(blocks.try_into().expect("a whole batch"));
        }
        let rest = batches.into_remainder();
        if !rest.is_empty() {
            let mut batch = [[0; 64]; LANES];
            self.xor_batch(&mut batch);
            xor_into(rest, batch.as_flattened());
            self.batch = batch;
            self.used = rest.len();
        }
    }
}

/// A ChaCha20 key and nonce (RFC 8439), whose keystream is XORed into data from any block
/// on. Each call computes what it needs afresh: the secret stream uses a key and nonce for
/// one message.
#[derive(Clone)]
pub struct ChaCha20 {
    /// The state of the key and the nonce; the counter word is set per batch.
    input: [u32; 16],
    backend: Backend,
}

impl std::fmt::Debug for ChaCha20 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaCha20")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl ChaCha20 {
    /// The keystream of `key` and `nonce` on the fastest backend this CPU has.
    pub fn new(key: &[u8; 32], nonce: &[u8; 12]) -> ChaCha20 {
        Self::with_backend(key, nonce, Backend::detect()).expect("a detected backend runs")
    }

    /// The same keystream on a chosen backend, or `None` where this CPU cannot run it.
    pub fn with_backend(key: &[u8; 32], nonce: &[u8; 12], backend: Backend) -> Option<ChaCha20> {
        if !backend.available() {
            return None;
        }
        let (k, n) = (words::<8>(key), words::<3>(nonce));
        let input = [
            SIGMA[0], SIGMA[1], SIGMA[2], SIGMA[3], k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7],
            0, n[0], n[1], n[2],
        ];
        Some(ChaCha20 { input, backend })
    }

    /// The keystream from block 0: `blocks` of it rounded up to what a kernel computes at
    /// once, and at most a batch; and how many blocks that is.
    pub fn first_blocks(&self, blocks: usize) -> ([[u8; 64]; LANES], usize) {
        let width = self.backend.width(blocks);
        let mut batch = [[0u8; 64]; LANES];
        self.backend
            .xor(Core::ChaCha, &self.input, 0, &mut batch[..width]);
        (batch, width)
    }

    /// XORs the keystream from block `counter` on into `data`. The counter is 32 bits: past
    /// 256 GiB from block 0 it wraps (RFC 8439 leaves that undefined; no message of a
    /// connection comes near it).
    pub fn apply_from(&self, counter: u64, data: &mut [u8]) {
        let lanes = self.backend.lanes();
        // Whole batches straight into the data, then one batch as narrow as the rest allows.
        let full = data.len() / (64 * lanes) * lanes;
        let (whole, tail) = data.split_at_mut(full * 64);
        let (blocks, _) = whole.as_chunks_mut::<64>();
        self.backend.xor(Core::ChaCha, &self.input, counter, blocks);
        if !tail.is_empty() {
            let width = self.backend.width(tail.len().div_ceil(64));
            let mut batch = [[0u8; 64]; LANES];
            let at = counter + full as u64;
            self.backend
                .xor(Core::ChaCha, &self.input, at, &mut batch[..width]);
            xor_into(tail, batch.as_flattened());
        }
    }
}

/// HChaCha20: the subkey that XChaCha20 runs ChaCha20 with, from the key and the nonce's
/// first 16 bytes.
pub fn hchacha20(key: &[u8; 32], nonce: &[u8; 16]) -> [u8; 32] {
    let (k, n) = (words::<8>(key), words::<4>(nonce));
    let input = [
        SIGMA[0], SIGMA[1], SIGMA[2], SIGMA[3], k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7],
        n[0], n[1], n[2], n[3],
    ];
    let mut x = input.map(|w| [w]);
    chacha_rounds::<1>(&mut x);
    let mut out = [0u8; 32];
    for (o, i) in out.chunks_exact_mut(4).zip([0, 1, 2, 3, 12, 13, 14, 15]) {
        o.copy_from_slice(&x[i][0].to_le_bytes());
    }
    out
}

/// `data ^= stream`, byte for byte, as far as the shorter goes (the compiler vectorises it).
pub(crate) fn xor_into(data: &mut [u8], stream: &[u8]) {
    for (d, k) in data.iter_mut().zip(stream) {
        *d ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salsa20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

    fn oracle(key: &[u8; 32], nonce: &[u8; 24], from_block: u64, len: usize) -> Vec<u8> {
        let mut c = salsa20::XSalsa20::new(key.into(), nonce.into());
        c.seek(u128::from(from_block) * 64);
        let mut out = vec![0; len];
        c.apply_keystream(&mut out);
        out
    }

    fn ours(
        backend: Backend,
        key: &[u8; 32],
        nonce: &[u8; 24],
        from_block: u64,
        len: usize,
    ) -> Vec<u8> {
        let mut s = XSalsa20::with_backend(key, nonce, backend).expect("available");
        s.counter = from_block;
        let mut out = vec![0; len];
        s.apply(&mut out);
        out
    }

    #[test]
    fn every_backend_this_cpu_has_gives_the_crates_keystream() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 37 + 1) as u8);
        let nonce: [u8; 24] = std::array::from_fn(|i| (i * 11 + 5) as u8);
        assert!(Backend::Portable.available());
        for backend in Backend::ALL.into_iter().filter(|b| b.available()) {
            // The start, and the counter's low word carrying into its high word mid-batch.
            for from in [0, 1, (1 << 32) - 3] {
                let len = 3 * BATCH_BYTES + 17;
                assert_eq!(
                    ours(backend, &key, &nonce, from, len),
                    oracle(&key, &nonce, from, len),
                    "{backend:?} from block {from}"
                );
            }
        }
    }

    #[test]
    fn the_kernel_of_other_targets_gives_the_crates_keystream() {
        let (key, nonce) = ([0xa5u8; 32], [0x3cu8; 24]);
        let sub = XSalsa20::new(&key, &nonce).input;
        for from in [0, (1 << 32) - 2] {
            let mut out = [[0u8; 64]; 4];
            xor_blocks::<4>(Core::Salsa, &sub, from, &mut out);
            assert_eq!(out.as_flattened(), oracle(&key, &nonce, from, 256));
        }
    }

    fn chacha_oracle(key: &[u8; 32], nonce: &[u8; 12], from_block: u64, data: &mut [u8]) {
        use chacha20::cipher::{KeyIvInit as _, StreamCipher as _, StreamCipherSeek as _};
        let mut c = chacha20::ChaCha20::new(key.into(), nonce.into());
        c.seek(from_block * 64);
        c.apply_keystream(data);
    }

    #[test]
    fn every_backend_this_cpu_has_gives_the_crates_chacha20() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 29 + 3) as u8);
        let nonce: [u8; 12] = std::array::from_fn(|i| (i * 13 + 7) as u8);
        let text: Vec<u8> = (0..5000).map(|i| (i * 7) as u8).collect();
        for backend in Backend::ALL.into_iter().filter(|b| b.available()) {
            let ours = ChaCha20::with_backend(&key, &nonce, backend).expect("available");
            // Lengths around every width of kernel and batch, from the start and mid-stream.
            for len in [
                0, 1, 63, 64, 65, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 5000,
            ] {
                for from in [0, 2, 16, 1000] {
                    let mut mine = text[..len].to_vec();
                    ours.apply_from(from, &mut mine);
                    let mut theirs = text[..len].to_vec();
                    chacha_oracle(&key, &nonce, from, &mut theirs);
                    assert_eq!(mine, theirs, "{backend:?}, {len} bytes from block {from}");
                }
            }
            for blocks in [1, 2, 3, 5, 9, 17, 40] {
                let (first, width) = ours.first_blocks(blocks);
                assert!(width >= blocks.min(backend.lanes()) && width % 4 == 0);
                let mut theirs = vec![0u8; width * 64];
                chacha_oracle(&key, &nonce, 0, &mut theirs);
                assert_eq!(
                    first[..width].as_flattened(),
                    theirs,
                    "{backend:?}, {blocks}"
                );
            }
        }
    }

    #[test]
    fn the_kernel_of_other_targets_gives_the_crates_chacha20() {
        let (key, nonce) = ([0x5au8; 32], [0xc3u8; 12]);
        let input = ChaCha20::new(&key, &nonce).input;
        for from in [0, 77] {
            let mut out = [[0u8; 64]; 4];
            xor_blocks::<4>(Core::ChaCha, &input, from, &mut out);
            let mut theirs = [0u8; 256];
            chacha_oracle(&key, &nonce, from, &mut theirs);
            assert_eq!(out.as_flattened(), theirs);
        }
    }

    #[test]
    fn hchacha20_is_the_crates() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 3) as u8);
        let nonce: [u8; 16] = std::array::from_fn(|i| (100 + i) as u8);
        let theirs = chacha20::hchacha::<chacha20::cipher::consts::U10>(&key.into(), &nonce.into());
        assert_eq!(hchacha20(&key, &nonce)[..], theirs[..]);
    }

    #[test]
    fn hsalsa20_is_the_crates() {
        let key = [7u8; 32];
        let nonce: [u8; 16] = std::array::from_fn(|i| i as u8);
        let theirs = salsa20::hsalsa::<salsa20::cipher::consts::U10>(&key.into(), &nonce.into());
        let ours: Vec<u8> = hsalsa20(&key, &nonce)
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(ours, theirs.as_slice());
    }
}
