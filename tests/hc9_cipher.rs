//! Cabal's wire is one continuous XSalsa20 keystream per direction, and feedscope computes it
//! itself, several blocks at a time. Whatever the pieces a connection applies it in, the bytes
//! must be those of the `salsa20` crate's XSalsa20 applied to the whole stream at once.

use feedscope::net::arx::{Backend, XSalsa20, BATCH_BYTES};
use feedscope::net::hc9::Keystream;
use proptest::prelude::*;
use salsa20::cipher::{KeyIvInit, StreamCipher};

/// The message lengths of a connection: the edges of a block and of a batch, whole frames of
/// the sizes the benchmarks send, and anything in between.
fn piece() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            63,
            64,
            65,
            BATCH_BYTES - 1,
            BATCH_BYTES,
            BATCH_BYTES + 1,
            4096,
            65536,
            65536 + 7,
        ]),
        0..3000usize,
    ]
}

fn backends() -> Vec<Backend> {
    Backend::ALL.into_iter().filter(|b| b.available()).collect()
}

/// The crate's keystream XORed into `plain` in one call.
fn oracle(key: &[u8; 32], nonce: &[u8; 24], plain: &[u8]) -> Vec<u8> {
    let mut out = plain.to_vec();
    salsa20::XSalsa20::new(key.into(), nonce.into()).apply_keystream(&mut out);
    out
}

fn text(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_pieces_give_the_one_call_keystream(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 24]>(),
        pieces in prop::collection::vec(piece(), 1..10),
        seed in any::<u8>(),
    ) {
        let plain = text(pieces.iter().sum(), seed);
        let want = oracle(&key, &nonce, &plain);
        for backend in backends() {
            let mut ours = XSalsa20::with_backend(&key, &nonce, backend).expect("available");
            let mut got = plain.clone();
            let mut rest = &mut got[..];
            for &n in &pieces {
                let (now, later) = rest.split_at_mut(n);
                ours.apply(now);
                rest = later;
            }
            prop_assert!(got == want, "{:?} differs for pieces {:?}", backend, pieces);
        }
    }
}

#[test]
fn the_connection_keystream_decrypts_what_the_crate_encrypted() {
    let (key, nonce) = ([0x42u8; 32], [0x17u8; 24]);
    let plain = text(200_000, 3);
    let mut wire = oracle(&key, &nonce, &plain);
    let mut rx = Keystream::new(&key, &nonce);
    for chunk in wire.chunks_mut(1500) {
        rx.apply(chunk);
    }
    assert_eq!(wire, plain);
    assert_eq!(rx.offset(), 200_000);
}

#[test]
fn this_cpu_gets_its_fastest_backend() {
    let stream = XSalsa20::new(&[0; 32], &[0; 24]);
    assert_eq!(stream.backend(), Backend::detect());
    assert!(XSalsa20::with_backend(&[0; 32], &[0; 24], Backend::Portable).is_some());
    for backend in Backend::ALL {
        let made = XSalsa20::with_backend(&[0; 32], &[0; 24], backend);
        assert_eq!(made.is_some(), backend.available(), "{backend:?}");
    }
}
