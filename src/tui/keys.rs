//! The one key map: key handling, the footer hints and the help overlay all read it.
//!
//! Five tables, one shape: the live keys ([`BINDINGS`]), the replay timeline
//! ([`REPLAY_BINDINGS`]), the keys of the open command line ([`LINE_BINDINGS`]) and of the peer
//! search ([`SEARCH_BINDINGS`]), and the `:` commands ([`COMMANDS`]). Handling looks a key or word up here, so a key that help does not
//! list cannot do anything, and a hint cannot name a key that does nothing. The file is long
//! because it is those tables, one row per key or command; splitting them would split the map.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Something a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Select the previous row.
    Up,
    /// Select the next row.
    Down,
    /// Move a page up in the list last moved in.
    PageUp,
    /// Move a page down in the list last moved in.
    PageDown,
    /// Jump to the first row of the list last moved in.
    Top,
    /// Jump to the last row of the list last moved in (the log and wire follow from there).
    Bottom,
    /// Select the previous peer.
    PrevPeer,
    /// Select the next peer.
    NextPeer,
    /// Sort the peers list by the next key.
    Sort,
    /// Search the peers list: it shows only the matches, as they are typed.
    Search,
    /// Show the next pane.
    NextPane,
    /// Show the previous pane.
    PrevPane,
    /// Approve the selected offer.
    Approve,
    /// Decline the selected offer.
    Decline,
    /// Approve every pending offer of the selected peer.
    ApproveAll,
    /// Decline every pending offer of the selected peer.
    DeclineAll,
    /// Freeze or unfreeze the screen.
    Freeze,
    /// Hold the selected peer's received messages (step mode).
    Hold,
    /// Let one held message of the selected peer through.
    StepOne,
    /// Let every held message through and stop holding.
    Continue,
    /// Open the command line.
    Command,
    /// Show or hide help.
    Help,
    /// Close help, drop a message or a pending quit.
    Dismiss,
    /// Quit (asks first while transfers run).
    Quit,
    /// Quit at once.
    ForceQuit,
}

/// One binding: the keys, how help shows them, what they do.
#[derive(Debug)]
pub struct Binding<A: 'static> {
    /// Keys that trigger it.
    pub keys: &'static [(KeyCode, KeyModifiers)],
    /// Label in help and the footer.
    pub label: &'static str,
    /// What it does, for help.
    pub help: &'static str,
    /// The action.
    pub action: A,
    /// The word the footer shows after the label; `None` keeps it out of the footer.
    pub hint: Option<&'static str>,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;
const CONTROL: KeyModifiers = KeyModifiers::CONTROL;

/// Every key binding of the live UI, in the order help lists them.
pub const BINDINGS: &[Binding<Action>] = &[
    Binding {
        keys: &[(KeyCode::Up, NONE), (KeyCode::Char('k'), NONE)],
        label: "↑/k",
        help: "select the previous row",
        action: Action::Up,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Down, NONE), (KeyCode::Char('j'), NONE)],
        label: "↓/j",
        help: "select the next row",
        action: Action::Down,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::PageUp, NONE)],
        label: "pgup",
        help: "a page up in the list last moved in (peers after ←/→, else the pane)",
        action: Action::PageUp,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::PageDown, NONE)],
        label: "pgdn",
        help: "a page down in that list",
        action: Action::PageDown,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Home, NONE), (KeyCode::Char('g'), NONE)],
        label: "home/g",
        help: "the first row of that list",
        action: Action::Top,
        hint: None,
    },
    Binding {
        keys: &[
            (KeyCode::End, NONE),
            (KeyCode::Char('G'), SHIFT),
            (KeyCode::Char('G'), NONE),
        ],
        label: "end/G",
        help: "the last row; Log and Wire then follow new lines (moving up stops that)",
        action: Action::Bottom,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Left, NONE), (KeyCode::Char('h'), NONE)],
        label: "←/h",
        help: "select the previous peer",
        action: Action::PrevPeer,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Right, NONE), (KeyCode::Char('l'), NONE)],
        label: "→/l",
        help: "select the next peer",
        action: Action::NextPeer,
        hint: Some("peer"),
    },
    Binding {
        keys: &[(KeyCode::Char('/'), NONE), (KeyCode::Char('/'), SHIFT)],
        label: "/",
        help: "search the peers list: only peers whose address, key start, state or #id match, \
               as you type; enter keeps it and home/end/pgup/pgdn move in the matches, esc \
               puts the list back. The list's title counts what is hidden",
        action: Action::Search,
        hint: Some("search"),
    },
    Binding {
        keys: &[(KeyCode::Char('o'), NONE)],
        label: "o",
        help: "sort peers: by id, download rate, pending offers, state (▼ marks the column)",
        action: Action::Sort,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Tab, NONE)],
        label: "tab",
        help: "next pane: offered, requested, active, our offer, wire, log",
        action: Action::NextPane,
        hint: Some("pane"),
    },
    Binding {
        keys: &[(KeyCode::BackTab, SHIFT), (KeyCode::BackTab, NONE)],
        label: "S-tab",
        help: "previous pane",
        action: Action::PrevPane,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Char('a'), NONE)],
        label: "a",
        help: "approve the selected offer (it is requested at once)",
        action: Action::Approve,
        hint: Some("approve"),
    },
    Binding {
        keys: &[(KeyCode::Char('d'), NONE)],
        label: "d",
        help: "decline the selected offer",
        action: Action::Decline,
        hint: Some("decline"),
    },
    Binding {
        keys: &[(KeyCode::Char('A'), SHIFT), (KeyCode::Char('A'), NONE)],
        label: "A",
        help: "approve every pending offer of the selected peer",
        action: Action::ApproveAll,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Char('D'), SHIFT), (KeyCode::Char('D'), NONE)],
        label: "D",
        help: "decline every pending offer of the selected peer",
        action: Action::DeclineAll,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Char(' '), NONE)],
        label: "space",
        help: "freeze the screen (the engine carries on); again to catch up",
        action: Action::Freeze,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Char('s'), NONE)],
        label: "s",
        help: "step mode: hold the selected peer's received messages",
        action: Action::Hold,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Char('n'), NONE)],
        label: "n",
        help: "let exactly one held message through",
        action: Action::StepOne,
        hint: Some("let one through"),
    },
    Binding {
        keys: &[(KeyCode::Char('c'), NONE)],
        label: "c",
        help: "continue: let every held message through, stop holding",
        action: Action::Continue,
        hint: Some("continue"),
    },
    Binding {
        keys: &[(KeyCode::Char(':'), NONE), (KeyCode::Char(':'), SHIFT)],
        label: ":",
        help: "open the command line (commands below)",
        action: Action::Command,
        hint: Some("command"),
    },
    Binding {
        keys: &[(KeyCode::Char('?'), NONE), (KeyCode::Char('?'), SHIFT)],
        label: "?",
        help: "show or hide this help",
        action: Action::Help,
        hint: Some("help"),
    },
    Binding {
        keys: &[(KeyCode::Esc, NONE)],
        label: "esc",
        help: "close help, clear the message line, cancel a pending quit",
        action: Action::Dismiss,
        hint: Some("close"),
    },
    Binding {
        keys: &[(KeyCode::Char('q'), NONE)],
        label: "q",
        help: "quit (asks first while transfers run)",
        action: Action::Quit,
        hint: Some("quit"),
    },
    Binding {
        keys: &[(KeyCode::Char('c'), CONTROL)],
        label: "ctrl-c",
        help: "quit at once, cleanly",
        action: Action::ForceQuit,
        hint: None,
    },
];

/// What the screen is doing, which decides the footer hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Browsing peers and panes.
    Normal,
    /// The selected peer's messages are held.
    Step,
    /// The `:` line is open.
    CommandLine,
    /// The `/` peer search is open.
    Search,
    /// The help overlay is open.
    Help,
    /// Showing a recording.
    Replay,
    /// Browsing in observe mode, where nothing is approved or declined.
    Observe,
}

/// The live actions whose hints each mode shows, in footer order.
fn footer_actions(mode: Mode) -> &'static [Action] {
    match mode {
        Mode::Normal => &[
            Action::NextPeer,
            Action::Search,
            Action::NextPane,
            Action::Approve,
            Action::Decline,
            Action::Command,
            Action::Help,
            Action::Quit,
        ],
        Mode::Step => &[
            Action::StepOne,
            Action::Continue,
            Action::Command,
            Action::NextPeer,
            Action::Help,
        ],
        Mode::Observe => &[
            Action::NextPeer,
            Action::Search,
            Action::NextPane,
            Action::Command,
            Action::Help,
            Action::Quit,
        ],
        Mode::Help => &[Action::Dismiss, Action::Quit],
        Mode::Replay => &[Action::NextPane, Action::Help, Action::Quit],
        Mode::CommandLine | Mode::Search => &[],
    }
}

/// The action bound to a key press, if any.
pub fn action_for(key: &KeyEvent) -> Option<Action> {
    lookup(BINDINGS, key)
}

fn lookup<A: Copy>(table: &[Binding<A>], key: &KeyEvent) -> Option<A> {
    table
        .iter()
        .find(|b| {
            b.keys
                .iter()
                .any(|(code, mods)| *code == key.code && *mods == key.modifiers)
        })
        .map(|b| b.action)
}

/// `label hint` for each binding that has a hint, in table order, or in the order of `only`.
fn hints<A: PartialEq>(table: &[Binding<A>], only: Option<&[A]>) -> Vec<String> {
    let hint = |b: &Binding<A>| b.hint.map(|h| format!("{} {h}", b.label));
    match only {
        None => table.iter().filter_map(hint).collect(),
        Some(actions) => actions
            .iter()
            .filter_map(|a| table.iter().find(|b| b.action == *a).and_then(hint))
            .collect(),
    }
}

/// The footer hint line for a mode, built from the tables.
pub fn footer_hints(mode: Mode) -> String {
    let mut parts = match mode {
        Mode::CommandLine => hints(LINE_BINDINGS, None),
        Mode::Search => hints(SEARCH_BINDINGS, None),
        Mode::Replay => hints(REPLAY_BINDINGS, None),
        Mode::Help => vec!["↑/↓ pgup/pgdn home/end scroll".to_string()],
        Mode::Normal | Mode::Step | Mode::Observe => Vec::new(),
    };
    parts.extend(hints(BINDINGS, Some(footer_actions(mode))));
    parts.join("  ")
}

/// Something a key does on the replay timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayAction {
    /// Play or pause.
    PlayPause,
    /// One event forward (pauses).
    Forward,
    /// One event back (pauses).
    Back,
    /// Play twice as fast.
    Faster,
    /// Play half as fast.
    Slower,
    /// Seek to the start.
    Start,
    /// Seek to the end.
    End,
}

/// Keys of the replay timeline (`feedscope replay FILE`), checked before [`BINDINGS`].
pub const REPLAY_BINDINGS: &[Binding<ReplayAction>] = &[
    Binding {
        keys: &[(KeyCode::Char('p'), NONE)],
        label: "p",
        help: "play or pause",
        action: ReplayAction::PlayPause,
        hint: Some("play/pause"),
    },
    Binding {
        keys: &[(KeyCode::Char('n'), NONE)],
        label: "n",
        help: "one event forward (pauses)",
        action: ReplayAction::Forward,
        hint: Some("next event"),
    },
    Binding {
        keys: &[(KeyCode::Char('b'), NONE)],
        label: "b",
        help: "one event back (pauses)",
        action: ReplayAction::Back,
        hint: Some("back"),
    },
    Binding {
        keys: &[(KeyCode::Char('+'), NONE), (KeyCode::Char('+'), SHIFT)],
        label: "+",
        help: "play twice as fast",
        action: ReplayAction::Faster,
        hint: Some("faster"),
    },
    Binding {
        keys: &[(KeyCode::Char('-'), NONE)],
        label: "-",
        help: "play half as fast",
        action: ReplayAction::Slower,
        hint: Some("slower"),
    },
    Binding {
        keys: &[(KeyCode::Home, NONE)],
        label: "home",
        help: "seek to the start (g still jumps to a list's first row)",
        action: ReplayAction::Start,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::End, NONE)],
        label: "end",
        help: "seek to the end (G still jumps to a list's last row)",
        action: ReplayAction::End,
        hint: None,
    },
];

/// The replay action bound to a key press, if any.
pub fn replay_action_for(key: &KeyEvent) -> Option<ReplayAction> {
    lookup(REPLAY_BINDINGS, key)
}

/// Something a key does while the command line is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineAction {
    /// Run the line.
    Run,
    /// Close the line without running it.
    Cancel,
    /// Complete the command or key prefix.
    Complete,
    /// The previous line from history.
    Older,
    /// The next line from history.
    Newer,
    /// Quit at once.
    ForceQuit,
}

/// Keys of the open command line; every other key edits the line.
pub const LINE_BINDINGS: &[Binding<LineAction>] = &[
    Binding {
        keys: &[(KeyCode::Enter, NONE)],
        label: "enter",
        help: "run the command",
        action: LineAction::Run,
        hint: Some("run"),
    },
    Binding {
        keys: &[(KeyCode::Esc, NONE)],
        label: "esc",
        help: "close the command line",
        action: LineAction::Cancel,
        hint: Some("cancel"),
    },
    Binding {
        keys: &[(KeyCode::Tab, NONE)],
        label: "tab",
        help: "complete a command or key prefix; shows the candidates when several fit",
        action: LineAction::Complete,
        hint: Some("complete"),
    },
    Binding {
        keys: &[(KeyCode::Up, NONE)],
        label: "↑",
        help: "the previous command",
        action: LineAction::Older,
        hint: None,
    },
    Binding {
        keys: &[(KeyCode::Down, NONE)],
        label: "↓",
        help: "the next command",
        action: LineAction::Newer,
        hint: Some("history"),
    },
    Binding {
        keys: &[(KeyCode::Char('c'), CONTROL)],
        label: "ctrl-c",
        help: "quit at once, cleanly",
        action: LineAction::ForceQuit,
        hint: None,
    },
];

/// The command-line action bound to a key press, if any.
pub fn line_action_for(key: &KeyEvent) -> Option<LineAction> {
    lookup(LINE_BINDINGS, key)
}

/// Keys of the open `/` peer search; every other key edits what is searched for.
pub const SEARCH_BINDINGS: &[Binding<LineAction>] = &[
    Binding {
        keys: &[(KeyCode::Enter, NONE)],
        label: "enter",
        help: "keep the search; home/end/pgup/pgdn then move in the matching peers",
        action: LineAction::Run,
        hint: Some("keep"),
    },
    Binding {
        keys: &[(KeyCode::Esc, NONE)],
        label: "esc",
        help: "put the peers list back as it was",
        action: LineAction::Cancel,
        hint: Some("cancel"),
    },
    Binding {
        keys: &[(KeyCode::Char('c'), CONTROL)],
        label: "ctrl-c",
        help: "quit at once, cleanly",
        action: LineAction::ForceQuit,
        hint: None,
    },
];

/// The peer-search action bound to a key press, if any.
pub fn search_action_for(key: &KeyEvent) -> Option<LineAction> {
    lookup(SEARCH_BINDINGS, key)
}

/// A `:` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Dial a peer.
    Connect,
    /// Approve offered keys.
    Approve,
    /// Decline offered keys.
    Decline,
    /// Create a writable feed.
    AddFeed,
    /// Append a block.
    Append,
    /// Filter the log and wire lists.
    Filter,
    /// Filter the peers list.
    Peers,
    /// Set or clear a breakpoint.
    Break,
    /// Quit.
    Quit,
}

/// One `:` command: its word, its arguments and what it does.
#[derive(Debug)]
pub struct CommandSpec {
    /// What it does.
    pub verb: Verb,
    /// The word typed.
    pub name: &'static str,
    /// Other words that run it.
    pub aliases: &'static [&'static str],
    /// Its arguments, for usage and help.
    pub args: &'static str,
    /// What it does, for help.
    pub help: &'static str,
    /// Whether it needs arguments.
    pub needs_args: bool,
    /// Whether it changes the engine (and so cannot work on a recording).
    pub live_only: bool,
}

impl CommandSpec {
    /// `name ARGS`, as usage and help show it.
    pub fn usage(&self) -> String {
        if self.args.is_empty() {
            self.name.to_string()
        } else {
            format!("{} {}", self.name, self.args)
        }
    }
}

/// The commands the `:` line accepts, for handling, help and completion.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        verb: Verb::Connect,
        name: "connect",
        aliases: &[],
        args: "ADDR",
        help: "dial a peer, e.g. connect 127.0.0.1:4000",
        needs_args: true,
        live_only: true,
    },
    CommandSpec {
        verb: Verb::Approve,
        name: "approve",
        aliases: &[],
        args: "KEYPREFIX",
        help: "approve the offered key starting with KEYPREFIX ('*': the selected peer's)",
        needs_args: true,
        live_only: true,
    },
    CommandSpec {
        verb: Verb::Decline,
        name: "decline",
        aliases: &[],
        args: "KEYPREFIX",
        help: "decline the offered key starting with KEYPREFIX ('*': the selected peer's)",
        needs_args: true,
        live_only: true,
    },
    CommandSpec {
        verb: Verb::AddFeed,
        name: "add-feed",
        aliases: &[],
        args: "NAME",
        help: "create a writable feed and offer it to every peer",
        needs_args: true,
        live_only: true,
    },
    CommandSpec {
        verb: Verb::Append,
        name: "append",
        aliases: &[],
        args: "NAME TEXT",
        help: "append TEXT as one block to our feed NAME",
        needs_args: true,
        live_only: true,
    },
    CommandSpec {
        verb: Verb::Filter,
        name: "filter",
        aliases: &[],
        args: "[TEXT]",
        help: "show only log (or wire) lines containing TEXT, as you type; alone: all",
        needs_args: false,
        live_only: false,
    },
    CommandSpec {
        verb: Verb::Peers,
        name: "peers",
        aliases: &[],
        args: "[TEXT]",
        help: "show only peers whose address, key start, state or #id match, as you type",
        needs_args: false,
        live_only: false,
    },
    CommandSpec {
        verb: Verb::Break,
        name: "break",
        aliases: &[],
        args: "[KIND]",
        help: "hold the selected peer at its next KIND message (Data, MULTIFEED_MANIFEST, …); \
               alone: clear its breakpoints",
        needs_args: false,
        live_only: true,
    },
    CommandSpec {
        verb: Verb::Quit,
        name: "quit",
        aliases: &["q"],
        args: "",
        help: "quit",
        needs_args: false,
        live_only: false,
    },
];

/// The command a word names, if any.
pub fn command(word: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name == word || c.aliases.contains(&word))
}

pub use crate::event::{break_kind, BREAK_KINDS};

#[cfg(test)]
mod tests;
