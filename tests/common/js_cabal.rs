//! Real multifeed 6 peers (hypercore 9 on hypercore-protocol 8: Cabal's wire), set up on first
//! use: `tests/js-cabal/peer.js` speaks one connection and reports in JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::child::{JsonChild, OtherLines};
use super::WAIT;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js-cabal")
}

/// A running `node tests/js-cabal/peer.js`.
pub struct CabalPeer {
    proc: JsonChild,
}

impl CabalPeer {
    /// Starts a peer with `args` (see `peer.js`), installing its packages first if needed.
    /// Their install scripts are skipped: sodium-native ships prebuilt binaries.
    pub fn start(args: &[&str]) -> CabalPeer {
        super::js::install(&dir(), "multifeed", &["--ignore-scripts"])
            .unwrap_or_else(|e| panic!("{e}"));
        let mut command = Command::new("node");
        command
            .arg(dir().join("peer.js"))
            .args(["--timeout-ms", "60000"])
            .args(args)
            .stderr(Stdio::inherit());
        CabalPeer {
            proc: JsonChild::spawn(&mut command, OtherLines::Skip).expect("node runs"),
        }
    }

    /// Starts a peer with `args` for a benchmark: no timeout of its own below `budget`, and an
    /// error instead of a panic if it cannot start.
    pub fn spawn(args: &[&str], budget: Duration) -> Result<CabalPeer, String> {
        super::js::install(&dir(), "multifeed", &["--ignore-scripts"])?;
        let mut command = Command::new("node");
        command
            .arg(dir().join("peer.js"))
            .args(["--timeout-ms", &budget.as_millis().to_string()])
            .args(args)
            .stderr(Stdio::inherit());
        let proc = JsonChild::spawn(&mut command, OtherLines::Skip)
            .map_err(|e| format!("node peer.js: {e}"))?;
        Ok(CabalPeer { proc })
    }

    /// The first line that satisfies `pred`, with the moment it was read; an error with the
    /// last lines if the peer reports an error or `within` passes first.
    pub fn wait_stamped(
        &mut self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value), String> {
        self.proc.wait_stamped_or_error("peer.js", within, pred)
    }

    /// Starts a listening peer; returns it with its address.
    pub fn listen(args: &[&str]) -> (CabalPeer, String) {
        let mut all = vec!["--listen", "0"];
        all.extend_from_slice(args);
        let mut p = CabalPeer::start(&all);
        let port = p.wait_for("listening")["port"].as_u64().unwrap();
        (p, format!("127.0.0.1:{port}"))
    }

    /// The next line of type `ty`; panics with what was seen if an error or nothing comes.
    pub fn wait_for(&mut self, ty: &str) -> Value {
        let found = self
            .proc
            .wait_event(WAIT, |v| v["type"] == ty || v["type"] == "error");
        match found {
            Some(v) if v["type"] == ty => v,
            other => panic!(
                "multifeed 6 peer: no {ty} within {WAIT:?} ({other:?}); seen: {:#?}",
                self.proc.tail(20)
            ),
        }
    }

    /// Waits for the peer to exit after the connection ended.
    pub fn wait_exit(&mut self) {
        let exited = self.proc.exit_within(WAIT, Duration::from_millis(0));
        assert!(exited.is_some(), "multifeed 6 peer did not exit");
    }
}

/// A multifeed 6 peer listening on loopback with one writer feed of `blocks` × `size` bytes
/// (the blocks of `label`, as the kit makes them); returns it with its address and the feed's
/// key once it is ready.
pub fn serve(
    label: &str,
    blocks: usize,
    size: usize,
    budget: Duration,
) -> Result<(CabalPeer, String, String), String> {
    let (count, bytes) = (blocks.to_string(), size.to_string());
    let args = [
        "--listen",
        "0",
        "--blocks",
        &count,
        "--block-size",
        &bytes,
        "--label",
        label,
    ];
    let mut js = CabalPeer::spawn(&args, budget)?;
    let (_, feed) = js.wait_stamped(budget, |v| v["type"] == "feed")?;
    let (_, listening) = js.wait_stamped(budget, |v| v["type"] == "listening")?;
    let key = feed["key"].as_str().unwrap_or_default().to_string();
    Ok((js, format!("127.0.0.1:{}", listening["port"]), key))
}

/// A multifeed 6 peer dials `addr` and downloads feed `key` of `blocks` × `size` bytes, which
/// must be `label`'s blocks as the kit makes them. Returns the seconds from the moment its
/// `connected` line (the TCP connection is up) is read to the moment its `synced` line is
/// read; `peer.js --digest` prints that once it holds every block and has hashed them in order
/// as they arrived. The digest is checked before the time is returned.
pub fn download(
    addr: &str,
    key: &str,
    (label, blocks, size): (&str, usize, usize),
    budget: Duration,
) -> Result<f64, String> {
    let expect = format!("{key}:{blocks}");
    let args = ["--connect", addr, "--expect", &expect, "--digest"];
    let mut js = CabalPeer::spawn(&args, budget)?;
    let (t0, _) = js.wait_stamped(budget, |v| v["type"] == "connected")?;
    let (end, synced) = js.wait_stamped(budget, |v| {
        v["type"] == "synced" && v["key"] == key && v["length"] == blocks
    })?;
    // `peer.js --block-size` makes a label's blocks as the kit does.
    if synced["digest"] != super::engines::expected_digest(label, blocks, size).as_str() {
        return Err(format!(
            "multifeed 6 holds other bytes than were sent: {synced}"
        ));
    }
    Ok(end.saturating_duration_since(t0).as_secs_f64())
}

/// The JS ↔ JS baseline on Cabal's wire: two multifeed 6 processes on loopback, one serving a
/// feed of `blocks` × `size` bytes and the other dialing it and downloading, timed as
/// [`download`] times it. Returns the rate in MB/s.
pub fn baseline(blocks: usize, size: usize, budget: Duration) -> Result<f64, String> {
    let (_server, addr, key) = serve("bulk", blocks, size, budget)?;
    let secs = download(&addr, &key, ("bulk", blocks, size), budget)?;
    Ok((blocks * size) as f64 / secs / 1e6)
}
