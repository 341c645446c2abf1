//! Keys and the mouse: what a press or a click does, and moving through lists.

use super::*;

impl App {
    /// Handles a terminal event; returns the commands for the engine.
    pub fn on_terminal(&mut self, ev: &TermEvent) -> Vec<Command> {
        match ev {
            TermEvent::Key(k) if k.kind != ratatui::crossterm::event::KeyEventKind::Release => {
                self.on_key(k, ev)
            }
            TermEvent::Mouse(m) => {
                self.on_mouse(m);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    pub(super) fn on_mouse(&mut self, m: &MouseEvent) {
        let at = Position::new(m.column, m.row);
        let r = self.regions;
        match m.kind {
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let by = if m.kind == MouseEventKind::ScrollDown {
                    1
                } else {
                    -1
                };
                if self.help {
                    self.scroll_help(Move::By(by * 3));
                } else if r.peers.contains(at) {
                    self.move_peer(Move::By(by));
                } else {
                    self.move_row(Move::By(by));
                }
            }
            MouseEventKind::Down(MouseButton::Left) if !self.help => {
                if r.peer_rows.contains(at) {
                    let list = self.peers();
                    let top = view::visible_top(
                        self.peer_top,
                        self.peer_index(&list),
                        r.peer_rows.height as usize,
                    );
                    if let Some(p) = list.get(top + (at.y - r.peer_rows.y) as usize) {
                        self.peer_id = Some(p.id);
                        self.peer_top = top;
                        self.focus = Focus::Peers;
                        self.reset_rows();
                    }
                } else if r.tabs.contains(at) {
                    if let Some(i) = view::tab_at(self, r.tabs, at.x) {
                        self.pane = Pane::ALL[i];
                        self.focus = Focus::Pane;
                        self.reset_rows();
                    }
                } else if r.rows.contains(at) {
                    let len = self.pane_len();
                    let page = r.rows.height as usize;
                    let top = if self.follows() {
                        len.saturating_sub(page)
                    } else {
                        view::visible_top(self.row_top, self.selected_row(len), page)
                    };
                    let i = top + (at.y - r.rows.y) as usize;
                    if i < len {
                        self.row = i;
                        self.row_top = top;
                        self.follow = i + 1 == len;
                        self.focus = Focus::Pane;
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_key(&mut self, key: &KeyEvent, raw: &TermEvent) -> Vec<Command> {
        if self.input.is_some() && self.searching {
            return self.on_search_key(key, raw);
        }
        if self.input.is_some() {
            return self.on_command_key(key, raw);
        }
        let Some(action) = action_for(key) else {
            return Vec::new();
        };
        self.drop_passing_status();
        if action != Action::Quit {
            self.confirm_quit = false;
        }
        // While help is open the moving keys scroll it.
        if self.help {
            let m = match action {
                Action::Up => Some(Move::By(-1)),
                Action::Down => Some(Move::By(1)),
                Action::PageUp => Some(Move::Page(-1)),
                Action::PageDown => Some(Move::Page(1)),
                Action::Top => Some(Move::Top),
                Action::Bottom => Some(Move::Bottom),
                _ => None,
            };
            if let Some(m) = m {
                self.scroll_help(m);
                return Vec::new();
            }
        }
        let paging = |m| match self.focus {
            Focus::Peers => (Some(m), None),
            Focus::Pane => (None, Some(m)),
        };
        let (peer_move, row_move) = match action {
            Action::Up => (None, Some(Move::By(-1))),
            Action::Down => (None, Some(Move::By(1))),
            Action::PrevPeer => (Some(Move::By(-1)), None),
            Action::NextPeer => (Some(Move::By(1)), None),
            Action::PageUp => paging(Move::Page(-1)),
            Action::PageDown => paging(Move::Page(1)),
            Action::Top => paging(Move::Top),
            Action::Bottom => paging(Move::Bottom),
            _ => (None, None),
        };
        if let Some(m) = peer_move {
            self.move_peer(m);
            return Vec::new();
        }
        if let Some(m) = row_move {
            self.move_row(m);
            return Vec::new();
        }
        if matches!(
            action,
            Action::Approve
                | Action::Decline
                | Action::ApproveAll
                | Action::DeclineAll
                | Action::Hold
                | Action::StepOne
                | Action::Continue
        ) && self.refuse_in_replay(match action {
            Action::Approve | Action::ApproveAll => "approving",
            Action::Decline | Action::DeclineAll => "declining",
            _ => "step mode",
        }) {
            return Vec::new();
        }
        match action {
            Action::Sort => {
                // The selection is a peer, not a row: it moves with its peer.
                self.sort = self.sort.next();
                let list = self.peers();
                let i = self.peer_index(&list);
                self.peer_id = list.get(i).map(|p| p.id);
                let page = self.regions.peer_rows.height as usize;
                self.peer_top = i.saturating_sub(page.saturating_sub(1) / 2);
                self.say(format!("peers sorted by {}", self.sort.label()), false);
            }
            Action::NextPane => self.move_pane(1),
            Action::PrevPane => self.move_pane(-1),
            Action::Approve | Action::Decline | Action::ApproveAll | Action::DeclineAll
                if self.observing() =>
            {
                self.say_observing();
            }
            Action::Approve | Action::Decline => {
                return self.decide_selected(action == Action::Approve)
            }
            Action::ApproveAll | Action::DeclineAll => {
                let approve = action == Action::ApproveAll;
                let Some(p) = self.selected_peer() else {
                    self.say("no peer selected", true);
                    return Vec::new();
                };
                let (id, n) = (p.id, p.pending());
                let verb = if approve { "approving" } else { "declining" };
                self.say(format!("{verb} {n} pending offer(s) of peer #{id}"), false);
                self.await_outcome(format!("{verb} peer #{id}'s offers"), Expect::Failure);
                return vec![decide(approve, Some(id), KeySelection::AllPending)];
            }
            Action::Hold | Action::StepOne | Action::Continue => {
                let Some(p) = self.selected_peer() else {
                    self.say("no peer selected", true);
                    return Vec::new();
                };
                let (id, held) = (p.id, p.held.len());
                let peer = Some(id);
                self.await_outcome(format!("peer #{id}"), Expect::Failure);
                return vec![match action {
                    Action::Hold => {
                        self.holding.insert(id);
                        self.say(
                            format!(
                                "holding messages of peer #{id}: n lets one through, c continues"
                            ),
                            false,
                        );
                        Command::Hold { peer }
                    }
                    Action::StepOne => {
                        self.holding.insert(id);
                        Command::Step { peer }
                    }
                    _ => {
                        self.holding.remove(&id);
                        self.say(
                            if held > 0 {
                                format!("letting peer #{id}'s {held} held message(s) through; it is no longer held")
                            } else {
                                format!("peer #{id} is no longer held")
                            },
                            false,
                        );
                        Command::Continue { peer }
                    }
                }];
            }
            Action::Freeze => {
                if self.frozen.take().is_none() {
                    self.frozen = Some(Box::new(self.live.clone()));
                }
            }
            Action::Search => {
                // It starts from the search in force, so opening it changes nothing on screen.
                self.filters_before =
                    Some((self.filter.clone(), self.peer_filter.clone(), self.pane));
                self.input = Some(Input::new(self.peer_filter.clone()));
                self.searching = true;
                self.focus = Focus::Peers;
            }
            Action::Command => {
                self.searching = false;
                self.input = Some(Input::default());
                self.candidates.clear();
                self.history_pos = None;
            }
            Action::Help => {
                self.help = !self.help;
                self.help_scroll = 0;
                // Help is laid out only while open; scrolling needs its size now.
                self.set_area(self.regions.screen);
            }
            Action::Dismiss => {
                self.help = false;
                self.status = None;
            }
            Action::Quit => {
                if self.live.transferring() && !self.confirm_quit && !self.replaying() {
                    self.confirm_quit = true;
                    self.say("transfers are running: press q again to quit", false);
                } else {
                    self.quit = true;
                }
            }
            Action::ForceQuit => self.quit = true,
            Action::Up
            | Action::Down
            | Action::PrevPeer
            | Action::NextPeer
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom => unreachable!("moves are handled above"),
        }
        Vec::new()
    }

    pub(super) fn decide_selected(&mut self, approve: bool) -> Vec<Command> {
        if self.pane != Pane::Offered {
            self.say("select an offer in the \"Offered to us\" pane (tab)", true);
            return Vec::new();
        }
        let keys = self.pane_keys();
        let row = self.selected_row(keys.len());
        let (Some(p), Some(key)) = (self.selected_peer(), keys.get(row)) else {
            self.say("no offer selected", true);
            return Vec::new();
        };
        let id = p.id;
        let state = p.remote_offer.get(key).map(|o| o.state);
        if approve && state == Some(OfferState::Requested) {
            self.say(format!("{} is already requested", key.short()), false);
            return Vec::new();
        }
        let key = *key;
        let verb = if approve { "approved" } else { "declined" };
        self.say(format!("{verb} {} from peer #{id}", key.short()), false);
        self.await_outcome(
            format!(
                "{} {}",
                if approve { "approve" } else { "decline" },
                key.short()
            ),
            Expect::Failure,
        );
        vec![decide(approve, Some(id), KeySelection::One(key))]
    }

    pub(super) fn scroll_help(&mut self, m: Move) {
        let page = self.regions.help.height.saturating_sub(2).max(1);
        let max = self.regions.help_lines.saturating_sub(page);
        self.help_scroll = match m {
            Move::By(n) => (self.help_scroll as i64 + n).clamp(0, max as i64) as u16,
            Move::Page(n) => {
                (self.help_scroll as i64 + n * page as i64).clamp(0, max as i64) as u16
            }
            Move::Top => 0,
            Move::Bottom => max,
        };
    }

    pub(super) fn move_row(&mut self, m: Move) {
        let len = self.pane_len();
        let page = (self.regions.rows.height as usize).max(1);
        if self.follows() {
            // Start from where following showed the list, so it does not jump.
            self.row_top = len.saturating_sub(page);
        }
        let new = target(self.selected_row(len), len, page, m);
        self.row = new;
        self.row_top = view::visible_top(self.row_top, new, page);
        self.follow = if len == 0 {
            self.follow || m == Move::Bottom
        } else {
            new + 1 == len
        };
        self.focus = Focus::Pane;
    }

    pub(super) fn move_peer(&mut self, m: Move) {
        let list = self.peers();
        let page = (self.regions.peer_rows.height as usize).max(1);
        let new = target(self.peer_index(&list), list.len(), page, m);
        let id = list.get(new).map(|p| p.id);
        self.peer_id = id;
        self.peer_top = view::visible_top(self.peer_top, new, page);
        self.focus = Focus::Peers;
        self.reset_rows();
    }

    pub(super) fn reset_rows(&mut self) {
        self.row = 0;
        self.row_top = 0;
        self.follow = true;
    }

    pub(super) fn move_pane(&mut self, by: i64) {
        let i = Pane::ALL.iter().position(|p| *p == self.pane).unwrap_or(0) as i64;
        let n = Pane::ALL.len() as i64;
        self.pane = Pane::ALL[((i + by).rem_euclid(n)) as usize];
        self.focus = Focus::Pane;
        self.reset_rows();
    }
}

/// Where a move from `i` lands in a list `len` long, `page` rows of it shown.
pub(super) fn target(i: usize, len: usize, page: usize, m: Move) -> usize {
    if len == 0 {
        return 0;
    }
    let last = len as i64 - 1;
    let to = match m {
        Move::By(n) => i as i64 + n,
        Move::Page(n) => i as i64 + n * page.max(1) as i64,
        Move::Top => 0,
        Move::Bottom => last,
    };
    to.clamp(0, last) as usize
}

/// A move in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Move {
    By(i64),
    Page(i64),
    Top,
    Bottom,
}
