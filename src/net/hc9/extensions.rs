//! Stream-level extensions (channel 0), as `hypercore-protocol` 8 and `abstract-extension`
//! number them: each side keeps its extension names sorted, an extension's id is its index
//! in that list, and the list is announced in an Options message on channel 0 before the
//! first extension message that follows a change.
//!
//! A receiver translates an id through the sender's latest Options. Options may be sent
//! again at any time, and then replace the mapping; an id outside the list, or any id before
//! an Options, names nothing and the message is dropped.

use super::message::{Extension, Message, Options};

/// JavaScript's `<` on strings: UTF-16 code units, which differs from Rust's byte order only
/// for names beyond the Basic Multilingual Plane.
fn js_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Our extensions.
#[derive(Debug, Clone, Default)]
pub struct LocalExtensions {
    names: Vec<String>,
    /// Whether the peer has been told the current list.
    announced: bool,
}

impl LocalExtensions {
    /// No extensions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The given extensions.
    pub fn with<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut ext = Self::new();
        for n in names {
            ext.add(n);
        }
        ext
    }

    /// Registers an extension (again: no change). Ids of names after it in order shift up,
    /// so the list is announced again before the next extension message.
    pub fn add(&mut self, name: impl Into<String>) {
        let name = name.into();
        if let Err(at) = self.names.binary_search_by(|n| js_order(n, &name)) {
            self.names.insert(at, name);
            self.announced = false;
        }
    }

    /// The names, in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The id of an extension, if registered.
    pub fn id(&self, name: &str) -> Option<u64> {
        self.names
            .binary_search_by(|n| js_order(n, name))
            .ok()
            .map(|i| i as u64)
    }

    /// The Options that announce the list (stream-level Options carry no `ack`); from now on
    /// the peer knows it.
    pub fn options(&mut self) -> Options {
        self.announced = true;
        Options {
            extensions: self.names.clone(),
            ack: None,
        }
    }

    /// The channel-0 messages that send `payload` as extension `name`: an Options first if
    /// the list changed since it was last announced. `None` if `name` is not registered.
    pub fn send(&mut self, name: &str, payload: Vec<u8>) -> Option<Vec<Message>> {
        let id = self.id(name)?;
        let mut out = Vec::with_capacity(2);
        if !self.announced {
            out.push(Message::Options(self.options()));
        }
        out.push(Message::Extension(Extension { id, payload }));
        Some(out)
    }
}

/// The peer's extensions, as its latest Options announced them.
#[derive(Debug, Clone, Default)]
pub struct RemoteExtensions {
    names: Option<Vec<String>>,
}

impl RemoteExtensions {
    /// Nothing announced yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the peer's Options on channel 0, replacing what it announced before.
    pub fn on_options(&mut self, options: &Options) {
        self.names = Some(options.extensions.clone());
    }

    /// The names the peer announced last, if any.
    pub fn names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// The name of the peer's extension `id`, or `None` if the id names nothing (then the
    /// message is dropped, as JavaScript drops it).
    pub fn name(&self, id: u64) -> Option<&str> {
        let names = self.names.as_ref()?;
        names.get(usize::try_from(id).ok()?).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTIFEED: [&str; 4] = [
        "MULTIFEED_REQUEST_FEEDS",
        "MULTIFEED_HANDSHAKE",
        "MULTIFEED_REPLICATE_FEEDS",
        "MULTIFEED_MANIFEST",
    ];

    #[test]
    fn ids_are_indexes_in_sorted_order() {
        let mut ext = LocalExtensions::with(MULTIFEED);
        assert_eq!(ext.id("MULTIFEED_HANDSHAKE"), Some(0));
        assert_eq!(ext.id("MULTIFEED_MANIFEST"), Some(1));
        assert_eq!(ext.id("MULTIFEED_REPLICATE_FEEDS"), Some(2));
        assert_eq!(ext.id("MULTIFEED_REQUEST_FEEDS"), Some(3));
        // Cabal's own: lower case sorts after upper case.
        ext.add("peer-id");
        assert_eq!(ext.id("peer-id"), Some(4));
        assert_eq!(ext.id("nope"), None);
        // JavaScript order is by UTF-16 code unit: U+FF5E sorts after U+1F600.
        let ext = LocalExtensions::with(["\u{ff5e}", "\u{1f600}"]);
        assert_eq!(ext.names(), ["\u{1f600}", "\u{ff5e}"]);
    }

    #[test]
    fn options_go_first_and_again_after_a_change() {
        let mut ext = LocalExtensions::with(MULTIFEED);
        let first = ext.send("MULTIFEED_HANDSHAKE", b"{}".to_vec()).unwrap();
        assert_eq!(first.len(), 2);
        let Message::Options(o) = &first[0] else {
            panic!()
        };
        assert_eq!(o.extensions[0], "MULTIFEED_HANDSHAKE");
        assert_eq!(o.ack, None);
        let again = ext.send("MULTIFEED_MANIFEST", b"{}".to_vec()).unwrap();
        assert_eq!(
            again,
            [Message::Extension(Extension {
                id: 1,
                payload: b"{}".to_vec()
            })]
        );
        ext.add("MULTIFEED_MANIFEST");
        assert_eq!(ext.send("MULTIFEED_MANIFEST", vec![]).unwrap().len(), 1);
        // A name before the others shifts every id, so the list goes out again.
        ext.add("A");
        let shifted = ext.send("MULTIFEED_MANIFEST", vec![]).unwrap();
        assert!(matches!(&shifted[0], Message::Options(o) if o.extensions[0] == "A"));
        assert!(matches!(&shifted[1], Message::Extension(e) if e.id == 2));
        assert!(ext.send("unregistered", vec![]).is_none());
    }

    #[test]
    fn remote_ids_follow_the_latest_options() {
        let mut remote = RemoteExtensions::new();
        assert_eq!(remote.name(0), None);
        let mut sender = LocalExtensions::with(MULTIFEED);
        remote.on_options(&sender.options());
        assert_eq!(remote.name(3), Some("MULTIFEED_REQUEST_FEEDS"));
        assert_eq!(remote.name(4), None);
        assert_eq!(remote.name(u64::MAX), None);
        sender.add("peer-id");
        remote.on_options(&sender.options());
        assert_eq!(remote.name(4), Some("peer-id"));
        remote.on_options(&Options::default());
        assert_eq!(remote.name(0), None);
        assert_eq!(remote.names(), Some(&[][..]));
    }
}
