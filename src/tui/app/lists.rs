//! What each list shows: the peers (searched and sorted), the selected peer, and the rows of
//! the shown pane.

use super::*;

impl App {
    fn peer_passes(&self, p: &PeerView, f: &str) -> bool {
        f.is_empty()
            || p.addr.contains(f)
            || p.remote_public_key.starts_with(f)
            || p.name.as_ref().is_some_and(|n| n.starts_with(f))
            || p.state().contains(f)
            || format!("#{}", p.id) == f
    }

    /// The peers as the list shows them: filtered, then sorted.
    pub fn peers(&self) -> Vec<&PeerView> {
        let f = self.peer_filter.to_lowercase();
        let mut v: Vec<&PeerView> = self
            .model()
            .peers
            .values()
            .filter(|p| self.peer_passes(p, &f))
            .collect();
        match self.sort {
            PeerSort::Id => {}
            PeerSort::Rate => v.sort_by(|a, b| b.rate().total_cmp(&a.rate())),
            PeerSort::Pending => v.sort_by_key(|p| std::cmp::Reverse(p.pending())),
            PeerSort::State => v.sort_by_key(|p| (p.disconnected.is_some(), p.state())),
        }
        v
    }

    /// The selected peer: the one chosen, while the list shows it; else the first listed.
    pub fn selected_peer(&self) -> Option<&PeerView> {
        let f = self.peer_filter.to_lowercase();
        if let Some(p) = self.peer_id.and_then(|id| self.model().peers.get(&id)) {
            if self.peer_passes(p, &f) {
                return Some(p);
            }
        }
        // The first row of the sorted list, found in one pass: with a thousand peers and none
        // chosen yet, sorting the whole list on every call was most of a frame.
        let mut passing = self
            .model()
            .peers
            .values()
            .filter(|p| self.peer_passes(p, &f));
        match self.sort {
            PeerSort::Id => passing.next(),
            PeerSort::Rate => passing.min_by(|a, b| b.rate().total_cmp(&a.rate())),
            PeerSort::Pending => passing.min_by_key(|p| std::cmp::Reverse(p.pending())),
            PeerSort::State => passing.min_by_key(|p| (p.disconnected.is_some(), p.state())),
        }
    }

    /// The selected peer's row in `list` (as [`App::peers`] returns it).
    pub fn peer_index(&self, list: &[&PeerView]) -> usize {
        self.selected_peer()
            .and_then(|s| list.iter().position(|p| p.id == s.id))
            .unwrap_or(0)
    }

    /// The keys listed in the current pane, in display order.
    pub fn pane_keys(&self) -> Vec<FeedKey> {
        let Some(p) = self.selected_peer() else {
            return Vec::new();
        };
        match self.pane {
            Pane::Offered => p.remote_offer.keys().copied().collect(),
            Pane::Requested => p.requested.iter().copied().collect(),
            Pane::Active => p.active.keys().copied().collect(),
            Pane::OurOffer => p.local_offer.iter().copied().collect(),
            Pane::Wire | Pane::Log => Vec::new(),
        }
    }

    /// Wire lines of the selected peer that pass the filter.
    pub fn wire_lines(&self) -> Vec<&WireLine> {
        let f = self.filter.to_lowercase();
        let Some(p) = self.selected_peer() else {
            return Vec::new();
        };
        p.wire.iter().filter(|w| wire_passes(w, &f)).collect()
    }

    /// Log lines that pass the filter (and concern the selected peer, if it is chosen).
    pub fn log_lines(&self) -> Vec<&LogLine> {
        let f = self.filter.to_lowercase();
        self.model()
            .log
            .iter()
            .filter(|l| log_passes(l, &f))
            .collect()
    }

    pub(super) fn pane_len(&self) -> usize {
        match self.pane {
            Pane::Log => self.log_lines().len(),
            Pane::Wire => self.wire_lines().len(),
            _ => self.pane_keys().len(),
        }
    }

    /// Whether the shown pane keeps its last line selected as lines arrive.
    pub fn follows(&self) -> bool {
        self.follow && matches!(self.pane, Pane::Log | Pane::Wire)
    }

    /// The selected row of a pane list `len` long: the last one while following.
    pub fn selected_row(&self, len: usize) -> usize {
        if len == 0 {
            0
        } else if self.follows() {
            len - 1
        } else {
            self.row.min(len - 1)
        }
    }
}

/// Whether a log line passes the (lowercase) filter.
pub(super) fn log_passes(l: &LogLine, f: &str) -> bool {
    f.is_empty()
        || l.text.to_lowercase().contains(f)
        || l.kind.contains(f)
        || l.peer.is_some_and(|p| format!("#{p}") == f)
}

/// Whether a wire line passes the (lowercase) filter.
pub(super) fn wire_passes(w: &WireLine, f: &str) -> bool {
    f.is_empty()
        || w.kind.to_lowercase().contains(f)
        || w.channel.contains(f)
        || (f == "in" && w.incoming)
        || (f == "out" && !w.incoming)
        || w.summary.to_lowercase().contains(f)
}
