//! The metrics endpoint: `GET /metrics` answers with the [`Stats`] in the Prometheus text
//! format (OpenMetrics 1.0, which Prometheus reads natively), encoded by `prometheus-client`.
//!
//! The server runs on threads of its own (`tiny_http`), outside the engine's runtime: a
//! scrape reads atomics and one short lock, and a slow or stuck scraper holds up nobody but
//! itself.
//!
//! Names: the hypercore ecosystem's (`hypercore-stats`, `hyperswarm-stats`) where the meaning is
//! the same, so that their dashboards work unchanged. Those tools publish their totals as
//! gauges under these exact names, and a counter would be read as `NAME_total`; they are kept
//! as gauges here too, so existing queries find them. feedscope's own totals are counters.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::event::Direction;
use crate::stats::{
    Snapshot, Stats, DECIDERS, ECOSYSTEM_WIRE, HC10_MESSAGES, HC9_MESSAGES, PROBLEM_KINDS,
};

/// The content type of the answer: OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: String,
}

impl MetricsServer {
    /// Serves `stats` on `addr` (`127.0.0.1:0` takes any free port).
    pub fn start(addr: &str, stats: Arc<Stats>) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?.to_string();
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exporter(stats)));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&serving, &registry))?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// The bound address, with the real port.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    // `unblock` ends this loop.
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or_default();
        let found = path == "/metrics";
        let response = match (request.method(), found) {
            (tiny_http::Method::Get, true) => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, registry) {
                    Ok(()) => tiny_http::Response::from_string(body).with_header(
                        tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                            .expect("a valid header"),
                    ),
                    Err(_) => tiny_http::Response::from_string("cannot encode the metrics\n")
                        .with_status_code(500),
                }
            }
            (_, true) => {
                tiny_http::Response::from_string("only GET /metrics\n").with_status_code(405)
            }
            (_, false) => {
                tiny_http::Response::from_string("not found: the metrics are at /metrics\n")
                    .with_status_code(404)
            }
        };
        let _ = request.respond(response);
    }
}

/// Encodes a [`Stats`] snapshot at each scrape.
#[derive(Debug)]
struct Exporter(Arc<Stats>);

/// Writes one metric: a family of labelled values, or one value with no labels.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    values: &[(Vec<(&str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in values {
        let inner = m.encode_family(labels)?;
        match ty {
            MetricType::Counter => ConstCounter::new(*v).encode(inner)?,
            _ => ConstGauge::new(*v as i64).encode(inner)?,
        }
    }
    Ok(())
}

fn one(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, ty)?;
    match ty {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(v as i64).encode(m),
    }
}

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        ecosystem(&mut enc, &s)?;
        own(&mut enc, &s, self.0.label_cap(), self.0.storage_bytes())
    }
}

/// The names `hypercore-stats` and `hyperswarm-stats` use, with their types.
fn ecosystem(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    use MetricType::Gauge;
    for (name, ..) in ECOSYSTEM_WIRE {
        for (dir, word) in [(Direction::Out, "transmitted"), (Direction::In, "received")] {
            one(
                enc,
                &format!("hypercore_total_wire_{name}_{word}"),
                &format!("Total wire-{name} messages {word} across all connections (hypercore-stats name; monotonic)"),
                Gauge,
                s.ecosystem_wire(name, dir),
            )?;
        }
    }
    one(
        enc,
        "hypercore_total_peers",
        "Connections open now, handshake done",
        Gauge,
        s.peers,
    )?;
    one(
        enc,
        "hypercore_total_inflight_blocks",
        "Block requests sent and not yet answered, on open connections",
        Gauge,
        s.in_flight,
    )?;
    if let Some(rtt) = s.rtt_avg_seconds {
        let m = enc.encode_descriptor(
            "hypercore_round_trip_time_avg_seconds",
            "Mean of the open connections' smoothed TCP round-trip times (the kernel's, TCP_INFO)",
            None,
            Gauge,
        )?;
        ConstGauge::new(rtt).encode(m)?;
    }
    one(
        enc,
        "hypercore_invalid_data",
        "Blocks or proofs received that did not verify (hypercore-stats name; monotonic)",
        Gauge,
        s.problems[0][bad_data()] + s.problems[1][bad_data()],
    )?;
    for (name, v) in [
        ("attempted", s.dials_attempted),
        ("opened", s.dials_opened),
        ("closed", s.dials_closed),
    ] {
        one(
            enc,
            &format!("hyperswarm_client_connections_{name}"),
            &format!("Connections we dialed: {name} (hyperswarm-stats name; monotonic)"),
            Gauge,
            v,
        )?;
    }
    for (name, v) in [("opened", s.accepts_opened), ("closed", s.accepts_closed)] {
        one(
            enc,
            &format!("hyperswarm_server_connections_{name}"),
            &format!("Connections we accepted: {name} (hyperswarm-stats name; monotonic)"),
            Gauge,
            v,
        )?;
    }
    Ok(())
}

fn bad_data() -> usize {
    PROBLEM_KINDS
        .iter()
        .position(|k| *k == crate::event::ProblemKind::BadData)
        .unwrap_or(0)
}

/// feedscope's own metrics.
fn own(
    enc: &mut DescriptorEncoder,
    s: &Snapshot,
    cap: usize,
    storage: Option<u64>,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let mut wire = Vec::new();
    for (w, names, counts) in [
        ("hc10", &HC10_MESSAGES[..], &s.hc10),
        ("hc9", &HC9_MESSAGES[..], &s.hc9),
    ] {
        for (i, name) in names.iter().enumerate() {
            for (d, word) in [(0, "sent"), (1, "received")] {
                wire.push((
                    vec![
                        ("wire", w.to_string()),
                        ("message", name.to_string()),
                        ("direction", word.to_string()),
                    ],
                    counts[i][d],
                ));
            }
        }
    }
    family(
        enc,
        "feedscope_wire_messages",
        "Protocol messages by wire, type and direction",
        Counter,
        &wire,
    )?;
    one(
        enc,
        "feedscope_blocks_received",
        "Data messages received that carried a block",
        Counter,
        s.blocks_received,
    )?;
    one(
        enc,
        "feedscope_block_bytes_received",
        "Bytes of the blocks received",
        Counter,
        s.block_bytes_received,
    )?;
    one(
        enc,
        "feedscope_offers_received",
        "Feed keys peers offered us (a key offered again counts again)",
        Counter,
        s.offers_received,
    )?;
    one(
        enc,
        "feedscope_offers_pending",
        "Offers waiting for a person to approve or decline",
        Gauge,
        s.offers_pending,
    )?;
    let mut decisions = Vec::new();
    for (approved, outcome) in [(1, "approved"), (0, "declined")] {
        for (i, by) in DECIDERS.iter().enumerate() {
            decisions.push((
                vec![("outcome", outcome.to_string()), ("by", by.to_string())],
                s.decisions[approved][i],
            ));
        }
    }
    family(
        enc,
        "feedscope_decisions",
        "Decisions on offered feeds, by outcome and by who decided",
        Counter,
        &decisions,
    )?;
    let refused = PROBLEM_KINDS
        .iter()
        .position(|k| *k == crate::event::ProblemKind::RefusedRequest)
        .unwrap_or(0);
    one(
        enc,
        "feedscope_requests_refused",
        "Requests of peers for feeds never offered to them, refused (in observe mode, every request)",
        Counter,
        s.problems[0][refused] + s.problems[1][refused] + s.refused_observing,
    )?;
    one(
        enc,
        "feedscope_feeds_active",
        "Feeds replicating now, once per peer",
        Gauge,
        s.feeds_active,
    )?;
    for (severity, name) in [(0, "warnings"), (1, "errors")] {
        let values: Vec<_> = PROBLEM_KINDS
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    vec![("kind", k.as_str().to_string())],
                    s.problems[severity][i],
                )
            })
            .collect();
        family(
            enc,
            &format!("feedscope_{name}"),
            &format!("Reported {name} by kind"),
            Counter,
            &values,
        )?;
    }
    let labels = |key: &crate::wire::FeedKey, name: &Option<String>| {
        vec![
            ("key", key.short()),
            ("name", name.clone().unwrap_or_default()),
        ]
    };
    type Get = fn(&crate::stats::FeedRow) -> u64;
    let per_feed: [(&str, &str, MetricType, Get); 3] = [
        (
            "feedscope_feed_held_blocks",
            "Blocks held contiguously from the start, per feed",
            Gauge,
            |r| r.held,
        ),
        (
            "feedscope_feed_remote_blocks",
            "The longest length a peer reported, per feed",
            Gauge,
            |r| r.remote,
        ),
        (
            "feedscope_feed_received_bytes",
            "Block bytes received from peers since start, per feed",
            Counter,
            |r| r.bytes,
        ),
    ];
    for (name, help, ty, get) in per_feed {
        let values: Vec<_> = s
            .feeds
            .iter()
            .map(|(k, r)| (labels(k, &r.name), get(r)))
            .collect();
        family(enc, name, help, ty, &values)?;
    }
    one(
        enc,
        "feedscope_feeds_unlabelled",
        &format!("Feeds not shown one by one: past the first {cap}"),
        Gauge,
        s.feeds_unlabelled,
    )?;
    if let Some(bytes) = storage {
        one(
            enc,
            "feedscope_storage_bytes",
            "Bytes of the files in the storage folder",
            Gauge,
            bytes,
        )?;
    }
    Ok(())
}
