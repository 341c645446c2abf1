//! Signals and failures, with the real binary on loopback: SIGTERM and SIGHUP shut down as
//! `quit` does (exit 0, `stopped`, storage written, the UI's terminal restored), and a
//! listener that cannot listen is an error with a non-zero exit.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Longest wait for a process to exit once it has been told to.
const EXIT_WAIT: Duration = Duration::from_secs(30);

fn kill(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The exit status of `child`, which must come within [`EXIT_WAIT`] (else it is killed).
fn exit_within(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {EXIT_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A listening node with a feed, a dialing node that has downloaded it, then `sig` to each:
/// both print `stopped` and exit 0, the peer hears the connection close, and the storage
/// opens afterwards with the downloaded blocks in it.
fn signal_stops_run_cleanly(sig: &str) {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lines = blocks(sig, 20, 100);
    let key = append_lines(a_dir.path(), "notes", &lines);
    let (mut a, addr) = Node::listen(a_dir.path(), &[]);
    let mut b = Node::start(b_dir.path(), &["--connect", &addr]);
    a.wait_for("peer_connected", |_| true);
    b.wait_for("peer_connected", |_| true);
    b.wait_synced(&key, lines.len() as u64);

    // The dialer first: it has data to write out.
    kill(sig, b.child.id());
    let status = exit_within(&mut b.child, &format!("run after {sig}"));
    assert_eq!(status.code(), Some(0), "run exits 0 on {sig}: {status}");
    b.wait_for("stopped", |_| true);
    a.wait_for("peer_disconnected", |_| true);
    assert_eq!(cat(b_dir.path(), &key), catted(&lines));

    // The listener, with nobody connected any more.
    kill(sig, a.child.id());
    let status = exit_within(&mut a.child, &format!("listening run after {sig}"));
    assert_eq!(status.code(), Some(0), "run exits 0 on {sig}: {status}");
    a.wait_for("stopped", |_| true);
}

#[test]
fn sigterm_stops_run_as_quit_does() {
    signal_stops_run_cleanly("TERM");
}

/// Warnings and errors among `events`.
fn problems(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| e["type"] == "warning" || e["type"] == "error")
        .collect()
}

#[test]
fn a_clean_exit_leaves_no_lock_file_and_a_crash_one_the_next_run_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("LOCK");
    // One-shot commands.
    let key = append_lines(dir.path(), "notes", &blocks("n", 3, 10));
    assert!(!lock.exists(), "append left its lock file");
    assert_eq!(feeds(dir.path()).len(), 1);
    assert!(!lock.exists(), "feeds left its lock file");

    // `run`, ended by SIGTERM.
    let (mut node, _) = Node::listen(dir.path(), &[]);
    assert!(lock.exists(), "a running process holds the lock file");
    kill("TERM", node.child.id());
    let status = exit_within(&mut node.child, "run after TERM");
    assert_eq!(status.code(), Some(0));
    node.wait_for("stopped", |_| true);
    assert!(!lock.exists(), "run left its lock file after SIGTERM");

    // `run`, ended by the end of its input; it starts with nothing to say about a lock.
    let (mut node, _) = Node::listen(dir.path(), &[]);
    assert!(problems(&node.seen).is_empty(), "{:?}", node.seen);
    node.close_stdin();
    let status = exit_within(&mut node.child, "run after its input ended");
    assert_eq!(status.code(), Some(0));
    assert!(
        !lock.exists(),
        "run left its lock file when its input ended"
    );

    // A crash leaves the file; the next run takes it over as before and removes it at its end.
    let (mut node, _) = Node::listen(dir.path(), &[]);
    kill("KILL", node.child.id());
    exit_within(&mut node.child, "run after KILL");
    assert!(lock.exists(), "a crash cannot remove it");
    let (node, _) = Node::listen(dir.path(), &[]);
    let events = node.quit();
    assert!(problems(&events).is_empty(), "{events:?}");
    assert!(!lock.exists());
    assert_eq!(cat(dir.path(), &key), catted(&blocks("n", 3, 10)));
}

#[test]
fn sighup_stops_run_as_quit_does() {
    signal_stops_run_cleanly("HUP");
}

/// `run --json --listen addr` with stdin kept open (so only the failure can end it): its exit
/// status, stdout and stderr.
fn run_listening_on(addr: &str) -> (ExitStatus, String, String) {
    let storage = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--json", "--storage"])
        .arg(storage.path())
        .args(["--listen", addr])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("feedscope runs");
    let status = exit_within(&mut child, &format!("run --listen {addr}"));
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

#[test]
fn run_on_a_busy_port_fails_and_says_why() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (status, out, err) = run_listening_on(&addr);
    assert!(!status.success(), "exit status {status}; stdout {out}");
    assert_eq!(status.code(), Some(1), "{status}");
    // Scripts still get the event.
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "error" && e["kind"] == "listen"),
        "{out}"
    );
    assert!(!events.iter().any(|e| e["type"] == "listening"), "{out}");
    // And people a line that says what to do.
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains(&addr), "stderr names the address: {err}");
    assert!(
        err.contains("another process listens there"),
        "stderr says what to do: {err}"
    );
    drop(busy);
}

#[test]
fn run_on_something_that_is_not_an_address_fails() {
    let (status, out, err) = run_listening_on("notanaddr");
    assert_eq!(status.code(), Some(1), "{status}; stdout {out}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains("notanaddr"), "{err}");
    assert!(err.contains("HOST:PORT"), "{err}");
    assert!(out.contains(r#""kind":"listen""#), "{out}");
}

/// A tmux server of its own (its socket at a path of ours), running one shell script in a
/// 100×30 pane.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    /// `None` if tmux is not installed.
    fn start(socket: &Path, script: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: this test drives the UI in tmux, which is not installed");
            return None;
        }
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(socket)
            .args(["new-session", "-d", "-x", "100", "-y", "30"])
            .arg(script)
            .env("RUST_BACKTRACE", "0")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux could not start");
        Some(Tmux {
            socket: socket.to_path_buf(),
        })
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// `#{alternate_on} #{mouse_any_flag} #{cursor_flag}` of the pane.
    fn modes(&self) -> String {
        self.tmux(&[
            "display",
            "-p",
            "#{alternate_on} #{mouse_any_flag} #{cursor_flag}",
        ])
        .trim()
        .to_string()
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
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// The contents of `path` once it exists (and is complete: ends with a newline).
fn read_when_written(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "{what} never came");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A UI session in tmux: `args` run as `feedscope ARGS` in `dir`, with its pid, exit code
/// and the terminal settings before and after written to files there.
struct Ui {
    tmux: Tmux,
    dir: tempfile::TempDir,
}

impl Ui {
    fn start(args: &str) -> Option<Ui> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        // The inner shell writes its pid and becomes feedscope, so that pid is the one to
        // signal. Logs and temporary folders stay in `dir`.
        let script = format!(
            "stty -g > {d}/stty-before; \
             XDG_DATA_HOME={d}/data TMPDIR={d} sh -c 'echo $$ > {d}/pid; exec {bin} {args}'; \
             echo $? > {d}/exit; stty -g > {d}/stty-after; sleep 600",
            bin = bin()
        );
        let tmux = Tmux::start(&dir.path().join("tmux"), &script)?;
        Some(Ui { tmux, dir })
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> u32 {
        read_when_written(&self.path("pid"), "the UI's pid")
            .trim()
            .parse()
            .unwrap()
    }

    fn exit_code(&self) -> String {
        read_when_written(&self.path("exit"), "the UI's exit")
            .trim()
            .to_string()
    }

    /// The terminal is as it was: main screen, mouse released, cursor shown, same stty modes
    /// (raw mode off), and no trace of the UI on screen.
    fn assert_restored(&self) {
        let after = read_when_written(&self.path("stty-after"), "stty after the UI");
        let before = std::fs::read_to_string(self.path("stty-before")).unwrap();
        assert_eq!(before, after, "terminal modes not restored (raw mode?)");
        assert_eq!(
            self.tmux.modes(),
            "0 0 1",
            "alternate screen, mouse capture, cursor visible"
        );
        let screen = self.tmux.screen();
        assert!(!screen.contains("Peers"), "UI left on screen:\n{screen}");
    }
}

/// The UI, with mouse capture, connected to a headless peer: `sig` ends it with exit 0, the
/// terminal restored, the peer closed and the storage free.
fn signal_ends_the_ui_cleanly(name: &str, sig: &str) {
    let (peer_dir, ui_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    append_lines(peer_dir.path(), "notes", &blocks(name, 3, 10));
    let (mut peer, addr) = Node::listen(peer_dir.path(), &[]);
    let Some(ui) = Ui::start(&format!(
        "--storage {} --connect {addr}",
        ui_dir.path().display()
    )) else {
        return;
    };
    ui.tmux
        .wait_for("the pending offer", |s| s.contains("pending"));
    assert_eq!(
        ui.tmux.modes(),
        "1 1 0",
        "the UI runs in the alternate screen"
    );
    kill(sig, ui.pid());
    assert_eq!(ui.exit_code(), "0", "exit code after {sig}");
    ui.assert_restored();
    peer.wait_for("peer_disconnected", |_| true);
    peer.quit();
    feeds(ui_dir.path());
}

#[test]
fn sigterm_ends_the_ui_and_restores_the_terminal() {
    signal_ends_the_ui_cleanly("ui-term", "TERM");
}

#[test]
fn sighup_ends_the_ui_and_restores_the_terminal() {
    signal_ends_the_ui_cleanly("ui-hup", "HUP");
}

#[test]
fn sigterm_ends_the_demo_and_removes_its_folder() {
    let Some(ui) = Ui::start("demo") else {
        return;
    };
    ui.tmux
        .wait_for("the demo peers", |s| s.contains("peers 2"));
    let pid = ui.pid();
    let folder = ui.path(&format!("feedscope-demo-{pid}"));
    assert!(folder.exists(), "{} missing", folder.display());
    kill("TERM", pid);
    assert_eq!(ui.exit_code(), "0", "exit code after TERM");
    ui.assert_restored();
    assert!(!folder.exists(), "the demo folder is left behind");
}

#[test]
fn sigterm_ends_the_replay_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("session.jsonl");
    let out = feedscope(
        &[
            "run",
            "--storage",
            dir.path().join("storage").to_str().unwrap(),
            "--record",
            recording.to_str().unwrap(),
        ],
        Some(b"{\"cmd\":\"add_feed\",\"name\":\"notes\"}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let Some(ui) = Ui::start(&format!("replay {}", recording.display())) else {
        return;
    };
    ui.tmux.wait_for("the replay", |s| s.contains("event "));
    kill("TERM", ui.pid());
    assert_eq!(ui.exit_code(), "0", "exit code after TERM");
    ui.assert_restored();
}

#[test]
fn the_ui_on_a_busy_port_restores_the_terminal_and_fails() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let storage = tempfile::tempdir().unwrap();
    let Some(ui) = Ui::start(&format!(
        "--storage {} --listen {addr}",
        storage.path().display()
    )) else {
        return;
    };
    assert_eq!(ui.exit_code(), "1", "exit code");
    ui.assert_restored();
    let screen = ui.tmux.screen().replace('\n', "");
    assert!(
        screen.contains(&format!("feedscope: cannot listen on {addr}")),
        "{screen}"
    );
    drop(busy);
}
