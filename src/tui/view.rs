//! Drawing. One function per screen region; none of them changes state.
//!
//! ```text
//! ┌ header: listen address · key · policy · peers · rate · FROZEN ─────────────┐
//! │ Peers            │ Offered to us │ Requested │ Active │ Our offer │ Log     │
//! │ #1 addr   live 2 │  table of the selected pane for the selected peer        │
//! │ #2 addr   gone   │                                                          │
//! │                  ├──────────────────────────────────────────────────────────┤
//! │                  │ detail: full key, meta, rate sparkline, last problem     │
//! ├──────────────────┴──────────────────────────────────────────────────────────┤
//! │ recent events (the log, newest last)                                        │
//! status line or : command line
//! footer: key hints from the key map
//! ```
//!
//! - header: what this process is (address to give peers, key, policy) and totals;
//! - peers: one row per connection; the selection drives the right side;
//! - panes: exactly the session's four sets, plus the filterable log;
//! - detail: the selected row in full;
//! - events: the last few log lines, always visible;
//! - status/footer: feedback and the key hints, built from [`crate::tui::keys::BINDINGS`].

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Tabs, Wrap,
};
use ratatui::Frame;

use crate::tui::app::{App, Pane};
use crate::tui::keys::{footer_hints, BINDINGS, COMMANDS, REPLAY_BINDINGS};
use crate::tui::model::{OfferState, PeerView};
use crate::wire::FeedKey;

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

/// Draws the whole screen.
pub fn render(f: &mut Frame, app: &App) {
    let theme = Theme {
        color: !app.settings.no_color,
    };
    let area = f.area();
    let log_height = if area.height >= 30 { 8 } else { 4 };
    let [header, body, events, status, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(log_height),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(f, header, app, &theme);
    let peers_width = peers_width(area.width);
    let [peers, right] =
        Layout::horizontal([Constraint::Length(peers_width), Constraint::Min(20)]).areas(body);
    render_peers(f, peers, app, &theme);
    render_pane(f, right, app, &theme);
    render_events(f, events, app, &theme);
    render_status(f, status, app, &theme);
    let hints = if app.replay.is_some() {
        REPLAY_BINDINGS
            .iter()
            .map(|(_, k, h)| format!("{k} {}", h.split_whitespace().next().unwrap_or("")))
            .chain(["? help".to_string(), "q quit".to_string()])
            .collect::<Vec<_>>()
            .join("  ")
    } else {
        footer_hints()
    };
    f.render_widget(Paragraph::new(hints).style(theme.dim()), footer);
    if app.help {
        render_help(f, area, app, &theme);
    }
}

/// Width of the peers list for a screen this wide (the mouse handler needs it too).
pub fn peers_width(screen: u16) -> u16 {
    (screen / 3).clamp(31, 44)
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
    if app.is_frozen() {
        spans.push(Span::styled("  FROZEN (space)", t.pending()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_peers(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let m = app.model();
    let peers = app.peers();
    // Only the rows that can show are built: the list may hold thousands of peers.
    let visible = area.height.saturating_sub(1) as usize;
    let skip = app.peer.saturating_sub(visible.saturating_sub(1));
    let rows: Vec<Row> = peers
        .iter()
        .skip(skip)
        .take(visible)
        .map(|p| {
            let pending = p.pending();
            Row::new(vec![
                Cell::from(format!("#{}", p.id)),
                Cell::from(p.addr.clone()),
                Cell::from(if p.held.is_empty() { p.state() } else { "held" }).style(
                    match p.state() {
                        "gone" => t.dim(),
                        "sync" => t.pending(),
                        _ => t.good(),
                    },
                ),
                Cell::from(if pending > 0 {
                    format!("{pending}?")
                } else {
                    format!("{}", p.active.len())
                })
                .style(if pending > 0 {
                    t.pending()
                } else {
                    Style::new()
                }),
            ])
        })
        .collect();
    let empty = rows.is_empty();
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Min(15),
            Constraint::Length(7),
            Constraint::Length(3),
        ],
    )
    .column_spacing(1)
    .block(
        Block::new()
            .borders(Borders::RIGHT | Borders::TOP)
            .title(Span::styled(
                if app.sort == crate::tui::app::PeerSort::Id && app.peer_filter.is_empty() {
                    " Peers ".to_string()
                } else {
                    format!(
                        " Peers {}/{} by {} ",
                        peers.len(),
                        m.peers.len(),
                        app.sort.label()
                    )
                },
                t.title(),
            )),
    )
    .row_highlight_style(t.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(app.peer - skip));
    f.render_stateful_widget(table, area, &mut state);
    if empty && !m.peers.is_empty() {
        let inner = Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(1),
            ..area
        };
        f.render_widget(
            Paragraph::new("no peer matches\n: peers TEXT\n(empty shows all)").style(t.dim()),
            inner,
        );
    } else if empty {
        let hint = match &m.listening {
            Some(addr) => {
                format!("no peers yet\n\nothers can dial\n{addr}\n\n: connect ADDR\nto dial one")
            }
            None => "no peers yet\n\n: connect ADDR\nto dial one".into(),
        };
        let inner = Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(1),
            width: area.width.saturating_sub(1),
            ..area
        };
        f.render_widget(Paragraph::new(hint).style(t.dim()), inner);
    }
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

fn meta_str(meta: &serde_json::Value, field: &str) -> String {
    match meta.get(field) {
        Some(serde_json::Value::String(s)) => s.chars().take(24).collect(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn bar(done: u64, total: u64, width: usize) -> String {
    if total == 0 {
        return " ".repeat(width);
    }
    let filled = ((done.min(total) as f64 / total as f64) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

fn render_pane(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let peer = app.selected_peer();
    let [tabs_area, table_area, detail_area] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(match (area.height > 14, app.pane) {
            (false, _) => 0,
            // The inspector needs room for the held message, the fields and the hex dump.
            (true, Pane::Wire) => 8,
            (true, _) => 4,
        }),
    ])
    .areas(area);
    let titles: Vec<Line> = Pane::ALL
        .iter()
        .map(|p| {
            let n = pane_count(peer, *p);
            let pending = match (p, peer) {
                (Pane::Offered, Some(pv)) if pv.pending() > 0 => format!(" {}?", pv.pending()),
                _ => String::new(),
            };
            let title = if area.width >= 90 {
                p.title()
            } else {
                p.short_title()
            };
            if *p == Pane::Log {
                Line::from(title)
            } else {
                Line::from(format!("{title} {n}{pending}"))
            }
        })
        .collect();
    let selected = Pane::ALL.iter().position(|p| *p == app.pane).unwrap_or(0);
    let narrow = area.width < 90;
    f.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(t.selected())
            .padding(if narrow { "" } else { " " }, " ")
            .divider("│")
            .block(Block::new().borders(Borders::TOP)),
        tabs_area,
    );
    if app.pane == Pane::Log {
        render_log_table(f, table_area, app, t);
        return;
    }
    if app.pane == Pane::Wire {
        render_wire(f, table_area, detail_area, app, t);
        return;
    }
    let Some(p) = peer else {
        f.render_widget(
            Paragraph::new("select a peer to see its feeds").style(t.dim()),
            table_area,
        );
        return;
    };
    let model = app.model();
    // Our own feeds have local names; replicas are named by what an offerer said.
    let name_of = |k: &FeedKey| {
        model
            .feed_name(k)
            .map(|n| n.chars().take(24).collect::<String>())
            .unwrap_or_default()
    };
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
                .map(|(k, o)| {
                    let style = match o.state {
                        OfferState::Pending => t.pending(),
                        OfferState::Declined => t.dim(),
                        _ => t.good(),
                    };
                    Row::new(vec![
                        Cell::from(o.state.label()).style(style),
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
        Pane::Active => (
            vec!["key", "name", "have/peer", "progress", "rate", ""],
            vec![
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(13),
                Constraint::Min(6),
                Constraint::Length(10),
                Constraint::Length(1),
            ],
            p.active
                .iter()
                .map(|(k, a)| {
                    Row::new(vec![
                        Cell::from(k.short()),
                        Cell::from(name_of(k)),
                        Cell::from(format!("{}/{}", a.local_length, a.remote_length)),
                        Cell::from(bar(a.local_length, a.remote_length, 12)),
                        Cell::from(human_rate(a.rate())),
                        Cell::from(if a.synced { "✓" } else { " " }).style(t.good()),
                    ])
                })
                .collect(),
        ),
        Pane::OurOffer => (
            vec!["key", "name", "state"],
            vec![
                Constraint::Length(8),
                Constraint::Min(8),
                Constraint::Length(12),
            ],
            p.local_offer
                .iter()
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
    let empty = rows.is_empty();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(t.title()))
        .row_highlight_style(t.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(app.row));
    f.render_stateful_widget(table, table_area, &mut state);
    if detail_area.height > 0 {
        render_detail(f, detail_area, app, p, t);
    }
}

fn render_detail(f: &mut Frame, area: Rect, app: &App, p: &PeerView, t: &Theme) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" Detail ", t.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let key = app.pane_keys().get(app.row).copied();
    let mut lines = Vec::new();
    match key {
        Some(k) => {
            lines.push(Line::from(k.to_hex()));
            if let Some(o) = p.remote_offer.get(&k) {
                if !o.meta.is_null() {
                    lines.push(Line::styled(format!("meta {}", o.meta), t.dim()));
                }
            }
        }
        None => lines.push(Line::from(format!(
            "peer #{} {} ({}) {}",
            p.id,
            p.addr,
            if p.initiator { "dialed" } else { "accepted" },
            p.client
                .as_ref()
                .map(|(c, v)| format!("{c} {v}"))
                .unwrap_or_default()
        ))),
    }
    if let Some(problem) = &p.last_problem {
        lines.push(Line::styled(problem.clone(), t.problem()));
    } else if let Some(reason) = &p.disconnected {
        lines.push(Line::styled(format!("disconnected: {reason}"), t.dim()));
    }
    let spark = key
        .filter(|_| app.pane == Pane::Active)
        .and_then(|k| p.active.get(&k))
        .map(|a| a.deltas())
        .filter(|d| d.len() >= 2);
    if let Some(data) = spark {
        let [text, graph] =
            Layout::horizontal([Constraint::Min(10), Constraint::Length(24)]).areas(inner);
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
        f.render_widget(Sparkline::default().data(&data).style(t.good()), graph);
    } else {
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
    }
}

fn render_wire(f: &mut Frame, area: Rect, detail: Rect, app: &App, t: &Theme) {
    let lines = app.wire_lines();
    let held = app.selected_peer().map_or(0, |p| p.held.len());
    if lines.is_empty() {
        let text = if held > 0 {
            format!("{held} message(s) held: n lets one through, c continues")
        } else {
            "no messages yet; start feedscope with --trace-wire to see every message".into()
        };
        f.render_widget(Paragraph::new(text).style(t.dim()), area);
    } else {
        let rows: Vec<Row> = lines
            .iter()
            .map(|w| {
                Row::new(vec![
                    Cell::from(format!("{:7.3}", w.at)),
                    Cell::from(if w.incoming { "←" } else { "→" }),
                    Cell::from(w.channel.clone()),
                    Cell::from(w.kind.clone()),
                    Cell::from(w.bytes.to_string()),
                    Cell::from(w.summary.clone()),
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(7),
                Constraint::Length(1),
                Constraint::Length(8),
                Constraint::Length(18),
                Constraint::Length(6),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(vec!["time", "", "channel", "type", "bytes", "fields"]).style(t.title()))
        .row_highlight_style(t.selected());
        let mut state = TableState::default().with_selected(Some(app.row.min(lines.len() - 1)));
        f.render_stateful_widget(table, area, &mut state);
    }
    if detail.height == 0 {
        return;
    }
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" Message ", t.title()));
    let inner = block.inner(detail);
    f.render_widget(block, detail);
    let mut text = Vec::new();
    if let Some(p) = app.selected_peer() {
        if let Some((kind, summary)) = p.held.front() {
            text.push(Line::styled(
                format!("held ({}): {kind} {summary}", p.held.len()),
                t.pending(),
            ));
        }
    }
    if let Some(w) = lines.get(app.row) {
        text.push(Line::from(w.summary.clone()));
        text.push(Line::styled(hex_dump(&w.hex), t.dim()));
    }
    f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), inner);
}

/// Hex grouped in 4-byte words, for reading by eye.
fn hex_dump(hex: &str) -> String {
    hex.as_bytes()
        .chunks(8)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
}

fn log_row<'a>(l: &'a crate::tui::model::LogLine, t: &Theme) -> Row<'a> {
    Row::new(vec![
        Cell::from(format!("{:7.2}", l.at)),
        Cell::from(l.peer.map(|p| format!("#{p}")).unwrap_or_default()),
        Cell::from(l.kind.as_str()),
        Cell::from(l.text.as_str()),
    ])
    .style(if l.problem { t.problem() } else { Style::new() })
}

const LOG_WIDTHS: [Constraint; 4] = [
    Constraint::Length(7),
    Constraint::Length(4),
    Constraint::Length(18),
    Constraint::Min(10),
];

fn render_log_table(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let lines = app.log_lines();
    let title = if app.filter.is_empty() {
        "all events (: filter TEXT)".to_string()
    } else {
        format!("filter {:?} ({} lines)", app.filter, lines.len())
    };
    let rows: Vec<Row> = lines.iter().map(|l| log_row(l, t)).collect();
    let empty = rows.is_empty();
    let table = Table::new(rows, LOG_WIDTHS)
        .header(Row::new(vec!["time", "peer", "event", title.as_str()]).style(t.title()))
        .row_highlight_style(t.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(app.row));
    f.render_stateful_widget(table, area, &mut state);
}

fn render_events(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" Events ", t.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let log = &app.model().log;
    let n = inner.height as usize;
    let rows: Vec<Row> = log
        .iter()
        .skip(log.len().saturating_sub(n))
        .map(|l| log_row(l, t))
        .collect();
    f.render_widget(Table::new(rows, LOG_WIDTHS), inner);
}

fn render_status(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    if let Some(input) = &app.input {
        let width = area.width.saturating_sub(1) as usize;
        let scroll = input.visual_scroll(width);
        f.render_widget(
            Paragraph::new(format!(":{}", input.value())).scroll((0, scroll as u16)),
            area,
        );
        let x = (input.visual_cursor().saturating_sub(scroll) + 1) as u16;
        f.set_cursor_position((area.x + x.min(area.width.saturating_sub(1)), area.y));
        return;
    }
    let mut spans = Vec::new();
    if let Some(r) = &app.replay {
        spans.push(Span::styled(r.clone(), t.title()));
        spans.push(Span::raw("  "));
    }
    if let Some(s) = &app.status {
        let style = if s.error { t.problem() } else { t.good() };
        spans.push(Span::styled(s.text.clone(), style));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_help(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let mut lines = vec![Line::styled("Keys", t.title())];
    for b in BINDINGS {
        lines.push(Line::from(format!(" {:<7} {}", b.label, b.help)));
    }
    if app.replay.is_some() {
        lines.push(Line::styled("Replay", t.title()));
        for (_, k, h) in REPLAY_BINDINGS {
            lines.push(Line::from(format!(" {k:<7} {h}")));
        }
    }
    lines.push(Line::styled("Commands after :", t.title()));
    let commands = COMMANDS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(" · ");
    lines.push(Line::from(format!(" {commands}")));
    lines.push(Line::styled(
        format!("Log: {}  (esc or ? closes)", app.settings.log_file),
        t.dim(),
    ));
    let width = area.width.saturating_sub(2).min(80);
    let wrapped: u16 = lines
        .iter()
        .map(|l| {
            (l.width() as u16)
                .div_ceil(width.saturating_sub(2).max(1))
                .max(1)
        })
        .sum();
    let height = (wrapped + 2).min(area.height);
    let title = if wrapped + 2 > area.height {
        " Help (↑/↓ scroll) "
    } else {
        " Help "
    };
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((app.help_scroll, 0))
            .block(Block::bordered().title(Span::styled(title, t.title()))),
        popup,
    );
}
