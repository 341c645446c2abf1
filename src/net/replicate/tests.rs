//! The driver on real stores: what the peer task sees of a channel.

use super::*;
use crate::store::Store;
use hypercore_protocol::schema::{NoData, Range, Synchronize};
use hypercore_schema::{DataBlock, DataUpgrade, RequestBlock, RequestUpgrade};

/// The upgrade part of the writer's Data answering `upgrade`.
async fn wire_proof(
    writer: &crate::store::Feed,
    block: Option<RequestBlock>,
    upgrade: Option<RequestUpgrade>,
) -> Data {
    let p = writer
        .core
        .lock()
        .await
        .proof(&fcore::Request {
            block: block.map(|b| fcore::Want {
                index: b.index,
                nodes: b.nodes,
            }),
            hash: None,
            upgrade: upgrade.map(|u| (u.start, u.length)),
        })
        .unwrap();
    proof_to_wire(p, 0, 0)
}

fn sync(length: u64) -> Message {
    Message::Synchronize(Synchronize {
        fork: 0,
        length,
        remote_length: 0,
        downloading: true,
        uploading: true,
        can_upgrade: true,
    })
}

fn requests(out: &Outcome) -> Vec<Request> {
    out.send
        .iter()
        .filter_map(|m| match m {
            Msg::Core(Message::Request(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_upgrade_the_peer_cannot_give_is_asked_again_only_after_its_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let (feed, _) = store
        .get_or_create_replica(
            FeedKey(
                ed25519_dalek::SigningKey::from_bytes(&rand::random())
                    .verifying_key()
                    .to_bytes(),
            ),
            None,
        )
        .await
        .unwrap();
    let mut ch = FeedChannel::new(feed, 1);
    let out = ch.on_message(sync(5)).await;
    let up = requests(&out);
    assert_eq!(up.len(), 1);
    assert!(up[0].upgrade.is_some());
    let out = ch
        .on_message(Message::NoData(NoData { request: up[0].id }))
        .await;
    assert!(requests(&out).is_empty(), "no request storm after NoData");
    let out = ch.on_message(sync(5)).await;
    assert_eq!(requests(&out).len(), 1, "asked again after the next sync");
}

#[tokio::test]
async fn requests_with_overflowing_ranges_get_no_data_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let (feed, _) = store.create_writable("w").await.unwrap();
    feed.append(&[b"x"]).await.unwrap();
    let mut ch = FeedChannel::new(feed, 1);
    let out = ch
        .on_message(Message::Request(Request {
            id: 7,
            fork: 0,
            block: Some(RequestBlock { index: 0, nodes: 0 }),
            hash: None,
            seek: None,
            upgrade: Some(RequestUpgrade {
                start: u64::MAX,
                length: 2,
            }),
            manifest: false,
            priority: 0,
        }))
        .await;
    assert!(out
        .send
        .iter()
        .any(|m| matches!(m, Msg::Core(Message::NoData(n)) if n.request == 7)));
}

async fn replica_of(key: FeedKey) -> (tempfile::TempDir, FeedChannel) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let (feed, _) = store.get_or_create_replica(key, None).await.unwrap();
    (dir, FeedChannel::new(feed, 1))
}

async fn replica() -> (tempfile::TempDir, FeedChannel) {
    replica_of(FeedKey(
        ed25519_dalek::SigningKey::from_bytes(&rand::random())
            .verifying_key()
            .to_bytes(),
    ))
    .await
}

fn data(request: u64, block: Option<DataBlock>, upgrade: Option<DataUpgrade>) -> Message {
    Message::Data(Data {
        request,
        fork: 0,
        block,
        hash: None,
        seek: None,
        upgrade,
    })
}

fn upgrade(start: u64, length: u64) -> DataUpgrade {
    DataUpgrade {
        start,
        length,
        nodes: Vec::new(),
        additional_nodes: Vec::new(),
        signature: vec![0; 64],
    }
}

#[tokio::test]
async fn malformed_upgrades_are_refused_before_the_proof_code_sees_them() {
    for (start, length) in [(0, 0), (u64::MAX, 2), (1, 3), (0, u64::MAX / 2)] {
        let (_dir, mut ch) = replica().await;
        let up = requests(&ch.on_message(sync(5)).await);
        let out = ch
            .on_message(data(up[0].id, None, Some(upgrade(start, length))))
            .await;
        let w = out.warning.expect("a warning names the fault");
        assert!(w.contains("does not extend our length 0"), "{w}");
        assert!(!out.grew);
        // The core still answers: nothing inside it panicked.
        assert_eq!(ch.feed().core.lock().await.info().length, 0);
        assert!(
            requests(&ch.on_message(sync(6)).await)[0].upgrade.is_some(),
            "asked again after the next sync"
        );
    }
}

#[tokio::test]
async fn answers_that_do_not_match_their_request_are_refused() {
    let (_dir, mut ch) = replica().await;
    let up = requests(&ch.on_message(sync(5)).await);
    let block = DataBlock {
        index: 0,
        value: b"x".to_vec(),
        nodes: Vec::new(),
    };
    let out = ch.on_message(data(up[0].id, Some(block), None)).await;
    assert!(out
        .warning
        .unwrap()
        .contains("block that was not asked for"));
    let out = ch.on_message(data(up[0].id, None, None)).await;
    assert!(
        out.warning.unwrap().contains("not requested"),
        "a replayed answer is refused"
    );
}

#[tokio::test]
async fn only_blocks_the_peer_says_it_holds_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let (writer, _) = store.create_writable("w").await.unwrap();
    let lines: Vec<String> = (0..10).map(|i| format!("block {i}")).collect();
    writer.append(&lines).await.unwrap();
    let (_dir, mut ch) = replica_of(writer.entry.key).await;
    let up = requests(&ch.on_message(sync(10)).await);
    let proof = wire_proof(&writer, None, up[0].upgrade.clone()).await;
    let range = |start, length| {
        Message::Range(Range {
            drop: false,
            start,
            length,
        })
    };
    ch.on_message(range(0, 3)).await;
    let out = ch.on_message(data(up[0].id, None, proof.upgrade)).await;
    assert!(out.warning.is_none(), "{:?}", out.warning);
    let asked = |out: &Outcome| -> Vec<u64> {
        requests(out)
            .iter()
            .filter_map(|r| r.block.as_ref().map(|b| b.index))
            .collect()
    };
    assert_eq!(asked(&out), [0, 1, 2]);
    // A block it then says it lacks is not asked again until a Range covers it.
    let id = requests(&out)[1].id;
    let out = ch.on_message(Message::NoData(NoData { request: id })).await;
    assert!(asked(&out).is_empty());
    let out = ch.on_message(range(7, 2)).await;
    assert_eq!(asked(&out), [7, 8], "a later span, and not block 1 again");
    let out = ch.on_message(range(1, 1)).await;
    assert_eq!(asked(&out), [1]);
}

/// Replicates up to `total` blocks into a replica the way the download loop does: the
/// writer grows by each step's count, the replica upgrades to it and asks for a batch of
/// blocks, every count of nodes worked out before any of the batch's answers arrive. Each
/// count must be at least the core's own, and each proof made with it must verify.
async fn fetch_with_counted_nodes(total: u64, steps: Vec<(u64, Vec<u64>, bool)>) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = Store::open(a.path()).await.unwrap();
    let (w, _) = src.create_writable("w").await.unwrap();
    let blocks: Vec<Vec<u8>> = (0..total).map(|i| i.to_le_bytes().to_vec()).collect();
    let key = w.entry.key;
    let mut dst = Some(Store::open(b.path()).await.unwrap());
    let mut r = dst
        .as_ref()
        .unwrap()
        .get_or_create_replica(key, None)
        .await
        .unwrap()
        .0;
    let mut wc = w.core.lock().await;
    let mut length = 0;
    for (grow, picks, reopen) in steps {
        if reopen {
            r.sync().await.unwrap();
            drop((r, dst.take()));
            let store = Store::open(b.path()).await.unwrap();
            assert!(store.broken.is_empty(), "{:?}", store.broken);
            r = store.get(&key).unwrap();
            dst = Some(store);
        }
        let mut rc = r.core.lock().await;
        let to = (length + grow).min(total);
        if to > length {
            // The writer grows as it goes, as a live feed does.
            wc.append(&blocks[length as usize..to as usize]).unwrap();
            let p = wc
                .proof(&fcore::Request {
                    upgrade: Some((length, to - length)),
                    ..fcore::Request::default()
                })
                .unwrap();
            assert!(rc.apply(p).unwrap());
            length = to;
        }
        let info = rc.info();
        assert_eq!(info.length, length);
        let mut asked = Vec::new();
        for i in picks.into_iter().map(|p| p % length.max(1)) {
            if length == 0 || rc.has(i) || asked.iter().any(|&(j, _)| j == i) {
                continue;
            }
            let nodes = nodes_to_ask(i, info.length, info.contiguous_length);
            let exact = rc.missing_nodes(i).unwrap();
            assert!(nodes >= exact, "block {i} of {length}: {nodes} < {exact}");
            // Right after the block before it (held, or answered first), as the pump asks.
            let before = i > 0 && (rc.has(i - 1) || asked.last().is_some_and(|&(j, _)| j == i - 1));
            let nodes = if before {
                nodes_after(i, length).min(nodes)
            } else {
                nodes
            };
            asked.push((i, nodes));
        }
        for (i, nodes) in asked {
            let exact = rc.missing_nodes(i).unwrap();
            assert!(
                nodes >= exact,
                "block {i} of {length} when its answer lands: {nodes} < {exact}"
            );
            let p = wc
                .proof(&fcore::Request {
                    block: Some(fcore::Want { index: i, nodes }),
                    ..fcore::Request::default()
                })
                .unwrap();
            let applied = rc.apply(p);
            assert!(
                matches!(applied, Ok(true)),
                "block {i} of {length} with {nodes} nodes: {applied:?}"
            );
            assert_eq!(rc.get(i).unwrap().unwrap(), blocks[i as usize]);
        }
    }
}

#[tokio::test]
async fn counted_nodes_verify_in_order_and_out_of_order() {
    let all: Vec<u64> = (0..100).collect();
    let backwards: Vec<u64> = (0..100).rev().collect();
    fetch_with_counted_nodes(100, vec![(100, all, false)]).await;
    fetch_with_counted_nodes(100, vec![(100, backwards, false)]).await;
    let steps = (0..10)
        .map(|s| (7, (0..7).map(|i| s * 7 + i).collect(), s % 3 == 2))
        .collect();
    fetch_with_counted_nodes(70, steps).await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn counted_nodes_are_never_too_few(
        total in 1u64..300,
        steps in proptest::collection::vec(
            (1u64..120, proptest::collection::vec(0u64..300, 0..60), proptest::bool::weighted(0.2)),
            1..6,
        ),
        runs in proptest::bool::ANY,
    ) {
        // In runs, each pick is followed by the two blocks after it, as the pump asks.
        let steps = steps
            .into_iter()
            .map(|(grow, picks, reopen)| {
                let picks = if runs {
                    picks.into_iter().flat_map(|p| [p, p + 1, p + 2]).collect()
                } else {
                    picks
                };
                (grow, picks, reopen)
            })
            .collect();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fetch_with_counted_nodes(total, steps));
    }
}

fn core_messages(out: Outcome, into: &mut Vec<Message>, warnings: &mut Vec<String>) {
    warnings.extend(out.warning);
    into.extend(out.send.into_iter().filter_map(|m| match m {
        Msg::Core(m) => Some(m),
        _ => None,
    }));
}

/// Replicates `blocks` from a writer's channel to a replica's until both fall silent. With
/// `reverse`, each batch of answers reaches the replica last first. Returns the warnings,
/// the block requests and the proof nodes they asked for.
async fn shuttle(blocks: &[Vec<u8>], reverse: bool) -> (Vec<String>, usize, u64, FeedChannel) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = Store::open(a.path()).await.unwrap();
    let (w, _) = src.create_writable("w").await.unwrap();
    w.append(blocks).await.unwrap();
    let dst = Store::open(b.path()).await.unwrap();
    let (r, _) = dst.get_or_create_replica(w.entry.key, None).await.unwrap();
    let (mut server, mut client) = (FeedChannel::new(w, 1), FeedChannel::new(r, 2));
    let (mut to_client, mut to_server, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    core_messages(server.on_open().await, &mut to_client, &mut warnings);
    core_messages(client.on_open().await, &mut to_server, &mut warnings);
    let (mut requests, mut nodes) = (0, 0);
    for _ in 0..10_000 {
        if to_client.is_empty() && to_server.is_empty() {
            break;
        }
        for m in std::mem::take(&mut to_server) {
            if let Message::Request(Request { block: Some(b), .. }) = &m {
                requests += 1;
                nodes += b.nodes;
            }
            core_messages(server.on_message(m).await, &mut to_client, &mut warnings);
        }
        let (mut answers, others): (Vec<Message>, Vec<Message>) = std::mem::take(&mut to_client)
            .into_iter()
            .partition(|m| matches!(m, Message::Data(_)));
        if reverse {
            answers.reverse();
        }
        for m in others.into_iter().chain(answers) {
            core_messages(client.on_message(m).await, &mut to_server, &mut warnings);
        }
    }
    {
        let mut rc = client.feed().core.lock().await;
        assert_eq!(rc.info().contiguous_length, blocks.len() as u64);
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(&rc.get(i as u64).unwrap().unwrap(), block, "block {i}");
        }
    }
    (warnings, requests, nodes, client)
}

#[tokio::test]
async fn blocks_asked_for_in_a_row_carry_few_nodes_and_answers_out_of_order_still_land() {
    let blocks: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_le_bytes().repeat(20)).collect();
    let (warnings, requests, nodes, client) = shuttle(&blocks, false).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(requests, blocks.len(), "each block asked for once");
    assert!(client.machine.in_order());
    // Counted from the contiguous length alone, a window of 256 asks for about 8 nodes a
    // block here; counted from the block before, about 2; with the halves beside its path
    // stored as well, about 1.
    assert!(
        nodes <= requests as u64 * 5 / 4,
        "{nodes} nodes for {requests} blocks"
    );

    // Last first: the short counts miss, and the channel goes back to full counts without
    // a warning, since the peer did nothing wrong.
    let (warnings, requests, _, client) = shuttle(&blocks, true).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!client.machine.in_order());
    assert!(requests < 2 * blocks.len(), "{requests} requests");
}
