//! The real binary in a real terminal (tmux) against a real headless peer.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(cmd: &str, exit_file: &Path) -> Tmux {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "this test drives the UI in tmux: install it (apt-get install tmux)"
        );
        // Tests run in parallel: each needs its own session.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let session = format!("feedscope-e2e-{}-{n}", std::process::id());
        let script = format!("{cmd}; echo $? > {}", exit_file.display());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "100", "-y", "30"])
            .arg(script)
            .env("RUST_BACKTRACE", "0")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux could not start");
        Tmux { session }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .unwrap();
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

#[test]
fn approve_an_offer_in_the_terminal_and_get_exactly_that_feed() {
    let (peer_dir, ui_dir, scratch) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let wanted_blocks = blocks("wanted", 50, 200);
    let wanted = append_lines(peer_dir.path(), "wanted", &wanted_blocks);
    let unwanted = append_lines(peer_dir.path(), "unwanted", &blocks("unwanted", 5, 10));
    let (peer, addr) = Node::listen(peer_dir.path(), &[]);

    let exit_file = scratch.path().join("exit");
    let ui = Tmux::start(
        &format!(
            "{} --storage {} --connect {addr} --no-mouse",
            bin(),
            ui_dir.path().display()
        ),
        &exit_file,
    );
    // Both offers arrive and wait for a decision; the wanted feed sorts by key.
    let screen = ui.wait_for("two pending offers", |s| s.matches("pending").count() >= 2);
    assert!(screen.contains("manual"), "{screen}");
    let rows: Vec<&str> = screen.lines().filter(|l| l.contains("pending")).collect();
    let wanted_first = wanted < unwanted;
    if !wanted_first {
        ui.keys(&["Down"]);
    }
    ui.keys(&["a"]);
    ui.wait_for("the approval", |s| s.contains("approved"));
    ui.keys(&["Tab", "Tab"]);
    ui.wait_for("the approved feed synced", |s| {
        s.contains("50/50") && s.contains('✓')
    });
    ui.keys(&["q"]);
    let deadline = Instant::now() + WAIT;
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "the UI did not exit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = std::fs::read_to_string(&exit_file).unwrap();
    assert_eq!(code.trim(), "0", "exit code");
    // The alternate screen is gone: what is left is the shell's screen, not the UI.
    let after = ui.screen();
    assert!(
        !after.contains("Offered"),
        "terminal not restored:\n{after}"
    );
    peer.quit();

    let got = feeds(ui_dir.path());
    assert_eq!(
        got.len(),
        1,
        "exactly the approved feed is stored: {got:?} ({rows:?})"
    );
    assert_eq!(got[0]["key"], wanted.as_str());
    assert_eq!(cat(ui_dir.path(), &wanted), catted(&wanted_blocks));
}

#[test]
fn keys_move_the_log_and_the_status_line_reports_what_happened() {
    let (peer_dir, ui_dir, scratch) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    append_lines(peer_dir.path(), "offered", &blocks("offered", 3, 10));
    let (peer, addr) = Node::listen(peer_dir.path(), &[]);
    let exit_file = scratch.path().join("exit");
    let ui = Tmux::start(
        &format!(
            "{} --storage {} --connect {addr} --no-mouse",
            bin(),
            ui_dir.path().display()
        ),
        &exit_file,
    );
    ui.wait_for("the offer", |s| s.contains("pending"));

    // A command the engine refuses shows the engine's reason, not a success.
    ui.keys(&[":", "append nosuch hi", "Enter"]);
    ui.wait_for("the engine's refusal", |s| {
        s.contains("append nosuch: no feed \"nosuch\"")
    });
    // A message goes when the next command runs.
    ui.keys(&[":", "bogus", "Enter"]);
    ui.wait_for("the unknown command", |s| s.contains("unknown command"));
    ui.keys(&[":", "filter o", "Enter"]);
    ui.wait_for("the message gone", |s| !s.contains("unknown command"));

    // The log (where the filter went) follows until moved up, and again after G.
    ui.wait_for("the log following", |s| s.contains("following ·"));
    ui.keys(&["k"]);
    ui.wait_for("the log paused", |s| s.contains("paused: G follows"));
    ui.keys(&["G"]);
    ui.wait_for("the log following again", |s| s.contains("following ·"));
    ui.keys(&["Home"]);
    ui.wait_for("the log paused at the top", |s| {
        s.contains("paused: G follows")
    });
    ui.keys(&["End"]);
    ui.wait_for("the log following from the end", |s| {
        s.contains("following ·")
    });

    // Tab on an ambiguous prefix lists the candidates.
    ui.keys(&[":", "a", "Tab"]);
    ui.wait_for("the candidates", |s| {
        s.contains("approve") && s.contains("add-feed") && s.contains("append")
    });
    // An escape followed at once by a key reads as alt-key: wait between them.
    ui.keys(&["Escape"]);
    ui.wait_for("the command line closed", |s| s.contains("a approve"));

    // Help pages to its end, where the log file is named.
    ui.keys(&["?", "End"]);
    ui.wait_for("the end of help", |s| s.contains("feedscope.log"));
    ui.keys(&["Escape"]);
    ui.wait_for("help closed", |s| s.contains("a approve"));
    ui.keys(&["q"]);
    let deadline = Instant::now() + WAIT;
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "the UI did not exit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
    peer.quit();
}

#[test]
fn slash_searches_the_peers_list_and_counts_what_it_hides() {
    let (ui_dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<(Node, String)> = dirs.iter().map(|d| Node::listen(d.path(), &[])).collect();
    let connects: String = nodes
        .iter()
        .map(|(_, a)| format!(" --connect {a}"))
        .collect();
    let exit_file = scratch.path().join("exit");
    let ui = Tmux::start(
        &format!(
            "{} --storage {}{connects} --no-mouse",
            bin(),
            ui_dir.path().display()
        ),
        &exit_file,
    );
    ui.wait_for("three peers", |s| s.contains("peers 3"));
    ui.wait_for("the search key in the footer", |s| s.contains("/ search"));

    // Searching for the second peer's port lists it alone and counts the two it hides.
    let port = nodes[1].1.rsplit(':').next().unwrap().to_string();
    ui.keys(&["/", &port]);
    let screen = ui.wait_for("one match", |s| s.contains("1/3 · 2 hidden"));
    assert!(screen.contains(&format!("/{port}")), "{screen}");
    assert!(screen.contains("enter keep"), "{screen}");
    // The list is the left third of the screen (the events below it name every peer).
    let list: String = screen
        .lines()
        .map(|l| l.chars().take(33).collect::<String>() + "\n")
        .collect();
    for (i, (_, addr)) in nodes.iter().enumerate() {
        assert_eq!(list.contains(addr.as_str()), i == 1, "{addr}:\n{screen}");
    }
    ui.keys(&["Enter"]);
    ui.wait_for("the kept search", |s| s.contains("1 of 3 peers match"));

    // A search for nothing says so, and escape puts the kept one back.
    let backspaces = vec!["BSpace"; port.len()];
    ui.keys(&["/"]);
    ui.keys(&backspaces);
    ui.keys(&["nosuchpeer"]);
    ui.wait_for("no match", |s| s.contains("no peer matches"));
    std::thread::sleep(Duration::from_millis(100));
    ui.keys(&["Escape"]);
    ui.wait_for("the kept search again", |s| s.contains("1/3 · 2 hidden"));

    // An empty search lists every peer again.
    ui.keys(&["/"]);
    ui.wait_for("the search line", |s| s.contains(&format!("/{port}")));
    ui.keys(&backspaces);
    ui.keys(&["Enter"]);
    ui.wait_for("every peer listed", |s| {
        s.contains("every peer is listed") && !s.contains("hidden")
    });
    ui.keys(&["q", "q"]);
    let deadline = Instant::now() + WAIT;
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "the UI did not exit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (node, _) in nodes {
        node.quit();
    }
}
