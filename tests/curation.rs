//! Curation between real processes: manual decisions, memory across restarts, rules, stop.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn cores(storage: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(storage.join("cores"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn decisions(storage: &Path) -> Value {
    let out = feedscope(
        &[
            "decisions",
            "--json",
            "--storage",
            storage.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn has(events: &[Value], ty: &str, pred: impl Fn(&Value) -> bool) -> bool {
    events.iter().any(|v| v["type"] == ty && pred(v))
}

#[test]
fn manual_offers_wait_and_a_declined_feed_gets_no_core_and_no_bytes() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keep_blocks = blocks("keep", 10, 100);
    let keep = append_lines(a_dir.path(), "keep", &keep_blocks);
    let skip = append_lines(a_dir.path(), "skip", &blocks("skip", 10, 100));
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(
        b_dir.path(),
        &["--connect", &addr, "--policy", "manual", "--trace-wire"],
    );
    let pending = b.wait_for("offer_pending", |_| true);
    assert_eq!(pending["keys"].as_array().unwrap().len(), 2);
    // Nothing is requested before a decision, however long it takes.
    assert!(b
        .wait_for_within("request_sent", Duration::from_millis(1500), |_| true)
        .is_none());
    let peer = pending["peer"].as_u64().unwrap();
    b.send(json!({"cmd": "decline", "peer": peer, "key": skip}));
    b.send(json!({"cmd": "approve", "peer": peer, "key": keep}));
    b.wait_synced(&keep, 10);
    b.wait_for("decision", |v| {
        v["key"] == skip.as_str() && v["approved"] == false
    });
    let events = b.quit();
    a.quit();
    assert!(!has(&events, "request_sent", |v| v["keys"]
        .as_array()
        .unwrap()
        .contains(&json!(skip))));
    assert_eq!(
        cores(b_dir.path()),
        vec![keep.clone()],
        "no core for the declined feed"
    );
    assert_eq!(cat(b_dir.path(), &keep), catted(&keep_blocks));
    let d = decisions(b_dir.path());
    assert_eq!(d[&keep]["approved"], true);
    assert_eq!(d[&skip]["approved"], false);
}

#[test]
fn remembered_decisions_answer_offers_after_a_restart() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keep = append_lines(a_dir.path(), "keep", &blocks("keep", 3, 10));
    let skip = append_lines(a_dir.path(), "skip", &blocks("skip", 3, 10));
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    {
        let mut b = Node::start(b_dir.path(), &["--connect", &addr, "--policy", "manual"]);
        let peer = b.wait_for("offer_pending", |_| true)["peer"].clone();
        b.send(json!({"cmd": "approve", "peer": peer, "key": keep}));
        b.send(json!({"cmd": "decline", "peer": peer, "key": skip}));
        b.wait_synced(&keep, 3);
        b.quit();
    }
    a.send(json!({"cmd": "append", "feed": "keep", "data": "after restart"}));
    let mut b = Node::start(b_dir.path(), &["--connect", &addr, "--policy", "manual"]);
    b.wait_synced(&keep, 4);
    let events = b.quit();
    a.quit();
    assert!(has(&events, "decision", |v| v["key"] == keep.as_str()
        && v["approved"] == true
        && v["by"] == "remembered approval"));
    assert!(has(&events, "decision", |v| v["key"] == skip.as_str()
        && v["approved"] == false
        && v["by"] == "remembered decline"));
    assert!(
        !has(&events, "offer_pending", |_| true),
        "nothing decided before is asked again"
    );
    assert_eq!(cores(b_dir.path()), vec![keep.clone()]);

    // Forgetting a decision makes the next offer ask again.
    let out = feedscope(
        &[
            "decisions",
            "--storage",
            b_dir.path().to_str().unwrap(),
            "--forget",
            &skip,
        ],
        None,
    );
    assert!(out.status.success());
    assert!(decisions(b_dir.path()).get(&skip).is_none());
}

#[test]
fn rules_decide_first_and_only_the_rest_waits() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let allowed = append_lines(a_dir.path(), "allowed", &blocks("a", 2, 10));
    let denied = append_lines(a_dir.path(), "denied", &blocks("d", 2, 10));
    let big = append_lines(a_dir.path(), "big", &blocks("b", 4, 1000));
    let other = append_lines(a_dir.path(), "other", &blocks("o", 2, 10));
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(
        b_dir.path(),
        &[
            "--connect",
            &addr,
            "--policy",
            "manual",
            "--allow",
            &allowed[..12],
            "--deny",
            &denied,
            "--max-feed-bytes",
            "1000",
        ],
    );
    b.wait_synced(&allowed, 2);
    let pending = b.wait_for("offer_pending", |_| true);
    assert_eq!(
        pending["keys"],
        json!([other]),
        "only what no rule decides waits"
    );
    let events = b.quit();
    a.quit();
    assert!(has(&events, "decision", |v| v["key"] == denied.as_str()
        && v["by"].as_str().unwrap().starts_with("rule deny")));
    assert!(has(&events, "decision", |v| v["key"] == big.as_str()
        && v["by"].as_str().unwrap().starts_with("rule max-feed-bytes")));
    assert_eq!(cores(b_dir.path()), vec![allowed]);
}

#[test]
fn stopping_a_feed_keeps_its_blocks_and_approving_resumes_it() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "log", &blocks("log", 5, 10));
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&key, 5);
    let peer = b
        .seen
        .iter()
        .find(|v| v["type"] == "peer_connected")
        .unwrap()["peer"]
        .clone();
    b.send(json!({"cmd": "stop", "peer": peer, "key": key}));
    let ours = b.wait_for("feed_stopped", |v| v["key"] == key.as_str());
    assert!(ours.get("by").is_none(), "we stopped it: {ours}");
    // The uploader hears that the peer stopped it.
    a.wait_for("feed_stopped", |v| {
        v["key"] == key.as_str() && v["by"] == "peer"
    });
    a.send(json!({"cmd": "append", "feed": "log", "data": "while stopped"}));
    assert!(
        b.wait_for_within("feed_synced", Duration::from_millis(1500), |v| v["key"]
            == key.as_str()
            && v["length"] == 6)
            .is_none(),
        "a stopped feed receives nothing"
    );
    b.send(json!({"cmd": "approve", "peer": peer, "key": key}));
    b.wait_synced(&key, 6);
    b.quit();
    a.quit();
    assert!(cat(b_dir.path(), &key).ends_with(b"while stopped\n"));
}
