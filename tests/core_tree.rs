//! feedscope's own Merkle tree against what the real JS hypercore 10 and 9 produced
//! (`tests/vectors/`), and against itself under random growth and hostile proofs.

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use feedscope::core::{
    flat, BlockProof, Flavour, HashProof, Node, Proof, ProofError, Request, Tree, UpgradeProof,
    Want,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/hc10.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn node(v: &Value) -> Node {
    Node {
        index: v["index"].as_u64().unwrap(),
        size: v["size"].as_u64().unwrap(),
        hash: bytes(&v["hash"]).try_into().unwrap(),
    }
}

fn nodes(v: &Value) -> Vec<Node> {
    v.as_array().unwrap().iter().map(node).collect()
}

fn want(v: &Value) -> Option<Want> {
    (!v.is_null()).then(|| Want {
        index: v["index"].as_u64().unwrap(),
        nodes: v["nodes"].as_u64().unwrap(),
    })
}

fn block_of(case: &Value, i: u64) -> Vec<u8> {
    if case["length"].as_u64().unwrap() == 32769 {
        vec![(i & 0xff) as u8]
    } else {
        format!("block-{i}").into_bytes()
    }
}

/// A writer's tree built batch by batch as the case says, with every node it stored.
fn build(case: &Value, key: &SigningKey) -> (Tree, HashMap<u64, Node>) {
    let mut tree = Tree::new(Flavour::Hc10);
    let mut store = HashMap::new();
    for batch in case["appendBatches"].as_array().unwrap() {
        let start = tree.length;
        let blocks: Vec<Vec<u8>> = (start..start + batch.as_u64().unwrap())
            .map(|i| block_of(case, i))
            .collect();
        for n in tree.append(&blocks, key).unwrap() {
            store.insert(n.index, n);
        }
    }
    (tree, store)
}

fn js_proof(case: &Value, data: &Value) -> Proof {
    Proof {
        fork: data["fork"].as_u64().unwrap(),
        block: (!data["block"].is_null()).then(|| {
            let index = data["block"]["index"].as_u64().unwrap();
            BlockProof {
                index,
                value: block_of(case, index),
                nodes: nodes(&data["block"]["nodes"]),
            }
        }),
        hash: (!data["hash"].is_null()).then(|| HashProof {
            index: data["hash"]["index"].as_u64().unwrap(),
            nodes: nodes(&data["hash"]["nodes"]),
        }),
        upgrade: (!data["upgrade"].is_null()).then(|| {
            let u = &data["upgrade"];
            UpgradeProof {
                start: u["start"].as_u64().unwrap(),
                length: u["length"].as_u64().unwrap(),
                nodes: nodes(&u["nodes"]),
                additional: nodes(&u["additionalNodes"]),
                signature: bytes(&u["signature"]),
            }
        }),
    }
}

#[test]
fn trees_hashes_and_signatures_match_javascript() {
    let v = vectors();
    let key = SigningKey::from_bytes(&bytes(&v["keyPair"]["seed"]).try_into().unwrap());
    assert_eq!(
        key.verifying_key().to_bytes().to_vec(),
        bytes(&v["keyPair"]["publicKey"])
    );
    for case in v["cases"].as_array().unwrap() {
        let (tree, _) = build(case, &key);
        let length = case["length"].as_u64().unwrap();
        assert_eq!(tree.length, length);
        assert_eq!(tree.byte_length, case["byteLength"].as_u64().unwrap());
        assert_eq!(tree.roots, nodes(&case["roots"]), "roots of {length}");
        assert_eq!(tree.hash().to_vec(), bytes(&case["treeHash"]));
        assert_eq!(
            Flavour::Hc10.signable(&tree.roots, tree.length, 0),
            bytes(&case["signable"])
        );
        assert_eq!(
            tree.signature.unwrap().to_vec(),
            bytes(&case["signature"]),
            "signature of {length}"
        );
        for after in case["afterEachBatch"].as_array().unwrap() {
            let l = after["length"].as_u64().unwrap();
            let roots = nodes(&after["roots"]);
            assert_eq!(
                Flavour::Hc10.tree(&roots).to_vec(),
                bytes(&after["treeHash"])
            );
            assert!(Flavour::Hc10.verify(
                &key.verifying_key(),
                &bytes(&after["signature"]),
                &roots,
                l,
                0
            ));
        }
    }
}

#[test]
fn proofs_are_the_ones_javascript_sends_and_its_proofs_verify() {
    let v = vectors();
    let key = SigningKey::from_bytes(&bytes(&v["keyPair"]["seed"]).try_into().unwrap());
    let public = key.verifying_key();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let (tree, mut store) = build(case, &key);
        for p in case["proofs"].as_array().unwrap() {
            let name = format!("length {}: {}", tree.length, p["name"].as_str().unwrap());
            let r = &p["request"];
            if !r["seek"].is_null() || r["fork"].as_u64() != Some(0) {
                continue;
            }
            let req = Request {
                block: want(&r["block"]),
                hash: want(&r["hash"]),
                upgrade: (!r["upgrade"].is_null()).then(|| {
                    (
                        r["upgrade"]["start"].as_u64().unwrap(),
                        r["upgrade"]["length"].as_u64().unwrap(),
                    )
                }),
            };
            let ours = tree.proof(&mut store, &req);
            if p["data"].is_null() {
                assert!(ours.is_err(), "{name}: JS refuses, we answered {ours:?}");
                continue;
            }
            let theirs = js_proof(case, &p["data"]);
            let mut ours = ours.unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(b) = &mut ours.block {
                b.value = block_of(case, b.index);
            }
            assert_eq!(ours, theirs, "{name}");

            // The requester's side: what it held before, then the proof.
            let expect = &p["expect"];
            let mut held = HashMap::new();
            let mut before = Tree::new(Flavour::Hc10);
            if let Some(local) = expect.get("verifiesAgainstLocalNode") {
                let n = node(local);
                held.insert(n.index, n);
                before = tree.clone();
            }
            if let Some(roots) = expect.get("requesterRootsBefore") {
                before.roots = nodes(roots);
                before.length = expect["requesterLengthBefore"].as_u64().unwrap();
                before.byte_length = before.roots.iter().map(|n| n.size).sum();
                for n in &before.roots {
                    held.insert(n.index, *n);
                }
            }
            let verified = before
                .verify(&mut held, &theirs, &public)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(length) = expect.get("lengthAfter") {
                let after = verified.upgraded.expect("an upgrade");
                assert_eq!(after.length, length.as_u64().unwrap(), "{name}");
                assert_eq!(after.roots, nodes(&expect["rootsAfter"]), "{name}");
                assert_eq!(after.hash().to_vec(), bytes(&expect["treeHashAfter"]));
                assert_eq!(
                    after.byte_length,
                    expect["byteLengthAfter"].as_u64().unwrap()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 250, "only {checked} proofs checked");
}

#[test]
fn hypercore_9_hashes_and_signatures_match_javascript() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/hc9.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let v = &v["hypercore9"];
    let key = SigningKey::from_bytes(&bytes(&v["signing_seed"]).try_into().unwrap());
    assert_eq!(
        key.verifying_key().to_bytes().to_vec(),
        bytes(&v["public_key"])
    );
    let mut tree = Tree::new(Flavour::Hc9);
    let mut store = HashMap::new();
    for batch in [&["block-0", "block-1"][..], &["block-2"]] {
        for n in tree.append(batch, &key).unwrap() {
            store.insert(n.index, n);
        }
    }
    for (i, leaf) in v["leaf_hashes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(store[&(2 * i as u64)].hash.to_vec(), bytes(leaf));
    }
    assert_eq!(store[&1].hash.to_vec(), bytes(&v["parent_1"]));
    let roots: Vec<u64> = tree.roots.iter().map(|n| n.index).collect();
    assert_eq!(roots, [1, 4]);
    assert_eq!(tree.hash().to_vec(), bytes(&v["tree_hash"]));
    assert_eq!(
        Flavour::Hc9.signable(&tree.roots, 3, 0),
        bytes(&v["signable_40"])
    );
    assert_eq!(
        tree.signature.unwrap().to_vec(),
        bytes(&v["signature_len3_from_hypercore9"])
    );
    // Its writer's proof of block 0: siblings up to the root, then the other root.
    let proof = nodes(&v["proof_for_block0_digest0"]["nodes"]);
    assert_eq!(proof, [store[&2], store[&4]]);
    assert_eq!(tree.proof_hc9(&mut store, 0).unwrap(), proof);
    // And a reader that holds nothing takes it, signature and all, to length 3.
    let data = feedscope::core::hc9::Hc9Proof {
        index: 0,
        value: b"block-0".to_vec(),
        nodes: proof,
        signature: Some(bytes(&v["proof_for_block0_digest0"]["signature"])),
    };
    let reader = Tree::new(Flavour::Hc9);
    let verified = reader
        .verify_hc9(&mut HashMap::new(), &data, &key.verifying_key())
        .unwrap();
    let after = verified.upgraded.unwrap();
    assert_eq!(after.length, 3);
    assert_eq!(after.hash().to_vec(), bytes(&v["tree_hash"]));
}

/// Grows a writer's tree in random batches and brings a second tree along by proofs alone.
fn replicate_randomly(batches: &[usize], picks: &[u64], flavour: Flavour) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut writer = Tree::new(flavour);
    let mut wstore = HashMap::new();
    let mut reader = Tree::new(flavour);
    let mut rstore: HashMap<u64, Node> = HashMap::new();
    let mut blocks = Vec::new();
    for (step, &n) in batches.iter().enumerate() {
        let new: Vec<Vec<u8>> = (0..n)
            .map(|k| format!("{step}/{k}").repeat(k % 5).into_bytes())
            .collect();
        blocks.extend(new.iter().cloned());
        for node in writer.append(&new, &key).unwrap() {
            wstore.insert(node.index, node);
        }
        // Upgrade, sometimes with a block in the same proof, as JS peers ask.
        let with_block = picks.get(step).map(|p| p % writer.length);
        let req = Request {
            block: with_block.map(|index| Want { index, nodes: 0 }),
            hash: None,
            upgrade: Some((reader.length, writer.length - reader.length)),
        };
        if reader.length == writer.length {
            continue;
        }
        let mut proof = writer.proof(&mut wstore, &req).unwrap();
        if let Some(b) = &mut proof.block {
            b.value = blocks[b.index as usize].clone();
        }
        let verified = match reader.verify(&mut rstore, &proof, &key.verifying_key()) {
            Ok(v) => v,
            // A block below the reader's old length needs a path to a node it holds.
            Err(ProofError::MissingNode(_)) if with_block.is_some_and(|b| b < reader.length) => {
                continue
            }
            Err(e) => panic!("upgrade at step {step}: {e}"),
        };
        for n in verified.nodes {
            rstore.insert(n.index, n);
        }
        reader = verified.upgraded.unwrap();
        assert_eq!(reader, writer);
    }
    // Then every block, each asked with the levels the reader lacks.
    for &p in picks {
        if writer.length == 0 {
            break;
        }
        let index = p % writer.length;
        if reader.length < writer.length {
            break;
        }
        let nodes = reader.missing_nodes(&mut rstore, index).unwrap();
        let req = Request {
            block: Some(Want { index, nodes }),
            ..Request::default()
        };
        let mut proof = writer.proof(&mut wstore, &req).unwrap();
        proof.block.as_mut().unwrap().value = blocks[index as usize].clone();
        let verified = reader
            .verify(&mut rstore, &proof, &key.verifying_key())
            .unwrap_or_else(|e| panic!("block {index}: {e}"));
        for n in verified.nodes {
            assert_eq!(wstore[&n.index], n);
            rstore.insert(n.index, n);
        }
        assert_eq!(
            reader.byte_offset(&mut rstore, index).unwrap(),
            writer.byte_offset(&mut wstore, index).unwrap()
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn every_proof_of_one_tree_verifies_in_another(
        batches in proptest::collection::vec(1usize..40, 1..8),
        picks in proptest::collection::vec(0u64..1000, 1..40),
        hc9 in proptest::bool::ANY,
    ) {
        replicate_randomly(&batches, &picks, if hc9 { Flavour::Hc9 } else { Flavour::Hc10 });
    }

    #[test]
    fn mutated_proofs_are_refused_without_a_panic(
        length in 1u64..200,
        index in 0u64..200,
        from in 0u64..200,
        which in 0usize..8,
        at in 0usize..64,
        value in proptest::num::u64::ANY,
    ) {
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut writer = Tree::new(Flavour::Hc10);
        let mut wstore = HashMap::new();
        let blocks: Vec<Vec<u8>> = (0..length).map(|i| i.to_le_bytes().to_vec()).collect();
        for n in writer.append(&blocks, &key).unwrap() {
            wstore.insert(n.index, n);
        }
        let (index, from) = (index % length, from % length);
        // A reader at `from` blocks holding its roots, asking for a block past them.
        let mut reader = Tree::new(Flavour::Hc10);
        let mut rstore = HashMap::new();
        if from > 0 {
            reader.roots = flat::full_roots(2 * from).iter().map(|i| wstore[i]).collect();
            reader.length = from;
            reader.byte_length = reader.roots.iter().map(|n| n.size).sum();
            for n in &reader.roots {
                rstore.insert(n.index, *n);
            }
        }
        let index = index.max(from);
        let req = Request {
            block: Some(Want { index, nodes: 0 }),
            hash: None,
            upgrade: Some((from, length - from)),
        };
        let mut proof = writer.proof(&mut wstore, &req).unwrap();
        proof.block.as_mut().unwrap().value = blocks[index as usize].clone();
        let good = reader.verify(&mut rstore, &proof, &key.verifying_key());
        proptest::prop_assert!(good.is_ok(), "{:?}", good);
        let up = proof.upgrade.as_mut().unwrap();
        let all: Vec<&mut Node> = proof.block.as_mut().unwrap().nodes.iter_mut()
            .chain(up.nodes.iter_mut()).chain(up.additional.iter_mut()).collect();
        let count = all.len();
        let mut all = all;
        match which {
            0 if count > 0 => all[at % count].hash[at % 32] ^= 1,
            1 if count > 0 && all[at % count].size != value => all[at % count].size = value,
            2 if count > 0 && all[at % count].index != value => all[at % count].index = value,
            3 => up.length = 0,
            4 if value != from => up.start = value,
            5 => up.signature[at % 64] ^= 1,
            6 => proof.block.as_mut().unwrap().value.push(1),
            7 if value != index => proof.block.as_mut().unwrap().index = value,
            _ => return Ok(()),
        }
        let bad = reader.verify(&mut rstore, &proof, &key.verifying_key());
        proptest::prop_assert!(bad.is_err(), "a mutated proof ({which}) verified");
    }
}
