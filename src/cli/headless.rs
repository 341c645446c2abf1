//! `feedscope run`: the headless front end. Commands come in as JSON lines, events go out one
//! per line, as JSON or as text.
//!
//! [`serve`] takes the engine, the reader of commands and the writer of events, so that a test
//! drives it in process; [`run`] plugs it into stdin, stdout and the quit signals.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};

use feedscope::engine::{self, Config, Engine};
use feedscope::event::{Command, Event, ProblemKind, SharedMeta};
use feedscope::record::Recorder;
use feedscope::wire::{FeedKey, FeedMeta};

use super::signals::QuitSignals;

/// Runs an engine on `config` with commands from stdin and events on stdout, until `quit`, the
/// end of stdin or a quit signal.
pub(crate) async fn run(
    config: Config,
    json: bool,
    skip: Vec<&'static str>,
    recorder: Option<Recorder>,
) -> Result<()> {
    let mut signals = QuitSignals::catch()?;
    let engine = engine::start(config).await?;
    grow_pipe(&std::io::stdout());
    let input = std::io::BufReader::new(std::io::stdin());
    serve(
        engine,
        input,
        std::io::stdout(),
        json,
        skip,
        recorder,
        signals.recv(),
    )
    .await
}

/// Where `out` is a pipe, asks the kernel for a 1 MiB one (the most an unprivileged process
/// gets by default) rather than 64 KiB: a busy hub prints gigabytes of lines, and each time the
/// pipe is full the printer and the reader on the other end take turns sleeping.
fn grow_pipe(out: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl with F_SETPIPE_SZ takes an int and touches no memory of ours; on a
    // descriptor that is not a pipe it fails with EBADF, which changes nothing.
    unsafe {
        libc::fcntl(out.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

/// Runs `engine` until it stops: each line of `input` is a command, each event a line of
/// `output` unless its type is in `skip` (and an entry of `recorder`, whatever its type). The end of `input` and `quit` (a signal, say) ask
/// for the same clean stop as `{"cmd":"quit"}`. Fails after the last event if the engine could
/// not listen.
pub(crate) async fn serve<R, W>(
    mut engine: Engine,
    input: R,
    output: W,
    json: bool,
    skip: Vec<&'static str>,
    mut recorder: Option<Recorder>,
    quit: impl Future<Output = ()>,
) -> Result<()>
where
    R: BufRead + Send + 'static,
    W: Write + Send + 'static,
{
    let output = Arc::new(Mutex::new(output));
    let commands = engine.commands.clone();
    let errors = output.clone();
    // A thread rather than a runtime task: a read of stdin that never returns (after a signal)
    // must not hold up the runtime's shutdown, and the process's exit ends it.
    std::thread::spawn(move || {
        for line in input.lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    let quit = cmd == Command::Quit;
                    let _ = commands.send(cmd);
                    if quit {
                        return;
                    }
                }
                Err(e) => print_event(
                    &errors,
                    &Event::Error {
                        peer: None,
                        kind: ProblemKind::Command,
                        message: format!("cannot read command {line:?}: {e}"),
                    },
                    json,
                ),
            }
        }
        let _ = commands.send(Command::Quit);
    });
    tokio::pin!(quit);
    let mut quitting = false;
    let mut listen_failure = None;
    let mut printer = Printer::new(json, skip);
    'events: loop {
        let first = tokio::select! {
            ev = engine.events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            () = &mut quit, if !quitting => {
                // The same path as {"cmd":"quit"}: peers closed, storage written, `stopped`.
                quitting = true;
                let _ = engine.commands.send(Command::Quit);
                continue;
            }
        };
        // The events already waiting go out in one write: a hub with a thousand peers reports
        // hundreds of thousands of offers.
        let mut next = Some(first);
        let mut stopped = false;
        let mut taken = 0;
        while let Some(ev) = next.take() {
            if let Event::Error {
                peer: None,
                kind,
                message,
            } = &ev
            {
                if matches!(kind, ProblemKind::Listen | ProblemKind::Metrics) {
                    listen_failure = Some(message.clone());
                }
            }
            stopped = ev == Event::Stopped;
            if let Some(r) = recorder.as_mut() {
                if let Err(e) = r.write(&ev) {
                    eprintln!("feedscope: recording stopped: {e}");
                    recorder = None;
                }
            }
            printer.add(&ev);
            taken += 1;
            if !stopped && taken < EVENTS_PER_WRITE && printer.gathered() < BYTES_PER_WRITE {
                next = engine.events.try_recv().ok();
            }
        }
        printer.write_to(&output);
        if stopped {
            break 'events;
        }
    }
    let _ = engine.done.await;
    if let Some(message) = listen_failure {
        bail!("{message}");
    }
    Ok(())
}

/// Events written out together at most, so that a steady stream still reaches the reader.
const EVENTS_PER_WRITE: usize = 256;

/// Bytes of lines after which they are written out, fewer events or not: a hub's
/// `offer_sent` lines are tens of kilobytes each (a thousand peers told of the same new
/// feeds), and gathering 256 of them grew the buffer by megabytes, in fresh pages the kernel
/// had to fault in and clear, at every write (most of the tenth of a hub's CPU that its
/// printer took at fan-in).
const BYTES_PER_WRITE: usize = 1 << 20;

/// The most the line buffer keeps between writes: a gathering past [`BYTES_PER_WRITE`] by
/// one event, even a first manifest of ten thousand keys, stays within it.
const LINES_KEPT: usize = 4 << 20;

/// Lines of events gathered for one write.
struct Printer {
    json: bool,
    /// Event types not printed.
    skip: Vec<&'static str>,
    lines: Vec<u8>,
    /// The last offer list written, shared by the `offer_sent` of every peer offered it, and
    /// its JSON from `"keys"` on: a hub tells a thousand peers of the same new feeds.
    offer: Option<(SharedMeta, Vec<FeedKey>, Vec<u8>)>,
}

impl Printer {
    fn new(json: bool, skip: Vec<&'static str>) -> Self {
        Printer {
            json,
            skip,
            lines: Vec::new(),
            offer: None,
        }
    }

    /// Adds the line of `ev`.
    fn add(&mut self, ev: &Event) {
        if self.skip.contains(&ev.type_name()) {
            return;
        }
        if !self.json {
            self.lines.extend_from_slice(text_line(ev).as_bytes());
        } else if let Event::OfferSent { peer, keys, meta } = ev {
            let known = self
                .offer
                .as_ref()
                .is_some_and(|(m, k, _)| Arc::ptr_eq(m, meta) && k == keys);
            if !known {
                #[derive(serde::Serialize)]
                struct Rest<'a> {
                    keys: &'a [FeedKey],
                    meta: &'a BTreeMap<FeedKey, FeedMeta>,
                }
                let rest = serde_json::to_vec(&Rest { keys, meta }).expect("offers serialise");
                self.offer = Some((Arc::clone(meta), keys.clone(), rest));
            }
            let (_, _, rest) = self.offer.as_ref().expect("just set");
            // The fields in the order the derived form writes them (`tests/schema.rs`).
            self.lines
                .extend_from_slice(b"{\"type\":\"offer_sent\",\"peer\":");
            serde_json::to_writer(&mut self.lines, peer).expect("a peer id serialises");
            self.lines.push(b',');
            self.lines.extend_from_slice(&rest[1..]);
        } else {
            serde_json::to_writer(&mut self.lines, ev).expect("events serialise");
        }
        self.lines.push(b'\n');
    }

    /// Writes the lines gathered and flushes them.
    fn write_to(&mut self, output: &Mutex<impl Write>) {
        let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(&self.lines);
        let _ = out.flush();
        self.lines.clear();
        if self.lines.capacity() > LINES_KEPT {
            self.lines.shrink_to(LINES_KEPT);
        }
    }

    /// Bytes of lines gathered and not yet written.
    fn gathered(&self) -> usize {
        self.lines.len()
    }
}

fn print_event(output: &Mutex<impl Write>, ev: &Event, json: bool) {
    let line = if json {
        serde_json::to_string(ev).expect("events serialise")
    } else {
        text_line(ev)
    };
    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn text_line(ev: &Event) -> String {
    let v = serde_json::to_value(ev).expect("events serialise");
    let mut parts = Vec::new();
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let shown = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(a) if a.len() > 3 => format!("[{} items]", a.len()),
                other => other.to_string(),
            };
            if k == "type" {
                parts.insert(0, shown);
            } else {
                parts.push(format!("{k}={shown}"));
            }
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};
    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::cli::kit;

    /// A writer whose lines the test reads back.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
        fn json(&self) -> Vec<Value> {
            self.text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    /// A reader that blocks until its sender is dropped, like a terminal nobody types into.
    struct Silent(std::sync::mpsc::Receiver<()>);

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(0)
        }
    }

    async fn engine(dir: &tempfile::TempDir) -> Engine {
        engine::start(kit::config(dir.path(), false, vec![]))
            .await
            .unwrap()
    }

    async fn serve_within(
        engine: Engine,
        input: impl BufRead + Send + 'static,
        out: &Lines,
        json: bool,
        quit: impl Future<Output = ()>,
    ) {
        let served = serve(engine, input, out.clone(), json, Vec::new(), None, quit);
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("served and stopped within 30 s")
            .unwrap();
    }

    #[test]
    fn lines_gathered_for_one_write_are_the_events_json_whatever_is_shared() {
        let key = |b: u8| FeedKey([b; 32]);
        let shared: Arc<BTreeMap<FeedKey, FeedMeta>> = Arc::new(BTreeMap::from([
            (
                key(1),
                serde_json::json!({"name": "a \"quoted\" feed", "length": 3}).into(),
            ),
            (key(2), serde_json::json!(null).into()),
        ]));
        let offer = |peer, keys: Vec<FeedKey>, meta: &Arc<_>| Event::OfferSent {
            peer,
            keys,
            meta: Arc::clone(meta),
        };
        let events = vec![
            offer(1, vec![key(1), key(2)], &shared),
            offer(2, vec![key(1), key(2)], &shared),
            Event::PeerDisconnected {
                peer: 2,
                reason: "gone".into(),
            },
            // The same map with other keys, and another map with the same keys.
            offer(3, vec![key(2)], &shared),
            offer(4, vec![key(1), key(2)], &Arc::new(BTreeMap::new())),
            offer(500, vec![], &shared),
        ];
        let mut printer = Printer::new(true, Vec::new());
        let mut want = String::new();
        for ev in &events {
            printer.add(ev);
            want.push_str(&serde_json::to_string(ev).unwrap());
            want.push('\n');
        }
        let out = Mutex::new(Vec::new());
        printer.write_to(&out);
        assert_eq!(String::from_utf8(out.into_inner().unwrap()).unwrap(), want);
    }

    #[tokio::test]
    async fn a_bad_command_line_is_a_command_error_and_quit_stops() {
        let dir = tempfile::tempdir().unwrap();
        let input = Cursor::new(b"not json\n\n{\"cmd\":\"quit\"}\n{\"cmd\":\"quit\"}\n".to_vec());
        let out = Lines::default();
        serve_within(
            engine(&dir).await,
            input,
            &out,
            true,
            std::future::pending(),
        )
        .await;
        let events = out.json();
        let error = &events[0];
        assert_eq!(error["type"], "error", "{events:?}");
        assert_eq!(error["kind"], "command");
        assert!(error.get("peer").is_none(), "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with("cannot read command \"not json\": "),
            "{message}"
        );
        assert_eq!(
            events.last().unwrap(),
            &serde_json::json!({"type": "stopped"})
        );
        let errors = events.iter().filter(|v| v["type"] == "error").count();
        assert_eq!(errors, 1, "{events:?}");
    }

    #[tokio::test]
    async fn the_end_of_input_stops_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let out = Lines::default();
        serve_within(
            engine(&dir).await,
            Cursor::new(Vec::new()),
            &out,
            false,
            std::future::pending(),
        )
        .await;
        assert_eq!(out.text().lines().last(), Some("stopped"));
    }

    #[tokio::test]
    async fn a_quit_signal_stops_the_engine_while_input_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let (_typing, silence) = std::sync::mpsc::channel();
        let input = std::io::BufReader::new(Silent(silence));
        let out = Lines::default();
        let quit = tokio::time::sleep(Duration::from_millis(100));
        serve_within(engine(&dir).await, input, &out, true, quit).await;
        assert_eq!(out.json().last().unwrap()["type"], "stopped");
    }

    #[tokio::test]
    async fn a_listen_failure_fails_after_its_error_event() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: Some("not an address".into()),
            ..kit::config(dir.path(), false, vec![])
        };
        let engine = engine::start(config).await.unwrap();
        let out = Lines::default();
        let served = serve(
            engine,
            Cursor::new(Vec::new()),
            out.clone(),
            true,
            Vec::new(),
            None,
            std::future::pending(),
        );
        let result = tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .unwrap();
        assert!(result.is_err());
        assert!(out
            .json()
            .iter()
            .any(|v| v["type"] == "error" && v["kind"] == "listen"));
    }
}
