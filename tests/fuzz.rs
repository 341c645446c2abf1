//! Property fuzzing of every decoder that reads bytes from peers: no panic, no runaway
//! allocation, and what is encoded decodes to the same thing. The case count is bounded for
//! the test suite; `PROPTEST_CASES=200000 cargo test --release --test fuzz` runs longer.

use std::collections::BTreeMap;

use feedscope::frame::{self, Item, Msg};
use feedscope::limits::Limits;
use feedscope::wire::{self, FeedKey};
use hypercore_protocol::schema::{Data, NoData, Range, Request, Synchronize};
use hypercore_schema::{DataBlock, Node, RequestBlock, RequestUpgrade};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn msg() -> impl Strategy<Value = Msg> {
    let ext = (
        "[A-Z_]{0,30}",
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(name, payload)| Msg::Extension { name, payload });
    let sync = (any::<u32>(), any::<u32>(), any::<u32>(), any::<[bool; 3]>()).prop_map(
        |(fork, length, remote_length, f)| {
            frame::core(Synchronize {
                fork: fork as u64,
                length: length as u64,
                remote_length: remote_length as u64,
                downloading: f[0],
                uploading: f[1],
                can_upgrade: f[2],
            })
        },
    );
    let request = (
        any::<u32>(),
        any::<Option<(u32, u8)>>(),
        any::<Option<(u32, u32)>>(),
    )
        .prop_map(|(id, block, upgrade)| {
            frame::core(Request {
                id: id as u64,
                fork: 0,
                block: block.map(|(index, nodes)| RequestBlock {
                    index: index as u64,
                    nodes: nodes as u64,
                }),
                hash: None,
                seek: None,
                upgrade: upgrade.map(|(start, length)| RequestUpgrade {
                    start: start as u64,
                    length: length as u64,
                }),
                manifest: false,
                priority: 0,
            })
        });
    let data = (
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..2000),
        0usize..4,
    )
        .prop_map(|(index, value, nodes)| {
            frame::core(Data {
                request: 1,
                fork: 0,
                block: Some(DataBlock {
                    index: index as u64,
                    value,
                    nodes: (0..nodes)
                        .map(|i| Node::new(i as u64, vec![7; 32], 10))
                        .collect(),
                }),
                hash: None,
                seek: None,
                upgrade: None,
            })
        });
    let small = prop_oneof![
        any::<u32>().prop_map(|r| frame::core(NoData { request: r as u64 })),
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(s, l, drop)| frame::core(Range {
            drop,
            start: s as u64,
            length: l as u64
        })),
    ];
    prop_oneof![ext, sync, request, data, small]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = frame::decode(&bytes);
    }

    #[test]
    fn frames_that_look_like_batches_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        prefix in prop_oneof![Just(vec![0u8, 0]), Just(vec![0u8, 1]), Just(vec![0u8, 2]), Just(vec![0u8, 3]), Just(vec![1u8, 9])],
    ) {
        let mut f = prefix;
        f.extend(body);
        let _ = frame::decode(&f);
    }

    #[test]
    fn encoded_batches_decode_to_the_same_messages(
        msgs in proptest::collection::vec((1u64..5, msg()), 1..12)
    ) {
        let bytes = frame::encode_messages(&msgs);
        let items = frame::decode(&bytes).unwrap();
        let back: Vec<(u64, Msg)> = items
            .into_iter()
            .map(|i| match i {
                Item::Message(c, Ok(m)) => (c, m),
                other => panic!("{other:?}"),
            })
            .collect();
        prop_assert_eq!(back, msgs);
    }

    #[test]
    fn a_corrupted_batch_loses_at_most_the_damaged_messages(
        msgs in proptest::collection::vec((1u64..3, msg()), 2..8),
        flip in any::<prop::sample::Index>(),
        to in any::<u8>(),
    ) {
        let mut bytes = frame::encode_messages(&msgs);
        let i = flip.index(bytes.len());
        bytes[i] = to;
        // Never a panic; whatever decodes is a list of items, each on its own.
        if let Ok(items) = frame::decode(&bytes) {
            prop_assert!(items.len() <= bytes.len());
        }
    }

    #[test]
    fn multifeed_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = wire::decode_handshake(&bytes, &Limits::DEFAULT);
        let _ = wire::decode_manifest(&bytes, &Limits::DEFAULT);
        let _ = wire::decode_keys(wire::EXT_REQUEST_FEEDS, &bytes, &Limits::DEFAULT);
    }

    #[test]
    fn json_shaped_bodies_never_panic(
        keys in proptest::collection::vec(prop_oneof!["[0-9a-f]{64}", "[0-9a-zA-Z]{0,70}"], 0..50),
        meta in proptest::collection::vec(("[0-9a-f]{64}", "[a-z]{0,10}"), 0..5),
    ) {
        let body = serde_json::json!({
            "keys": keys,
            "meta": meta.iter().cloned().collect::<BTreeMap<String, String>>(),
        });
        let list = wire::decode_manifest(body.to_string().as_bytes(), &Limits::DEFAULT).unwrap();
        for k in &list.keys {
            prop_assert!(FeedKey::parse(&k.to_hex()).is_ok());
        }
        prop_assert_eq!(list.keys.len() + list.rejected.len() <= keys.len(), true);
    }
}
