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
        let session = format!("feedscope-e2e-{}", std::process::id());
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
