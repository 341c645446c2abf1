//! A hostile peer built from feedscope's own transport and framing: it speaks the protocol
//! correctly but serves blocks whose bytes were altered after the proof was made.

mod common;

use std::time::Duration;

use common::*;
use feedscope::frame::{self, core, Item, Msg};
use feedscope::net::peer::capability;
use feedscope::net::transport::Transport;
use feedscope::store::Store;
use feedscope::wire::{self, FeedKey, Handshake};
use hypercore_protocol::discovery_key;
use hypercore_protocol::schema::{Data, Range, Synchronize};
use hypercore_protocol::Message;

fn ext(name: &str, payload: Vec<u8>) -> Msg {
    Msg::Extension {
        name: name.into(),
        payload,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_that_do_not_verify_are_rejected_and_nothing_is_written() {
    let (evil_dir, victim_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The hostile peer holds a real feed, so its upgrade proofs are genuine.
    let store = Store::open(evil_dir.path()).await.unwrap();
    let (feed, _) = store.create_writable("bait").await.unwrap();
    let lines = blocks("bait", 8, 100);
    feed.core.lock().await.append_batch(&lines).await.unwrap();
    let key: FeedKey = feed.entry.key;
    let root = FeedKey::parse(wire::DEFAULT_MULTIFEED_KEY).unwrap();

    let victim_path = victim_dir.path().to_path_buf();
    let (mut victim, addr) = tokio::task::spawn_blocking(move || Node::listen(&victim_path, &[]))
        .await
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut t = Transport::handshake(tcp, true).await.unwrap();
    let hash = t.handshake_hash().to_vec();
    let open = |local: u64, k: &FeedKey| {
        frame::encode_open(local, &discovery_key(&k.0), &capability(true, &hash, &k.0))
    };
    t.send(open(1, &root)).unwrap();
    t.send(frame::encode_messages(&[(
        1,
        ext(
            wire::EXT_HANDSHAKE,
            wire::encode_handshake(&Handshake::ours()),
        ),
    )]))
    .unwrap();

    let mut tampered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tampered < 3 {
        let frames = tokio::time::timeout_at(deadline, t.recv())
            .await
            .expect("the victim keeps talking")
            .expect("the connection stays up");
        for f in frames {
            for item in frame::decode(&f).unwrap() {
                let Item::Message(_, Ok(m)) = item else {
                    continue;
                };
                match m {
                    Msg::Extension { name, .. } if name == wire::EXT_HANDSHAKE => {
                        let body = wire::encode_manifests(&[key], &Default::default()).remove(0);
                        t.send(frame::encode_messages(&[(
                            1,
                            ext(wire::EXT_MANIFEST, body),
                        )]))
                        .unwrap();
                    }
                    Msg::Extension { name, .. } if name == wire::EXT_REQUEST_FEEDS => {
                        t.send(frame::encode_messages(&[(
                            1,
                            ext(wire::EXT_REPLICATE_FEEDS, wire::encode_keys(&[key])),
                        )]))
                        .unwrap();
                        t.send(open(2, &key)).unwrap();
                        t.send(frame::encode_messages(&[
                            (
                                2,
                                core(Synchronize {
                                    fork: 0,
                                    length: 8,
                                    remote_length: 0,
                                    downloading: true,
                                    uploading: true,
                                    can_upgrade: true,
                                }),
                            ),
                            (
                                2,
                                core(Range {
                                    drop: false,
                                    start: 0,
                                    length: 8,
                                }),
                            ),
                        ]))
                        .unwrap();
                    }
                    Msg::Core(Message::Request(r)) => {
                        let proof = feed
                            .core
                            .lock()
                            .await
                            .create_proof(r.block.clone(), None, None, r.upgrade.clone())
                            .await
                            .unwrap()
                            .unwrap();
                        let mut block = proof.block;
                        if let Some(b) = block.as_mut() {
                            b.value[0] ^= 0xff; // the lie
                            tampered += 1;
                        }
                        t.send(frame::encode_messages(&[(
                            2,
                            core(Data {
                                request: r.id,
                                fork: r.fork,
                                block,
                                hash: proof.hash,
                                seek: proof.seek,
                                upgrade: proof.upgrade,
                            }),
                        )]))
                        .unwrap();
                    }
                    _ => {}
                }
            }
        }
    }
    let warned = tokio::task::spawn_blocking(move || {
        let w = victim.wait_for("warning", |v| v["kind"] == "bad_data");
        let events = victim.quit();
        (w, events)
    })
    .await
    .unwrap();
    let (w, events) = warned;
    assert!(
        w["message"].as_str().unwrap().contains("does not verify"),
        "{w}"
    );
    assert!(
        !events
            .iter()
            .any(|v| v["type"] == "feed_synced" && v["key"] == key.to_hex().as_str()),
        "a forged feed must never count as synced"
    );
    // The replica exists (the upgrade was genuine) but holds none of the forged blocks.
    let listed = feeds(victim_dir.path());
    let replica = listed
        .iter()
        .find(|f| f["key"] == key.to_hex().as_str())
        .unwrap();
    assert_eq!(replica["writable"], false);
    let out = feedscope(
        &[
            "cat",
            "--storage",
            victim_dir.path().to_str().unwrap(),
            "--key",
            &key.to_hex(),
        ],
        None,
    );
    assert!(!out.status.success(), "forged blocks were written");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not downloaded"));
}
