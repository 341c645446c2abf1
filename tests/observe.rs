//! `--observe`: a read-only peer. Against a peer that offers feeds and peers that want ours, a
//! real `feedscope run --observe` process requests nothing, serves nothing, writes nothing to
//! its storage, refuses commands that would change something, and still reports every offer.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::evil::*;
use common::*;
use feedscope::frame::Item;
use feedscope::limits::Limits;
use feedscope::wire::{self, FeedKey};
use hypercore_protocol::discovery_key;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Upper bound for one step (a reply, an event).
const SOON: Duration = Duration::from_secs(15);

/// Every file under `dir` by relative path, with the SHA-256 of its bytes.
fn hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                out.insert(rel, hex::encode(digest));
            }
        }
    }
    out
}

/// `feedscope_requests_refused_total` of a scrape of `addr`, read by a Prometheus parser.
fn requests_refused(addr: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "feedscope_requests_refused_total")
        .expect("the counter is there");
    // The parser files an OpenMetrics `_total` sample under no type (`tests/metrics.rs`
    // checks the `# TYPE` line).
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v as u64,
        ref other => panic!("not a counter: {other:?}"),
    }
}

fn of<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|v| v["type"] == ty).collect()
}

#[test]
fn an_observer_requests_serves_and_writes_nothing_and_reports_every_offer() {
    let rt = runtime();
    let (a_dir, o_dir, r_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let offered = append_lines(a_dir.path(), "offered", &blocks("a", 50, 100));
    let mine = append_lines(o_dir.path(), "mine", &blocks("mine", 20, 100));
    let before = hashes(o_dir.path());
    assert!(before.len() > 2, "the observer's storage holds a feed");

    // A offers a feed; R is a classic peer that would request anything offered to it.
    let (a, a_addr) = Node::listen(a_dir.path(), &[]);
    let (mut o, o_addr) = Node::listen(
        o_dir.path(),
        &[
            "--observe",
            "--connect",
            &a_addr,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = o.wait_for("metrics_listening", |_| true)["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let mut r = Node::start(r_dir.path(), &["--connect", &o_addr]);

    // What A offers is reported, and left unanswered.
    let offer = o.wait_for("offer_received", |v| v["keys"] == json!([offered]));
    let a_peer = offer["peer"].clone();
    // R hears an empty offer from the observer.
    let to_r = r.wait_for("offer_received", |_| true);
    assert_eq!(to_r["keys"], json!([]), "the observer offers nothing");

    // A hostile peer asks for the observer's own feed without an offer, and offers one.
    let mut evil = rt.block_on(Evil::connect(&o_addr)).unwrap();
    evil.hello();
    let manifest = rt
        .block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    let manifest = wire::decode_manifest(&manifest, &Limits::DEFAULT).unwrap();
    assert!(manifest.keys.is_empty(), "an empty manifest");
    let mine_key = FeedKey::parse(&mine).unwrap();
    evil.ext(wire::EXT_REQUEST_FEEDS, wire::encode_keys(&[mine_key]));
    let answer = rt
        .block_on(evil.wait_ext(wire::EXT_REPLICATE_FEEDS, SOON))
        .unwrap();
    let answer = wire::decode_keys(wire::EXT_REPLICATE_FEEDS, &answer, &Limits::DEFAULT).unwrap();
    assert!(answer.keys.is_empty(), "nothing served: {:?}", answer.keys);
    // Refused by design: reported as news, counted, and not a warning.
    let refusal = o.wait_for("observe_refused", |v| v["keys"] == json!([mine]));
    assert_eq!(
        requests_refused(&metrics),
        1,
        "the refusal is counted in feedscope_requests_refused"
    );
    let stranger = random_public_key();
    evil.offer(&[stranger]);
    o.wait_for("offer_received", |v| {
        v["keys"] == json!([stranger.to_hex()])
    });
    rt.block_on(evil.alive(SOON)).unwrap();
    let mine_dkey = discovery_key(&mine_key.0);
    assert!(
        !evil.received.iter().any(
            |i| matches!(i, Item::Open { discovery_key, .. } if discovery_key[..] == mine_dkey[..])
        ),
        "no channel for the observer's own feed"
    );

    // Commands that would change something are refused, each with an error saying why.
    let refused = [
        json!({"cmd": "approve", "key": offered}),
        json!({"cmd": "decline", "peer": a_peer, "key": "*"}),
        json!({"cmd": "add_feed", "name": "new"}),
        json!({"cmd": "append", "feed": "mine", "data": "more"}),
    ];
    for cmd in &refused {
        o.send(cmd.clone());
    }
    let errors = o.wait_count("error", refused.len(), SOON, |v| v["kind"] == "observe");
    assert_eq!(errors.len(), refused.len(), "{errors:?}");
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("observe mode"));

    drop(evil);
    let r_events = r.quit();
    let o_events = o.quit();
    let a_events = a.quit();

    assert!(
        of(&o_events, "request_sent").is_empty(),
        "nothing requested"
    );
    assert!(of(&o_events, "decision").is_empty(), "nothing decided");
    assert!(
        o_events
            .iter()
            .all(|v| v["type"] != "warning" || v["kind"] != "refused_request"),
        "a refusal by design is no warning"
    );
    assert_eq!(of(&o_events, "observe_refused").len(), 1);
    assert!(o_events.iter().any(|v| {
        v["type"] == "request_received"
            && v["peer"] == refusal["peer"]
            && v["keys"] == json!([mine])
    }));
    assert!(of(&o_events, "offer_pending").is_empty());
    assert!(of(&o_events, "feed_added").is_empty(), "no feed created");
    assert!(of(&o_events, "feed_progress").is_empty());
    assert!(of(&o_events, "appended").is_empty());
    assert!(
        of(&o_events, "offer_sent")
            .iter()
            .all(|v| v["keys"] == json!([])),
        "every offer sent is empty"
    );
    assert!(
        of(&a_events, "request_received").is_empty(),
        "the offering peer was asked for nothing"
    );
    assert!(
        of(&r_events, "feed_progress").is_empty() && of(&r_events, "feed_synced").is_empty(),
        "the other side got no blocks"
    );
    assert!(!r_dir.path().join("cores").join(&mine).exists());
    assert_eq!(
        hashes(o_dir.path()),
        before,
        "storage unchanged byte for byte"
    );
}
