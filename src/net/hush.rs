//! How many warnings about one peer are shown: a burst, then a few a second. A peer that
//! sends millions of bad messages gets its first warnings shown and the rest counted, and
//! the count is told in one warning per kind; errors are never held back.

use std::time::Instant;

use crate::event::ProblemKind;

/// Warnings shown at once before the rate applies.
pub const BURST: f64 = 20.0;
/// Warnings shown per second after the burst.
pub const PER_SECOND: f64 = 2.0;

/// The warning budget of one connection.
#[derive(Debug)]
pub struct Hush {
    tokens: f64,
    at: Instant,
    held: Vec<(ProblemKind, u64)>,
}

impl Hush {
    /// A full budget.
    pub fn new(now: Instant) -> Hush {
        Hush {
            tokens: BURST,
            at: now,
            held: Vec::new(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * PER_SECOND).min(BURST);
        self.at = now;
    }

    /// Whether a warning of `kind` is shown now; if not, it is counted for a summary.
    pub fn admit(&mut self, kind: ProblemKind, now: Instant) -> bool {
        self.refill(now);
        if self.held.is_empty() && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        match self.held.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.held.push((kind, 1)),
        }
        false
    }

    /// The counts held back, each with its kind, once the budget allows one warning for
    /// them (or at once, when the connection ends: `all`).
    pub fn summaries(&mut self, now: Instant, all: bool) -> Vec<(ProblemKind, u64)> {
        self.refill(now);
        if self.held.is_empty() || (!all && self.tokens < 1.0) {
            return Vec::new();
        }
        self.tokens = (self.tokens - 1.0).max(0.0);
        std::mem::take(&mut self.held)
    }
}

/// The warning that tells `n` warnings of `kind` held back.
pub fn summary(kind: ProblemKind, n: u64) -> String {
    format!(
        "{n} more {kind} warning{} about this peer were counted, not shown one by one \
         (at most {BURST} at once, then {PER_SECOND} a second)",
        if n == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_shown_then_the_rest_is_counted_and_told_when_the_budget_allows() {
        let t0 = Instant::now();
        let mut h = Hush::new(t0);
        let shown = (0..1_000)
            .filter(|_| h.admit(ProblemKind::MalformedMessage, t0))
            .count();
        assert_eq!(shown, BURST as usize);
        assert!(!h.admit(ProblemKind::Limit, t0));
        assert!(h.summaries(t0, false).is_empty(), "no budget left yet");
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            h.summaries(later, false),
            [
                (ProblemKind::MalformedMessage, 1_000 - BURST as u64),
                (ProblemKind::Limit, 1)
            ]
        );
        assert!(h.summaries(later, true).is_empty(), "told once");
        // While counts wait for their summary, nothing jumps the queue.
        let mut h = Hush::new(t0);
        for _ in 0..=BURST as usize {
            h.admit(ProblemKind::BadData, t0);
        }
        assert!(!h.admit(ProblemKind::BadData, later));
        assert_eq!(h.summaries(t0, true), [(ProblemKind::BadData, 2)]);
        assert!(h.admit(ProblemKind::BadData, later));
    }
}
