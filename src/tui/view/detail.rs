//! The detail under a pane: the selected row in full, the peer's last problem, and a rate
//! sparkline for an active feed.

use super::*;

pub(super) fn render_detail(f: &mut Frame, area: Rect, app: &App, p: &PeerView, t: &Theme) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(" Detail ", t.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let keys = app.pane_keys();
    let key = keys.get(app.selected_row(keys.len())).copied();
    let mut lines = Vec::new();
    let (requests, feeds) = p.refused_observing;
    // Refused by design, not a problem: one plain line for the peer, under the first line
    // so that a short detail still shows it.
    let refused = (requests > 0).then(|| {
        Line::styled(
            format!(
                "refused {requests} request{} for {feeds} feed{} (observe)",
                if requests == 1 { "" } else { "s" },
                if feeds == 1 { "" } else { "s" }
            ),
            t.dim(),
        )
    });
    match key {
        Some(k) => {
            lines.push(Line::from(k.to_hex()));
            lines.extend(refused);
            if let Some(o) = p.remote_offer.get(&k) {
                if !o.meta.is_null() {
                    lines.push(Line::styled(format!("meta {}", o.meta), t.dim()));
                }
            }
        }
        None => {
            lines.push(Line::from(format!(
                "peer #{} {} ({}, {}) {}",
                p.id,
                p.addr,
                if p.initiator { "dialed" } else { "accepted" },
                p.speaks,
                p.client
                    .as_ref()
                    .map(|(c, v)| format!("{c} {v}"))
                    .unwrap_or_default()
            )));
            lines.extend(refused);
            if let Some(name) = &p.name {
                lines.push(Line::from(format!("peer-id {name}")));
            }
        }
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
