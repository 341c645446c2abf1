//! The JavaScript hypercore 10 side, set up on first use: `tests/js/peer.mjs` as a peer to
//! replicate with (tests and benches), and the JS ↔ JS baseline `tests/js/bench.mjs` (benches).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::child::{JsonChild, OtherLines};
use super::WAIT;

/// Longest a single JS baseline run may take.
const JS_BUDGET: Duration = Duration::from_secs(180);

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// Makes sure `node` runs and the peer's packages are installed (`npm ci`, once, even when
/// several tests start at the same time); panics with what to do if it cannot.
pub fn ensure_js_peer() {
    if let Err(e) = prepare() {
        panic!("{e}");
    }
}

/// Makes sure `node` runs and the peer's packages are installed (`npm ci`, once, even when
/// several processes start at the same time), or says why not.
pub fn prepare() -> Result<(), String> {
    install(&js_dir(), "hypercore", &[])
}

/// Makes sure `node` runs and the packages of the JS folder `dir` are installed, `marker`
/// being one of them: `npm ci` with `npm_args`, once, even when several processes start at the
/// same time. Says why not if it cannot.
pub fn install(dir: &Path, marker: &str, npm_args: &[&str]) -> Result<(), String> {
    let node = Command::new("node").arg("--version").output();
    if !node.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(
            "the interoperability tests need Node.js 18 or newer with npm: install it \
             (e.g. `apt-get install nodejs npm`) and run the tests again"
                .into(),
        );
    }
    let installed = || dir.join("node_modules").join(marker).exists();
    if installed() {
        return Ok(());
    }
    let lock = std::fs::File::create(dir.join(".npm-ci.lock"))
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    lock.lock().map_err(|e| format!("lock for npm ci: {e}"))?;
    if !installed() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .args(npm_args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("npm does not run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm ci in {} failed:\n{}{}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// A running `node tests/js/peer.mjs`; its [`JsonChild`] is reached through it.
pub struct JsPeer {
    proc: JsonChild,
    /// Storage the peer was given by [`JsPeer::spawn`], removed with it.
    _storage: Option<tempfile::TempDir>,
}

impl std::ops::Deref for JsPeer {
    type Target = JsonChild;
    fn deref(&self) -> &JsonChild {
        &self.proc
    }
}

impl std::ops::DerefMut for JsPeer {
    fn deref_mut(&mut self) -> &mut JsonChild {
        &mut self.proc
    }
}

impl JsPeer {
    pub fn start(storage: &Path, args: &[&str]) -> JsPeer {
        ensure_js_peer();
        let mut command = Command::new("node");
        command
            .arg(js_dir().join("peer.mjs"))
            .arg("--storage")
            .arg(storage)
            .args(["--timeout-ms", "60000"])
            .args(args)
            .stderr(Stdio::inherit());
        JsPeer {
            proc: JsonChild::spawn(&mut command, OtherLines::Skip).expect("node runs"),
            _storage: None,
        }
    }

    /// Starts a JS peer on temporary storage of its own, or says why it cannot.
    pub fn spawn(args: &[&str]) -> Result<JsPeer, String> {
        prepare()?;
        let storage = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut command = Command::new("node");
        command
            .arg(js_dir().join("peer.mjs"))
            .arg("--storage")
            .arg(storage.path())
            .args(args)
            .stderr(Stdio::inherit());
        let proc = JsonChild::spawn(&mut command, OtherLines::Skip)
            .map_err(|e| format!("node peer.mjs: {e}"))?;
        Ok(JsPeer {
            proc,
            _storage: Some(storage),
        })
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
        self.proc.send(&cmd).unwrap();
    }

    pub fn wait_for(&mut self, ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(ty, WAIT, pred).unwrap_or_else(|| {
            panic!(
                "JS peer: no {ty} within {WAIT:?}; seen: {:#?}",
                self.proc.tail(20)
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

    /// The first line that satisfies `pred`, with the moment it was read; an error with the
    /// last lines if the peer reports an error or `within` passes first.
    pub fn wait_stamped(
        &mut self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value), String> {
        self.proc.wait_stamped_or_error("peer.mjs", within, pred)
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
        let exited = self.proc.exit_within(WAIT, Duration::from_millis(100));
        assert!(exited.is_some(), "JS peer did not exit");
        self.proc.seen.clone()
    }

    /// Asks the peer to quit and waits up to 10 s for it; it is killed when dropped anyway.
    pub fn stop(mut self) {
        let _ = self.proc.send(&serde_json::json!({"cmd": "quit"}));
        let _ = self
            .proc
            .exit_within(Duration::from_secs(10), Duration::from_millis(0));
    }
}

/// Runs the JS ↔ JS baseline for `blocks` × `size` bytes; the rate in MB/s, or why there is
/// none. `bench.mjs` prints one JSON line with `mb_per_s` and `seconds`, timed from the
/// dialer's connection to its last `synced`.
pub async fn baseline(blocks: usize, size: usize) -> Result<f64, String> {
    tokio::task::block_in_place(prepare)?;
    let (blocks, size) = (blocks.to_string(), size.to_string());
    let args = [
        "bench.mjs",
        "--feeds",
        "1",
        "--blocks",
        &blocks,
        "--block-size",
        &size,
    ];
    let out = run(&js_dir(), "node", &args)
        .await
        .map_err(|e| format!("bench.mjs failed: {e}"))?;
    let bytes = blocks.parse::<f64>().unwrap_or(0.0) * size.parse::<f64>().unwrap_or(0.0);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            let num = |k: &str| v.get(k).and_then(Value::as_f64);
            num("mb_per_s").or_else(|| num("seconds").map(|s| bytes / s / 1e6))
        })
        .ok_or_else(|| "bench.mjs printed no JSON line with mb_per_s or seconds".into())
}

/// Runs `program` in `dir` for at most [`JS_BUDGET`]; its output if it succeeds.
async fn run(dir: &Path, program: &str, args: &[&str]) -> Result<Output, String> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(JS_BUDGET, child)
        .await
        .map_err(|_| format!("no result within {} s", JS_BUDGET.as_secs()))?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!("{} ({first})", out.status))
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
