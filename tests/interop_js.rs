//! feedscope against the real JavaScript hypercore 10 peer in `tests/js`, over real TCP.

mod common;

use std::time::Duration;

use common::js::{digest, JsPeer};
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn has(events: &[Value], ty: &str, pred: impl Fn(&Value) -> bool) -> bool {
    events.iter().any(|v| v["type"] == ty && pred(v))
}

#[test]
fn js_offers_three_feeds_and_feedscope_downloads_every_block() {
    let (js_dir, fs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut js, addr) = JsPeer::listen(
        js_dir.path(),
        &["--feeds", "3", "--blocks", "1000", "--block-size", "1024"],
    );
    let keys: Vec<String> = (0..3).map(|i| js.feed_key(&format!("f{i}"))).collect();
    // feedscope dials, so it is the Noise initiator here.
    let mut fs = Node::start(fs_dir.path(), &["--connect", &addr]);
    for k in &keys {
        fs.wait_synced(k, 1000);
    }
    fs.quit();
    js.quit();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            cat(fs_dir.path(), k),
            catted(&blocks(&format!("f{i}"), 1000, 1024)),
            "feed f{i}"
        );
    }
}

#[test]
fn feedscope_offers_two_feeds_and_the_js_peer_verifies_them() {
    let (js_dir, fs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = blocks("one", 300, 100);
    let two = blocks("two", 5, 4000);
    let k1 = append_lines(fs_dir.path(), "one", &one);
    let k2 = append_lines(fs_dir.path(), "two", &two);
    // feedscope listens, so it is the Noise responder here.
    let (fs, addr) = Node::listen(fs_dir.path(), &[]);
    let mut js = JsPeer::start(js_dir.path(), &["--connect", &addr]);
    let s1 = js.wait_for("synced", |v| v["key"] == k1.as_str() && v["length"] == 300);
    let s2 = js.wait_for("synced", |v| v["key"] == k2.as_str() && v["length"] == 5);
    assert_eq!(s1["digest"], digest(&one).as_str());
    assert_eq!(s2["digest"], digest(&two).as_str());
    js.quit();
    fs.quit();
}

#[test]
fn live_appends_and_new_feeds_from_js_arrive_mid_session() {
    let (js_dir, fs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut js, addr) = JsPeer::listen(
        js_dir.path(),
        &["--feeds", "1", "--blocks", "10", "--block-size", "64"],
    );
    let f0 = js.feed_key("f0");
    let mut fs = Node::start(fs_dir.path(), &["--connect", &addr]);
    fs.wait_synced(&f0, 10);
    js.send(json!({"cmd": "append", "feed": "f0", "data": "live from js"}));
    fs.wait_synced(&f0, 11);
    js.send(json!({"cmd": "add_feed", "name": "late", "blocks": 20, "block_size": 512}));
    let late = js.feed_key("late");
    fs.wait_synced(&late, 20);
    fs.quit();
    js.quit();
    let mut expected = blocks("f0", 10, 64);
    expected.push("live from js".into());
    assert_eq!(cat(fs_dir.path(), &f0), catted(&expected));
    assert_eq!(cat(fs_dir.path(), &late), catted(&blocks("late", 20, 512)));
}

#[test]
fn large_blocks_cross_in_both_directions() {
    let (js_dir, fs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = blocks("mine", 6, 1024 * 1024);
    let ours_key = append_lines(fs_dir.path(), "mine", &ours);
    let (mut js, addr) = JsPeer::listen(
        js_dir.path(),
        &["--feeds", "1", "--blocks", "40", "--block-size", "65536"],
    );
    let theirs = js.feed_key("f0");
    let mut fs = Node::start(fs_dir.path(), &["--connect", &addr]);
    fs.wait_synced(&theirs, 40);
    let got = js.wait_for("synced", |v| {
        v["key"] == ours_key.as_str() && v["length"] == 6
    });
    assert_eq!(got["digest"], digest(&ours).as_str());
    fs.quit();
    js.quit();
    assert_eq!(
        cat(fs_dir.path(), &theirs),
        catted(&blocks("f0", 40, 65536))
    );
}

/// A hostile or incompatible JS peer must be reported and must not disturb a good one.
fn hostile(flags: &[&str], expect: impl Fn(&[Value]) -> bool, what: &str) {
    let (bad_dir, good_dir, fs_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let secret_blocks = blocks("secret", 3, 10);
    let secret = append_lines(fs_dir.path(), "secret", &secret_blocks);
    let (mut fs, addr) = Node::listen(fs_dir.path(), &[]);
    let mut args = vec!["--connect", addr.as_str(), "--feeds", "1", "--blocks", "2"];
    args.extend_from_slice(flags);
    let bad = JsPeer::start(bad_dir.path(), &args);
    let deadline = std::time::Instant::now() + WAIT;
    while !expect(&fs.seen) {
        assert!(
            std::time::Instant::now() < deadline,
            "feedscope never reported {what}: {:#?}",
            fs.seen
        );
        let _ = fs.wait_for_within("__none__", Duration::from_millis(100), |_| false);
    }
    // A good peer is still served afterwards.
    let mut good = JsPeer::start(good_dir.path(), &["--connect", &addr]);
    let s = good.wait_for("synced", |v| {
        v["key"] == secret.as_str() && v["length"] == 3
    });
    assert_eq!(s["digest"], digest(&secret_blocks).as_str());
    good.quit();
    let bad_events = bad.quit();
    let events = fs.quit();
    assert!(
        !has(&events, "error", |v| v["kind"] == "panic"),
        "no peer task panicked"
    );
    // Nothing was given away that was not offered to that very peer.
    for v in events.iter().filter(|v| v["type"] == "replicate_sent") {
        let peer = &v["peer"];
        let offered: Vec<&Value> = events
            .iter()
            .filter(|o| o["type"] == "offer_sent" && &o["peer"] == peer)
            .flat_map(|o| o["keys"].as_array().unwrap())
            .collect();
        for k in v["keys"].as_array().unwrap() {
            assert!(
                offered.contains(&k),
                "served {k} to peer {peer} without offering it"
            );
        }
    }
    // The hostile peer asked for something never offered, or sent junk: it got none of it.
    assert!(!has(&bad_events, "synced", |v| v["key"] != json!(secret)
        && !events.iter().any(
            |o| o["type"] == "offer_sent" && o["keys"].as_array().unwrap().contains(&v["key"])
        )));
}

fn warned(kind: &'static str) -> impl Fn(&[Value]) -> bool {
    move |evs| {
        evs.iter()
            .any(|v| (v["type"] == "warning" || v["type"] == "error") && v["kind"] == kind)
    }
}

#[test]
fn a_js_peer_with_another_key_is_reported() {
    hostile(
        &["--key", &"22".repeat(32)],
        warned("different_multifeed_key"),
        "a different key",
    );
}

#[test]
fn an_old_version_is_refused() {
    hostile(
        &["--version", "4.0.0"],
        warned("incompatible"),
        "version 4.0.0",
    );
}

#[test]
fn another_client_is_refused() {
    hostile(
        &["--client", "OTHER"],
        warned("incompatible"),
        "client OTHER",
    );
}

#[test]
fn garbage_json_is_reported() {
    hostile(&["--garbage"], warned("malformed"), "a non-JSON manifest");
}

#[test]
fn non_hex_keys_are_dropped() {
    hostile(&["--non-hex-keys"], warned("invalid_key"), "invalid keys");
}

#[test]
fn a_huge_manifest_is_refused() {
    hostile(
        &["--huge-manifest", "200000"],
        |evs| warned("oversized")(evs) || warned("malformed")(evs),
        "a 200,000-key manifest",
    );
}

#[test]
fn a_request_for_a_never_offered_key_is_refused() {
    hostile(
        &["--request-unoffered"],
        warned("refused_request"),
        "a request for an unoffered key",
    );
}

/// Past one bitfield page (32,768 blocks), where the `hypercore` crate could not reopen a core.
const LONG: usize = 40_001;

#[test]
fn a_js_feed_past_one_bitfield_page_is_downloaded_and_reopens() {
    let (js_dir, fs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut js, addr) = JsPeer::listen(
        js_dir.path(),
        &[
            "--feeds",
            "1",
            "--blocks",
            &LONG.to_string(),
            "--block-size",
            "16",
        ],
    );
    let key = js.feed_key("f0");
    let mut fs = Node::start(fs_dir.path(), &["--connect", &addr]);
    fs.wait_for_within("feed_synced", Duration::from_secs(300), |v| {
        v["key"] == key.as_str() && v["length"] == LONG as u64
    })
    .expect("the long feed syncs");
    fs.quit();
    js.quit();
    assert_eq!(cat(fs_dir.path(), &key), catted(&blocks("f0", LONG, 16)));
}

#[test]
fn a_feedscope_feed_past_one_bitfield_page_verifies_in_js() {
    let (js_dir, fs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks("long", LONG, 16);
    let key = append_lines(fs_dir.path(), "long", &lines);
    let (fs, addr) = Node::listen(fs_dir.path(), &[]);
    // The JS peer's own bound on a sync is 60 s; a loaded machine needs more for 40,001 blocks.
    let mut js = JsPeer::start(
        js_dir.path(),
        &["--connect", &addr, "--timeout-ms", "300000"],
    );
    let synced = js
        .wait_for_within("synced", Duration::from_secs(300), |v| {
            v["key"] == key.as_str() && v["length"] == LONG as u64
        })
        .expect("JS syncs the long feed");
    assert_eq!(synced["digest"], digest(&lines).as_str());
    js.quit();
    fs.quit();
}

/// One feed of a million 1 KiB blocks, written by JS hypercore 10, downloaded by feedscope,
/// and downloaded again from feedscope by a second JS peer: both copies check against what
/// the writer appended. A gigabyte at JS hypercore's pace takes about a quarter of an hour,
/// so the default run leaves it out: `cargo test --release --locked --test interop_js --
/// --ignored` runs it (`FEEDSCOPE_MILLION=N` sets another block count).
#[test]
#[ignore = "a gigabyte through JS hypercore 10 takes about 15 minutes; run with --ignored"]
fn a_million_blocks_go_from_js_to_feedscope_and_on_to_another_js_peer() {
    let n: usize = std::env::var("FEEDSCOPE_MILLION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let hour = Duration::from_secs(3600);
    let js_timeout = hour.as_millis().to_string();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (writer_dir, fs_dir, reader_dir) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    let (mut writer, writer_addr) = JsPeer::listen(
        writer_dir,
        &[
            "--feeds",
            "1",
            "--blocks",
            &n.to_string(),
            "--block-size",
            "1024",
            "--timeout-ms",
            &js_timeout,
        ],
    );
    let key = writer
        .wait_for_within("feed_created", hour, |v| v["name"] == "f0")
        .expect("the JS writer appends its blocks")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = kit::blocks("f0", n, 1024).fold(Sha256::new(), |mut h, b| {
        h.update(b);
        h
    });
    let expected = hex::encode(expected.finalize());

    let started = std::time::Instant::now();
    let (mut fs, fs_addr) = Node::listen(fs_dir, &["--connect", &writer_addr]);
    fs.wait_for_within("feed_synced", hour, |v| {
        v["key"] == key.as_str() && v["length"] == n as u64
    })
    .expect("feedscope downloads the whole feed from JS");
    eprintln!("JS → feedscope: {n} blocks in {:?}", started.elapsed());

    let started = std::time::Instant::now();
    let mut reader = JsPeer::start(
        reader_dir,
        &["--connect", &fs_addr, "--timeout-ms", &js_timeout],
    );
    let synced = reader
        .wait_for_within("synced", hour, |v| {
            v["key"] == key.as_str() && v["length"] == n as u64
        })
        .expect("the second JS peer downloads the whole feed from feedscope");
    eprintln!("feedscope → JS: {n} blocks in {:?}", started.elapsed());
    assert_eq!(synced["digest"], expected.as_str(), "the JS reader's copy");
    reader.quit();
    fs.quit();
    writer.quit();

    // feedscope's copy, read back after a reopen.
    let row = feeds(fs_dir)
        .into_iter()
        .find(|f| f["key"] == key.as_str())
        .expect("feedscope lists the feed");
    assert_eq!(row["held"], n as u64);
    let feed_key = feedscope::wire::FeedKey::parse(&key).unwrap();
    let held = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::engines::held_digest(fs_dir, &feed_key, n as u64))
        .expect("feedscope's copy reads back");
    assert_eq!(held, expected, "feedscope's copy");
}

/// A JS writer that truncates a feed starts a new fork. feedscope does not follow it: it
/// says so once, keeps the copy it verified, and asks that peer for nothing that would be
/// refused.
#[test]
fn a_feed_truncated_by_its_js_writer_is_told_once_and_the_copy_is_kept() {
    let (js_dir, fs_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut js, addr) = JsPeer::listen(
        js_dir.path(),
        &["--feeds", "1", "--blocks", "16", "--block-size", "64"],
    );
    let key = js.feed_key("f0");
    let mut fs = Node::start(fs_dir.path(), &["--connect", &addr]);
    fs.wait_synced(&key, 16);
    js.send(json!({"cmd": "truncate", "feed": "f0", "length": 10}));
    js.wait_for("truncated", |v| v["fork"] == 1);
    let warning = fs.wait_for("warning", |v| v["kind"] == "truncated");
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("fork 1") && message.contains("length 16"),
        "{message}"
    );
    // The writer goes on at its new fork: nothing new is told, nothing is refused.
    js.send(json!({"cmd": "append", "feed": "f0", "data": "after the cut"}));
    js.wait_for("appended", |v| v["length"] == 11);
    std::thread::sleep(Duration::from_millis(500));
    let events = fs.quit();
    js.quit();
    let problems: Vec<&Value> = events
        .iter()
        .filter(|v| v["type"] == "warning" || v["type"] == "error")
        .collect();
    assert_eq!(problems.len(), 1, "one warning, no more: {problems:#?}");
    assert_eq!(cat(fs_dir.path(), &key), catted(&blocks("f0", 16, 64)));
}
