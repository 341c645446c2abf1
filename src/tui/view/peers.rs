//! The peers list: one row per connection, its state word, and the legend of states.

use super::*;

/// The word a peer row shows for its state.
pub(super) fn state_word(app: &App, p: &PeerView) -> &'static str {
    if p.disconnected.is_none() && (!p.held.is_empty() || app.holding.contains(&p.id)) {
        "held"
    } else {
        p.state()
    }
}

pub(super) fn state_style(word: &str, t: &Theme) -> Style {
    match word {
        "gone" => t.dim(),
        "sync" | "held" => t.pending(),
        "hello" => Style::new(),
        _ => t.good(),
    }
}

/// What each state word and count of a peer row means, two to a line (30 columns).
pub(super) const LEGEND: &[[(&str, &str); 2]] = &[
    [("live", "synced"), ("sync", "receiving")],
    [("hello", "greeting"), ("gone", "closed")],
    [("held", "stepping"), ("2?", "to decide")],
    [("n", "feeds replicating"), ("", "")],
];

/// The list's title: how many peers the search hides, and which rows of a list longer than the
/// screen are shown, in the longest form that fits `width`.
pub(super) fn peers_title(
    listed: usize,
    total: usize,
    top: usize,
    shown: usize,
    width: usize,
) -> String {
    let hidden = total - listed;
    let rows = (shown < listed).then(|| format!("{}–{}", top + 1, top + shown));
    let forms: Vec<String> = match (rows, hidden) {
        (None, 0) => vec![" Peers ".into()],
        (None, h) => vec![
            format!(" Peers {listed}/{total} · {h} hidden "),
            format!(" {listed}/{total} · {h} hidden "),
        ],
        (Some(r), 0) => vec![
            format!(" Peers {r} of {total} "),
            format!(" Peers {r}/{total} "),
        ],
        (Some(r), h) => vec![
            format!(" Peers {r} of {listed} · {h} hidden "),
            format!(" Peers {r}/{listed} · {h} hidden "),
            format!(" {r}/{listed} · {h} hidden "),
        ],
    };
    let last = forms.len() - 1;
    forms
        .iter()
        .find(|s| s.chars().count() <= width)
        .unwrap_or(&forms[last])
        .clone()
}

pub(super) fn render_peers(f: &mut Frame, r: &Regions, app: &App, t: &Theme) {
    let area = r.peers;
    let m = app.model();
    let peers = app.peers();
    let selected = app.peer_index(&peers);
    // Only the rows that can show are built: the list may hold thousands of peers.
    let visible = r.peer_rows.height as usize;
    let top = visible_top(app.peer_top, selected, visible);
    let rate_column = area.width >= 40 || app.sort == PeerSort::Rate;
    let mark = |label: &str, sort: PeerSort| {
        let text = if app.sort == sort {
            format!("{label}▼")
        } else {
            label.to_string()
        };
        let style = if app.sort == sort {
            t.title().add_modifier(Modifier::UNDERLINED)
        } else {
            t.title()
        };
        Cell::from(text).style(style)
    };
    let mut header = vec![
        mark("#", PeerSort::Id),
        Cell::from("peer").style(t.title()),
        mark("state", PeerSort::State),
        mark("n", PeerSort::Pending),
    ];
    // As wide as the longest id in view: a thousand peers have four-digit ids.
    let id_width = peers
        .iter()
        .skip(top)
        .take(visible)
        .map(|p| p.id.to_string().len() as u16 + 1)
        .max()
        .unwrap_or(0)
        .max(3);
    let mut widths = vec![
        Constraint::Length(id_width),
        Constraint::Min(8),
        Constraint::Length(6),
        Constraint::Length(3),
    ];
    let wire_column = r.screen.width >= WIRE_COLUMN_FROM;
    if wire_column {
        header.push(Cell::from("wire").style(t.title()));
        widths.push(Constraint::Length(4));
    }
    if rate_column {
        header.push(mark("rate", PeerSort::Rate));
        widths.push(Constraint::Length(10));
    }
    let rows: Vec<Row> = peers
        .iter()
        .skip(top)
        .take(visible)
        .map(|p| {
            // In observe mode nothing waits for a decision.
            let pending = if app.observing() { 0 } else { p.pending() };
            let word = state_word(app, p);
            // Spans, not strings: a string cell is scanned for line breaks on every frame.
            let cell = |s: String| Cell::from(Span::raw(s));
            // A peer that named itself (Cabal's peer-id) is shown by the start of its name.
            let addr = match &p.name {
                Some(name) => cell(format!("{} {}", &name[..name.len().min(8)], p.addr)),
                None => Cell::from(Span::raw(p.addr.as_str())),
            };
            let mut cells = vec![
                cell(format!("#{}", p.id)),
                addr,
                Cell::from(Span::raw(word)).style(state_style(word, t)),
                cell(if pending > 0 {
                    format!("{pending}?")
                } else {
                    format!("{}", p.active.len())
                })
                .style(if pending > 0 {
                    t.pending()
                } else {
                    Style::new()
                }),
            ];
            if wire_column {
                cells.push(Cell::from(Span::raw(p.speaks.as_str())));
            }
            if rate_column {
                cells.push(cell(if p.disconnected.is_none() {
                    human_rate(p.rate())
                } else {
                    String::new()
                }));
            }
            Row::new(cells)
        })
        .collect();
    let shown = rows.len();
    let empty = rows.is_empty();
    let title_style = if app.focus == Focus::Peers {
        t.title().add_modifier(Modifier::REVERSED)
    } else {
        t.title()
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header))
        .column_spacing(1)
        .block(
            Block::new()
                .borders(Borders::RIGHT | Borders::TOP)
                .title(Span::styled(
                    peers_title(
                        peers.len(),
                        m.peers.len(),
                        top,
                        shown,
                        area.width.saturating_sub(1) as usize,
                    ),
                    title_style,
                )),
        )
        .row_highlight_style(t.selected());
    let mut state = TableState::default().with_selected((!empty).then_some(selected - top));
    f.render_stateful_widget(table, area, &mut state);
    let inner = r.peer_rows;
    if empty && !m.peers.is_empty() {
        f.render_widget(
            Paragraph::new(format!(
                "no peer matches {:?}\n\n/ changes the search;\nempty lists every peer",
                app.peer_filter
            ))
            .style(t.dim()),
            inner,
        );
    } else if empty {
        let hint = match &m.listening {
            Some(addr) => {
                format!("no peers yet\n\nothers can dial\n{addr}\n\n: connect ADDR\nto dial one")
            }
            None => "no peers yet\n\n: connect ADDR\nto dial one".into(),
        };
        f.render_widget(Paragraph::new(hint).style(t.dim()), inner);
    } else if visible > shown + LEGEND.len() {
        // A legend while the list leaves room for it: new users see it, long lists do not.
        let lines: Vec<Line> = LEGEND
            .iter()
            .map(|pair| {
                let mut spans = Vec::new();
                for (i, (word, meaning)) in
                    pair.iter().enumerate().filter(|(_, (w, _))| !w.is_empty())
                {
                    spans.push(Span::styled(format!("{word:<5} "), state_style(word, t)));
                    let meaning = if i == 0 {
                        format!("{meaning:<8} ")
                    } else {
                        meaning.to_string()
                    };
                    spans.push(Span::styled(meaning, t.dim()));
                }
                Line::from(spans)
            })
            .collect();
        let legend = Rect {
            y: inner.y + inner.height - LEGEND.len() as u16,
            height: LEGEND.len() as u16,
            ..inner
        };
        f.render_widget(Paragraph::new(lines), legend);
    }
}
