//! The one key map: key handling, the footer hints and the help overlay all read it.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Something a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Select the previous row.
    Up,
    /// Select the next row.
    Down,
    /// Select the previous peer.
    PrevPeer,
    /// Select the next peer.
    NextPeer,
    /// Sort the peers list by the next key.
    Sort,
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
    /// Quit (asks first while transfers run).
    Quit,
    /// Quit at once.
    ForceQuit,
}

/// One binding: the keys, how help shows them, what they do.
#[derive(Debug)]
pub struct Binding {
    /// Keys that trigger it.
    pub keys: &'static [(KeyCode, KeyModifiers)],
    /// Label in help and the footer.
    pub label: &'static str,
    /// What it does, for help.
    pub help: &'static str,
    /// The action.
    pub action: Action,
    /// Whether the footer hint line shows it.
    pub footer: bool,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;

/// Every key binding, in the order help lists them.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[(KeyCode::Up, NONE), (KeyCode::Char('k'), NONE)],
        label: "↑/k",
        help: "select the previous row",
        action: Action::Up,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Down, NONE), (KeyCode::Char('j'), NONE)],
        label: "↓/j",
        help: "select the next row",
        action: Action::Down,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Left, NONE), (KeyCode::Char('h'), NONE)],
        label: "←/h",
        help: "select the previous peer",
        action: Action::PrevPeer,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Right, NONE), (KeyCode::Char('l'), NONE)],
        label: "→/l",
        help: "select the next peer",
        action: Action::NextPeer,
        footer: true,
    },
    Binding {
        keys: &[(KeyCode::Char('o'), NONE)],
        label: "o",
        help: "sort peers: by id, download rate, pending offers, state",
        action: Action::Sort,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Tab, NONE)],
        label: "tab",
        help: "next pane: offered, requested, active, our offer, wire, log",
        action: Action::NextPane,
        footer: true,
    },
    Binding {
        keys: &[(KeyCode::BackTab, SHIFT), (KeyCode::BackTab, NONE)],
        label: "S-tab",
        help: "previous pane",
        action: Action::PrevPane,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Char('a'), NONE)],
        label: "a",
        help: "approve the selected offer (it is requested at once)",
        action: Action::Approve,
        footer: true,
    },
    Binding {
        keys: &[(KeyCode::Char('d'), NONE)],
        label: "d",
        help: "decline the selected offer",
        action: Action::Decline,
        footer: true,
    },
    Binding {
        keys: &[(KeyCode::Char('A'), SHIFT), (KeyCode::Char('A'), NONE)],
        label: "A",
        help: "approve every pending offer of the selected peer",
        action: Action::ApproveAll,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Char('D'), SHIFT), (KeyCode::Char('D'), NONE)],
        label: "D",
        help: "decline every pending offer of the selected peer",
        action: Action::DeclineAll,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Char(' '), NONE)],
        label: "space",
        help: "freeze the screen (the engine carries on); again to catch up",
        action: Action::Freeze,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Char('s'), NONE)],
        label: "s",
        help: "step mode: hold the selected peer's received messages",
        action: Action::Hold,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Char('n'), NONE)],
        label: "n",
        help: "let exactly one held message through",
        action: Action::StepOne,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Char('c'), NONE)],
        label: "c",
        help: "continue: let every held message through, stop holding",
        action: Action::Continue,
        footer: false,
    },
    Binding {
        keys: &[(KeyCode::Char(':'), NONE), (KeyCode::Char(':'), SHIFT)],
        label: ":",
        help: "open the command line (commands below)",
        action: Action::Command,
        footer: true,
    },
    Binding {
        keys: &[(KeyCode::Char('?'), NONE), (KeyCode::Char('?'), SHIFT)],
        label: "?",
        help: "show or hide this help",
        action: Action::Help,
        footer: true,
    },
    Binding {
        keys: &[(KeyCode::Char('q'), NONE)],
        label: "q",
        help: "quit (asks first while transfers run)",
        action: Action::Quit,
        footer: true,
    },
    Binding {
        keys: &[(KeyCode::Char('c'), KeyModifiers::CONTROL)],
        label: "ctrl-c",
        help: "quit at once, cleanly",
        action: Action::ForceQuit,
        footer: false,
    },
];

/// The action bound to a key press, if any.
pub fn action_for(key: &KeyEvent) -> Option<Action> {
    BINDINGS
        .iter()
        .find(|b| {
            b.keys
                .iter()
                .any(|(code, mods)| *code == key.code && *mods == key.modifiers)
        })
        .map(|b| b.action)
}

/// The footer hint line.
pub fn footer_hints() -> String {
    BINDINGS
        .iter()
        .filter(|b| b.footer)
        .map(|b| format!("{} {}", b.label, short_help(b.action)))
        .collect::<Vec<_>>()
        .join("  ")
}

fn short_help(a: Action) -> &'static str {
    match a {
        Action::NextPeer => "peer",
        Action::NextPane => "pane",
        Action::Approve => "approve",
        Action::Decline => "decline",
        Action::Command => "command",
        Action::Help => "help",
        Action::Quit => "quit",
        _ => "",
    }
}

/// Keys of the replay timeline (`feedscope replay FILE`), checked before [`BINDINGS`].
pub const REPLAY_BINDINGS: &[(KeyCode, &str, &str)] = &[
    (KeyCode::Char('p'), "p", "play or pause"),
    (KeyCode::Char('n'), "n", "step one event forward (pauses)"),
    (KeyCode::Char('b'), "b", "step one event back (pauses)"),
    (KeyCode::Char('+'), "+", "play faster"),
    (KeyCode::Char('-'), "-", "play slower"),
    (KeyCode::Home, "home", "seek to the start"),
    (KeyCode::End, "end", "seek to the end"),
];

/// The commands the `:` line accepts, for help and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    ("connect ADDR", "dial a peer, e.g. connect 127.0.0.1:4000"),
    (
        "approve KEYPREFIX",
        "approve the offered key starting with KEYPREFIX ('*': all)",
    ),
    (
        "decline KEYPREFIX",
        "decline the offered key starting with KEYPREFIX ('*': all)",
    ),
    (
        "add-feed NAME",
        "create a writable feed and offer it to every peer",
    ),
    ("append NAME TEXT", "append TEXT as one block to feed NAME"),
    (
        "filter TEXT",
        "show only log lines containing TEXT (empty: all)",
    ),
    ("quit", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_exactly_one_binding_and_no_key_is_bound_twice() {
        let mut seen = std::collections::HashSet::new();
        for b in BINDINGS {
            for k in b.keys {
                assert!(seen.insert(*k), "{k:?} bound twice");
            }
        }
        let actions: std::collections::HashSet<_> = BINDINGS.iter().map(|b| b.action).collect();
        assert_eq!(actions.len(), BINDINGS.len());
    }

    #[test]
    fn keys_map_to_their_actions() {
        let k = |c, m| KeyEvent::new(c, m);
        assert_eq!(
            action_for(&k(KeyCode::Char('a'), NONE)),
            Some(Action::Approve)
        );
        assert_eq!(
            action_for(&k(KeyCode::Char('A'), SHIFT)),
            Some(Action::ApproveAll)
        );
        assert_eq!(
            action_for(&k(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::ForceQuit)
        );
        assert_eq!(action_for(&k(KeyCode::Char('z'), NONE)), None);
    }

    #[test]
    fn the_footer_is_built_from_the_table() {
        let f = footer_hints();
        for b in BINDINGS.iter().filter(|b| b.footer) {
            assert!(f.contains(b.label), "{f}");
        }
    }
}
