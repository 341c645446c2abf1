//! feedscope's own core against the Rust `hypercore` crate (a dev-dependency kept as an
//! oracle): the same appends give the same tree hash, signature and proofs, where the crate
//! works (it runs in memory here; it cannot reopen storage past 32,768 blocks).

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use feedscope::core::{Flavour, Node, Request, Tree, Want};
use hypercore::{HypercoreBuilder, PartialKeypair, Storage};
use hypercore_schema::{RequestBlock, RequestUpgrade};
use rand::{Rng, SeedableRng};

fn ours(n: &hypercore_schema::Node) -> Node {
    Node {
        index: n.index,
        size: n.length,
        hash: n.hash.as_slice().try_into().unwrap(),
    }
}

/// Builds a feed of `batches` with both implementations and compares `checks` random
/// proofs, each a block with the levels a requester may lack, maybe with an upgrade.
async fn compare(seed: u64, batches: &[usize], checks: usize) -> usize {
    let mut compared = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let secret = SigningKey::from_bytes(&[seed as u8; 32]);
    let crate_core = HypercoreBuilder::new(Storage::new_memory().await.unwrap())
        .key_pair(PartialKeypair {
            public: secret.verifying_key(),
            secret: Some(secret.clone()),
        })
        .build()
        .await
        .unwrap();
    let mut tree = Tree::new(Flavour::Hc10);
    let mut nodes = HashMap::new();
    let mut length = 0u64;
    for &n in batches {
        let blocks: Vec<Vec<u8>> = (0..n)
            .map(|k| vec![(length + k as u64) as u8; rng.gen_range(0..40)])
            .collect();
        crate_core.append_batch(&blocks).await.unwrap();
        for node in tree.append(&blocks, &secret).unwrap() {
            nodes.insert(node.index, node);
        }
        length += n as u64;
    }
    let info = crate_core.info();
    assert_eq!(info.length, tree.length);
    assert_eq!(info.byte_length, tree.byte_length);

    // The whole tree, with its signature.
    let theirs = crate_core
        .create_proof(
            None,
            None,
            None,
            Some(RequestUpgrade {
                start: 0,
                length: tree.length,
            }),
        )
        .await
        .unwrap()
        .unwrap();
    let up = theirs.upgrade.unwrap();
    assert_eq!(up.signature, tree.signature.unwrap().to_vec(), "signature");
    let roots: Vec<Node> = up.nodes.iter().map(ours).collect();
    assert_eq!(roots, tree.roots, "roots");
    assert_eq!(Flavour::Hc10.tree(&roots), tree.hash(), "tree hash");

    for _ in 0..checks {
        let index = rng.gen_range(0..tree.length);
        // Levels up to just below the root over the block: what a requester may lack.
        let mut most = 0;
        let mut ite = 2 * index;
        while feedscope::core::flat::right_span(feedscope::core::flat::parent(ite))
            < 2 * tree.length
            && !tree.roots.iter().any(|r| r.index == ite)
        {
            ite = feedscope::core::flat::parent(ite);
            most += 1;
        }
        let levels = rng.gen_range(0..=most);
        let upgrade = rng.gen_bool(0.3).then(|| {
            let start = rng.gen_range(0..tree.length);
            (start, rng.gen_range(1..=tree.length - start))
        });
        // The crate's proof for a block at or past the upgrade's start ignores the levels.
        let block_levels = if upgrade.is_some_and(|(s, _)| index >= s) {
            0
        } else {
            levels
        };
        let req = Request {
            block: Some(Want {
                index,
                nodes: block_levels,
            }),
            hash: None,
            upgrade,
        };
        if upgrade.is_some_and(|(s, l)| index >= s + l) {
            // Past what the upgrade proves: no proof can hold the block (the crate panics).
            assert!(tree.proof(&mut nodes, &req).is_err());
            continue;
        }
        let theirs = crate_core
            .create_proof(
                Some(RequestBlock {
                    index,
                    nodes: block_levels,
                }),
                None,
                None,
                upgrade.map(|(start, length)| RequestUpgrade { start, length }),
            )
            .await;
        let mine = tree.proof(&mut nodes, &req);
        let (theirs, mine) = match (theirs, mine) {
            (Ok(Some(t)), Ok(m)) => (t, m),
            (Ok(Some(_)), Err(e)) => {
                panic!("block {index} levels {block_levels} upgrade {upgrade:?}: the crate answers, we refuse: {e}")
            }
            // The crate refuses: nothing to compare with.
            _ => continue,
        };
        let block = mine.block.unwrap();
        let their_block = theirs.block.unwrap();
        assert_eq!(
            block.nodes,
            their_block.nodes.iter().map(ours).collect::<Vec<_>>(),
            "block {index} levels {block_levels} upgrade {upgrade:?}"
        );
        assert_eq!(mine.upgrade.is_some(), theirs.upgrade.is_some());
        if let (Some(m), Some(t)) = (mine.upgrade, theirs.upgrade) {
            assert_eq!(m.nodes, t.nodes.iter().map(ours).collect::<Vec<_>>());
            assert_eq!(
                m.additional,
                t.additional_nodes.iter().map(ours).collect::<Vec<_>>()
            );
            assert_eq!(m.signature, t.signature);
        }
        compared += 1;
    }
    compared
}

#[tokio::test]
async fn a_30000_block_core_in_random_batches_matches_the_crate() {
    let seed = rand::random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut batches = Vec::new();
    let mut total = 0;
    while total < 30_000 {
        let n = if rng.gen_bool(0.9) {
            rng.gen_range(1..50)
        } else {
            rng.gen_range(50..3000)
        };
        batches.push(n);
        total += n;
    }
    let compared = compare(seed, &batches, 300).await;
    assert!(compared > 150, "only {compared} of 300 proofs compared");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    #[test]
    fn small_cores_in_random_batches_match_the_crate(
        seed in proptest::num::u64::ANY,
        batches in proptest::collection::vec(1usize..70, 1..12),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(compare(seed, &batches, 40));
    }
}
