use super::*;

fn no_key_twice<A>(table: &[Binding<A>]) {
    let mut seen = std::collections::HashSet::new();
    for b in table {
        for k in b.keys {
            assert!(seen.insert(*k), "{k:?} bound twice");
        }
    }
}

#[test]
fn every_action_has_exactly_one_binding_and_no_key_is_bound_twice() {
    no_key_twice(BINDINGS);
    no_key_twice(REPLAY_BINDINGS);
    no_key_twice(LINE_BINDINGS);
    no_key_twice(SEARCH_BINDINGS);
    let actions: std::collections::HashSet<_> = BINDINGS.iter().map(|b| b.action).collect();
    assert_eq!(actions.len(), BINDINGS.len());
    let replay: std::collections::HashSet<_> = REPLAY_BINDINGS.iter().map(|b| b.action).collect();
    assert_eq!(replay.len(), REPLAY_BINDINGS.len());
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
        action_for(&k(KeyCode::Char('c'), CONTROL)),
        Some(Action::ForceQuit)
    );
    assert_eq!(
        action_for(&k(KeyCode::Char('G'), SHIFT)),
        Some(Action::Bottom)
    );
    assert_eq!(action_for(&k(KeyCode::Char('z'), NONE)), None);
    assert_eq!(
        replay_action_for(&k(KeyCode::Char('p'), NONE)),
        Some(ReplayAction::PlayPause)
    );
    assert_eq!(
        line_action_for(&k(KeyCode::Tab, NONE)),
        Some(LineAction::Complete)
    );
    assert_eq!(
        action_for(&k(KeyCode::Char('/'), NONE)),
        Some(Action::Search)
    );
    assert_eq!(
        search_action_for(&k(KeyCode::Enter, NONE)),
        Some(LineAction::Run)
    );
    assert_eq!(search_action_for(&k(KeyCode::Tab, NONE)), None);
}

#[test]
fn each_footer_is_built_from_its_table() {
    let f = footer_hints(Mode::Normal);
    for b in BINDINGS.iter().filter(|b| b.hint.is_some()) {
        if footer_actions(Mode::Normal).contains(&b.action) {
            assert!(f.contains(b.label), "{f}");
        }
    }
    let r = footer_hints(Mode::Replay);
    for b in REPLAY_BINDINGS.iter().filter(|b| b.hint.is_some()) {
        assert!(
            r.contains(&format!("{} {}", b.label, b.hint.unwrap())),
            "{r}"
        );
    }
    assert!(!r.contains("a approve"), "{r}");
    let o = footer_hints(Mode::Observe);
    assert!(!o.contains("approve") && !o.contains("decline"), "{o}");
    assert!(o.contains("search") && o.contains("quit"), "{o}");
    assert!(footer_hints(Mode::CommandLine).contains("tab complete"));
    assert_eq!(footer_hints(Mode::Search), "enter keep  esc cancel");
    assert!(f.contains("/ search"), "{f}");
    assert!(footer_hints(Mode::Step).starts_with("n let one through"));
}

#[test]
fn every_command_is_found_by_its_words() {
    for c in COMMANDS {
        assert_eq!(command(c.name).map(|s| s.verb), Some(c.verb));
        for a in c.aliases {
            assert_eq!(command(a).map(|s| s.verb), Some(c.verb));
        }
    }
    assert!(command("bogus").is_none());
}

#[test]
fn break_kinds_are_spelled_as_the_engine_matches_them() {
    assert_eq!(break_kind("data"), Some("Data"));
    assert_eq!(break_kind("request_feeds"), Some("MULTIFEED_REQUEST_FEEDS"));
    assert_eq!(
        break_kind("Extension(MULTIFEED_MANIFEST)"),
        Some("MULTIFEED_MANIFEST")
    );
    assert_eq!(break_kind("Dta"), None);
}
