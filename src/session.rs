//! The per-peer multifeed exchange as a state machine without I/O.
//!
//! Feed it received extension messages, local feeds and decisions; it returns [`Action`]s for
//! the engine to perform (messages to send, feeds to start replicating, things to report).
//! Every rule of the exchange lives here, so each is a unit test that needs no runtime:
//!
//! - the offerer serves only what it offered; other requested keys are refused and reported;
//! - the requester replicates only what it requested; other keys are ignored and reported;
//! - no feed is replicated twice on one connection; declined feeds are never requested;
//! - an incompatible handshake ends the session; nothing is offered before a compatible one.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{DecidedBy, ProblemKind};
use crate::limits::Limits;
use crate::policy::Policy;
use crate::wire::{self, FeedKey, FeedMeta, Handshake, KeyList, WireError};

/// A multifeed message to send on the root channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// `MULTIFEED_HANDSHAKE`.
    Handshake(Handshake),
    /// `MULTIFEED_MANIFEST` offering these keys.
    Manifest(Vec<FeedKey>),
    /// `MULTIFEED_REQUEST_FEEDS`.
    Request(Vec<FeedKey>),
    /// `MULTIFEED_REPLICATE_FEEDS`.
    Replicate(Vec<FeedKey>),
}

/// Something the engine must do or report after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this message to the peer.
    Send(Outgoing),
    /// The peer's handshake arrived and is compatible.
    HandshakeReceived(Handshake),
    /// The peer offered these feeds (valid keys only, with their metadata).
    OfferReceived {
        /// Offered keys, new and old.
        keys: Vec<FeedKey>,
        /// Offer metadata, for display only.
        meta: BTreeMap<FeedKey, FeedMeta>,
    },
    /// The peer asked for these feeds (before filtering).
    RequestReceived(Vec<FeedKey>),
    /// The peer said it will replicate these feeds (before filtering).
    ReplicateReceived(Vec<FeedKey>),
    /// These offers wait for a decision (manual policy).
    Pending(Vec<FeedKey>),
    /// A decision was taken on an offered key.
    Decided {
        /// The key decided.
        key: FeedKey,
        /// `true` for approve.
        approved: bool,
        /// Who decided.
        by: DecidedBy,
    },
    /// Stop replicating this feed on this connection (its channel closes; storage is kept).
    Stop(FeedKey),
    /// Start replicating these feeds on this connection; each is new to the active set.
    Replicate(Vec<FeedKey>),
    /// Something the peer did wrong that the session survives.
    Warn {
        /// Stable machine-readable kind.
        kind: ProblemKind,
        /// What happened, for a person.
        message: String,
    },
    /// The session cannot go on; the engine closes the connection.
    Fail {
        /// Stable machine-readable kind.
        kind: ProblemKind,
        /// What happened, for a person.
        message: String,
    },
}

/// State of one peer's exchange: the four sets the user sees, plus decisions.
#[derive(Debug, Clone)]
pub struct Session {
    policy: Policy,
    local_feeds: BTreeMap<FeedKey, FeedMeta>,
    /// Keys we offered to this peer.
    pub local_offer: BTreeSet<FeedKey>,
    /// Keys this peer offered us, with their metadata.
    pub remote_offer: BTreeMap<FeedKey, FeedMeta>,
    /// Keys we requested from this peer.
    pub requested: BTreeSet<FeedKey>,
    /// Keys replicating on this connection.
    pub active: BTreeSet<FeedKey>,
    /// Offers waiting for a decision.
    pub pending: BTreeSet<FeedKey>,
    /// Offers declined on this connection.
    pub declined: BTreeSet<FeedKey>,
    limits: Limits,
    remote_handshake: Option<Handshake>,
    failed: bool,
    last_extension: String,
}

impl Session {
    /// A session with the given policy and the feeds we hold now (with their offer metadata),
    /// bounded by `limits` (`max_remote_offer`, `max_active_feeds`, the message limits).
    pub fn new(policy: Policy, local_feeds: BTreeMap<FeedKey, FeedMeta>, limits: &Limits) -> Self {
        Session {
            policy,
            local_feeds,
            limits: limits.clone(),
            local_offer: BTreeSet::new(),
            remote_offer: BTreeMap::new(),
            requested: BTreeSet::new(),
            active: BTreeSet::new(),
            pending: BTreeSet::new(),
            declined: BTreeSet::new(),
            remote_handshake: None,
            failed: false,
            last_extension: String::new(),
        }
    }

    /// Whether a compatible handshake arrived.
    pub fn is_ready(&self) -> bool {
        self.remote_handshake.is_some() && !self.failed
    }

    /// Whether the session failed and must be closed.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The root channel opened: say hello.
    pub fn on_open(&mut self) -> Vec<Action> {
        vec![Action::Send(Outgoing::Handshake(Handshake::ours()))]
    }

    /// An extension message arrived on the root channel.
    pub fn on_extension(&mut self, name: &str, payload: &[u8]) -> Vec<Action> {
        if self.failed {
            return Vec::new();
        }
        // Senders compress a repeated name to "": it means the last name on this channel.
        let name = if name.is_empty() {
            self.last_extension.clone()
        } else {
            self.last_extension = name.to_string();
            name.to_string()
        };
        match name.as_str() {
            wire::EXT_HANDSHAKE => self.on_handshake(payload),
            wire::EXT_MANIFEST => self.after_handshake(wire::EXT_MANIFEST, |s| {
                match wire::decode_manifest(payload, &s.limits) {
                    Ok(list) => s.on_manifest(list),
                    Err(e) => vec![malformed(e)],
                }
            }),
            wire::EXT_REQUEST_FEEDS => self.after_handshake(wire::EXT_REQUEST_FEEDS, |s| {
                match wire::decode_keys(wire::EXT_REQUEST_FEEDS, payload, &s.limits) {
                    Ok(list) => s.on_request(list),
                    Err(e) => vec![malformed(e)],
                }
            }),
            wire::EXT_REPLICATE_FEEDS => self.after_handshake(wire::EXT_REPLICATE_FEEDS, |s| {
                match wire::decode_keys(wire::EXT_REPLICATE_FEEDS, payload, &s.limits) {
                    Ok(list) => s.on_replicate(list),
                    Err(e) => vec![malformed(e)],
                }
            }),
            "" => vec![warn(
                ProblemKind::Protocol,
                "extension message with an empty name and no earlier name on the channel".into(),
            )],
            other => vec![warn(
                ProblemKind::UnknownExtension,
                format!("ignored unknown extension {other:?}"),
            )],
        }
    }

    fn after_handshake(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Vec<Action>,
    ) -> Vec<Action> {
        if self.remote_handshake.is_none() {
            return vec![warn(
                ProblemKind::Protocol,
                format!("ignored {name} received before the peer's handshake"),
            )];
        }
        f(self)
    }

    fn on_handshake(&mut self, payload: &[u8]) -> Vec<Action> {
        let h = match wire::decode_handshake(payload, &self.limits) {
            Ok(h) => h,
            Err(e) => {
                self.failed = true;
                return vec![Action::Fail {
                    kind: ProblemKind::Malformed,
                    message: format!("{e}; cannot tell whether the peer is compatible"),
                }];
            }
        };
        if self.remote_handshake.is_some() {
            return vec![warn(
                ProblemKind::Protocol,
                "ignored a second handshake".into(),
            )];
        }
        if let Some(why) = h.incompatibility() {
            self.failed = true;
            return vec![Action::Fail {
                kind: ProblemKind::Incompatible,
                message: why,
            }];
        }
        self.remote_handshake = Some(h.clone());
        let keys: Vec<FeedKey> = self.local_feeds.keys().copied().collect();
        self.local_offer.extend(keys.iter().copied());
        vec![
            Action::HandshakeReceived(h),
            Action::Send(Outgoing::Manifest(keys)),
        ]
    }

    fn on_manifest(&mut self, list: KeyList) -> Vec<Action> {
        let mut out = Vec::new();
        report_rejected(&mut out, wire::EXT_MANIFEST, &list.rejected);
        out.push(Action::OfferReceived {
            keys: list.keys.clone(),
            meta: list.meta.clone(),
        });
        let mut fresh = Vec::new();
        let mut ignored = 0usize;
        for key in list.keys {
            if self.remote_offer.len() >= self.limits.max_remote_offer
                && !self.remote_offer.contains_key(&key)
            {
                ignored += 1;
                continue;
            }
            let meta = list.meta.get(&key).cloned().unwrap_or(FeedMeta::Null);
            let known = self.remote_offer.insert(key, meta).is_some();
            if !known
                && !self.requested.contains(&key)
                && !self.active.contains(&key)
                && !self.declined.contains(&key)
            {
                fresh.push(key);
            }
        }
        if ignored > 0 {
            out.push(warn(
                ProblemKind::Limit,
                format!(
                    "ignored {ignored} offered key(s): a peer may offer at most {}",
                    self.limits.max_remote_offer
                ),
            ));
        }
        match self.policy {
            Policy::AcceptAll => out.extend(self.request(fresh)),
            Policy::Manual => {
                fresh.retain(|k| self.pending.insert(*k));
                if !fresh.is_empty() {
                    out.push(Action::Pending(fresh));
                }
            }
        }
        out
    }

    fn request(&mut self, keys: Vec<FeedKey>) -> Vec<Action> {
        let (keys, over) = within_limit(&self.requested, keys, self.limits.max_active_feeds);
        let fresh: Vec<FeedKey> = keys
            .into_iter()
            .filter(|k| self.requested.insert(*k))
            .collect();
        let mut out = Vec::new();
        if !fresh.is_empty() {
            out.push(Action::Send(Outgoing::Request(fresh)));
        }
        if over > 0 {
            out.push(over_limit(over, "requested", self.limits.max_active_feeds));
        }
        out
    }

    fn on_request(&mut self, list: KeyList) -> Vec<Action> {
        let mut out = Vec::new();
        report_rejected(&mut out, wire::EXT_REQUEST_FEEDS, &list.rejected);
        out.push(Action::RequestReceived(list.keys.clone()));
        let (served, refused): (Vec<FeedKey>, Vec<FeedKey>) = list
            .keys
            .into_iter()
            .partition(|k| self.local_offer.contains(k));
        if !refused.is_empty() {
            out.push(warn(
                ProblemKind::RefusedRequest,
                format!(
                    "refused a request for {} feed(s) never offered to this peer: {}",
                    refused.len(),
                    short_list(&refused)
                ),
            ));
        }
        // Only what this connection can replicate is promised.
        let (served, over) = within_limit(&self.active, served, self.limits.max_active_feeds);
        out.push(Action::Send(Outgoing::Replicate(served.clone())));
        out.extend(self.activate(served));
        if over > 0 {
            out.push(over_limit(over, "served", self.limits.max_active_feeds));
        }
        out
    }

    fn on_replicate(&mut self, list: KeyList) -> Vec<Action> {
        let mut out = Vec::new();
        report_rejected(&mut out, wire::EXT_REPLICATE_FEEDS, &list.rejected);
        out.push(Action::ReplicateReceived(list.keys.clone()));
        let (wanted, unwanted): (Vec<FeedKey>, Vec<FeedKey>) = list
            .keys
            .into_iter()
            .partition(|k| self.requested.contains(k));
        if !unwanted.is_empty() {
            out.push(warn(
                ProblemKind::UnrequestedFeed,
                format!(
                    "ignored {} feed(s) the peer offered to replicate without a request: {}",
                    unwanted.len(),
                    short_list(&unwanted)
                ),
            ));
        }
        out.extend(self.activate(wanted));
        out
    }

    fn activate(&mut self, keys: Vec<FeedKey>) -> Vec<Action> {
        let (keys, over) = within_limit(&self.active, keys, self.limits.max_active_feeds);
        let fresh: Vec<FeedKey> = keys
            .into_iter()
            .filter(|k| self.active.insert(*k))
            .collect();
        let mut out = Vec::new();
        if !fresh.is_empty() {
            out.push(Action::Replicate(fresh));
        }
        if over > 0 {
            out.push(over_limit(over, "replicated", self.limits.max_active_feeds));
        }
        out
    }

    /// A feed appeared locally (created, or downloaded from someone): offer it if the peer
    /// does not know it yet.
    pub fn on_local_feed(&mut self, key: FeedKey, meta: FeedMeta) -> Vec<Action> {
        self.local_feeds.insert(key, meta);
        if !self.is_ready()
            || self.local_offer.contains(&key)
            || self.remote_offer.contains_key(&key)
        {
            return Vec::new();
        }
        self.local_offer.insert(key);
        vec![Action::Send(Outgoing::Manifest(vec![key]))]
    }

    /// A person (or a rule) decided on an offered key.
    pub fn on_decision(&mut self, key: FeedKey, approve: bool) -> Vec<Action> {
        self.on_decisions(vec![(key, approve, DecidedBy::Person)])
    }

    /// Several decisions at once; the approved keys go out in one request.
    pub fn on_decisions(&mut self, decisions: Vec<(FeedKey, bool, DecidedBy)>) -> Vec<Action> {
        let mut out = Vec::new();
        let mut approved = Vec::new();
        for (key, approve, by) in decisions {
            if !self.remote_offer.contains_key(&key) {
                out.push(warn(
                    ProblemKind::UnknownOffer,
                    format!("{} was not offered by this peer", key.short()),
                ));
                continue;
            }
            self.pending.remove(&key);
            out.push(Action::Decided {
                key,
                approved: approve,
                by,
            });
            if approve {
                self.declined.remove(&key);
                approved.push(key);
            } else if !self.requested.contains(&key) {
                self.declined.insert(key);
            }
        }
        out.extend(self.request(approved));
        out
    }

    /// Stops replicating `key` on this connection; a later approval asks for it again.
    pub fn on_stop(&mut self, key: FeedKey) -> Vec<Action> {
        if !self.active.remove(&key) {
            return vec![warn(
                ProblemKind::NotActive,
                format!("{} is not replicating with this peer", key.short()),
            )];
        }
        self.requested.remove(&key);
        vec![Action::Stop(key)]
    }

    /// A feed agreed on could not be started (its storage failed): it is not active here.
    pub fn on_start_failed(&mut self, key: &FeedKey) {
        self.active.remove(key);
    }

    /// The peer closed a feed's channel: the feed is no longer active here.
    pub fn on_feed_closed(&mut self, key: &FeedKey) {
        self.active.remove(key);
        self.requested.remove(key);
    }
}

/// The keys of `keys` that `set` holds or has room for under `max` in all, in order,
/// and how many new keys there was no room for.
fn within_limit(set: &BTreeSet<FeedKey>, keys: Vec<FeedKey>, max: usize) -> (Vec<FeedKey>, usize) {
    let mut room = max.saturating_sub(set.len());
    let mut taken = BTreeSet::new();
    let mut over = 0;
    let kept = keys
        .into_iter()
        .filter(|k| {
            if set.contains(k) || taken.contains(k) {
                return true;
            }
            if room == 0 {
                over += 1;
                return false;
            }
            room -= 1;
            taken.insert(*k);
            true
        })
        .collect();
    (kept, over)
}

fn over_limit(over: usize, what: &str, max: usize) -> Action {
    warn(
        ProblemKind::Limit,
        format!("{over} feeds not {what}: a connection replicates at most {max} feeds"),
    )
}

fn warn(kind: ProblemKind, message: String) -> Action {
    Action::Warn { kind, message }
}

fn malformed(e: WireError) -> Action {
    let kind = match e {
        WireError::TooLarge { .. } | WireError::TooManyKeys { .. } => ProblemKind::Oversized,
        _ => ProblemKind::Malformed,
    };
    warn(kind, e.to_string())
}

fn report_rejected(out: &mut Vec<Action>, name: &str, rejected: &[String]) {
    if !rejected.is_empty() {
        out.push(warn(
            ProblemKind::InvalidKey,
            format!(
                "dropped {} invalid key(s) from {name} (a key is 64 hex characters): {}",
                rejected.len(),
                rejected
                    .iter()
                    .take(3)
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
}

fn short_list(keys: &[FeedKey]) -> String {
    let mut s = keys
        .iter()
        .take(5)
        .map(|k| k.short())
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > 5 {
        s.push_str(&format!(" and {} more", keys.len() - 5));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_handshake, encode_keys, encode_manifests};

    fn key(n: u8) -> FeedKey {
        FeedKey([n; 32])
    }

    fn feeds(keys: &[u8]) -> BTreeMap<FeedKey, FeedMeta> {
        keys.iter().map(|n| (key(*n), FeedMeta::Null)).collect()
    }

    fn handshake() -> Vec<u8> {
        encode_handshake(&Handshake::ours())
    }

    fn manifest(keys: &[u8]) -> Vec<u8> {
        let keys: Vec<FeedKey> = keys.iter().map(|n| key(*n)).collect();
        encode_manifests(&keys, &BTreeMap::new()).remove(0)
    }

    fn list(keys: &[u8]) -> Vec<u8> {
        encode_keys(&keys.iter().map(|n| key(*n)).collect::<Vec<_>>())
    }

    fn ready(policy: Policy, local: &[u8]) -> Session {
        ready_within(policy, local, &Limits::DEFAULT)
    }

    fn ready_within(policy: Policy, local: &[u8], limits: &Limits) -> Session {
        let mut s = Session::new(policy, feeds(local), limits);
        s.on_open();
        s.on_extension(wire::EXT_HANDSHAKE, &handshake());
        s
    }

    fn sent(actions: &[Action]) -> Vec<Outgoing> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(o) => Some(o.clone()),
                _ => None,
            })
            .collect()
    }

    fn replicated(actions: &[Action]) -> Vec<FeedKey> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Replicate(k) => k.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn warned(actions: &[Action], kind: &str) -> bool {
        actions
            .iter()
            .any(|a| matches!(a, Action::Warn { kind: k, .. } if k.as_str() == kind))
    }

    #[test]
    fn open_sends_handshake_and_compatible_handshake_sends_manifest() {
        let mut s = Session::new(Policy::AcceptAll, feeds(&[1, 2]), &Limits::DEFAULT);
        assert_eq!(
            sent(&s.on_open()),
            vec![Outgoing::Handshake(Handshake::ours())]
        );
        let out = s.on_extension(wire::EXT_HANDSHAKE, &handshake());
        assert_eq!(sent(&out), vec![Outgoing::Manifest(vec![key(1), key(2)])]);
        assert!(s.is_ready());
    }

    #[test]
    fn version_mismatch_fails_the_session() {
        let mut s = Session::new(Policy::AcceptAll, feeds(&[1]), &Limits::DEFAULT);
        let out = s.on_extension(
            wire::EXT_HANDSHAKE,
            br#"{"client":"MULTIFEED","version":"4.0.0"}"#,
        );
        assert!(
            matches!(&out[0], Action::Fail { kind: ProblemKind::Incompatible, message } if message.contains("4.0.0"))
        );
        assert!(s.is_failed());
        assert!(
            sent(&out).is_empty(),
            "nothing is offered to an incompatible peer"
        );
        assert!(s
            .on_extension(wire::EXT_MANIFEST, &manifest(&[9]))
            .is_empty());
    }

    #[test]
    fn client_mismatch_fails_the_session() {
        let mut s = Session::new(Policy::AcceptAll, feeds(&[]), &Limits::DEFAULT);
        let out = s.on_extension(
            wire::EXT_HANDSHAKE,
            br#"{"client":"OTHER","version":"5.0.0"}"#,
        );
        assert!(matches!(
            &out[0],
            Action::Fail {
                kind: ProblemKind::Incompatible,
                ..
            }
        ));
    }

    #[test]
    fn accept_all_requests_every_new_offer_once() {
        let mut s = ready(Policy::AcceptAll, &[]);
        let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[5, 6]));
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(5), key(6)])]);
        let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[6, 7]));
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(7)])]);
    }

    #[test]
    fn request_for_unoffered_key_is_refused() {
        let mut s = ready(Policy::AcceptAll, &[1]);
        let out = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1, 2]));
        assert_eq!(sent(&out), vec![Outgoing::Replicate(vec![key(1)])]);
        assert_eq!(replicated(&out), vec![key(1)]);
        assert!(warned(&out, "refused_request"));
    }

    #[test]
    fn unrequested_key_in_replicate_is_ignored() {
        let mut s = ready(Policy::AcceptAll, &[]);
        s.on_extension(wire::EXT_MANIFEST, &manifest(&[3]));
        let out = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[3, 4]));
        assert_eq!(replicated(&out), vec![key(3)]);
        assert!(warned(&out, "unrequested_feed"));
    }

    #[test]
    fn active_feed_is_not_replicated_twice() {
        let mut s = ready(Policy::AcceptAll, &[1]);
        s.on_extension(wire::EXT_MANIFEST, &manifest(&[1]));
        let first = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1]));
        assert_eq!(replicated(&first), vec![key(1)]);
        let second = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[1]));
        assert!(replicated(&second).is_empty());
        let third = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1]));
        assert!(replicated(&third).is_empty());
    }

    #[test]
    fn invalid_keys_are_dropped_with_a_warning() {
        let mut s = ready(Policy::AcceptAll, &[]);
        let body = format!(r#"{{"keys":["{}","nothex"]}}"#, key(8));
        let out = s.on_extension(wire::EXT_MANIFEST, body.as_bytes());
        assert!(warned(&out, "invalid_key"));
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(8)])]);
    }

    #[test]
    fn malformed_json_is_a_warning_and_the_session_goes_on() {
        let mut s = ready(Policy::AcceptAll, &[]);
        let out = s.on_extension(wire::EXT_MANIFEST, b"\x00garbage");
        assert!(warned(&out, "malformed"));
        assert!(!s.is_failed());
        let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[2]));
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(2)])]);
    }

    #[test]
    fn empty_name_means_the_previous_extension() {
        let mut s = ready(Policy::AcceptAll, &[]);
        s.on_extension(wire::EXT_MANIFEST, &manifest(&[1]));
        let out = s.on_extension("", &manifest(&[2]));
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(2)])]);
    }

    #[test]
    fn nothing_is_processed_before_the_handshake() {
        let mut s = Session::new(Policy::AcceptAll, feeds(&[1]), &Limits::DEFAULT);
        let out = s.on_extension(wire::EXT_REQUEST_FEEDS, &list(&[1]));
        assert!(warned(&out, "protocol"));
        assert!(replicated(&out).is_empty());
    }

    #[test]
    fn manual_policy_waits_for_a_decision() {
        let mut s = ready(Policy::Manual, &[]);
        let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[1, 2]));
        assert!(sent(&out).is_empty());
        assert!(out.contains(&Action::Pending(vec![key(1), key(2)])));
        let out = s.on_decision(key(1), true);
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(1)])]);
        let out = s.on_decision(key(2), false);
        assert!(sent(&out).is_empty());
        assert!(out.contains(&Action::Decided {
            key: key(2),
            approved: false,
            by: DecidedBy::Person
        }));
        // A re-offer of a declined key is not queued again and never requested.
        let out = s.on_extension(wire::EXT_MANIFEST, &manifest(&[2]));
        assert!(sent(&out).is_empty());
        assert!(!out.iter().any(|a| matches!(a, Action::Pending(_))));
        // The peer cannot push a declined key on us.
        let out = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[2]));
        assert!(replicated(&out).is_empty());
    }

    #[test]
    fn offers_past_the_limit_are_ignored_with_a_warning() {
        let limits = Limits {
            max_remote_offer: 40,
            max_keys_per_message: 15,
            ..Limits::DEFAULT
        };
        let mut s = ready_within(Policy::Manual, &[], &limits);
        let keys: Vec<FeedKey> = (0..=limits.max_remote_offer as u32)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_le_bytes());
                FeedKey(k)
            })
            .collect();
        let mut warned_limit = false;
        for chunk in keys.chunks(limits.max_keys_per_message) {
            let body = encode_manifests(chunk, &BTreeMap::new()).remove(0);
            warned_limit |= warned(&s.on_extension(wire::EXT_MANIFEST, &body), "limit");
        }
        assert!(warned_limit);
        assert_eq!(s.remote_offer.len(), limits.max_remote_offer);
        // A message over the key limit is refused whole.
        let body = encode_manifests(&keys[..16], &BTreeMap::new()).remove(0);
        assert!(warned(
            &s.on_extension(wire::EXT_MANIFEST, &body),
            "oversized"
        ));
    }

    #[test]
    fn a_connection_replicates_at_most_the_feed_limit() {
        let limits = Limits {
            max_active_feeds: 30,
            ..Limits::DEFAULT
        };
        let mut s = ready_within(Policy::AcceptAll, &[], &limits);
        let keys: Vec<FeedKey> = (0..limits.max_active_feeds as u32 + 5)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_le_bytes());
                FeedKey(k)
            })
            .collect();
        let mut actions = Vec::new();
        for body in encode_manifests(&keys, &BTreeMap::new()) {
            actions.extend(s.on_extension(wire::EXT_MANIFEST, &body));
        }
        let limit = |actions: &[Action]| {
            actions.iter().find_map(|a| match a {
                Action::Warn {
                    kind: ProblemKind::Limit,
                    message,
                } => Some(message.clone()),
                _ => None,
            })
        };
        let requested: usize = sent(&actions)
            .iter()
            .map(|o| match o {
                Outgoing::Request(k) => k.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(
            requested, limits.max_active_feeds,
            "no more requested than can run"
        );
        assert!(limit(&actions)
            .unwrap()
            .starts_with("5 feeds not requested"));
        let actions = s.on_extension(wire::EXT_REPLICATE_FEEDS, &encode_keys(&keys));
        assert_eq!(replicated(&actions).len(), limits.max_active_feeds);
        assert_eq!(s.active.len(), limits.max_active_feeds);

        // Served the other way: only what fits is promised in REPLICATE_FEEDS.
        let local: Vec<u8> = Vec::new();
        let mut s = ready_within(Policy::AcceptAll, &local, &limits);
        for k in &keys {
            s.on_local_feed(*k, FeedMeta::Null);
        }
        let actions = s.on_extension(wire::EXT_REQUEST_FEEDS, &encode_keys(&keys));
        let promised: usize = sent(&actions)
            .iter()
            .map(|o| match o {
                Outgoing::Replicate(k) => k.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(promised, limits.max_active_feeds);
        assert_eq!(replicated(&actions).len(), limits.max_active_feeds);
        assert!(limit(&actions).unwrap().starts_with("5 feeds not served"));
    }

    #[test]
    fn batched_decisions_send_one_request() {
        let mut s = ready(Policy::Manual, &[]);
        s.on_extension(wire::EXT_MANIFEST, &manifest(&[1, 2, 3]));
        let out = s.on_decisions(vec![
            (key(1), true, DecidedBy::Rule("allow 01".into())),
            (key(2), false, DecidedBy::Person),
            (key(3), true, DecidedBy::Person),
        ]);
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(1), key(3)])]);
        assert!(s.pending.is_empty());
    }

    #[test]
    fn a_stopped_feed_can_be_approved_again() {
        let mut s = ready(Policy::AcceptAll, &[]);
        s.on_extension(wire::EXT_MANIFEST, &manifest(&[1]));
        s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[1]));
        assert_eq!(s.on_stop(key(1)), vec![Action::Stop(key(1))]);
        assert!(s.active.is_empty());
        let out = s.on_decision(key(1), true);
        assert_eq!(sent(&out), vec![Outgoing::Request(vec![key(1)])]);
        let out = s.on_extension(wire::EXT_REPLICATE_FEEDS, &list(&[1]));
        assert_eq!(replicated(&out), vec![key(1)]);
    }

    #[test]
    fn new_local_feed_is_offered_once_and_not_back_to_its_source() {
        let mut s = ready(Policy::AcceptAll, &[]);
        s.on_extension(wire::EXT_MANIFEST, &manifest(&[4]));
        assert_eq!(
            sent(&s.on_local_feed(key(3), FeedMeta::Null)),
            vec![Outgoing::Manifest(vec![key(3)])]
        );
        assert!(s.on_local_feed(key(3), FeedMeta::Null).is_empty());
        assert!(s.on_local_feed(key(4), FeedMeta::Null).is_empty());
    }

    #[test]
    fn feeds_added_before_the_handshake_go_in_the_first_manifest() {
        let mut s = Session::new(Policy::AcceptAll, feeds(&[1]), &Limits::DEFAULT);
        s.on_open();
        assert!(s.on_local_feed(key(2), FeedMeta::Null).is_empty());
        let out = s.on_extension(wire::EXT_HANDSHAKE, &handshake());
        assert_eq!(sent(&out), vec![Outgoing::Manifest(vec![key(1), key(2)])]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::wire::{encode_handshake, encode_keys, encode_manifests};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Manifest(Vec<u8>),
        Decide(u8, bool),
        Replicate(Vec<u8>),
        Request(Vec<u8>),
        LocalFeed(u8),
        Stop(u8),
        PeerClosed(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0u8..8;
        let ks = proptest::collection::vec(0u8..8, 0..5);
        prop_oneof![
            ks.clone().prop_map(Op::Manifest),
            (k.clone(), any::<bool>()).prop_map(|(k, a)| Op::Decide(k, a)),
            ks.clone().prop_map(Op::Replicate),
            ks.prop_map(Op::Request),
            k.clone().prop_map(Op::LocalFeed),
            k.clone().prop_map(Op::Stop),
            k.prop_map(Op::PeerClosed),
        ]
    }

    fn key(n: u8) -> FeedKey {
        FeedKey([n; 32])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn no_declined_key_is_requested_and_nothing_is_requested_or_activated_twice(
            manual in any::<bool>(),
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let policy = if manual { Policy::Manual } else { Policy::AcceptAll };
            let mut s = Session::new(policy, BTreeMap::new(), &Limits::DEFAULT);
            s.on_open();
            s.on_extension(wire::EXT_HANDSHAKE, &encode_handshake(&Handshake::ours()));
            let mut declined: BTreeSet<FeedKey> = BTreeSet::new();
            let mut requested: BTreeSet<FeedKey> = BTreeSet::new();
            let mut active: BTreeSet<FeedKey> = BTreeSet::new();
            for op in ops {
                let actions = match op {
                    Op::Manifest(ks) => {
                        let keys: Vec<FeedKey> = ks.into_iter().map(key).collect();
                        s.on_extension(wire::EXT_MANIFEST, &encode_manifests(&keys, &BTreeMap::new())[0])
                    }
                    Op::Decide(k, approve) => {
                        let out = s.on_decision(key(k), approve);
                        if out.iter().any(|a| matches!(a, Action::Decided { .. })) {
                            if approve { declined.remove(&key(k)); } else if !requested.contains(&key(k)) { declined.insert(key(k)); }
                        }
                        out
                    }
                    Op::Replicate(ks) => {
                        let keys: Vec<FeedKey> = ks.into_iter().map(key).collect();
                        s.on_extension(wire::EXT_REPLICATE_FEEDS, &encode_keys(&keys))
                    }
                    Op::Request(ks) => {
                        let keys: Vec<FeedKey> = ks.into_iter().map(key).collect();
                        s.on_extension(wire::EXT_REQUEST_FEEDS, &encode_keys(&keys))
                    }
                    Op::LocalFeed(k) => s.on_local_feed(key(k), FeedMeta::Null),
                    Op::Stop(k) => {
                        let out = s.on_stop(key(k));
                        if out == vec![Action::Stop(key(k))] {
                            active.remove(&key(k));
                            requested.remove(&key(k));
                        }
                        out
                    }
                    Op::PeerClosed(k) => {
                        s.on_feed_closed(&key(k));
                        active.remove(&key(k));
                        requested.remove(&key(k));
                        Vec::new()
                    }
                };
                for a in &actions {
                    match a {
                        Action::Send(Outgoing::Request(keys)) => {
                            let unique: BTreeSet<_> = keys.iter().collect();
                            prop_assert_eq!(unique.len(), keys.len(), "a key twice in one request");
                            for k in keys {
                                prop_assert!(!declined.contains(k), "declined key requested: {:?}", k);
                                prop_assert!(requested.insert(*k), "key requested twice: {:?}", k);
                            }
                        }
                        Action::Replicate(keys) => {
                            for k in keys {
                                prop_assert!(active.insert(*k), "feed activated twice: {:?}", k);
                            }
                        }
                        _ => {}
                    }
                }
                // What the session exposes agrees with what it did.
                prop_assert_eq!(&s.active, &active);
            }
        }
    }
}
