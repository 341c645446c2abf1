//! `--metrics ADDR`: real `feedscope run` processes replicate over loopback while a scraper
//! reads `GET /metrics` as Prometheus would, its text read by a Prometheus text-format parser.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use prometheus_parse::{LineInfo, SampleType, Scrape, Value};

/// One HTTP/1.1 GET; the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("the metrics endpoint accepts");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("an answer");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers, then a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (status, body.to_string())
}

/// A parsed scrape: its samples and the type each `# TYPE` line declares.
struct Metrics {
    scrape: Scrape,
    types: HashMap<String, SampleType>,
}

impl Metrics {
    fn read(addr: &str) -> Metrics {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        let mut types = HashMap::new();
        for line in body.lines() {
            if let LineInfo::Type {
                metric_name,
                sample_type,
                ..
            } = LineInfo::parse(line)
            {
                types.insert(metric_name, sample_type);
            }
        }
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
        Metrics { scrape, types }
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found =
            self.scrape.samples.iter().find(|s| {
                s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            });
        match found.map(|s| &s.value) {
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            other => panic!("no sample {name} {labels:?}: {other:?}"),
        }
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        assert_eq!(
            self.types.get(name),
            Some(&SampleType::Counter),
            "{name} is a counter"
        );
        assert!(self.scrape.docs.contains_key(name), "{name} has help");
        self.value(&format!("{name}_total"), labels) as u64
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        assert_eq!(
            self.types.get(name),
            Some(&SampleType::Gauge),
            "{name} is a gauge"
        );
        assert!(self.scrape.docs.contains_key(name), "{name} has help");
        self.value(name, labels) as u64
    }
}

/// Starts a node with a metrics endpoint on a free port; returns it with that endpoint.
fn with_metrics(storage: &std::path::Path, extra: &[&str]) -> (Node, String) {
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut node = Node::start(storage, &args);
    let ev = node.wait_for("metrics_listening", |_| true);
    (node, ev["addr"].as_str().unwrap().to_string())
}

/// Scrapes `addr` until `node` reports the feed synced; every scrape must answer. Returns how
/// many did.
fn scrape_until_synced(node: &mut Node, addr: &str, key: &str, length: u64) -> usize {
    for n in 1..=5_000 {
        Metrics::read(addr);
        let synced = node.wait_for_within("feed_synced", Duration::from_millis(1), |v| {
            v["key"] == key && v["length"].as_u64() >= Some(length)
        });
        if synced.is_some() {
            return n;
        }
    }
    node.wait_synced(key, length);
    5_000
}

#[test]
fn a_scrape_during_a_transfer_counts_what_moved() {
    const N: u64 = 3_000;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "bulk", &blocks("bulk", N as usize, 1024));
    let mut a = Node::start(
        a_dir.path(),
        &["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let a_metrics = a.wait_for("metrics_listening", |_| true)["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = a.wait_for("listening", |_| true)["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut b, b_metrics) = with_metrics(b_dir.path(), &["--connect", &addr]);
    let scrapes = scrape_until_synced(&mut b, &b_metrics, &key, N);
    assert!(scrapes >= 1);

    let m = Metrics::read(&b_metrics);
    assert_eq!(m.counter("feedscope_blocks_received", &[]), N);
    assert_eq!(m.counter("feedscope_block_bytes_received", &[]), N * 1024);
    assert!(m.gauge("hypercore_total_wire_data_received", &[]) >= N);
    assert_eq!(
        m.counter(
            "feedscope_wire_messages",
            &[
                ("wire", "hc10"),
                ("message", "Data"),
                ("direction", "received")
            ]
        ),
        m.gauge("hypercore_total_wire_data_received", &[]),
        "the ecosystem's total adds up the wire's own"
    );
    assert!(m.gauge("hypercore_total_wire_request_transmitted", &[]) >= 1);
    assert!(m.gauge("hypercore_total_wire_sync_received", &[]) >= 1);
    assert!(m.gauge("hypercore_total_wire_extension_received", &[]) >= 2);
    assert_eq!(m.gauge("hypercore_total_peers", &[]), 1);
    assert!(m.gauge("hyperswarm_client_connections_attempted", &[]) >= 1);
    assert_eq!(m.gauge("hyperswarm_client_connections_opened", &[]), 1);
    assert_eq!(m.gauge("hyperswarm_client_connections_closed", &[]), 0);
    assert_eq!(m.gauge("hypercore_invalid_data", &[]), 0);
    assert!(m
        .scrape
        .docs
        .contains_key("hypercore_total_inflight_blocks"));
    // The kernel's smoothed round-trip time of the one connection, over loopback.
    let rtt_name = "hypercore_round_trip_time_avg_seconds";
    assert_eq!(m.types.get(rtt_name), Some(&SampleType::Gauge));
    let rtt = m.value(rtt_name, &[]);
    assert!(rtt > 0.0 && rtt < 1.0, "{rtt} s over loopback");
    assert_eq!(m.counter("feedscope_offers_received", &[]), 1);
    assert_eq!(m.gauge("feedscope_offers_pending", &[]), 0);
    assert_eq!(
        m.counter(
            "feedscope_decisions",
            &[("outcome", "approved"), ("by", "accept_all")]
        ),
        1
    );
    assert_eq!(
        m.counter(
            "feedscope_decisions",
            &[("outcome", "approved"), ("by", "person")]
        ),
        0
    );
    assert_eq!(
        m.gauge("feedscope_feeds_active", &[]),
        1,
        "{:?}",
        b.seen
            .iter()
            .filter(|e| e["type"] != "feed_progress")
            .collect::<Vec<_>>()
    );
    let short = &key[..8];
    assert_eq!(
        m.gauge("feedscope_feed_held_blocks", &[("key", short)]),
        N,
        "blocks held = the feed's length"
    );
    assert_eq!(
        m.gauge("feedscope_feed_remote_blocks", &[("key", short)]),
        N
    );
    assert_eq!(
        m.counter("feedscope_feed_received_bytes", &[("key", short)]),
        N * 1024
    );
    assert_eq!(m.counter("feedscope_errors", &[("kind", "bad_data")]), 0);
    assert!(m.gauge("feedscope_storage_bytes", &[]) >= N * 1024);

    let served = Metrics::read(&a_metrics);
    assert!(served.gauge("hypercore_total_wire_data_transmitted", &[]) >= N);
    assert_eq!(served.gauge("hyperswarm_server_connections_opened", &[]), 1);
    assert_eq!(
        served.counter(
            "feedscope_wire_messages",
            &[
                ("wire", "hc10"),
                ("message", "Request"),
                ("direction", "received")
            ]
        ),
        m.counter(
            "feedscope_wire_messages",
            &[
                ("wire", "hc10"),
                ("message", "Request"),
                ("direction", "sent")
            ]
        ),
        "what one side sends, the other receives"
    );

    b.quit();
    let after = Metrics::read(&a_metrics);
    assert_eq!(after.gauge("hypercore_total_peers", &[]), 0);
    assert_eq!(after.gauge("hyperswarm_server_connections_closed", &[]), 1);
    assert!(
        !after.scrape.samples.iter().any(|s| s.metric == rtt_name),
        "no connection, no round-trip time"
    );
    assert_eq!(after.gauge("feedscope_feeds_active", &[]), 0);
    a.quit();
}

/// Bytes of the regular files under `dir`, as a person would add them up.
fn walked_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            total += walked_bytes(&e.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// Scrapes until `feedscope_storage_bytes` equals the files under `storage` (the engine
/// commits staged blocks each second); returns both, the last seen.
fn storage_bytes_settle(metrics: &str, storage: &std::path::Path) -> (u64, u64) {
    let mut seen = (0, 0);
    for _ in 0..40 {
        let gauge = Metrics::read(metrics).gauge("feedscope_storage_bytes", &[]);
        seen = (gauge, walked_bytes(storage));
        if seen.0 == seen.1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

#[test]
fn storage_bytes_are_the_files_on_disk_after_a_transfer() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_lines(a_dir.path(), "bulk", &blocks("bulk", 2_000, 700));
    let mine = append_hc9(b_dir.path(), "mine", &blocks("mine", 3, 10));
    let (mut a, a_metrics) = with_metrics(a_dir.path(), &["--listen", "127.0.0.1:0"]);
    let addr = a.wait_for("listening", |_| true)["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut b, b_metrics) =
        with_metrics(b_dir.path(), &["--connect", &addr, "--policy", "manual"]);
    let (gauge, walked) = storage_bytes_settle(&b_metrics, b_dir.path());
    assert_eq!(gauge, walked, "at start: the files already there");
    // A person's decision writes decisions.json; the replica grows file by file.
    let pending = b.wait_for("offer_pending", |_| true);
    b.send(serde_json::json!({"cmd": "approve", "peer": pending["peer"], "key": key}));
    b.wait_synced(&key, 2_000);
    // Live appends on A: written by A's store, then replicated into B's.
    a.send(serde_json::json!({"cmd": "append", "feed": "bulk", "data": "one more"}));
    b.wait_synced(&key, 2_001);
    for (metrics, dir) in [(&b_metrics, b_dir.path()), (&a_metrics, a_dir.path())] {
        let (gauge, walked) = storage_bytes_settle(metrics, dir);
        assert_eq!(
            gauge, walked,
            "the gauge is the sum of the files in {dir:?}"
        );
    }
    assert!(walked_bytes(b_dir.path()) > 2_000 * 700);
    assert!(b_dir.path().join("decisions.json").exists());
    b.quit();
    a.quit();
    assert!(feeds(b_dir.path()).iter().any(|f| f["key"] == mine));
}

#[test]
fn an_hc9_session_is_counted_too() {
    const N: u64 = 300;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = append_hc9(a_dir.path(), "cabal", &blocks("c", N as usize, 200));
    let (a, addr) = Node::listen(a_dir.path(), &[]);
    let (mut b, b_metrics) = with_metrics(b_dir.path(), &["--connect", &addr, "--wire", "hc9"]);
    scrape_until_synced(&mut b, &b_metrics, &key, N);
    let m = Metrics::read(&b_metrics);
    assert_eq!(m.counter("feedscope_blocks_received", &[]), N);
    let data = m.counter(
        "feedscope_wire_messages",
        &[
            ("wire", "hc9"),
            ("message", "Data"),
            ("direction", "received"),
        ],
    );
    assert!(data >= N);
    assert_eq!(m.gauge("hypercore_total_wire_data_received", &[]), data);
    assert!(m.gauge("hypercore_total_wire_request_transmitted", &[]) >= 1);
    assert!(m.gauge("hypercore_total_wire_extension_received", &[]) >= 2);
    assert_eq!(
        m.counter(
            "feedscope_wire_messages",
            &[
                ("wire", "hc10"),
                ("message", "Data"),
                ("direction", "received")
            ]
        ),
        0
    );
    assert_eq!(
        m.gauge("feedscope_feed_held_blocks", &[("key", &key[..8])]),
        N
    );
    assert_eq!(m.gauge("hypercore_total_peers", &[]), 1);
    b.quit();
    a.quit();
}

#[test]
fn unknown_paths_get_404() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = with_metrics(dir.path(), &[]);
    for path in ["/", "/metricsx", "/favicon.ico"] {
        assert_eq!(get(&addr, path).0, 404, "{path}");
    }
    assert_eq!(get(&addr, "/metrics").0, 200);
    node.quit();
}

#[test]
fn a_metrics_port_in_use_is_a_clear_error_and_a_failed_exit() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut node = Node::start(dir.path(), &["--metrics", &addr]);
    let ev = node.wait_for("error", |_| true);
    assert_eq!(ev["kind"], "metrics");
    let message = ev["message"].as_str().unwrap();
    assert!(
        message.contains(&addr) && message.contains("--metrics") && message.contains("port"),
        "{message}"
    );
    let status = node
        .exit_within(WAIT, Duration::from_millis(100))
        .expect("exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        node.seen.iter().all(|e| e["type"] != "listening"),
        "it stops before listening or dialing"
    );
}

/// Reads the pending-offers gauge until it is `want`; panics with the last value after `WAIT`.
fn pending_settles(addr: &str, want: u64) {
    let began = std::time::Instant::now();
    loop {
        let now = Metrics::read(addr).gauge("feedscope_offers_pending", &[]);
        if now == want {
            return;
        }
        assert!(began.elapsed() < WAIT, "offers pending: {now}, not {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn offers_pending_count_what_waits_for_a_person() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keys: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|name| append_lines(a_dir.path(), name, &blocks(name, 3, 10)))
        .collect();
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let (mut b, b_metrics) =
        with_metrics(b_dir.path(), &["--connect", &addr, "--policy", "manual"]);
    let peer = b.wait_for("offer_pending", |_| true)["peer"].clone();
    pending_settles(&b_metrics, 3);
    b.send(serde_json::json!({"cmd": "approve", "peer": peer, "key": keys[0]}));
    b.wait_synced(&keys[0], 3);
    pending_settles(&b_metrics, 2);
    b.send(serde_json::json!({"cmd": "decline", "peer": peer, "key": keys[1]}));
    pending_settles(&b_metrics, 1);
    // The peer goes away: what it offered no longer waits.
    a.send(serde_json::json!({"cmd": "quit"}));
    b.wait_for("peer_disconnected", |_| true);
    pending_settles(&b_metrics, 0);
    assert_eq!(
        Metrics::read(&b_metrics).counter("feedscope_offers_received", &[]),
        3,
        "offered keys"
    );
}
