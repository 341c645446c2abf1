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
use tui_input::backend::crossterm::EventHandler;
use tui_input::Input;

use crate::event::{Command, Event, KeySelection, PeerId, ProblemKind};
use crate::tui::keys::{
    self, action_for, break_kind, line_action_for, Action, LineAction, Mode, Verb, BREAK_KINDS,
    COMMANDS,
};
use crate::tui::model::{LogLine, Model, OfferState, PeerView, WireLine, LOG_CAPACITY};
use crate::tui::view::{self, Regions};
use crate::wire::FeedKey;

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

/// A move in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    By(i64),
    Page(i64),
    Top,
    Bottom,
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
    /// The command line, while open.
    pub input: Option<Input>,
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
            candidates: Vec::new(),
            status: None,
            awaiting: None,
            holding: BTreeSet::new(),
            filter: String::new(),
            peer_filter: String::new(),
            sort: PeerSort::default(),
            settings,
            confirm_quit: false,
            quit: false,
            replay: None,
            regions: Regions::default(),
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
        if self.input.is_some() {
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

    /// Replaces the awaited command's message with what the engine says happened.
    fn hear_outcome(&mut self, ev: &Event) {
        let Some(a) = &self.awaiting else { return };
        let said = match (ev, &a.expect) {
            (
                Event::Error {
                    kind: ProblemKind::Command | ProblemKind::Storage | ProblemKind::Connect,
                    message,
                    ..
                },
                _,
            ) => Some((format!("{}: {message}", a.what), true, true)),
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
                Expect::Connected(_),
            ) => Some((format!("connected to {addr} as peer #{peer}"), false, true)),
            (
                Event::ConnectRetry {
                    addr,
                    retry_in_ms,
                    error,
                    ..
                },
                Expect::Connected(_),
            ) => Some((
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

    fn peer_passes(&self, p: &PeerView, f: &str) -> bool {
        f.is_empty()
            || p.addr.contains(f)
            || p.remote_public_key.starts_with(f)
            || p.state().contains(f)
            || format!("#{}", p.id) == f
    }

    /// The peers as the list shows them: filtered, then sorted.
    pub fn peers(&self) -> Vec<&PeerView> {
        let f = self.peer_filter.to_lowercase();
        let mut v: Vec<&PeerView> = self
            .model()
            .peers
            .values()
            .filter(|p| self.peer_passes(p, &f))
            .collect();
        match self.sort {
            PeerSort::Id => {}
            PeerSort::Rate => v.sort_by(|a, b| b.rate().total_cmp(&a.rate())),
            PeerSort::Pending => v.sort_by_key(|p| std::cmp::Reverse(p.pending())),
            PeerSort::State => v.sort_by_key(|p| (p.disconnected.is_some(), p.state())),
        }
        v
    }

    /// The selected peer: the one chosen, while the list shows it; else the first listed.
    pub fn selected_peer(&self) -> Option<&PeerView> {
        let f = self.peer_filter.to_lowercase();
        if let Some(p) = self.peer_id.and_then(|id| self.model().peers.get(&id)) {
            if self.peer_passes(p, &f) {
                return Some(p);
            }
        }
        self.peers().first().copied()
    }

    /// The selected peer's row in `list` (as [`App::peers`] returns it).
    pub fn peer_index(&self, list: &[&PeerView]) -> usize {
        self.selected_peer()
            .and_then(|s| list.iter().position(|p| p.id == s.id))
            .unwrap_or(0)
    }

    /// The keys listed in the current pane, in display order.
    pub fn pane_keys(&self) -> Vec<FeedKey> {
        let Some(p) = self.selected_peer() else {
            return Vec::new();
        };
        match self.pane {
            Pane::Offered => p.remote_offer.keys().copied().collect(),
            Pane::Requested => p.requested.iter().copied().collect(),
            Pane::Active => p.active.keys().copied().collect(),
            Pane::OurOffer => p.local_offer.iter().copied().collect(),
            Pane::Wire | Pane::Log => Vec::new(),
        }
    }

    /// Wire lines of the selected peer that pass the filter.
    pub fn wire_lines(&self) -> Vec<&WireLine> {
        let f = self.filter.to_lowercase();
        let Some(p) = self.selected_peer() else {
            return Vec::new();
        };
        p.wire.iter().filter(|w| wire_passes(w, &f)).collect()
    }

    /// Log lines that pass the filter (and concern the selected peer, if it is chosen).
    pub fn log_lines(&self) -> Vec<&LogLine> {
        let f = self.filter.to_lowercase();
        self.model()
            .log
            .iter()
            .filter(|l| log_passes(l, &f))
            .collect()
    }

    fn pane_len(&self) -> usize {
        match self.pane {
            Pane::Log => self.log_lines().len(),
            Pane::Wire => self.wire_lines().len(),
            _ => self.pane_keys().len(),
        }
    }

    /// Whether the shown pane keeps its last line selected as lines arrive.
    pub fn follows(&self) -> bool {
        self.follow && matches!(self.pane, Pane::Log | Pane::Wire)
    }

    /// The selected row of a pane list `len` long: the last one while following.
    pub fn selected_row(&self, len: usize) -> usize {
        if len == 0 {
            0
        } else if self.follows() {
            len - 1
        } else {
            self.row.min(len - 1)
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

    fn refuse_in_replay(&mut self, what: &str) -> bool {
        if self.replaying() {
            self.say(
                format!("{what} needs a live session: a replay shows a recording, with no engine"),
                true,
            );
        }
        self.replaying()
    }

    /// Handles a terminal event; returns the commands for the engine.
    pub fn on_terminal(&mut self, ev: &TermEvent) -> Vec<Command> {
        match ev {
            TermEvent::Key(k) if k.kind != ratatui::crossterm::event::KeyEventKind::Release => {
                self.on_key(k, ev)
            }
            TermEvent::Mouse(m) => {
                self.on_mouse(m);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn on_mouse(&mut self, m: &MouseEvent) {
        let at = Position::new(m.column, m.row);
        let r = self.regions;
        match m.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let by = if m.kind == MouseEventKind::ScrollDown {
                    1
                } else {
                    -1
                };
                if self.help {
                    self.scroll_help(Move::By(by * 3));
                } else if r.peers.contains(at) {
                    self.move_peer(Move::By(by));
                } else {
                    self.move_row(Move::By(by));
                }
            }
            MouseEventKind::Down(MouseButton::Left) if !self.help => {
                if r.peer_rows.contains(at) {
                    let list = self.peers();
                    let top = view::visible_top(
                        self.peer_top,
                        self.peer_index(&list),
                        r.peer_rows.height as usize,
                    );
                    if let Some(p) = list.get(top + (at.y - r.peer_rows.y) as usize) {
                        self.peer_id = Some(p.id);
                        self.peer_top = top;
                        self.focus = Focus::Peers;
                        self.reset_rows();
                    }
                } else if r.tabs.contains(at) {
                    if let Some(i) = view::tab_at(self, r.tabs, at.x) {
                        self.pane = Pane::ALL[i];
                        self.focus = Focus::Pane;
                        self.reset_rows();
                    }
                } else if r.rows.contains(at) {
                    let len = self.pane_len();
                    let page = r.rows.height as usize;
                    let top = if self.follows() {
                        len.saturating_sub(page)
                    } else {
                        view::visible_top(self.row_top, self.selected_row(len), page)
                    };
                    let i = top + (at.y - r.rows.y) as usize;
                    if i < len {
                        self.row = i;
                        self.row_top = top;
                        self.follow = i + 1 == len;
                        self.focus = Focus::Pane;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_key(&mut self, key: &KeyEvent, raw: &TermEvent) -> Vec<Command> {
        if self.input.is_some() {
            return self.on_command_key(key, raw);
        }
        let Some(action) = action_for(key) else {
            return Vec::new();
        };
        self.drop_passing_status();
        if action != Action::Quit {
            self.confirm_quit = false;
        }
        // While help is open the moving keys scroll it.
        if self.help {
            let m = match action {
                Action::Up => Some(Move::By(-1)),
                Action::Down => Some(Move::By(1)),
                Action::PageUp => Some(Move::Page(-1)),
                Action::PageDown => Some(Move::Page(1)),
                Action::Top => Some(Move::Top),
                Action::Bottom => Some(Move::Bottom),
                _ => None,
            };
            if let Some(m) = m {
                self.scroll_help(m);
                return Vec::new();
            }
        }
        let paging = |m| match self.focus {
            Focus::Peers => (Some(m), None),
            Focus::Pane => (None, Some(m)),
        };
        let (peer_move, row_move) = match action {
            Action::Up => (None, Some(Move::By(-1))),
            Action::Down => (None, Some(Move::By(1))),
            Action::PrevPeer => (Some(Move::By(-1)), None),
            Action::NextPeer => (Some(Move::By(1)), None),
            Action::PageUp => paging(Move::Page(-1)),
            Action::PageDown => paging(Move::Page(1)),
            Action::Top => paging(Move::Top),
            Action::Bottom => paging(Move::Bottom),
            _ => (None, None),
        };
        if let Some(m) = peer_move {
            self.move_peer(m);
            return Vec::new();
        }
        if let Some(m) = row_move {
            self.move_row(m);
            return Vec::new();
        }
        if matches!(
            action,
            Action::Approve
                | Action::Decline
                | Action::ApproveAll
                | Action::DeclineAll
                | Action::Hold
                | Action::StepOne
                | Action::Continue
        ) && self.refuse_in_replay(match action {
            Action::Approve | Action::ApproveAll => "approving",
            Action::Decline | Action::DeclineAll => "declining",
            _ => "step mode",
        }) {
            return Vec::new();
        }
        match action {
            Action::Sort => {
                // The selection is a peer, not a row: it moves with its peer.
                self.sort = self.sort.next();
                let list = self.peers();
                let i = self.peer_index(&list);
                self.peer_id = list.get(i).map(|p| p.id);
                let page = self.regions.peer_rows.height as usize;
                self.peer_top = i.saturating_sub(page.saturating_sub(1) / 2);
                self.say(format!("peers sorted by {}", self.sort.label()), false);
            }
            Action::NextPane => self.move_pane(1),
            Action::PrevPane => self.move_pane(-1),
            Action::Approve | Action::Decline => {
                return self.decide_selected(action == Action::Approve)
            }
            Action::ApproveAll | Action::DeclineAll => {
                let approve = action == Action::ApproveAll;
                let Some(p) = self.selected_peer() else {
                    self.say("no peer selected", true);
                    return Vec::new();
                };
                let (id, n) = (p.id, p.pending());
                let verb = if approve { "approving" } else { "declining" };
                self.say(format!("{verb} {n} pending offer(s) of peer #{id}"), false);
                self.await_outcome(format!("{verb} peer #{id}'s offers"), Expect::Failure);
                return vec![decide(approve, Some(id), KeySelection::AllPending)];
            }
            Action::Hold | Action::StepOne | Action::Continue => {
                let Some(p) = self.selected_peer() else {
                    self.say("no peer selected", true);
                    return Vec::new();
                };
                let (id, held) = (p.id, p.held.len());
                let peer = Some(id);
                self.await_outcome(format!("peer #{id}"), Expect::Failure);
                return vec![match action {
                    Action::Hold => {
                        self.holding.insert(id);
                        self.say(
                            format!(
                                "holding messages of peer #{id}: n lets one through, c continues"
                            ),
                            false,
                        );
                        Command::Hold { peer }
                    }
                    Action::StepOne => {
                        self.holding.insert(id);
                        Command::Step { peer }
                    }
                    _ => {
                        self.holding.remove(&id);
                        self.say(
                            if held > 0 {
                                format!("letting peer #{id}'s {held} held message(s) through; it is no longer held")
                            } else {
                                format!("peer #{id} is no longer held")
                            },
                            false,
                        );
                        Command::Continue { peer }
                    }
                }];
            }
            Action::Freeze => {
                if self.frozen.take().is_none() {
                    self.frozen = Some(Box::new(self.live.clone()));
                }
            }
            Action::Command => {
                self.input = Some(Input::default());
                self.candidates.clear();
                self.history_pos = None;
            }
            Action::Help => {
                self.help = !self.help;
                self.help_scroll = 0;
                // Help is laid out only while open; scrolling needs its size now.
                self.set_area(self.regions.screen);
            }
            Action::Dismiss => {
                self.help = false;
                self.status = None;
            }
            Action::Quit => {
                if self.live.transferring() && !self.confirm_quit && !self.replaying() {
                    self.confirm_quit = true;
                    self.say("transfers are running: press q again to quit", false);
                } else {
                    self.quit = true;
                }
            }
            Action::ForceQuit => self.quit = true,
            Action::Up
            | Action::Down
            | Action::PrevPeer
            | Action::NextPeer
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom => unreachable!("moves are handled above"),
        }
        Vec::new()
    }

    fn decide_selected(&mut self, approve: bool) -> Vec<Command> {
        if self.pane != Pane::Offered {
            self.say("select an offer in the \"Offered to us\" pane (tab)", true);
            return Vec::new();
        }
        let keys = self.pane_keys();
        let row = self.selected_row(keys.len());
        let (Some(p), Some(key)) = (self.selected_peer(), keys.get(row)) else {
            self.say("no offer selected", true);
            return Vec::new();
        };
        let id = p.id;
        let state = p.remote_offer.get(key).map(|o| o.state);
        if approve && state == Some(OfferState::Requested) {
            self.say(format!("{} is already requested", key.short()), false);
            return Vec::new();
        }
        let key = *key;
        let verb = if approve { "approved" } else { "declined" };
        self.say(format!("{verb} {} from peer #{id}", key.short()), false);
        self.await_outcome(
            format!(
                "{} {}",
                if approve { "approve" } else { "decline" },
                key.short()
            ),
            Expect::Failure,
        );
        vec![decide(approve, Some(id), KeySelection::One(key))]
    }

    fn scroll_help(&mut self, m: Move) {
        let page = self.regions.help.height.saturating_sub(2).max(1);
        let max = self.regions.help_lines.saturating_sub(page);
        self.help_scroll = match m {
            Move::By(n) => (self.help_scroll as i64 + n).clamp(0, max as i64) as u16,
            Move::Page(n) => {
                (self.help_scroll as i64 + n * page as i64).clamp(0, max as i64) as u16
            }
            Move::Top => 0,
            Move::Bottom => max,
        };
    }

    fn move_row(&mut self, m: Move) {
        let len = self.pane_len();
        let page = (self.regions.rows.height as usize).max(1);
        if self.follows() {
            // Start from where following showed the list, so it does not jump.
            self.row_top = len.saturating_sub(page);
        }
        let new = target(self.selected_row(len), len, page, m);
        self.row = new;
        self.row_top = view::visible_top(self.row_top, new, page);
        self.follow = if len == 0 {
            self.follow || m == Move::Bottom
        } else {
            new + 1 == len
        };
        self.focus = Focus::Pane;
    }

    fn move_peer(&mut self, m: Move) {
        let list = self.peers();
        let page = (self.regions.peer_rows.height as usize).max(1);
        let new = target(self.peer_index(&list), list.len(), page, m);
        let id = list.get(new).map(|p| p.id);
        self.peer_id = id;
        self.peer_top = view::visible_top(self.peer_top, new, page);
        self.focus = Focus::Peers;
        self.reset_rows();
    }

    fn reset_rows(&mut self) {
        self.row = 0;
        self.row_top = 0;
        self.follow = true;
    }

    fn move_pane(&mut self, by: i64) {
        let i = Pane::ALL.iter().position(|p| *p == self.pane).unwrap_or(0) as i64;
        let n = Pane::ALL.len() as i64;
        self.pane = Pane::ALL[((i + by).rem_euclid(n)) as usize];
        self.focus = Focus::Pane;
        self.reset_rows();
    }

    fn on_command_key(&mut self, key: &KeyEvent, raw: &TermEvent) -> Vec<Command> {
        let action = line_action_for(key);
        if action != Some(LineAction::Complete) {
            self.candidates.clear();
        }
        match action {
            Some(LineAction::Cancel) => self.input = None,
            Some(LineAction::ForceQuit) => self.quit = true,
            Some(LineAction::Run) => {
                let line = self
                    .input
                    .take()
                    .map(|i| i.value().to_string())
                    .unwrap_or_default();
                if !line.trim().is_empty() {
                    self.history.push(line.clone());
                }
                self.drop_passing_status();
                return self.run_line(&line);
            }
            Some(LineAction::Older | LineAction::Newer) => {
                if self.history.is_empty() {
                    return Vec::new();
                }
                let last = self.history.len() - 1;
                let pos = match (self.history_pos, action) {
                    (None, Some(LineAction::Older)) => last,
                    (Some(p), Some(LineAction::Older)) => p.saturating_sub(1),
                    (Some(p), _) if p < last => p + 1,
                    _ => return Vec::new(),
                };
                self.history_pos = Some(pos);
                self.input = Some(Input::new(self.history[pos].clone()));
            }
            Some(LineAction::Complete) => {
                if let Some(input) = &self.input {
                    let c = self.complete(input.value());
                    self.input = Some(Input::new(c.line));
                    self.candidates = c.candidates;
                }
            }
            None => {
                if let Some(input) = self.input.as_mut() {
                    input.handle_event(raw);
                }
            }
        }
        Vec::new()
    }

    /// Completes a command word, a key prefix, a feed name or a message kind: as far as every
    /// candidate agrees, and lists the candidates when more than one fits.
    pub fn complete(&self, line: &str) -> Completion {
        let words: Vec<&str> = line.split(' ').collect();
        let done = |line: String, candidates: Vec<String>| Completion { line, candidates };
        if words.len() == 1 {
            let fits: Vec<&str> = COMMANDS
                .iter()
                .map(|c| c.name)
                .filter(|c| c.starts_with(words[0]))
                .collect();
            return match fits.as_slice() {
                [] => done(line.to_string(), Vec::new()),
                [one] => done(format!("{one} "), Vec::new()),
                many => done(
                    common_prefix(many.iter().copied()).max(line.to_string()),
                    many.iter().map(|s| s.to_string()).collect(),
                ),
            };
        }
        if words.len() != 2 {
            return done(line.to_string(), Vec::new());
        }
        let (word, arg) = (words[0], words[1]);
        let (full, shown): (Vec<String>, Vec<String>) = match keys::command(word).map(|c| c.verb) {
            Some(Verb::Approve | Verb::Decline) => self
                .offered_matching(arg)
                .into_iter()
                .map(|(_, k)| {
                    let name = self.model().feed_name(&k).unwrap_or_default();
                    (
                        k.to_hex(),
                        format!("{} {name}", k.short()).trim_end().to_string(),
                    )
                })
                .unzip(),
            Some(Verb::Append) => self
                .model()
                .feeds
                .values()
                .filter(|f| f.writable)
                .filter_map(|f| f.name.clone())
                .filter(|n| n.starts_with(arg))
                .map(|n| (n.clone(), n))
                .unzip(),
            Some(Verb::Break) => BREAK_KINDS
                .iter()
                .filter(|k| k.to_lowercase().starts_with(&arg.to_lowercase()))
                .map(|k| (k.to_string(), k.to_string()))
                .unzip(),
            _ => (Vec::new(), Vec::new()),
        };
        match full.as_slice() {
            [] => done(line.to_string(), Vec::new()),
            [one] => done(format!("{word} {one}"), Vec::new()),
            many => {
                let prefix = common_prefix(many.iter().map(String::as_str));
                let arg = if prefix.len() > arg.len() {
                    prefix
                } else {
                    arg.to_string()
                };
                done(format!("{word} {arg}"), shown)
            }
        }
    }

    fn offered_matching(&self, prefix: &str) -> Vec<(PeerId, FeedKey)> {
        let prefix = prefix.to_lowercase();
        let mut out: Vec<(PeerId, FeedKey)> = Vec::new();
        for p in self
            .live
            .peers
            .values()
            .filter(|p| p.disconnected.is_none())
        {
            for k in p.remote_offer.keys() {
                if k.to_hex().starts_with(&prefix) && !out.iter().any(|(_, o)| o == k) {
                    out.push((p.id, *k));
                }
            }
        }
        out
    }

    /// Runs one command line; returns the engine commands it asks for.
    pub fn run_line(&mut self, line: &str) -> Vec<Command> {
        let line = line.trim();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        if word.is_empty() {
            return Vec::new();
        }
        let Some(spec) = keys::command(word) else {
            self.say(
                format!("unknown command {word:?}; ? lists the commands"),
                true,
            );
            return Vec::new();
        };
        if spec.needs_args && rest.is_empty() {
            self.say(format!("usage: {}", spec.usage()), true);
            return Vec::new();
        }
        if spec.live_only && self.refuse_in_replay(&format!(": {}", spec.name)) {
            return Vec::new();
        }
        match spec.verb {
            Verb::Connect => {
                self.say(format!("dialing {rest}…"), false);
                self.await_outcome(format!("connect {rest}"), Expect::Connected(rest.into()));
                vec![Command::Connect { addr: rest.into() }]
            }
            Verb::Approve | Verb::Decline => {
                let approve = spec.verb == Verb::Approve;
                if rest == "*" {
                    let peer = self.selected_peer().map(|p| p.id);
                    self.say(
                        format!(
                            "{} every pending offer of {}",
                            if approve { "approving" } else { "declining" },
                            peer.map_or("every peer".to_string(), |id| format!("peer #{id}"))
                        ),
                        false,
                    );
                    self.await_outcome(format!("{word} *"), Expect::Failure);
                    return vec![decide(approve, peer, KeySelection::AllPending)];
                }
                match self.offered_matching(rest).as_slice() {
                    [] => {
                        self.say(format!("no offered key starts with {rest:?}"), true);
                        Vec::new()
                    }
                    [(_, key)] => {
                        let key = *key;
                        self.say(format!("{word}d {}", key.short()), false);
                        self.await_outcome(format!("{word} {}", key.short()), Expect::Failure);
                        vec![decide(approve, None, KeySelection::One(key))]
                    }
                    many => {
                        self.say(
                            format!(
                                "{rest:?} matches {} offered keys; type more of it (tab lists them)",
                                many.len()
                            ),
                            true,
                        );
                        Vec::new()
                    }
                }
            }
            Verb::AddFeed => {
                if rest.contains(' ') {
                    self.say("a feed name is one word: add-feed NAME", true);
                    return Vec::new();
                }
                self.say(format!("creating feed {rest}…"), false);
                self.await_outcome(format!("add-feed {rest}"), Expect::FeedAdded(rest.into()));
                vec![Command::AddFeed { name: rest.into() }]
            }
            Verb::Append => match rest.split_once(' ') {
                Some((name, text)) if !text.trim().is_empty() => {
                    self.say(format!("appending to {name}…"), false);
                    self.await_outcome(format!("append {name}"), Expect::Appended(name.into()));
                    vec![Command::Append {
                        feed: name.into(),
                        data: Some(text.into()),
                        data_hex: None,
                    }]
                }
                _ => {
                    self.say(format!("usage: {}", spec.usage()), true);
                    Vec::new()
                }
            },
            Verb::Filter => {
                self.filter = rest.to_string();
                if self.pane != Pane::Wire {
                    self.pane = Pane::Log;
                }
                self.reset_rows();
                Vec::new()
            }
            Verb::Peers => {
                self.peer_filter = rest.to_lowercase();
                self.peer_top = 0;
                self.reset_rows();
                Vec::new()
            }
            Verb::Break => {
                let peer = self.selected_peer().map(|p| p.id);
                let whom = peer.map_or("every peer".to_string(), |id| format!("peer #{id}"));
                let kind = if rest.is_empty() {
                    String::new()
                } else if let Some(k) = break_kind(rest) {
                    k.to_string()
                } else {
                    self.say(
                        format!(
                            "no message kind {rest:?}; one of: {}",
                            BREAK_KINDS.join(" ")
                        ),
                        true,
                    );
                    return Vec::new();
                };
                self.say(
                    if kind.is_empty() {
                        format!("breakpoints of {whom} cleared")
                    } else {
                        format!("{whom} will hold at its next {kind} (: break alone clears)")
                    },
                    false,
                );
                self.await_outcome(format!("break {kind}").trim_end().into(), Expect::Failure);
                vec![Command::Break { peer, kind }]
            }
            Verb::Quit => {
                self.quit = true;
                Vec::new()
            }
        }
    }
}

/// Whether a log line passes the (lowercase) filter.
fn log_passes(l: &LogLine, f: &str) -> bool {
    f.is_empty()
        || l.text.to_lowercase().contains(f)
        || l.kind.contains(f)
        || l.peer.is_some_and(|p| format!("#{p}") == f)
}

/// Whether a wire line passes the (lowercase) filter.
fn wire_passes(w: &WireLine, f: &str) -> bool {
    f.is_empty()
        || w.kind.to_lowercase().contains(f)
        || w.channel.contains(f)
        || (f == "in" && w.incoming)
        || (f == "out" && !w.incoming)
        || w.summary.to_lowercase().contains(f)
}

/// What `tab` makes of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The line, completed as far as every candidate agrees.
    pub line: String,
    /// The candidates, when more than one fits.
    pub candidates: Vec<String>,
}

fn common_prefix<'a>(mut words: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = words.next() else {
        return String::new();
    };
    let mut len = first.len();
    for w in words {
        len = first
            .char_indices()
            .zip(w.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(len);
    }
    first[..len].to_string()
}

fn decide(approve: bool, peer: Option<PeerId>, key: KeySelection) -> Command {
    if approve {
        Command::Approve { peer, key }
    } else {
        Command::Decline { peer, key }
    }
}

/// Where a move from `i` lands in a list `len` long, `page` rows of it shown.
fn target(i: usize, len: usize, page: usize, m: Move) -> usize {
    if len == 0 {
        return 0;
    }
    let last = len as i64 - 1;
    let to = match m {
        Move::By(n) => i as i64 + n,
        Move::Page(n) => i as i64 + n * page.max(1) as i64,
        Move::Top => 0,
        Move::Bottom => last,
    };
    to.clamp(0, last) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::{KeyCode, KeyModifiers};
    use std::collections::BTreeMap;

    fn key(n: u8) -> FeedKey {
        FeedKey([n; 32])
    }

    fn press(app: &mut App, code: KeyCode) -> Vec<Command> {
        let k = KeyEvent::new(code, KeyModifiers::NONE);
        app.on_terminal(&TermEvent::Key(k))
    }

    fn with_offers() -> App {
        let mut app = App::new(Settings::default());
        app.on_event(
            &Event::PeerConnected {
                peer: 7,
                addr: "a".into(),
                initiator: false,
                remote_public_key: "00".repeat(32),
            },
            0.0,
        );
        app.on_event(
            &Event::OfferReceived {
                peer: 7,
                keys: vec![key(1), key(2)],
                meta: BTreeMap::new(),
            },
            0.0,
        );
        app
    }

    #[test]
    fn a_approves_and_d_declines_the_selected_offer() {
        let mut app = with_offers();
        assert_eq!(
            press(&mut app, KeyCode::Char('a')),
            vec![Command::Approve {
                peer: Some(7),
                key: KeySelection::One(key(1))
            }]
        );
        press(&mut app, KeyCode::Down);
        assert_eq!(
            press(&mut app, KeyCode::Char('d')),
            vec![Command::Decline {
                peer: Some(7),
                key: KeySelection::One(key(2))
            }]
        );
    }

    #[test]
    fn the_command_line_approves_by_unique_prefix() {
        let mut app = with_offers();
        assert_eq!(
            app.run_line("approve 0202"),
            vec![Command::Approve {
                peer: None,
                key: KeySelection::One(key(2))
            }]
        );
        assert!(app.run_line("approve 0").is_empty());
        assert!(app.status.as_ref().unwrap().text.contains("matches 2"));
        assert!(app.run_line("frobnicate").is_empty());
        assert!(app.status.as_ref().unwrap().error);
        assert_eq!(app.complete("appr").line, "approve ");
        assert_eq!(
            app.complete("approve 01").line,
            format!("approve {}", key(1).to_hex())
        );
    }

    #[test]
    fn freeze_keeps_a_snapshot_while_events_go_on() {
        let mut app = with_offers();
        press(&mut app, KeyCode::Char(' '));
        app.on_event(
            &Event::PeerDisconnected {
                peer: 7,
                reason: "x".into(),
            },
            1.0,
        );
        assert!(app.model().peers[&7].disconnected.is_none());
        press(&mut app, KeyCode::Char(' '));
        assert!(app.model().peers[&7].disconnected.is_some());
    }

    #[test]
    fn quitting_asks_while_transfers_run() {
        let mut app = with_offers();
        app.on_event(
            &Event::FeedProgress {
                peer: 7,
                key: key(1),
                local_length: 1,
                remote_length: 10,
                bytes: 5,
            },
            0.5,
        );
        press(&mut app, KeyCode::Char('q'));
        assert!(!app.quit);
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }
}
