//! The XSalsa20 keystream of Cabal's wire: MB/s of feedscope's own (each backend this CPU
//! runs) beside the `salsa20` crate's, applied in pieces the size of the wire's messages.
//!
//! ```sh
//! cargo bench --locked --bench cipher
//! ```
//!
//! Each cell is the best of five passes over 64 MiB, applied in pieces of the row's size to
//! one 64 KiB buffer that stays in cache, so it measures the cipher and not the memory. MB is
//! 10^6 bytes.

use std::hint::black_box;
use std::time::Instant;

use feedscope::net::hc9::salsa::{Backend, XSalsa20};
use salsa20::cipher::{KeyIvInit, StreamCipher};

const TOTAL: usize = 64 << 20;
const PASSES: usize = 5;

/// Best MB/s of `PASSES` runs of `apply` over `TOTAL` bytes in pieces of `piece`.
fn rate(piece: usize, mut apply: impl FnMut(&mut [u8])) -> f64 {
    let mut buf = vec![0x5au8; 64 << 10];
    let mut best = f64::MAX;
    for _ in 0..PASSES {
        let began = Instant::now();
        let mut done = 0;
        while done < TOTAL {
            for chunk in buf.chunks_mut(piece) {
                apply(black_box(chunk));
            }
            done += buf.len();
        }
        best = best.min(began.elapsed().as_secs_f64());
    }
    black_box(&buf);
    TOTAL as f64 / best / 1e6
}

fn main() {
    let (key, nonce) = ([7u8; 32], [9u8; 24]);
    let backends: Vec<Backend> = Backend::ALL.into_iter().filter(|b| b.available()).collect();
    print!("| piece | salsa20 0.10 (one block at a time) |");
    for b in &backends {
        print!(" feedscope, {b:?} |");
    }
    println!(" best / salsa20 |");
    println!("|---|---|{}---|", "---|".repeat(backends.len()));
    for piece in [64, 1024, 16 << 10, 64 << 10] {
        let mut theirs = salsa20::XSalsa20::new(&key.into(), &nonce.into());
        let base = rate(piece, |d| theirs.apply_keystream(d));
        print!("| {} B | {base:.0} MB/s |", piece);
        let mut best: f64 = 0.0;
        for &b in &backends {
            let mut ours = XSalsa20::with_backend(&key, &nonce, b).expect("available");
            let r = rate(piece, |d| ours.apply(d));
            best = best.max(r);
            print!(" {r:.0} MB/s |");
        }
        println!(" {:.1}× |", best / base);
    }
}
