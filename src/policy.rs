//! Who decides on a remote offer before a person is asked: rules, then remembered decisions.
//!
//! The session owns the exchange; this module only answers "approve, decline, or ask?" for
//! one offered key. Decisions a person takes are remembered in the storage folder
//! (`decisions.json`, written atomically) and answer the same question after a restart.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::event::DecidedBy;
use crate::wire::{FeedKey, FeedMeta};

/// How remote offers are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Classic multifeed: request every offered feed at once.
    AcceptAll,
    /// Queue offers until a person approves or declines each.
    Manual,
    /// A read-only peer: offer nothing, request nothing, serve nothing, write nothing; only
    /// watch and report what peers offer and say.
    Observe,
}

/// Rules from the command line or a rules file, applied before asking.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Key prefixes (hex) to approve.
    pub allow: Vec<String>,
    /// Key prefixes (hex) to decline; deny wins over allow.
    pub deny: Vec<String>,
    /// Noise public keys (hex, or prefixes) of peers whose every offer is approved.
    pub allow_peers: Vec<String>,
    /// Decline offers whose metadata states more bytes than this.
    pub max_feed_bytes: Option<u64>,
}

/// A rules file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A line is not a rule.
    #[error("rules file {path}, line {line}: {reason}")]
    Syntax {
        /// File.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn check_hex(s: &str) -> Result<String, String> {
    let s = s.trim().to_lowercase();
    if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a key or key prefix (1 to 64 hex characters)"
        ));
    }
    Ok(s)
}

impl Rules {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    /// Adds one rule written as `allow PREFIX`, `deny PREFIX`, `allow-peer PUBKEY` or
    /// `max-feed-bytes N`.
    pub fn add(&mut self, verb: &str, arg: &str) -> Result<(), String> {
        match verb {
            "allow" => self.allow.push(check_hex(arg)?),
            "deny" => self.deny.push(check_hex(arg)?),
            "allow-peer" => self.allow_peers.push(check_hex(arg)?),
            "max-feed-bytes" => {
                self.max_feed_bytes = Some(
                    arg.trim()
                        .parse()
                        .map_err(|_| format!("{arg:?} is not a number of bytes"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown rule {other:?}; rules are allow, deny, allow-peer, max-feed-bytes"
                ))
            }
        }
        Ok(())
    }

    /// Reads a rules file: one rule per line, `#` starts a comment.
    pub fn load(&mut self, path: &Path) -> Result<(), RulesError> {
        let text = fs::read_to_string(path).map_err(|e| RulesError::Io(path.into(), e))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (verb, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            self.add(verb, arg).map_err(|reason| RulesError::Syntax {
                path: path.into(),
                line: i + 1,
                reason,
            })?;
        }
        Ok(())
    }

    /// What the rules say of `key` offered by the peer with `remote_public_key`.
    pub fn decide(
        &self,
        key: &FeedKey,
        meta: impl FnOnce() -> FeedMeta,
        remote_public_key: &str,
    ) -> Option<(bool, DecidedBy)> {
        // Written out only for prefix rules: a manual peer may be offered ten thousand keys.
        let hex = if self.deny.is_empty() && self.allow.is_empty() {
            String::new()
        } else {
            key.to_hex()
        };
        if let Some(p) = self.deny.iter().find(|p| hex.starts_with(p.as_str())) {
            return Some((false, DecidedBy::Rule(format!("deny {p}"))));
        }
        // The metadata is read only for a rule that needs it.
        let size = || meta().get("byte_length").and_then(|v| v.as_u64());
        if let Some((max, size)) = self.max_feed_bytes.and_then(|max| Some((max, size()?))) {
            if size > max {
                return Some((
                    false,
                    DecidedBy::Rule(format!("max-feed-bytes {max} (offer states {size})")),
                ));
            }
        }
        if let Some(p) = self.allow.iter().find(|p| hex.starts_with(p.as_str())) {
            return Some((true, DecidedBy::Rule(format!("allow {p}"))));
        }
        if let Some(p) = self
            .allow_peers
            .iter()
            .find(|p| remote_public_key.starts_with(p.as_str()))
        {
            return Some((true, DecidedBy::Rule(format!("allow-peer {p}"))));
        }
        None
    }
}

/// A decision a person took, as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// `true` for approve.
    pub approved: bool,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// Decisions remembered in the storage folder.
#[derive(Debug)]
pub struct Decisions {
    path: PathBuf,
    map: Mutex<BTreeMap<FeedKey, Remembered>>,
}

/// The file of remembered decisions, at the top of the storage folder.
pub const DECISIONS_FILE: &str = "decisions.json";

impl Decisions {
    /// Loads `decisions.json` from the storage folder (none yet is an empty list).
    pub fn load(storage: &Path) -> Result<Self, String> {
        let path = storage.join(DECISIONS_FILE);
        let map = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "remembered decisions in {} are damaged ({e}); move the file away to start afresh",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Decisions {
            path,
            map: Mutex::new(map),
        })
    }

    /// Every remembered decision.
    pub fn all(&self) -> BTreeMap<FeedKey, Remembered> {
        self.map.lock().unwrap().clone()
    }

    /// Remembers a decision and writes the file.
    pub fn remember(&self, key: FeedKey, approved: bool) -> Result<(), String> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut map = self.map.lock().unwrap();
        if map.get(&key).map(|r| r.approved) == Some(approved) {
            return Ok(());
        }
        map.insert(key, Remembered { approved, at });
        self.write(&map)
    }

    /// Forgets a decision; returns whether there was one.
    pub fn forget(&self, key: &FeedKey) -> Result<bool, String> {
        let mut map = self.map.lock().unwrap();
        let had = map.remove(key).is_some();
        if had {
            self.write(&map)?;
        }
        Ok(had)
    }

    fn write(&self, map: &BTreeMap<FeedKey, Remembered>) -> Result<(), String> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(map).expect("decisions serialise");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// The whole answer to "what about this offer?".
#[derive(Debug)]
pub struct Curator {
    /// The policy for offers no rule or memory decides.
    pub policy: Policy,
    /// Rules, applied first.
    pub rules: Rules,
    /// Remembered decisions, applied next (manual policy only: accept-all stays classic).
    pub decisions: Decisions,
}

impl Curator {
    /// What becomes of every key of an offered list without asking: those decided (with the
    /// answer and why) and those to ask about. The remembered decisions are read under one
    /// lock, and a key's metadata (from `meta`) only when a rule reads it: a peer may be
    /// offered a thousand keys in one manifest.
    pub fn decide_all(
        &self,
        keys: Vec<FeedKey>,
        meta: impl Fn(&FeedKey) -> Option<FeedMeta>,
        remote_public_key: &str,
    ) -> (Vec<(FeedKey, bool, DecidedBy)>, Vec<FeedKey>) {
        let remembered = self.decisions.map.lock().unwrap();
        let mut decided = Vec::new();
        let mut ask = Vec::new();
        for key in keys {
            let meta_of = || meta(&key).unwrap_or_default();
            match self.decide_with(&key, meta_of, remote_public_key, &remembered) {
                Some((approve, by)) => decided.push((key, approve, by)),
                None => ask.push(key),
            }
        }
        (decided, ask)
    }

    fn decide_with(
        &self,
        key: &FeedKey,
        meta: impl FnOnce() -> FeedMeta,
        remote_public_key: &str,
        remembered: &BTreeMap<FeedKey, Remembered>,
    ) -> Option<(bool, DecidedBy)> {
        // An observer decides nothing, not even by rule.
        if self.policy == Policy::Observe {
            return None;
        }
        if let Some(d) = self.rules.decide(key, meta, remote_public_key) {
            return Some(d);
        }
        match self.policy {
            Policy::AcceptAll => Some((true, DecidedBy::AcceptAll)),
            Policy::Observe => None,
            Policy::Manual => remembered.get(key).map(|r| {
                (
                    r.approved,
                    DecidedBy::Memory {
                        approved: r.approved,
                    },
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: u8) -> FeedKey {
        FeedKey([n; 32])
    }

    #[test]
    fn deny_wins_over_allow_and_size_limits_decline() {
        let mut r = Rules::default();
        r.add("allow", "ab").unwrap();
        r.add("deny", "abab").unwrap();
        r.add("max-feed-bytes", "1000").unwrap();
        assert!(!r.decide(&key(0xab), || json!(null).into(), "").unwrap().0);
        assert_eq!(
            r.decide(&key(0xac), || json!({"byte_length": 5000}).into(), ""),
            Some((
                false,
                DecidedBy::Rule("max-feed-bytes 1000 (offer states 5000)".into())
            ))
        );
        assert_eq!(
            r.decide(&key(0xac), || json!({"byte_length": 5}).into(), ""),
            None
        );
        r.add("allow-peer", "ff00").unwrap();
        assert!(
            r.decide(&key(0xac), || json!(null).into(), "ff00aa")
                .unwrap()
                .0
        );
        assert!(r.add("allow", "xyz").is_err());
        assert!(r.add("permit", "ab").is_err());
    }

    #[test]
    fn a_rules_file_reports_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules");
        fs::write(&path, "# curated\nallow ab # photos\n\ndeny zz\n").unwrap();
        let err = Rules::default().load(&path).unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");
        fs::write(&path, "allow ab\nmax-feed-bytes 10\n").unwrap();
        let mut r = Rules::default();
        r.load(&path).unwrap();
        assert_eq!(r.allow, vec!["ab"]);
        assert_eq!(r.max_feed_bytes, Some(10));
    }

    #[test]
    fn decisions_are_remembered_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let d = Decisions::load(dir.path()).unwrap();
        d.remember(key(1), true).unwrap();
        d.remember(key(2), false).unwrap();
        let d = Decisions::load(dir.path()).unwrap();
        let all = d.all();
        assert!(all[&key(1)].approved);
        assert!(!all[&key(2)].approved);
        assert!(d.forget(&key(1)).unwrap());
        let all = Decisions::load(dir.path()).unwrap().all();
        assert!(!all.contains_key(&key(1)) && all.contains_key(&key(2)));
    }

    #[test]
    fn accept_all_stays_classic_and_manual_uses_memory() {
        let dir = tempfile::tempdir().unwrap();
        let decisions = Decisions::load(dir.path()).unwrap();
        decisions.remember(key(1), false).unwrap();
        let mut c = Curator {
            policy: Policy::AcceptAll,
            rules: Rules::default(),
            decisions,
        };
        let keys = vec![key(1), key(2)];
        let (decided, ask) = c.decide_all(keys.clone(), |_| None, "");
        assert!(decided.iter().all(|d| d.1 && d.2 == DecidedBy::AcceptAll) && ask.is_empty());
        c.policy = Policy::Manual;
        let (decided, ask) = c.decide_all(keys.clone(), |_| None, "");
        assert_eq!(
            decided,
            vec![(key(1), false, DecidedBy::Memory { approved: false })]
        );
        assert_eq!(ask, vec![key(2)]);
        c.policy = Policy::Observe;
        assert_eq!(c.decide_all(keys.clone(), |_| None, ""), (vec![], keys));
    }

    #[test]
    fn metadata_is_read_only_for_a_rule_that_reads_it() {
        let big: FeedMeta = json!({"byte_length": 5000}).into();
        let mut c = Curator {
            policy: Policy::Manual,
            rules: Rules::default(),
            decisions: Decisions::load(tempfile::tempdir().unwrap().path()).unwrap(),
        };
        let read = std::cell::Cell::new(0);
        let meta = |_: &FeedKey| {
            read.set(read.get() + 1);
            Some(big.clone())
        };
        assert_eq!(c.decide_all(vec![key(1)], meta, "").1, vec![key(1)]);
        assert_eq!(read.get(), 0, "no rule reads metadata");
        c.rules.add("max-feed-bytes", "100").unwrap();
        let (decided, _) = c.decide_all(vec![key(1)], meta, "");
        assert!(!decided[0].1, "over the limit");
        assert_eq!(read.get(), 1);
    }
}
