use super::*;

fn ext(name: &str, payload: &[u8]) -> Msg {
    Msg::Extension {
        name: name.into(),
        payload: payload.to_vec(),
    }
}

#[test]
fn extension_payload_is_raw_to_the_end() {
    let frame = encode_messages(&[(1, ext("MULTIFEED_HANDSHAKE", b"{\"a\":1}"))]);
    // channel 1, type 9, name length 19, name, then the JSON with no length prefix.
    let mut expected = vec![1, 9, 19];
    expected.extend_from_slice(b"MULTIFEED_HANDSHAKE");
    expected.extend_from_slice(b"{\"a\":1}");
    assert_eq!(frame, expected);
    assert_eq!(
        decode(&frame).unwrap(),
        vec![Item::Message(
            1,
            Ok(ext("MULTIFEED_HANDSHAKE", b"{\"a\":1}"))
        )]
    );
}

#[test]
fn batch_round_trips_across_channels() {
    let sync = core(Synchronize {
        fork: 0,
        length: 5,
        remote_length: 0,
        downloading: true,
        uploading: true,
        can_upgrade: true,
    });
    let msgs = vec![
        (1, ext("MULTIFEED_MANIFEST", b"{\"keys\":[]}")),
        (1, ext("", b"{\"keys\":[]}")),
        (2, sync.clone()),
        (1, ext("X", b"")),
    ];
    let frame = encode_messages(&msgs);
    assert_eq!(&frame[..2], &[0, 0]);
    let got: Vec<(u64, Msg)> = decode(&frame)
        .unwrap()
        .into_iter()
        .map(|i| match i {
            Item::Message(c, m) => (c, m.unwrap()),
            other => panic!("not a message: {other:?}"),
        })
        .collect();
    assert_eq!(got, msgs);
}

#[test]
fn a_bad_message_in_a_batch_does_not_take_its_neighbours() {
    let good = {
        let mut b = Vec::new();
        encode_msg_into(&mut b, &ext("A", b"1"));
        b
    };
    let mut frame = vec![0, 0, 1];
    put_bytes(&mut frame, &good);
    put_bytes(&mut frame, &[3, 0xff]); // a Data message with a truncated body
    put_bytes(&mut frame, &good);
    let got = decode(&frame).unwrap();
    assert_eq!(got.len(), 3);
    assert!(matches!(got[0], Item::Message(1, Ok(_))));
    assert!(matches!(got[1], Item::Message(1, Err(_))));
    assert!(matches!(got[2], Item::Message(1, Ok(_))));
}

#[test]
fn control_frames_round_trip() {
    let dk = [7u8; 32];
    let cap = [9u8; 32];
    assert_eq!(
        decode(&encode_open(3, &dk, &cap)).unwrap(),
        vec![Item::Open {
            channel: 3,
            protocol: PROTOCOL_NAME.into(),
            discovery_key: dk.to_vec(),
            capability: Some(cap)
        }]
    );
    assert_eq!(
        decode(&encode_close(4)).unwrap(),
        vec![Item::Close { channel: 4 }]
    );
    assert_eq!(
        decode(&encode_reject(5)).unwrap(),
        vec![Item::Reject { channel: 5 }]
    );
    assert_eq!(decode(&[0, 9]), Err(FrameError::UnknownControl(9)));
}

#[test]
fn truncated_and_empty_frames_are_errors_or_nothing() {
    assert_eq!(decode(&[]).unwrap(), vec![]);
    assert!(decode(&[0, 1, 1]).is_err());
    assert_eq!(
        decode(&[1, 42]).unwrap(),
        vec![Item::Message(1, Err(FrameError::UnknownType(42)))]
    );
}

#[test]
fn a_huge_declared_node_count_is_refused_without_allocating() {
    // Data, flags=block, request 1, fork 0, index 0, empty value, then 2^40 nodes.
    let mut m = vec![1, 3, 1, 1, 0, 0, 0];
    m.push(0xfc);
    m.extend_from_slice(&[0, 0, 0, 0]);
    m[8..12].copy_from_slice(&[0, 0, 0, 1]);
    let mut f = vec![];
    f.extend_from_slice(&m);
    let items = decode(&f).unwrap();
    assert!(matches!(
        items[0],
        Item::Message(1, Err(FrameError::Malformed { .. }))
    ));
    // Bitfield with a count of 2^32 words and none of them.
    let items = decode(&[1, 7, 0, 0xfc, 0, 0, 0, 1]).unwrap();
    assert!(matches!(items[0], Item::Message(1, Err(_))));
}

#[test]
fn control_messages_inside_a_batch_are_understood() {
    // What a corked JS protomux sends: a message on channel 1, then a close on channel 0.
    let mut frame = vec![0, 0, 1];
    let mut body = Vec::new();
    encode_msg_into(&mut body, &ext("A", b""));
    put_bytes(&mut frame, &body);
    frame.extend_from_slice(&[0, 0]); // switch to channel 0
    put_bytes(&mut frame, &[3, 7]); // close of channel 7
    assert_eq!(
        decode(&frame).unwrap(),
        vec![
            Item::Message(1, Ok(ext("A", b""))),
            Item::Close { channel: 7 }
        ]
    );
}

/// Everything `decode_owned` hands out, a batch's items taken one by one.
fn owned_items(frame: Vec<u8>) -> Result<Vec<Item>, FrameError> {
    Ok(match decode_owned(frame)? {
        Incoming::Empty => Vec::new(),
        Incoming::One(item) => vec![item],
        Incoming::Batch(mut b) => std::iter::from_fn(|| b.next_item()).collect(),
    })
}

#[test]
fn a_batch_read_as_taken_gives_what_decoding_it_whole_gives() {
    let mut frame = vec![0, 0, 1];
    for _ in 0..100_000 {
        put_bytes(&mut frame, &[0]);
    }
    let Ok(Incoming::Batch(mut b)) = decode_owned(frame.clone()) else {
        panic!("a batch");
    };
    assert!(matches!(b.next_item(), Some(Item::Message(1, Err(_)))));
    assert_eq!(owned_items(frame.clone()), decode(&frame));
    assert_eq!(decode(&frame).unwrap().len(), 100_000);
}

/// A batch decoded the plain way, all at once: the meaning the lazy reader must keep.
fn reference(frame: &[u8]) -> Result<Vec<Item>, FrameError> {
    let mut buf = frame.get(2..).unwrap_or_default();
    if frame.get(..2) != Some(&[0, 0]) {
        return decode(frame);
    }
    let mut channel = uint(&mut buf, "batch channel id")?;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = uint(&mut buf, "batch message length")? as usize;
        if len == 0 {
            channel = uint(&mut buf, "batch channel id")?;
            continue;
        }
        if buf.len() < len {
            out.push(Item::Message(
                channel,
                Err(FrameError::Truncated("batched message")),
            ));
            break;
        }
        let (mut msg, rest) = buf.split_at(len);
        buf = rest;
        if channel == 0 {
            let typ = uint(&mut msg, "control type")?;
            out.push(decode_control(typ, msg)?);
        } else {
            out.push(Item::Message(channel, decode_msg(msg)));
        }
    }
    Ok(out)
}

proptest::proptest! {
    /// Batches of random pieces (good and bad messages, channel switches, controls, a cut
    /// tail) read the same either way, errors included.
    #[test]
    fn decode_owned_agrees_with_decode(
        pieces in proptest::collection::vec((0u8..6, proptest::collection::vec(proptest::num::u8::ANY, 0..12)), 0..24),
        cut in 0usize..8,
    ) {
        let mut frame = vec![0, 0, 1];
        for (kind, bytes) in &pieces {
            match kind {
                0 => {
                    let mut body = Vec::new();
                    encode_msg_into(&mut body, &ext("A", bytes));
                    put_bytes(&mut frame, &body);
                }
                1 => put_bytes(&mut frame, bytes),
                2 => frame.extend_from_slice(&[0, bytes.first().copied().unwrap_or(0) & 0x7f]),
                3 => put_bytes(&mut frame, &[3, bytes.first().copied().unwrap_or(0) & 0x7f]),
                4 => put_bytes(&mut frame, &[1, bytes.first().copied().unwrap_or(0) & 0x7f]),
                _ => frame.extend_from_slice(bytes),
            }
        }
        frame.truncate(frame.len().saturating_sub(cut).max(3));
        let expected = reference(&frame);
        proptest::prop_assert_eq!(&decode(&frame), &expected);
        proptest::prop_assert_eq!(&owned_items(frame), &expected);
    }
}
