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

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::event::{DecidedBy, ProblemKind};
use crate::limits::Limits;
use crate::policy::Policy;
use crate::wire::{self, FeedKey, Handshake, KeyList, OfferMeta, WireError};

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
    /// The peer named itself (Cabal's `peer-id`: the key of its writer feed).
    PeerNamed(FeedKey),
    /// The peer offered these feeds (valid keys only, with their metadata).
    OfferReceived {
        /// Offered keys, new and old.
        keys: Vec<FeedKey>,
        /// Offer metadata, for display only.
        meta: OfferMeta,
    },
    /// The peer asked for these feeds (before filtering).
    RequestReceived(Vec<FeedKey>),
    /// The peer said it will replicate these feeds (before filtering).
    ReplicateReceived(Vec<FeedKey>),
    /// In observe mode, the peer asked for these feeds and was refused, as every request is:
    /// no problem, so no warning.
    RefusedObserving(Vec<FeedKey>),
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
    /// Feeds we hold, by key only (their metadata is read when a manifest is sent), until
    /// the handshake: they are then the first manifest.
    local_feeds: KeySet,
    /// Keys we offered to this peer.
    pub local_offer: KeySet,
    /// Keys this peer offered us, with their metadata, each marked while it waits for a
    /// decision.
    pub remote_offer: RemoteOffer,
    /// Keys we requested from this peer.
    pub requested: BTreeSet<FeedKey>,
    /// Keys replicating on this connection.
    pub active: BTreeSet<FeedKey>,
    /// Offers declined on this connection.
    pub declined: BTreeSet<FeedKey>,
    limits: Limits,
    remote_handshake: Option<Handshake>,
    failed: bool,
    /// The peer named itself (Cabal's `peer-id`).
    named: bool,
    last_extension: String,
    /// The multifeed protocol version spoken on this wire.
    version: &'static str,
}

impl Session {
    /// A session with the given policy and the feeds we hold now, bounded by `limits`
    /// (`max_remote_offer`, `max_active_feeds`, the message limits).
    pub fn new(policy: Policy, local_feeds: BTreeSet<FeedKey>, limits: &Limits) -> Self {
        Self::sharing(FeedNumbers::new(), policy, local_feeds, limits)
    }

    /// The same as [`Session::new`], with the sets of our feeds kept over `numbers`, which
    /// the other sessions of the process share.
    pub fn sharing(
        numbers: Arc<FeedNumbers>,
        policy: Policy,
        local_feeds: impl IntoIterator<Item = FeedKey>,
        limits: &Limits,
    ) -> Self {
        let mut feeds = KeySet::new(numbers.clone());
        for key in local_feeds {
            feeds.insert(key);
        }
        Session {
            policy,
            local_feeds: feeds,
            limits: limits.clone(),
            local_offer: KeySet::new(numbers),
            remote_offer: RemoteOffer::default(),
            requested: BTreeSet::new(),
            active: BTreeSet::new(),
            declined: BTreeSet::new(),
            remote_handshake: None,
            failed: false,
            named: false,
            last_extension: String::new(),
            version: wire::PROTOCOL_VERSION,
        }
    }

    /// The same session speaking another multifeed protocol version: the one its wire's
    /// peers speak ([`wire::PROTOCOL_VERSION_HC9`] on hypercore-protocol 8).
    pub fn speaking(mut self, version: &'static str) -> Self {
        self.version = version;
        self
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
        vec![Action::Send(Outgoing::Handshake(Handshake::ours_with(
            self.version,
        )))]
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
            // Cabal's own extension; it may come before or after the multifeed handshake.
            // The first valid one names the peer; later ones are ignored, as Cabal does.
            wire::EXT_CABAL_PEER_ID if self.named => Vec::new(),
            wire::EXT_CABAL_PEER_ID => match wire::decode_peer_id(payload, &self.limits) {
                Ok(key) => {
                    self.named = true;
                    vec![Action::PeerNamed(key)]
                }
                Err(e) => vec![malformed(e)],
            },
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
        if let Some(why) = h.incompatibility_with(self.version) {
            self.failed = true;
            return vec![Action::Fail {
                kind: ProblemKind::Incompatible,
                message: why,
            }];
        }
        self.remote_handshake = Some(h.clone());
        // From here on `local_offer` holds what we offer; the list of our feeds is not kept
        // twice (a hub holds thousands of feeds for each of hundreds of peers).
        let keys = self.local_feeds.keys();
        self.local_offer.take_from(&mut self.local_feeds);
        vec![
            Action::HandshakeReceived(h),
            Action::Send(Outgoing::Manifest(keys)),
        ]
    }

    fn on_manifest(&mut self, list: KeyList) -> Vec<Action> {
        let mut out = Vec::new();
        report_rejected(&mut out, wire::EXT_MANIFEST, &list.rejected);
        let mut fresh = Vec::new();
        let mut ignored = 0usize;
        for &key in &list.keys {
            if self.remote_offer.len() >= self.limits.max_remote_offer
                && !self.remote_offer.contains_key(&key)
            {
                ignored += 1;
                continue;
            }
            let meta = list.meta.find(&key);
            // Not asked for, replicating or declined already (checked first, so that a
            // manual session marks a new key pending as it records it).
            let eligible = !self.requested.contains(&key)
                && !self.active.contains(&key)
                && !self.declined.contains(&key);
            let pending = eligible && self.policy == Policy::Manual;
            if self.remote_offer.offer(key, meta, pending) && eligible {
                fresh.push(key);
            }
        }
        // The list itself goes into the report: a hub's manifest holds thousands of keys.
        out.push(Action::OfferReceived {
            keys: list.keys,
            meta: list.meta,
        });
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
            // Offers are reported (above) and left unanswered.
            Policy::Observe => {}
            Policy::Manual => {
                // Marked pending as they were recorded.
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
        if !refused.is_empty() && self.policy == Policy::Observe {
            out.push(Action::RefusedObserving(refused));
        } else if !refused.is_empty() {
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
    pub fn on_local_feed(&mut self, key: FeedKey) -> Vec<Action> {
        self.on_local_feeds([key])
    }

    /// Feeds appeared locally: offer, in one manifest, those the peer does not know yet.
    pub fn on_local_feeds(&mut self, keys: impl IntoIterator<Item = FeedKey>) -> Vec<Action> {
        self.on_numbered_local_feeds(keys.into_iter().map(|k| (k, None)), None)
    }

    /// [`Session::on_local_feeds`] for keys numbered by `numbers`
    /// ([`FeedNumbers::numbers`]): the list a hub tells all its peers is numbered once.
    pub fn on_numbered_local_feeds(
        &mut self,
        keys: impl IntoIterator<Item = (FeedKey, Option<usize>)>,
        numbers: Option<&Arc<FeedNumbers>>,
    ) -> Vec<Action> {
        let ready = self.is_ready();
        let mut fresh = Vec::new();
        for (key, n) in keys {
            if !ready {
                self.local_feeds.insert(key);
                continue;
            }
            if self.remote_offer.contains_key(&key) {
                continue;
            }
            let numbered = numbers
                .zip(n)
                .and_then(|(numbers, n)| self.local_offer.insert_numbered(numbers, n));
            if numbered.unwrap_or_else(|| self.local_offer.insert(key)) {
                fresh.push(key);
            }
        }
        if fresh.is_empty() {
            return Vec::new();
        }
        vec![Action::Send(Outgoing::Manifest(fresh))]
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
            self.remote_offer.unmark_pending(&key);
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

mod offer;
mod remote;
pub use offer::{FeedNumbers, KeySet};
pub use remote::RemoteOffer;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
