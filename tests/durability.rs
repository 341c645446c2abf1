//! What feedscope's storage promises, with real processes killed at random moments: feeds of
//! any length, acknowledged appends and reported blocks that survive `kill -9`, and damaged
//! files found when storage opens.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// A seeded generator whose seed is printed, so that a failing run can be repeated with
/// `FEEDSCOPE_TEST_SEED`.
fn rng() -> rand::rngs::StdRng {
    let seed = std::env::var("FEEDSCOPE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("FEEDSCOPE_TEST_SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn feed_row(storage: &std::path::Path, key: &str) -> serde_json::Value {
    feeds(storage)
        .into_iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("no feed {key}"))
}

#[test]
fn a_feed_past_one_bitfield_page_reopens_and_replicates_both_ways() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // 40,000 blocks: the second bitfield page starts at block 32,768.
    let lines: Vec<String> = (0..40_000).map(|i| format!("{i}")).collect();
    let key = append_lines(a_dir.path(), "long", &lines);
    append_batch(a_dir.path(), "long", &["one more".to_string()]);
    let row = feed_row(a_dir.path(), &key);
    assert_eq!(row["length"], 40_001);
    assert_eq!(row["held"], 40_001);

    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&key, 40_001);
    b.quit();
    a.quit();
    let mut all = lines.clone();
    all.push("one more".into());
    assert_eq!(cat(b_dir.path(), &key), catted(&all));
    assert_eq!(cat(a_dir.path(), &key), catted(&all));
    assert_eq!(feed_row(b_dir.path(), &key)["held"], 40_001);
}

#[test]
fn a_downloader_killed_at_random_moments_keeps_what_it_reported_and_resumes_without_refetching() {
    const BLOCKS: u64 = 3_000;
    const SIZE: usize = 1_024;
    let mut rng = rng();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks("kill", BLOCKS as usize, SIZE);
    let key = append_lines(a_dir.path(), "kill", &lines);
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut rounds = 0;
    let mut held = 0;
    while held < BLOCKS && rounds < 8 {
        rounds += 1;
        let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
        let peer = b.wait_for("peer_connected", |_| true)["peer"].clone();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        b.child.kill().unwrap();
        b.child.wait().unwrap();
        // Whatever it printed before it died.
        b.wait_event(Duration::from_millis(300), |_| false);
        let reported = b
            .seen
            .iter()
            .filter(|v| v["peer"] == peer && v["key"] == key.as_str())
            .filter_map(|v| v["local_length"].as_u64().or(v["length"].as_u64()))
            .max()
            .unwrap_or(0);
        drop(b);
        let row = feed_row(b_dir.path(), &key);
        let now = row["held"].as_u64().unwrap_or(0);
        assert!(
            now >= reported,
            "round {rounds}: reported {reported} blocks, holds {now} after kill -9"
        );
        assert!(now >= held, "round {rounds}: held {held}, then {now}");
        held = now;
    }
    // The last run finishes, asking only for what was not committed.
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    let peer = b.wait_for("peer_connected", |_| true)["peer"].clone();
    b.wait_synced(&key, BLOCKS);
    let fetched = b
        .seen
        .iter()
        .filter(|v| v["type"] == "feed_progress" && v["peer"] == peer)
        .filter_map(|v| v["bytes"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        fetched <= (BLOCKS - held) * SIZE as u64,
        "{fetched} bytes fetched where {} blocks were missing",
        BLOCKS - held
    );
    b.quit();
    a.quit();
    assert_eq!(cat(b_dir.path(), &key), catted(&lines));
}

#[test]
fn an_uploader_killed_at_random_moments_keeps_its_feed_and_the_downloader_finishes() {
    const BLOCKS: usize = 2_000;
    let mut rng = rng();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks("up", BLOCKS, 1_024);
    let key = append_lines(a_dir.path(), "up", &lines);
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    for _ in 0..4 {
        b.wait_for("peer_connected", |_| true);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        b.wait_for("peer_disconnected", |_| true);
        b.seen.clear();
        a = Node::start(a_dir.path(), &["--listen", &addr]);
        a.wait_for("listening", |_| true);
        b.send(json!({"cmd": "connect", "addr": addr}));
    }
    b.wait_synced(&key, BLOCKS as u64);
    b.quit();
    a.quit();
    assert_eq!(cat(a_dir.path(), &key), catted(&lines));
    assert_eq!(cat(b_dir.path(), &key), catted(&lines));
}

#[test]
fn appends_acknowledged_before_a_kill_9_survive_it() {
    let mut rng = rng();
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0;
    let mut written: Vec<String> = Vec::new();
    for round in 0..4 {
        let mut a = Node::start(dir.path(), &[]);
        if round == 0 {
            a.send(json!({"cmd": "add_feed", "name": "log"}));
            a.wait_for("feed_added", |_| true);
        }
        let n = rng.gen_range(5..60);
        for i in 0..n {
            let line = format!("round {round} line {i}");
            a.send(json!({"cmd": "append", "feed": "log", "data": line}));
            written.push(line);
        }
        // Killed once some appends are acknowledged, maybe before all are.
        let some = acknowledged + rng.gen_range(1..=n);
        let ack = a.wait_for("appended", |v| v["length"].as_u64() >= Some(some));
        assert_eq!(ack["name"], "log");
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        let last = a
            .seen
            .iter()
            .filter(|v| v["type"] == "appended")
            .filter_map(|v| v["length"].as_u64())
            .max()
            .unwrap();
        drop(a);
        let key = feed_key(dir.path(), "log");
        let length = feed_row(dir.path(), &key)["length"].as_u64().unwrap();
        assert!(length >= last, "acknowledged {last}, holds {length}");
        let catted_now = cat(dir.path(), &key);
        let expected = catted(&written[..length as usize]);
        assert_eq!(catted_now, expected, "round {round}");
        written.truncate(length as usize);
        acknowledged = length;
    }
}

/// Damages one of a feed's files in place, where it holds something (the bitfield's page is
/// mostly blank past the feed's 300 blocks).
/// Stopping syncs every feed: a store of more feeds than the process may keep files open for
/// must still stop cleanly, each feed's files closed once it is synced, nothing lost.
#[test]
fn a_store_of_more_feeds_than_open_files_allowed_stops_cleanly_and_keeps_them_all() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    const FEEDS: usize = 150;
    let specs: Vec<engines::FeedSpec> = (0..FEEDS)
        .map(|i| engines::FeedSpec::new(format!("f{i}"), 3, 100))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, keys) = rt.block_on(engines::seeded(&specs));
    drop(rt);
    // Four files a feed: 600 if they all stayed open, against a limit of 96.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 96 && exec "$0" run --json --storage "$1""#)
        .arg(bin())
        .arg(dir.path())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("feedscope runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"cmd\":\"quit\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {}: {err}\n{out}",
        output.status
    );
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"warning\"") || l.contains("\"error\""))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        out.lines().last().unwrap_or("").contains("\"stopped\""),
        "{out}"
    );
    let rows = feeds(dir.path());
    assert_eq!(rows.len(), FEEDS);
    for key in keys {
        assert_eq!(feed_row(dir.path(), &key.to_hex())["length"], 3);
    }
}

fn damage(path: &std::path::Path, how: &str) {
    let bytes = std::fs::read(path).unwrap();
    let mut out = bytes.clone();
    let bitfield = path.ends_with("bitfield");
    match how {
        "truncated" if bitfield => out.truncate(20),
        "truncated" => out.truncate(bytes.len() / 2),
        "zeroed" => out.iter_mut().for_each(|b| *b = 0),
        "flipped" => {
            let at = if bitfield { 10 } else { out.len() - 1 };
            out[at] ^= 0x10;
        }
        _ => unreachable!(),
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn damaged_files_are_found_on_open_and_reported_for_that_feed_only() {
    let started = Instant::now();
    for file in ["data", "tree", "bitfield", "header"] {
        for how in ["truncated", "zeroed", "flipped"] {
            let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let lines = blocks("ok", 300, 64);
            let good = append_lines(a_dir.path(), "good", &lines);
            // A replica, so that its bitfield file is used.
            let victim_lines = blocks("victim", 300, 64);
            let victim = append_lines(b_dir.path(), "victim", &victim_lines);
            let (b, addr) = Node::listen(b_dir.path(), &[]);
            let mut a = Node::start(a_dir.path(), &["--connect", &addr]);
            a.wait_synced(&victim, 300);
            a.quit();
            b.quit();
            let path = a_dir.path().join("cores").join(&victim).join(file);
            damage(&path, how);

            let out = feedscope(
                &[
                    "feeds",
                    "--json",
                    "--storage",
                    a_dir.path().to_str().unwrap(),
                ],
                None,
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{file} {how}: {stderr}");
            let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            let row = listed.iter().find(|f| f["key"] == victim.as_str());
            let held = row.and_then(|r| r["held"].as_u64()).unwrap_or(0);
            // Either it is reported, or it is cut back to blocks that check.
            assert!(
                stderr.contains(&victim) || held < 300,
                "{file} {how}: nothing said, {held} held: {stderr}"
            );
            let good_row = listed.iter().find(|f| f["key"] == good.as_str()).unwrap();
            assert_eq!(good_row["held"], 300, "{file} {how}");
            assert_eq!(cat(a_dir.path(), &good), catted(&lines));
            if row.is_some() {
                // Cut back, not lost: what it dropped comes again from the writer.
                let (b, addr) = Node::listen(b_dir.path(), &[]);
                let mut a = Node::start(a_dir.path(), &["--connect", &addr]);
                a.wait_synced(&victim, 300);
                a.quit();
                b.quit();
                assert_eq!(cat(a_dir.path(), &victim), catted(&victim_lines));
            }
        }
    }
    eprintln!("12 damaged storages checked in {:?}", started.elapsed());
}

#[test]
fn a_feed_of_a_million_blocks_is_appended_reopened_and_replicated() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Small blocks keep the storage at 15 MB; the length is what this test is about.
    let lines: Vec<String> = (0..1_000_000).map(|i| format!("{i:015}")).collect();
    let key = append_lines(a_dir.path(), "million", &lines);
    let row = feed_row(a_dir.path(), &key);
    assert_eq!(row["length"], 1_000_000);
    assert_eq!(row["held"], 1_000_000);

    let started = Instant::now();
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_for_within("feed_synced", Duration::from_secs(600), |v| {
        v["key"] == key.as_str() && v["length"] == 1_000_000
    })
    .expect("a million blocks within 10 minutes");
    eprintln!("a million blocks replicated in {:?}", started.elapsed());
    b.quit();
    a.quit();
    assert_eq!(feed_row(b_dir.path(), &key)["held"], 1_000_000);
    let expected = catted(&lines);
    assert!(
        cat(b_dir.path(), &key) == expected,
        "the replica's blocks differ"
    );
    assert!(
        cat(a_dir.path(), &key) == expected,
        "the writer's blocks differ"
    );
}
