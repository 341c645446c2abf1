//! View state (selection, pane, freeze, command line) and what keys turn into.
//!
//! `on_key` returns the engine commands a key press asks for; it touches no terminal and no
//! engine, so it is tested like any function.

use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use tui_input::backend::crossterm::EventHandler;
use tui_input::Input;

use crate::event::{Command, Event, KeySelection, PeerId};
use crate::tui::keys::{action_for, Action, COMMANDS};
use crate::tui::model::{Model, OfferState, PeerView};
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

/// A message in the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// Whether it reports a mistake.
    pub error: bool,
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

/// Everything the screen needs.
#[derive(Debug)]
pub struct App {
    live: Model,
    frozen: Option<Box<Model>>,
    /// Selected peer (index in id order).
    pub peer: usize,
    /// Shown pane.
    pub pane: Pane,
    /// Selected row in the pane.
    pub row: usize,
    /// Whether help is shown.
    pub help: bool,
    /// Lines the help overlay is scrolled by.
    pub help_scroll: u16,
    /// The command line, while open.
    pub input: Option<Input>,
    /// Status line.
    pub status: Option<Status>,
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
    history: Vec<String>,
    history_pos: Option<usize>,
}

impl App {
    /// A fresh view.
    pub fn new(settings: Settings) -> Self {
        App {
            live: Model::default(),
            frozen: None,
            peer: 0,
            pane: Pane::Offered,
            row: 0,
            help: false,
            help_scroll: 0,
            input: None,
            status: None,
            filter: String::new(),
            peer_filter: String::new(),
            sort: PeerSort::default(),
            settings,
            confirm_quit: false,
            quit: false,
            replay: None,
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

    /// Forgets every event (a replay seeking back rebuilds from the start).
    pub fn reset_model(&mut self) {
        self.live = Model::default();
        self.frozen = None;
    }

    /// Folds an engine event (always into the live model, also while frozen).
    pub fn on_event(&mut self, ev: &Event, at: f64) {
        self.live.apply(ev, at);
    }

    /// The peers as the list shows them: filtered, then sorted.
    pub fn peers(&self) -> Vec<&PeerView> {
        let f = self.peer_filter.to_lowercase();
        let mut v: Vec<&PeerView> = self
            .model()
            .peers
            .values()
            .filter(|p| {
                f.is_empty()
                    || p.addr.contains(&f)
                    || p.remote_public_key.starts_with(&f)
                    || p.state().contains(&f)
                    || format!("#{}", p.id) == f
            })
            .collect();
        match self.sort {
            PeerSort::Id => {}
            PeerSort::Rate => v.sort_by(|a, b| b.rate().total_cmp(&a.rate())),
            PeerSort::Pending => v.sort_by_key(|p| std::cmp::Reverse(p.pending())),
            PeerSort::State => v.sort_by_key(|p| (p.disconnected.is_some(), p.state())),
        }
        v
    }

    /// The selected peer.
    pub fn selected_peer(&self) -> Option<&PeerView> {
        self.peers().get(self.peer).copied()
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
    pub fn wire_lines(&self) -> Vec<&crate::tui::model::WireLine> {
        let f = self.filter.to_lowercase();
        let Some(p) = self.selected_peer() else {
            return Vec::new();
        };
        p.wire
            .iter()
            .filter(|w| {
                f.is_empty()
                    || w.kind.to_lowercase().contains(&f)
                    || w.channel.contains(&f)
                    || (f == "in" && w.incoming)
                    || (f == "out" && !w.incoming)
                    || w.summary.to_lowercase().contains(&f)
            })
            .collect()
    }

    /// Log lines that pass the filter (and concern the selected peer, if it is chosen).
    pub fn log_lines(&self) -> Vec<&crate::tui::model::LogLine> {
        let f = self.filter.to_lowercase();
        self.model()
            .log
            .iter()
            .filter(|l| {
                f.is_empty()
                    || l.text.to_lowercase().contains(&f)
                    || l.kind.contains(&f)
                    || l.peer.is_some_and(|p| format!("#{p}") == f)
            })
            .collect()
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
        });
    }

    /// Handles a terminal event; returns the commands for the engine.
    pub fn on_terminal(&mut self, ev: &TermEvent) -> Vec<Command> {
        match ev {
            TermEvent::Key(k) if k.kind != ratatui::crossterm::event::KeyEventKind::Release => {
                self.on_key(k, ev)
            }
            TermEvent::Mouse(m) => {
                use ratatui::crossterm::event::MouseEventKind;
                match m.kind {
                    MouseEventKind::ScrollDown => self.move_row(1),
                    MouseEventKind::ScrollUp => self.move_row(-1),
                    _ => {}
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn on_key(&mut self, key: &KeyEvent, raw: &TermEvent) -> Vec<Command> {
        if self.input.is_some() {
            return self.on_command_key(key, raw);
        }
        let Some(action) = action_for(key) else {
            if key.code == KeyCode::Esc {
                self.help = false;
                self.confirm_quit = false;
                self.status = None;
            }
            return Vec::new();
        };
        if action != Action::Quit {
            self.confirm_quit = false;
        }
        // While help is open the arrows scroll it.
        if self.help && matches!(action, Action::Up | Action::Down) {
            self.help_scroll = if action == Action::Up {
                self.help_scroll.saturating_sub(1)
            } else {
                self.help_scroll.saturating_add(1).min(40)
            };
            return Vec::new();
        }
        match action {
            Action::Up => self.move_row(-1),
            Action::Down => self.move_row(1),
            Action::PrevPeer => self.move_peer(-1),
            Action::NextPeer => self.move_peer(1),
            Action::Sort => {
                self.sort = self.sort.next();
                self.peer = 0;
                self.row = 0;
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
                self.say(
                    format!(
                        "{} {n} pending offer(s) of peer #{id}",
                        if approve { "approving" } else { "declining" }
                    ),
                    false,
                );
                return vec![decide(approve, Some(id), KeySelection::AllPending)];
            }
            Action::Hold | Action::StepOne | Action::Continue => {
                let Some(id) = self.selected_peer().map(|p| p.id) else {
                    self.say("no peer selected", true);
                    return Vec::new();
                };
                let peer = Some(id);
                return vec![match action {
                    Action::Hold => {
                        self.say(
                            format!("holding messages of peer #{id}: n steps, c continues"),
                            false,
                        );
                        Command::Hold { peer }
                    }
                    Action::StepOne => Command::Step { peer },
                    _ => {
                        self.say(format!("peer #{id} runs freely again"), false);
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
                self.history_pos = None;
            }
            Action::Help => {
                self.help = !self.help;
                self.help_scroll = 0;
            }
            Action::Quit => {
                if self.live.transferring() && !self.confirm_quit {
                    self.confirm_quit = true;
                    self.say("transfers are running: press q again to quit", false);
                } else {
                    self.quit = true;
                }
            }
            Action::ForceQuit => self.quit = true,
        }
        Vec::new()
    }

    fn decide_selected(&mut self, approve: bool) -> Vec<Command> {
        if self.pane != Pane::Offered {
            self.say("select an offer in the \"Offered to us\" pane (tab)", true);
            return Vec::new();
        }
        let keys = self.pane_keys();
        let (Some(p), Some(key)) = (self.selected_peer(), keys.get(self.row)) else {
            self.say("no offer selected", true);
            return Vec::new();
        };
        let id = p.id;
        let state = p.remote_offer.get(key).map(|o| o.state);
        if approve && state == Some(OfferState::Requested) {
            self.say(format!("{} is already requested", key.short()), false);
            return Vec::new();
        }
        self.say(
            format!(
                "{} {} from peer #{id}",
                if approve { "approved" } else { "declined" },
                key.short()
            ),
            false,
        );
        vec![decide(approve, Some(id), KeySelection::One(*key))]
    }

    fn move_row(&mut self, by: i64) {
        let len = match self.pane {
            Pane::Log => self.log_lines().len(),
            Pane::Wire => self.wire_lines().len(),
            _ => self.pane_keys().len(),
        };
        self.row = step(self.row, by, len);
    }

    fn move_peer(&mut self, by: i64) {
        self.peer = step(self.peer, by, self.peers().len());
        self.row = 0;
    }

    fn move_pane(&mut self, by: i64) {
        let i = Pane::ALL.iter().position(|p| *p == self.pane).unwrap_or(0) as i64;
        let n = Pane::ALL.len() as i64;
        self.pane = Pane::ALL[((i + by).rem_euclid(n)) as usize];
        self.row = 0;
    }

    /// Selects the peer at `index` (a mouse click on the peers list).
    pub fn click_peer(&mut self, index: usize) {
        if index < self.peers().len() {
            self.peer = index;
            self.row = 0;
        }
    }

    fn on_command_key(&mut self, key: &KeyEvent, raw: &TermEvent) -> Vec<Command> {
        match (key.code, key.modifiers) {
            (KeyCode::Esc, _) => self.input = None,
            (KeyCode::Char('c'), KeyModifiers::CONTROL) => self.quit = true,
            (KeyCode::Enter, _) => {
                let line = self
                    .input
                    .take()
                    .map(|i| i.value().to_string())
                    .unwrap_or_default();
                if !line.trim().is_empty() {
                    self.history.push(line.clone());
                }
                return self.run_line(&line);
            }
            (KeyCode::Up, _) | (KeyCode::Down, _) => {
                if self.history.is_empty() {
                    return Vec::new();
                }
                let last = self.history.len() - 1;
                let pos = match (self.history_pos, key.code) {
                    (None, KeyCode::Up) => last,
                    (Some(p), KeyCode::Up) => p.saturating_sub(1),
                    (Some(p), _) if p < last => p + 1,
                    _ => return Vec::new(),
                };
                self.history_pos = Some(pos);
                self.input = Some(Input::new(self.history[pos].clone()));
            }
            (KeyCode::Tab, _) => {
                if let Some(input) = &self.input {
                    let completed = self.complete(input.value());
                    self.input = Some(Input::new(completed));
                }
            }
            _ => {
                if let Some(input) = self.input.as_mut() {
                    input.handle_event(raw);
                }
            }
        }
        Vec::new()
    }

    /// Completes a command word or a key prefix, when exactly one candidate fits.
    pub fn complete(&self, line: &str) -> String {
        let words: Vec<&str> = line.split(' ').collect();
        if words.len() == 1 {
            let fits: Vec<&str> = COMMANDS
                .iter()
                .map(|(c, _)| c.split(' ').next().unwrap_or(""))
                .filter(|c| c.starts_with(words[0]))
                .collect();
            if let [one] = fits.as_slice() {
                return format!("{one} ");
            }
            return line.to_string();
        }
        if matches!(words[0], "approve" | "decline") && words.len() == 2 {
            let fits = self.offered_matching(words[1]);
            if let [(_, key)] = fits.as_slice() {
                return format!("{} {}", words[0], key.to_hex());
            }
        }
        line.to_string()
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
        match word {
            "" => Vec::new(),
            "connect" if !rest.is_empty() => {
                self.say(format!("dialing {rest}"), false);
                vec![Command::Connect { addr: rest.into() }]
            }
            "approve" | "decline" if !rest.is_empty() => {
                let approve = word == "approve";
                if rest == "*" {
                    let peer = self.selected_peer().map(|p| p.id);
                    return vec![decide(approve, peer, KeySelection::AllPending)];
                }
                match self.offered_matching(rest).as_slice() {
                    [] => {
                        self.say(format!("no offered key starts with {rest:?}"), true);
                        Vec::new()
                    }
                    [(_, key)] => {
                        self.say(format!("{word}d {}", key.short()), false);
                        vec![decide(approve, None, KeySelection::One(*key))]
                    }
                    many => {
                        self.say(
                            format!(
                                "{rest:?} matches {} offered keys; type more of it",
                                many.len()
                            ),
                            true,
                        );
                        Vec::new()
                    }
                }
            }
            "add-feed" if !rest.is_empty() && !rest.contains(' ') => {
                self.say(format!("creating feed {rest}"), false);
                vec![Command::AddFeed { name: rest.into() }]
            }
            "append" => match rest.split_once(' ') {
                Some((name, text)) if !text.is_empty() => {
                    self.say(format!("appended to {name}"), false);
                    vec![Command::Append {
                        feed: name.into(),
                        data: Some(text.into()),
                        data_hex: None,
                    }]
                }
                _ => {
                    self.say("usage: append NAME TEXT", true);
                    Vec::new()
                }
            },
            "filter" => {
                self.filter = rest.to_string();
                if self.pane != Pane::Wire {
                    self.pane = Pane::Log;
                }
                self.row = 0;
                Vec::new()
            }
            "peers" => {
                self.peer_filter = rest.to_lowercase();
                self.peer = 0;
                self.row = 0;
                Vec::new()
            }
            "break" => {
                let peer = self.selected_peer().map(|p| p.id);
                self.say(
                    if rest.is_empty() {
                        "breakpoints cleared".to_string()
                    } else {
                        format!("will hold at the next {rest}")
                    },
                    false,
                );
                vec![Command::Break {
                    peer,
                    kind: rest.to_string(),
                }]
            }
            "quit" | "q" => {
                self.quit = true;
                Vec::new()
            }
            _ => {
                let usage = COMMANDS
                    .iter()
                    .find(|(c, _)| c.split(' ').next() == Some(word))
                    .map(|(c, _)| format!("usage: {c}"))
                    .unwrap_or_else(|| format!("unknown command {word:?}; ? lists the commands"));
                self.say(usage, true);
                Vec::new()
            }
        }
    }
}

fn decide(approve: bool, peer: Option<PeerId>, key: KeySelection) -> Command {
    if approve {
        Command::Approve { peer, key }
    } else {
        Command::Decline { peer, key }
    }
}

fn step(i: usize, by: i64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (i as i64 + by).clamp(0, len as i64 - 1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(app.complete("appr"), "approve ");
        assert_eq!(
            app.complete("approve 01"),
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
