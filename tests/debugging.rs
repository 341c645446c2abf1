//! Recording a real session and showing it again.

mod common;

use common::*;
use feedscope::event::Event;
use feedscope::tui::model::Model;
use serde_json::Value;

fn recorded_pair() -> (tempfile::TempDir, std::path::PathBuf, Vec<Value>, String) {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "notes", &blocks("n", 30, 100));
    let file = b_dir.path().join("session.jsonl");
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(
        b_dir.path(),
        &["--connect", &addr, "--record", file.to_str().unwrap()],
    );
    b.wait_synced(&key, 30);
    let live = b.quit();
    a.quit();
    (b_dir, file, live, key)
}

#[test]
fn a_recorded_session_replays_to_the_same_events_and_the_same_model() {
    let (_dir, file, live, _) = recorded_pair();
    let out = feedscope(&["replay", file.to_str().unwrap(), "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed, live, "every event, in order");

    let (_, entries, problem) = feedscope::record::read(&file).unwrap();
    assert!(problem.is_none());
    let mut from_replay = Model::default();
    let mut from_live = Model::default();
    for (e, v) in entries.iter().zip(&live) {
        from_replay.apply(&e.event, e.t);
        from_live.apply(&serde_json::from_value::<Event>(v.clone()).unwrap(), e.t);
    }
    assert_eq!(from_replay, from_live);
    assert!(from_replay
        .peers
        .values()
        .any(|p| p.active.values().any(|a| a.synced)));
}

#[test]
fn the_sequence_diagram_tells_the_exchange_in_order() {
    let (_dir, file, _, key) = recorded_pair();
    let out = feedscope(&["replay", file.to_str().unwrap(), "--sequence"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sequenceDiagram"), "{text}");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{text}"))
    };
    let short = &key[..8];
    assert!(
        at("peer->>us: HANDSHAKE MULTIFEED 5.0.0") < at(&format!("peer->>us: MANIFEST {short}"))
    );
    assert!(
        at(&format!("peer->>us: MANIFEST {short}"))
            < at(&format!("us->>peer: REQUEST_FEEDS {short}"))
    );
    assert!(
        at(&format!("us->>peer: REQUEST_FEEDS {short}"))
            < at(&format!("peer->>us: REPLICATE_FEEDS {short}"))
    );
    assert!(
        at(&format!("peer->>us: REPLICATE_FEEDS {short}"))
            < at(&format!("{short} synced at 30 blocks"))
    );
}

#[test]
fn a_truncated_recording_replays_up_to_the_bad_line_and_says_where() {
    let (_dir, file, live, _) = recorded_pair();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Keep the header and five events, then half of the sixth.
    let cut = format!(
        "{}\n{}",
        lines[..6].join("\n"),
        &lines[6][..lines[6].len() / 2]
    );
    std::fs::write(&file, cut).unwrap();
    let out = feedscope(&["replay", file.to_str().unwrap(), "--json"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 7"), "{err}");
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed, live[..5].to_vec());
}
