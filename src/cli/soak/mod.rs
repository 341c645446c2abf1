//! `feedscope soak`: peers connect, replicate and leave over and over while the process is
//! watched for growth.
//!
//! One engine, the server, serves a few feeds from temporary storage on its own tokio runtime.
//! The client peers run in worker processes (`feedscope soak-worker`, 100 to a process), so
//! that the figures of this process are the server's; a second runtime here reads the
//! server's events and the workers' pipes. Each client repeats one cycle until the time is up:
//! start an engine on empty storage, dial the server, wait until it holds every block of every
//! server feed, quit, and remove the storage.
//!
//! The same figures are taken three times, each time with no peer connected: when the server
//! has just started (`fresh`), after a warm-up under the same load as the run (`start`), and
//! after the run (`end`). The figures are the process's resident memory, its open file
//! descriptors, the live tasks of each runtime and the server's connections. The verdict
//! compares `start` with `end`, two moments in the same state. `fresh` shows what the load
//! costs at first: the allocator keeps memory for the peak it served. Every figure is also
//! sampled while the peers are busy, and printed every `report_every`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;

use feedscope::engine::{self, Config, Engine};
use feedscope::event::{Command, Event};
use feedscope::limits::Limits;
use feedscope::wire::FeedKey;

use super::args::SoakArgs;
use super::kit::{self, NotListening};

mod report;

use report::{clock, duration_text, sample_text, verdict, write_report};
pub(crate) use report::{open_fds, rss, Report, Sample};

/// Longest wait for an engine to stop after `quit` (it checkpoints and syncs every feed).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the server to drop every connection and its tasks after the peers stop.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause after a failed cycle, so that a fault that fails at once does not spin.
const FAILURE_PAUSE: Duration = Duration::from_millis(200);
/// Failure and event messages quoted in the report; the rest are only counted.
const MAX_EXAMPLES: usize = 10;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client peers cycling at once.
    pub peers: usize,
    /// Length of the measured run.
    pub duration: Duration,
    /// Cycling before the run, so that `start` follows the same load as `end`; every peer
    /// completes at least one cycle however short it is.
    pub warm_up: Duration,
    /// Feeds the server offers.
    pub feeds: usize,
    /// Blocks per server feed.
    pub blocks: usize,
    /// Bytes per block.
    pub block_size: usize,
    /// Interval of the progress lines.
    pub report_every: Duration,
    /// Longest one cycle may take before it counts as a failure.
    pub cycle_timeout: Duration,
    /// Allowed growth of idle RSS from start to end, in percent.
    pub rss_tolerance: f64,
    /// Folder for the temporary storage (default: the system's temporary folder).
    pub dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            peers: 100,
            duration: Duration::from_secs(600),
            warm_up: Duration::from_secs(60),
            feeds: 5,
            blocks: 100,
            block_size: 1024,
            report_every: Duration::from_secs(60),
            cycle_timeout: Duration::from_secs(30),
            rss_tolerance: 10.0,
            dir: None,
        }
    }
}

/// What the run counts. In a worker process it counts nothing itself: each cycle, failure
/// and problem goes out as one line on stdout, and the soak's process reads it into its own
/// tally ([`Tally::apply`]).
#[derive(Default)]
struct Tally {
    cycles: AtomicU64,
    failures: AtomicU64,
    errors: AtomicU64,
    warnings: AtomicU64,
    connect_retries: AtomicU64,
    server_peers: AtomicI64,
    notes: Mutex<(BTreeMap<String, u64>, Vec<String>)>,
    /// Set in a worker process: where its lines go.
    lines: Option<Mutex<std::io::Stdout>>,
}

impl Tally {
    /// Writes one line for the soak's process; false outside a worker.
    fn tell(&self, fields: &[&str]) -> bool {
        let Some(out) = &self.lines else {
            return false;
        };
        let fields: Vec<String> = fields
            .iter()
            .map(|f| f.replace(['\t', '\n', '\r'], " "))
            .collect();
        let mut out = out.lock().unwrap();
        let _ = writeln!(out, "{}", fields.join("\t"));
        let _ = out.flush();
        true
    }

    /// Takes in one line of a worker (see [`Tally::tell`]).
    fn apply(&self, line: &str) {
        let mut fields = line.splitn(3, '\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("cycle"), _, _) => {
                self.cycles.fetch_add(1, Ordering::Relaxed);
            }
            (Some("retry"), _, _) => {
                self.connect_retries.fetch_add(1, Ordering::Relaxed);
            }
            (Some("fail"), Some(message), _) => self.fail(message),
            (Some("warning"), Some(kind), Some(message)) => {
                self.warnings.fetch_add(1, Ordering::Relaxed);
                self.note(format!("peer warning {kind}"), message);
            }
            (Some("error"), Some(kind), Some(message)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.note(format!("peer error {kind}"), message);
            }
            _ => self.fail(&format!("worker: an unreadable line {line:?}")),
        }
    }

    fn cycle_done(&self) {
        if !self.tell(&["cycle"]) {
            self.cycles.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn note(&self, kind: String, message: &str) {
        let mut notes = self.notes.lock().unwrap();
        if notes.1.len() < MAX_EXAMPLES {
            notes.1.push(format!("{kind}: {message}"));
        }
        *notes.0.entry(kind).or_default() += 1;
    }

    fn fail(&self, message: &str) {
        if self.tell(&["fail", message]) {
            return;
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        let kind = message.split(':').next().unwrap_or(message);
        self.note(format!("failure ({kind})"), message);
    }

    /// Counts the problems an engine reports; `who` is `server` or `peer`.
    fn observe(&self, who: &str, ev: &Event) {
        match ev {
            Event::Warning { kind, message, .. } if self.lines.is_some() => {
                self.tell(&["warning", kind.as_str(), message]);
            }
            Event::Error { kind, message, .. } if self.lines.is_some() => {
                self.tell(&["error", kind.as_str(), message]);
            }
            Event::ConnectRetry { .. } if self.tell(&["retry"]) => {}
            Event::Warning { kind, message, .. } => {
                self.warnings.fetch_add(1, Ordering::Relaxed);
                self.note(format!("{who} warning {kind}"), message);
            }
            Event::Error { kind, message, .. } => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.note(format!("{who} error {kind}"), message);
            }
            Event::ConnectRetry { .. } => {
                self.connect_retries.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// What every client cycle needs.
struct Ctx {
    addr: String,
    key: FeedKey,
    feeds: Vec<FeedKey>,
    blocks: u64,
    cycle_timeout: Duration,
    dir: PathBuf,
    tally: Tally,
}

/// Where the figures come from.
struct Probe {
    server: Handle,
    peers: Handle,
    ctx: Arc<Ctx>,
}

impl Probe {
    fn sample(&self) -> Sample {
        Sample {
            rss: rss(),
            fds: open_fds(),
            server_tasks: self.server.metrics().num_alive_tasks(),
            peer_tasks: self.peers.metrics().num_alive_tasks(),
            server_peers: self.ctx.tally.server_peers.load(Ordering::Relaxed),
        }
    }

    /// Waits until the server holds no connection and both runtimes are back to `idle`'s
    /// task counts (or [`SETTLE_TIMEOUT`] passes), then samples.
    async fn settled(&self, idle: &Sample) -> Sample {
        let until = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let s = self.sample();
            let quiet = s.server_peers == 0
                && s.server_tasks <= idle.server_tasks
                && s.peer_tasks <= idle.peer_tasks;
            if quiet || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Closed sockets and dropped stores release their descriptors as their tasks end.
        tokio::time::sleep(Duration::from_millis(300)).await;
        release_free_memory();
        self.sample()
    }
}

/// `feedscope soak`: runs the soak the command line asks for, with its report on stdout; fails
/// if the verdict does.
pub(crate) fn main(args: SoakArgs) -> Result<()> {
    let duration = match (args.minutes, args.seconds) {
        (_, Some(s)) => seconds(s, "--seconds")?,
        (Some(m), None) => seconds(m * 60.0, "--minutes")?,
        (None, None) => Duration::from_secs(600),
    };
    let warm_up = match args.warm_up {
        Some(s) => seconds(s, "--warm-up")?,
        None => (duration / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
    };
    let options = Options {
        peers: args.peers,
        duration,
        warm_up,
        feeds: args.feeds,
        blocks: args.blocks,
        block_size: args.block_size,
        report_every: seconds(args.report_every, "--report-every")?.max(Duration::from_secs(1)),
        cycle_timeout: match args.cycle_timeout {
            Some(s) => seconds(s, "--cycle-timeout")?,
            None => Duration::from_secs(30).max(Duration::from_millis(100) * args.peers as u32),
        },
        rss_tolerance: args.rss_tolerance,
        dir: args.dir,
    };
    let report = run(&options, &mut std::io::stdout())?;
    if !report.passed() {
        bail!("soak failed: {}", report.problems.join("; "));
    }
    Ok(())
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{what} must be a number of seconds, at least 0"))
}

/// Runs the soak and writes its progress and its report to `out`.
pub(crate) fn run(options: &Options, out: &mut dyn Write) -> Result<Report> {
    let max_peers = Limits::DEFAULT.max_peers;
    if options.peers == 0 || options.peers > max_peers {
        bail!("--peers must be between 1 and {max_peers}");
    }
    if options.feeds == 0 || options.blocks == 0 || options.block_size == 0 {
        bail!("--feeds, --blocks and --block-size must be at least 1");
    }
    if options.duration.is_zero() {
        bail!("the run needs a duration above zero");
    }
    let base = options
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("feedscope-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)
        .with_context(|| format!("cannot create the soak folder {}", base.display()))?;
    let folder = RemovedOnDrop(base);
    run_in(options, &folder.0, out)
}

/// A folder removed when dropped, on a panic too.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime(name: &str) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .context("cannot start a tokio runtime")
}

fn run_in(options: &Options, base: &Path, out: &mut dyn Write) -> Result<Report> {
    let key = kit::key();
    let server_rt = runtime("soak-server")?;
    let peers_rt = runtime("soak-peers")?;
    let server_dir = base.join("server");
    let feeds = server_rt.block_on(seed(&server_dir, options))?;
    let Engine {
        commands: server_commands,
        events: mut server_events,
        done: server_done,
    } = server_rt.block_on(engine::start(Config {
        limits: Limits {
            // A client dials again as soon as its engine has stopped, which may be before
            // the server has read the end of its previous connection.
            max_peers: (2 * options.peers).max(Limits::DEFAULT.max_peers),
            ..Limits::DEFAULT
        },
        ..kit::config(server_dir, true, vec![])
    }))?;
    let addr = peers_rt.block_on(kit::listening(&mut server_events, Duration::from_secs(10)));
    let addr = match addr {
        Ok(addr) => addr,
        Err(NotListening::Error(message)) => bail!("the server did not start: {message}"),
        Err(NotListening::Stopped) => bail!("the server stopped before listening"),
        Err(NotListening::Timeout) => {
            bail!("the server did not listen within 10 s: deadline has elapsed")
        }
    };
    let ctx = Arc::new(Ctx {
        addr,
        key,
        feeds,
        blocks: options.blocks as u64,
        cycle_timeout: options.cycle_timeout,
        dir: base.join("peers"),
        tally: Tally::default(),
    });
    // The server's events are read on the peers' runtime, so that the server's runtime holds
    // nothing but the engine's own tasks.
    let watcher = {
        let ctx = ctx.clone();
        peers_rt.spawn(async move {
            while let Some(ev) = server_events.recv().await {
                match &ev {
                    Event::PeerConnected { .. } => {
                        ctx.tally.server_peers.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::PeerDisconnected { .. } => {
                        ctx.tally.server_peers.fetch_sub(1, Ordering::Relaxed);
                    }
                    _ => ctx.tally.observe("server", &ev),
                }
            }
        })
    };
    let probe = Probe {
        server: server_rt.handle().clone(),
        peers: peers_rt.handle().clone(),
        ctx: ctx.clone(),
    };
    writeln!(
        out,
        "soak: {} peers for {}, server {} with {} feeds × {} blocks × {} bytes",
        options.peers,
        duration_text(options.duration),
        ctx.addr,
        options.feeds,
        options.blocks,
        options.block_size
    )?;
    let mut report = Report {
        fresh: peers_rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            probe.sample()
        }),
        ..Default::default()
    };

    // Warm-up: the same load as the run, so that the allocator has grown to what the run
    // needs and `start` is measured after the load that `end` follows.
    writeln!(
        out,
        "warm-up: {} of cycling, at least one cycle per peer …",
        duration_text(options.warm_up)
    )?;
    out.flush()?;
    let warm_up_end = Instant::now() + options.warm_up;
    peers_rt.block_on(async {
        let workers = Workers::start(&ctx, options, warm_up_end)?;
        if !workers.wait(warm_up_end + last_cycle(options)).await {
            ctx.tally
                .fail("stuck: a peer still ran long after the warm-up; aborted");
        }
        anyhow::Ok(())
    })?;
    report.warm_up_cycles = ctx.tally.cycles.swap(0, Ordering::Relaxed);
    report.start = peers_rt.block_on(probe.settled(&report.fresh));
    writeln!(out, "start: {}", sample_text(&report.start))?;
    out.flush()?;

    let began = Instant::now();
    report.busy_rss = peers_rt.block_on(busy(&probe, options, out))?;
    report.seconds = began.elapsed().as_secs_f64();
    report.end = peers_rt.block_on(probe.settled(&report.start));

    let _ = server_commands.send(Command::Quit);
    let abort = server_done.abort_handle();
    if server_rt
        .block_on(async { tokio::time::timeout(STOP_TIMEOUT, server_done).await })
        .is_err()
    {
        abort.abort();
        ctx.tally
            .fail("server: did not stop within 30 s after quit");
    }
    // The watcher ends when the server's event channel closes.
    let _ =
        peers_rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), watcher).await });
    server_rt.shutdown_timeout(Duration::from_secs(5));
    peers_rt.shutdown_timeout(Duration::from_secs(5));

    let tally = &ctx.tally;
    report.cycles = tally.cycles.load(Ordering::Relaxed);
    report.failures = tally.failures.load(Ordering::Relaxed);
    report.errors = tally.errors.load(Ordering::Relaxed);
    report.warnings = tally.warnings.load(Ordering::Relaxed);
    report.connect_retries = tally.connect_retries.load(Ordering::Relaxed);
    {
        let notes = tally.notes.lock().unwrap();
        report.kinds = notes.0.clone();
        report.examples = notes.1.clone();
    }
    report.problems = verdict(&report, options);
    write_report(&report, options, out)?;
    Ok(report)
}

/// Creates the server's feeds; returns their keys.
async fn seed(dir: &Path, options: &Options) -> Result<Vec<FeedKey>> {
    let names: Vec<String> = (0..options.feeds).map(|f| format!("soak-{f}")).collect();
    let feeds = names
        .iter()
        .map(|name| (name, kit::blocks(name, options.blocks, options.block_size)));
    Ok(kit::seed(dir, feeds).await?)
}

/// The measured run: every peer cycles until the time is up, while the process is sampled.
/// Returns the highest RSS in the first and in the last tenth of the run.
async fn busy(
    probe: &Probe,
    options: &Options,
    out: &mut dyn Write,
) -> Result<(Option<u64>, Option<u64>)> {
    let began = Instant::now();
    let deadline = began + options.duration;
    let hard_end = deadline + last_cycle(options);
    let workers = Workers::start(&probe.ctx, options, deadline)?;
    let all = workers.wait(hard_end + Duration::from_secs(5));
    tokio::pin!(all);
    let tenth = options.duration / 10;
    let every = (options.duration / 20).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_report = began + options.report_every;
    let (mut first, mut last) = (None::<u64>, None::<u64>);
    loop {
        tokio::select! {
            finished = &mut all => {
                if !finished {
                    probe.ctx.tally.fail("stuck: a peer still ran long after the deadline; aborted");
                }
                break;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let s = probe.sample();
                let at = now - began;
                if now < deadline {
                    if at <= tenth {
                        first = first.max(s.rss);
                    }
                    if at >= options.duration - tenth {
                        last = last.max(s.rss);
                    }
                }
                if now >= next_report && now < deadline {
                    next_report += options.report_every;
                    writeln!(
                        out,
                        "{:>5}  {}  cycles {}  failures {}",
                        clock(at),
                        sample_text(&s),
                        probe.ctx.tally.cycles.load(Ordering::Relaxed),
                        probe.ctx.tally.failures.load(Ordering::Relaxed),
                    )?;
                    out.flush()?;
                }
            }
        }
    }
    Ok((first, last))
}

/// Client peers per worker process.
const PEERS_PER_WORKER: usize = 100;

/// Returns the memory glibc keeps after frees to the system, so that an idle figure shows
/// what the process holds rather than what its allocator kept from the busiest moment.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The worker processes that run the client peers, so that the figures of this process are
/// the server's alone.
struct Workers {
    ctx: Arc<Ctx>,
    children: Vec<tokio::process::Child>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Starts workers for every client peer, each cycling until `until`.
    fn start(ctx: &Arc<Ctx>, options: &Options, until: Instant) -> Result<Workers> {
        let exe = std::env::current_exe().context("cannot find the feedscope program")?;
        let seconds = until
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let mut workers = Workers {
            ctx: ctx.clone(),
            children: Vec::new(),
            readers: Vec::new(),
        };
        for first in (0..options.peers).step_by(PEERS_PER_WORKER) {
            let peers = PEERS_PER_WORKER.min(options.peers - first);
            let mut command = tokio::process::Command::new(&exe);
            command
                .arg("soak-worker")
                .args(["--addr", &ctx.addr, "--key", &ctx.key.to_hex()])
                .args(["--blocks", &ctx.blocks.to_string()])
                .args(["--first", &first.to_string(), "--peers", &peers.to_string()])
                .args(["--seconds", &seconds.to_string()])
                .args([
                    "--cycle-timeout",
                    &ctx.cycle_timeout.as_secs_f64().to_string(),
                ])
                .arg("--dir")
                .arg(&ctx.dir)
                .env_remove("FEEDSCOPE_STORAGE")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true);
            for feed in &ctx.feeds {
                command.args(["--feed", &feed.to_hex()]);
            }
            let mut child = command
                .spawn()
                .context("cannot start a soak worker process")?;
            let stdout = child.stdout.take().expect("stdout is piped");
            let ctx = ctx.clone();
            workers.readers.push(tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    ctx.tally.apply(&line);
                }
            }));
            workers.children.push(child);
        }
        Ok(workers)
    }

    /// Waits for every worker to finish, until `deadline`; past it, kills the rest and
    /// returns false. A worker that ends badly counts as a failure.
    async fn wait(mut self, deadline: Instant) -> bool {
        let all = async {
            let mut bad = Vec::new();
            for child in &mut self.children {
                match child.wait().await {
                    Ok(status) if status.success() => {}
                    Ok(status) => bad.push(format!("worker: a worker process ended with {status}")),
                    Err(e) => bad.push(format!("worker: cannot wait for a worker process: {e}")),
                }
            }
            bad
        };
        let finished = tokio::time::timeout_at(deadline.into(), all).await;
        if finished.is_err() {
            for child in &mut self.children {
                let _ = child.kill().await;
            }
        }
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        match finished {
            Ok(bad) => {
                bad.iter().for_each(|b| self.ctx.tally.fail(b));
                true
            }
            Err(_) => false,
        }
    }
}

/// `feedscope soak-worker`: runs some of a soak's client peers and tells the soak of each
/// cycle on stdout.
pub(crate) fn worker(args: super::args::SoakWorkerArgs) -> Result<()> {
    let feeds = args
        .feed
        .iter()
        .map(|k| FeedKey::parse(k).with_context(|| format!("--feed {k}")))
        .collect::<Result<Vec<_>>>()?;
    let ctx = Arc::new(Ctx {
        addr: args.addr,
        key: FeedKey::parse(&args.key).context("--key")?,
        feeds,
        blocks: args.blocks,
        cycle_timeout: seconds(args.cycle_timeout, "--cycle-timeout")?,
        dir: args.dir,
        tally: Tally {
            lines: Some(Mutex::new(std::io::stdout())),
            ..Tally::default()
        },
    });
    let until = Instant::now() + seconds(args.seconds, "--seconds")?;
    let rt = runtime("soak-worker")?;
    rt.block_on(async {
        let peers: Vec<_> = (args.first..args.first + args.peers)
            .map(|i| tokio::spawn(client(ctx.clone(), i, until)))
            .collect();
        for p in peers {
            if let Err(e) = p.await {
                ctx.tally.fail(&format!("panic: a client peer failed: {e}"));
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// How long past its deadline a peer may still run: a cycle that starts just before it may
/// take its timeout, then its stop, then the pause after a failure.
fn last_cycle(options: &Options) -> Duration {
    options.cycle_timeout + STOP_TIMEOUT + FAILURE_PAUSE + Duration::from_secs(10)
}

/// One client peer: a cycle at a time until `until`, and at least one.
async fn client(ctx: Arc<Ctx>, index: usize, until: Instant) {
    let dir = ctx.dir.join(format!("peer-{index}"));
    loop {
        match cycle(&ctx, &dir).await {
            Ok(()) => ctx.tally.cycle_done(),
            Err(e) => {
                ctx.tally.fail(&e);
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
        }
        if Instant::now() >= until {
            break;
        }
    }
}

/// Connect on empty storage, replicate every server feed, quit, remove the storage.
async fn cycle(ctx: &Ctx, dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    let Engine {
        commands,
        mut events,
        done,
    } = engine::start(Config {
        key: ctx.key,
        ..kit::config(dir, false, vec![ctx.addr.clone()])
    })
    .await
    .map_err(|e| format!("start: {e}"))?;
    let mut waiting: HashSet<FeedKey> = ctx.feeds.iter().copied().collect();
    let synced = tokio::time::timeout(
        ctx.cycle_timeout,
        until_synced(ctx, &mut events, &mut waiting),
    )
    .await;
    let _ = commands.send(Command::Quit);
    let abort = done.abort_handle();
    let stopped = tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(ev) = events.recv().await {
            ctx.tally.observe("peer", &ev);
            if ev == Event::Stopped {
                break;
            }
        }
        done.await
    })
    .await;
    if stopped.is_err() {
        abort.abort();
    }
    let _ = std::fs::remove_dir_all(dir);
    let left = waiting.len();
    let total = ctx.feeds.len();
    match (synced, stopped) {
        (Err(_), _) => Err(format!(
            "timeout: {}/{total} feeds synced within {:?}",
            total - left,
            ctx.cycle_timeout
        )),
        (Ok(false), _) => Err(format!(
            "ended: the engine stopped with {}/{total} feeds synced",
            total - left
        )),
        (Ok(true), Err(_)) => Err(format!("stop: not stopped within {STOP_TIMEOUT:?}")),
        (Ok(true), Ok(Err(e))) => Err(format!("panic: the engine task failed: {e}")),
        (Ok(true), Ok(Ok(()))) => Ok(()),
    }
}

/// Reads events until every key in `waiting` has synced in full; false if they end first.
async fn until_synced(
    ctx: &Ctx,
    events: &mut mpsc::UnboundedReceiver<Event>,
    waiting: &mut HashSet<FeedKey>,
) -> bool {
    while let Some(ev) = events.recv().await {
        ctx.tally.observe("peer", &ev);
        if let Event::FeedSynced { key, length, .. } = ev {
            if length >= ctx.blocks {
                waiting.remove(&key);
            }
        }
        if waiting.is_empty() {
            return true;
        }
    }
    false
}
