//! Faults with real processes: peers killed mid-transfer, silent peers, unusable storage.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Large enough that the transfer is still going when a test reacts to its first progress:
/// progress is told after a commit, and the first one comes after 4 MiB at the latest.
const BLOCKS: usize = 40_000;
const SIZE: usize = 1_024;

#[test]
fn the_remote_killed_mid_transfer_is_reported_and_a_reconnect_resumes_without_refetching() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks("big", BLOCKS, SIZE);
    let key = append_lines(a_dir.path(), "big", &lines);
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    let first = b.wait_for("feed_progress", |v| {
        v["key"] == key.as_str() && v["local_length"].as_u64() > Some(0)
    });
    let _ = first;
    a.child.kill().unwrap(); // SIGKILL: no goodbye on the wire
    let gone = b.wait_for("peer_disconnected", |_| true);
    let had = b
        .seen
        .iter()
        .filter(|v| v["type"] == "feed_progress" && v["key"] == key.as_str())
        .filter_map(|v| v["local_length"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        (had as usize) < BLOCKS,
        "the transfer was not cut (had {had})"
    );

    // The same storage comes back on the same address, and B dials it again.
    let mut a2 = Node::start(a_dir.path(), &["--listen", &addr]);
    a2.wait_for("listening", |_| true);
    b.send(json!({"cmd": "connect", "addr": addr}));
    let second_peer = b.wait_for("peer_connected", |v| v["peer"] != gone["peer"])["peer"].clone();
    b.wait_synced(&key, BLOCKS as u64);
    let refetched = b
        .seen
        .iter()
        .filter(|v| v["type"] == "feed_progress" && v["peer"] == second_peer)
        .filter_map(|v| v["bytes"].as_u64())
        .max()
        .unwrap_or(0);
    let remaining = (BLOCKS as u64 - had) * SIZE as u64;
    assert!(
        refetched <= remaining + 256 * SIZE as u64,
        "resumed with {refetched} bytes where {remaining} were missing: verified blocks were fetched again"
    );
    b.quit();
    a2.quit();
    assert_eq!(cat(b_dir.path(), &key), catted(&lines));
}

#[test]
fn feedscope_killed_mid_transfer_reopens_its_storage_and_resumes() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks("big", BLOCKS, SIZE);
    let key = append_lines(a_dir.path(), "big", &lines);
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_for("feed_progress", |v| {
        v["key"] == key.as_str() && v["local_length"].as_u64() > Some(0)
    });
    b.child.kill().unwrap();
    let _ = b.child.wait();
    drop(b);

    // The storage opens again: intact, or rolled back to its last checkpoint with a warning.
    let listed = feeds(b_dir.path());
    assert_eq!(listed.len(), 1, "{listed:?}");
    let held = listed[0]["held"].as_u64().unwrap();
    assert!(
        (held as usize) < BLOCKS,
        "the transfer was not cut (held {held})"
    );
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&key, BLOCKS as u64);
    assert!(
        !b.seen.iter().any(|v| v["type"] == "error"),
        "{:#?}",
        b.seen
    );
    b.quit();
    a.quit();
    assert_eq!(cat(b_dir.path(), &key), catted(&lines));
}

#[test]
fn a_peer_that_connects_and_says_nothing_is_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, addr) = Node::listen(dir.path(), &[]);
    let started = Instant::now();
    let mut silent = TcpStream::connect(&addr).unwrap();
    let err = a.wait_for("error", |v| v["kind"] == "handshake");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no Noise handshake"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The connection was closed on our side.
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
    // And the process still serves.
    let other = tempfile::tempdir().unwrap();
    let mut b = Node::start(other.path(), &["--connect", &addr]);
    b.wait_for("handshake_received", |_| true);
    b.quit();
    a.quit();
}

#[test]
fn an_unwritable_storage_folder_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let out = feedscope(
        &["run", "--json", "--storage", file.to_str().unwrap()],
        Some(b""),
    );
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("is not usable"), "{msg}");
    assert!(msg.contains("writable"), "{msg}");
}

#[test]
fn damaged_storage_files_are_named_with_what_to_do_and_the_other_feeds_are_served() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let good_lines = blocks("good", 50, 100);
    let good = append_lines(a_dir.path(), "good", &good_lines);
    let cut = append_lines(a_dir.path(), "cut", &blocks("cut", 50, 100));
    let broken = append_lines(a_dir.path(), "broken", &blocks("broken", 5, 100));
    let core = |key: &str| a_dir.path().join("cores").join(key);
    // One feed loses the second half of its blocks; another has a garbage header.
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(core(&cut).join("data"))
        .unwrap();
    data.set_len(2_000).unwrap();
    std::fs::write(core(&broken).join("header"), b"not a header").unwrap();

    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let at_start = a.wait_for("error", |v| {
        v["kind"] == "storage" && v["message"].as_str().unwrap().contains(&broken)
    });
    let msg = at_start["message"].as_str().unwrap();
    assert!(msg.contains(&broken) && msg.contains("(broken)"), "{msg}");
    assert!(msg.contains("move this folder away"), "{msg}");

    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&good, 50);
    let unreadable = a.wait_for("error", |v| {
        v["kind"] == "storage" && v["message"].as_str().unwrap().contains("cannot read")
    });
    let msg = unreadable["message"].as_str().unwrap();
    assert!(msg.contains(&cut), "{msg}");
    assert!(msg.contains("feedscope cat"), "{msg}");
    b.quit();
    a.quit();
    assert_eq!(cat(b_dir.path(), &good), catted(&good_lines));
    // What B got of the damaged feed is verified, so it is a prefix of the real blocks.
    let partial = common::feeds(b_dir.path());
    let got = partial.iter().find(|f| f["key"] == cut.as_str()).unwrap();
    assert!(got["length"].as_u64().unwrap() <= 50, "{got}");
}

#[test]
fn storage_with_more_feeds_than_open_files_allowed_opens_every_feed() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        append_lines(dir.path(), &format!("f{i}"), &[format!("block of f{i}")]);
    }
    let feeds_under = |limit: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"ulimit {limit} && exec "$0" feeds --json --storage "$1""#
            ))
            .arg(bin())
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        (listed, stderr)
    };
    // A feed holds its four files open only while it is used: 40 feeds open under a hard
    // limit of 64 files, where holding them all would take 160.
    let (listed, stderr) = feeds_under("-n 64");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(listed.len(), 40, "{listed:?}");
    assert!(listed.iter().all(|f| f["length"] == 1), "{listed:?}");
}

#[test]
fn commands_that_only_read_storage_never_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("no-such-storage");
    let path = typo.to_str().unwrap();
    let key = "ab".repeat(32);
    for args in [
        vec!["feeds", "--storage", path],
        vec!["cat", "--storage", path, "--key", &key],
        vec!["decisions", "--storage", path],
    ] {
        let out = feedscope(&args, None);
        assert!(!out.status.success(), "{args:?}");
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("no feedscope storage at"), "{args:?}: {msg}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

#[test]
fn appends_that_could_never_replicate_are_refused_and_change_nothing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a.path(), "mine", &["one".to_string()]);
    // B holds A's feed as a replica; appending to it by key is refused.
    let (node, addr) = Node::listen(a.path(), &[]);
    let mut replica = Node::start(b.path(), &["--connect", &addr]);
    replica.wait_synced(&key, 1);
    replica.quit();
    node.quit();
    let storage = b.path().to_str().unwrap();
    let out = feedscope(&["append", "--storage", storage, "--feed", &key, "x"], None);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("read-only"), "{msg}");
    assert_eq!(feeds(b.path()).len(), 1, "no feed named after the key");

    // A block larger than a wire frame can carry.
    let storage = a.path().to_str().unwrap();
    let huge = vec![b'x'; 17 << 20];
    let out = feedscope(
        &["append", "--storage", storage, "--feed", "mine"],
        Some(&huge),
    );
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("cannot be replicated"), "{msg}");
    assert_eq!(feed_row_length(a.path(), &key), 1);
    // Its own feed by key takes blocks.
    let out = feedscope(
        &["append", "--storage", storage, "--feed", &key, "two"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cat(a.path(), &key), b"one\ntwo\n");
}

fn feed_row_length(storage: &std::path::Path, key: &str) -> u64 {
    feeds(storage)
        .into_iter()
        .find(|f| f["key"] == key)
        .unwrap()["length"]
        .as_u64()
        .unwrap()
}

#[test]
fn cat_takes_a_unique_start_of_a_key_and_says_which_keys_an_ambiguous_one_fits() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..20)
        .map(|i| append_lines(dir.path(), &format!("f{i}"), &[format!("block of f{i}")]))
        .collect();
    let storage = dir.path().to_str().unwrap();
    // The shortest start that only one key has, in upper case.
    let (i, key) = keys.iter().enumerate().next().unwrap();
    let unique = (1..=64)
        .map(|n| &key[..n])
        .find(|p| keys.iter().filter(|k| k.starts_with(p)).count() == 1)
        .unwrap();
    let out = feedscope(
        &["cat", "--storage", storage, "--key", &unique.to_uppercase()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, format!("block of f{i}\n").into_bytes());
    // A start that several keys share names them, and cats nothing.
    let first = &key[..1];
    let sharing: Vec<&String> = keys.iter().filter(|k| k.starts_with(first)).collect();
    let out = feedscope(&["cat", "--storage", storage, "--key", first], None);
    if sharing.len() > 1 {
        assert!(!out.status.success());
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("give more of the key"), "{msg}");
        assert!(sharing.iter().all(|k| msg.contains(k.as_str())), "{msg}");
        assert!(out.stdout.is_empty());
    }
    let out = feedscope(&["cat", "--storage", storage, "--key", "xyz"], None);
    assert!(!out.status.success());
}

/// A listener whose process runs out of file descriptors refuses what it cannot take, says so,
/// and accepts again once descriptors are free: a flood never stops it for good.
#[test]
fn a_listener_out_of_file_descriptors_accepts_again_once_they_are_free() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "notes", &blocks("fd", 3, 10));
    let mut a = Node::start_within(a_dir.path(), &["--listen", "127.0.0.1:0"], Some(48));
    let addr = a.wait_for("listening", |_| true)["addr"]
        .as_str()
        .unwrap()
        .to_string();
    // Many more connections than the process can hold files for, all silent.
    let flood: Vec<TcpStream> = (0..120)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    let told = a.wait_for_within("warning", Duration::from_secs(20), |v| {
        v["kind"] == "limit" && v["message"].as_str().unwrap_or("").contains("file")
    });
    assert!(told.is_some(), "running out of descriptors is reported");
    drop(flood);
    // Descriptors come back as the silent connections close; then an honest peer is served.
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&key, 3);
    b.quit();
    a.quit();
}

#[test]
fn a_dialed_peer_that_comes_back_is_dialed_again_and_replication_resumes_by_itself() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = blocks("back", 40, 100);
    let key = append_lines(a_dir.path(), "back", &first);
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    let gone = b.peer_from(&addr);
    b.wait_synced(&key, 40);

    // Asked to dial an address it is connected to, B says so and does not dial twice.
    b.send(json!({"cmd": "connect", "addr": addr}));
    let twice = b.wait_for("warning", |v| v["kind"] == "command");
    assert!(
        twice["message"]
            .as_str()
            .unwrap()
            .contains(&format!("connected to {addr} already")),
        "{twice}"
    );

    // A stops cleanly, gains blocks while it is down, and comes back on the same address:
    // B dials it again without being told to, and fetches what is new.
    a.quit();
    b.wait_for("peer_disconnected", |v| v["peer"] == gone);
    let retry = b.wait_for("connect_retry", |v| v["addr"] == addr.as_str());
    assert!(
        retry["error"]
            .as_str()
            .unwrap()
            .starts_with("the connection ended"),
        "{retry}"
    );
    let more = blocks("back-more", 25, 100);
    append_batch(a_dir.path(), "back", &more);
    let mut a2 = Node::start(a_dir.path(), &["--listen", &addr]);
    a2.wait_for("listening", |_| true);
    let again = b.wait_for("peer_connected", |v| v["peer"] != gone)["peer"].clone();
    b.wait_synced(&key, 65);
    let connections = b
        .seen
        .iter()
        .filter(|v| v["type"] == "peer_connected")
        .count();
    assert_eq!(
        connections, 2,
        "one connection before, one after (the second {again})"
    );
    b.quit();
    a2.quit();
    let all: Vec<String> = first.into_iter().chain(more).collect();
    assert_eq!(cat(b_dir.path(), &key), catted(&all));
}

#[test]
fn a_dialed_peer_on_another_multifeed_key_is_not_dialed_again() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let other = "ab".repeat(32);
    let (a, addr) = Node::listen(a_dir.path(), &["--key", &other]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_for("error", |v| v["kind"] == "different_multifeed_key");
    b.wait_for("peer_disconnected", |_| true);
    let retried = b.wait_for_within("connect_retry", Duration::from_secs(2), |_| true);
    assert!(retried.is_none(), "dialed again: {retried:?}");
    // Told to, it dials again (and is told the same).
    b.send(json!({"cmd": "connect", "addr": addr}));
    b.wait_count("error", 2, WAIT, |v| v["kind"] == "different_multifeed_key");
    b.quit();
    a.quit();
}

/// An address whose listener accepts and never answers fails every handshake; those
/// connections never count as lasting, however long the handshake waited, so the wait before
/// each new dial grows.
#[test]
fn a_listener_that_never_answers_is_dialed_again_with_a_growing_wait() {
    use common::engines::{launch_with, Side};
    use feedscope::event::Event;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        // Holds every connection open, saying nothing.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::kit::config(dir.path(), false, vec![addr.clone()]);
        // A handshake fails after longer than a connection needs to count as lasting; it
        // must not count.
        config.limits.handshake_timeout = Duration::from_millis(300);
        config.limits.redial_settled = Duration::from_millis(200);
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let engine = launch_with(Side::A, dir, config, tx).await;
        let mut waits = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while waits.len() < 3 {
            let ev = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("three dials again within 20 s")
                .expect("events");
            if let Event::ConnectRetry {
                addr: a,
                attempt,
                retry_in_ms,
                error,
            } = ev.event
            {
                assert_eq!(a, addr);
                assert!(
                    error.starts_with("the connection ended: the handshake failed"),
                    "{error}"
                );
                waits.push((attempt, retry_in_ms));
            }
        }
        assert_eq!(waits, [(2, 200), (3, 400), (4, 800)]);
        engine.stop().await;
        holder.abort();
    });
}
