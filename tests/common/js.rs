//! The JavaScript hypercore 10 peer in `tests/js`, set up on first use.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::WAIT;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// Makes sure `node` runs and the peer's packages are installed (`npm ci`, once, even when
/// several tests start at the same time).
pub fn ensure_js_peer() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the interoperability tests need Node.js 18 or newer with npm: install it \
         (e.g. `apt-get install nodejs npm`) and run the tests again"
    );
    let dir = js_dir();
    if dir.join("node_modules").join("hypercore").exists() {
        return;
    }
    let lock = std::fs::File::create(dir.join(".npm-ci.lock")).expect("tests/js is writable");
    lock.lock().expect("lock for npm ci");
    if !dir.join("node_modules").join("hypercore").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .current_dir(&dir)
            .output()
            .expect("npm runs");
        assert!(
            out.status.success(),
            "npm ci in tests/js failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A running `node tests/js/peer.mjs`.
pub struct JsPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    pub seen: Vec<Value>,
}

impl JsPeer {
    pub fn start(storage: &Path, args: &[&str]) -> JsPeer {
        ensure_js_peer();
        let mut child = Command::new("node")
            .arg(js_dir().join("peer.mjs"))
            .arg("--storage")
            .arg(storage)
            .args(["--timeout-ms", "60000"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        JsPeer {
            stdin: child.stdin.take(),
            child,
            events: rx,
            seen: Vec::new(),
        }
    }

    /// Starts a listening JS peer; returns it with its address.
    pub fn listen(storage: &Path, args: &[&str]) -> (JsPeer, String) {
        let mut all = vec!["--listen", "0"];
        all.extend_from_slice(args);
        let mut p = JsPeer::start(storage, &all);
        let port = p.wait_for("listening", |_| true)["port"].as_u64().unwrap();
        (p, format!("127.0.0.1:{port}"))
    }

    pub fn send(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn wait_for(&mut self, ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(ty, WAIT, pred).unwrap_or_else(|| {
            panic!(
                "JS peer: no {ty} within {WAIT:?}; seen: {:#?}",
                &self.seen[self.seen.len().saturating_sub(20)..]
            )
        })
    }

    pub fn wait_for_within(
        &mut self,
        ty: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        super::wait_event(&self.events, &mut self.seen, within, |v| {
            v["type"] == ty && pred(v)
        })
    }

    /// Keys of the feeds it created, by name.
    pub fn feed_key(&mut self, name: &str) -> String {
        self.wait_for("feed_created", |v| v["name"] == name)["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn quit(mut self) -> Vec<Value> {
        self.send(serde_json::json!({"cmd": "quit"}));
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "JS peer did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        while let Ok(v) = self.events.recv_timeout(Duration::from_millis(100)) {
            self.seen.push(v);
        }
        self.seen.clone()
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The digest the JS peer prints for these blocks: sha256 of them concatenated.
pub fn digest(blocks: &[String]) -> String {
    let mut h = Sha256::new();
    for b in blocks {
        h.update(b.as_bytes());
    }
    hex::encode(h.finalize())
}
