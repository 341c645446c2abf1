//! The background engine: listens, dials, runs one task per peer, and turns [`Command`]s into
//! work and work into [`Event`]s.
//!
//! The engine never waits on its front end: events go out on an unbounded channel whose rate is
//! bounded at the source (progress at most every 100 ms per feed and peer). A panic in a peer
//! task ends that peer only, reported as an error.
//!
//! Near 700 lines: the listener, the dialer, the peer registry and the command handlers share
//! one `Shared` and one shutdown path, and read best together.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::event::{Command, Event, PeerId, ProblemKind, Wire};
use crate::limits::Limits;
use crate::metrics::MetricsServer;
use crate::net::peer::{EndReason, NewFeeds, Peer, PeerCmd, PeerContext, Report};
use crate::net::transport::{Role, Transport};
use crate::policy::{Curator, Decisions, Policy, Rules};
use crate::stats::Stats;
use crate::store::{Feed, Store, StoreError};
use crate::wire::FeedKey;

/// Time peers get to close cleanly at shutdown before their tasks are aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First and largest delay between attempts to dial an address that is not up.
pub const DIAL_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Attempts per dial before giving up; also the most connections in a row to one dialed
/// address that may fail or end within `Limits::redial_settled` before it is not dialed
/// again.
pub const DIAL_ATTEMPTS: u32 = 30;
/// Longest wait for a dialed address to answer before the attempt counts as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time verified blocks stay staged in memory: they are committed this often (see
/// `core::disk` for the commit protocol).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// What the engine needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Storage folder.
    pub storage: PathBuf,
    /// The shared multifeed key (the root core's key).
    pub key: FeedKey,
    /// Address to listen on, if any. An engine that cannot listen there reports an `error` of
    /// kind `listen` and stops at once.
    pub listen: Option<String>,
    /// Addresses to dial at start.
    pub connect: Vec<String>,
    /// The wire spoken when dialing (`Command::Connect` may name another); a listener
    /// accepts both.
    pub wire: Wire,
    /// How offers are answered.
    pub policy: Policy,
    /// Rules applied to offers before the policy.
    pub rules: Rules,
    /// Report every protocol message as a `wire` event.
    pub trace_wire: bool,
    /// Hold every received message of every peer until it is stepped through.
    pub step: bool,
    /// What peers may make the engine hold or wait for.
    pub limits: Limits,
    /// Address to serve `GET /metrics` on, if any. An engine that cannot listen there
    /// reports an `error` of kind `metrics` and stops at once.
    pub metrics: Option<String>,
    /// Running totals, counted as the engine works (read by the metrics endpoint).
    pub stats: Arc<Stats>,
}

impl Config {
    /// Classic multifeed on `storage` with `key`: accept every offer, no rules, no tracing or
    /// stepping, and no listening or dialing until the caller says so.
    pub fn new(storage: PathBuf, key: FeedKey) -> Config {
        Config {
            storage,
            key,
            listen: None,
            connect: Vec::new(),
            wire: Wire::Hc10,
            policy: Policy::AcceptAll,
            rules: Rules::default(),
            trace_wire: false,
            step: false,
            limits: Limits::DEFAULT,
            metrics: None,
            stats: Stats::new(),
        }
    }
}

/// State shared by the engine and its peer tasks.
#[derive(Debug)]
struct Shared {
    /// What peer tasks see.
    ctx: Arc<PeerContext>,
    peers: Mutex<HashMap<PeerId, mpsc::UnboundedSender<PeerCmd>>>,
    next_peer: AtomicU64,
    /// Connections counted against `Limits::max_peers`, handshakes included; a connection
    /// leaves the count the moment it ends, before its `peer_disconnected`.
    connections: AtomicUsize,
    shutting_down: AtomicBool,
    /// Feeds with appends waiting for the fsync that acknowledges them.
    acks_due: Mutex<HashSet<FeedKey>>,
    /// Acknowledgements not yet sent.
    acks_in_flight: AtomicUsize,
    /// Connections refused at the peer limit and not yet reported.
    refusals: Mutex<Refusals>,
    /// Addresses dialed with `--connect` or `connect`, with the peer connected there (`None`
    /// while dialing or waiting to dial again). A dialed address is dialed again when its
    /// connection ends, and never twice at once.
    dialed: Mutex<HashMap<String, Option<PeerId>>>,
    /// Addresses to dial again, and after how long: the engine's loop starts those dials.
    redials: mpsc::UnboundedSender<(Dialed, Duration)>,
}

/// An address to dial and keep dialing: the wire to speak there, and how many of its
/// connections in a row ended within `Limits::redial_settled`.
#[derive(Debug, Clone)]
struct Dialed {
    addr: String,
    wire: Wire,
    streak: u32,
}

/// A connection for the engine to take on: dialed (at that address) or accepted.
type NewConn = (TcpStream, Role, Option<Dialed>);

/// Whether a new connection could fare better after an error of this kind: after a timeout,
/// a stall or a limit, yes; after the peer showed it is incompatible or misbehaves, no.
fn redial_helps(kind: ProblemKind) -> bool {
    matches!(
        kind,
        ProblemKind::Handshake
            | ProblemKind::Idle
            | ProblemKind::Stalled
            | ProblemKind::Timeout
            | ProblemKind::Limit
    )
}

/// Connections refused at the peer limit: the first after a quiet second is reported at once
/// with its address, the rest of that second in one warning with their count, so that a flood
/// of connections cannot flood the front end too.
#[derive(Debug, Default)]
struct Refusals {
    /// When the last warning went out.
    told_at: Option<std::time::Instant>,
    /// Refused since then.
    untold: u64,
}

/// Shortest time between two warnings about refused connections.
pub const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl Shared {
    /// Publishes an event; a front end that went away is not an error.
    fn emit(&self, ev: Event) {
        self.ctx.emit(ev);
    }

    /// Takes `addr` on as a dialed address, unless it is dialed or connected already: then
    /// says so and returns `None`.
    fn dial_new(&self, addr: String, wire: Wire) -> Option<Dialed> {
        let mut dialed = self.dialed.lock().unwrap();
        if let Some(peer) = dialed.get(&addr) {
            let state = match peer {
                Some(id) => format!("connected to {addr} already (peer {id})"),
                None => format!("dialing {addr} already"),
            };
            drop(dialed);
            self.emit(Event::Warning {
                peer: None,
                kind: ProblemKind::Command,
                message: format!("{state}; it is not dialed twice"),
            });
            return None;
        }
        dialed.insert(addr.clone(), None);
        Some(Dialed {
            addr,
            wire,
            streak: 0,
        })
    }

    /// After a dialed connection ended (or failed before it began): asks the engine to dial
    /// its address again, with a delay that grows while its connections keep failing or
    /// ending within `Limits::redial_settled`. Not when the engine is stopping, when the
    /// connection ended on an error a new one would meet again, or after [`DIAL_ATTEMPTS`]
    /// short ones in a row.
    fn redial(&self, dialed: Dialed, lasted: Duration, reason: &str, error: Option<ProblemKind>) {
        let settled = self.ctx.limits.redial_settled;
        let streak = if lasted >= settled {
            0
        } else {
            dialed.streak + 1
        };
        let stopping = self.shutting_down.load(Ordering::SeqCst);
        if stopping || !error.is_none_or(redial_helps) || streak >= DIAL_ATTEMPTS {
            self.dialed.lock().unwrap().remove(&dialed.addr);
            if !stopping && streak >= DIAL_ATTEMPTS {
                self.emit(Event::Error {
                    peer: None,
                    kind: ProblemKind::Connect,
                    message: format!(
                        "not dialing {} again: its last {streak} connections failed or ended within {settled:?} of their handshake (the last: {reason})",
                        dialed.addr
                    ),
                });
            }
            return;
        }
        self.dialed
            .lock()
            .unwrap()
            .insert(dialed.addr.clone(), None);
        let delay = DIAL_BACKOFF
            .0
            .saturating_mul(1 << streak.min(16))
            .min(DIAL_BACKOFF.1);
        self.emit(Event::ConnectRetry {
            addr: dialed.addr.clone(),
            attempt: streak + 1,
            retry_in_ms: delay.as_millis() as u64,
            error: format!("the connection ended: {reason}"),
        });
        let _ = self.redials.send((Dialed { streak, ..dialed }, delay));
    }

    fn store(&self) -> &Store {
        &self.ctx.store
    }

    /// Offers new local feeds to every peer, in one list they share.
    fn local_feeds(&self, keys: Vec<FeedKey>) {
        let new = Arc::new(NewFeeds::new(keys, self.store(), &self.ctx.feed_numbers));
        for tx in self.peers.lock().unwrap().values() {
            let _ = tx.send(PeerCmd::LocalFeeds(new.clone()));
        }
    }

    /// Tells the peers replicating `key` (but `except`) that our copy of it changed; the
    /// others have no channel to tell.
    fn feed_changed(&self, key: FeedKey, except: Option<PeerId>) {
        let replicating = self.ctx.replicating.peers_of(&key);
        if replicating.iter().all(|id| Some(*id) == except) {
            return;
        }
        let peers = self.peers.lock().unwrap();
        for id in replicating {
            if Some(id) != except {
                if let Some(tx) = peers.get(&id) {
                    let _ = tx.send(PeerCmd::FeedChanged(key));
                }
            }
        }
    }

    /// Carries out what peer tasks reported: `first` and whatever else is waiting. New
    /// feeds reported together go to each peer as one list, so that a hub taking in
    /// thousands of feeds from hundreds of peers sends each peer a few manifests rather than
    /// one per feed.
    /// Growth of one feed reported several times together is told once: a peer hears that
    /// the feed changed, and reads how far when it acts.
    fn on_reports(
        &self,
        first: Report,
        more: &mut mpsc::UnboundedReceiver<Report>,
        new_feeds: &mut Vec<FeedKey>,
    ) {
        // The peer whose data grew each feed, or `None` when several did (then all hear).
        let mut grew: HashMap<FeedKey, Option<PeerId>> = HashMap::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(report) = next.take() {
            match report {
                Report::LocalFeed(key) => new_feeds.push(key),
                Report::FeedGrew(key, by) => {
                    grew.entry(key)
                        .and_modify(|e| {
                            if *e != Some(by) {
                                *e = None;
                            }
                        })
                        .or_insert(Some(by));
                }
            }
            // Bounded, so that commands and connections are not kept waiting.
            taken += 1;
            if taken < 10_000 {
                next = more.try_recv().ok();
            }
        }
        for (key, by) in grew {
            self.feed_changed(key, by);
        }
    }

    /// How long after a list of new feeds went to every peer the next one waits, gathering
    /// what appears meanwhile: [`LIST_GAP_PER_PEER`] for each connected peer, at most
    /// [`LIST_GAP_MOST`]. A hub taking in ten thousand feeds from a thousand peers would
    /// otherwise send each peer thousands of manifests of a few keys.
    fn list_gap(&self) -> Duration {
        let peers = self.peers.lock().unwrap().len() as u32;
        (LIST_GAP_PER_PEER * peers).min(LIST_GAP_MOST)
    }

    fn send_to(&self, peer: Option<PeerId>, make: impl Fn() -> PeerCmd) -> bool {
        let peers = self.peers.lock().unwrap();
        match peer {
            Some(id) => peers
                .get(&id)
                .map(|tx| tx.send(make()).is_ok())
                .unwrap_or(false),
            None => {
                for tx in peers.values() {
                    let _ = tx.send(make());
                }
                true
            }
        }
    }
}

/// A running engine: send it commands, read its events.
#[derive(Debug)]
pub struct Engine {
    /// Commands in.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Events out.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Resolves when the engine has stopped (after [`Command::Quit`], or at once when it
    /// cannot listen).
    pub done: tokio::task::JoinHandle<()>,
}

/// Opens the storage and starts the engine. Storage errors are returned at once.
pub async fn start(config: Config) -> Result<Engine, StoreError> {
    let store = Arc::new(if config.policy == Policy::Observe {
        Store::open_observing(&config.storage).await?
    } else {
        Store::open(&config.storage).await?
    });
    let decisions = Decisions::load(&config.storage).map_err(|reason| StoreError::BadIndex {
        path: config.storage.join("decisions.json"),
        reason,
    })?;
    config.stats.set_storage_bytes(store.bytes());
    config.stats.set_label_cap(config.limits.max_labelled_feeds);
    for f in store.list().await {
        config
            .stats
            .feed_known(f.key, f.name.or(f.offered_name), f.held);
    }
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let (redial_tx, redial_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        ctx: Arc::new(PeerContext {
            store,
            root_key: config.key,
            curator: Curator {
                policy: config.policy,
                rules: config.rules.clone(),
                decisions,
            },
            trace_wire: config.trace_wire,
            step: config.step,
            limits: config.limits.clone(),
            stats: config.stats.clone(),
            events: ev_tx,
            reports: report_tx,
            replicating: Default::default(),
            feed_numbers: crate::session::FeedNumbers::new(),
        }),
        peers: Mutex::new(HashMap::new()),
        next_peer: AtomicU64::new(1),
        connections: AtomicUsize::new(0),
        shutting_down: AtomicBool::new(false),
        acks_due: Mutex::new(HashSet::new()),
        acks_in_flight: AtomicUsize::new(0),
        refusals: Mutex::new(Refusals::default()),
        dialed: Mutex::new(HashMap::new()),
        redials: redial_tx,
    });
    for note in &shared.store().notes {
        shared.emit(Event::Warning {
            peer: None,
            kind: ProblemKind::Storage,
            message: note.clone(),
        });
    }
    for e in &shared.store().broken {
        shared.emit(Event::Error {
            peer: None,
            kind: ProblemKind::Storage,
            message: e.to_string(),
        });
    }
    let done = tokio::spawn(run(shared, config, cmd_rx, report_rx, redial_rx));
    Ok(Engine {
        commands: cmd_tx,
        events: ev_rx,
        done,
    })
}

/// Commits what the feeds staged. A feed in use is left for the next tick (replicating, it
/// also commits before each progress event and every few MiB). A feed that cannot be
/// written is reported once, until it can again; what it staged stays in memory and is
/// tried again.
fn commit_staged(shared: &Shared, failing: &mut HashSet<FeedKey>, open: &mut usize) {
    // What the last tick found decides how soon idle files close on this one.
    let idle = if *open > crate::store::MANY_OPEN_FEEDS {
        Duration::ZERO
    } else {
        crate::store::CLOSE_FILES_AFTER
    };
    *open = 0;
    for feed in shared.store().feeds() {
        let Some(done) = feed.try_commit(idle) else {
            // In use: its files are open.
            *open += 1;
            continue;
        };
        match done {
            Ok(still_open) => {
                *open += usize::from(still_open);
                failing.remove(&feed.entry.key);
            }
            Err(e) if failing.insert(feed.entry.key) => shared.emit(Event::Error {
                peer: None,
                kind: ProblemKind::Storage,
                message: format!(
                    "{e}; its newest blocks are kept in memory and written as soon as the disk takes them"
                ),
            }),
            Err(_) => {}
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    config: Config,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    mut redial_rx: mpsc::UnboundedReceiver<(Dialed, Duration)>,
) {
    let mut tasks = JoinSet::new();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<NewConn>();
    // Held until the engine has stopped: the endpoint answers to the end.
    let _metrics = match &config.metrics {
        Some(addr) => match MetricsServer::start(addr, config.stats.clone()) {
            Ok(server) => {
                shared.emit(Event::MetricsListening {
                    addr: server.addr().to_string(),
                });
                Some(server)
            }
            Err(e) => {
                // Asked for metrics that cannot be served, the engine would run unwatched:
                // it reports why and stops at once, as when it cannot listen for peers.
                shared.emit(Event::Error {
                    peer: None,
                    kind: ProblemKind::Metrics,
                    message: bind_failure("--metrics", addr, &e),
                });
                shut_down(&shared, tasks, JoinSet::new()).await;
                return;
            }
        },
        None => None,
    };
    if let Some(addr) = &config.listen {
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                let bound = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| addr.clone());
                shared.emit(Event::Listening { addr: bound });
                let tx = conn_tx.clone();
                tasks.spawn(accept_loop(shared.clone(), listener, tx));
            }
            Err(e) => {
                // An engine asked to listen that cannot is of no use: it reports why and
                // stops at once, dialing nobody.
                shared.emit(Event::Error {
                    peer: None,
                    kind: ProblemKind::Listen,
                    message: listen_failure(addr, &e),
                });
                shut_down(&shared, tasks, JoinSet::new()).await;
                return;
            }
        }
    }
    for addr in &config.connect {
        if let Some(dialed) = shared.dial_new(addr.clone(), config.wire) {
            tasks.spawn(dial(shared.clone(), dialed, conn_tx.clone()));
        }
    }
    let mut peer_tasks = JoinSet::new();
    let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = HashSet::new();
    let mut open_feeds = 0;
    // The tick's commits, while they run beside this loop.
    let mut committing: Option<tokio::task::JoinHandle<(HashSet<FeedKey>, usize)>> = None;
    // New feeds not yet told to the peers, and when they will be.
    let mut new_feeds = Vec::new();
    let mut list_due: Option<tokio::time::Instant> = None;
    let mut last_list = tokio::time::Instant::now();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None | Some(Command::Quit) => break,
                Some(cmd) => {
                    if let Some((addr, wire)) = handle_command(&shared, cmd).await {
                        if let Some(dialed) = shared.dial_new(addr, wire.unwrap_or(config.wire)) {
                            tasks.spawn(dial(shared.clone(), dialed, conn_tx.clone()));
                        }
                    }
                }
            },
            Some((stream, role, dialed)) = conn_rx.recv() => {
                spawn_peer(&shared, &mut peer_tasks, stream, role, dialed);
            }
            Some((dialed, delay)) = redial_rx.recv() => {
                let (shared, conn_tx) = (shared.clone(), conn_tx.clone());
                tasks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    dial(shared, dialed, conn_tx).await;
                });
            }
            Some(report) = reports.recv() => {
                shared.on_reports(report, &mut reports, &mut new_feeds);
                if !new_feeds.is_empty() && list_due.is_none() {
                    list_due = Some(last_list + shared.list_gap());
                }
            }
            () = sleep_until(list_due), if list_due.is_some() => {
                shared.local_feeds(std::mem::take(&mut new_feeds));
                last_list = tokio::time::Instant::now();
                list_due = None;
            }
            Some(_) = peer_tasks.join_next(), if !peer_tasks.is_empty() => {}
            // Dials that ended (connected, or gave up) leave the set, however many a
            // long-lived engine makes.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = commit_tick.tick() => {
                // On a blocking thread, beside this loop: with thousands of feeds the writes
                // take a while, and a slow disk holds them up, while connections, commands
                // and reports go on being taken. A tick that finds the last one's commits
                // still running leaves them be.
                if committing.is_none() {
                    let (s, mut f, mut o) = (shared.clone(), std::mem::take(&mut failing), open_feeds);
                    committing = Some(tokio::task::spawn_blocking(move || {
                        commit_staged(&s, &mut f, &mut o);
                        (f, o)
                    }));
                }
                report_refusals(&shared, false);
            }
            committed = finished(&mut committing), if committing.is_some() => {
                committing = None;
                if let Ok((f, o)) = committed {
                    (failing, open_feeds) = (f, o);
                }
            }
        }
    }
    // From here no connection that ends is dialed again.
    shared.shutting_down.store(true, Ordering::SeqCst);
    // Storage is flushed once the tick's commits are done, not beside them.
    if let Some(commits) = committing {
        let _ = commits.await;
    }
    shut_down(&shared, tasks, peer_tasks).await;
}

/// The least time between two lists of new feeds for each connected peer, and the most.
const LIST_GAP_PER_PEER: Duration = Duration::from_micros(250);
const LIST_GAP_MOST: Duration = Duration::from_millis(250);

/// Waits for the tick's commits (never called without them).
async fn finished(
    committing: &mut Option<tokio::task::JoinHandle<(HashSet<FeedKey>, usize)>>,
) -> Result<(HashSet<FeedKey>, usize), tokio::task::JoinError> {
    match committing {
        Some(commits) => commits.await,
        None => std::future::pending().await,
    }
}

/// Waits until `due`, or forever.
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Accepting fails now and then (out of file descriptors, most often) while a connection
/// waits; this long between tries, and between two warnings about it.
const ACCEPT_RETRY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(10));

/// Hands accepted connections to the engine. A failed accept is reported (once per
/// [`ACCEPT_RETRY`]) and tried again: the listener never stops while the engine runs.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tx: mpsc::UnboundedSender<NewConn>,
) {
    let mut last_told: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if tx.send((stream, Role::Accept, None)).is_err() {
                    return;
                }
            }
            Err(e) => {
                if last_told.is_none_or(|t| t.elapsed() >= ACCEPT_RETRY.1) {
                    last_told = Some(std::time::Instant::now());
                    let advice = match e.raw_os_error() {
                        // EMFILE, ENFILE
                        Some(24) | Some(23) => {
                            "the process holds as many files as it may: raise its limit (ulimit -n) or lower --max-peers; connections wait and are taken as files free up"
                        }
                        _ => "trying again",
                    };
                    shared.emit(Event::Warning {
                        peer: None,
                        kind: ProblemKind::Limit,
                        message: format!("cannot accept a connection: {e}; {advice}"),
                    });
                }
                tokio::time::sleep(ACCEPT_RETRY.0).await;
            }
        }
    }
}

/// Why `TcpListener::bind(addr)` failed, and what to do about it, in one line.
pub fn listen_failure(addr: &str, e: &std::io::Error) -> String {
    bind_failure("--listen", addr, e)
}

/// Why binding `addr`, given with `flag`, failed, and what to do about it, in one line.
fn bind_failure(flag: &str, addr: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    const NOT_AN_ADDRESS: &str =
        "give an address as HOST:PORT, e.g. 127.0.0.1:4000 (port 0 takes any free one)";
    let advice = match e.kind() {
        ErrorKind::AddrInUse => {
            "another process listens there: pick another port (port 0 takes any free one) or \
             stop that process"
        }
        ErrorKind::InvalidInput => NOT_AN_ADDRESS,
        ErrorKind::PermissionDenied => {
            "not allowed to listen there: ports below 1024 need privileges, pick a higher one"
        }
        ErrorKind::AddrNotAvailable => {
            "this machine has no such address: use one of its own, e.g. 127.0.0.1 or 0.0.0.0"
        }
        // A name that does not resolve.
        _ if addr.parse::<SocketAddr>().is_err() => NOT_AN_ADDRESS,
        _ => &format!("pass another {flag} address"),
    };
    format!("cannot listen on {addr} ({flag}): {e}; {advice}")
}

/// The end of every engine: stops dialing and listening, acknowledges pending appends, closes
/// every peer (aborting those that do not close within [`SHUTDOWN_GRACE`]), writes storage out
/// and emits `stopped`.
async fn shut_down(shared: &Arc<Shared>, mut tasks: JoinSet<()>, mut peer_tasks: JoinSet<()>) {
    tasks.abort_all();
    report_refusals(shared, true);
    // A peer still in its handshake sees this flag before it registers, so none is missed.
    shared.shutting_down.store(true, Ordering::SeqCst);
    // Appends waiting for their acknowledgement get it before `stopped`.
    for _ in 0..1_000 {
        if shared.acks_in_flight.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ids: Vec<PeerId> = shared.peers.lock().unwrap().keys().copied().collect();
    for id in ids {
        shared.send_to(Some(id), || PeerCmd::Close("shutting down".into()));
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while peer_tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Aborting a peer's outer task aborts its connection task too (see `spawn_peer`).
        peer_tasks.shutdown().await;
    }
    for feed in shared.store().feeds() {
        // Each feed's files are closed once synced: ten thousand feeds' would not all fit
        // in the process's open files at once.
        let synced = match feed.sync().await {
            Ok(_) => feed.close_files().await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            shared.emit(Event::Warning {
                peer: None,
                kind: ProblemKind::Storage,
                message: format!("{e}; its newest blocks may be downloaded again next time"),
            });
        }
    }
    // Everything is written: the folder is free for the next process, with no lock file
    // left behind.
    shared.store().release();
    shared.emit(Event::Stopped);
}

fn spawn_peer(
    shared: &Arc<Shared>,
    peer_tasks: &mut JoinSet<()>,
    stream: TcpStream,
    role: Role,
    target: Option<Dialed>,
) {
    let dialed = matches!(role, Role::Dial(_));
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    // Connections still in their handshake count too: each holds a socket and a task.
    let max = shared.ctx.limits.max_peers;
    if shared.connections.fetch_add(1, Ordering::SeqCst) >= max {
        shared.connections.fetch_sub(1, Ordering::SeqCst);
        // The socket closes here, before anything is read from it.
        drop(stream);
        refused(shared, &addr);
        if let Some(target) = target {
            let reason = format!("already {max} peers here");
            shared.redial(target, Duration::ZERO, &reason, None);
        }
        return;
    }
    let id = shared.next_peer.fetch_add(1, Ordering::Relaxed);
    let shared = shared.clone();
    let counted = Counted(shared.clone());
    peer_tasks.spawn(async move {
        let counted = counted;
        let (tx, rx) = mpsc::unbounded_channel();
        let transport = match Transport::handshake(stream, role, &shared.ctx.limits).await {
            Ok(t) => t,
            Err(e) => {
                shared.emit(Event::Error {
                    peer: Some(id),
                    kind: ProblemKind::Handshake,
                    message: format!("connection with {addr} failed during the handshake: {e}"),
                });
                drop(counted);
                if let Some(target) = target {
                    // Never a settled connection, however long the handshake waited.
                    let reason = format!("the handshake failed: {e}");
                    let kind = Some(ProblemKind::Handshake);
                    shared.redial(target, Duration::ZERO, &reason, kind);
                }
                return;
            }
        };
        let connected_at = std::time::Instant::now();
        let stats = shared.ctx.stats.clone();
        stats.connection_opened(dialed);
        let _closed = Closed(stats, dialed);
        shared.emit(Event::PeerConnected {
            peer: id,
            addr: addr.clone(),
            initiator: transport.is_initiator(),
            remote_public_key: hex::encode(transport.remote_public_key()),
            wire: transport.wire(),
        });
        {
            let mut peers = shared.peers.lock().unwrap();
            if shared.shutting_down.load(Ordering::SeqCst) {
                drop(peers);
                drop(counted);
                shared.emit(Event::PeerDisconnected {
                    peer: id,
                    reason: "shutting down".into(),
                });
                return;
            }
            peers.insert(id, tx);
        }
        if let Some(target) = &target {
            shared
                .dialed
                .lock()
                .unwrap()
                .insert(target.addr.clone(), Some(id));
        }
        // The peer runs in its own task so that a panic in it (or in a library under it) is
        // caught here and ends this peer only. The guard aborts it when this task is aborted.
        let inner = tokio::spawn(Peer::run(id, shared.ctx.clone(), transport, rx));
        let guard = AbortOnDrop(inner.abort_handle());
        let result = inner.await;
        drop(guard);
        shared.peers.lock().unwrap().remove(&id);
        // The slot is free before anyone hears the peer left, so a reconnect is never refused.
        drop(counted);
        let end = match result {
            Ok(end) => end,
            Err(e) => {
                let reason = if e.is_panic() {
                    "the peer task panicked; other peers are unaffected".to_string()
                } else {
                    "the peer task was cancelled".to_string()
                };
                shared.emit(Event::Error {
                    peer: Some(id),
                    kind: ProblemKind::Panic,
                    message: reason.clone(),
                });
                EndReason {
                    reason,
                    error: Some(ProblemKind::Panic),
                }
            }
        };
        shared.emit(Event::PeerDisconnected {
            peer: id,
            reason: end.reason.clone(),
        });
        if let Some(target) = target {
            shared.redial(target, connected_at.elapsed(), &end.reason, end.error);
        }
    });
}

/// Counts a connection refused at the peer limit, and reports it unless a warning went out
/// less than [`REFUSAL_REPORT_INTERVAL`] ago (then [`report_refusals`] tells of it later).
fn refused(shared: &Shared, addr: &str) {
    let mut r = shared.refusals.lock().unwrap();
    if r.told_at
        .is_some_and(|t| t.elapsed() < REFUSAL_REPORT_INTERVAL)
    {
        r.untold += 1;
        return;
    }
    r.told_at = Some(std::time::Instant::now());
    drop(r);
    limit_warning(shared, &format!("refused a connection from {addr}"));
}

/// Reports the connections refused since the last warning, in one warning, once
/// [`REFUSAL_REPORT_INTERVAL`] has passed since it (at once if `now`: the engine stops).
fn report_refusals(shared: &Shared, now: bool) {
    let mut r = shared.refusals.lock().unwrap();
    let due = now
        || r.told_at
            .is_none_or(|t| t.elapsed() >= REFUSAL_REPORT_INTERVAL);
    if r.untold == 0 || !due {
        return;
    }
    let n = std::mem::take(&mut r.untold);
    r.told_at = Some(std::time::Instant::now());
    drop(r);
    limit_warning(
        shared,
        &format!("refused {n} more connection(s) in the last second"),
    );
}

/// A `limit` warning about refused connections, with the limit and how to raise it.
fn limit_warning(shared: &Shared, what: &str) {
    let max = shared.ctx.limits.max_peers;
    shared.emit(Event::Warning {
        peer: None,
        kind: ProblemKind::Limit,
        message: format!("{what}: already {max} peers; --max-peers raises the limit"),
    });
}

/// One connection counted against the peer limit, until dropped (also when its task is
/// aborted or panics).
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts an opened connection as closed when dropped (also when its task is aborted).
struct Closed(Arc<Stats>, bool);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.connection_closed(self.1);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn dial(shared: Arc<Shared>, target: Dialed, conn_tx: mpsc::UnboundedSender<NewConn>) {
    let (addr, wire) = (target.addr.clone(), target.wire);
    let mut delay = DIAL_BACKOFF.0;
    for attempt in 1..=DIAL_ATTEMPTS {
        shared.ctx.stats.dial_attempted();
        let connecting = async {
            match addr.parse::<SocketAddr>() {
                Ok(sa) => TcpStream::connect(sa).await,
                Err(_) => TcpStream::connect(addr.as_str()).await,
            }
        };
        let result = match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {DIAL_TIMEOUT:?}"),
            )),
        };
        match result {
            Ok(stream) => {
                let _ = conn_tx.send((stream, Role::Dial(wire), Some(target)));
                return;
            }
            Err(e) => {
                if attempt == DIAL_ATTEMPTS {
                    shared.dialed.lock().unwrap().remove(&addr);
                    shared.emit(Event::Error {
                        peer: None,
                        kind: ProblemKind::Connect,
                        message: format!("gave up dialing {addr} after {attempt} attempts: {e}"),
                    });
                    return;
                }
                shared.emit(Event::ConnectRetry {
                    addr: addr.clone(),
                    attempt,
                    retry_in_ms: delay.as_millis() as u64,
                    error: e.to_string(),
                });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(DIAL_BACKOFF.1);
            }
        }
    }
}

/// Appends wait this long for others to share their fsync (a group commit). It also lets
/// the block reach peers first: an fsync stalls other writes to the same file system.
pub const ACK_DELAY: Duration = Duration::from_millis(2);

/// Makes a feed's appends durable and says so with one `appended` event for all of them,
/// after [`ACK_DELAY`].
fn acknowledge_when_durable(shared: &Arc<Shared>, feed: Feed) {
    if !shared.acks_due.lock().unwrap().insert(feed.entry.key) {
        return;
    }
    let shared = shared.clone();
    shared.acks_in_flight.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        tokio::time::sleep(ACK_DELAY).await;
        // Appends from here on wait for the next fsync.
        shared.acks_due.lock().unwrap().remove(&feed.entry.key);
        match feed.sync().await {
            Ok(length) => shared.emit(Event::Appended {
                key: feed.entry.key,
                name: feed.entry.name.clone().unwrap_or_default(),
                length,
            }),
            Err(e) => shared.emit(Event::Error {
                peer: None,
                kind: ProblemKind::Storage,
                message: e.to_string(),
            }),
        }
        shared.acks_in_flight.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Carries out one command; returns an address to dial (and its wire, if given) for `connect`.
async fn handle_command(shared: &Arc<Shared>, cmd: Command) -> Option<(String, Option<Wire>)> {
    let error = |kind: ProblemKind, message: String| {
        shared.emit(Event::Error {
            peer: None,
            kind,
            message,
        })
    };
    if shared.ctx.curator.policy == Policy::Observe {
        let what = match &cmd {
            Command::Approve { .. } => Some("approve"),
            Command::Decline { .. } => Some("decline"),
            Command::AddFeed { .. } => Some("add_feed"),
            Command::Append { .. } => Some("append"),
            Command::Stop { .. } => Some("stop"),
            _ => None,
        };
        if let Some(what) = what {
            error(
                ProblemKind::Observe,
                format!(
                    "{what}: observe mode is on (--observe): this peer offers, requests, \
                     serves and writes nothing; restart without --observe to change anything"
                ),
            );
            return None;
        }
    }
    match cmd {
        Command::Connect { addr, wire } => return Some((addr, wire)),
        Command::AddFeed { name, wire } => match shared
            .store()
            .create_writable_on(&name, wire.unwrap_or_default())
            .await
        {
            Ok((feed, true)) => shared.ctx.announce(&feed).await,
            Ok((_, false)) => error(
                ProblemKind::Command,
                format!("a feed named {name:?} exists already"),
            ),
            Err(e) => error(ProblemKind::Storage, e.to_string()),
        },
        Command::Append {
            feed,
            data,
            data_hex,
        } => {
            let block = match (data, data_hex) {
                (Some(text), None) => text.into_bytes(),
                (None, Some(h)) => match hex::decode(h.trim()) {
                    Ok(b) => b,
                    Err(e) => {
                        error(
                            ProblemKind::Command,
                            format!("append: data_hex is not hex: {e}"),
                        );
                        return None;
                    }
                },
                _ => {
                    error(
                        ProblemKind::Command,
                        "append needs exactly one of \"data\" or \"data_hex\"".into(),
                    );
                    return None;
                }
            };
            let Some(found) = shared.store().by_name(&feed) else {
                error(
                    ProblemKind::Command,
                    StoreError::NoSuchFeed(feed).to_string(),
                );
                return None;
            };
            // Peers hear of the block at once; the user hears of it once it is durable.
            if let Err(e) = found.append(&[block]).await {
                error(ProblemKind::Command, e.to_string());
                return None;
            }
            shared.feed_changed(found.entry.key, None);
            acknowledge_when_durable(shared, found);
        }
        Command::Stop { peer, key } => to_peers(shared, peer, || PeerCmd::Stop(key)),
        Command::Hold { peer } => to_peers(shared, peer, || PeerCmd::Hold),
        Command::Step { peer } => to_peers(shared, peer, || PeerCmd::Step),
        Command::Continue { peer } => to_peers(shared, peer, || PeerCmd::Continue),
        Command::Break { peer, kind } => {
            // Empty clears every breakpoint; anything else must name a message kind.
            let known = if kind.is_empty() {
                Some("")
            } else {
                crate::event::break_kind(&kind)
            };
            match known {
                Some(k) => to_peers(shared, peer, || PeerCmd::Break(k.to_string())),
                None => error(
                    ProblemKind::Command,
                    format!(
                        "break: unknown message kind {kind:?}; one of {} (or \"\" to clear)",
                        crate::event::BREAK_KINDS.join(", ")
                    ),
                ),
            }
        }
        Command::Approve { peer, key } => {
            to_peers(shared, peer, || PeerCmd::Decide { key, approve: true })
        }
        Command::Decline { peer, key } => to_peers(shared, peer, || PeerCmd::Decide {
            key,
            approve: false,
        }),
        Command::Quit => {}
    }
    None
}

fn to_peers(shared: &Shared, peer: Option<PeerId>, make: impl Fn() -> PeerCmd) {
    if !shared.send_to(peer, make) {
        shared.emit(Event::Error {
            peer,
            kind: ProblemKind::Command,
            message: format!("no connected peer {}", peer.unwrap_or_default()),
        });
    }
}
