//! Cabal's wire (hypercore-protocol 8) against a transcript recorded from the real JavaScript
//! stack with seeded keys and nonces (`tests/vectors/hc9-wire.json`): the handshake, the
//! transport and the first frames are reproduced byte for byte, in both directions.

use feedscope::net::hc9::{Established, Handshake, Secrets};
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
