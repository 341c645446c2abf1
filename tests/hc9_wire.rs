//! Cabal's wire (hypercore-protocol 8) against a transcript recorded from the real JavaScript
//! stack with seeded keys and nonces (`tests/vectors/hc9-wire.json`): the handshake, the
//! transport and the first frames are reproduced byte for byte, in both directions.

use feedscope::net::hc9::message::{Extension, Open};
use feedscope::net::hc9::{
    discovery_key, frame, Decoder, Established, Handshake, Item, Message, Secrets,
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
