//! Drawing. One function per screen region; none of them changes state.
//!
//! ```text
//! ┌ header: listen address · key · policy · peers · rate · FROZEN ─────────────┐
//! │ Peers            │ Offered to us │ Requested │ Active │ Our offer │ Log     │
//! │ #  address st▼ n │  table of the selected pane for the selected peer        │
//! │ #1 addr   live 2 │                                                          │
//! │ #2 addr   gone   │                                                          │
//! │ legend of states ├──────────────────────────────────────────────────────────┤
//! │                  │ detail: full key, meta, rate sparkline, last problem     │
//! ├──────────────────┴──────────────────────────────────────────────────────────┤
//! │ recent events (the log, newest last)                                        │
//! status line or : command line
//! footer: key hints for the mode, from the key map
//! ```
//!
//! - header: what this process is (address to give peers, key, policy) and totals;
//! - peers: one row per connection, a column header marking the sort, and a legend of the
//!   states while there is room; the selection drives the right side;
//! - panes: exactly the session's four sets, the wire inspector and the filterable log;
//! - detail: the selected row in full;
//! - events: the last few log lines, always visible;
//! - status/footer: feedback and the key hints of the current mode, built from
//!   [`crate::tui::keys`].
//!
//! [`regions`] is the one place the layout is decided: drawing, paging and mouse clicks use it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Tabs, Wrap,
};
use ratatui::Frame;

use crate::tui::app::{App, Focus, Pane, PeerSort};
use crate::tui::keys::{
    footer_hints, Binding, Mode, BINDINGS, COMMANDS, LINE_BINDINGS, REPLAY_BINDINGS,
    SEARCH_BINDINGS,
};
use crate::tui::model::{OfferState, PeerView};
use crate::wire::FeedKey;

mod chrome;
mod detail;
mod peers;
mod traffic;

use chrome::{help_text, render_footer, render_help, render_status};
use detail::render_detail;
use peers::render_peers;
pub use traffic::message_name;
use traffic::{render_events, render_log_table, render_wire};

/// The smallest terminal the layout fits; a smaller one gets a notice instead.
pub const MIN_WIDTH: u16 = 64;
/// See [`MIN_WIDTH`].
pub const MIN_HEIGHT: u16 = 16;

/// Colours, or none when `NO_COLOR` is set; emphasis then comes from bold and reverse only.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    fn problem(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    fn good(&self) -> Style {
        self.fg(Color::Green)
    }
    fn pending(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }
    fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }
}

/// Where each part of the screen goes, for a terminal of a given size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regions {
    /// The whole terminal.
    pub screen: Rect,
    /// Whether the terminal is smaller than the layout (only a notice is drawn).
    pub too_small: bool,
    /// The header line.
    pub header: Rect,
    /// The peers list, with its title and column header.
    pub peers: Rect,
    /// The rows of the peers list.
    pub peer_rows: Rect,
    /// The pane tabs.
    pub tabs: Rect,
    /// The pane's table, with its column header.
    pub table: Rect,
    /// The rows of the pane's table.
    pub rows: Rect,
    /// The detail below the pane.
    pub detail: Rect,
    /// The recent events strip.
    pub events: Rect,
    /// The status or command line.
    pub status: Rect,
    /// The key hints.
    pub footer: Rect,
    /// The help overlay, when open.
    pub help: Rect,
    /// Lines of help in all (it scrolls when they do not fit).
    pub help_lines: u16,
}

/// Lays out a screen of `area` for what `app` shows.
pub fn regions(area: Rect, app: &App) -> Regions {
    let mut r = Regions {
        screen: area,
        ..Default::default()
    };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        r.too_small = true;
        return r;
    }
    let log_height = if area.height >= 30 { 8 } else { 4 };
    let [header, body, events, status, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(log_height),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    (r.header, r.events, r.status, r.footer) = (header, events, status, footer);
    let [peers, pane] = Layout::horizontal([
        Constraint::Length(peers_width(area.width)),
        Constraint::Min(20),
    ])
    .areas(body);
    r.peers = peers;
    // Below the title border and the column header; left of the right border.
    r.peer_rows = Rect {
        y: peers.y + 2,
        height: peers.height.saturating_sub(2),
        width: peers.width.saturating_sub(1),
        ..peers
    };
    [r.tabs, r.table, r.detail] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(match (pane.height > 14, app.pane) {
            (false, _) | (_, Pane::Log) => 0,
            // The inspector needs room for the held message, the fields and the hex dump.
            (true, Pane::Wire) => 8,
            (true, _) => 4,
        }),
    ])
    .areas(pane);
    r.rows = Rect {
        y: r.table.y + 1,
        height: r.table.height.saturating_sub(1),
        ..r.table
    };
    if !app.help {
        return r;
    }
    let width = area.width.saturating_sub(2).min(80);
    r.help_lines = help_text(app, width.saturating_sub(2)).len() as u16;
    // Above the footer, which shows how to scroll and close it.
    let room = area.height - 1;
    let height = (r.help_lines + 2).min(room);
    r.help = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (room - height) / 2,
        width,
        height,
    };
    r
}

/// Draws the whole screen.
pub fn render(f: &mut Frame, app: &App) {
    let theme = Theme {
        color: !app.settings.no_color,
    };
    let r = regions(f.area(), app);
    if r.too_small {
        render_too_small(f, r.screen, &theme);
        return;
    }
    render_header(f, r.header, app, &theme);
    render_peers(f, &r, app, &theme);
    render_pane(f, &r, app, &theme);
    render_events(f, r.events, app, &theme);
    render_status(f, r.status, app, &theme);
    render_footer(f, r.footer, app, &theme);
    if app.help {
        render_help(f, &r, app, &theme);
    }
}

fn render_too_small(f: &mut Frame, area: Rect, t: &Theme) {
    let text = vec![
        Line::styled("feedscope", t.title()),
        Line::from(format!(
            "needs a terminal of at least {MIN_WIDTH}×{MIN_HEIGHT}; this one is {}×{}.",
            area.width, area.height
        )),
        Line::from("Enlarge it, or press q to quit."),
    ];
    let height = 5.min(area.height);
    let at = Rect {
        y: area.y + (area.height - height) / 2,
        height,
        ..area
    };
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .alignment(ratatui::layout::Alignment::Center),
        at,
    );
}

/// Width of the peers list for a screen this wide.
pub fn peers_width(screen: u16) -> u16 {
    let wire_column = if screen >= WIRE_COLUMN_FROM { 5 } else { 0 };
    (screen / 3).clamp(31, 44) + wire_column
}

/// From this terminal width on, the peers list has a column for each peer's wire (narrower
/// screens show it in the detail line).
pub const WIRE_COLUMN_FROM: u16 = 120;

/// The first row to show so that `selected` is visible in `page` rows, moving as little as
/// possible from `top`.
pub fn visible_top(top: usize, selected: usize, page: usize) -> usize {
    let page = page.max(1);
    if selected < top {
        selected
    } else if selected >= top + page {
        selected + 1 - page
    } else {
        top
    }
}

fn human_rate(bytes_per_s: f64) -> String {
    human_bytes(bytes_per_s as u64) + "/s"
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn render_header(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = app.model();
    let mut spans = vec![
        Span::styled("feedscope", t.title()),
        Span::raw(format!(
            "  {}  key {}  {}  peers {}  ↓ {}",
            m.listening.as_deref().unwrap_or("not listening"),
            app.settings.key,
            app.settings.policy,
            m.connected(),
            human_rate(m.rate()),
        )),
    ];
    if m.errors > 0 {
        spans.push(Span::styled(format!("  errors {}", m.errors), t.problem()));
    }
    if app.ingest.dropped > 0 {
        // The engine outran the screen: the inspector misses these lines (a recording has them).
        spans.push(Span::styled(
            format!("  dropped {} wire", app.ingest.dropped),
            t.pending(),
        ));
    }
    if app.is_frozen() {
        spans.push(Span::styled("  FROZEN (space)", t.pending()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn pane_count(p: Option<&PeerView>, pane: Pane) -> usize {
    match (p, pane) {
        (None, _) | (_, Pane::Log) => 0,
        (Some(p), Pane::Wire) => p.wire.len(),
        (Some(p), Pane::Offered) => p.remote_offer.len(),
        (Some(p), Pane::Requested) => p.requested.len(),
        (Some(p), Pane::Active) => p.active.len(),
        (Some(p), Pane::OurOffer) => p.local_offer.len(),
    }
}

/// The tab titles for a pane this wide, and the padding around each.
fn tab_titles(app: &App, width: u16) -> (Vec<String>, &'static str, &'static str) {
    let peer = app.selected_peer();
    let narrow = width < 90;
    let titles = Pane::ALL
        .iter()
        .map(|p| {
            let n = pane_count(peer, *p);
            let pending = match (p, peer) {
                (Pane::Offered, Some(pv)) if pv.pending() > 0 && !app.observing() => {
                    format!(" {}?", pv.pending())
                }
                _ => String::new(),
            };
            let title = if narrow { p.short_title() } else { p.title() };
            if *p == Pane::Log {
                title.to_string()
            } else {
                format!("{title} {n}{pending}")
            }
        })
        .collect();
    (titles, if narrow { "" } else { " " }, " ")
}

/// The tab under column `x` of the tabs region.
pub fn tab_at(app: &App, tabs: Rect, x: u16) -> Option<usize> {
    let (titles, left, right) = tab_titles(app, tabs.width);
    let mut start = tabs.x;
    for (i, title) in titles.iter().enumerate() {
        let end = start + (left.len() + title.chars().count() + right.len()) as u16;
        if x >= start && x < end {
            return Some(i);
        }
        // The divider between tabs.
        start = end + 1;
    }
    None
}

fn meta_str(meta: &serde_json::Value, field: &str) -> String {
    match meta.get(field) {
        Some(serde_json::Value::String(s)) => s.chars().take(24).collect(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A progress bar `width` cells wide with the percentage after it.
fn bar(done: u64, total: u64, width: usize) -> String {
    if total == 0 {
        return String::new();
    }
    let share = done.min(total) as f64 / total as f64;
    let percent = format!(" {:>3.0}%", share * 100.0);
    let cells = width.saturating_sub(percent.len());
    let filled = (share * cells as f64).round() as usize;
    format!(
        "{}{}{percent}",
        "█".repeat(filled),
        "░".repeat(cells - filled)
    )
}

fn render_pane(f: &mut Frame, r: &Regions, app: &App, t: &Theme) {
    let peer = app.selected_peer();
    let (titles, left, right) = tab_titles(app, r.tabs.width);
    let selected = Pane::ALL.iter().position(|p| *p == app.pane).unwrap_or(0);
    f.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(t.selected())
            .padding(left, right)
            .divider("│")
            .block(Block::new().borders(Borders::TOP)),
        r.tabs,
    );
    if app.pane == Pane::Log {
        render_log_table(f, r, app, t);
        return;
    }
    if app.pane == Pane::Wire {
        render_wire(f, r, app, t);
        return;
    }
    let table_area = r.table;
    let Some(p) = peer else {
        f.render_widget(
            Paragraph::new("select a peer to see its feeds").style(t.dim()),
            table_area,
        );
        return;
    };
    let model = app.model();
    let observing = app.observing();
    // Our own feeds have local names; replicas are named by what an offerer said.
    // A feed's name as a row shows it, and how wide that is without making it.
    const NAME_SHOWN: usize = 24;
    let name_of = |k: &FeedKey| {
        model
            .feed_name(k)
            .map(|n| n.chars().take(NAME_SHOWN).collect::<String>())
            .unwrap_or_default()
    };
    let name_width = |k: &FeedKey| {
        model
            .feed_name(k)
            .map_or(0, |n| n.chars().take(NAME_SHOWN).count())
    };
    // Rows are made only for the part of the list on screen: a hub's peer offers thousands.
    let len = match app.pane {
        Pane::Offered => p.remote_offer.len(),
        Pane::Requested => p.requested.len(),
        Pane::Active => p.active.len(),
        Pane::OurOffer => p.local_offer.len(),
        Pane::Wire | Pane::Log => unreachable!("handled above"),
    };
    let row = app.selected_row(len);
    let page = (r.rows.height as usize).max(1);
    let top = visible_top(app.row_top, row, page);
    let (header, widths, rows): (Vec<&str>, Vec<Constraint>, Vec<Row>) = match app.pane {
        Pane::Offered => (
            vec!["decision", "key", "name", "blocks", "bytes"],
            vec![
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Min(6),
                Constraint::Length(8),
                Constraint::Length(10),
            ],
            p.remote_offer
                .iter()
                .skip(top)
                .take(page)
                .map(|(k, o)| {
                    let style = match o.state {
                        // In observe mode nothing waits for a decision: an offer is seen.
                        OfferState::Pending if observing => t.dim(),
                        OfferState::Pending => t.pending(),
                        OfferState::Declined => t.dim(),
                        _ => t.good(),
                    };
                    let word = match o.state {
                        OfferState::Pending if observing => "seen",
                        state => state.label(),
                    };
                    Row::new(vec![
                        Cell::from(word).style(style),
                        Cell::from(k.short()),
                        Cell::from(meta_str(&o.meta, "name")),
                        Cell::from(meta_str(&o.meta, "length")),
                        Cell::from(
                            o.meta
                                .get("byte_length")
                                .and_then(|v| v.as_u64())
                                .map(human_bytes)
                                .unwrap_or_default(),
                        ),
                    ])
                })
                .collect(),
        ),
        Pane::Requested => (
            vec!["key", "state"],
            vec![Constraint::Length(8), Constraint::Min(10)],
            p.requested
                .iter()
                .skip(top)
                .take(page)
                .map(|k| {
                    let state = if p.active.contains_key(k) {
                        "replicating"
                    } else {
                        "awaiting answer"
                    };
                    Row::new(vec![Cell::from(k.short()), Cell::from(state)])
                })
                .collect(),
        ),
        Pane::Active => {
            // Fixed columns as wide as their content in the whole list (so that they stay
            // put while it scrolls), measured without making its strings; the bar takes what
            // is left.
            let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
            let have = p
                .active
                .values()
                .map(|a| digits(a.local_length) + 1 + digits(a.remote_length))
                .max()
                .unwrap_or(0)
                .max(9);
            let mut name = p
                .active
                .keys()
                .map(name_width)
                .max()
                .unwrap_or(0)
                .clamp(4, 16);
            let fixed = |name: usize| 8 + name + have + 10 + 1 + 5;
            let width = table_area.width as usize;
            if width < fixed(name) + 8 {
                name = 0;
            }
            let progress = width.saturating_sub(fixed(name)).max(8);
            (
                vec!["key", "name", "have/peer", "progress", "rate", ""],
                vec![
                    Constraint::Length(8),
                    Constraint::Length(name as u16),
                    Constraint::Length(have as u16),
                    Constraint::Length(progress as u16),
                    Constraint::Length(10),
                    Constraint::Length(1),
                ],
                p.active
                    .iter()
                    .skip(top)
                    .take(page)
                    .map(|(k, a)| {
                        Row::new(vec![
                            Cell::from(k.short()),
                            Cell::from(name_of(k)),
                            Cell::from(format!("{}/{}", a.local_length, a.remote_length)),
                            Cell::from(bar(a.local_length, a.remote_length, progress)),
                            if a.stopped_by_peer {
                                Cell::from("stopped").style(t.pending())
                            } else {
                                Cell::from(human_rate(a.rate()))
                            },
                            Cell::from(if a.synced { "✓" } else { " " }).style(t.good()),
                        ])
                    })
                    .collect(),
            )
        }
        Pane::OurOffer => (
            vec!["key", "name", "state"],
            vec![
                Constraint::Length(8),
                Constraint::Min(8),
                Constraint::Length(12),
            ],
            p.local_offer
                .iter()
                .skip(top)
                .take(page)
                .map(|k| {
                    let served = if p.active.contains_key(k) {
                        "replicating"
                    } else {
                        "offered"
                    };
                    Row::new(vec![
                        Cell::from(k.short()),
                        Cell::from(name_of(k)),
                        Cell::from(served),
                    ])
                })
                .collect(),
        ),
        Pane::Wire | Pane::Log => unreachable!("handled above"),
    };
    let mut state = TableState::default().with_selected((len > 0).then_some(row - top));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(t.title()))
        .row_highlight_style(t.selected());
    // Only as tall as its rows: a table styles every cell of its area, and below the last row
    // there is nothing to draw.
    let table_area = Rect {
        height: table_area
            .height
            .min(u16::try_from(len + 1).unwrap_or(u16::MAX)),
        ..table_area
    };
    f.render_stateful_widget(table, table_area, &mut state);
    if r.detail.height > 0 {
        render_detail(f, r.detail, app, p, t);
    }
}
