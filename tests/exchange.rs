//! The multifeed exchange between real `feedscope` processes over loopback TCP.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn two_peers_replicate_each_others_feeds_byte_for_byte() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_blocks = blocks("notes", 20, 100);
    let b_blocks = blocks("bnotes", 7, 3000);
    let a_key = append_lines(a_dir.path(), "notes", &a_blocks);
    let b_key = append_lines(b_dir.path(), "bnotes", &b_blocks);

    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&a_key, 20);
    a.wait_synced(&b_key, 7);

    // The exchange happened in the documented order on the dialing side.
    let order: Vec<String> = b
        .seen
        .iter()
        .map(|v| v["type"].as_str().unwrap().to_string())
        .filter(|t| {
            [
                "peer_connected",
                "handshake_received",
                "offer_received",
                "request_sent",
                "replicate_received",
            ]
            .contains(&t.as_str())
        })
        .collect();
    assert_eq!(
        order,
        [
            "peer_connected",
            "handshake_received",
            "offer_received",
            "request_sent",
            "replicate_received"
        ]
    );
    let a_events = a.quit();
    b.quit();
    assert!(
        a_events.iter().any(|v| v["type"] == "peer_disconnected"),
        "the listener saw the disconnect"
    );

    assert_eq!(cat(b_dir.path(), &a_key), catted(&a_blocks));
    assert_eq!(cat(a_dir.path(), &b_key), catted(&b_blocks));
    let b_feeds = feeds(b_dir.path());
    let replica = b_feeds.iter().find(|f| f["key"] == a_key).unwrap();
    assert_eq!(replica["writable"], false);
    assert_eq!(replica["length"], 20);
}

#[test]
fn feeds_added_and_appended_while_connected_reach_the_peer() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_key = append_lines(a_dir.path(), "notes", &blocks("n", 2, 10));
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&a_key, 2);

    a.send(json!({"cmd": "append", "feed": "notes", "data": "live one"}));
    a.send(json!({"cmd": "append", "feed": "notes", "data_hex": "6c697665"}));
    b.wait_synced(&a_key, 4);

    a.send(json!({"cmd": "add_feed", "name": "photos"}));
    let added = a.wait_for("feed_added", |v| v["name"] == "photos");
    let photos = added["key"].as_str().unwrap().to_string();
    a.wait_for("offer_sent", |v| v["keys"] == json!([photos]));
    a.send(json!({"cmd": "append", "feed": "photos", "data": "cat.jpg"}));
    b.wait_synced(&photos, 1);

    a.quit();
    b.quit();
    assert_eq!(
        cat(b_dir.path(), &a_key),
        b"n:0:n:0:n:\nn:1:n:1:n:\nlive one\nlive\n"
    );
    assert_eq!(cat(b_dir.path(), &photos), b"cat.jpg\n");
}

#[test]
fn a_peer_with_another_multifeed_key_is_reported_not_hung() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    append_lines(a_dir.path(), "secret", &blocks("s", 3, 10));
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let other = "11".repeat(32);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr, "--key", &other]);
    let err = b
        .wait_for_within("error", Duration::from_secs(8), |v| {
            v["kind"] == "different_multifeed_key"
        })
        .expect("a different-key error within 8 s");
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("different multifeed key"));
    b.wait_for("peer_disconnected", |_| true);
    a.wait_for("peer_disconnected", |_| true);
    let a_events = a.quit();
    b.quit();
    assert!(
        !a_events.iter().any(|v| v["type"] == "offer_sent"),
        "nothing is offered to a peer with another key"
    );
    assert!(
        feeds(b_dir.path()).is_empty(),
        "no feed reached the other key"
    );
}

#[test]
fn a_second_process_on_the_same_storage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = Node::listen(dir.path(), &[]);
    let out = feedscope(&["feeds", "--storage", dir.path().to_str().unwrap()], None);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("in use by another feedscope"), "{msg}");
    assert!(msg.contains(&format!("pid {}", a.child.id())), "{msg}");
    a.quit();
}

#[test]
fn a_dial_to_a_peer_that_is_not_up_yet_is_retried() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_key = append_lines(a_dir.path(), "notes", &blocks("x", 1, 5));
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    let retry = b.wait_for("connect_retry", |_| true);
    assert_eq!(retry["addr"], addr.as_str());
    assert_eq!(retry["attempt"], 1);
    let mut a = Node::start(a_dir.path(), &["--listen", &addr]);
    a.wait_for("listening", |_| true);
    b.wait_synced(&a_key, 1);
    a.quit();
    b.quit();
}

#[test]
fn end_of_stdin_shuts_down_cleanly_and_bad_commands_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = feedscope(
        &["run", "--json", "--storage", dir.path().to_str().unwrap()],
        Some(b"not json\n{\"cmd\":\"append\",\"feed\":\"nope\",\"data\":\"x\"}\n"),
    );
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|v| v["type"] == "error"
        && v["message"]
            .as_str()
            .unwrap()
            .contains("cannot read command")));
    assert!(lines.iter().any(
        |v| v["type"] == "error" && v["message"].as_str().unwrap().contains("no feed \"nope\"")
    ));
    assert_eq!(lines.last().unwrap()["type"], "stopped");
}

#[test]
fn a_replicated_feed_keeps_the_name_its_peer_offered_it_under() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "holiday photos", &blocks("p", 3, 10));
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&key, 3);
    b.quit();
    a.quit();
    let b_path = b_dir.path().to_str().unwrap();
    let out = feedscope(&["feeds", "--storage", b_path, "--json"], None);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == key.as_str())
        .expect("the replica is listed");
    assert_eq!(row["offered_name"], "holiday photos", "{row}");
    assert!(row["name"].is_null(), "the local name stays free: {row}");
    let out = feedscope(&["feeds", "--storage", b_path], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"holiday photos\" (offered name)"), "{text}");
    // It is no name to append to: a feed of our own may take it.
    let out = feedscope(
        &["append", "--storage", b_path, "--feed", "holiday photos"],
        Some(b"mine\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
