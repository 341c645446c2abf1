//! Replication that finishes under load: many feeds, large blocks, live bursts.

mod common;

use common::*;
use serde_json::json;

#[test]
fn a_hundred_feeds_of_two_hundred_blocks_replicate_on_one_connection() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Each feed is written in one batch, so that all 100 are in the first manifest.
    let mut lines_by_name = std::collections::HashMap::new();
    for f in 0..100 {
        let name = format!("f{f}");
        let lines = blocks(&name, 200, 64);
        append_batch(a_dir.path(), &name, &lines);
        lines_by_name.insert(name, lines);
    }
    let expected: Vec<(String, Vec<String>)> = feeds(a_dir.path())
        .into_iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            (
                f["key"].as_str().unwrap().to_string(),
                lines_by_name[name].clone(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 100);
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    for (key, _) in &expected {
        b.wait_synced(key, 200);
    }
    a.quit();
    b.quit();
    for (key, lines) in &expected {
        assert_eq!(cat(b_dir.path(), key), catted(lines), "feed {key}");
    }
}

#[test]
fn a_live_burst_of_ten_thousand_appends_arrives_whole() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "log", &blocks("log", 1, 8));
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&key, 1);
    let burst = blocks("burst", 10_000, 32);
    for line in &burst {
        a.send(json!({"cmd": "append", "feed": "log", "data": line}));
    }
    b.wait_synced(&key, 10_001);
    a.quit();
    b.quit();
    let mut all = blocks("log", 1, 8);
    all.extend(burst);
    assert_eq!(cat(b_dir.path(), &key), catted(&all));
}

#[test]
fn blocks_of_64_kib_and_1_mib_replicate_in_both_directions() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let big_a = blocks("a", 40, 64 * 1024);
    let big_b = blocks("b", 12, 1024 * 1024);
    let a_key = append_lines(a_dir.path(), "medium", &big_a);
    let b_key = append_lines(b_dir.path(), "large", &big_b);
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&a_key, 40);
    a.wait_synced(&b_key, 12);
    a.quit();
    b.quit();
    assert_eq!(cat(b_dir.path(), &a_key), catted(&big_a));
    assert_eq!(cat(a_dir.path(), &b_key), catted(&big_b));
}
