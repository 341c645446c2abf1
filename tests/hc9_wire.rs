//! Cabal's wire (hypercore-protocol 8) against a transcript recorded from the real JavaScript
//! stack with seeded keys and nonces (`tests/vectors/hc9-wire.json`): the handshake, the
//! transport and the first frames are reproduced byte for byte, in both directions.

use feedscope::net::hc9::message::{Extension, Open};
use feedscope::net::hc9::{
    discovery_key, frame, Decoder, Established, Handshake, Item, LocalExtensions, Message,
    RemoteExtensions, Secrets,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/hc9-wire.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn array<const N: usize>(v: &Value) -> [u8; N] {
    bytes(v).try_into().unwrap()
}

fn chunks(v: &Value) -> Vec<Vec<u8>> {
    v.as_array().unwrap().iter().map(bytes).collect()
}

fn side(v: &Value, who: &str) -> Handshake {
    Handshake::with_secrets(
        who == "initiator",
        Secrets {
            static_key: array(&v[format!("{who}_static_sk")]),
            ephemeral_key: Some(array(&v[format!("{who}_ephemeral_sk")])),
            nonce: array(&v[format!("{who}_nonce")]),
        },
    )
    .unwrap()
}

/// Both sides of the recorded handshake: (initiator, responder).
fn handshake(v: &Value) -> (Established, Established) {
    let to_r = chunks(&v["wire_initiator_to_responder_chunks"]);
    let to_i = chunks(&v["wire_responder_to_initiator_chunks"]);
    let mut i = side(v, "initiator");
    let mut r = side(v, "responder");

    assert_eq!(i.take_send(), to_r[0], "msg1");
    assert!(r.receive(&to_r[0]).unwrap().is_none());
    assert_eq!(r.take_send(), to_i[0], "msg2");
    let done_i = i.receive(&to_i[0]).unwrap().unwrap();
    assert_eq!(i.take_send(), to_r[1], "msg3");
    let done_r = r.receive(&to_r[1]).unwrap().unwrap();
    assert!(r.take_send().is_empty());
    (done_i, done_r)
}

#[test]
fn the_handshake_is_reproduced_byte_for_byte() {
    let v = vectors();
    assert_eq!(
        v["noise_protocol_name"],
        feedscope::net::hc9::noise::PROTOCOL_NAME
    );
    let (i, r) = handshake(&v);
    let tx: [u8; 32] = array(&v["initiator_split_tx"]);
    let rx: [u8; 32] = array(&v["initiator_split_rx"]);
    assert_eq!((i.split.tx, i.split.rx), (tx, rx));
    assert_eq!((r.split.tx, r.split.rx), (rx, tx));
    let hash = bytes(&v["handshake_hash"]);
    assert_eq!(i.handshake_hash, hash);
    assert_eq!(r.handshake_hash, hash);
    assert_eq!(i.remote_static, array(&v["responder_static_pk"]));
    assert_eq!(r.remote_static, array(&v["initiator_static_pk"]));
    assert_eq!(i.remote_nonce, array(&v["responder_nonce"]));
    assert_eq!(r.remote_nonce, array(&v["initiator_nonce"]));
    assert!(i.overflow.is_empty() && r.overflow.is_empty());
}

#[test]
fn the_responder_takes_the_initiator_stream_in_any_pieces() {
    let v = vectors();
    let to_r: Vec<u8> = chunks(&v["wire_initiator_to_responder_chunks"]).concat();
    let msg2 = &chunks(&v["wire_responder_to_initiator_chunks"])[0];
    let after = bytes(&v["initiator_ciphertext_after_handshake"]);
    for piece in [1, 7, 59, 60, 200, to_r.len()] {
        let mut r = side(&v, "responder");
        let mut done = None;
        let mut rest = Vec::new();
        for c in to_r.chunks(piece) {
            match &done {
                None => {
                    if let Some(d) = r.receive(c).unwrap() {
                        done = Some(d);
                    }
                }
                Some(_) => rest.extend_from_slice(c),
            }
        }
        let done = done.unwrap();
        assert_eq!(r.take_send(), *msg2, "pieces of {piece}");
        assert_eq!([done.overflow.as_slice(), &rest].concat(), after);
    }
}

/// Decodes a plaintext stream into its items, checking each re-encodes to its own bytes.
fn frames(plain: &[u8]) -> Vec<Item> {
    let mut d = Decoder::new();
    d.push(plain);
    let mut items = Vec::new();
    while let Some(item) = d.next().unwrap() {
        items.push(item);
    }
    assert_eq!(d.buffered(), 0);
    let mut again = Vec::new();
    for item in &items {
        match item {
            Item::KeepAlive => again.extend_from_slice(&frame::KEEP_ALIVE),
            Item::Message { channel, message } => frame::encode_into(&mut again, *channel, message),
        }
    }
    assert_eq!(again, plain);
    items
}

#[test]
fn the_transport_is_reproduced_byte_for_byte() {
    let v = vectors();
    let (i, r) = handshake(&v);
    let plain = bytes(&v["initiator_plaintext_after_handshake"]);
    let cipher = bytes(&v["initiator_ciphertext_after_handshake"]);

    // The initiator encrypts its frames as they were sent: one write per recorded chunk.
    let sent = &chunks(&v["wire_initiator_to_responder_chunks"])[2..];
    assert_eq!(sent.concat(), cipher);
    let (mut tx, _) = i.keystreams();
    let mut at = 0;
    for chunk in sent {
        let mut out = plain[at..at + chunk.len()].to_vec();
        tx.apply(&mut out);
        assert_eq!(&out, chunk);
        at += chunk.len();
    }

    // The responder decrypts them back.
    let (_, mut rx) = r.keystreams();
    let mut got = cipher.clone();
    rx.apply(&mut got);
    assert_eq!(got, plain);

    let items = frames(&plain);
    assert_eq!(items.len(), 4);
    let Item::Message {
        channel: 1,
        message: Message::Open(open),
    } = &items[0]
    else {
        panic!("{:?}", items[0])
    };
    assert_eq!(open.discovery_key, bytes(&v["discovery_key"]));
    assert_eq!(
        open.capability.as_deref(),
        Some(&bytes(&v["initiator_capability_for_feed_key"])[..])
    );
    let Item::Message {
        channel: 0,
        message: Message::Options(options),
    } = &items[1]
    else {
        panic!("{:?}", items[1])
    };
    assert_eq!(
        options.extensions,
        [
            "MULTIFEED_HANDSHAKE",
            "MULTIFEED_MANIFEST",
            "MULTIFEED_REPLICATE_FEEDS",
            "MULTIFEED_REQUEST_FEEDS"
        ]
    );
    assert_eq!(options.ack, None);
    assert_eq!(
        items[2],
        Item::Message {
            channel: 0,
            message: Message::Extension(Extension {
                id: 0,
                payload: br#"{"client":"MULTIFEED","version":"4.0.0"}"#.to_vec()
            })
        }
    );
    assert_eq!(items[3], Item::KeepAlive);
}

#[test]
fn the_responders_open_is_reproduced_byte_for_byte() {
    let v = vectors();
    let (i, r) = handshake(&v);
    let wire = &chunks(&v["wire_responder_to_initiator_chunks"])[1];
    let open = Message::Open(Open {
        discovery_key: bytes(&v["discovery_key"]),
        capability: Some(bytes(&v["responder_capability_for_feed_key"])),
    });
    let mut out = frame::encode(1, &open);
    r.keystreams().0.apply(&mut out);
    assert_eq!(&out, wire);

    let mut got = wire.clone();
    i.keystreams().1.apply(&mut got);
    assert_eq!(
        frames(&got),
        [Item::Message {
            channel: 1,
            message: open
        }]
    );
}

#[test]
fn discovery_key_and_capabilities_are_the_recorded_ones() {
    let v = vectors();
    let (i, r) = handshake(&v);
    let key: [u8; 32] = array(&v["feed_key"]);
    assert_eq!(discovery_key(&key), array(&v["discovery_key"]));
    let i_cap: [u8; 32] = array(&v["initiator_capability_for_feed_key"]);
    let r_cap: [u8; 32] = array(&v["responder_capability_for_feed_key"]);
    assert_eq!(i.split.capability(&key), i_cap);
    assert_eq!(r.split.capability(&key), r_cap);
    assert_eq!(i.split.remote_capability(&key), r_cap);
    assert!(i.split.verify_remote_capability(&key, Some(&r_cap)));
    assert!(r.split.verify_remote_capability(&key, Some(&i_cap)));
    assert!(!r.split.verify_remote_capability(&key, Some(&r_cap)));
}

/// One captured frame: who sent it, the decoded line JavaScript printed, and its bytes.
struct Captured {
    sender: char,
    line: String,
    bytes: Vec<u8>,
}

/// Every frame of a capture of real multifeed 6 or cabal-core 16 peers.
fn capture(name: &str) -> Vec<Captured> {
    let path = format!(
        "{}/tests/vectors/hc9-captures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let (mut section, mut pending): (char, Option<(char, String)>) = ('?', None);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("=====") {
            section = if t.contains("AtoB") { 'A' } else { 'B' };
            continue;
        }
        let sender = match t.split_once("->") {
            Some((head, _)) if head.starts_with('#') => head.chars().last().unwrap(),
            _ => section,
        };
        if t.contains("ch=") && t.contains("type=") {
            let at = t.find("ch=").unwrap();
            pending = Some((sender, t[at..].to_string()));
        } else if t.starts_with("frame") || t.contains("keepalive") {
            let hex = t.rsplit(": ").next().unwrap();
            let (sender, line) = match pending.take() {
                Some(p) => p,
                None => (sender, t.to_string()), // a keep-alive, on one line
            };
            out.push(Captured {
                sender,
                line,
                bytes: hex::decode(hex).unwrap(),
            });
        }
    }
    out
}

fn hex_or_null(b: &Option<Vec<u8>>) -> Value {
    b.as_ref().map_or(Value::Null, |b| hex::encode(b).into())
}

/// A message as JavaScript's decoder has it, defaults filled in.
fn js_view(m: &Message) -> Value {
    use serde_json::json;
    match m {
        Message::Open(o) => json!({
            "discoveryKey": hex::encode(&o.discovery_key),
            "capability": hex_or_null(&o.capability),
        }),
        Message::Options(o) => json!({"extensions": o.extensions, "ack": o.ack.unwrap_or(false)}),
        Message::Status(s) => json!({"uploading": s.uploading(), "downloading": s.downloading()}),
        Message::Have(h) => json!({
            "start": h.start,
            "length": h.length(),
            "bitfield": hex_or_null(&h.bitfield),
            "ack": h.ack.unwrap_or(false),
        }),
        Message::Want(w) => json!({"start": w.start, "length": w.length.unwrap_or(0)}),
        Message::Request(r) => json!({
            "index": r.index,
            "bytes": r.bytes.unwrap_or(0),
            "hash": r.hash.unwrap_or(false),
            "nodes": r.nodes.unwrap_or(0),
        }),
        Message::Data(d) => json!({
            "index": d.index,
            "value": hex_or_null(&d.value),
            "nodes": d.nodes.iter().map(|n| json!({
                "index": n.index, "hash": hex::encode(&n.hash), "size": n.size
            })).collect::<Vec<_>>(),
            "signature": hex_or_null(&d.signature),
        }),
        Message::Close(c) => json!({"discoveryKey": hex_or_null(&c.discovery_key)}),
        other => panic!("not in the captures: {other:?}"),
    }
}

#[test]
fn every_captured_frame_decodes_as_javascript_printed_it() {
    let mut total = 0;
    for name in [
        "cabal16-exchange.txt",
        "multifeed6-empty-exchange.txt",
        "multifeed6-live-exchange.txt",
        "multifeed6-nonlive-exchange.txt",
    ] {
        // What each sender announced, as its peer resolves it.
        let mut announced = [RemoteExtensions::new(), RemoteExtensions::new()];
        let mut names_seen = Vec::new();
        for c in capture(name) {
            total += 1;
            let items = frames(&c.bytes);
            assert_eq!(items.len(), 1, "{name}: {}", c.line);
            let Item::Message { channel, message } = &items[0] else {
                assert!(c.line.contains("keepalive"), "{}", c.line);
                continue;
            };
            let at = |key: &str| {
                let rest = &c.line[c.line.find(key).unwrap() + key.len()..];
                rest.split(' ').next().unwrap().to_string()
            };
            assert_eq!(at("ch=").parse::<u64>().unwrap(), *channel, "{}", c.line);
            let kind: u8 = at("type=").parse().unwrap();
            assert_eq!(kind, message.kind(), "{}", c.line);
            let from = &mut announced[(c.sender == 'B') as usize];
            match message {
                Message::Extension(e) => {
                    assert_eq!(*channel, 0);
                    assert_eq!(at("id=").parse::<u64>().unwrap(), e.id);
                    let ext = at("(");
                    let ext = ext.trim_end_matches(')');
                    assert_eq!(from.name(e.id), Some(ext), "{name}: {}", c.line);
                    names_seen.push(ext.to_string());
                    let shown = &c.line[c.line.find(") ").unwrap() + 2..];
                    let payload = match shown.strip_prefix("payload=") {
                        Some(quoted) => serde_json::from_str::<String>(quoted).unwrap(),
                        None => shown.to_string(),
                    };
                    assert_eq!(e.payload, payload.as_bytes(), "{}", c.line);
                }
                m => {
                    if let Message::Options(o) = m {
                        assert_eq!(*channel, 0);
                        from.on_options(o);
                    }
                    let shown = &c.line[c.line.find(" {").unwrap() + 1..];
                    let shown: Value = serde_json::from_str(shown).unwrap();
                    assert_eq!(js_view(m), shown, "{name}: {}", c.line);
                }
            }
        }
        if name.starts_with("cabal") {
            assert!(names_seen.iter().any(|n| n == "peer-id"));
        }
    }
    assert!(total > 100, "{total} frames");
}

#[test]
fn our_extension_numbering_matches_cabals() {
    let mut ours = LocalExtensions::with([
        "peer-id",
        "MULTIFEED_REQUEST_FEEDS",
        "MULTIFEED_MANIFEST",
        "MULTIFEED_HANDSHAKE",
        "MULTIFEED_REPLICATE_FEEDS",
    ]);
    let captured = capture("cabal16-exchange.txt");
    // Cabal A's Options, then its peer-id message.
    let payload = br#"{"id":"c92d32a9c6fdefb3c244ba5c178ebce7b0083a7c8784922bb3ca6cb825c63c26"}"#;
    let mut wire = Vec::new();
    for m in ours.send("peer-id", payload.to_vec()).unwrap() {
        frame::encode_into(&mut wire, 0, &m);
    }
    assert_eq!(
        wire,
        [&captured[1].bytes[..], &captured[2].bytes[..]].concat()
    );
}
