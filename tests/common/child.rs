//! A child process that reads JSON commands on stdin and writes JSON lines on stdout: the
//! `feedscope run --json` nodes and the JavaScript peer are both driven through it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What to do with a stdout line that is not JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OtherLines {
    /// Panic: the child promises JSON lines only.
    Panic,
    /// Skip it (log lines, say).
    Skip,
}

/// A running child with its JSON lines, each stamped with the moment it was read. Killed when
/// dropped.
pub struct JsonChild {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<(Instant, Value)>,
    /// Every line received so far, in order.
    pub seen: Vec<Value>,
    /// When each line of `seen` was read.
    stamps: Vec<Instant>,
}

impl JsonChild {
    /// Starts `command` with stdin and stdout piped (stderr as `command` has it).
    pub fn spawn(command: &mut Command, other: OtherLines) -> std::io::Result<JsonChild> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let v: Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) if other == OtherLines::Skip => continue,
                    Err(e) => panic!("not a JSON line: {line:?}: {e}"),
                };
                if tx.send((at, v)).is_err() {
                    break;
                }
            }
        });
        Ok(JsonChild {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stamps: Vec::new(),
        })
    }

    /// Writes `cmd` as one line to the child's stdin.
    pub fn send(&mut self, cmd: &Value) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}")?;
        stdin.flush()
    }

    /// Closes the child's stdin: the end of its input.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    fn receive(&mut self, within: Duration) -> bool {
        match self.lines.recv_timeout(within) {
            Ok((at, v)) => {
                self.seen.push(v);
                self.stamps.push(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The first line, seen before or received within `within`, that satisfies `pred`, with
    /// the moment it was read.
    pub fn wait_stamped(
        &mut self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(Instant, Value)> {
        let mut from = 0;
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.seen[from..].iter().position(&pred) {
                let i = from + i;
                return Some((self.stamps[i], self.seen[i].clone()));
            }
            from = self.seen.len();
            let left = deadline.checked_duration_since(Instant::now())?;
            if !self.receive(left) {
                return None;
            }
        }
    }

    /// [`JsonChild::wait_stamped`] for a child that reports failure as `{"type":"error",
    /// "message":…}`: that line, or `within` passing first, is an error naming `who` (with
    /// the last lines in the second case).
    pub fn wait_stamped_or_error(
        &mut self,
        who: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value), String> {
        match self.wait_stamped(within, |v| pred(v) || v["type"] == "error") {
            Some((at, v)) if pred(&v) => Ok((at, v)),
            Some((_, v)) => Err(format!("{who}: {}", v["message"])),
            None => Err(format!(
                "{who} ended or timed out; last lines: {:?}",
                self.tail(3)
            )),
        }
    }

    /// [`JsonChild::wait_stamped`] without the moment.
    pub fn wait_event(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.wait_stamped(within, pred).map(|(_, v)| v)
    }

    /// Waits until `n` lines satisfy `pred`, for at most `within`; returns the matching lines
    /// seen by then (fewer than `n` if time ran out).
    pub fn wait_n(
        &mut self,
        n: usize,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<Value> = self.seen.iter().filter(|v| pred(v)).cloned().collect();
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return found;
            };
            if found.len() >= n || !self.receive(left) {
                return found;
            }
        }
    }

    /// Waits at most `within` for the child to exit, then takes the lines it wrote until they
    /// pause for `quiet`.
    pub fn exit_within(&mut self, within: Duration, quiet: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while self.receive(quiet) {}
        status
    }

    /// The last `n` lines seen.
    pub fn tail(&self, n: usize) -> Vec<Value> {
        self.seen[self.seen.len().saturating_sub(n)..].to_vec()
    }
}

impl Drop for JsonChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
