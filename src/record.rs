//! Recordings: a versioned header line, then one `{"t": seconds, "event": Event}` per line.
//!
//! Lines are flushed as they are written, so a crash keeps what happened. Reading stops at
//! the first bad line with an error naming it, and returns everything before it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::event::{Event, PeerId, StoppedBy};

/// Format version written in the header; readers refuse newer majors.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always `"feedscope-recording"`.
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// feedscope version that wrote it.
    pub feedscope: String,
    /// Seconds since the Unix epoch at the start.
    pub started: u64,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Seconds since the recording started (monotonic).
    pub t: f64,
    /// The event.
    pub event: Event,
}

/// Why a recording could not be (fully) read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be opened or read.
    #[error("cannot read recording {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The first line is not a feedscope recording header.
    #[error("{0} is not a feedscope recording (line 1: {1})")]
    NotARecording(PathBuf, String),
    /// Written by a newer, incompatible feedscope.
    #[error("{0} is recording format {1}; this feedscope reads format {FORMAT_VERSION}")]
    TooNew(PathBuf, u32),
    /// A line in the middle is damaged (or the last one is cut).
    #[error("{path}, line {line}: {reason}; the {good} events before it were read")]
    BadLine {
        /// File.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
        /// Events read before the bad line.
        good: usize,
    },
}

/// Writes events to a recording as they happen.
#[derive(Debug)]
pub struct Recorder {
    out: BufWriter<File>,
    started: Instant,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let header = Header {
            format: "feedscope-recording".into(),
            version: FORMAT_VERSION,
            feedscope: env!("CARGO_PKG_VERSION").into(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(Recorder {
            out,
            started: Instant::now(),
        })
    }

    /// Appends one event, stamped with the time since the start, and flushes it.
    pub fn write(&mut self, event: &Event) -> std::io::Result<()> {
        let entry = Entry {
            t: self.started.elapsed().as_secs_f64(),
            event: event.clone(),
        };
        serde_json::to_writer(&mut self.out, &entry)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Reads a recording: its header and entries, and the error that stopped reading, if any.
pub fn read(path: &Path) -> Result<(Header, Vec<Entry>, Option<RecordError>), RecordError> {
    let file = File::open(path).map_err(|e| RecordError::Io(path.into(), e))?;
    let mut lines = BufReader::new(file).lines();
    let first = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(RecordError::Io(path.into(), e)),
        None => return Err(RecordError::NotARecording(path.into(), "empty file".into())),
    };
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| RecordError::NotARecording(path.into(), e.to_string()))?;
    if header.format != "feedscope-recording" {
        return Err(RecordError::NotARecording(
            path.into(),
            format!("format {:?}", header.format),
        ));
    }
    if header.version > FORMAT_VERSION {
        return Err(RecordError::TooNew(path.into(), header.version));
    }
    let mut entries = Vec::new();
    for (i, line) in lines.enumerate() {
        let bad = |reason: String, good: usize| RecordError::BadLine {
            path: path.into(),
            line: i + 2,
            reason,
            good,
        };
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                return Ok((
                    header,
                    entries.clone(),
                    Some(bad(e.to_string(), entries.len())),
                ))
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(&line) {
            Ok(e) => entries.push(e),
            Err(e) => {
                let n = entries.len();
                return Ok((header, entries, Some(bad(e.to_string(), n))));
            }
        }
    }
    Ok((header, entries, None))
}

fn short(k: &crate::wire::FeedKey) -> String {
    k.short()
}

fn count(keys: &[crate::wire::FeedKey]) -> String {
    match keys {
        [] => "none".into(),
        [k] => short(k),
        ks if ks.len() <= 3 => ks.iter().map(short).collect::<Vec<_>>().join(", "),
        ks => format!("{} keys", ks.len()),
    }
}

/// The exchange of each peer as a Mermaid sequence diagram.
pub fn sequence(entries: &[Entry]) -> String {
    let mut per_peer: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
    let mut names: BTreeMap<PeerId, String> = BTreeMap::new();
    let mut first_data: std::collections::BTreeSet<(PeerId, crate::wire::FeedKey)> =
        Default::default();
    for e in entries {
        let t = e.t;
        let (peer, line) = match &e.event {
            Event::PeerConnected {
                peer,
                addr,
                initiator,
                ..
            } => {
                names.insert(*peer, addr.clone());
                (
                    *peer,
                    format!(
                        "Note over us,peer: {t:.3}s connected ({})",
                        if *initiator { "we dialed" } else { "it dialed" }
                    ),
                )
            }
            Event::HandshakeReceived {
                peer,
                client,
                version,
            } => (*peer, format!("peer->>us: HANDSHAKE {client} {version}")),
            Event::OfferSent { peer, keys, .. } => {
                (*peer, format!("us->>peer: MANIFEST {}", count(keys)))
            }
            Event::OfferReceived { peer, keys, .. } => {
                (*peer, format!("peer->>us: MANIFEST {}", count(keys)))
            }
            Event::OfferPending { peer, keys } => (
                *peer,
                format!("Note over us: waiting for a decision on {}", count(keys)),
            ),
            Event::Decision {
                peer,
                key,
                approved,
                by,
            } => (
                *peer,
                format!(
                    "Note over us: {} {}{}",
                    if *approved { "approved" } else { "declined" },
                    short(key),
                    if by.is_person() {
                        String::new()
                    } else {
                        format!(" ({by})")
                    }
                ),
            ),
            Event::RequestSent { peer, keys } => {
                (*peer, format!("us->>peer: REQUEST_FEEDS {}", count(keys)))
            }
            Event::RequestReceived { peer, keys } => {
                (*peer, format!("peer->>us: REQUEST_FEEDS {}", count(keys)))
            }
            Event::ReplicateSent { peer, keys } => {
                (*peer, format!("us->>peer: REPLICATE_FEEDS {}", count(keys)))
            }
            Event::ReplicateReceived { peer, keys } => {
                (*peer, format!("peer->>us: REPLICATE_FEEDS {}", count(keys)))
            }
            Event::FeedProgress { peer, key, .. } if first_data.insert((*peer, *key)) => (
                *peer,
                format!("peer->>us: first data of {} at {t:.3}s", short(key)),
            ),
            Event::FeedSynced { peer, key, length } => (
                *peer,
                format!(
                    "Note over us: {} synced at {length} blocks ({t:.3}s)",
                    short(key)
                ),
            ),
            Event::FeedStopped { peer, key, by } => (
                *peer,
                match by {
                    StoppedBy::Us => format!("us->>peer: close {}", short(key)),
                    StoppedBy::Peer => format!("peer->>us: close {}", short(key)),
                },
            ),
            Event::Warning {
                peer: Some(peer),
                kind,
                message,
            }
            | Event::Error {
                peer: Some(peer),
                kind,
                message,
            } => (
                *peer,
                format!(
                    "Note over us,peer: {} {kind}: {}",
                    if matches!(e.event, Event::Error { .. }) {
                        "ERROR"
                    } else {
                        "warning"
                    },
                    message.replace([';', '#'], ",")
                ),
            ),
            Event::PeerDisconnected { peer, reason } => (
                *peer,
                format!("peer-->>us: disconnected ({})", reason.replace(';', ",")),
            ),
            _ => continue,
        };
        per_peer.entry(peer).or_default().push(line);
    }
    let mut out = String::new();
    for (peer, lines) in per_peer {
        out.push_str(&format!(
            "%% peer #{peer} {}\nsequenceDiagram\n    participant us as feedscope\n    participant peer as peer #{peer} {}\n",
            names.get(&peer).map(String::as_str).unwrap_or(""),
            names.get(&peer).map(String::as_str).unwrap_or("")
        ));
        for l in lines {
            out.push_str("    ");
            out.push_str(&l);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Wire;
    use crate::wire::FeedKey;

    fn events() -> Vec<Event> {
        vec![
            Event::PeerConnected {
                peer: 1,
                addr: "127.0.0.1:9".into(),
                initiator: true,
                remote_public_key: "00".repeat(32),
                wire: Wire::Hc10,
            },
            Event::OfferReceived {
                peer: 1,
                keys: vec![FeedKey([1; 32])],
                meta: Default::default(),
            },
            Event::RequestSent {
                peer: 1,
                keys: vec![FeedKey([1; 32])],
            },
        ]
    }

    #[test]
    fn a_recording_reads_back_the_same_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut r = Recorder::create(&path).unwrap();
        for e in events() {
            r.write(&e).unwrap();
        }
        let (h, entries, err) = read(&path).unwrap();
        assert_eq!(h.version, FORMAT_VERSION);
        assert!(err.is_none());
        let got: Vec<Event> = entries.into_iter().map(|e| e.event).collect();
        assert_eq!(got, events());
    }

    #[test]
    fn a_cut_recording_keeps_what_came_before_and_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut r = Recorder::create(&path).unwrap();
        for e in events() {
            r.write(&e).unwrap();
        }
        drop(r);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.truncate(text.len() - 10); // the last line is cut mid-way
        std::fs::write(&path, text).unwrap();
        let (_, entries, err) = read(&path).unwrap();
        assert_eq!(entries.len(), 2);
        let msg = err.unwrap().to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("2 events before it"), "{msg}");
    }

    #[test]
    fn other_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, "hello\n").unwrap();
        assert!(matches!(read(&path), Err(RecordError::NotARecording(..))));
        std::fs::write(
            &path,
            "{\"format\":\"feedscope-recording\",\"version\":99,\"feedscope\":\"9\",\"started\":0}\n",
        )
        .unwrap();
        assert!(matches!(read(&path), Err(RecordError::TooNew(_, 99))));
    }

    #[test]
    fn the_sequence_diagram_follows_the_exchange() {
        let entries: Vec<Entry> = events()
            .into_iter()
            .enumerate()
            .map(|(i, event)| Entry { t: i as f64, event })
            .collect();
        let d = sequence(&entries);
        assert!(d.contains("sequenceDiagram"));
        let offer = d.find("peer->>us: MANIFEST 01010101").unwrap();
        let request = d.find("us->>peer: REQUEST_FEEDS 01010101").unwrap();
        assert!(offer < request);
    }
}
