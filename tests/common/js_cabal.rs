//! Real multifeed 6 peers (hypercore 9 on hypercore-protocol 8: Cabal's wire), set up on first
//! use: `tests/js-cabal/peer.js` speaks one connection and reports in JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
