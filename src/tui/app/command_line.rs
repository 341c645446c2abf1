//! The `:` command line: running a line, and completing a word from what is on screen.

use tui_input::backend::crossterm::EventHandler;

use super::*;
use crate::tui::keys::{
    self, break_kind, line_action_for, LineAction, Verb, BREAK_KINDS, COMMANDS,
};

impl App {
    pub(super) fn on_command_key(&mut self, key: &KeyEvent, raw: &TermEvent) -> Vec<Command> {
        let action = line_action_for(key);
        if action != Some(LineAction::Complete) {
            self.candidates.clear();
        }
        match action {
            Some(LineAction::Cancel) => {
                self.input = None;
                self.restore_filters();
            }
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
                self.filters_before = None;
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
                self.preview_filters();
            }
        }
        Vec::new()
    }

    pub(super) fn on_search_key(&mut self, key: &KeyEvent, raw: &TermEvent) -> Vec<Command> {
        match keys::search_action_for(key) {
            Some(LineAction::Cancel) => {
                self.input = None;
                self.searching = false;
                self.restore_filters();
            }
            Some(LineAction::ForceQuit) => self.quit = true,
            Some(LineAction::Run) => {
                self.input = None;
                self.searching = false;
                self.filters_before = None;
                self.drop_passing_status();
                // The jump sticks: the first match stays selected when the search changes.
                let list = self.peers();
                let (listed, first) = (list.len(), list.get(self.peer_index(&list)).map(|p| p.id));
                self.peer_id = first.or(self.peer_id);
                let total = self.model().peers.len();
                let text = match (self.peer_filter.as_str(), listed) {
                    ("", _) => "every peer is listed".to_string(),
                    (f, 0) => format!("no peer matches {f:?}; / and enter alone lists them all"),
                    (f, n) => format!(
                        "{n} of {total} peers match {f:?}; home/end/pgup/pgdn move in them, \
                         / changes the search"
                    ),
                };
                let error = !self.peer_filter.is_empty() && listed == 0;
                self.say(text, error);
            }
            Some(LineAction::Complete | LineAction::Older | LineAction::Newer) => {}
            None => {
                if let Some(input) = self.input.as_mut() {
                    input.handle_event(raw);
                }
                self.peer_filter = self
                    .input
                    .as_ref()
                    .map_or(String::new(), |i| i.value().trim().to_lowercase());
                self.peer_top = 0;
                self.focus = Focus::Peers;
                self.reset_rows();
            }
        }
        Vec::new()
    }

    /// `: filter` and `: peers` apply while they are typed, as in the tools people know;
    /// the filters and pane before them come back if the line turns into something else or is
    /// abandoned.
    fn preview_filters(&mut self) {
        let line = self
            .input
            .as_ref()
            .map(|i| i.value().to_string())
            .unwrap_or_default();
        let line = line.trim_start();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let verb = keys::command(word)
            .map(|c| c.verb)
            .filter(|v| matches!(v, Verb::Filter | Verb::Peers));
        let Some(verb) = verb else {
            self.restore_filters();
            return;
        };
        if self.filters_before.is_none() {
            self.filters_before = Some((self.filter.clone(), self.peer_filter.clone(), self.pane));
        }
        let rest = rest.trim();
        if verb == Verb::Filter {
            self.filter = rest.to_string();
            if self.pane != Pane::Wire {
                self.pane = Pane::Log;
            }
        } else {
            self.peer_filter = rest.to_lowercase();
            self.peer_top = 0;
        }
        self.reset_rows();
    }

    /// Puts back the filters a typed line changed, if it did.
    fn restore_filters(&mut self) {
        if let Some((filter, peers, pane)) = self.filters_before.take() {
            self.filter = filter;
            self.peer_filter = peers;
            self.pane = pane;
            self.peer_top = 0;
            self.reset_rows();
        }
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

    pub(super) fn offered_matching(&self, prefix: &str) -> Vec<(PeerId, FeedKey)> {
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
                vec![Command::Connect {
                    addr: rest.into(),
                    wire: None,
                }]
            }
            Verb::Approve | Verb::Decline if self.observing() => {
                self.say_observing();
                Vec::new()
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
                vec![Command::AddFeed {
                    name: rest.into(),
                    wire: None,
                }]
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

/// What `tab` makes of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The line, completed as far as every candidate agrees.
    pub line: String,
    /// The candidates, when more than one fits.
    pub candidates: Vec<String>,
}

pub(super) fn common_prefix<'a>(mut words: impl Iterator<Item = &'a str>) -> String {
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
