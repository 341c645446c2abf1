use super::*;
use crypto_secretstream::{Header, Key, PullStream, PushStream, Tag};
use hypercore_handshake::{Cipher, CipherEvent, HandshakePattern};
use proptest::prelude::*;

/// The reference stream's tag for a tag byte.
fn their_tag(tag: u8) -> Tag {
    Tag::try_from(tag).expect("a libsodium tag")
}

/// A reference push stream at `key` and `header`.
fn their_push(key: [u8; 32], header: [u8; 24]) -> PushStream {
    // `PushStream::init` draws its header from the generator it is given: one that yields
    // exactly `header`.
    struct Fixed([u8; 24]);
    impl rand::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            unreachable!()
        }
        fn next_u64(&mut self) -> u64 {
            unreachable!()
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.copy_from_slice(&self.0[..dest.len()]);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand::CryptoRng for Fixed {}
    let (h, push) = PushStream::init(Fixed(header), &Key::from(key));
    assert_eq!(h.as_ref(), &header);
    push
}

fn messages() -> impl Strategy<Value = Vec<(Vec<u8>, u8)>> {
    prop::collection::vec(
        (
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 40..3000),
                // Past LONG_MESSAGE, where the MAC is the poly1305 crate's.
                prop::collection::vec(any::<u8>(), 4000..9000),
            ],
            prop_oneof![8 => Just(TAG_MESSAGE), 1 => Just(1u8), 1 => Just(TAG_REKEY)],
        ),
        1..12,
    )
}

proptest! {
    /// Every message sealed here is byte for byte what the reference stream makes, and each
    /// side opens what the other sealed, across rekeys.
    #[test]
    fn the_stream_is_libsodiums(key in any::<[u8; 32]>(), header in any::<[u8; 24]>(), msgs in messages()) {
        let mut ours = Push::new(&key, &header);
        let mut theirs = their_push(key, header);
        let mut our_pull = Pull::new(&key, &header);
        let mut their_pull = PullStream::init(Header::from(header), &Key::from(key));
        for (text, tag) in msgs {
            let mut sealed = text.clone();
            let lead = ours.seal_tagged(&mut sealed, tag);
            sealed.insert(0, lead);
            let mut reference = text.clone();
            theirs.push(&mut reference, &[], their_tag(tag)).unwrap();
            prop_assert_eq!(&sealed, &reference);

            let mut opened = reference.clone();
            prop_assert_eq!(our_pull.open_tagged(&mut opened), Ok(tag));
            prop_assert_eq!(&opened, &text);
            let mut opened = sealed;
            prop_assert_eq!(their_pull.pull(&mut opened, &[]).unwrap(), their_tag(tag));
            prop_assert_eq!(&opened, &text);
        }
    }

    /// A changed byte anywhere in a message is refused, and the stream is left where it was:
    /// the message as sent still opens.
    #[test]
    fn a_changed_byte_is_refused(text in prop::collection::vec(any::<u8>(), 0..200), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (key, header) = ([3u8; 32], [5u8; 24]);
        let mut push = Push::new(&key, &header);
        let mut pull = Pull::new(&key, &header);
        let mut sealed = text.clone();
        let lead = push.seal(&mut sealed);
        sealed.insert(0, lead);
        let mut changed = sealed.clone();
        changed[at.index(sealed.len())] ^= 1 << bit;
        prop_assert_eq!(pull.open(&mut changed), Err(StreamError::Forged));
        pull.open(&mut sealed).unwrap();
        prop_assert_eq!(sealed, text);
    }
}

#[test]
fn messages_out_of_order_or_too_short_are_refused() {
    let (key, header) = ([1u8; 32], [2u8; 24]);
    let mut push = Push::new(&key, &header);
    let mut pull = Pull::new(&key, &header);
    let sealed: Vec<Vec<u8>> = [b"first".to_vec(), b"second".to_vec()]
        .into_iter()
        .map(|mut m| {
            let lead = push.seal(&mut m);
            m.insert(0, lead);
            m
        })
        .collect();
    assert_eq!(
        pull.open(&mut sealed[1].clone()),
        Err(StreamError::Forged),
        "the second message before the first"
    );
    assert_eq!(pull.open(&mut vec![0; 16]), Err(StreamError::Short(16)));
    let mut first = sealed[0].clone();
    pull.open(&mut first).unwrap();
    assert_eq!(first, b"first");
    let mut empty = Vec::new();
    let lead = push.seal(&mut empty);
    empty.insert(0, lead);
    assert_eq!(empty.len(), ABYTES);
}

#[test]
fn a_wrapping_counter_rekeys() {
    let mut state = State::new(&[9; 32], &[4; 24]);
    state.nonce[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let key = state.key;
    state.advance(&[0; 16], TAG_MESSAGE);
    assert_eq!(state.nonce[..4], 1u32.to_le_bytes());
    assert_ne!(state.key, key);
}

#[test]
fn the_namespaces_are_hypercore_cryptos() {
    use blake2::digest::Digest;
    type B256 = blake2::Blake2b<blake2::digest::consts::U32>;
    let name = B256::digest(b"hyperswarm/secret-stream");
    for (i, ns) in [NS_INITIATOR, NS_RESPONDER].into_iter().enumerate() {
        let mut h = B256::new();
        h.update(name);
        h.update([i as u8]);
        assert_eq!(h.finalize()[..], ns, "namespace {i}");
    }
}

/// Our side of a handshake against the crate's `Cipher`, as it goes.
enum Side {
    Handshaking(Handshake),
    Keyed(Keys),
    Ready(Keys, Pull),
}

/// Runs our handshake against the handshake crate's own `Cipher` in memory, then sends a
/// message each way; `initiator` is our side's role.
fn against_the_crates_cipher(initiator: bool) {
    let mut theirs = if initiator {
        let keypair = hypercore_handshake::state_machine::hc_specific::generate_keypair().unwrap();
        Cipher::resp_from_private_with_pattern(None, &keypair, HandshakePattern::XX, &[])
    } else {
        Cipher::new_dht_init_with_pattern(None, HandshakePattern::XX, None, &[])
    }
    .unwrap();
    let (hs, first) = Handshake::start(initiator).unwrap();
    let mut side = Side::Handshaking(hs);
    let mut to_them: Vec<Vec<u8>> = first.into_iter().collect();
    for _ in 0..8 {
        for m in to_them.drain(..) {
            theirs.receive_next(m);
        }
        while let Some(ev) = theirs.next_decrypted_message().unwrap() {
            assert!(matches!(ev, CipherEvent::HandshakePayload(_)), "{ev:?}");
        }
        while let Some(m) = theirs.get_next_sendable_message().unwrap() {
            side = match side {
                Side::Handshaking(hs) => match hs.receive(&m).unwrap() {
                    Step::Send(next, msg) => {
                        to_them.push(msg);
                        Side::Handshaking(next)
                    }
                    Step::Done { last, keys } => {
                        to_them.extend(last);
                        to_them.push(keys.setup.clone());
                        Side::Keyed(keys)
                    }
                },
                // The crate's setup frame comes right after the handshake.
                Side::Keyed(keys) => {
                    let key = clone_key(&keys.pull);
                    Side::Ready(keys, key.open(&m).expect("their setup frame"))
                }
                Side::Ready(..) => panic!("nothing more was expected, got {} bytes", m.len()),
            };
        }
    }
    let Side::Ready(mut keys, mut pull) = side else {
        panic!("the handshake did not finish")
    };
    assert!(theirs.ready());
    assert_eq!(
        Some(keys.handshake_hash.as_slice()),
        theirs.handshake_hash()
    );
    assert_eq!(keys.remote_static, theirs.get_local_public_key());

    let mut ours = b"from feedscope".to_vec();
    let lead = keys.push.seal(&mut ours);
    ours.insert(0, lead);
    theirs.receive_next(ours);
    match theirs.next_decrypted_message().unwrap() {
        Some(CipherEvent::Message(m)) => assert_eq!(m, b"from feedscope"),
        other => panic!("{other:?}"),
    }
    theirs.queue_msg(b"from the crate".to_vec());
    let mut sealed = theirs.get_next_sendable_message().unwrap().unwrap();
    pull.open(&mut sealed).unwrap();
    assert_eq!(sealed, b"from the crate");
}

#[test]
fn the_handshake_and_streams_meet_the_crates_as_initiator() {
    against_the_crates_cipher(true);
}

#[test]
fn the_handshake_and_streams_meet_the_crates_as_responder() {
    against_the_crates_cipher(false);
}

#[test]
fn a_setup_frame_of_the_wrong_size_or_id_is_refused() {
    let (hs, first) = Handshake::start(true).unwrap();
    let (responder, none) = Handshake::start(false).unwrap();
    assert!(none.is_none());
    let Step::Send(responder, answer) = responder.receive(&first.unwrap()).unwrap() else {
        panic!("the responder answers")
    };
    let Step::Done { last, keys: ours } = hs.receive(&answer).unwrap() else {
        panic!("the initiator is done")
    };
    let Step::Done {
        last: none,
        keys: theirs,
    } = responder.receive(&last.unwrap()).unwrap()
    else {
        panic!("the responder is done")
    };
    assert!(none.is_none());
    assert_eq!(ours.handshake_hash, theirs.handshake_hash);
    let short = &theirs.setup[..SETUP_BYTES - 1];
    assert!(matches!(
        clone_key(&ours.pull).open(short),
        Err(StreamError::SetupLength(55))
    ));
    let mut wrong = theirs.setup.clone();
    wrong[0] ^= 1;
    assert_eq!(
        clone_key(&ours.pull).open(&wrong).unwrap_err(),
        StreamError::StreamId
    );
    // Our own setup frame carries the other role's id.
    assert_eq!(
        clone_key(&ours.pull).open(&ours.setup).unwrap_err(),
        StreamError::StreamId
    );
    let mut pull = ours.pull.open(&theirs.setup).unwrap();
    let mut push = theirs.push;
    let mut m = b"hello".to_vec();
    let lead = push.seal(&mut m);
    m.insert(0, lead);
    pull.open(&mut m).unwrap();
    assert_eq!(m, b"hello");
}

fn clone_key(k: &PullKey) -> PullKey {
    PullKey {
        key: k.key,
        expected_id: k.expected_id,
    }
}
