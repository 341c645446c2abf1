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

fn count(node: &Node, ty: &str) -> usize {
    node.seen.iter().filter(|v| v["type"] == ty).count()
}

/// Waits until `node` has seen at least `n` events of type `ty`.
fn wait_count(node: &mut Node, ty: &str, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while count(node, ty) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} {ty} events"
        );
        let _ = node.wait_for_within("__none__", std::time::Duration::from_millis(50), |_| false);
    }
}

#[test]
fn stepping_lets_nothing_act_before_its_message_is_let_through() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "notes", &blocks("s", 4, 10));
    let (mut a, addr) = Node::listen(a_dir.path(), &["--step"]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    let mut steps = 0;
    loop {
        assert!(steps < 40, "the REQUEST was never held");
        // Step only what is held: one message per step, in arrival order.
        wait_count(&mut a, "held", steps + 1);
        a.send(serde_json::json!({"cmd": "step"}));
        steps += 1;
        wait_count(&mut a, "released", steps);
        let released = a
            .seen
            .iter()
            .filter(|v| v["type"] == "released")
            .nth(steps - 1)
            .unwrap();
        let kind = released["kind"].as_str().unwrap().to_string();
        if kind.contains("MULTIFEED_REQUEST_FEEDS") {
            break;
        }
        assert_eq!(
            count(&a, "request_received"),
            0,
            "a request was acted on before it was let through (step {steps}, {kind})"
        );
    }
    a.wait_for("request_received", |_| true);
    a.wait_for("replicate_sent", |_| true);
    a.send(serde_json::json!({"cmd": "continue"}));
    b.wait_synced(&key, 4);
    b.quit();
    a.quit();
}

#[test]
fn trace_wire_reports_each_message_with_its_bytes() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "notes", &blocks("w", 3, 10));
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr, "--trace-wire"]);
    b.wait_synced(&key, 3);
    let hs = b.wait_for("wire", |v| {
        v["dir"] == "in" && v["kind"] == "Extension(MULTIFEED_HANDSHAKE)"
    });
    assert_eq!(hs["channel"], "root");
    let hex = hs["hex"].as_str().unwrap();
    // type 9, name length 19, the name, then the JSON itself with no length prefix.
    assert!(
        hex.contains("09134d554c5449464545445f48414e445348414b457b22636c69656e74"),
        "{hex}"
    );
    b.wait_for("wire", |v| v["dir"] == "out" && v["kind"] == "Request");
    b.wait_for("wire", |v| {
        v["dir"] == "in" && v["kind"] == "Data" && v["channel"] == key[..8]
    });
    b.wait_for("wire", |v| v["dir"] == "out" && v["kind"] == "Open");
    b.quit();
    a.quit();
}

#[test]
fn a_breakpoint_on_a_kind_that_does_not_exist_is_refused_with_the_kinds_that_do() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "notes", &blocks("k", 3, 10));
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    a.send(serde_json::json!({"cmd": "break", "kind": "Bogus"}));
    let refused = a.wait_for("error", |v| v["kind"] == "command");
    let text = refused["message"].as_str().unwrap();
    assert!(text.contains("\"Bogus\""), "{text}");
    assert!(text.contains("MULTIFEED_MANIFEST"), "{text}");
    // Spelled as people do, a kind is taken (breakpoints apply to connected peers).
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    b.wait_synced(&key, 3);
    a.send(serde_json::json!({"cmd": "break", "kind": "manifest"}));
    a.send(serde_json::json!({"cmd": "break", "kind": "Extension(MULTIFEED_REQUEST_FEEDS)"}));
    a.send(serde_json::json!({"cmd": "break", "kind": ""}));
    b.quit();
    let events = a.quit();
    assert_eq!(
        count_of(&events, "error"),
        1,
        "only the bogus kind was refused"
    );
}

fn count_of(events: &[Value], ty: &str) -> usize {
    events.iter().filter(|v| v["type"] == ty).count()
}

/// `run --skip` leaves the named types out of what it prints and nothing else, the recording
/// still holds every event, and a type that does not exist is refused with the list.
#[test]
fn skipped_event_types_are_not_printed_but_still_recorded() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "notes", &blocks("n", 20, 100));
    let mine = append_lines(b_dir.path(), "mine", &blocks("m", 3, 100));
    let file = b_dir.path().join("session.jsonl");
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(
        b_dir.path(),
        &[
            "--connect",
            &addr,
            "--skip",
            "offer_sent,feed_progress",
            "--record",
            file.to_str().unwrap(),
        ],
    );
    b.wait_synced(&key, 20);
    let printed = b.quit();
    a.quit();
    let types = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|v| v["type"].as_str().unwrap().to_string())
            .collect()
    };
    let printed = types(&printed);
    for skipped in ["offer_sent", "feed_progress"] {
        assert!(!printed.iter().any(|t| t == skipped), "{skipped} printed");
    }
    for kept in ["offer_received", "request_sent", "feed_synced", "stopped"] {
        assert!(printed.iter().any(|t| t == kept), "{kept} missing");
    }
    let (_, entries, _) = feedscope::record::read(&file).unwrap();
    let recorded: Vec<&str> = entries.iter().map(|e| e.event.type_name()).collect();
    let offered = entries.iter().any(|e| {
        matches!(&e.event, Event::OfferSent { keys, .. } if keys.iter().any(|k| k.to_hex() == mine))
    });
    assert!(offered, "the recording has the offer of {mine}");
    assert!(recorded.contains(&"feed_progress"));

    let out = feedscope(&["run", "--skip", "offer_sent,offers"], None);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no event is of type \"offers\"") && said.contains("offer_received"),
        "{said}"
    );
}
