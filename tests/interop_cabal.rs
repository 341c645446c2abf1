//! feedscope against real multifeed 6 (hypercore 9 on hypercore-protocol 8, Cabal's wire),
//! run from `tests/js-cabal` (installed by the tests on first use): both directions, both
//! Noise roles, live and not live, every block checked on the side that receives it.

mod common;

use common::js_cabal::CabalPeer;
use common::*;
use serde_json::{json, Value};

fn js_lines(label: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{label}:{i}")).collect()
}

fn problems(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "error" || e["type"] == "warning")
        .collect()
}

#[test]
fn a_live_multifeed_6_peer_and_feedscope_exchange_feeds_and_follow_appends() {
    let dir = tempfile::tempdir().unwrap();
    let ours = blocks("fs", 5, 300);
    let our_key = append_hc9(dir.path(), "fs-log", &ours);
    let expect = format!("{our_key}:5");
    // The JS side appends three blocks once it holds and has verified ours.
    let (mut js, addr) = CabalPeer::listen(&[
        "--blocks",
        "30",
        "--label",
        "js",
        "--live",
        "--expect",
        &expect,
        "--append-after-sync",
        "3",
    ]);
    let js_key = js.wait_for("feed")["key"].as_str().unwrap().to_string();
    let mut node = Node::start(dir.path(), &["--connect", &addr, "--wire", "hc9"]);
    let connected = node.wait_for("peer_connected", |_| true);
    assert_eq!(connected["wire"], "hc9");
    let hs = node.wait_for("handshake_received", |_| true);
    assert_eq!(hs["version"], "4.0.0");
    node.wait_synced(&js_key, 30);

    let got = js.wait_for("synced");
    assert_eq!(got["key"], our_key);
    assert_eq!(
        got["blocks"],
        json!(ours),
        "real hypercore 9 verified and read ours"
    );
    js.wait_for("appended");
    node.wait_synced(&js_key, 33);

    let events = node.quit();
    assert!(problems(&events).is_empty(), "{:#?}", problems(&events));
    let mut theirs = js_lines("js", 30);
    theirs.extend(js_lines("js:live", 3));
    assert_eq!(cat(dir.path(), &js_key), catted(&theirs));
}

#[test]
fn a_multifeed_6_peer_that_is_not_live_dials_in_syncs_and_ends_the_session_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ours = blocks("served", 40, 1000);
    let our_key = append_hc9(dir.path(), "served", &ours);
    let (mut node, addr) = Node::listen(dir.path(), &[]);
    let expect = format!("{our_key}:40");
    let mut js = CabalPeer::start(&[
        "--connect",
        &addr,
        "--blocks",
        "4",
        "--label",
        "dialer",
        "--expect",
        &expect,
    ]);
    let js_key = js.wait_for("feed")["key"].as_str().unwrap().to_string();
    let got = js.wait_for("synced");
    assert_eq!(got["blocks"], json!(ours));
    node.wait_synced(&js_key, 4);
    // Not live: multifeed closes every channel, then the stream; that is an ordinary end.
    js.wait_for("end");
    let left = node.wait_for("peer_disconnected", |_| true);
    let events = node.quit();
    assert!(problems(&events).is_empty(), "{:#?}", problems(&events));
    assert!(
        !left["reason"].as_str().unwrap().contains("error"),
        "{left}"
    );
    assert_eq!(cat(dir.path(), &js_key), catted(&js_lines("dialer", 4)));
}

#[test]
fn chat_messages_posted_in_a_real_cabal_arrive_in_feedscopes_storage() {
    let dir = tempfile::tempdir().unwrap();
    let cabal_key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let (mut js, addr) = CabalPeer::listen(&[
        "--cabal",
        cabal_key,
        "--post",
        "hello from cabal",
        "--post",
        "second message",
        "--live",
    ]);
    let writer = js.wait_for("feed")["key"].as_str().unwrap().to_string();
    let mut node = Node::start(
        dir.path(),
        &["--connect", &addr, "--wire", "hc9", "--key", cabal_key],
    );
    node.wait_synced(&writer, 2);
    let events = node.quit();
    assert!(problems(&events).is_empty(), "{:#?}", problems(&events));
    // The Cabal peer named itself by its writer key (its `peer-id`), as Cabal's swarm does.
    let named: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "peer_named")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["name"], writer.as_str());
    let text = String::from_utf8(cat(dir.path(), &writer)).unwrap();
    let posts: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0]["type"], "chat/text");
    assert_eq!(posts[0]["content"]["text"], "hello from cabal");
    assert_eq!(posts[1]["content"]["text"], "second message");
}

#[test]
fn a_multifeed_6_peer_of_another_key_is_told_apart_and_a_good_peer_is_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_other, other_addr) = CabalPeer::listen(&["--key", &"11".repeat(32), "--blocks", "2"]);
    let (mut good, good_addr) = CabalPeer::listen(&["--blocks", "3", "--label", "good"]);
    let good_key = good.wait_for("feed")["key"].as_str().unwrap().to_string();
    let mut node = Node::start(
        dir.path(),
        &[
            "--connect",
            &other_addr,
            "--connect",
            &good_addr,
            "--wire",
            "hc9",
        ],
    );
    // The other side stops at our root channel ("Exchange key did not match remote"), so the
    // root never opens here: named as another key, not as a broken connection.
    let err = node.wait_for("error", |e| e["kind"] == "different_multifeed_key");
    assert!(err["message"].as_str().unwrap().contains("key"), "{err}");
    node.wait_synced(&good_key, 3);
    node.quit();
    assert_eq!(cat(dir.path(), &good_key), catted(&js_lines("good", 3)));
}

#[test]
fn a_real_cabal_peer_receives_feedscopes_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let cabal_key = "89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567";
    // Cabal's views read every feed as chat messages: ours holds one.
    let post = json!({
        "type": "chat/text",
        "content": { "text": "hello from feedscope", "channel": "default" },
        "timestamp": 1_700_000_000_000u64,
    })
    .to_string();
    let our_key = append_hc9(dir.path(), "me", &[post]);
    let (mut js, addr) = CabalPeer::listen(&["--cabal", cabal_key, "--post", "hi", "--live"]);
    let writer = js.wait_for("feed")["key"].as_str().unwrap().to_string();
    let mut node = Node::start(
        dir.path(),
        &["--connect", &addr, "--wire", "hc9", "--key", cabal_key],
    );
    let named = js.wait_for("peer-id");
    assert_eq!(
        named["id"],
        our_key.as_str(),
        "cabal-core names us by our writer"
    );
    node.wait_synced(&writer, 1);
    let events = node.quit();
    assert!(problems(&events).is_empty(), "{:#?}", problems(&events));
}
