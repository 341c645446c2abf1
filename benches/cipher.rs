//! The ciphers of both wires: MB/s of feedscope's own (each backend this CPU runs) beside the
//! crates', in pieces the size of the wires' messages.
//!
//! - Cabal's wire: the XSalsa20 keystream, against the `salsa20` crate's;
//! - hypercore 10: ChaCha20 (each piece a message's keystream, from its first block) against
//!   the `chacha20` crate's, and whole secret-stream messages (ChaCha20, Poly1305, the tag
//!   byte) sealed by feedscope's and by `crypto_secretstream`, which `hypercore_handshake`
//!   drives.
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

use feedscope::net::arx::{Backend, ChaCha20, XSalsa20};
use feedscope::net::secret_stream::Push;
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

    println!();
    print!("| piece | chacha20 0.9 |");
    for b in &backends {
        print!(" feedscope, {b:?} |");
    }
    println!(" best / chacha20 |");
    println!("|---|---|{}---|", "---|".repeat(backends.len()));
    let nonce = [9u8; 12];
    for piece in [64, 1024, 16 << 10, 64 << 10] {
        let base = rate(piece, |d| {
            chacha20::ChaCha20::new(&key.into(), &nonce.into()).apply_keystream(d)
        });
        print!("| {} B | {base:.0} MB/s |", piece);
        let mut best: f64 = 0.0;
        for &b in &backends {
            let r = rate(piece, |d| {
                ChaCha20::with_backend(&key, &nonce, b)
                    .expect("available")
                    .apply_from(0, d)
            });
            best = best.max(r);
            print!(" {r:.0} MB/s |");
        }
        println!(" {:.1}× |", best / base);
    }

    println!();
    println!("| message | crypto_secretstream 0.2 | feedscope | feedscope / crate |");
    println!("|---|---|---|---|");
    let header = [3u8; 24];
    for piece in [64, 1024, 2048, 4096, 8192, 16 << 10, 64 << 10] {
        let mut message = Vec::with_capacity(piece + 17);
        let (_, mut push) = crypto_secretstream::PushStream::init(rand::rngs::OsRng, &key.into());
        let base = rate(piece, |d| {
            message.clear();
            message.extend_from_slice(d);
            push.push(&mut message, &[], crypto_secretstream::Tag::Message)
                .expect("a message seals");
        });
        let mut ours = Push::new(&key, &header);
        let r = rate(piece, |d| {
            message.clear();
            message.extend_from_slice(d);
            black_box(ours.seal(&mut message));
        });
        println!(
            "| {piece} B | {base:.0} MB/s | {r:.0} MB/s | {:.1}× |",
            r / base
        );
    }
}
