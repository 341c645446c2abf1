//! The JavaScript hypercore 10 side: the JS ↔ JS baseline (`tests/js/bench.mjs`) and single
//! `tests/js/peer.mjs` processes to replicate with feedscope.
//!
//! `node bench.mjs --feeds 1 --blocks N --block-size S` prints one JSON line with `mb_per_s` and
//! `seconds`, timed from the dialer's connection to its last `synced`. Anything else is reported
//! as "n/a" with the reason.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Longest a single JS run may take.
const JS_BUDGET: Duration = Duration::from_secs(180);

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Checks that node works and that `tests/js` has its packages, installing them if not.
async fn prepare(dir: &Path) -> Result<(), String> {
    run(dir, "node", &["--version"])
        .await
        .map_err(|e| format!("node is not usable: {e}"))?;
    if !dir.join("node_modules").exists() {
        run(dir, "npm", &["ci", "--no-audit", "--no-fund"])
            .await
            .map_err(|e| format!("npm ci in tests/js failed: {e}"))?;
    }
    Ok(())
}

/// Runs the baseline for `blocks` × `size` bytes; the rate in MB/s, or why there is none.
pub async fn baseline(blocks: usize, size: usize) -> Result<f64, String> {
    let dir = js_dir();
    prepare(&dir).await?;
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
    let out = run(&dir, "node", &args)
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

async fn run(dir: &Path, program: &str, args: &[&str]) -> Result<Output, String> {
    let child = Command::new(program)
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

/// A running `peer.mjs` (multifeed on JS hypercore 10), with its JSON lines stamped as they
/// arrive. Killed when dropped.
pub struct JsPeer {
    child: Child,
    lines: mpsc::UnboundedReceiver<(Instant, Value)>,
    seen: Vec<(Instant, Value)>,
    _storage: tempfile::TempDir,
}

impl JsPeer {
    /// Starts `node peer.mjs --storage TMP ARGS…`.
    pub async fn spawn(args: &[&str]) -> Result<JsPeer, String> {
        let dir = js_dir();
        prepare(&dir).await?;
        let storage = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new("node")
            .arg("peer.mjs")
            .arg("--storage")
            .arg(storage.path())
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("node peer.mjs: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send((at, v)).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(JsPeer {
            child,
            lines,
            seen: Vec::new(),
            _storage: storage,
        })
    }

    /// The first line (seen before or still to come) that satisfies `pred`, with its arrival
    /// time; an error with the last lines if the peer reports an error, exits, or `within`
    /// passes first.
    pub async fn wait(
        &mut self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value), String> {
        if let Some(at) = self.seen.iter().position(|(_, v)| pred(v)) {
            return Ok(self.seen.remove(at));
        }
        let deadline = Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline.into(), self.lines.recv()).await;
            let (at, v) = match line {
                Ok(Some(line)) => line,
                Ok(None) => return Err(format!("peer.mjs exited; last lines: {}", self.tail())),
                Err(_) => return Err(format!("peer.mjs timed out; last lines: {}", self.tail())),
            };
            if pred(&v) {
                return Ok((at, v));
            }
            if v["type"] == "error" {
                return Err(format!("peer.mjs: {}", v["message"]));
            }
            self.seen.push((at, v));
        }
    }

    fn tail(&self) -> String {
        let from = self.seen.len().saturating_sub(3);
        let tail: Vec<String> = self.seen[from..]
            .iter()
            .map(|(_, v)| v.to_string())
            .collect();
        tail.join(" ")
    }

    /// Asks the peer to quit and waits a while for it; kills it otherwise.
    pub async fn quit(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
