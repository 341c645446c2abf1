//! The one kit of the tests and the benches (which include this file by its path): the real
//! `feedscope` binary as headless peers on loopback with real storage ([`Node`]), JSON-lines
//! children ([`child`]), in-process engines ([`engines`], on [`kit`], the kit `feedscope soak`
//! and `feedscope demo` are built on), hostile peers ([`evil`]) and the JavaScript peers
//! ([`js`] on hypercore 10, [`js_cabal`] on Cabal's wire).
#![allow(dead_code)]

use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub mod child;
pub mod engines;
pub mod evil;
pub mod js;
pub mod js_cabal;
#[path = "../../src/cli/kit.rs"]
pub mod kit;

use child::{JsonChild, OtherLines};

/// Upper bound for any single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_feedscope")
}

/// Runs a one-shot sub-command and returns its output.
pub fn feedscope(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("feedscope runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Appends blocks (one per line of `lines`) to feed `name`, creating it; returns its key.
pub fn append_lines(storage: &Path, name: &str, lines: &[String]) -> String {
    append_batch(storage, name, lines);
    feed_key(storage, name)
}

/// Appends blocks (one per line of `lines`) to feed `name` in one batch, creating it.
pub fn append_batch(storage: &Path, name: &str, lines: &[String]) {
    append_batch_on(storage, name, lines, &[]);
}

/// Appends blocks to feed `name`, created as a hypercore 9 feed (Cabal's wire); returns its key.
pub fn append_hc9(storage: &Path, name: &str, lines: &[String]) -> String {
    append_batch_on(storage, name, lines, &["--wire", "hc9"]);
    feed_key(storage, name)
}

/// [`append_batch`] with more arguments for `append`.
fn append_batch_on(storage: &Path, name: &str, lines: &[String], more: &[&str]) {
    let mut input = lines.join("\n").into_bytes();
    input.push(b'\n');
    let mut args = vec![
        "append",
        "--storage",
        storage.to_str().unwrap(),
        "--feed",
        name,
    ];
    args.extend_from_slice(more);
    let out = feedscope(&args, Some(&input));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn feeds(storage: &Path) -> Vec<Value> {
    let out = feedscope(
        &["feeds", "--storage", storage.to_str().unwrap(), "--json"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

pub fn feed_key(storage: &Path, name: &str) -> String {
    feeds(storage)
        .into_iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no feed {name}"))["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The blocks of a feed as `cat` prints them (each block followed by a newline).
pub fn cat(storage: &Path, key: &str) -> Vec<u8> {
    let out = feedscope(
        &["cat", "--storage", storage.to_str().unwrap(), "--key", key],
        None,
    );
    assert!(
        out.status.success(),
        "cat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A headless `feedscope run --json` process; its [`JsonChild`] (the process, the events seen)
/// is reached through it.
pub struct Node {
    proc: JsonChild,
    pub storage: PathBuf,
}

impl Deref for Node {
    type Target = JsonChild;
    fn deref(&self) -> &JsonChild {
        &self.proc
    }
}

impl DerefMut for Node {
    fn deref_mut(&mut self) -> &mut JsonChild {
        &mut self.proc
    }
}

impl Node {
    pub fn start(storage: &Path, extra: &[&str]) -> Node {
        Node::start_within(storage, extra, None)
    }

    /// Starts a node that may hold at most `max_files` open files (soft and hard limit), when
    /// given.
    pub fn start_within(storage: &Path, extra: &[&str], max_files: Option<u32>) -> Node {
        let mut args = vec!["run", "--json", "--storage", storage.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut command = match max_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        command
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .stderr(Stdio::inherit());
        Node {
            proc: JsonChild::spawn(&mut command, OtherLines::Panic).expect("feedscope runs"),
            storage: storage.to_path_buf(),
        }
    }

    /// Starts a listening node and returns it with its address.
    pub fn listen(storage: &Path, extra: &[&str]) -> (Node, String) {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut node = Node::start(storage, &args);
        let ev = node.wait_for("listening", |_| true);
        (node, ev["addr"].as_str().unwrap().to_string())
    }

    pub fn send(&mut self, cmd: Value) {
        self.proc.send(&cmd).unwrap();
    }

    /// Waits for an event of type `ty` that satisfies `pred`; panics with what was seen.
    pub fn wait_for(&mut self, ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(ty, WAIT, pred).unwrap_or_else(|| {
            panic!(
                "no {ty} event within {WAIT:?}; seen: {:#?}",
                self.proc.tail(30)
            )
        })
    }

    pub fn wait_for_within(
        &mut self,
        ty: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.proc.wait_event(within, |v| v["type"] == ty && pred(v))
    }

    /// Waits until `n` events of type `ty` satisfy `pred`, for at most `within`; returns the
    /// matching events seen by then (fewer than `n` if time ran out).
    pub fn wait_count(
        &mut self,
        ty: &str,
        n: usize,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.proc.wait_n(n, within, |v| v["type"] == ty && pred(v))
    }

    /// The id the node gave the connection from `addr`.
    pub fn peer_from(&mut self, addr: &str) -> Value {
        self.wait_for("peer_connected", |v| v["addr"] == addr)["peer"].clone()
    }

    /// Waits until this node holds `length` blocks of `key` from some peer.
    pub fn wait_synced(&mut self, key: &str, length: u64) {
        self.wait_for("feed_synced", |v| {
            v["key"] == key && v["length"].as_u64() >= Some(length)
        });
    }

    /// Sends quit and waits for a clean exit; returns every event seen.
    pub fn quit(mut self) -> Vec<Value> {
        self.send(serde_json::json!({"cmd": "quit"}));
        self.proc.close_stdin();
        let status = self.proc.exit_within(WAIT, Duration::from_millis(200));
        let status = status.expect("did not exit after quit");
        assert!(status.success(), "exit status {status}");
        self.proc.seen.clone()
    }
}

/// `n` lines of `size` bytes each, distinct per feed and block.
pub fn blocks(label: &str, n: usize, size: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let seed = format!("{label}:{i}:");
            seed.chars().cycle().take(size).collect()
        })
        .collect()
}

/// What `cat` prints for these blocks.
pub fn catted(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}
