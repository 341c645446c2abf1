//! Peers that break hypercore 10's secret stream, against a real feedscope process: a setup
//! frame with the wrong stream id, one of the wrong size, and a message changed on the way.
//! Each ends only its own connection with an error that says why, and the process goes on
//! serving honest peers.

mod common;

use std::time::Duration;

use common::evil::runtime;
use common::*;
use feedscope::frame::MAX_FRAME_BYTES;
use feedscope::net::framed::FrameReader;
use feedscope::net::secret_stream::{Handshake, Keys, PullKey, Push, Step};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const SOON: Duration = Duration::from_secs(15);

/// A connection made by hand: frames read with feedscope's own reader, written by hand.
struct Conn {
    frames: FrameReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Conn {
    async fn send(&mut self, body: &[u8]) {
        let len = (body.len() as u32).to_le_bytes();
        self.write.write_all(&len[..3]).await.unwrap();
        self.write.write_all(body).await.unwrap();
    }

    /// The next frame that is not a keep-alive, within `SOON`.
    async fn receive(&mut self) -> Vec<u8> {
        let next = async {
            loop {
                match self.frames.next().await.unwrap() {
                    Some(frame) if frame.is_empty() => continue,
                    Some(frame) => return frame,
                    None => panic!("the victim closed the connection"),
                }
            }
        };
        tokio::time::timeout(SOON, next).await.unwrap()
    }
}

/// Dials `addr` and runs the Noise handshake as the initiator, by hand; returns the
/// connection, our address on it and the keys, with nothing sent after the handshake's last
/// message.
async fn handshake(addr: &str) -> (Conn, String, Keys) {
    let tcp = tokio::time::timeout(SOON, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let local = tcp.local_addr().unwrap().to_string();
    let (read, write) = tcp.into_split();
    let mut conn = Conn {
        frames: FrameReader::new(read, MAX_FRAME_BYTES),
        write,
    };
    let (mut hs, first) = Handshake::start(true).unwrap();
    conn.send(&first.expect("the initiator speaks first")).await;
    loop {
        let msg = conn.receive().await;
        match hs.receive(&msg).unwrap() {
            Step::Send(next, msg) => {
                conn.send(&msg).await;
                hs = next;
            }
            Step::Done { last, keys } => {
                if let Some(last) = last {
                    conn.send(&last).await;
                }
                return (conn, local, keys);
            }
        }
    }
}

/// Waits for the end of the connection from `peer` and gives every event about it, as text.
fn story(victim: &mut Node, peer: &Value) -> String {
    victim.wait_for("peer_disconnected", |v| v["peer"] == *peer);
    let told: Vec<String> = victim
        .seen
        .iter()
        .filter(|v| v["peer"] == *peer)
        .map(|v| v.to_string())
        .collect();
    told.join("\n")
}

/// The process still takes an honest peer, and quits cleanly with no panic.
fn still_serves(mut victim: Node, addr: &str, bad: &Value) {
    let other = tempfile::tempdir().unwrap();
    let honest = Node::start(other.path(), &["--connect", addr]);
    victim.wait_for("handshake_received", |v| v["peer"] != *bad);
    honest.quit();
    let events = victim.quit();
    assert!(
        !events
            .iter()
            .any(|v| v["type"] == "error" && v["kind"] == "panic"),
        "a panic"
    );
}

/// A listening victim, and a connection to it by hand up to the end of the handshake.
struct Scene {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    victim: Node,
    addr: String,
    conn: Conn,
    push: Push,
    setup: Vec<u8>,
    pull: Option<PullKey>,
    /// The victim's id for this connection.
    peer: Value,
}

impl Scene {
    fn new() -> Scene {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let (mut victim, addr) = Node::listen(dir.path(), &[]);
        let (conn, local, keys) = rt.block_on(handshake(&addr));
        let peer = victim.peer_from(&local);
        Scene {
            rt,
            _dir: dir,
            victim,
            addr,
            conn,
            push: keys.push,
            setup: keys.setup,
            pull: Some(keys.pull),
            peer,
        }
    }

    fn send(&mut self, frame: &[u8]) {
        self.rt.block_on(self.conn.send(frame));
    }

    fn receive(&mut self) -> Vec<u8> {
        self.rt.block_on(self.conn.receive())
    }

    /// The connection ends with an event that says `why`, and honest peers are served after.
    fn ends_saying(mut self, why: &str) {
        let story = story(&mut self.victim, &self.peer);
        assert!(story.contains(why), "{story}");
        still_serves(self.victim, &self.addr, &self.peer);
    }
}

#[test]
fn a_setup_frame_with_the_wrong_stream_id_ends_the_connection_with_a_reason() {
    let mut scene = Scene::new();
    let mut setup = scene.setup.clone();
    setup[3] ^= 0x40;
    scene.send(&setup);
    scene.ends_saying("secret-stream id does not match");
}

#[test]
fn a_setup_frame_of_the_wrong_size_ends_the_connection_with_a_reason() {
    let mut scene = Scene::new();
    let setup = scene.setup.clone();
    scene.send(&setup[..40]);
    scene.ends_saying("setup is 40 bytes, not 56");
}

#[test]
fn a_message_changed_on_the_way_ends_the_connection_and_the_victims_own_stream_is_sound() {
    let mut scene = Scene::new();
    let setup = scene.setup.clone();
    scene.send(&setup);
    // The victim's setup frame opens our receiving stream, and its first message (the root
    // channel's open) decrypts under it.
    let theirs = scene.receive();
    let pull_key = scene.pull.take().expect("not opened yet");
    let mut pull = pull_key.open(&theirs).expect("the victim's setup frame");
    let mut first = scene.receive();
    pull.open(&mut first)
        .expect("the victim's first message authenticates");
    assert!(!first.is_empty());

    let mut message = b"anything at all".to_vec();
    let lead = scene.push.seal(&mut message);
    message.insert(0, lead);
    message[5] ^= 1;
    scene.send(&message);
    scene.ends_saying("failed authentication");
}
