//! Framing and messages against frames captured from real multifeed 6 and Cabal peers, and
//! against random bytes.

use proptest::prelude::*;

use super::frame::{self, decode_frame, peek_varint, put_varint, varint_len, Decoder, Item};
use super::message::*;
use super::FrameError;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

/// Decodes one whole frame (with its length) and checks it encodes back to the same bytes.
fn one(bytes: &[u8]) -> (u64, Message) {
    let mut d = Decoder::new();
    d.push(bytes);
    let item = d.next().unwrap().unwrap();
    assert_eq!(d.next(), Ok(None));
    assert_eq!(d.buffered(), 0);
    match item {
        Item::Message { channel, message } => {
            assert_eq!(frame::encode(channel, &message), bytes, "{message:?}");
            (channel, message)
        }
        Item::KeepAlive => panic!("a keep-alive"),
    }
}

#[test]
fn varints_are_leb128() {
    for (v, bytes) in [
        (0u64, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (177, "b101"),
        (1048576, "808040"),
        (u64::MAX, "ffffffffffffffffff01"),
    ] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(hex::encode(&out), bytes);
        assert_eq!(varint_len(v), out.len());
        assert_eq!(peek_varint(&out), Ok(Some((v, out.len()))));
        assert_eq!(peek_varint(&out[..out.len() - 1]), Ok(None));
    }
    assert_eq!(
        peek_varint(&h("ffffffffffffffffff02")),
        Err(FrameError::VarintOverflow)
    );
    assert_eq!(
        peek_varint(&h("ffffffffffffffffffff01")),
        Err(FrameError::VarintOverflow)
    );
}

#[test]
fn captured_frames_decode_with_their_defaults() {
    // Cabal: Want, Status, the eager and the bitfield Have, Request, Close.
    assert_eq!(
        one(&h("0735080010808040")),
        (
            3,
            Message::Want(Want {
                start: 0,
                length: Some(1048576)
            })
        )
    );
    let (ch, m) = one(&h("052208011000"));
    assert_eq!(ch, 2);
    let Message::Status(s) = m else { panic!() };
    assert!(s.uploading() && !s.downloading());
    let (_, m) = one(&h("03230800"));
    let Message::Have(have) = m else { panic!() };
    assert_eq!((have.start, have.length, have.length()), (0, None, 1));
    assert_eq!(have.bitfield, None);
    let (_, m) = one(&h("0b230800108080401a020280"));
    assert_eq!(
        m,
        Message::Have(Have {
            start: 0,
            length: Some(1048576),
            bitfield: Some(vec![0x02, 0x80]),
            ack: None
        })
    );
    assert_eq!(
        one(&h("09370800100018002000")),
        (
            3,
            Message::Request(Request {
                index: 0,
                bytes: Some(0),
                hash: Some(false),
                nodes: Some(0)
            })
        )
    );
    assert_eq!(one(&h("011a")), (1, Message::Close(Close::default())));
    // An extension is raw: id, then the payload to the end.
    let (ch, m) = one(&h("040f035b5d"));
    assert_eq!(ch, 0);
    assert_eq!(
        m,
        Message::Extension(Extension {
            id: 3,
            payload: b"[]".to_vec()
        })
    );
}

#[test]
fn data_nodes_are_embedded_messages() {
    let data = Data {
        index: 1,
        value: Some(b"hello from a #1".to_vec()),
        nodes: vec![Node {
            index: 0,
            hash: vec![0x5f; 32],
            size: 15,
        }],
        signature: Some(vec![0x68; 64]),
    };
    let bytes = frame::encode(2, &Message::Data(data.clone()));
    let expected = format!(
        "7e29 0801 120f {} 1a26 0800 1220 {} 180f 2240 {}",
        hex::encode(b"hello from a #1"),
        "5f".repeat(32),
        "68".repeat(64)
    )
    .replace(' ', "");
    assert_eq!(hex::encode(&bytes), expected);
    assert_eq!(one(&bytes).1, Message::Data(data));
}

#[test]
fn unknown_fields_are_skipped_and_required_ones_checked() {
    // Open with an unknown varint (3), fixed32 (4), fixed64 (5) and bytes (6) field.
    let mut body = h("0a02aabb");
    body.extend(h("1801 2501020304 290102030405060708 3201ff"));
    body.extend(h("1202ccdd"));
    assert_eq!(
        Message::decode(kind::OPEN, &body),
        Ok(Message::Open(Open {
            discovery_key: vec![0xaa, 0xbb],
            capability: Some(vec![0xcc, 0xdd])
        }))
    );
    // A repeated scalar field: the last one counts.
    assert_eq!(
        Message::decode(kind::WANT, &h("0801 0802")),
        Ok(Message::Want(Want {
            start: 2,
            length: None
        }))
    );
    for (kind, body) in [
        (kind::OPEN, "1202ccdd"),  // no discovery key
        (kind::HAVE, "1001"),      // no start
        (kind::REQUEST, ""),       // no index
        (kind::DATA, "1a02 0800"), // a node without hash and size
        (kind::OPEN, "0801"),      // discovery key as a number
        (kind::STATUS, "0a00"),    // a bool as bytes
        (kind::OPTIONS, "0a01ff"), // a name that is not UTF-8
        (kind::HAVE, "0b"),        // a group
        (kind::HAVE, "0080"),      // field number 0
        (kind::OPEN, "0a05aa"),    // bytes past the end
        (kind::EXTENSION, ""),     // no id
    ] {
        assert!(
            Message::decode(kind, &h(body)).is_err(),
            "type {kind} body {body}"
        );
    }
}

#[test]
fn types_no_version_defines_are_kept_for_the_caller() {
    let (ch, m) = one(&h("03 1b 0102"));
    assert_eq!(ch, 1);
    assert_eq!(
        m,
        Message::Unknown {
            kind: 11,
            body: vec![1, 2]
        }
    );
}

#[test]
fn the_decoder_takes_any_chunking() {
    let frames = [
        frame::encode(1, &Message::Close(Close::default())),
        frame::KEEP_ALIVE.to_vec(),
        frame::encode(
            5,
            &Message::Data(Data {
                index: 9,
                value: Some(vec![7; 300]),
                ..Data::default()
            }),
        ),
        frame::encode(
            0,
            &Message::Extension(Extension {
                id: 4,
                payload: b"{}".to_vec(),
            }),
        ),
    ];
    let all: Vec<u8> = frames.concat();
    let expected: Vec<Item> = frames.iter().map(|f| one_item(f)).collect();
    for chunk in [1, 2, 3, 7, 64, all.len()] {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for piece in all.chunks(chunk) {
            d.push(piece);
            while let Some(item) = d.next().unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got, expected, "chunks of {chunk}");
        assert_eq!(d.buffered(), 0);
    }
}

fn one_item(frame: &[u8]) -> Item {
    let mut d = Decoder::new();
    d.push(frame);
    d.next().unwrap().unwrap()
}

#[test]
fn a_bad_body_is_skipped_and_an_oversized_frame_ends_the_stream() {
    let mut d = Decoder::new();
    // A Have without start, then a keep-alive.
    d.push(&h("03 13 1001 00"));
    let e = d.next().unwrap_err();
    assert!(!e.is_fatal());
    assert_eq!(d.next(), Ok(Some(Item::KeepAlive)));
    assert_eq!(d.next(), Ok(None));

    // 8 MiB is allowed, one byte more is not, before any of the body arrives.
    let mut ok = Vec::new();
    put_varint(&mut ok, frame::MAX_FRAME_BYTES);
    d.push(&ok);
    assert_eq!(d.next(), Ok(None));
    let mut d = Decoder::new();
    let mut big = Vec::new();
    put_varint(&mut big, frame::MAX_FRAME_BYTES + 1);
    d.push(&big);
    let e = d.next().unwrap_err();
    assert_eq!(e, FrameError::TooLarge(frame::MAX_FRAME_BYTES + 1));
    assert!(e.is_fatal());
    d.push(&[0]);
    assert_eq!(d.next(), Err(e));
    assert_eq!(d.buffered(), 0);

    // A length that is not a varint.
    let mut d = Decoder::new();
    d.push(&[0xff; 11]);
    assert!(d.next().unwrap_err().is_fatal());
}

#[test]
fn a_header_varint_out_of_range_is_not_fatal() {
    let e = decode_frame(&h("ffffffffffffffffff7f")).unwrap_err();
    assert!(!e.is_fatal());
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> + Clone {
    proptest::collection::vec(any::<u8>(), 0..40)
}

fn arb_message() -> impl Strategy<Value = Message> {
    let n = any::<u64>;
    let on = || proptest::option::of(any::<u64>());
    let ob = || proptest::option::of(any::<bool>());
    let oby = || proptest::option::of(arb_bytes());
    prop_oneof![
        (arb_bytes(), oby()).prop_map(|(discovery_key, capability)| Message::Open(Open {
            discovery_key,
            capability
        })),
        (proptest::collection::vec("[a-zA-Z_-]{0,20}", 0..6), ob())
            .prop_map(|(extensions, ack)| { Message::Options(Options { extensions, ack }) }),
        (ob(), ob()).prop_map(|(uploading, downloading)| Message::Status(Status {
            uploading,
            downloading
        })),
        (n(), on(), oby(), ob()).prop_map(|(start, length, bitfield, ack)| Message::Have(Have {
            start,
            length,
            bitfield,
            ack
        })),
        (n(), on()).prop_map(|(start, length)| Message::Unhave(Unhave { start, length })),
        (n(), on()).prop_map(|(start, length)| Message::Want(Want { start, length })),
        (n(), on()).prop_map(|(start, length)| Message::Unwant(Unwant { start, length })),
        (n(), on(), ob(), on()).prop_map(|(index, bytes, hash, nodes)| Message::Request(Request {
            index,
            bytes,
            hash,
            nodes
        })),
        (n(), on(), ob()).prop_map(|(index, bytes, hash)| Message::Cancel(Cancel {
            index,
            bytes,
            hash
        })),
        (
            n(),
            oby(),
            proptest::collection::vec((n(), arb_bytes(), n()), 0..4),
            oby()
        )
            .prop_map(|(index, value, nodes, signature)| Message::Data(Data {
                index,
                value,
                nodes: nodes
                    .into_iter()
                    .map(|(index, hash, size)| Node { index, hash, size })
                    .collect(),
                signature
            })),
        oby().prop_map(|discovery_key| Message::Close(Close { discovery_key })),
        (n(), arb_bytes()).prop_map(|(id, payload)| Message::Extension(Extension { id, payload })),
        (11u8..15, arb_bytes()).prop_map(|(kind, body)| Message::Unknown { kind, body }),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                chunk in 1usize..64) {
        let mut d = Decoder::new();
        for piece in bytes.chunks(chunk) {
            d.push(piece);
            loop {
                match d.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => break,
                    Err(_) => {}
                }
            }
        }
        for kind in 0..16u8 {
            if let Ok(m) = Message::decode(kind, &bytes) {
                // Whatever decodes, re-encodes to something that decodes the same.
                let mut body = Vec::new();
                m.encode_body(&mut body);
                prop_assert_eq!(Message::decode(kind, &body), Ok(m));
            }
        }
    }

    #[test]
    fn messages_round_trip_byte_for_byte(
        msgs in proptest::collection::vec((0u64..1 << 20, arb_message()), 0..8),
        chunk in 1usize..50,
    ) {
        let mut wire = Vec::new();
        for (ch, m) in &msgs {
            frame::encode_into(&mut wire, *ch, m);
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            d.push(piece);
            while let Some(Item::Message { channel, message }) = d.next().unwrap() {
                got.push((channel, message));
            }
        }
        prop_assert_eq!(&got, &msgs);
        let mut again = Vec::new();
        for (ch, m) in &got {
            frame::encode_into(&mut again, *ch, m);
        }
        prop_assert_eq!(again, wire);
    }
}
