//! Step mode and wire tracing: what a person debugging an exchange sees of a connection.

use super::{Conn, Out, TRACE_HEX_BYTES};
use crate::event::{Direction, Event};
use crate::frame::{self, Item, Msg};

impl<T> Conn<T> {
    /// Starts holding received messages.
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Lets the oldest held message through and keeps holding.
    pub fn step(&mut self) {
        self.holding = true;
        self.releasing = (self.releasing + 1).min(self.held.len());
    }

    /// Lets every held message through and stops holding.
    pub fn resume(&mut self) {
        self.holding = false;
        self.releasing = self.held.len();
    }

    /// Holds when a message of `kind` arrives; an empty kind clears every breakpoint.
    pub fn set_breakpoint(&mut self, kind: String) {
        if kind.is_empty() {
            self.breakpoints.clear();
        } else {
            self.breakpoints.insert(kind);
        }
    }

    /// The type of a received item, with compressed extension names spelled out.
    pub(super) fn item_kind(&mut self, item: &Item) -> String {
        if let Item::Message(ch, Ok(Msg::Extension { name, .. })) = item {
            if name.is_empty() {
                let last = self.last_ext_in.get(ch).cloned().unwrap_or_default();
                return format!("Extension({last})");
            }
        }
        self.note_extension_name(item);
        item.kind()
    }

    /// Remembers the last extension name on each channel, which a compressed (empty) name
    /// repeats, so that a breakpoint set later still names such messages right.
    fn note_extension_name(&mut self, item: &Item) {
        if let Item::Message(ch, Ok(Msg::Extension { name, .. })) = item {
            // Only channels the peer opened: others cannot grow this map.
            let known = self.by_remote.contains_key(ch) || self.pending_by_remote.contains_key(ch);
            if !name.is_empty() && known {
                self.last_ext_in.insert(*ch, name.clone());
            }
        }
    }

    pub(super) fn channel_name(&self, local: Option<u64>) -> String {
        match local {
            None => "control".into(),
            Some(l) if l == self.root_local => "root".into(),
            Some(l) => match self.chans.get(&l) {
                Some(c) => hex::encode(&c.key[..4]),
                None => format!("channel {l}"),
            },
        }
    }

    pub(super) fn traced(
        &mut self,
        dir: Direction,
        local: Option<u64>,
        kind: String,
        bytes: &[u8],
        summary: String,
    ) {
        let ev = Event::Wire {
            peer: self.peer,
            dir,
            channel: self.channel_name(local),
            kind,
            bytes: bytes.len(),
            summary,
            hex: hex::encode(&bytes[..bytes.len().min(TRACE_HEX_BYTES)]),
        };
        self.event(ev);
    }

    /// A received item: traced, then held (step mode) or acted on.
    pub(super) fn receive_item(&mut self, item: Item) {
        // Most of what arrives is data: naming each item allocates, and only a person tracing
        // or stepping reads the name.
        if !self.trace && !self.holding && self.breakpoints.is_empty() {
            self.note_extension_name(&item);
            self.on_item(item);
            return;
        }
        let kind = self.item_kind(&item);
        if self.trace {
            let (local, bytes) = match &item {
                Item::Message(remote, Ok(m)) => (
                    self.by_remote.get(remote).copied(),
                    frame::encode_messages(&[(*remote, m.clone())]),
                ),
                Item::Open {
                    channel,
                    discovery_key,
                    capability,
                    ..
                } => {
                    let dk: [u8; 32] = discovery_key.as_slice().try_into().unwrap_or([0; 32]);
                    (
                        None,
                        frame::encode_open(*channel, &dk, &capability.unwrap_or([0; 32])),
                    )
                }
                Item::Close { channel } => (None, frame::encode_close(*channel)),
                Item::Reject { channel } => (None, frame::encode_reject(*channel)),
                Item::Message(..) => (None, Vec::new()),
            };
            self.traced(Direction::In, local, kind.clone(), &bytes, item.summary());
        }
        let stop_here = self
            .breakpoints
            .iter()
            .any(|b| kind == *b || kind == format!("Extension({b})"));
        if self.holding || stop_here {
            self.holding = true;
            self.event(Event::Held {
                peer: self.peer,
                kind,
                summary: item.summary(),
                waiting: self.held.len() + 1,
            });
            self.held_bytes += item.weight();
            self.held.push_back(item);
            return;
        }
        self.on_item(item);
    }

    /// Reports what is gathered, before it is sealed.
    pub(super) fn trace_out(&mut self) {
        for i in 0..self.out.len() {
            let (local, kind, bytes, summary) = match &self.out[i] {
                Out::Control(bytes) => {
                    let (kind, summary) = match frame::decode(bytes).ok().and_then(|mut v| v.pop())
                    {
                        Some(item) => (item.kind(), item.summary()),
                        None => ("Control".into(), String::new()),
                    };
                    (None, kind, bytes.clone(), summary)
                }
                Out::Msg(ch, m) => (
                    Some(*ch),
                    m.kind(),
                    frame::encode_messages(&[(*ch, m.clone())]),
                    format!("channel {ch}: {}", m.summary()),
                ),
            };
            self.traced(Direction::Out, local, kind, &bytes, summary);
        }
    }
}
