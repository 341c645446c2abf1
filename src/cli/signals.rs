//! Quit signals: SIGTERM, SIGHUP and SIGINT end a front end the way `quit` does.

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM, SIGHUP and SIGINT, caught from [`QuitSignals::catch`] on: each asks for the clean
/// shutdown that `quit` (headless) or ctrl-c (UI) does, instead of ending the process with the
/// terminal and storage as they are.
pub(crate) struct QuitSignals {
    term: Signal,
    hup: Signal,
    int: Signal,
}

impl QuitSignals {
    pub(crate) fn catch() -> Result<QuitSignals> {
        let catch = |kind| signal(kind).context("cannot catch signals");
        Ok(QuitSignals {
            term: catch(SignalKind::terminate())?,
            hup: catch(SignalKind::hangup())?,
            int: catch(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next of them (one that came since `catch` counts).
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
