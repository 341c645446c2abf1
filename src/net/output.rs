//! What a connection core asks its driver (`net::peer`) to act on, in order: the same for
//! every wire generation, so that the session, the curator and everything above them do not
//! know which wire a peer speaks.

use hypercore_protocol::Message;

use crate::event::Event;
use crate::wire::FeedKey;

/// What the connection asks its driver to act on, in order.
#[derive(Debug)]
pub enum Output<T, M = Message> {
    /// An event to publish as it is.
    Event(Event),
    /// The root channel is open on both sides: the multifeed exchange starts.
    RootOpened,
    /// An extension message arrived on the root channel.
    RootExtension {
        /// Its name; empty means "the same as the previous one".
        name: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A feed channel is open on both sides.
    FeedOpened {
        /// Our id of the channel.
        local: u64,
    },
    /// A replication message arrived on an open feed channel.
    FeedMessage {
        /// Our id of the channel.
        local: u64,
        /// The message.
        msg: M,
    },
    /// The peer closed a feed channel; we closed ours and hand its payload back.
    FeedClosed {
        /// The feed.
        key: FeedKey,
        /// What the channel carried.
        payload: T,
    },
}
