//! View state (selection, pane, freeze, command line) and what keys turn into.
//!
//! `on_key` returns the engine commands a key press asks for; it touches no terminal and no
//! engine, so it is tested like any function.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{
    Event as TermEvent, KeyEvent, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use tui_input::Input;

use crate::event::{Command, Event, KeySelection, PeerId, ProblemKind};
use crate::tui::inbox::IngestStats;
use crate::tui::keys::{action_for, Action, Mode};
use crate::tui::model::{LogLine, Model, OfferState, PeerView, WireLine, LOG_CAPACITY};
use crate::tui::view::{self, Regions};
use crate::wire::FeedKey;

mod command_line;
mod input;
mod lists;

use lists::{log_passes, wire_passes};

pub use command_line::Completion;

/// The panes shown for the selected peer, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// What the peer offered us.
    Offered,
    /// What we requested.
    Requested,
    /// What replicates.
    Active,
    /// What we offered it.
    OurOffer,
    /// Every protocol message (with `--trace-wire`).
    Wire,
    /// The event log.
    Log,
}

impl Pane {
    /// All panes in tab order.
    pub const ALL: [Pane; 6] = [
        Pane::Offered,
        Pane::Requested,
        Pane::Active,
        Pane::OurOffer,
        Pane::Wire,
        Pane::Log,
    ];

    /// Tab title on narrow screens.
    pub fn short_title(self) -> &'static str {
        match self {
            Pane::Offered => "Offer",
            Pane::Requested => "Req",
            Pane::Active => "Active",
            Pane::OurOffer => "Ours",
            Pane::Wire => "Wire",
            Pane::Log => "Log",
        }
    }

    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Offered => "Offered to us",
            Pane::Requested => "Requested",
            Pane::Active => "Active",
            Pane::OurOffer => "Our offer",
            Pane::Wire => "Wire",
            Pane::Log => "Log",
        }
    }
}

/// How the peers list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerSort {
    /// Connection order.
    #[default]
    Id,
    /// Fastest download first.
    Rate,
    /// Most pending offers first.
    Pending,
    /// Connected before gone, then by state word.
    State,
}

impl PeerSort {
    fn next(self) -> Self {
        match self {
            PeerSort::Id => PeerSort::Rate,
            PeerSort::Rate => PeerSort::Pending,
            PeerSort::Pending => PeerSort::State,
            PeerSort::State => PeerSort::Id,
        }
    }

    /// A word for the list title.
    pub fn label(self) -> &'static str {
        match self {
            PeerSort::Id => "id",
            PeerSort::Rate => "rate",
            PeerSort::Pending => "pending",
            PeerSort::State => "state",
        }
    }
}

/// How long a message stays in the status line.
pub const STATUS_TTL: Duration = Duration::from_secs(4);
/// How long a mistake stays in the status line.
pub const ERROR_TTL: Duration = Duration::from_secs(8);
/// How long a command's outcome is awaited from the engine's events.
pub const OUTCOME_WAIT: Duration = Duration::from_secs(5);

/// A message in the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// Whether it reports a mistake.
    pub error: bool,
    /// When it goes stale; `None` keeps it until replaced or dismissed with esc.
    pub until: Option<Instant>,
}

/// Facts for the header that do not come from events.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Multifeed key, shortened.
    pub key: String,
    /// Policy name.
    pub policy: String,
    /// Storage folder.
    pub storage: String,
    /// Log file.
    pub log_file: String,
    /// Whether colours are off (`NO_COLOR`).
    pub no_color: bool,
}

/// The list that paging keys move: the one last moved in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    /// The peers list.
    Peers,
    /// The list of the shown pane.
    #[default]
    Pane,
}

/// The event that shows a command sent to the engine worked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Appended(String),
    FeedAdded(String),
    Connected(String),
    /// Only a failure has something to say.
    Failure,
}

/// A command sent to the engine whose outcome the status line waits for.
#[derive(Debug, Clone)]
struct Awaiting {
    /// The command, as the status line names it.
    what: String,
    expect: Expect,
    until: Instant,
}

/// Everything the screen needs.
#[derive(Debug)]
pub struct App {
    live: Model,
    frozen: Option<Box<Model>>,
    /// The selected peer, by identity: sorting and filtering move its row, not the selection.
    peer_id: Option<PeerId>,
    /// First peer row shown.
    pub peer_top: usize,
    /// Shown pane.
    pub pane: Pane,
    /// Selected row in the pane.
    pub row: usize,
    /// First pane row shown.
    pub row_top: usize,
    /// Whether the Log and Wire panes keep their last line selected as lines arrive.
    pub follow: bool,
    /// The list paging keys move.
    pub focus: Focus,
    /// Whether help is shown.
    pub help: bool,
    /// Lines the help overlay is scrolled by.
    pub help_scroll: u16,
    /// The command line or the peer search, while open.
    pub input: Option<Input>,
    /// Whether the open line is the `/` peer search rather than the `:` command line.
    pub searching: bool,
    /// What `tab` found when several completions fit.
    pub candidates: Vec<String>,
    /// Status line.
    pub status: Option<Status>,
    awaiting: Option<Awaiting>,
    /// Peers asked to hold their messages (step mode).
    pub holding: BTreeSet<PeerId>,
    /// Log filter.
    pub filter: String,
    /// Peers list filter.
    pub peer_filter: String,
    /// The filters and pane as they were before `: filter` or `: peers` was typed, put back
    /// if the line is abandoned.
    filters_before: Option<(String, String, Pane)>,
    /// Peers list order.
    pub sort: PeerSort,
    /// Header facts.
    pub settings: Settings,
    /// Set after `q` while transfers run: the next `q` quits.
    pub confirm_quit: bool,
    /// The UI should close.
    pub quit: bool,
    /// The replay timeline line, when showing a recording.
    pub replay: Option<String>,
    /// Where each region was drawn last, for paging and clicks.
    pub regions: Regions,
    /// What the live loop's inbox did with the engine's events (drops are shown).
    pub ingest: IngestStats,
    history: Vec<String>,
    history_pos: Option<usize>,
}

impl App {
    /// A fresh view.
    pub fn new(settings: Settings) -> Self {
        App {
            live: Model::default(),
            frozen: None,
            peer_id: None,
            peer_top: 0,
            pane: Pane::Offered,
            row: 0,
            row_top: 0,
            follow: true,
            focus: Focus::Pane,
            help: false,
            help_scroll: 0,
            input: None,
            searching: false,
            candidates: Vec::new(),
            status: None,
            awaiting: None,
            holding: BTreeSet::new(),
            filter: String::new(),
            peer_filter: String::new(),
            filters_before: None,
            sort: PeerSort::default(),
            settings,
            confirm_quit: false,
            quit: false,
            replay: None,
            regions: Regions::default(),
            ingest: IngestStats::default(),
            history: Vec::new(),
            history_pos: None,
        }
    }

    /// The model shown: the frozen snapshot, or the live one.
    pub fn model(&self) -> &Model {
        self.frozen.as_deref().unwrap_or(&self.live)
    }

    /// Whether the screen is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// Whether this is a recording rather than a live engine.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// Lays the screen out for a terminal of this size (before each frame), so paging and
    /// clicks know the rows shown.
    pub fn set_area(&mut self, area: Rect) {
        self.regions = view::regions(area, self);
    }

    /// What the screen is doing, for the footer.
    pub fn mode(&self) -> Mode {
        if self.input.is_some() && self.searching {
            Mode::Search
        } else if self.input.is_some() {
            Mode::CommandLine
        } else if self.help {
            Mode::Help
        } else if self.replaying() {
            Mode::Replay
        } else if self
            .selected_peer()
            .is_some_and(|p| self.holding.contains(&p.id) || !p.held.is_empty())
        {
            Mode::Step
        } else if self.observing() {
            Mode::Observe
        } else {
            Mode::Normal
        }
    }

    /// Forgets every event (a replay seeking back rebuilds from the start).
    pub fn reset_model(&mut self) {
        self.live = Model::default();
        self.frozen = None;
    }

    /// Folds an engine event (always into the live model, also while frozen).
    pub fn on_event(&mut self, ev: &Event, at: f64) {
        // A paused list whose oldest line the ring is about to drop moves up with its lines, so
        // the selection stays on the line the user chose.
        let shifts = !self.follows() && self.frozen.is_none() && self.drops_a_shown_line(ev);
        self.live.apply(ev, at);
        if shifts {
            self.row = self.row.saturating_sub(1);
            self.row_top = self.row_top.saturating_sub(1);
        }
        match ev {
            Event::Held { peer, .. } => {
                self.holding.insert(*peer);
            }
            Event::PeerDisconnected { peer, .. } => {
                self.holding.remove(peer);
            }
            _ => {}
        }
        self.hear_outcome(ev);
    }

    /// Whether folding `ev` drops the oldest line of the shown Log or Wire list.
    fn drops_a_shown_line(&self, ev: &Event) -> bool {
        let f = self.filter.to_lowercase();
        match (self.pane, ev) {
            // Every event but these adds a log line.
            (Pane::Log, Event::FeedProgress { .. } | Event::Wire { .. }) => false,
            (Pane::Log, _) => {
                self.live.log.len() == LOG_CAPACITY
                    && self.live.log.front().is_some_and(|l| log_passes(l, &f))
            }
            (Pane::Wire, Event::Wire { peer, .. }) => self
                .selected_peer()
                .filter(|p| p.id == *peer)
                .is_some_and(|p| {
                    p.wire.len() == LOG_CAPACITY
                        && p.wire.front().is_some_and(|w| wire_passes(w, &f))
                }),
            _ => false,
        }
    }

    /// Replaces the awaited command's message with what the engine says happened: about the
    /// address dialed, for a `connect` (other addresses are dialed again on their own).
    fn hear_outcome(&mut self, ev: &Event) {
        let Some(a) = &self.awaiting else { return };
        let said = match (ev, &a.expect) {
            (
                Event::Error {
                    kind: ProblemKind::Command | ProblemKind::Storage,
                    message,
                    ..
                },
                _,
            ) => Some((format!("{}: {message}", a.what), true, true)),
            // Dialing errors of other addresses (kept ones, dialed again) are not this one's.
            (
                Event::Error {
                    kind: ProblemKind::Connect,
                    message,
                    ..
                },
                Expect::Connected(want),
            ) if message.contains(want.as_str()) => {
                Some((format!("{}: {message}", a.what), true, true))
            }
            // Nothing went wrong, but nothing more will happen either (an address dialed or
            // connected already).
            (
                Event::Warning {
                    kind: ProblemKind::Command,
                    message,
                    ..
                },
                _,
            ) => Some((format!("{}: {message}", a.what), false, true)),
            (Event::Appended { name, length, .. }, Expect::Appended(n)) if name == n => Some((
                format!("appended to {name}: it has {length} block(s)"),
                false,
                true,
            )),
            (
                Event::FeedAdded {
                    name: Some(name), ..
                },
                Expect::FeedAdded(n),
            ) if name == n => Some((
                format!("created feed {name}; offered to every peer"),
                false,
                true,
            )),
            (
                Event::PeerConnected {
                    peer,
                    addr,
                    initiator: true,
                    ..
                },
                Expect::Connected(want),
            ) if same_address(want, addr) => {
                Some((format!("connected to {addr} as peer #{peer}"), false, true))
            }
            (
                Event::ConnectRetry {
                    addr,
                    retry_in_ms,
                    error,
                    ..
                },
                Expect::Connected(want),
            ) if addr == want => Some((
                format!("dialing {addr} failed ({error}); trying again in {retry_in_ms} ms"),
                true,
                false,
            )),
            _ => None,
        };
        if let Some((text, error, done)) = said {
            self.say(text, error);
            if done {
                self.awaiting = None;
            }
        }
    }

    /// Drops messages and awaited outcomes whose time is up; true when the screen changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.awaiting.as_ref().is_some_and(|a| a.until <= now) {
            self.awaiting = None;
        }
        let stale = self
            .status
            .as_ref()
            .and_then(|s| s.until)
            .is_some_and(|u| u <= now);
        if stale {
            self.status = None;
        }
        stale
    }

    /// When [`App::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let status = self.status.as_ref().and_then(|s| s.until);
        let awaiting = self.awaiting.as_ref().map(|a| a.until);
        match (status, awaiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        let ttl = if error { ERROR_TTL } else { STATUS_TTL };
        self.status = Some(Status {
            text: text.into(),
            error,
            until: Some(Instant::now() + ttl),
        });
    }

    /// Shows a problem that stays until it is replaced or dismissed (a recording that could
    /// not be read to its end, a recording that stopped).
    pub fn report(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: true,
            until: None,
        });
    }

    fn await_outcome(&mut self, what: String, expect: Expect) {
        self.awaiting = Some(Awaiting {
            what,
            expect,
            until: Instant::now() + OUTCOME_WAIT,
        });
    }

    /// A message that does not stay: the next command replaces it.
    fn drop_passing_status(&mut self) {
        if self.status.as_ref().is_some_and(|s| s.until.is_some()) {
            self.status = None;
        }
    }

    /// Whether the engine runs in observe mode, where nothing is decided.
    pub fn observing(&self) -> bool {
        self.settings.policy == "observe"
    }

    /// Says in the status line why a decision is not taken.
    fn say_observing(&mut self) {
        self.say(
            "observe mode is on: offers are shown, never approved or declined (restart without --observe to decide)",
            true,
        );
    }

    fn refuse_in_replay(&mut self, what: &str) -> bool {
        if self.replaying() {
            self.say(
                format!("{what} needs a live session: a replay shows a recording, with no engine"),
                true,
            );
        }
        self.replaying()
    }
}

fn decide(approve: bool, peer: Option<PeerId>, key: KeySelection) -> Command {
    if approve {
        Command::Approve { peer, key }
    } else {
        Command::Decline { peer, key }
    }
}

#[cfg(test)]
mod tests;

/// Whether a connection to `addr` (as the socket names it) is the one dialed at `want` (as
/// typed). A name that is not an IP address and port cannot be told apart here, so any
/// connection answers it, as before addresses were dialed again.
fn same_address(want: &str, addr: &str) -> bool {
    match want.parse::<std::net::SocketAddr>() {
        Ok(w) => addr.parse::<std::net::SocketAddr>().ok() == Some(w),
        Err(_) => true,
    }
}
