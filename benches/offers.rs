//! What a hub's offers cost the peer that receives them: the time per offered key to decode
//! `MULTIFEED_MANIFEST` bodies (as a hub encodes them, with each key's length, byte length
//! and name) and keep them in the session, manual policy, for a hundred sessions that are
//! each offered ten thousand feeds in lists of about 130, as at fan-in.
//!
//! ```sh
//! cargo bench --locked --bench offers
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use feedscope::limits::Limits;
use feedscope::policy::Policy;
use feedscope::session::{FeedNumbers, Session};
use feedscope::wire::{self, FeedKey, FeedMeta, Handshake};

const SESSIONS: usize = 100;
const FEEDS: usize = 10_000;
const PER_LIST: usize = 133;

fn main() {
    let keys: Vec<FeedKey> = (0..FEEDS as u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
            FeedKey(k)
        })
        .collect();
    let meta: BTreeMap<FeedKey, FeedMeta> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let m = serde_json::json!({
                "length": 100, "byte_length": 102_400, "name": format!("p{}-f{}", i / 10, i % 10)
            });
            (*k, m.into())
        })
        .collect();
    let bodies: Vec<Vec<u8>> = keys
        .chunks(PER_LIST)
        .flat_map(|chunk| wire::encode_manifests(chunk, &meta))
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let handshake = wire::encode_handshake(&Handshake::ours());
    let limits = Limits::default();
    for round in 0..3 {
        let numbers = FeedNumbers::new();
        let mut sessions: Vec<Session> = (0..SESSIONS)
            .map(|_| {
                let mut s = Session::sharing(numbers.clone(), Policy::Manual, [], &limits);
                s.on_open();
                s.on_extension(wire::EXT_HANDSHAKE, &handshake);
                s
            })
            .collect();
        let began = Instant::now();
        let mut actions = 0;
        // As at a hub's fan-in: each list goes to every session before the next one.
        for body in &bodies {
            for s in &mut sessions {
                actions += s.on_extension(wire::EXT_MANIFEST, body).len();
            }
        }
        let took = began.elapsed();
        let offered = SESSIONS * FEEDS;
        let pending: usize = sessions.iter().map(|s| s.remote_offer.pending_len()).sum();
        assert_eq!(pending, offered, "every offer waits for a person");
        println!(
            "round {round}: {offered} offers ({} MB of manifests) in {:.2} s: {:.0} ns per offer ({actions} actions)",
            bytes * SESSIONS / 1_000_000,
            took.as_secs_f64(),
            took.as_nanos() as f64 / offered as f64,
        );
    }
}
