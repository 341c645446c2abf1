//! Hostile peers against a real feedscope process: forged and malformed proofs, replays, data
//! nobody asked for, floods of channels and manifests, too many peers, silent peers. Each test
//! checks what a user sees: the events, whether the connection stays, what was stored, and
//! that honest peers are still served.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::evil::*;
use common::*;
use feedscope::frame::{Item, Msg, MAX_FRAME_BYTES};
use feedscope::limits::Limits;
use feedscope::wire::{self, FeedKey};
use hypercore_protocol::discovery_key;
use hypercore_protocol::schema::{Data, Request};
use hypercore_protocol::Message;
use hypercore_schema::{DataBlock, RequestBlock, RequestUpgrade};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// The limits of the process under test: its defaults.
const L: Limits = Limits::DEFAULT;

/// Upper bound for one step of a test (a reply, an event).
const SOON: Duration = Duration::from_secs(15);

fn of(events: &[Value], ty: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    events
        .iter()
        .filter(|v| v["type"] == ty && pred(v))
        .cloned()
        .collect()
}

fn panics(events: &[Value]) -> Vec<Value> {
    of(events, "error", |v| v["kind"] == "panic")
}

fn text(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

/// A victim listening on loopback with storage in `dir`, and a hostile peer connected to it
/// that opened the root channel and said hello; returns them with the victim's id for it.
fn victim_and_evil(rt: &Runtime, dir: &Path) -> (Node, String, Evil, Value) {
    let (mut victim, addr) = Node::listen(dir, &[]);
    let mut evil = rt.block_on(Evil::connect(&addr)).unwrap();
    let peer = victim.peer_from(&evil.local_addr);
    evil.hello();
    (victim, addr, evil, peer)
}

/// A hostile peer that holds a real feed (the bait) and offers it to a victim; the same feed
/// stays in `genuine` for an honest node.
struct Scene {
    rt: Runtime,
    genuine: TempDir,
    storage: TempDir,
    bait: Bait,
    victim: Node,
    addr: String,
    evil: Evil,
    evil_peer: Value,
}

impl Scene {
    /// The bait has `blocks` blocks of 100 bytes.
    fn new(blocks: usize) -> Scene {
        let rt = runtime();
        let (genuine, storage) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bait = rt.block_on(Bait::new(genuine.path(), "bait", blocks, 100));
        let (victim, addr, evil, evil_peer) = victim_and_evil(&rt, storage.path());
        Scene {
            rt,
            genuine,
            storage,
            bait,
            victim,
            addr,
            evil,
            evil_peer,
        }
    }

    fn key(&self) -> String {
        self.bait.key.to_hex()
    }

    /// The victim's next request for the bait, claiming `length` blocks.
    fn next_request(&mut self, length: u64) -> Request {
        self.rt
            .block_on(self.evil.next_request(&self.bait.key, length, SOON))
            .unwrap()
    }

    /// The honest answer to `r`.
    fn answer(&self, r: &Request) -> Data {
        self.rt.block_on(self.bait.answer(r))
    }

    fn send(&mut self, d: Data) {
        self.evil.core(FEED, d);
    }

    /// Answers `requests` requests honestly; returns the answers.
    fn serve_honestly(&mut self, requests: usize) -> Vec<Data> {
        let length = self.bait.lines.len() as u64;
        (0..requests)
            .map(|_| {
                let r = self.next_request(length);
                let d = self.answer(&r);
                self.send(d.clone());
                d
            })
            .collect()
    }

    /// After the hostile peer sent malformed data: the victim did not panic (and reported the
    /// peer, if `must_report`), and an honest node with the same feed, connecting to the same
    /// victim process, still gets every block to it. Only honest blocks end up stored.
    fn victim_still_replicates(self, what: &str, must_report: bool) {
        let Scene {
            rt,
            genuine,
            storage,
            bait,
            mut victim,
            addr,
            mut evil,
            evil_peer,
        } = self;
        let key = bait.key.to_hex();
        // Once the victim answers a later message (or hung up), its reaction is reported.
        let _ = rt.block_on(evil.alive(SOON));
        let about_evil =
            |v: &Value| (v["type"] == "warning" || v["type"] == "error") && v["peer"] == evil_peer;
        let reported = victim.wait_event(Duration::from_millis(500), about_evil);
        drop(evil);
        victim.wait_for_within("peer_disconnected", SOON, |v| v["peer"] == evil_peer);
        let honest = Node::start(genuine.path(), &["--connect", &addr]);
        let n = bait.lines.len() as u64;
        let outcome = victim.wait_event(Duration::from_secs(20), |v| {
            v["peer"] != evil_peer
                && ((v["type"] == "feed_synced"
                    && v["key"] == key.as_str()
                    && v["length"].as_u64() >= Some(n))
                    || (v["type"] == "error" && v["kind"] == "panic"))
        });
        let synced = outcome.filter(|v| v["type"] == "feed_synced");
        let crashed = panics(&victim.seen);
        let reports: Vec<Value> = victim
            .seen
            .iter()
            .filter(|v| about_evil(v))
            .cloned()
            .collect();
        assert!(
            crashed.is_empty() && synced.is_some() && (reported.is_some() || !must_report),
            "{what}: the victim must not panic, must report the peer (required: {must_report}) \
             and must keep replicating the feed.\npanics: {crashed:#?}\n\
             reports about the hostile peer: {reports:#?}\n\
             feed_synced from an honest node afterwards: {synced:?}"
        );
        eprintln!("{what}: the victim reported {reports:#?}");
        honest.quit();
        victim.quit();
        assert_eq!(
            cat(storage.path(), &key),
            catted(&bait.lines),
            "{what}: only genuine blocks are stored"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Forged and malformed proofs
// ---------------------------------------------------------------------------------------------

#[test]
fn an_upgrade_with_a_bad_signature_is_rejected_and_nothing_is_written() {
    let mut s = Scene::new(8);
    let key = s.key();
    let r = s.next_request(8);
    assert!(
        r.upgrade.is_some(),
        "an empty replica asks for the length first: {r:?}"
    );
    let mut forged = s.answer(&r);
    forged.upgrade.as_mut().unwrap().signature[0] ^= 0x01;
    s.send(forged);

    let Scene {
        genuine,
        storage,
        bait,
        mut victim,
        evil,
        evil_peer,
        ..
    } = s;
    let w = victim.wait_for("warning", |v| {
        v["kind"] == "bad_data" && v["peer"] == evil_peer
    });
    assert!(text(&w).contains("does not verify"), "{w}");
    assert!(text(&w).contains("nothing was written"), "{w}");
    drop(evil);
    victim.wait_for("peer_disconnected", |v| v["peer"] == evil_peer);
    let events = victim.quit();
    assert!(
        of(&events, "feed_synced", |v| v["key"] == key.as_str()).is_empty()
            && of(&events, "feed_progress", |v| v["key"] == key.as_str()).is_empty(),
        "a forged length must not count as progress"
    );
    assert!(panics(&events).is_empty(), "{events:#?}");
    // The replica was created to receive the feed, and stayed empty.
    let listed = feeds(storage.path());
    let replica = listed
        .iter()
        .find(|f| f["key"] == key.as_str())
        .expect("the replica exists");
    assert_eq!(replica["length"], 0, "{replica}");
    assert_eq!(cat(storage.path(), &key), b"");

    // The same storage takes the real feed from an honest peer afterwards.
    let (mut victim, addr) = Node::listen(storage.path(), &[]);
    let honest = Node::start(genuine.path(), &["--connect", &addr]);
    victim.wait_synced(&key, 8);
    honest.quit();
    victim.quit();
    assert_eq!(cat(storage.path(), &key), catted(&bait.lines));
}

#[test]
fn an_upgrade_of_length_zero_is_rejected_without_crashing_the_victim() {
    let mut s = Scene::new(8);
    let r = s.next_request(8);
    assert!(r.upgrade.is_some(), "{r:?}");
    let mut d = s.answer(&r);
    d.upgrade.as_mut().unwrap().length = 0;
    s.send(d);
    s.victim_still_replicates("upgrade.length == 0", true);
}

#[test]
fn an_upgrade_whose_end_overflows_is_rejected_without_crashing_the_victim() {
    let mut s = Scene::new(8);
    let r = s.next_request(8);
    assert!(r.upgrade.is_some(), "{r:?}");
    let mut d = s.answer(&r);
    d.upgrade.as_mut().unwrap().start = u64::MAX - 3; // start + length overflows u64
    s.send(d);
    s.victim_still_replicates("upgrade.start + upgrade.length > u64::MAX", true);
}

#[test]
fn an_upgrade_in_answer_to_a_block_request_does_not_crash_the_victim() {
    let mut s = Scene::new(4);
    // The victim learns length 4 honestly.
    let r = s.next_request(4);
    assert!(r.upgrade.is_some(), "{r:?}");
    let d = s.answer(&r);
    s.send(d);
    // Then the feed grows, and the answers to two block requests (which asked for no upgrade)
    // carry upgrades anyway: one to the new length, one from a start the victim is not at.
    let more = blocks("bait", 8, 100).split_off(4);
    s.rt.block_on(s.bait.grow(&more));
    for (start, length) in [(4, 4), (0, 8)] {
        let r = s.next_request(4);
        assert!(r.block.is_some() && r.upgrade.is_none(), "{r:?}");
        let mut with_upgrade = r.clone();
        with_upgrade.upgrade = Some(RequestUpgrade { start, length });
        let d = s.answer(&with_upgrade);
        s.send(d);
    }
    s.victim_still_replicates("an upgrade answering a block request", false);
}

#[test]
fn data_for_another_block_than_the_one_requested_does_not_crash_the_victim() {
    let mut s = Scene::new(8);
    s.serve_honestly(1); // the length
                         // A genuine proof of block i, relabelled as block i + 1.
    let r = s.next_request(8);
    let asked = r.block.clone().expect("a block request");
    let mut d = s.answer(&r);
    d.block.as_mut().unwrap().index = (asked.index + 1) % 8;
    s.send(d);
    // A genuine proof of another block than the one asked for, under the request's id.
    let r = s.next_request(8);
    let asked = r.block.clone().expect("a block request");
    let mut other = r.clone();
    other.block = Some(RequestBlock {
        index: 7 - asked.index,
        nodes: asked.nodes,
    });
    let mut d = s.answer(&other);
    d.request = r.id;
    s.send(d);
    s.victim_still_replicates("data for another block than requested", true);
}

#[test]
fn a_block_index_far_past_the_end_does_not_crash_the_victim() {
    let mut s = Scene::new(8);
    s.serve_honestly(1); // the length
    let r = s.next_request(8);
    s.send(Data {
        request: r.id,
        fork: 0,
        block: Some(DataBlock {
            index: u64::MAX / 2,
            value: b"far away".to_vec(),
            nodes: Vec::new(),
        }),
        hash: None,
        seek: None,
        upgrade: None,
    });
    s.victim_still_replicates("a block index far past the end", true);
}

// ---------------------------------------------------------------------------------------------
// Replays
// ---------------------------------------------------------------------------------------------

#[test]
fn replayed_data_is_reported_as_not_requested_and_changes_nothing() {
    let mut s = Scene::new(8);
    let key = s.key();
    let answered = s.serve_honestly(1 + 8);
    s.victim.wait_synced(&key, 8);
    let before = s.victim.seen.len();

    let (upgrade, block) = (answered[0].clone(), answered[1].clone());
    s.send(upgrade.clone());
    s.send(block.clone());
    for id in [upgrade.request, block.request] {
        let w = s.victim.wait_for("warning", |v| {
            v["peer"] == s.evil_peer && text(v).contains(&format!("(request id {id})"))
        });
        assert_eq!(w["kind"], "bad_data", "{w}");
        assert!(text(&w).contains("not requested"), "{w}");
    }
    s.rt.block_on(s.evil.alive(SOON))
        .expect("a replay does not end the connection");
    let after = &s.victim.seen[before..];
    assert!(
        of(after, "feed_progress", |_| true).is_empty()
            && of(after, "feed_synced", |_| true).is_empty(),
        "a replay changed the feed: {after:#?}"
    );
    drop(s.evil);
    let events = s.victim.quit();
    assert!(panics(&events).is_empty());
    assert_eq!(cat(s.storage.path(), &key), catted(&s.bait.lines));
}

#[test]
fn replayed_opens_handshake_manifest_and_replicate_do_not_replicate_a_feed_twice() {
    let mut s = Scene::new(8);
    let key = s.key();
    s.serve_honestly(1 + 8);
    s.victim.wait_synced(&key, 8);

    // Every message of the exchange, once more (channel opens are replayed below).
    let bait = s.bait.key;
    s.evil.ext(
        wire::EXT_HANDSHAKE,
        wire::encode_handshake(&wire::Handshake::ours()),
    );
    s.evil.offer(&[bait]);
    s.evil
        .ext(wire::EXT_REPLICATE_FEEDS, wire::encode_keys(&[bait]));
    s.evil.send(&[(FEED, sync(8)), (FEED, have(8))]);
    let w = s.victim.wait_for("warning", |v| {
        v["peer"] == s.evil_peer && v["kind"] == "protocol"
    });
    assert!(text(&w).contains("ignored a second handshake"), "{w}");
    // What the replays caused has arrived once the victim answers later messages.
    s.rt.block_on(s.evil.alive(SOON))
        .expect("replays do not end the connection");
    std::thread::sleep(Duration::from_millis(300));
    s.rt.block_on(s.evil.alive(SOON)).unwrap();

    let dkey = discovery_key(&bait.0);
    let opens = s
        .evil
        .received
        .iter()
        .filter(|i| matches!(i, Item::Open { discovery_key, .. } if discovery_key[..] == dkey[..]))
        .count();
    assert_eq!(
        opens, 1,
        "the victim opened the feed's channel {opens} times"
    );
    let requests: Vec<Vec<FeedKey>> = s
        .evil
        .received
        .iter()
        .filter_map(|i| ext_payload(i, wire::EXT_REQUEST_FEEDS))
        .map(|b| {
            wire::decode_keys(wire::EXT_REQUEST_FEEDS, b, &Limits::DEFAULT)
                .unwrap()
                .keys
        })
        .collect();
    assert_eq!(requests, vec![vec![bait]], "the feed was requested again");
    // A replayed open of a channel that is still open ends the connection, as protomux does.
    s.evil.open(FEED, &bait);
    let err = s.victim.wait_for("error", |v| {
        v["peer"] == s.evil_peer && v["kind"] == "protocol"
    });
    assert!(text(&err).contains("again without closing it"), "{err}");
    s.victim
        .wait_for("peer_disconnected", |v| v["peer"] == s.evil_peer);
    drop(s.evil);
    let events = s.victim.quit();
    let sent = of(&events, "request_sent", |v| v["peer"] == s.evil_peer);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let synced = of(&events, "feed_synced", |v| v["peer"] == s.evil_peer);
    assert_eq!(synced.len(), 1, "{synced:#?}");
    assert!(panics(&events).is_empty());
    assert_eq!(cat(s.storage.path(), &key), catted(&s.bait.lines));
}

// ---------------------------------------------------------------------------------------------
// Unasked data, unoffered requests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_request_for_keys_never_offered_is_refused() {
    let rt = runtime();
    let victim_dir = tempfile::tempdir().unwrap();
    let mine = FeedKey::parse(&append_lines(
        victim_dir.path(),
        "mine",
        &blocks("mine", 2, 10),
    ))
    .unwrap();
    let (mut victim, _, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    let secret = random_public_key();
    evil.ext(wire::EXT_REQUEST_FEEDS, wire::encode_keys(&[secret, mine]));
    let body = rt
        .block_on(evil.wait_ext(wire::EXT_REPLICATE_FEEDS, SOON))
        .unwrap();
    let served = wire::decode_keys(wire::EXT_REPLICATE_FEEDS, &body, &Limits::DEFAULT).unwrap();
    assert_eq!(served.keys, vec![mine], "only the offered feed is served");
    let w = victim.wait_for("warning", |v| {
        v["peer"] == evil_peer && v["kind"] == "refused_request"
    });
    assert!(text(&w).contains(&secret.short()), "{w}");
    rt.block_on(evil.alive(SOON)).unwrap();
    let secret_dkey = discovery_key(&secret.0);
    assert!(
        !evil.received.iter().any(
            |i| matches!(i, Item::Open { discovery_key, .. } if discovery_key[..] == secret_dkey[..])
        ),
        "no channel for a key that was never offered"
    );
    drop(evil);
    victim.quit();
}

#[test]
fn data_for_a_feed_never_asked_for_is_not_stored_and_memory_stays_bounded() {
    let rt = runtime();
    let (other_dir, victim_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bait = rt.block_on(Bait::new(other_dir.path(), "push", 8, 100));
    let key = bait.key.to_hex();
    let (mut victim, _, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();

    // "I replicate this for you", then a channel for it with a complete, genuine feed on it.
    evil.ext(wire::EXT_REPLICATE_FEEDS, wire::encode_keys(&[bait.key]));
    let w = victim.wait_for("warning", |v| {
        v["peer"] == evil_peer && v["kind"] == "unrequested_feed"
    });
    assert!(text(&w).contains(&bait.key.short()), "{w}");
    evil.open(FEED, &bait.key);
    evil.send(&[(FEED, sync(8)), (FEED, have(8))]);
    let mut genuine = Vec::new();
    for i in 0..8u64 {
        let r = Request {
            id: i + 1,
            fork: 0,
            block: Some(RequestBlock { index: i, nodes: 0 }),
            hash: None,
            seek: None,
            upgrade: (i == 0).then_some(RequestUpgrade {
                start: 0,
                length: 8,
            }),
            manifest: false,
            priority: 0,
        };
        genuine.push((FEED, Msg::Core(Message::Data(rt.block_on(bait.answer(&r))))));
    }
    evil.send(&genuine);
    rt.block_on(evil.alive(SOON)).unwrap();

    // Then far more than the victim may buffer for a channel it never opened.
    let pid = victim.child.id();
    let rss_before = rss_kib(pid);
    const BLOCK: usize = 8 * 1024;
    const FLOOD: usize = 8 * L.max_early_messages;
    for chunk in 0..FLOOD / 64 {
        let batch: Vec<(u64, Msg)> = (0..64)
            .map(|j| {
                let n = (chunk * 64 + j) as u64;
                (
                    FEED,
                    Msg::Core(Message::Data(Data {
                        request: 100 + n,
                        fork: 0,
                        block: Some(DataBlock {
                            index: n,
                            value: vec![0xAB; BLOCK],
                            nodes: Vec::new(),
                        }),
                        hash: None,
                        seek: None,
                        upgrade: None,
                    })),
                )
            })
            .collect();
        evil.send(&batch);
    }
    rt.block_on(evil.alive(Duration::from_secs(30)))
        .expect("the connection survives data on a channel the victim never opened");
    let grown = rss_kib(pid).saturating_sub(rss_before);
    eprintln!("the victim grew by {grown} KiB");
    let sent = (FLOOD * BLOCK / 1024) as u64;
    let bound = ((L.max_early_messages * BLOCK).min(L.max_early_bytes) / 1024) as u64 + 16 * 1024;
    assert!(
        grown < bound,
        "the victim grew by {grown} KiB after {sent} KiB on an unopened channel (bound {bound} KiB)"
    );
    drop(evil);
    let events = victim.quit();
    assert!(panics(&events).is_empty(), "{events:#?}");
    assert!(
        of(&events, "feed_added", |v| v["key"] == key.as_str()).is_empty(),
        "a feed was created for data nobody asked for"
    );
    assert!(
        !feeds(victim_dir.path())
            .iter()
            .any(|f| f["key"] == key.as_str()),
        "the pushed feed was stored"
    );
}

// ---------------------------------------------------------------------------------------------
// Floods and channel tricks
// ---------------------------------------------------------------------------------------------

#[test]
fn thousands_of_channel_opens_are_rejected_past_the_limit_and_the_victim_stays_responsive() {
    let rt = runtime();
    let (victim_dir, honest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks("served", 20, 50);
    let served = append_lines(victim_dir.path(), "served", &lines);
    let (mut victim, addr, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();

    const OPENS: u64 = 5_000;
    for i in 0..OPENS {
        evil.open(100 + i, &random_key());
    }
    let expected = OPENS as usize - L.max_pending_opens;
    let mut rejected = 0usize;
    rt.block_on(evil.wait(SOON, |item| {
        if matches!(item, Item::Reject { channel } if *channel >= 100) {
            rejected += 1;
        }
        (rejected == expected).then_some(())
    }))
    .unwrap_or_else(|e| panic!("{rejected} of {expected} opens rejected: {e}"));
    rt.block_on(evil.alive(SOON))
        .expect("the flooding connection still answers");
    let w = victim.wait_for("warning", |v| {
        v["peer"] == evil_peer && v["kind"] == "limit"
    });
    assert!(
        text(&w).contains(&format!("over {} unmatched opens", L.max_pending_opens)),
        "{w}"
    );

    // Another peer is served meanwhile, in full.
    let mut honest = Node::start(honest_dir.path(), &["--connect", &addr]);
    honest.wait_synced(&served, 20);
    rt.block_on(evil.alive(SOON)).unwrap();
    let rejects = evil
        .received
        .iter()
        .filter(|i| matches!(i, Item::Reject { .. }))
        .count();
    assert_eq!(rejects, expected, "opens rejected in all");
    honest.quit();
    drop(evil);
    let events = victim.quit();
    assert!(panics(&events).is_empty());
    assert_eq!(cat(honest_dir.path(), &served), catted(&lines));
}

/// Frames of the largest size, each a batch of millions of one-byte messages that do not
/// decode: the victim reads them a message at a time (not as a list of millions), shows a
/// few warnings and counts the rest, closes the connection past its limit with an error
/// that says why, and goes on serving others.
#[test]
fn frames_of_millions_of_malformed_messages_are_cut_off_with_memory_bounded() {
    let rt = runtime();
    let victim_dir = tempfile::tempdir().unwrap();
    let (mut victim, addr, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    rt.block_on(evil.alive(SOON)).unwrap();
    let pid = victim.child.id();
    let hwm = || common::kit::memory(&pid.to_string(), "VmHWM").unwrap_or(0) / 1024;
    let before = hwm();

    // A batch on the root channel: `0, 0, channel`, then (length 1, type 0) to the brim. A
    // `Synchronize` of no bytes does not decode.
    const FRAMES: usize = 3;
    let mut frame = vec![0u8, 0, ROOT as u8];
    let messages = (MAX_FRAME_BYTES - 64 - frame.len()) / 2;
    for _ in 0..messages {
        frame.extend_from_slice(&[1, 0]);
    }
    for _ in 0..FRAMES {
        evil.raw(frame.clone());
    }
    let closed = rt.block_on(evil.wait_closed(Duration::from_secs(60)));
    let error = victim.wait_for("error", |v| v["peer"] == evil_peer);
    victim.wait_for_within("peer_disconnected", SOON, |v| v["peer"] == evil_peer);
    let grown = hwm().saturating_sub(before);
    eprintln!("{FRAMES} frames of {messages} messages: peak grew by {grown} KiB; {error}");
    assert!(
        closed.is_ok(),
        "the victim closes the connection: {closed:?}"
    );
    assert_eq!(error["kind"], "malformed_message", "{error}");
    let most = L.max_malformed_messages;
    assert!(
        text(&error).contains(&format!(
            "over {most} messages from the peer did not decode"
        )),
        "{error}"
    );
    // Each frame is 16 MiB; a list of one frame's messages alone would be gigabytes.
    assert!(
        grown < 256 * 1024,
        "the victim's peak grew by {grown} KiB for {FRAMES} frames of {messages} messages"
    );

    // The warnings before: a burst shown, then one that counts the rest.
    let malformed = of(&victim.seen, "warning", |v| {
        v["peer"] == evil_peer && v["kind"] == "malformed_message"
    });
    assert!(
        (2..=64).contains(&malformed.len()),
        "malformed messages are shown a few at a time: {} warnings",
        malformed.len()
    );
    let shown = malformed.len() as u64 - 1;
    let last = malformed.last().unwrap();
    assert!(
        text(last).contains(&format!(
            "{} more malformed_message warnings about this peer were counted",
            most as u64 - shown
        )),
        "the last warning counts what was not shown: {last}"
    );

    // Others are served as before.
    let mut next = rt.block_on(Evil::connect(&addr)).unwrap();
    next.hello();
    rt.block_on(next.wait_ext(wire::EXT_MANIFEST, SOON))
        .expect("a new peer gets the victim's manifest");
    drop(next);
    let events = victim.quit();
    assert!(panics(&events).is_empty(), "{:#?}", panics(&events));
}

#[test]
fn a_channel_opened_twice_and_closed_once_does_not_crash_the_connection() {
    let rt = runtime();
    let victim_dir = tempfile::tempdir().unwrap();
    let (mut victim, _, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    // Channel 5 and channel 6 for the same key the victim never opened; 6 closes; 5 speaks.
    let d = random_public_key();
    evil.open(5, &d);
    evil.open(6, &d);
    evil.close(6);
    evil.msg(5, sync(1));
    let alive = rt.block_on(evil.alive(SOON));
    let _ = victim.wait_for_within("peer_disconnected", Duration::from_millis(500), |v| {
        v["peer"] == evil_peer
    });
    let crashed = panics(&victim.seen);
    assert!(
        alive.is_ok() && crashed.is_empty(),
        "the connection must survive: probe {alive:?}; panics {crashed:#?}"
    );
    drop(evil);
    victim.quit();
}

#[test]
fn a_manifest_flood_is_capped_at_the_offer_limit() {
    let rt = runtime();
    let victim_dir = tempfile::tempdir().unwrap();
    let (mut victim, _, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();

    // Twelve manifests of 10,000 fresh keys each: two past the limit.
    const PER: usize = wire::KEYS_PER_SENT_MANIFEST;
    let over = 2;
    let manifests = L.max_remote_offer / PER + over;
    for _ in 0..manifests {
        let keys: Vec<FeedKey> = (0..PER).map(|_| random_key()).collect();
        evil.offer(&keys);
    }
    // The victim (accepting everything) keeps the first L.max_remote_offer offers and requests
    // no more than a connection can replicate.
    let mut requested = 0usize;
    rt.block_on(evil.wait(Duration::from_secs(30), |item| {
        if let Some(body) = ext_payload(item, wire::EXT_REQUEST_FEEDS) {
            requested += wire::decode_keys(wire::EXT_REQUEST_FEEDS, body, &Limits::DEFAULT)
                .unwrap()
                .keys
                .len();
        }
        (requested >= L.max_active_feeds).then_some(())
    }))
    .unwrap_or_else(|e| panic!("{requested} keys requested: {e}"));
    rt.block_on(evil.alive(SOON)).unwrap();
    let late: usize = evil
        .received
        .iter()
        .filter_map(|i| ext_payload(i, wire::EXT_REQUEST_FEEDS))
        .map(|b| {
            wire::decode_keys(wire::EXT_REQUEST_FEEDS, b, &Limits::DEFAULT)
                .unwrap()
                .keys
                .len()
        })
        .sum();
    assert_eq!(
        late, L.max_active_feeds,
        "keys requested past the feed limit"
    );
    let warned = victim.wait_count("warning", over, SOON, |v| {
        v["peer"] == evil_peer && v["kind"] == "limit" && text(v).contains("offered key(s)")
    });
    assert_eq!(warned.len(), over, "{warned:#?}");
    for w in &warned {
        assert!(
            text(w).contains(&format!(
                "ignored {PER} offered key(s): a peer may offer at most {}",
                L.max_remote_offer
            )),
            "{w}"
        );
    }
    drop(evil);
    let events = victim.quit();
    assert!(panics(&events).is_empty());
}

/// Ignored by default: it creates L.max_active_feeds replicas (four open files each), which takes
/// about half a minute and more file descriptors than a default `ulimit -n` of 1,024 allows.
#[test]
#[ignore = "creates L.max_active_feeds replicas; run with --ignored"]
fn feeds_past_the_per_connection_limit_are_refused() {
    let rt = runtime();
    let victim_dir = tempfile::tempdir().unwrap();
    let (mut victim, _, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    let keys: Vec<FeedKey> = (0..=L.max_active_feeds)
        .map(|_| random_public_key())
        .collect();
    evil.offer(&keys);
    // Whatever the victim requests, we say we replicate all of it.
    let mut requested = Vec::new();
    let _ = rt.block_on(evil.wait(Duration::from_secs(10), |item| {
        if let Some(body) = ext_payload(item, wire::EXT_REQUEST_FEEDS) {
            requested.extend(
                wire::decode_keys(wire::EXT_REQUEST_FEEDS, body, &Limits::DEFAULT)
                    .unwrap()
                    .keys,
            );
        }
        (requested.len() > L.max_active_feeds).then_some(())
    }));
    evil.ext(wire::EXT_REPLICATE_FEEDS, wire::encode_keys(&keys));
    let w = victim.wait_event(Duration::from_secs(180), |v| {
        v["type"] == "warning" && v["peer"] == evil_peer && v["kind"] == "limit"
    });
    let w = w.unwrap_or_else(|| {
        let added = of(&victim.seen, "feed_added", |_| true).len();
        let storage = of(&victim.seen, "error", |v| v["kind"] == "storage");
        panic!(
            "no limit warning for {} feeds on one connection; {added} replicas were created, \
             {} storage errors, the first: {:?}",
            keys.len(),
            storage.len(),
            storage.first()
        )
    });
    assert!(text(&w).contains(&L.max_active_feeds.to_string()), "{w}");
    rt.block_on(evil.alive(Duration::from_secs(300))).unwrap();
    let root = discovery_key(&root_key().0);
    let feed_opens = evil
        .received
        .iter()
        .filter(|i| matches!(i, Item::Open { discovery_key, .. } if discovery_key[..] != root[..]))
        .count();
    assert!(
        feed_opens <= L.max_active_feeds,
        "{feed_opens} feed channels on one connection"
    );
    drop(evil);
    victim.quit();
}

/// Message size and keys per message, each at its limit (accepted, whatever else is wrong with
/// the message) and just past it (refused unread), and the largest frame the transport carries.
#[test]
fn extensions_and_manifests_past_their_size_limits_are_refused_and_the_session_goes_on() {
    let rt = runtime();
    let victim_dir = tempfile::tempdir().unwrap();
    let (mut victim, _, mut evil, evil_peer) = victim_and_evil(&rt, victim_dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    let mut warning = |kind: &str, needle: String| {
        let w = victim
            .wait_event(SOON, |v| {
                v["type"] == "warning"
                    && v["peer"] == evil_peer
                    && v["kind"] == kind
                    && text(v).contains(&needle)
            })
            .unwrap_or_else(|| panic!("no {kind} warning with {needle:?}"));
        text(&w).to_string()
    };

    // At the size limit the manifest is read (and is not JSON); one byte more, it is refused.
    evil.ext(wire::EXT_MANIFEST, vec![b' '; L.max_extension_bytes]);
    warning("malformed", wire::EXT_MANIFEST.into());
    for size in [L.max_extension_bytes + 1, MAX_FRAME_BYTES - 64] {
        evil.ext(wire::EXT_MANIFEST, vec![b' '; size]);
        let w = warning("oversized", format!("message of {size} bytes"));
        assert!(
            w.contains(&format!(
                "over the limit of {} bytes",
                L.max_extension_bytes
            )),
            "{w}"
        );
    }
    // At the key limit every entry is looked at (and none is a key); one more, none is.
    let entries = |n: usize| format!("{{\"keys\":[{}]}}", vec!["0"; n].join(",")).into_bytes();
    evil.ext(wire::EXT_MANIFEST, entries(L.max_keys_per_message));
    warning(
        "invalid_key",
        format!("dropped {} invalid key(s)", L.max_keys_per_message),
    );
    evil.ext(wire::EXT_MANIFEST, entries(L.max_keys_per_message + 1));
    warning(
        "oversized",
        format!(
            "{} keys in one message, over the limit of {}",
            L.max_keys_per_message + 1,
            L.max_keys_per_message
        ),
    );

    // The session goes on: a normal offer is requested.
    let fresh = random_public_key();
    evil.offer(&[fresh]);
    let body = rt
        .block_on(evil.wait_ext(wire::EXT_REQUEST_FEEDS, SOON))
        .unwrap();
    assert_eq!(
        wire::decode_keys(wire::EXT_REQUEST_FEEDS, &body, &Limits::DEFAULT)
            .unwrap()
            .keys,
        vec![fresh]
    );
    drop(evil);
    let events = victim.quit();
    assert!(panics(&events).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Peers per process, silent and stalled peers
// ---------------------------------------------------------------------------------------------

/// Connects a peer to `addr` through both handshakes: it opens the root channel and waits for
/// the victim's hello, so the victim counts it before the next one knocks and keeps it past its
/// root-open timeout.
fn join(rt: &Runtime, addr: &str) -> Result<Evil, String> {
    rt.block_on(async {
        let mut evil = tokio::time::timeout(Duration::from_secs(5), Evil::connect(addr))
            .await
            .map_err(|_| "no handshake within 5 s".to_string())??;
        evil.hello();
        evil.wait_ext(wire::EXT_HANDSHAKE, Duration::from_secs(5))
            .await?;
        Ok(evil)
    })
}

#[test]
fn connections_past_the_peer_limit_are_refused_and_reported() {
    let rt = runtime();
    let (victim_dir, honest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The limit is a setting: lowered here so the flood stays small.
    const MAX: usize = 24;
    let (mut victim, addr) = Node::listen(victim_dir.path(), &["--max-peers", &MAX.to_string()]);
    let extra = 4;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..MAX + extra {
        match join(&rt, &addr) {
            Ok(evil) => held.push(evil),
            Err(_) => refused += 1,
        }
    }
    let warned = victim.wait_count("warning", 1, SOON, |v| v["kind"] == "limit");
    assert!(
        !warned.is_empty() && text(&warned[0]).contains("refused a connection"),
        "no limit warning with {} peers held and {refused} refused: {warned:#?}",
        held.len()
    );
    assert_eq!(
        (held.len(), refused),
        (MAX, extra),
        "peers held and refused"
    );
    // Every refusal is told: at once, or counted in the next warning a second later.
    let mut told = 0;
    for round in 1..=extra {
        let warned = victim.wait_count("warning", round, SOON, |v| v["kind"] == "limit");
        told = warned.iter().map(refusals).sum::<usize>();
        if told >= extra {
            break;
        }
    }
    assert_eq!(told, extra, "every refused connection is told of");

    // Once they leave, the process serves again.
    drop(held);
    let gone = victim.wait_count("peer_disconnected", MAX, Duration::from_secs(20), |_| true);
    assert_eq!(gone.len(), MAX);
    let mut honest = Node::start(honest_dir.path(), &["--connect", &addr]);
    honest.wait_for("handshake_received", |_| true);
    honest.quit();
    let events = victim.quit();
    assert!(panics(&events).is_empty());
}

/// How many refused connections one `limit` warning tells of.
fn refusals(v: &Value) -> usize {
    let t = text(v);
    if t.starts_with("refused a connection from") {
        return 1;
    }
    t.strip_prefix("refused ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a refusal: {t}"))
}

/// A flood of connections past the limit is refused and told of in a few warnings, each
/// saying how many it stands for, while a connected peer keeps replicating.
#[test]
fn a_flood_past_the_peer_limit_is_told_in_few_warnings_and_stalls_nobody() {
    let (victim_dir, honest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut victim, addr) = Node::listen(victim_dir.path(), &["--max-peers", "1"]);
    let mut honest = Node::start(honest_dir.path(), &["--connect", &addr]);
    honest.wait_for("handshake_received", |_| true);
    victim.send(json!({"cmd": "add_feed", "name": "live"}));
    let key = victim.wait_for("feed_added", |_| true)["key"]
        .as_str()
        .unwrap()
        .to_string();

    const FLOOD: usize = 300;
    let flood = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut knocked = 0;
            for _ in 0..FLOOD {
                if let Ok(s) = std::net::TcpStream::connect(&addr) {
                    knocked += 1;
                    drop(s);
                }
            }
            knocked
        }
    });
    // The connected peer gets every block appended during the flood.
    for i in 0..20 {
        victim.send(json!({"cmd": "append", "feed": "live", "data": format!("block {i}")}));
    }
    honest.wait_synced(&key, 20);
    let knocked = flood.join().unwrap();
    assert_eq!(knocked, FLOOD, "the kernel took every connection");

    let mut warned = Vec::new();
    for round in 1..=FLOOD {
        warned = victim.wait_count("warning", round, SOON, |v| v["kind"] == "limit");
        if warned.iter().map(refusals).sum::<usize>() >= FLOOD || warned.len() < round {
            break;
        }
    }
    let told: usize = warned.iter().map(refusals).sum();
    assert_eq!(told, FLOOD, "every refusal is counted: {warned:#?}");
    assert!(
        warned.len() < FLOOD / 10,
        "{} warnings for {FLOOD} refusals: they are not grouped",
        warned.len()
    );
    assert!(
        text(&warned[0]).contains("--max-peers"),
        "the warning says what to do: {}",
        text(&warned[0])
    );
    honest.quit();
    let events = victim.quit();
    assert!(panics(&events).is_empty());
}

/// At the limit, a peer that leaves frees its slot before its `peer_disconnected` is out:
/// whoever reconnects on hearing of it is never refused.
#[test]
fn a_slot_is_free_the_moment_its_peer_leaves() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (mut victim, addr) = Node::listen(dir.path(), &["--max-peers", "2"]);
    let _stays = join(&rt, &addr).expect("the first peer joins");
    let mut leaving = join(&rt, &addr).expect("the second peer joins");
    for round in 1..=10 {
        drop(leaving);
        let gone = victim.wait_count("peer_disconnected", round, SOON, |_| true);
        assert_eq!(
            gone.len(),
            round,
            "round {round}: the peer's leaving is reported"
        );
        leaving = join(&rt, &addr).unwrap_or_else(|e| {
            panic!("round {round}: a peer joining a freed slot was refused: {e}")
        });
    }
    let refused = of(&victim.quit(), "warning", |v| v["kind"] == "limit");
    assert!(refused.is_empty(), "nobody was refused: {refused:#?}");
}

#[test]
fn a_peer_limit_of_zero_or_not_a_number_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("s");
    for bad in ["0", "many", "-3"] {
        let flag = format!("--max-peers={bad}");
        let out = feedscope(
            &["run", "--storage", storage.to_str().unwrap(), &flag],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--max-peers {bad}: {err}");
        assert!(err.contains("--max-peers"), "{err}");
        assert!(
            !storage.exists(),
            "nothing was created for --max-peers {bad}"
        );
    }
}

/// One test, because it waits out the idle timeout: a peer that goes silent after the root
/// channel opens, and one that stops in the middle of a frame, are dropped after
/// `L.idle_timeout`; a TCP client that stops in the middle of a handshake frame is dropped after
/// `L.handshake_timeout`; an honest peer that is merely quiet (it sends keep-alives) stays.
#[test]
fn silent_and_stalled_peers_are_dropped_after_their_timeouts_and_quiet_ones_stay() {
    let rt = runtime();
    let (victim_dir, honest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks("live", 3, 20);
    let live = append_lines(honest_dir.path(), "live", &lines);
    let (mut victim, addr) = Node::listen(victim_dir.path(), &[]);
    let mut honest = Node::start(honest_dir.path(), &["--connect", &addr]);
    victim.wait_synced(&live, 3);

    // A: silent after its hello.
    let mut silent = rt.block_on(Evil::connect(&addr)).unwrap();
    let silent_peer = victim.peer_from(&silent.local_addr);
    silent.hello();
    rt.block_on(silent.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    let silent_since = Instant::now();

    // B: through a relay that, after the hello, sends the victim a frame header announcing 100
    // bytes, then 10 of them, then nothing.
    let mut relay = rt.block_on(Relay::start(&addr));
    let mut stalled = rt.block_on(Evil::connect(&relay.addr)).unwrap();
    let upstream = rt.block_on(&mut relay.upstream).unwrap();
    let stalled_peer = victim.peer_from(&upstream);
    stalled.hello();
    rt.block_on(stalled.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    let partial = {
        let mut b = vec![100, 0, 0];
        b.extend_from_slice(&[0x42; 10]);
        b
    };
    relay.cut(partial.clone());
    let stalled_since = Instant::now();

    // C: the same partial frame before any handshake.
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    let raw_addr = raw.local_addr().unwrap().to_string();
    std::io::Write::write_all(&mut raw, &partial).unwrap();
    let raw_since = Instant::now();

    let err = victim
        .wait_for_within("error", L.handshake_timeout + Duration::from_secs(5), |v| {
            v["kind"] == "handshake" && text(v).contains(&raw_addr)
        })
        .expect("a stalled handshake is reported");
    assert!(text(&err).contains("no Noise handshake"), "{err}");
    assert!(raw_since.elapsed() >= L.handshake_timeout - Duration::from_secs(1));

    for (peer, since, who) in [
        (&silent_peer, silent_since, "silent peer"),
        (&stalled_peer, stalled_since, "peer stalled mid-frame"),
    ] {
        let err = victim
            .wait_for_within(
                "error",
                L.idle_timeout.saturating_sub(since.elapsed()) + Duration::from_secs(5),
                |v| v["peer"] == *peer,
            )
            .unwrap_or_else(|| panic!("the {who} was not dropped"));
        assert_eq!(err["kind"], "idle", "{who}: {err}");
        assert!(text(&err).contains("sent nothing"), "{who}: {err}");
        assert!(
            since.elapsed() >= L.idle_timeout - Duration::from_secs(1),
            "the {who} was dropped early, after {:?}",
            since.elapsed()
        );
        victim.wait_for("peer_disconnected", |v| v["peer"] == *peer);
    }
    rt.block_on(silent.wait_closed(SOON))
        .expect("the silent peer's connection is closed");
    rt.block_on(stalled.wait_closed(SOON))
        .expect("the stalled peer's connection is closed");
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(std::io::Read::read(&mut raw, &mut [0u8; 1]).unwrap_or(0), 0);

    // The honest peer said nothing but keep-alives all this time, and is still connected.
    honest.send(json!({"cmd": "append", "feed": "live", "data": "still here"}));
    victim.wait_synced(&live, 4);
    honest.quit();
    let events = victim.quit();
    assert!(panics(&events).is_empty());
}

// ---------------------------------------------------------------------------------------------
// A peer that asks for everything and reads nothing
// ---------------------------------------------------------------------------------------------

/// The victim answers block requests only while what it sent is being read: its memory stays
/// bounded by the write backlog, and the peer is dropped once it has read nothing for
/// L.stall_timeout. Other peers are served meanwhile.
#[test]
fn a_peer_that_asks_for_everything_and_reads_nothing_is_bounded_then_dropped() {
    const BLOCKS: usize = 1_200;
    const SIZE: usize = 64 * 1024;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let key = append_lines(dir.path(), "big", &blocks("big", BLOCKS, SIZE));
    let key = FeedKey::parse(&key).unwrap();
    let (mut victim, addr, mut evil, evil_peer) = victim_and_evil(&rt, dir.path());
    rt.block_on(evil.wait_ext(wire::EXT_MANIFEST, SOON))
        .unwrap();
    evil.ext(wire::EXT_REQUEST_FEEDS, wire::encode_keys(&[key]));
    evil.open(FEED, &key);
    rt.block_on(evil.alive(SOON)).unwrap();
    let pid = victim.child.id();
    let rss_before = rss_kib(pid);

    // Every block at once (about 78 MB of answers), and then never read again.
    for chunk in (0..BLOCKS as u64).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<(u64, Msg)> = chunk
            .iter()
            .map(|&index| {
                let r = Request {
                    id: index + 1,
                    fork: 0,
                    block: Some(RequestBlock { index, nodes: 0 }),
                    hash: None,
                    seek: None,
                    upgrade: None,
                    manifest: false,
                    priority: 0,
                };
                (FEED, Msg::Core(Message::Request(r)))
            })
            .collect();
        evil.send(&batch);
    }
    std::thread::sleep(Duration::from_secs(5));
    let grown = rss_kib(pid).saturating_sub(rss_before);
    eprintln!("the victim grew by {grown} KiB");
    let asked = (BLOCKS * SIZE / 1024) as u64;
    let bound = (L.max_write_backlog / 1024) as u64 + 32 * 1024;
    assert!(
        grown < bound,
        "the victim grew by {grown} KiB for {asked} KiB asked and not read (bound {bound} KiB)"
    );

    // Another peer is served while the first one stalls.
    let other = tempfile::tempdir().unwrap();
    let honest = Node::start(other.path(), &["--connect", &addr]);
    victim.wait_for("handshake_received", |v| v["peer"] != evil_peer);

    // The hostile peer keeps sending keep-alives, so it is not idle: it only reads nothing.
    let deadline = Instant::now() + L.stall_timeout + Duration::from_secs(30);
    let err = loop {
        evil.raw(Vec::new());
        let seen =
            victim.wait_for_within("error", Duration::from_secs(2), |v| v["peer"] == evil_peer);
        if seen.is_some() || Instant::now() > deadline {
            break seen;
        }
    };
    let err = err.expect("the stalled peer is reported");
    assert_eq!(err["kind"], "stalled", "{err}");
    assert!(text(&err).contains("read nothing"), "{err}");
    victim.wait_for("peer_disconnected", |v| v["peer"] == evil_peer);
    drop(evil);
    honest.quit();
    let events = victim.quit();
    assert!(panics(&events).is_empty());
}

/// A channel opened with a capability that does not prove knowledge of the key ends the
/// connection, and the process goes on serving others.
#[test]
fn a_channel_opened_with_a_wrong_capability_ends_the_connection() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (mut victim, addr) = Node::listen(dir.path(), &[]);
    let mut evil = rt.block_on(Evil::connect(&addr)).unwrap();
    let evil_peer = victim.peer_from(&evil.local_addr);
    // The right discovery key, so the victim matches the open, with a made-up capability.
    let dkey = discovery_key(&root_key().0);
    evil.raw(feedscope::frame::encode_open(1, &dkey, &[7; 32]));
    let err = victim.wait_for("error", |v| v["peer"] == evil_peer);
    assert_eq!(err["kind"], "bad_capability", "{err}");
    rt.block_on(evil.wait_closed(SOON)).unwrap();
    victim.wait_for("peer_disconnected", |v| v["peer"] == evil_peer);

    let other = tempfile::tempdir().unwrap();
    let honest = Node::start(other.path(), &["--connect", &addr]);
    victim.wait_for("handshake_received", |v| v["peer"] != evil_peer);
    honest.quit();
    let events = victim.quit();
    assert!(panics(&events).is_empty());
}
