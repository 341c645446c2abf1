//! A hostile peer built from feedscope's own transport, framing and capabilities: it speaks as
//! much of the protocol as a test wants, and then whatever the test wants to send.
//!
//! Everything here is async and runs on the test's tokio runtime; the victim is a [`Node`]
//! (`crate::common::Node`), a real `feedscope run --json` process.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use feedscope::event::Wire;
use feedscope::frame::{self, core, Item, Msg};
use feedscope::limits::Limits;
use feedscope::net::hc10::capability;
use feedscope::net::replicate;
use feedscope::net::transport::{Role, Transport};
use feedscope::store::{Feed, Store};
use feedscope::wire::{self, FeedKey, Handshake};
use hypercore_protocol::discovery_key;
use hypercore_protocol::schema::{Data, Range, Request, Synchronize};
use hypercore_protocol::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::append_lines;

/// Our id for the root (multifeed) channel.
pub const ROOT: u64 = 1;
/// Our id for the channel of the feed we serve.
pub const FEED: u64 = 2;

/// A runtime for the hostile side of a test; its tasks keep running while the test waits for a
/// node's events.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The multifeed key every test node uses.
pub fn root_key() -> FeedKey {
    FeedKey::parse(wire::DEFAULT_MULTIFEED_KEY).unwrap()
}

/// 32 random bytes: a well-formed key as far as the wire goes (not always an ed25519 point).
pub fn random_key() -> FeedKey {
    FeedKey(rand::random())
}

/// A real ed25519 public key nobody holds the feed of.
pub fn random_public_key() -> FeedKey {
    FeedKey(
        ed25519_dalek::SigningKey::from_bytes(&rand::random())
            .verifying_key()
            .to_bytes(),
    )
}

/// An extension message.
pub fn ext(name: &str, payload: Vec<u8>) -> Msg {
    Msg::Extension {
        name: name.into(),
        payload,
    }
}

/// The payload of an extension message called `name`, if `item` is one.
pub fn ext_payload<'a>(item: &'a Item, name: &str) -> Option<&'a [u8]> {
    match item {
        Item::Message(_, Ok(Msg::Extension { name: n, payload })) if n == name => Some(payload),
        _ => None,
    }
}

/// A `Synchronize` saying we hold `length` blocks and may upgrade the peer.
pub fn sync(length: u64) -> Msg {
    core(Synchronize {
        fork: 0,
        length,
        remote_length: 0,
        downloading: true,
        uploading: true,
        can_upgrade: true,
    })
}

/// A `Range` saying we hold blocks `0..length`.
pub fn have(length: u64) -> Msg {
    core(Range {
        drop: false,
        start: 0,
        length,
    })
}

/// One end of an encrypted connection to the victim, and what the victim sent on it.
pub struct Evil {
    /// The connection.
    pub t: Transport,
    hash: Vec<u8>,
    /// Our end of the TCP connection: the `addr` of the victim's `peer_connected` event.
    pub local_addr: String,
    /// The victim's channel ids and the discovery keys it opened them for.
    pub opened: HashMap<u64, [u8; 32]>,
    /// Every item the victim sent, in order.
    pub received: Vec<Item>,
    /// Why the connection ended, once it did.
    pub ended: Option<String>,
    unread: VecDeque<Item>,
    next_probe: u64,
}

impl Evil {
    /// Connects to `addr` and completes the Noise handshake as its initiator.
    pub async fn connect(addr: &str) -> Result<Evil, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let local_addr = tcp.local_addr().map_err(|e| e.to_string())?.to_string();
        let t = Transport::handshake(tcp, Role::Dial(Wire::Hc10), &Limits::DEFAULT)
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        Ok(Evil {
            hash: t.handshake_hash().to_vec(),
            t,
            local_addr,
            opened: HashMap::new(),
            received: Vec::new(),
            ended: None,
            unread: VecDeque::new(),
            next_probe: 1_000_000,
        })
    }

    /// The capability that proves to the victim that we know `key`.
    pub fn capability(&self, key: &FeedKey) -> [u8; 32] {
        capability(true, &self.hash, &key.0)
    }

    /// Sends one plaintext frame. A victim that hung up is noticed by the next read.
    pub fn raw(&mut self, plaintext: Vec<u8>) {
        let _ = self.t.send(plaintext);
    }

    /// Opens our channel `channel` for `key`, with a genuine capability.
    pub fn open(&mut self, channel: u64, key: &FeedKey) {
        let cap = self.capability(key);
        self.raw(frame::encode_open(channel, &discovery_key(&key.0), &cap));
    }

    /// Closes our channel `channel`.
    pub fn close(&mut self, channel: u64) {
        self.raw(frame::encode_close(channel));
    }

    /// Sends messages in one frame (a batch if there are several).
    pub fn send(&mut self, messages: &[(u64, Msg)]) {
        self.raw(frame::encode_messages(messages));
    }

    /// Sends one message on `channel`.
    pub fn msg(&mut self, channel: u64, msg: Msg) {
        self.send(&[(channel, msg)]);
    }

    /// Sends one hypercore message on `channel`.
    pub fn core(&mut self, channel: u64, msg: impl Into<Message>) {
        self.msg(channel, core(msg));
    }

    /// Sends an extension message on the root channel.
    pub fn ext(&mut self, name: &str, payload: Vec<u8>) {
        self.msg(ROOT, ext(name, payload));
    }

    /// Opens the root channel and sends our multifeed handshake.
    pub fn hello(&mut self) {
        self.open(ROOT, &root_key());
        self.ext(
            wire::EXT_HANDSHAKE,
            wire::encode_handshake(&Handshake::ours()),
        );
    }

    /// Offers `keys` in as many manifests as the encoder makes.
    pub fn offer(&mut self, keys: &[FeedKey]) {
        for body in wire::encode_manifests(keys, &Default::default()) {
            self.ext(wire::EXT_MANIFEST, body);
        }
    }

    /// Reads what the victim sent next into [`Evil::received`]; `false` when nothing came by
    /// `deadline` or the connection ended (then [`Evil::ended`] says why).
    async fn fill(&mut self, deadline: Instant) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let frames = match tokio::time::timeout_at(deadline, self.t.recv()).await {
            Err(_) => return false,
            Ok(Err(e)) => {
                self.ended = Some(e.to_string());
                return false;
            }
            Ok(Ok(frames)) => frames,
        };
        for f in frames {
            let items = frame::decode(&f)
                .unwrap_or_else(|e| panic!("the victim sent a frame that does not decode: {e}"));
            for item in items {
                if let Item::Open {
                    channel,
                    discovery_key,
                    ..
                } = &item
                {
                    if let Ok(dk) = <[u8; 32]>::try_from(discovery_key.as_slice()) {
                        self.opened.insert(*channel, dk);
                    }
                }
                self.received.push(item.clone());
                self.unread.push_back(item);
            }
        }
        true
    }

    /// The next item from the victim not read yet, if one comes by `deadline`.
    pub async fn next_item(&mut self, deadline: Instant) -> Option<Item> {
        loop {
            if let Some(item) = self.unread.pop_front() {
                return Some(item);
            }
            if !self.fill(deadline).await {
                return None;
            }
        }
    }

    /// Reads until `f` picks an item, for at most `within`.
    pub async fn wait<T>(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&Item) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + within;
        loop {
            let Some(item) = self.next_item(deadline).await else {
                return Err(self.why_not(within));
            };
            if let Some(found) = f(&item) {
                return Ok(found);
            }
        }
    }

    /// Waits for the victim's extension message `name` on the root channel.
    pub async fn wait_ext(&mut self, name: &str, within: Duration) -> Result<Vec<u8>, String> {
        let name = name.to_string();
        self.wait(within, |item| ext_payload(item, &name).map(<[u8]>::to_vec))
            .await
    }

    /// Whether the victim still answers on this connection: a `Request` on the root channel
    /// (whose core holds nothing) must come back as a `NoData` for the same id.
    pub async fn alive(&mut self, within: Duration) -> Result<(), String> {
        let id = self.next_probe;
        self.next_probe += 1;
        self.core(
            ROOT,
            Request {
                id,
                fork: 0,
                block: Some(hypercore_schema::RequestBlock { index: 0, nodes: 0 }),
                hash: None,
                seek: None,
                upgrade: None,
                manifest: false,
                priority: 0,
            },
        );
        self.wait(within, |item| match item {
            Item::Message(_, Ok(Msg::Core(Message::NoData(n)))) if n.request == id => Some(()),
            _ => None,
        })
        .await
    }

    /// Reads (and drops) whatever comes until the victim closes the connection; returns how
    /// long that took, or an error if it stayed open for `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let deadline = started + within;
        while self.next_item(deadline).await.is_some() {}
        if self.ended.is_none() {
            return Err(format!(
                "the victim kept the connection open for {within:?}"
            ));
        }
        Ok(started.elapsed())
    }

    /// Plays the offering side of the exchange for `key`, of which we claim `length` blocks:
    /// a manifest after the victim's handshake, then after its request a `REPLICATE_FEEDS`,
    /// our open of channel [`FEED`], a `Synchronize` and a `Range`. Returns the victim's next
    /// `Request` on that feed.
    pub async fn next_request(
        &mut self,
        key: &FeedKey,
        length: u64,
        within: Duration,
    ) -> Result<Request, String> {
        let dkey = discovery_key(&key.0);
        let deadline = Instant::now() + within;
        loop {
            let Some(item) = self.next_item(deadline).await else {
                return Err(self.why_not(within));
            };
            if ext_payload(&item, wire::EXT_HANDSHAKE).is_some() {
                self.offer(&[*key]);
            } else if let Some(body) = ext_payload(&item, wire::EXT_REQUEST_FEEDS) {
                let asked =
                    wire::decode_keys(wire::EXT_REQUEST_FEEDS, body, &Limits::DEFAULT).unwrap();
                if asked.keys.contains(key) {
                    self.ext(wire::EXT_REPLICATE_FEEDS, wire::encode_keys(&[*key]));
                    self.open(FEED, key);
                    self.send(&[(FEED, sync(length)), (FEED, have(length))]);
                }
            } else if let Item::Message(ch, Ok(Msg::Core(Message::Request(r)))) = item {
                if self.opened.get(&ch) == Some(&dkey) {
                    return Ok(r);
                }
            }
        }
    }

    fn why_not(&self, within: Duration) -> String {
        let last: Vec<String> = self
            .received
            .iter()
            .rev()
            .take(8)
            .map(|i| i.summary())
            .collect();
        match &self.ended {
            Some(e) => format!("the victim ended the connection ({e}); last items: {last:?}"),
            None => format!("nothing suitable within {within:?}; last items: {last:?}"),
        }
    }
}

/// A writable feed the hostile peer holds, so that its proofs are genuine. The same feed, with
/// the same secret key, stays in `genuine`, for an honest feedscope node to serve later.
pub struct Bait {
    /// The feed, opened in this process.
    pub feed: Feed,
    /// Its key.
    pub key: FeedKey,
    /// Its blocks, one line each.
    pub lines: Vec<String>,
    name: String,
    genuine: PathBuf,
    _store: Store,
    _dir: tempfile::TempDir,
}

impl Bait {
    /// Creates feed `name` with `n` blocks of `size` bytes in the storage `genuine` and opens a
    /// copy of that storage here.
    pub async fn new(genuine: &Path, name: &str, n: usize, size: usize) -> Bait {
        let lines = super::blocks(name, n, size);
        let key = FeedKey::parse(&append_lines(genuine, name, &lines)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        copy_dir(genuine, dir.path());
        let store = Store::open(dir.path()).await.unwrap();
        let feed = store.get(&key).expect("the copied feed opens");
        Bait {
            feed,
            key,
            lines,
            name: name.to_string(),
            genuine: genuine.to_path_buf(),
            _store: store,
            _dir: dir,
        }
    }

    /// Appends `lines` to the feed, here and in the genuine storage alike (signatures are
    /// deterministic, so both copies stay the same feed).
    pub async fn grow(&mut self, lines: &[String]) {
        let blocks: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        self.feed.append(&blocks).await.unwrap();
        super::append_batch(&self.genuine, &self.name, lines);
        self.lines.extend_from_slice(lines);
    }

    /// The honest answer to `r`.
    pub async fn answer(&self, r: &Request) -> Data {
        let proof = self
            .feed
            .core
            .lock()
            .await
            .proof(&replicate::request_from_wire(r))
            .expect("the bait can answer what it was asked");
        replicate::proof_to_wire(proof, r.id, r.fork)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A TCP relay in front of a victim: it passes bytes both ways until told to stop passing
/// the client's, and then writes bytes of the test's choosing in their place.
pub struct Relay {
    /// Where the client connects.
    pub addr: String,
    /// The relay's end towards the victim: the `addr` of the victim's `peer_connected` event.
    pub upstream: oneshot::Receiver<String>,
    cut: Option<oneshot::Sender<Vec<u8>>>,
}

impl Relay {
    /// Listens on loopback for one client and relays it to `target`.
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = target.to_string();
        let (up_tx, up_rx) = oneshot::channel();
        let (cut_tx, mut cut_rx) = oneshot::channel::<Vec<u8>>();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let up = TcpStream::connect(&target).await.unwrap();
            let _ = up_tx.send(up.local_addr().unwrap().to_string());
            let (mut client_r, mut client_w) = client.into_split();
            let (mut up_r, mut up_w) = up.into_split();
            // The victim's bytes reach the client until the victim hangs up.
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut up_r, &mut client_w).await;
                let _ = client_w.shutdown().await;
            });
            let mut buf = vec![0u8; 64 * 1024];
            let mut cut = false;
            loop {
                tokio::select! {
                    n = client_r.read(&mut buf) => match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) if !cut => {
                            if up_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                    },
                    bytes = &mut cut_rx, if !cut => {
                        cut = true;
                        if let Ok(bytes) = bytes {
                            let _ = up_w.write_all(&bytes).await;
                        }
                    }
                }
            }
            // Keep the victim's side open (and silent) as long as the client is connected.
            drop(up_w);
        });
        Relay {
            addr,
            upstream: up_rx,
            cut: Some(cut_tx),
        }
    }

    /// Stops relaying the client's bytes and writes `bytes` to the victim instead.
    pub fn cut(&mut self, bytes: Vec<u8>) {
        if let Some(tx) = self.cut.take() {
            let _ = tx.send(bytes);
        }
    }
}

/// Resident memory of process `pid`, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    super::kit::memory(&pid.to_string(), "VmRSS").unwrap_or(0) / 1024
}
