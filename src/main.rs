//! The `feedscope` command line: wires a front end to the engine.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};

use feedscope::engine::{self, Config};
use feedscope::event::{Command, Event, ProblemKind};
use feedscope::limits::Limits;
use feedscope::policy::Policy;
use feedscope::policy::{Decisions, Rules};
use feedscope::record::Recorder;
use feedscope::store::Store;
use feedscope::wire::{FeedKey, DEFAULT_MULTIFEED_KEY};

#[derive(Parser, Debug)]
#[command(
    name = "feedscope",
    version,
    about = "Watch, curate and debug multifeed replication on the hypercore v10 wire",
    long_about = "Watch, curate and debug multifeed replication on the hypercore v10 wire.\n\n\
        Peers that share a multifeed key offer each other their feeds (hypercores), request the \
        ones they want and replicate them over one encrypted connection. feedscope runs that \
        exchange and shows every step of it."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    record: RecordArg,
    /// Do not capture the mouse (keeps the terminal's own copy and paste working)
    #[arg(long)]
    no_mouse: bool,
}

#[derive(clap::Args, Debug, Clone)]
struct RecordArg {
    /// Write every event to FILE as JSON lines (a header, then {"t","event"} per line),
    /// flushed as they happen; `feedscope replay FILE` shows it again
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
struct StorageArg {
    /// Storage folder (default: feedscope's folder in the platform data dir; soak, demo and
    /// replay use none)
    #[arg(long, env = "FEEDSCOPE_STORAGE", global = true)]
    storage: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
struct NetArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Shared multifeed key, 64 hex characters (default: multifeed's own key)
    #[arg(long, default_value = DEFAULT_MULTIFEED_KEY)]
    key: String,
    /// Address to accept peers on, e.g. 127.0.0.1:0 for any free port
    #[arg(long)]
    listen: Option<String>,
    /// Peer address to dial (repeatable); retried with backoff until it is up
    #[arg(long)]
    connect: Vec<String>,
    /// How remote offers are answered: request everything, or wait for approve/decline
    #[arg(long, value_enum)]
    policy: Option<PolicyArg>,
    /// Approve offers whose key starts with this hex prefix (repeatable)
    #[arg(long, value_name = "KEY|PREFIX")]
    allow: Vec<String>,
    /// Decline offers whose key starts with this hex prefix (repeatable; wins over --allow)
    #[arg(long, value_name = "KEY|PREFIX")]
    deny: Vec<String>,
    /// Approve every offer from the peer with this Noise public key or prefix (repeatable)
    #[arg(long, value_name = "PUBKEY")]
    allow_peer: Vec<String>,
    /// Decline offers whose metadata states more bytes than this
    #[arg(long, value_name = "N")]
    max_feed_bytes: Option<u64>,
    /// Report every protocol message as a `wire` event (type, channel, size, fields, hex)
    #[arg(long)]
    trace_wire: bool,
    /// Hold every received message until it is let through (TUI: n steps, c continues;
    /// headless: {"cmd":"step"} / {"cmd":"continue"})
    #[arg(long)]
    step: bool,
    /// Read rules from a file: lines "allow PREFIX", "deny PREFIX", "allow-peer PUBKEY",
    /// "max-feed-bytes N"; "#" starts a comment
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Most peers connected at once, handshakes included; further connections are refused
    /// with a `limit` warning
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_peers,
          value_parser = at_least_one)]
    max_peers: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum PolicyArg {
    AcceptAll,
    Manual,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the engine headless: events on stdout, commands on stdin (JSON lines with --json)
    #[command(long_about = "Run the engine headless.\n\n\
        Events go to stdout, one per line; with --json each is a JSON object whose \"type\" \
        names it, and the first is {\"type\":\"listening\",\"addr\":…} when listening.\n\
        Commands are read from stdin, one JSON object per line:\n  \
        {\"cmd\":\"connect\",\"addr\":\"127.0.0.1:4000\"}\n  \
        {\"cmd\":\"add_feed\",\"name\":\"photos\"}\n  \
        {\"cmd\":\"append\",\"feed\":\"notes\",\"data\":\"text\"}   (or \"data_hex\")\n  \
        {\"cmd\":\"approve\",\"peer\":1,\"key\":\"<hex>|*\"}   (peer optional)\n  \
        {\"cmd\":\"decline\",\"peer\":1,\"key\":\"<hex>|*\"}\n  \
        {\"cmd\":\"quit\"}\n\
        The process exits 0 after quit, at the end of stdin, or on SIGTERM, SIGHUP or SIGINT, \
        once storage is written out and every peer is closed (the last event is \
        {\"type\":\"stopped\"}). It exits 1 if it cannot listen on --listen, after an error \
        event of kind \"listen\". Policy defaults to accept-all.")]
    Run {
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        record: RecordArg,
        /// One JSON event per line instead of text
        #[arg(long)]
        json: bool,
    },
    /// Open the terminal UI on two sample peers running in this process, to see feedscope at work
    #[command(
        long_about = "Open the terminal UI on two sample peers started in this process on \
        loopback: a field team offering a chat and field notes, and a sensor station that appends \
        readings every second and soon offers a new feed. Offers wait for you (a approves, d \
        declines). Everything lives in a temporary folder that is removed on exit; your own \
        storage is not touched."
    )]
    Demo {
        /// Do not capture the mouse
        #[arg(long)]
        no_mouse: bool,
    },
    /// Append blocks to a writable feed, creating it if needed
    Append {
        /// Local name of the feed
        #[arg(long)]
        feed: String,
        /// Blocks to append; without any, each line of stdin is a block
        data: Vec<String>,
        #[command(flatten)]
        storage: StorageArg,
    },
    /// List the feeds in storage
    Feeds {
        /// JSON array of {key, name, length, byte_length, writable}
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        storage: StorageArg,
    },
    /// Show a recording again: in the UI with a timeline, as JSON lines, or as a sequence diagram
    Replay {
        /// A file written with --record
        file: PathBuf,
        /// Print the recorded events as JSON lines instead of opening the UI
        #[arg(long, conflicts_with = "sequence")]
        json: bool,
        /// Print each peer's exchange as a Mermaid sequence diagram
        #[arg(long)]
        sequence: bool,
    },
    /// List or forget the approve/decline decisions remembered in storage
    Decisions {
        /// JSON object {key: {"approved": bool, "at": unix seconds}}
        #[arg(long)]
        json: bool,
        /// Forget the decision on this key (or a start of it that only this key has): its
        /// next offer is asked again
        #[arg(long, value_name = "KEY")]
        forget: Option<String>,
        #[command(flatten)]
        storage: StorageArg,
    },
    /// Write the blocks of a feed to stdout, each followed by a newline
    Cat {
        /// Feed key, 64 hex characters, or a start of it that only this feed has
        #[arg(long)]
        key: String,
        #[command(flatten)]
        storage: StorageArg,
    },
    /// Keep peers connecting, replicating and leaving for a while, and report memory, file
    /// descriptors and tasks at the start and the end
    #[command(
        long_about = "Keep peers connecting, replicating and leaving for a while, and \
        report memory, file descriptors and tasks at the start and the end.\n\n\
        One engine serves --feeds feeds of --blocks blocks from temporary storage on its own \
        runtime. --peers client engines, on another runtime, each repeat a cycle until the time \
        is up: start on empty storage, dial the server, download every block, quit, remove the \
        storage. The process's RSS, its open file descriptors, each runtime's live tasks and the \
        server's connections are taken with no peer connected after a warm-up under the same \
        load (start) and after the run (end). A line every --report-every seconds shows them with \
        the peers busy.\n\n\
        Exits 1 if a cycle failed, an engine reported an error, idle RSS grew by more than \
        --rss-tolerance percent, or file descriptors, tasks or connections did not come back \
        to their start. Your own storage is not touched."
    )]
    Soak(SoakArgs),
}

#[derive(clap::Args, Debug)]
struct SoakArgs {
    /// Client peers cycling at once
    #[arg(long, default_value_t = 100)]
    peers: usize,
    /// Length of the run in minutes, fractions allowed (default 10)
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<f64>,
    /// Length of the run in seconds
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds of cycling before the start figures are taken (default: a tenth of the run,
    /// from 1 to 60 s; every peer completes at least one cycle)
    #[arg(long, value_name = "SECONDS")]
    warm_up: Option<f64>,
    /// Feeds the server offers
    #[arg(long, default_value_t = 5)]
    feeds: usize,
    /// Blocks per server feed
    #[arg(long, default_value_t = 100)]
    blocks: usize,
    /// Bytes per block
    #[arg(long, default_value_t = 1024)]
    block_size: usize,
    /// Seconds between progress lines
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    report_every: f64,
    /// Seconds one cycle may take before it counts as failed
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    cycle_timeout: f64,
    /// Allowed growth of idle RSS from start to end, in percent
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    rss_tolerance: f64,
    /// Folder for the temporary storage (default: the system's temporary folder)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn seconds(value: f64, what: &str) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{what} must be a number of seconds, at least 0"))
}

fn soak(args: SoakArgs) -> Result<()> {
    let duration = match (args.minutes, args.seconds) {
        (_, Some(s)) => seconds(s, "--seconds")?,
        (Some(m), None) => seconds(m * 60.0, "--minutes")?,
        (None, None) => std::time::Duration::from_secs(600),
    };
    let warm_up = match args.warm_up {
        Some(s) => seconds(s, "--warm-up")?,
        None => (duration / 10).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        ),
    };
    let options = feedscope::soak::Options {
        peers: args.peers,
        duration,
        warm_up,
        feeds: args.feeds,
        blocks: args.blocks,
        block_size: args.block_size,
        report_every: seconds(args.report_every, "--report-every")?
            .max(std::time::Duration::from_secs(1)),
        cycle_timeout: seconds(args.cycle_timeout, "--cycle-timeout")?,
        rss_tolerance: args.rss_tolerance,
        dir: args.dir,
    };
    let report = feedscope::soak::run(&options, &mut std::io::stdout())?;
    if !report.passed() {
        bail!("soak failed: {}", report.problems.join("; "));
    }
    Ok(())
}

/// A count of one or more.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; give a whole number of 1 or more")),
    }
}

fn storage_dir(arg: &StorageArg) -> Result<PathBuf> {
    if let Some(dir) = &arg.storage {
        return Ok(dir.clone());
    }
    let dirs = directories::ProjectDirs::from("", "", "feedscope")
        .context("cannot find a data directory for this user; pass --storage DIR")?;
    Ok(dirs.data_dir().join("storage"))
}

fn config(net: &NetArgs, default_policy: Policy) -> Result<Config> {
    let key = FeedKey::parse(&net.key).with_context(|| "--key".to_string())?;
    Ok(Config {
        storage: storage_dir(&net.storage)?,
        key,
        listen: net.listen.clone(),
        connect: net.connect.clone(),
        policy: match net.policy {
            Some(PolicyArg::AcceptAll) => Policy::AcceptAll,
            Some(PolicyArg::Manual) => Policy::Manual,
            None => default_policy,
        },
        rules: rules(net)?,
        trace_wire: net.trace_wire,
        step: net.step,
        limits: Limits {
            max_peers: net.max_peers,
            ..Limits::DEFAULT
        },
    })
}

fn rules(net: &NetArgs) -> Result<Rules> {
    let mut r = Rules::default();
    if let Some(path) = &net.rules {
        r.load(path)?;
    }
    let flags = [
        ("allow", &net.allow),
        ("deny", &net.deny),
        ("allow-peer", &net.allow_peer),
    ];
    for (verb, values) in flags {
        for v in values {
            r.add(verb, v)
                .map_err(|e| anyhow::anyhow!("--{verb} {v}: {e}"))?;
        }
    }
    if let Some(n) = net.max_feed_bytes {
        r.max_feed_bytes = Some(n);
    }
    Ok(r)
}

fn main() -> std::process::ExitCode {
    // A replicating feed holds four files open; a soft limit of 1,024, common by default,
    // would stop at about 250 feeds replicating at once. The hard limit is what the system
    // allows this process.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Some(Cmd::Soak(_) | Cmd::Demo { .. } | Cmd::Replay { .. }) if storage_typed(&matches) => {
            Err(anyhow::anyhow!(
                "--storage does not apply here: soak and demo run on temporary storage (soak \
                 takes --dir), and replay reads only its file"
            ))
        }
        _ => real_main(cli),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feedscope: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `--storage` was typed (not taken from `FEEDSCOPE_STORAGE`), before or after the
/// sub-command.
fn storage_typed(matches: &clap::ArgMatches) -> bool {
    let typed = |m: &clap::ArgMatches| m.value_source("storage") == Some(ValueSource::CommandLine);
    typed(matches) || matches.subcommand().is_some_and(|(_, sub)| typed(sub))
}

fn real_main(cli: Cli) -> Result<()> {
    // The soak runs its own two runtimes, to count the tasks of each.
    let command = match cli.command {
        Some(Cmd::Soak(args)) => return soak(args),
        other => other,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match command {
            Some(Cmd::Soak(_)) => bail!("soak runs outside the main runtime"),
            Some(Cmd::Run { net, json, record }) => {
                run_headless(config(&net, Policy::AcceptAll)?, json, recorder(&record)?).await
            }
            Some(Cmd::Replay {
                file,
                json,
                sequence,
            }) => replay(&file, json, sequence).await,
            Some(Cmd::Demo { no_mouse }) => demo(!no_mouse).await,
            Some(Cmd::Append {
                feed,
                data,
                storage,
            }) => append(&storage_dir(&storage)?, &feed, data).await,
            Some(Cmd::Feeds { json, storage }) => feeds(&storage_dir(&storage)?, json).await,
            Some(Cmd::Cat { key, storage }) => cat(&storage_dir(&storage)?, &key).await,
            Some(Cmd::Decisions {
                json,
                forget,
                storage,
            }) => decisions(&storage_dir(&storage)?, json, forget).await,
            None => {
                let signals = QuitSignals::catch()?;
                let mut net = cli.net;
                if net.listen.is_none() {
                    net.listen = Some("127.0.0.1:0".into());
                }
                run_tui(
                    config(&net, Policy::Manual)?,
                    !cli.no_mouse,
                    recorder(&cli.record)?,
                    signals,
                )
                .await
            }
        }
    })
}

/// SIGTERM, SIGHUP and SIGINT, caught from [`QuitSignals::catch`] on: each asks for the clean
/// shutdown that `quit` (headless) or ctrl-c (UI) does, instead of ending the process with the
/// terminal and storage as they are.
struct QuitSignals {
    term: Signal,
    hup: Signal,
    int: Signal,
}

impl QuitSignals {
    fn catch() -> Result<QuitSignals> {
        let catch = |kind| signal(kind).context("cannot catch signals");
        Ok(QuitSignals {
            term: catch(SignalKind::terminate())?,
            hup: catch(SignalKind::hangup())?,
            int: catch(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next of them (one that came since `catch` counts).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn log_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "feedscope")
        .map(|d| d.data_dir().join("logs"))
        .unwrap_or_else(|| std::env::temp_dir().join("feedscope-logs"))
}

fn recorder(arg: &RecordArg) -> Result<Option<Recorder>> {
    arg.record
        .as_ref()
        .map(|path| {
            Recorder::create(path)
                .with_context(|| format!("cannot write the recording {}", path.display()))
        })
        .transpose()
}

async fn replay(file: &std::path::Path, json: bool, sequence: bool) -> Result<()> {
    let (_header, entries, problem) = feedscope::record::read(file)?;
    if json {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for e in &entries {
            writeln!(out, "{}", serde_json::to_string(&e.event)?)?;
        }
        out.flush()?;
    } else if sequence {
        print!("{}", feedscope::record::sequence(&entries));
    } else {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            bail!("the replay UI needs a terminal; use --json or --sequence in scripts");
        }
        let settings = feedscope::tui::app::Settings {
            key: "replay".into(),
            policy: file.display().to_string(),
            log_file: log_dir().join("feedscope.log").display().to_string(),
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            ..Default::default()
        };
        let mut signals = QuitSignals::catch()?;
        feedscope::tui::replay(
            entries,
            settings,
            problem.as_ref().map(|p| p.to_string()),
            async move { signals.recv().await },
        )
        .await?;
        return Ok(());
    }
    if let Some(p) = problem {
        bail!("{p}");
    }
    Ok(())
}

async fn run_tui(
    config: Config,
    mouse: bool,
    recorder: Option<Recorder>,
    mut signals: QuitSignals,
) -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        bail!("the terminal UI needs a terminal; for scripts use `feedscope run --json`");
    }
    let dir = log_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the log folder {}", dir.display()))?;
    let appender = tracing_appender::rolling::never(&dir, "feedscope.log");
    let (writer, _guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "feedscope=info,warn".into()),
        )
        .init();
    let settings = feedscope::tui::app::Settings {
        key: config.key.short(),
        policy: match config.policy {
            Policy::AcceptAll => "accept-all".into(),
            Policy::Manual => "manual".into(),
        },
        storage: config.storage.display().to_string(),
        log_file: dir.join("feedscope.log").display().to_string(),
        no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    };
    let engine = engine::start(config).await?;
    feedscope::tui::run(
        engine,
        feedscope::tui::Options { mouse, settings },
        recorder,
        async move { signals.recv().await },
    )
    .await?;
    Ok(())
}

async fn demo(mouse: bool) -> Result<()> {
    let signals = QuitSignals::catch()?;
    let base = std::env::temp_dir().join(format!("feedscope-demo-{}", std::process::id()));
    let key = FeedKey::parse(DEFAULT_MULTIFEED_KEY)?;
    let peers = feedscope::demo::start(base.join("peers"), key).await?;
    let config = Config {
        listen: Some("127.0.0.1:0".into()),
        connect: peers.addrs.clone(),
        policy: Policy::Manual,
        ..Config::new(base.join("you"), key)
    };
    let result = run_tui(config, mouse, None, signals).await;
    drop(peers);
    let _ = std::fs::remove_dir_all(&base);
    result
}

async fn run_headless(config: Config, json: bool, mut recorder: Option<Recorder>) -> Result<()> {
    let mut signals = QuitSignals::catch()?;
    let mut engine = engine::start(config).await?;
    let commands = engine.commands.clone();
    // A thread rather than a runtime task: a read of stdin that never returns (after a signal)
    // must not hold up the runtime's shutdown, and the process's exit ends it.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    let quit = cmd == Command::Quit;
                    let _ = commands.send(cmd);
                    if quit {
                        return;
                    }
                }
                Err(e) => print_event(
                    &Event::Error {
                        peer: None,
                        kind: ProblemKind::Command,
                        message: format!("cannot read command {line:?}: {e}"),
                    },
                    json,
                ),
            }
        }
        let _ = commands.send(Command::Quit);
    });
    let mut quitting = false;
    let mut listen_failure = None;
    loop {
        let ev = tokio::select! {
            ev = engine.events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            () = signals.recv(), if !quitting => {
                // The same path as {"cmd":"quit"}: peers closed, storage written, `stopped`.
                quitting = true;
                let _ = engine.commands.send(Command::Quit);
                continue;
            }
        };
        if let Event::Error {
            peer: None,
            kind,
            message,
        } = &ev
        {
            if *kind == ProblemKind::Listen {
                listen_failure = Some(message.clone());
            }
        }
        let stopped = ev == Event::Stopped;
        if let Some(r) = recorder.as_mut() {
            if let Err(e) = r.write(&ev) {
                eprintln!("feedscope: recording stopped: {e}");
                recorder = None;
            }
        }
        print_event(&ev, json);
        if stopped {
            break;
        }
    }
    let _ = engine.done.await;
    if let Some(message) = listen_failure {
        bail!("{message}");
    }
    Ok(())
}

fn print_event(ev: &Event, json: bool) {
    let line = if json {
        serde_json::to_string(ev).expect("events serialise")
    } else {
        text_line(ev)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn text_line(ev: &Event) -> String {
    let v = serde_json::to_value(ev).expect("events serialise");
    let mut parts = Vec::new();
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let shown = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(a) if a.len() > 3 => format!("[{} items]", a.len()),
                other => other.to_string(),
            };
            if k == "type" {
                parts.insert(0, shown);
            } else {
                parts.push(format!("{k}={shown}"));
            }
        }
    }
    parts.join(" ")
}

async fn append(dir: &std::path::Path, name: &str, data: Vec<String>) -> Result<()> {
    let store = Store::open(dir).await?;
    // A feed named by its key is that feed, never a new one named after it.
    let by_key = FeedKey::parse(name).ok().and_then(|key| store.get(&key));
    let (feed, created) = match by_key {
        Some(feed) if !feed.entry.writable => bail!(
            "feed {} is read-only here: it was replicated from a peer; append to one of your own feeds (`feedscope feeds` lists them)",
            feed.entry.key
        ),
        Some(feed) => (feed, false),
        None => store.create_writable(name).await?,
    };
    let blocks: Vec<Vec<u8>> = if data.is_empty() {
        let mut out = Vec::new();
        for line in std::io::stdin().lock().lines() {
            out.push(line?.into_bytes());
        }
        out
    } else {
        data.into_iter().map(String::into_bytes).collect()
    };
    let length = feed.append(&blocks).await?;
    feed.sync().await?;
    eprintln!(
        "{} {name} ({}): {} block(s) appended, length {}",
        if created { "created" } else { "feed" },
        feed.entry.key,
        blocks.len(),
        length
    );
    Ok(())
}

/// Opens storage that must already exist: the commands that only read it never create a
/// folder at a mistyped path.
async fn existing_store(dir: &std::path::Path) -> Result<Store> {
    if !dir.join("cores").is_dir() {
        bail!(
            "no feedscope storage at {}: check the path (storage is created by `feedscope append`, `feedscope run` or the UI)",
            dir.display()
        );
    }
    Ok(Store::open(dir).await?)
}

async fn feeds(dir: &std::path::Path, json: bool) -> Result<()> {
    let store = existing_store(dir).await?;
    for note in &store.notes {
        eprintln!("warning: {note}");
    }
    for e in &store.broken {
        eprintln!("warning: {e}");
    }
    let list = store.list().await;
    if json {
        println!("{}", serde_json::to_string(&list)?);
    } else {
        for f in list {
            let held = if f.held == f.length {
                String::new()
            } else {
                format!(" ({} held)", f.held)
            };
            println!(
                "{}  {:>8} blocks{held} {:>12} bytes  {}{}",
                f.key,
                f.length,
                f.byte_length,
                f.name.as_deref().unwrap_or("-"),
                if f.writable { " (writable)" } else { "" }
            );
        }
    }
    Ok(())
}

async fn decisions(dir: &std::path::Path, json: bool, forget: Option<String>) -> Result<()> {
    // Taking the storage lock keeps this from racing a running engine.
    let _store = existing_store(dir).await?;
    let d = Decisions::load(dir).map_err(anyhow::Error::msg)?;
    if let Some(key) = forget {
        let key =
            unique_key(&key, d.all().into_keys(), "remembered decision").context("--forget")?;
        if !d.forget(&key).map_err(anyhow::Error::msg)? {
            bail!("no decision is remembered for {key}");
        }
        eprintln!("forgot the decision on {key}");
        return Ok(());
    }
    let all = d.all();
    if json {
        println!("{}", serde_json::to_string(&all)?);
    } else if all.is_empty() {
        println!("no decisions remembered in {}", dir.display());
    } else {
        for (k, r) in all {
            println!("{k}  {}", if r.approved { "approved" } else { "declined" });
        }
    }
    Ok(())
}

/// The one key of `known` that `text` names: a whole key, or a prefix of one (either case),
/// as the UI takes them.
fn unique_key(text: &str, known: impl Iterator<Item = FeedKey>, what: &str) -> Result<FeedKey> {
    let prefix = text.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) || prefix.len() > 64 {
        bail!("{text:?} is not a key or the start of one (hex digits)");
    }
    let matches: Vec<FeedKey> = known.filter(|k| k.to_hex().starts_with(&prefix)).collect();
    match matches.as_slice() {
        [key] => Ok(*key),
        [] => bail!("no {what} has a key starting with {prefix}"),
        many => bail!(
            "{} keys start with {prefix}: {}; give more of the key",
            many.len(),
            many.iter()
                .map(|k| k.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn cat(dir: &std::path::Path, key: &str) -> Result<()> {
    let store = existing_store(dir).await?;
    let key = unique_key(key, store.feeds().into_iter().map(|f| f.entry.key), "feed")
        .with_context(|| format!("--key, in {}", dir.display()))?;
    let feed = store
        .get(&key)
        .with_context(|| format!("no feed {key} in {}", dir.display()))?;
    let mut core = feed.core.lock().await;
    let length = core.info().length;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..length {
        match core.get(i)? {
            Some(block) => {
                out.write_all(&block)?;
                out.write_all(b"\n")?;
            }
            None => bail!("block {i} of {key} is not downloaded yet"),
        }
    }
    out.flush()?;
    Ok(())
}
