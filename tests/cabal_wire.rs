//! Cabal's wire (multifeed 6 on hypercore-protocol 8, "hc9") between feedscope processes:
//! hypercore 9 feeds offered, replicated, verified and followed live, and one listener that
//! serves both wire generations on one port.

mod common;

use common::*;
use serde_json::json;

fn wire_of(storage: &std::path::Path, key: &str) -> String {
    feeds(storage)
        .into_iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("no feed {key}"))["wire"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn hc9_feeds_replicate_both_ways_and_follow_live_appends() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Two batches: the second signature covers a tree of two roots.
    let mut a_lines = blocks("a", 3, 40);
    let a_key = append_hc9(a_dir.path(), "a-notes", &a_lines);
    let more = blocks("a-more", 2, 700);
    append_hc9(a_dir.path(), "a-notes", &more);
    a_lines.extend(more);
    let b_lines = blocks("b", 20, 100);
    let b_key = append_hc9(b_dir.path(), "b-notes", &b_lines);
    // A hypercore 10 feed is never offered on the hc9 wire.
    let modern = append_lines(a_dir.path(), "modern", &blocks("m", 2, 10));
    assert_eq!(wire_of(a_dir.path(), &a_key), "hc9");
    assert_eq!(wire_of(a_dir.path(), &modern), "hc10");

    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr, "--wire", "hc9"]);
    let seen = b.wait_for("peer_connected", |_| true);
    assert_eq!(seen["wire"], "hc9");
    let seen = a.wait_for("peer_connected", |_| true);
    assert_eq!(
        seen["wire"], "hc9",
        "the listener told the wire from the first bytes"
    );
    let offer = b.wait_for("offer_received", |_| true);
    assert_eq!(offer["keys"], json!([a_key]), "only hc9 feeds are offered");
    b.wait_synced(&a_key, 5);
    a.wait_synced(&b_key, 20);

    a.send(json!({"cmd": "append", "feed": "a-notes", "data": "live on hc9"}));
    b.wait_synced(&a_key, 6);
    a_lines.push("live on hc9".into());

    let a_events = a.quit();
    let b_events = b.quit();
    for events in [&a_events, &b_events] {
        let problems: Vec<_> = events
            .iter()
            .filter(|e| e["type"] == "error" || e["type"] == "warning")
            .collect();
        assert!(problems.is_empty(), "{problems:#?}");
    }
    assert_eq!(cat(b_dir.path(), &a_key), catted(&a_lines));
    assert_eq!(cat(a_dir.path(), &b_key), catted(&b_lines));
    assert_eq!(wire_of(b_dir.path(), &a_key), "hc9");
    assert!(
        feeds(b_dir.path()).iter().all(|f| f["key"] != modern),
        "the hc10 feed never reached the hc9 peer"
    );
}

#[test]
fn one_listener_serves_both_wires_at_once() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let old = append_hc9(dirs[0].path(), "cabal-log", &blocks("old", 10, 64));
    let new = append_lines(dirs[0].path(), "modern-log", &blocks("new", 10, 64));
    let (mut server, addr) = Node::listen(dirs[0].path(), &[]);
    let mut hc9 = Node::start(dirs[1].path(), &["--connect", &addr, "--wire", "hc9"]);
    let mut hc10 = Node::start(dirs[2].path(), &["--connect", &addr]);
    hc9.wait_synced(&old, 10);
    hc10.wait_synced(&new, 10);
    let wires: Vec<String> = server
        .wait_count("peer_connected", 2, WAIT, |_| true)
        .iter()
        .map(|e| e["wire"].as_str().unwrap().to_string())
        .collect();
    assert!(
        wires.contains(&"hc9".to_string()) && wires.contains(&"hc10".to_string()),
        "{wires:?}"
    );
    server.quit();
    hc9.quit();
    hc10.quit();
    assert_eq!(cat(dirs[1].path(), &old), catted(&blocks("old", 10, 64)));
    assert_eq!(cat(dirs[2].path(), &new), catted(&blocks("new", 10, 64)));
    assert!(feeds(dirs[1].path()).iter().all(|f| f["key"] != new));
    assert!(feeds(dirs[2].path()).iter().all(|f| f["key"] != old));
}

#[test]
fn hc9_sessions_are_stepped_and_traced_like_hc10_ones() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_hc9(a_dir.path(), "notes", &blocks("s", 4, 10));
    let (mut a, addr) = Node::listen(a_dir.path(), &["--step", "--trace-wire"]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr, "--wire", "hc9"]);
    // One message per step, in arrival order; nothing is acted on before it is let through.
    for step in 0.. {
        assert!(step < 40, "the request for feeds was never held");
        let held = a.wait_count("held", step + 1, WAIT, |_| true)[step].clone();
        assert!(a.seen.iter().all(|v| v["type"] != "request_received"));
        if held["kind"] == "Extension(MULTIFEED_REQUEST_FEEDS)" {
            assert!(held["summary"].as_str().unwrap().contains(&key), "{held}");
            break;
        }
        a.send(json!({"cmd": "step"}));
    }
    let hs = a.wait_for("wire", |v| {
        v["dir"] == "in" && v["kind"] == "Extension(MULTIFEED_HANDSHAKE)"
    });
    assert_eq!(hs["channel"], "root");
    // hc9 frame: length, header (channel 0, type 15), extension id 0, then the JSON.
    assert!(
        hs["hex"].as_str().unwrap()[2..].starts_with("0f007b22"),
        "{hs}"
    );
    a.send(json!({"cmd": "continue"}));
    a.wait_for("request_received", |_| true);
    b.wait_synced(&key, 4);
    a.wait_for("wire", |v| v["dir"] == "out" && v["kind"] == "Data");
    a.wait_for("wire", |v| v["dir"] == "in" && v["kind"] == "Want");
    b.quit();
    a.quit();
}

#[test]
fn an_hc9_peer_names_itself_by_its_first_hc9_writer_and_one_without_a_writer_by_nothing() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A hypercore 10 writer first: it is not of this wire and names nothing on it.
    append_lines(a_dir.path(), "modern", &blocks("m", 1, 10));
    let first = append_hc9(a_dir.path(), "first", &blocks("f", 2, 10));
    let second = append_hc9(a_dir.path(), "second", &blocks("s", 2, 10));
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    // B holds no writer of its own: it only takes A's feeds.
    let mut b = Node::start(b_dir.path(), &["--connect", &addr, "--wire", "hc9"]);
    let named = b.wait_for("peer_named", |_| true);
    assert_eq!(named["name"], first, "the writer created first names A");
    b.wait_synced(&first, 2);
    b.wait_synced(&second, 2);
    let a_events = a.quit();
    let b_events = b.quit();
    let names =
        |events: &[serde_json::Value]| events.iter().filter(|e| e["type"] == "peer_named").count();
    assert_eq!(names(&b_events), 1, "sent once");
    assert_eq!(
        names(&a_events),
        0,
        "a peer without an hc9 writer sends no peer-id"
    );
}
