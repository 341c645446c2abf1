//! The four multifeed extension messages: names, JSON bodies, key validation and size limits.
//!
//! Pure: no I/O. Every decoder takes untrusted bytes and returns either a value or a
//! [`WireError`] that says what was wrong; invalid keys inside an otherwise valid list are
//! dropped and reported, never fatal.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::Limits;

mod json;

/// Extension name of the handshake message.
pub const EXT_HANDSHAKE: &str = "MULTIFEED_HANDSHAKE";
/// Extension name of the manifest (offer) message.
pub const EXT_MANIFEST: &str = "MULTIFEED_MANIFEST";
/// Extension name of the request message.
pub const EXT_REQUEST_FEEDS: &str = "MULTIFEED_REQUEST_FEEDS";
/// Extension name of the replicate (answer) message.
pub const EXT_REPLICATE_FEEDS: &str = "MULTIFEED_REPLICATE_FEEDS";
/// Extension name Cabal adds beside multifeed's (`cabal-core/swarm.js`): `{"id": HEX}`, the
/// sender's own writer feed key, which Cabal uses as the peer's identity.
pub const EXT_CABAL_PEER_ID: &str = "peer-id";

/// The client name every compatible peer sends in its handshake.
pub const CLIENT: &str = "MULTIFEED";
/// The protocol version feedscope speaks; peers must share the major number.
pub const PROTOCOL_VERSION: &str = "5.0.0";
/// The protocol version multifeed 6 speaks on hypercore-protocol 8 (Cabal's wire).
pub const PROTOCOL_VERSION_HC9: &str = "4.0.0";

/// Most keys put in one sent manifest; larger offers are split over several messages.
pub const KEYS_PER_SENT_MANIFEST: usize = 10_000;

/// The multifeed key shared by every peer that uses multifeed's defaults.
pub const DEFAULT_MULTIFEED_KEY: &str =
    "bee80ff3a4ee5e727dc44197cb9d25bf8f19d50b0f3ad2984cfe5b7d14e75de7";

/// The value of each hex digit by its byte, and 0x10 for every byte that is not one.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// A 32-byte hypercore public key, shown and serialised as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FeedKey(pub [u8; 32]);

/// Four words rather than 32 bytes and their length: the keys of a hub's offers are hashed
/// by the ten thousand, into tables keyed by foldhash, whose words are cheaper than its bytes.
impl std::hash::Hash for FeedKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for word in self.0.chunks_exact(8) {
            state.write_u64(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
    }
}

/// The bytes' order, decided by the first eight as one number in all but a few cases: keys
/// are sorted and searched by the ten thousand (a hub's offers), and a call to `memcmp` for
/// each comparison cost more than the search.
impl Ord for FeedKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // As four big-endian words: a byte slice's order calls `memcmp`, which for keys that
        // are equal (the last step of every search that finds one) was a tenth of the
        // offers bench's samples.
        let words = |k: &FeedKey| -> [u64; 4] {
            std::array::from_fn(|i| {
                u64::from_be_bytes(k.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
            })
        };
        words(self).cmp(&words(other))
    }
}

impl PartialOrd for FeedKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl FeedKey {
    /// Parses 64 hex characters (either case); anything else is an error naming the input.
    pub fn parse(text: &str) -> Result<Self, WireError> {
        FeedKey::from_hex(text.as_bytes()).ok_or_else(|| WireError::BadKey(shorten(text)))
    }

    /// The key that 64 hex characters (either case) write, or `None`.
    fn from_hex(text: &[u8]) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        // By table: keys are parsed by the ten thousand from a hub's manifests.
        let mut bad = 0;
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let (hi, lo) = (
                HEX_DIGITS[usize::from(pair[0])],
                HEX_DIGITS[usize::from(pair[1])],
            );
            bad |= (hi | lo) & 0x10;
            *byte = (hi << 4) | (lo & 0x0f);
        }
        (bad == 0).then_some(FeedKey(out))
    }

    /// The key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        self.hex_in(&mut [0; 64]).to_string()
    }

    /// The key as 64 lowercase hex characters, written in `buf`: events of a busy hub
    /// write millions of keys, and the character-at-a-time `hex::encode` was a tenth of
    /// the time of its JSON printer.
    fn hex_in<'a>(&self, buf: &'a mut [u8; 64]) -> &'a str {
        hex::encode_to_slice(self.0, buf).expect("64 bytes hold 32 in hex");
        std::str::from_utf8(buf).expect("hex is ASCII")
    }

    /// The first eight hex characters, for compact display.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeedKey({})", self.short())
    }
}

impl fmt::Display for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for FeedKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.hex_in(&mut [0; 64]))
    }
}

impl<'de> Deserialize<'de> for FeedKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        FeedKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Longest offered name kept, in characters.
pub const MAX_OFFERED_NAME: usize = 64;

/// The `name` a peer's manifest metadata gives a feed, fit to show: control characters
/// dropped, at most [`MAX_OFFERED_NAME`] characters; `None` when there is no usable name.
pub fn offered_name(meta: &FeedMeta) -> Option<String> {
    let name = meta.get("name")?;
    let raw = name.as_str()?;
    let name: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_OFFERED_NAME)
        .collect();
    let name = name.trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        s.push('…');
    }
    s
}

/// Everything that can be wrong with a received multifeed message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The payload is larger than `Limits::max_extension_bytes`.
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is not JSON of the expected shape.
    #[error("malformed {name} body: {reason}")]
    Malformed {
        /// Extension name.
        name: &'static str,
        /// What the JSON parser or shape check said.
        reason: String,
    },
    /// A list carries more keys than `Limits::max_keys_per_message`.
    #[error("{count} keys in one message, over the limit of {limit}")]
    TooManyKeys {
        /// Keys in the message.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A key that is not 64 hex characters.
    #[error("invalid feed key {0:?}: a key is 64 hex characters")]
    BadKey(String),
}

/// The body of `MULTIFEED_HANDSHAKE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handshake {
    /// Client name; compatible peers say [`CLIENT`].
    pub client: String,
    /// Protocol version; compatible peers share the major number.
    pub version: String,
    /// Free-form data the application attached, shown but never interpreted.
    #[serde(rename = "userData", default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Value>,
    /// Whether the peer stays connected for new blocks and feeds; multifeed 6 passes its
    /// replication options along, so `false` means it ends the session once synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
}

impl Handshake {
    /// The handshake feedscope sends.
    pub fn ours() -> Self {
        Self::ours_with(PROTOCOL_VERSION)
    }

    /// The handshake feedscope sends when speaking protocol `version`.
    pub fn ours_with(version: &str) -> Self {
        Handshake {
            client: CLIENT.to_string(),
            version: version.to_string(),
            user_data: None,
            live: None,
        }
    }

    /// Why this handshake is incompatible with ours, if it is.
    pub fn incompatibility(&self) -> Option<String> {
        self.incompatibility_with(PROTOCOL_VERSION)
    }

    /// Why this handshake is incompatible with ours when we speak protocol `ours`.
    pub fn incompatibility_with(&self, ours: &str) -> Option<String> {
        if self.client != CLIENT {
            return Some(format!(
                "client mismatch: peer speaks {:?}, feedscope speaks {CLIENT:?}",
                self.client
            ));
        }
        let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
        if major(&self.version) != major(ours) {
            return Some(format!(
                "version mismatch: peer speaks {}, feedscope speaks {ours} (major versions differ)",
                self.version
            ));
        }
        None
    }
}

/// What an offerer says about one offered feed, for display only: its JSON text, on one
/// line.
///
/// The text sits in a buffer shared with the other feeds the same manifest described: a
/// peer offered ten thousand feeds by a hub keeps each one's in its table of offers, and a
/// buffer and a count of its own for each (two allocations, and an atomic count touched on
/// every copy) were about a tenth of the CPU of a 1,000-peer fan-in's uploaders.
#[derive(Clone)]
pub struct FeedMeta {
    /// JSON texts one after another.
    texts: Arc<str>,
    /// This one's place among them.
    span: Span,
}

/// Where one JSON text sits among others in a shared buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    at: u32,
    len: u32,
}

impl Span {
    /// The text at this span of `texts`.
    fn of(self, texts: &str) -> &str {
        let at = self.at as usize;
        &texts[at..at + self.len as usize]
    }
}

impl FeedMeta {
    /// `null`: no metadata (one shared text, since a bare offer has one per key).
    pub fn null() -> Self {
        static NULL: std::sync::OnceLock<FeedMeta> = std::sync::OnceLock::new();
        NULL.get_or_init(|| FeedMeta::alone("null")).clone()
    }

    /// `text`, valid JSON on one line, in a buffer of its own.
    fn alone(text: &str) -> Self {
        let len = u32::try_from(text.len()).expect("metadata within an extension's size");
        FeedMeta {
            texts: Arc::from(text),
            span: Span { at: 0, len },
        }
    }

    /// Kept as its JSON text: most offers' metadata is only ever written out again. Text
    /// that spans lines is written again on one, so that every event stays one line.
    fn from_raw(raw: &serde_json::value::RawValue) -> Self {
        let text = raw.get();
        // Searched many bytes at a time: a pattern of two chars decoded each character.
        if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
            return FeedMeta::from(serde_json::from_str::<Value>(text).unwrap_or(Value::Null));
        }
        FeedMeta::alone(text)
    }

    /// The metadata's JSON text.
    fn text(&self) -> &str {
        self.span.of(&self.texts)
    }

    /// The same text's span if it were at `at` of another buffer.
    fn span_at(&self, at: u32) -> Span {
        Span { at, ..self.span }
    }

    /// The metadata at `span` of `texts` (which a [`MetaRef`] holds).
    pub fn shared(texts: &Arc<str>, span: Span) -> Self {
        FeedMeta {
            texts: Arc::clone(texts),
            span,
        }
    }

    /// The metadata as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.text()).unwrap_or(Value::Null)
    }

    /// One field of the metadata, when it is an object that has it.
    pub fn get(&self, field: &str) -> Option<Value> {
        match self.value() {
            Value::Object(mut m) => m.remove(field),
            _ => None,
        }
    }

    /// Whether there is no metadata (`null`).
    pub fn is_null(&self) -> bool {
        self.text() == "null"
    }
}

/// The metadata texts of one manifest's feeds, gathered into one buffer.
#[derive(Default)]
struct MetaTexts {
    texts: Vec<u8>,
    /// Each feed's key, and where its text is.
    spans: Vec<(FeedKey, Span)>,
}

impl MetaTexts {
    /// Adds `key`'s metadata: `text`, a JSON value (its UTF-8 checked in [`MetaTexts::done`])
    /// that breaks lines when `multiline`.
    fn push(&mut self, key: FeedKey, text: &[u8], multiline: bool) -> Option<()> {
        let at = u32::try_from(self.texts.len()).ok()?;
        if multiline {
            let value: Value = serde_json::from_slice(text).ok()?;
            serde_json::to_writer(&mut self.texts, &value).ok()?;
        } else {
            self.texts.extend_from_slice(text);
        }
        let len = u32::try_from(self.texts.len()).ok()? - at;
        self.spans.push((key, Span { at, len }));
        Some(())
    }

    /// The metadata of the manifest; `None` if the texts are not UTF-8.
    fn done(self) -> Option<OfferMeta> {
        let texts: Arc<str> = Arc::from(String::from_utf8(self.texts).ok()?);
        Some(OfferMeta::from_spans(texts, self.spans))
    }
}

impl Default for FeedMeta {
    fn default() -> Self {
        FeedMeta::null()
    }
}

impl From<Value> for FeedMeta {
    fn from(v: Value) -> Self {
        FeedMeta::alone(&v.to_string())
    }
}

impl PartialEq for FeedMeta {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text() || self.value() == other.value()
    }
}

impl fmt::Debug for FeedMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl fmt::Display for FeedMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl Serialize for FeedMeta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written as the text it is. The text is JSON (read by this module's checks or
        // written by serde_json), and serde_json makes a raw value only by reading it.
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(self.text()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for FeedMeta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a value: events are internally tagged, which a raw value cannot be read
        // from. Manifests, where speed counts, take their metadata raw (`MetaEntries`).
        Value::deserialize(d).map(FeedMeta::from)
    }
}

/// What a manifest said of its feeds: metadata per key, kept sorted by key in one vector,
/// the texts in one buffer. A peer offered ten thousand feeds by a hub reads them in lists
/// of a hundred or so, whose metadata comes already in key order (as feedscope writes it);
/// a tree map of each list cost more than reading it. Written and read as a JSON object,
/// in key order.
#[derive(Clone)]
pub struct OfferMeta {
    texts: Arc<str>,
    entries: Vec<(FeedKey, Span)>,
}

/// One key's metadata inside an [`OfferMeta`], borrowed: what a table that keeps it takes
/// without a copy of the buffer's count for every key ([`MetaRef::texts`] to share it once).
#[derive(Clone, Copy)]
pub struct MetaRef<'a> {
    /// The buffer the text is in, shared by the manifest's keys.
    pub texts: &'a Arc<str>,
    /// The text's place in it.
    pub span: Span,
}

impl MetaRef<'_> {
    /// The metadata, owned.
    pub fn to_meta(self) -> FeedMeta {
        FeedMeta::shared(self.texts, self.span)
    }
}

impl Default for OfferMeta {
    fn default() -> Self {
        OfferMeta::from_spans(Arc::from(""), Vec::new())
    }
}

impl OfferMeta {
    /// From entries in any order; a key given twice keeps its last metadata, as a JSON
    /// object read into a map does.
    pub fn from_entries(entries: Vec<(FeedKey, FeedMeta)>) -> Self {
        let mut texts = String::with_capacity(entries.iter().map(|(_, m)| m.text().len()).sum());
        let spans = entries
            .iter()
            .map(|(key, meta)| {
                let at = u32::try_from(texts.len()).expect("metadata within an extension's size");
                texts.push_str(meta.text());
                (*key, meta.span_at(at))
            })
            .collect();
        OfferMeta::from_spans(Arc::from(texts), spans)
    }

    /// From texts and the spans of each key's, in any order (a key given twice keeps its
    /// last).
    fn from_spans(texts: Arc<str>, mut entries: Vec<(FeedKey, Span)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.sort_by_key(|e| e.0);
            // Of equal keys the last given stays: kept by a reversed scan.
            entries.reverse();
            entries.dedup_by_key(|e| e.0);
            entries.reverse();
        }
        OfferMeta { texts, entries }
    }

    /// The metadata of `key`, borrowed.
    pub fn find(&self, key: &FeedKey) -> Option<MetaRef<'_>> {
        self.entries
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| MetaRef {
                texts: &self.texts,
                span: self.entries[i].1,
            })
    }

    /// The metadata of `key`.
    pub fn get(&self, key: &FeedKey) -> Option<FeedMeta> {
        self.find(key).map(MetaRef::to_meta)
    }

    /// How many keys have metadata.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has metadata.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys and their metadata, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&FeedKey, FeedMeta)> {
        self.entries
            .iter()
            .map(|(k, span)| (k, FeedMeta::shared(&self.texts, *span)))
    }
}

impl FromIterator<(FeedKey, FeedMeta)> for OfferMeta {
    fn from_iter<I: IntoIterator<Item = (FeedKey, FeedMeta)>>(iter: I) -> Self {
        OfferMeta::from_entries(iter.into_iter().collect())
    }
}

impl PartialEq for OfferMeta {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for OfferMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for OfferMeta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for OfferMeta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<FeedKey, FeedMeta>::deserialize(d).map(|m| m.into_iter().collect())
    }
}

/// A decoded `MULTIFEED_MANIFEST`, or a key list of `REQUEST_FEEDS` / `REPLICATE_FEEDS`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyList {
    /// Valid keys in the order received, duplicates removed.
    pub keys: Vec<FeedKey>,
    /// Offer metadata per valid key (manifests only).
    pub meta: OfferMeta,
    /// Entries that were not valid keys, shortened for display.
    pub rejected: Vec<String>,
}

/// Decodes the handshake body.
pub fn decode_handshake(payload: &[u8], limits: &Limits) -> Result<Handshake, WireError> {
    check_size(payload, limits)?;
    serde_json::from_slice(payload).map_err(|e| WireError::Malformed {
        name: EXT_HANDSHAKE,
        reason: e.to_string(),
    })
}

/// Decodes a manifest body `{"keys":[…],"meta":{…}}`.
pub fn decode_manifest(payload: &[u8], limits: &Limits) -> Result<KeyList, WireError> {
    check_size(payload, limits)?;
    // A hub's manifests carry thousands of keys: they are read in place, without a `String`
    // for every key, and anything unusual takes the general paths below.
    if let Some(list) = decode_compact(payload, limits) {
        return list;
    }
    if let Ok(raw) = serde_json::from_slice::<RawManifest<'_>>(payload) {
        if let Some(list) = raw.decode(limits) {
            return list;
        }
    }
    decode_manifest_value(payload, limits)
}

/// A manifest as compact JSON writes it (feedscope's own, and `JSON.stringify`'s):
/// `{"keys":["<64 hex>",…]}` or `{"keys":[…],"meta":{"<64 hex>":<value>,…}}`, with no space
/// outside the values. Read in one pass: a peer offered ten thousand feeds by a hub reads
/// every key and every metadata value once, where the general path reads the text three
/// times. `None` for anything else (spaces, escapes, other members, a name that is not a
/// key), which the general paths read, reporting what they reject.
fn decode_compact(payload: &[u8], limits: &Limits) -> Option<Result<KeyList, WireError>> {
    let mut text = Compact(payload);
    text.literal(b"{\"keys\":[")?;
    let mut count = 0;
    // Room for as many keys as the text could hold.
    let room = (payload.len() / 67).min(limits.max_keys_per_message);
    let mut keys = OfferedKeys::with_capacity(room);
    if !text.eat(b']') {
        loop {
            let at = payload.len() - text.0.len() + 1;
            let key = text.quoted_key()?;
            count += 1;
            keys.add(key, at);
            if !text.eat(b',') {
                text.literal(b"]")?;
                break;
            }
        }
    }
    let mut meta = MetaTexts::default();
    if text.eat(b',') {
        text.literal(b"\"meta\":{")?;
        if !text.eat(b'}') {
            meta.texts.reserve(text.0.len());
            meta.spans.reserve(keys.keys.len());
            // The key the next entry names when the entries follow the keys' order.
            let mut next = 0;
            loop {
                let quoted = text.0.get(..66)?;
                let named = match keys.text(payload, next) {
                    // The same 64 characters as that key: the same key, checked already.
                    Some(hex)
                        if quoted[0] == b'"' && quoted[65] == b'"' && quoted[1..65] == *hex =>
                    {
                        text.0 = &text.0[66..];
                        Some(next)
                    }
                    _ => keys.find(&text.quoted_key()?),
                };
                text.literal(b":")?;
                let (value, multiline) = text.value()?;
                if let Some(i) = named {
                    meta.push(keys.keys[i], value, multiline)?;
                    next = i + 1;
                } else {
                    // Not kept, but the text must still be JSON.
                    std::str::from_utf8(value).ok()?;
                }
                if !text.eat(b',') {
                    text.literal(b"}")?;
                    break;
                }
            }
        }
    }
    text.literal(b"}")?;
    if !text.0.is_empty() {
        return None;
    }
    let meta = meta.done()?;
    // Only for a whole manifest: a broken one is malformed, whatever it holds.
    if count > limits.max_keys_per_message {
        return Some(Err(WireError::TooManyKeys {
            count,
            limit: limits.max_keys_per_message,
        }));
    }
    Some(Ok(KeyList {
        keys: keys.keys,
        meta,
        rejected: Vec::new(),
    }))
}

type KeyPlaces = std::collections::HashMap<FeedKey, usize, crate::FastHash>;

/// Adds `key` at `place` unless it is there; whether it was not.
fn insert_new(places: &mut KeyPlaces, key: FeedKey, place: usize) -> bool {
    match places.entry(key) {
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(place);
            true
        }
        std::collections::hash_map::Entry::Occupied(_) => false,
    }
}

/// The keys of a manifest being read, each once, with where each one's text is.
///
/// feedscope writes a manifest's keys in order and its metadata in the same order, so keys
/// that keep rising are known to differ without a set, and each metadata entry names the
/// key after the last one's: its text is compared with that key's instead of being decoded
/// and looked up. Anything else takes a set.
struct OfferedKeys {
    keys: Vec<FeedKey>,
    /// Where each key's 64 characters begin in the manifest.
    at: Vec<usize>,
    /// Every key and its place, once the keys stopped rising.
    seen: Option<KeyPlaces>,
}

impl OfferedKeys {
    fn with_capacity(room: usize) -> Self {
        OfferedKeys {
            keys: Vec::with_capacity(room),
            at: Vec::with_capacity(room),
            seen: None,
        }
    }

    /// Adds `key`, written at `at`, unless it came before.
    fn add(&mut self, key: FeedKey, at: usize) {
        let place = self.keys.len();
        let fresh = match (&mut self.seen, self.keys.last()) {
            (Some(seen), _) => insert_new(seen, key, place),
            (None, Some(last)) if *last >= key => {
                let mut seen =
                    KeyPlaces::with_capacity_and_hasher(self.keys.capacity(), Default::default());
                seen.extend(self.keys.iter().enumerate().map(|(i, k)| (*k, i)));
                let fresh = insert_new(&mut seen, key, place);
                self.seen = Some(seen);
                fresh
            }
            (None, _) => true,
        };
        if fresh {
            self.keys.push(key);
            self.at.push(at);
        }
    }

    /// The text of the `i`th key in `payload`, if there is one.
    fn text<'a>(&self, payload: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let at = *self.at.get(i)?;
        payload.get(at..at + 64)
    }

    /// Which key `key` is, if it was offered.
    fn find(&self, key: &FeedKey) -> Option<usize> {
        match &self.seen {
            // Rising: a binary search.
            None => self.keys.binary_search(key).ok(),
            Some(seen) => seen.get(key).copied(),
        }
    }
}

/// What is left of a compact manifest to read.
struct Compact<'a>(&'a [u8]);

impl<'a> Compact<'a> {
    /// Takes `b` if it comes next.
    fn eat(&mut self, b: u8) -> bool {
        match self.0.split_first() {
            Some((&first, rest)) if first == b => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// Takes `bytes` if they come next.
    fn literal(&mut self, bytes: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(bytes)?;
        Some(())
    }

    /// Takes `"<64 hex>"`.
    fn quoted_key(&mut self) -> Option<FeedKey> {
        let quoted = self.0.get(..66)?;
        if quoted[0] != b'"' || quoted[65] != b'"' {
            return None;
        }
        let key = FeedKey::from_hex(&quoted[1..65])?;
        self.0 = &self.0[66..];
        Some(key)
    }

    /// Takes one JSON value, as its text, and whether it breaks lines.
    fn value(&mut self) -> Option<(&'a [u8], bool)> {
        let found = json::value(self.0)?;
        let (value, rest) = self.0.split_at(found.len);
        self.0 = rest;
        Some((value, found.multiline))
    }
}

/// A manifest's parts as JSON text inside the payload.
#[derive(Deserialize)]
struct RawManifest<'a> {
    #[serde(borrow)]
    keys: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    meta: Option<&'a serde_json::value::RawValue>,
}

impl<'a> RawManifest<'a> {
    /// The list, or `None` where the general path must decide (no `keys` array, say).
    fn decode(self, limits: &Limits) -> Option<Result<KeyList, WireError>> {
        let items: Vec<&'a serde_json::value::RawValue> =
            serde_json::from_str(self.keys?.get()).ok()?;
        let keys = items.iter().map(|item| {
            let text = item.get();
            // `"` and 64 hex characters and `"`; a key written with escapes, or anything
            // else, is read as a value (text a raw value holds is always JSON).
            let quoted = text.len() == 66 && text.starts_with('"') && text.ends_with('"');
            match quoted.then(|| FeedKey::parse(&text[1..65]).ok()).flatten() {
                Some(key) => Ok(key),
                None => key_of(serde_json::from_str(text).unwrap_or(Value::Null)),
            }
        });
        let (mut list, seen) = match key_list_of(items.len(), keys, limits) {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        let meta = self.meta.map(|m| m.get().trim_start());
        if let Some(meta) = meta.filter(|m| m.starts_with('{')) {
            let MetaEntries(entries) = serde_json::from_str(meta).ok()?;
            list.meta = offered_meta(entries, &seen);
        }
        Some(Ok(list))
    }
}

/// The entries of a manifest's `meta` object, in order, their names borrowed where they can
/// be.
struct MetaEntries<'a>(Vec<(std::borrow::Cow<'a, str>, FeedMeta)>);

impl<'de> Deserialize<'de> for MetaEntries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = MetaEntries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(Name(k)) = map.next_key()? {
                    let raw: &'de serde_json::value::RawValue = map.next_value()?;
                    out.push((k, FeedMeta::from_raw(raw)));
                }
                Ok(MetaEntries(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// A JSON string, borrowed from the input unless it holds escapes.
struct Name<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(v.to_owned().into()))
            }
        }
        d.deserialize_str(Text)
    }
}

/// [`decode_manifest`] through a JSON value: what the fast path leaves, with its errors.
fn decode_manifest_value(payload: &[u8], limits: &Limits) -> Result<KeyList, WireError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| WireError::Malformed {
        name: EXT_MANIFEST,
        reason: e.to_string(),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(WireError::Malformed {
            name: EXT_MANIFEST,
            reason: "expected an object with a \"keys\" array".into(),
        });
    };
    let Some(Value::Array(keys)) = obj.remove("keys") else {
        return Err(WireError::Malformed {
            name: EXT_MANIFEST,
            reason: "missing \"keys\" array".into(),
        });
    };
    let (mut list, offered) = key_list_of(keys.len(), keys.into_iter().map(key_of), limits)?;
    if let Some(Value::Object(meta)) = obj.remove("meta") {
        list.meta = offered_meta(meta, &offered);
    }
    Ok(list)
}

/// The metadata entries named by keys of the list (`offered`, a set: a manifest of 10,000
/// keys is searched 10,000 times); names that are not keys, and keys not offered, are left
/// out.
fn offered_meta<N: AsRef<str>, V: Into<FeedMeta>>(
    entries: impl IntoIterator<Item = (N, V)>,
    offered: &KeySeen,
) -> OfferMeta {
    entries
        .into_iter()
        .filter_map(|(name, v)| FeedKey::parse(name.as_ref()).ok().map(|key| (key, v)))
        .filter(|(key, _)| offered.contains(key))
        .map(|(key, v)| (key, v.into()))
        .collect()
}

/// Decodes Cabal's `peer-id` body `{"id":"<64 hex>"}` into the key it names. Cabal itself
/// ignores an id that is not 32 bytes of hex; here it is an error the caller reports.
pub fn decode_peer_id(payload: &[u8], limits: &Limits) -> Result<FeedKey, WireError> {
    check_size(payload, limits)?;
    let malformed = |reason: String| WireError::Malformed {
        name: EXT_CABAL_PEER_ID,
        reason,
    };
    let value: Value = serde_json::from_slice(payload).map_err(|e| malformed(e.to_string()))?;
    let Some(Value::String(id)) = value.get("id") else {
        return Err(malformed("expected an object with an \"id\" string".into()));
    };
    FeedKey::parse(id)
        .map_err(|_| malformed(format!("id {:?} is not 64 hex characters", shorten(id))))
}

/// Encodes Cabal's `peer-id` body for our own writer feed: `{"id":"<64 hex>"}`.
pub fn encode_peer_id(key: &FeedKey) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "id": key.to_hex() })).expect("JSON of a string")
}

/// Decodes a bare key array, the body of `REQUEST_FEEDS` and `REPLICATE_FEEDS`.
pub fn decode_keys(
    name: &'static str,
    payload: &[u8],
    limits: &Limits,
) -> Result<KeyList, WireError> {
    check_size(payload, limits)?;
    let value: Value = serde_json::from_slice(payload).map_err(|e| WireError::Malformed {
        name,
        reason: e.to_string(),
    })?;
    let Value::Array(keys) = value else {
        return Err(WireError::Malformed {
            name,
            reason: "expected an array of keys".into(),
        });
    };
    key_list(keys, limits)
}

fn check_size(payload: &[u8], limits: &Limits) -> Result<(), WireError> {
    if payload.len() > limits.max_extension_bytes {
        return Err(WireError::TooLarge {
            size: payload.len(),
            limit: limits.max_extension_bytes,
        });
    }
    Ok(())
}

fn key_list(items: Vec<Value>, limits: &Limits) -> Result<KeyList, WireError> {
    key_list_of(items.len(), items.into_iter().map(key_of), limits).map(|(list, _)| list)
}

/// A list entry as a key, or as it is shown when rejected.
fn key_of(item: Value) -> Result<FeedKey, String> {
    match item {
        Value::String(s) => FeedKey::parse(&s).map_err(|_| shorten(&s)),
        other => Err(shorten(&other.to_string())),
    }
}

/// A set of keys a peer sent: a peer offered ten thousand feeds by a hub checks each of them
/// here.
type KeySeen = std::collections::HashSet<FeedKey, crate::FastHash>;

/// The keys of a list of `count` entries, each once, with the rejected ones; and the set of
/// the keys, to match metadata against.
fn key_list_of(
    count: usize,
    items: impl Iterator<Item = Result<FeedKey, String>>,
    limits: &Limits,
) -> Result<(KeyList, KeySeen), WireError> {
    if count > limits.max_keys_per_message {
        return Err(WireError::TooManyKeys {
            count,
            limit: limits.max_keys_per_message,
        });
    }
    let mut list = KeyList::default();
    let mut seen = KeySeen::with_capacity_and_hasher(count, Default::default());
    for item in items {
        match item {
            Ok(key) => {
                if seen.insert(key) {
                    list.keys.push(key);
                }
            }
            Err(shown) => list.rejected.push(shown),
        }
    }
    Ok((list, seen))
}

/// Encodes a handshake body.
pub fn encode_handshake(h: &Handshake) -> Vec<u8> {
    serde_json::to_vec(h).expect("a handshake always serialises")
}

/// Encodes one or more manifest bodies for `keys`, at most [`KEYS_PER_SENT_MANIFEST`] keys each;
/// an empty offer is one empty manifest, so the peer knows there is nothing. The keys go in
/// order, as their metadata does: a feedscope peer reads such a list without a set, and
/// each entry of its metadata without decoding the key it names (`decode_compact`).
pub fn encode_manifests(keys: &[FeedKey], meta: &BTreeMap<FeedKey, FeedMeta>) -> Vec<Vec<u8>> {
    if keys.is_empty() {
        return vec![br#"{"keys":[]}"#.to_vec()];
    }
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    /// `{"keys":[…],"meta":{…}}`, the metadata in key order and left out when empty.
    #[derive(Serialize)]
    struct Body<'a> {
        keys: &'a [FeedKey],
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        meta: BTreeMap<&'a FeedKey, &'a FeedMeta>,
    }
    keys.chunks(KEYS_PER_SENT_MANIFEST.max(1))
        .map(|chunk| {
            let meta = chunk
                .iter()
                .filter_map(|k| meta.get(k).map(|v| (k, v)))
                .collect();
            serde_json::to_vec(&Body { keys: chunk, meta }).expect("a manifest always serialises")
        })
        .collect()
}

/// Encodes a bare key array.
pub fn encode_keys(keys: &[FeedKey]) -> Vec<u8> {
    serde_json::to_vec(keys).expect("keys always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> FeedKey {
        FeedKey([n; 32])
    }

    #[test]
    fn handshake_bytes_match_multifeed() {
        let bytes = encode_handshake(&Handshake::ours());
        assert_eq!(bytes, br#"{"client":"MULTIFEED","version":"5.0.0"}"#);
        assert_eq!(bytes.len(), 40);
    }

    #[test]
    fn version_major_mismatch_is_incompatible() {
        let mut h = Handshake::ours();
        h.version = "4.0.0".into();
        assert!(h.incompatibility().unwrap().contains("version mismatch"));
        h.version = "5.9.1".into();
        assert!(h.incompatibility().is_none());
        h.client = "OTHER".into();
        assert!(h.incompatibility().unwrap().contains("client mismatch"));
    }

    #[test]
    fn invalid_keys_are_dropped_with_a_report() {
        let body = format!(
            r#"{{"keys":["{}","zz","{}",42,"{}"],"meta":{{"{}":{{"name":"a"}},"nothex":1}}}}"#,
            key(1),
            "g".repeat(64),
            key(2),
            key(1)
        );
        let list = decode_manifest(body.as_bytes(), &Limits::DEFAULT).unwrap();
        assert_eq!(list.keys, vec![key(1), key(2)]);
        assert_eq!(list.rejected.len(), 3);
        assert_eq!(list.meta.len(), 1);
    }

    #[test]
    fn duplicate_keys_are_listed_once() {
        let body = encode_keys(&[key(3), key(3), key(4)]);
        let list = decode_keys(EXT_REQUEST_FEEDS, &body, &Limits::DEFAULT).unwrap();
        assert_eq!(list.keys, vec![key(3), key(4)]);
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        assert!(matches!(
            decode_manifest(b"{not json", &Limits::DEFAULT),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            decode_manifest(b"[]", &Limits::DEFAULT),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            decode_keys(EXT_REQUEST_FEEDS, br#"{"keys":[]}"#, &Limits::DEFAULT),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn oversized_messages_are_refused() {
        let big = vec![b' '; Limits::DEFAULT.max_extension_bytes + 1];
        assert_eq!(
            decode_manifest(&big, &Limits::DEFAULT),
            Err(WireError::TooLarge {
                size: Limits::DEFAULT.max_extension_bytes + 1,
                limit: Limits::DEFAULT.max_extension_bytes
            })
        );
        let many: Vec<FeedKey> = (0..=Limits::DEFAULT.max_keys_per_message as u32)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_le_bytes());
                FeedKey(k)
            })
            .collect();
        let body = encode_keys(&many);
        assert!(body.len() < Limits::DEFAULT.max_extension_bytes * 2);
        // The body is over the byte limit too; either refusal is a clear error.
        assert!(decode_keys(EXT_REQUEST_FEEDS, &body, &Limits::DEFAULT).is_err());
    }

    #[test]
    fn large_offers_are_split_into_several_manifests() {
        let keys: Vec<FeedKey> = (0..(KEYS_PER_SENT_MANIFEST * 2 + 1))
            .map(|i| {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&(i as u64).to_le_bytes());
                FeedKey(k)
            })
            .collect();
        let bodies = encode_manifests(&keys, &BTreeMap::new());
        assert_eq!(bodies.len(), 3);
        let total: usize = bodies
            .iter()
            .map(|b| decode_manifest(b, &Limits::DEFAULT).unwrap().keys.len())
            .sum();
        assert_eq!(total, keys.len());
        assert!(bodies
            .iter()
            .all(|b| b.len() < Limits::DEFAULT.max_extension_bytes));
    }

    #[test]
    fn an_empty_offer_is_one_empty_manifest() {
        let bodies = encode_manifests(&[], &BTreeMap::new());
        assert_eq!(bodies, vec![br#"{"keys":[]}"#.to_vec()]);
        assert!(decode_manifest(&bodies[0], &Limits::DEFAULT)
            .unwrap()
            .keys
            .is_empty());
    }

    #[test]
    fn feed_key_round_trips_as_hex() {
        let k = key(0xab);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        let back: FeedKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, k);
        assert!(FeedKey::parse(&"AB".repeat(32)).is_ok());
        assert!(FeedKey::parse("ab").is_err());
    }
}

#[cfg(test)]
mod manifest_paths {
    //! The manifest read in place against the same manifest read as a JSON value.

    use proptest::prelude::*;

    use super::*;

    /// One entry of a `keys` array, as JSON text.
    fn item() -> impl Strategy<Value = String> {
        prop_oneof![
            // Keys from a small set, so that some repeat.
            (0u8..6).prop_map(|n| format!("\"{}\"", FeedKey([n; 32]).to_hex())),
            (0u8..6).prop_map(|n| format!("\"{}\"", FeedKey([n; 32]).to_hex().to_uppercase())),
            // A key written with an escape, still a key.
            (0u8..6).prop_map(|n| format!("\"\\u0030{}\"", &FeedKey([n; 32]).to_hex()[1..])),
            "[0-9a-f]{0,70}".prop_map(|s| format!("\"{s}\"")),
            Just("\"x\\\"y\"".to_string()),
            Just("null".to_string()),
            Just("17".to_string()),
            Just("[\"a\", {}]".to_string()),
        ]
    }

    /// A key of a `keys` array, from a small set so that some repeat, as JSON text.
    fn key_item() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u8..6).prop_map(|n| format!("\"{}\"", FeedKey([n; 32]).to_hex())),
            (0u8..6).prop_map(|n| format!("\"{}\"", FeedKey([n; 32]).to_hex().to_uppercase())),
        ]
    }

    /// A `meta` member, or nothing.
    fn meta() -> impl Strategy<Value = String> {
        let entry = (0u8..8, 0u32..3).prop_map(|(n, v)| {
            let value = ["null", "{\"name\":\"a \\\"b\\\"\",\"length\":3}", "[1,2]"][v as usize];
            format!("\"{}\":{value}", FeedKey([n; 32]).to_hex())
        });
        prop_oneof![
            Just(String::new()),
            Just(",\"meta\":null".to_string()),
            Just(",\"meta\":[1]".to_string()),
            proptest::collection::vec(entry, 0..6)
                .prop_map(|e| format!(",\"meta\": {{{}}}", e.join(","))),
        ]
    }

    #[test]
    fn metadata_written_over_several_lines_is_reported_on_one() {
        let key = FeedKey([7; 32]).to_hex();
        let body = format!("{{\"keys\":[\"{key}\"],\"meta\":{{\"{key}\":{{\n\"name\": \"a\",\r\n\"length\": 2}}}}}}");
        let list = decode_manifest(body.as_bytes(), &Limits::DEFAULT).unwrap();
        let meta = list.meta.get(&FeedKey([7; 32])).unwrap();
        assert_eq!(meta.to_string(), r#"{"length":2,"name":"a"}"#);
        assert_eq!(meta.get("name"), Some(Value::from("a")));
        let compact = format!("{{\"keys\":[\"{key}\"],\"meta\":{{\"{key}\":{{\"name\":\"a\"}}}}}}");
        let list = decode_manifest(compact.as_bytes(), &Limits::DEFAULT).unwrap();
        assert_eq!(
            list.meta.get(&FeedKey([7; 32])).unwrap().to_string(),
            r#"{"name":"a"}"#
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn keys_order_as_their_bytes_do(
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
            shared in 0usize..=32,
        ) {
            // Often the same first bytes, where the order is decided past them.
            let mut b = b;
            b[..shared].copy_from_slice(&a[..shared]);
            prop_assert_eq!(FeedKey(a).cmp(&FeedKey(b)), a.cmp(&b));
            prop_assert_eq!(FeedKey(a) == FeedKey(b), a == b);
        }

        #[test]
        fn keys_parse_as_the_hex_crate_reads_them(
            digits in "[0-9a-fA-F]{63,65}",
            at in 0usize..128,
            other in prop_oneof![Just('g'), Just('/'), Just(':'), Just('@'), Just('`'), Just('G'), Just('é'), any::<char>()],
        ) {
            // Hex digits, with one character (or none, past the end) replaced.
            let text: String = digits
                .chars()
                .enumerate()
                .map(|(i, c)| if i == at { other } else { c })
                .collect();
            let mut want = [0u8; 32];
            let want = match text.len() == 64 && hex::decode_to_slice(&text, &mut want).is_ok() {
                true => Some(FeedKey(want)),
                false => None,
            };
            prop_assert_eq!(FeedKey::parse(&text).ok(), want);
        }

        #[test]
        fn both_ways_of_reading_a_manifest_agree(
            items in proptest::collection::vec(item(), 0..12),
            meta in meta(),
            keys_first in any::<bool>(),
            most in 0usize..14,
        ) {
            let keys = format!("\"keys\":[{}]", items.join(", "));
            let body = match keys_first {
                true => format!("{{{keys}{meta}, \"other\": 1}}"),
                false => format!("{{\"other\": 1{meta},{keys}}}"),
            };
            let limits = Limits { max_keys_per_message: most, ..Limits::DEFAULT };
            prop_assert_eq!(
                decode_manifest(body.as_bytes(), &limits),
                decode_manifest_value(body.as_bytes(), &limits)
            );
        }

        /// What feedscope writes (keys in order, their metadata in the same order) reads
        /// back whole, as the general path reads it.
        #[test]
        fn a_manifest_feedscope_writes_reads_back(
            keys in proptest::collection::btree_set(0u8..40, 0..30),
            named in proptest::collection::vec(any::<bool>(), 40),
        ) {
            // Given in another order than the one they are written in.
            let keys: Vec<FeedKey> = keys.iter().rev().map(|&n| FeedKey([n; 32])).collect();
            let meta: BTreeMap<FeedKey, FeedMeta> = keys
                .iter()
                .filter(|k| named[usize::from(k.0[0])])
                .map(|k| (*k, serde_json::json!({ "name": k.0[0], "length": 100 }).into()))
                .collect();
            let body = encode_manifests(&keys, &meta).remove(0);
            let list = decode_compact(&body, &Limits::DEFAULT).expect("compact").unwrap();
            let mut sorted = keys.clone();
            sorted.sort();
            prop_assert_eq!(&list.keys, &sorted);
            prop_assert_eq!(list.meta.len(), meta.len());
            for (k, m) in &meta {
                prop_assert_eq!(list.meta.get(k), Some(m.clone()));
            }
            prop_assert_eq!(Ok(list), decode_manifest_value(&body, &Limits::DEFAULT));
        }

        /// Compact text, as feedscope and `JSON.stringify` write it, read in one pass: the
        /// same as the general path, whatever it holds, and with a byte cut or changed
        /// anywhere.
        #[test]
        fn a_compact_manifest_reads_as_the_general_path_reads_it(
            items in prop_oneof![
                proptest::collection::vec(key_item(), 0..12),
                proptest::collection::vec(item(), 0..12),
            ],
            meta in meta(),
            most in 0usize..14,
            cut in any::<prop::sample::Index>(),
            change in prop_oneof![Just(None), any::<u8>().prop_map(Some)],
        ) {
            let meta = meta.replace(": ", ":");
            let mut body = format!("{{\"keys\":[{}]{meta}}}", items.join(",")).into_bytes();
            match change {
                Some(b) if !body.is_empty() => {
                    let at = cut.index(body.len());
                    body[at] = b;
                }
                Some(_) => {}
                None if items.len() % 3 == 2 => body.truncate(cut.index(body.len() + 1)),
                None => {}
            }
            let limits = Limits { max_keys_per_message: most, ..Limits::DEFAULT };
            let general = || decode_manifest_value(&body, &limits);
            prop_assert_eq!(decode_manifest(&body, &limits), general());
            if let Some(compact) = decode_compact(&body, &limits) {
                prop_assert_eq!(compact, general());
            }
        }
    }

    #[test]
    fn compact_manifests_take_the_one_pass_path() {
        let (a, b) = (FeedKey([1; 32]).to_hex(), FeedKey([2; 32]).to_hex());
        let limits = Limits::DEFAULT;
        let body = format!(
            "{{\"keys\":[\"{b}\",\"{a}\",\"{b}\"],\"meta\":{{\"{b}\":{{\"name\":\"x\"}},\"{a}\":1,\"{}\":2,\"{a}\":[3]}}}}",
            FeedKey([9; 32]).to_hex()
        );
        let list = decode_compact(body.as_bytes(), &limits).unwrap().unwrap();
        assert_eq!(list.keys, vec![FeedKey([2; 32]), FeedKey([1; 32])]);
        assert_eq!(list.meta.len(), 2, "metadata of offered keys only");
        assert_eq!(
            list.meta.get(&FeedKey([1; 32])).unwrap().to_string(),
            "[3]",
            "the last wins"
        );
        assert_eq!(
            list.meta.get(&FeedKey([2; 32])).unwrap().to_string(),
            r#"{"name":"x"}"#
        );
        assert_eq!(
            Some(Ok(list)),
            Some(decode_manifest_value(body.as_bytes(), &limits))
        );
        let bare = format!("{{\"keys\":[\"{a}\"]}}");
        assert!(decode_compact(bare.as_bytes(), &limits).is_some());
        for other in [
            format!("{{\"keys\": [\"{a}\"]}}"),
            format!("{{\"keys\":[\"{a}\"]}} "),
            format!("{{\"meta\":{{}},\"keys\":[\"{a}\"]}}"),
            format!("{{\"keys\":[\"{}\"]}}", &a[1..]),
            format!("{{\"keys\":[\"{a}\"],\"meta\":{{\"{a}\": 1}}}}"),
        ] {
            assert!(
                decode_compact(other.as_bytes(), &limits).is_none(),
                "{other}"
            );
        }
        let over = Limits {
            max_keys_per_message: 1,
            ..Limits::DEFAULT
        };
        let two = format!("{{\"keys\":[\"{a}\",\"{a}\"]}}");
        assert!(matches!(
            decode_compact(two.as_bytes(), &over),
            Some(Err(WireError::TooManyKeys { count: 2, limit: 1 }))
        ));
    }
}
