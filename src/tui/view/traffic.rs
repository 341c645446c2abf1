//! The Wire and Log panes: protocol messages and events as they pass, following the newest.

use super::*;

/// A message type as people know it: `MULTIFEED_MANIFEST` rather than
/// `Extension(MULTIFEED_MANIFEST)`; without the `MULTIFEED_` prefix when `short`.
pub fn message_name(kind: &str, short: bool) -> &str {
    let name = kind
        .strip_prefix("Extension(")
        .and_then(|k| k.strip_suffix(')'))
        .filter(|k| !k.is_empty())
        .unwrap_or(kind);
    if short {
        name.strip_prefix("MULTIFEED_").unwrap_or(name)
    } else {
        name
    }
}

/// Where following stands, for the last column's header.
pub(super) fn follow_note(app: &App) -> &'static str {
    if app.follows() {
        "following"
    } else {
        "paused: G follows"
    }
}

/// Selection and offset of a list that may follow its end.
pub(super) fn list_state(app: &App, len: usize, page: usize) -> TableState {
    let row = app.selected_row(len);
    let top = if app.follows() {
        len.saturating_sub(page.max(1))
    } else {
        visible_top(app.row_top, row, page)
    };
    TableState::default()
        .with_offset(top)
        .with_selected((len > 0).then_some(row))
}

pub(super) fn render_wire(f: &mut Frame, r: &Regions, app: &App, t: &Theme) {
    let (area, detail) = (r.table, r.detail);
    let lines = app.wire_lines();
    let held = app.selected_peer().map_or(0, |p| p.held.len());
    let row = app.selected_row(lines.len());
    if lines.is_empty() {
        let text = if held > 0 {
            format!("{held} message(s) held: n lets one through, c continues")
        } else {
            "no messages yet; start feedscope with --trace-wire to see every message".into()
        };
        f.render_widget(Paragraph::new(text).style(t.dim()), area);
    } else {
        let short = area.width < 100;
        let page = r.rows.height as usize;
        let top = if app.follows() {
            lines.len().saturating_sub(page.max(1))
        } else {
            visible_top(app.row_top, row, page)
        };
        // As wide as the longest name in view, so long names are not cut.
        let kind_width = lines
            .iter()
            .skip(top)
            .take(page)
            .map(|w| message_name(&w.kind, short).len())
            .max()
            .unwrap_or(4)
            .max(4);
        let rows: Vec<Row> = lines
            .iter()
            .map(|w| {
                Row::new(vec![
                    Cell::from(format!("{:7.3}", w.at)),
                    Cell::from(if w.incoming { "←" } else { "→" }),
                    Cell::from(w.channel.clone()),
                    Cell::from(message_name(&w.kind, short).to_string()),
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
                Constraint::Length(kind_width as u16),
                Constraint::Length(5),
                Constraint::Min(5),
            ],
        )
        .header(Row::new(vec!["time", "", "channel", "type", "bytes", "fields"]).style(t.title()))
        .row_highlight_style(t.selected());
        let mut state = list_state(app, lines.len(), page);
        f.render_stateful_widget(table, area, &mut state);
    }
    if detail.height == 0 {
        return;
    }
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(" Message · {} ", follow_note(app)),
        t.title(),
    ));
    let inner = block.inner(detail);
    f.render_widget(block, detail);
    let mut text = Vec::new();
    if let Some(p) = app.selected_peer() {
        if let Some((kind, summary)) = p.held.front() {
            text.push(Line::styled(
                format!(
                    "held ({}): {} {summary}",
                    p.held.len(),
                    message_name(kind, false)
                ),
                t.pending(),
            ));
        }
    }
    if let Some(w) = lines.get(row) {
        text.push(Line::from(w.summary.clone()));
        text.push(Line::styled(hex_dump(&w.hex), t.dim()));
    }
    f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), inner);
}

/// Hex grouped in 4-byte words, for reading by eye.
pub(super) fn hex_dump(hex: &str) -> String {
    hex.as_bytes()
        .chunks(8)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn log_row<'a>(l: &'a crate::tui::model::LogLine, t: &Theme) -> Row<'a> {
    Row::new(vec![
        Cell::from(Span::raw(format!("{:7.2}", l.at))),
        Cell::from(Span::raw(
            l.peer.map(|p| format!("#{p}")).unwrap_or_default(),
        )),
        Cell::from(Span::raw(l.kind.as_str())),
        Cell::from(Span::raw(l.text.as_str())),
    ])
    .style(if l.problem { t.problem() } else { Style::new() })
}

pub(super) const LOG_WIDTHS: [Constraint; 4] = [
    Constraint::Length(7),
    Constraint::Length(4),
    Constraint::Length(18),
    Constraint::Min(10),
];

pub(super) fn render_log_table(f: &mut Frame, r: &Regions, app: &App, t: &Theme) {
    let lines = app.log_lines();
    // The note first: it is what a narrow screen must not cut.
    let title = if app.filter.is_empty() {
        format!("{} · all events (: filter TEXT)", follow_note(app))
    } else {
        format!(
            "{} · filter {:?} ({} lines)",
            follow_note(app),
            app.filter,
            lines.len(),
        )
    };
    let page = r.rows.height as usize;
    let mut state = list_state(app, lines.len(), page);
    // Only the rows in view are built: the log holds thousands of lines.
    let top = state.offset();
    let rows: Vec<Row> = lines
        .iter()
        .skip(top)
        .take(page.max(1))
        .map(|l| log_row(l, t))
        .collect();
    *state.offset_mut() = 0;
    state.select(state.selected().map(|s| s - top));
    let table = Table::new(rows, LOG_WIDTHS)
        .header(Row::new(vec!["time", "peer", "event", title.as_str()]).style(t.title()))
        .row_highlight_style(t.selected());
    f.render_stateful_widget(table, r.table, &mut state);
}

pub(super) fn render_events(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
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
