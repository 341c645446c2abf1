//! The command line as clap reads it: every flag, sub-command and help text, and how the
//! network flags become an engine's [`Config`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use feedscope::engine::Config;
use feedscope::event::Wire;
use feedscope::limits::Limits;
use feedscope::policy::{Policy, Rules};
use feedscope::record::Recorder;
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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Cmd>,
    #[command(flatten)]
    pub(crate) net: NetArgs,
    #[command(flatten)]
    pub(crate) record: RecordArg,
    /// Do not capture the mouse (keeps the terminal's own copy and paste working)
    #[arg(long)]
    pub(crate) no_mouse: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RecordArg {
    /// Write every event to FILE as JSON lines (a header, then {"t","event"} per line),
    /// flushed as they happen; `feedscope replay FILE` shows it again
    #[arg(long, value_name = "FILE")]
    pub(crate) record: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StorageArg {
    /// Storage folder (default: feedscope's folder in the platform data dir; soak, demo and
    /// replay use none)
    #[arg(long, env = "FEEDSCOPE_STORAGE", global = true)]
    pub(crate) storage: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NetArgs {
    #[command(flatten)]
    pub(crate) storage: StorageArg,
    /// Shared multifeed key, 64 hex characters (default: multifeed's own key)
    #[arg(long, default_value = DEFAULT_MULTIFEED_KEY)]
    pub(crate) key: String,
    /// Address to accept peers on, e.g. 127.0.0.1:0 for any free port
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Peer address to dial (repeatable); retried with backoff until it is up, and dialed
    /// again when its connection ends
    #[arg(long)]
    pub(crate) connect: Vec<String>,
    /// Wire to speak when dialing: hc10 (hypercore 10) or hc9 (multifeed 6 and Cabal, on
    /// hypercore-protocol 8). A listener accepts both on one port
    #[arg(long, value_name = "hc10|hc9", default_value = "hc10", value_parser = wire_arg)]
    pub(crate) wire: Wire,
    /// How remote offers are answered: request everything, or wait for approve/decline
    #[arg(long, value_enum)]
    pub(crate) policy: Option<PolicyArg>,
    /// Read-only peer: offer nothing, request nothing, serve nothing and write nothing to
    /// storage; every offer and message of the peers is still shown and reported
    #[arg(long, conflicts_with = "policy")]
    pub(crate) observe: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (port 0 takes
    /// any free one; the address is reported as a `metrics_listening` event)
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<String>,
    /// Approve offers whose key starts with this hex prefix (repeatable)
    #[arg(long, value_name = "KEY|PREFIX")]
    pub(crate) allow: Vec<String>,
    /// Decline offers whose key starts with this hex prefix (repeatable; wins over --allow)
    #[arg(long, value_name = "KEY|PREFIX")]
    pub(crate) deny: Vec<String>,
    /// Approve every offer from the peer with this Noise public key or prefix (repeatable)
    #[arg(long, value_name = "PUBKEY")]
    pub(crate) allow_peer: Vec<String>,
    /// Decline offers whose metadata states more bytes than this
    #[arg(long, value_name = "N")]
    pub(crate) max_feed_bytes: Option<u64>,
    /// Report every protocol message as a `wire` event (type, channel, size, fields, hex)
    #[arg(long)]
    pub(crate) trace_wire: bool,
    /// Hold every received message until it is let through (TUI: n steps, c continues;
    /// headless: {"cmd":"step"} / {"cmd":"continue"})
    #[arg(long)]
    pub(crate) step: bool,
    /// Read rules from a file: lines "allow PREFIX", "deny PREFIX", "allow-peer PUBKEY",
    /// "max-feed-bytes N"; "#" starts a comment
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Most peers connected at once, handshakes included; further connections are refused
    /// with a `limit` warning
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT.max_peers,
          value_parser = at_least_one)]
    pub(crate) max_peers: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub(crate) enum PolicyArg {
    AcceptAll,
    Manual,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
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
        event of kind \"listen\", or on --metrics, after one of kind \"metrics\". Policy \
        defaults to accept-all; with --observe, commands that would change anything (approve, \
        decline, stop, add_feed, append) get an error event of kind \"observe\".")]
    Run {
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        record: RecordArg,
        /// One JSON event per line instead of text
        #[arg(long)]
        json: bool,
        /// Event types not to print, comma-separated (say offer_sent,feed_progress): a hub
        /// telling a thousand peers of every new feed prints gigabytes of offer_sent lines.
        /// A recording (--record) keeps every event
        #[arg(long, value_name = "TYPE,…", value_delimiter = ',', value_parser = event_type)]
        skip: Vec<&'static str>,
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
        /// Generation of a feed this creates: hc10 (hypercore 10, the default) or hc9
        /// (hypercore 9, served to multifeed 6 and Cabal peers); an existing feed keeps its own
        #[arg(long, value_name = "hc10|hc9", value_parser = wire_arg)]
        wire: Option<Wire>,
        /// Blocks to append; without any, each line of stdin is a block
        data: Vec<String>,
        #[command(flatten)]
        storage: StorageArg,
    },
    /// List the feeds in storage
    Feeds {
        /// JSON array of {key, name, length, held, byte_length, writable, wire}
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
        runtime. --peers client engines (at most 1,024), in worker processes of 100, each repeat a \
        cycle until the time is up: start on empty storage, dial the server, download every block, quit, remove the \
        storage. The process's RSS, its open file descriptors, each runtime's live tasks and the \
        server's connections are taken with no peer connected after a warm-up under the same \
        load (start) and after the run (end). A line every --report-every seconds shows them with \
        the peers busy.\n\n\
        Exits 1 if a cycle failed, an engine reported an error, idle RSS grew by more than \
        --rss-tolerance percent, or file descriptors, tasks or connections did not come back \
        to their start. Your own storage is not touched."
    )]
    Soak(SoakArgs),
    /// The client peers of one soak, in a process of their own (started by `soak`)
    #[command(hide = true)]
    SoakWorker(SoakWorkerArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct SoakWorkerArgs {
    /// The server to dial
    #[arg(long)]
    pub(crate) addr: String,
    /// The multifeed key
    #[arg(long)]
    pub(crate) key: String,
    /// A server feed to download in full (repeated)
    #[arg(long)]
    pub(crate) feed: Vec<String>,
    /// Blocks per server feed
    #[arg(long)]
    pub(crate) blocks: u64,
    /// Index of this worker's first peer (names its storage folders)
    #[arg(long)]
    pub(crate) first: usize,
    /// Client peers this worker runs
    #[arg(long)]
    pub(crate) peers: usize,
    /// Seconds to keep cycling
    #[arg(long)]
    pub(crate) seconds: f64,
    /// Seconds one cycle may take
    #[arg(long)]
    pub(crate) cycle_timeout: f64,
    /// Folder of the peers' storage folders
    #[arg(long)]
    pub(crate) dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SoakArgs {
    /// Client peers cycling at once
    #[arg(long, default_value_t = 100)]
    pub(crate) peers: usize,
    /// Length of the run in minutes, fractions allowed (default 10)
    #[arg(long, conflicts_with = "seconds")]
    pub(crate) minutes: Option<f64>,
    /// Length of the run in seconds
    #[arg(long)]
    pub(crate) seconds: Option<f64>,
    /// Seconds of cycling before the start figures are taken (default: a tenth of the run,
    /// from 1 to 60 s; every peer completes at least one cycle)
    #[arg(long, value_name = "SECONDS")]
    pub(crate) warm_up: Option<f64>,
    /// Feeds the server offers
    #[arg(long, default_value_t = 5)]
    pub(crate) feeds: usize,
    /// Blocks per server feed
    #[arg(long, default_value_t = 100)]
    pub(crate) blocks: usize,
    /// Bytes per block
    #[arg(long, default_value_t = 1024)]
    pub(crate) block_size: usize,
    /// Seconds between progress lines
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub(crate) report_every: f64,
    /// Seconds one cycle may take before it counts as failed (default: 30, or 0.1 per peer
    /// when that is more: the peers share the machine, so a cycle takes longer the more
    /// there are)
    #[arg(long, value_name = "SECONDS")]
    pub(crate) cycle_timeout: Option<f64>,
    /// Allowed growth of idle RSS from start to end, in percent
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    pub(crate) rss_tolerance: f64,
    /// Folder for the temporary storage (default: the system's temporary folder)
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// A wire generation by name.
fn wire_arg(text: &str) -> Result<Wire, String> {
    text.parse()
}

/// One of the events' types.
fn event_type(text: &str) -> Result<&'static str, String> {
    let known = feedscope::event::Event::TYPES;
    known.iter().find(|t| **t == text).copied().ok_or_else(|| {
        format!(
            "no event is of type {text:?}; the types are {}",
            known.join(", ")
        )
    })
}

/// A count of one or more.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; give a whole number of 1 or more")),
    }
}

pub(crate) fn storage_dir(arg: &StorageArg) -> Result<PathBuf> {
    if let Some(dir) = &arg.storage {
        return Ok(dir.clone());
    }
    let dirs = directories::ProjectDirs::from("", "", "feedscope")
        .context("cannot find a data directory for this user; pass --storage DIR")?;
    Ok(dirs.data_dir().join("storage"))
}

pub(crate) fn config(net: &NetArgs, default_policy: Policy) -> Result<Config> {
    let key = FeedKey::parse(&net.key).with_context(|| "--key".to_string())?;
    Ok(Config {
        storage: storage_dir(&net.storage)?,
        key,
        listen: net.listen.clone(),
        connect: net.connect.clone(),
        wire: net.wire,
        policy: match net.policy {
            _ if net.observe => Policy::Observe,
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
        metrics: net.metrics.clone(),
        stats: feedscope::stats::Stats::new(),
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

pub(crate) fn recorder(arg: &RecordArg) -> Result<Option<Recorder>> {
    arg.record
        .as_ref()
        .map(|path| {
            Recorder::create(path)
                .with_context(|| format!("cannot write the recording {}", path.display()))
        })
        .transpose()
}
