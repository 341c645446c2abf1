//! The status line, the footer of hints and the help overlay, all read from the key tables.

use super::*;

pub(super) fn render_status(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    if let Some(input) = &app.input {
        let width = area.width.saturating_sub(1) as usize;
        let scroll = input.visual_scroll(width);
        f.render_widget(
            Paragraph::new(format!(
                "{}{}",
                if app.searching { "/" } else { ":" },
                input.value()
            ))
            .scroll((0, scroll as u16)),
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

pub(super) fn render_footer(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let mode = app.mode();
    let line = if mode == Mode::CommandLine && !app.candidates.is_empty() {
        Line::from(vec![
            Span::styled(format!("{} fit: ", app.candidates.len()), t.title()),
            Span::raw(app.candidates.join("  ")),
        ])
    } else {
        Line::styled(footer_hints(mode), t.dim())
    };
    f.render_widget(Paragraph::new(line), area);
}

/// Splits `text` into lines of at most `width` characters at spaces.
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("never empty");
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if len > 0 {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// Help as (style, text) lines for a box `width` wide, built from the key and command tables.
pub(super) fn help_text(app: &App, width: u16) -> Vec<(bool, String)> {
    let width = (width as usize).max(20);
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut entry = |out: &mut Vec<(bool, String)>, label: &str, pad: usize, help: &str| {
        let indent = pad + 2;
        for (i, l) in wrap(help, width.saturating_sub(indent).max(10))
            .into_iter()
            .enumerate()
        {
            out.push((
                false,
                if i == 0 {
                    format!(" {label:<pad$} {l}")
                } else {
                    format!("{:indent$}{l}", "")
                },
            ));
        }
    };
    fn keys<A>(
        out: &mut Vec<(bool, String)>,
        entry: &mut impl FnMut(&mut Vec<(bool, String)>, &str, usize, &str),
        title: &str,
        table: &[Binding<A>],
    ) {
        out.push((true, title.to_string()));
        for b in table {
            entry(out, b.label, 7, b.help);
        }
    }
    if app.replaying() {
        keys(&mut out, &mut entry, "Replay timeline", REPLAY_BINDINGS);
    }
    keys(&mut out, &mut entry, "Keys", BINDINGS);
    keys(&mut out, &mut entry, "Command line (:)", LINE_BINDINGS);
    keys(&mut out, &mut entry, "Peer search (/)", SEARCH_BINDINGS);
    out.push((true, "Commands after :".into()));
    for c in COMMANDS {
        let mut help = c.help.to_string();
        if c.live_only && app.replaying() {
            help.push_str(" (live sessions only)");
        }
        entry(&mut out, &c.usage(), 17, &help);
    }
    out.push((true, "Peers list".into()));
    for (word, meaning) in [
        ("live", "connected, holding all the peer has"),
        ("sync", "receiving blocks"),
        ("hello", "connected, handshake not yet received"),
        ("held", "step mode: its messages wait for n or c"),
        ("gone", "disconnected (the detail says why)"),
        ("2?", "offers waiting for a decision"),
        ("n", "otherwise: feeds replicating"),
        ("▼", "the column the list is sorted by (o)"),
    ] {
        entry(&mut out, word, 7, meaning);
    }
    out.push((true, "Mouse".into()));
    entry(
        &mut out,
        "click",
        7,
        "a tab shows it, a peer or row selects it",
    );
    entry(&mut out, "wheel", 7, "scrolls the list under the pointer");
    out.push((
        false,
        format!("Log: {}  (esc or ? closes)", app.settings.log_file),
    ));
    out
}

pub(super) fn render_help(f: &mut Frame, r: &Regions, app: &App, t: &Theme) {
    let popup = r.help;
    let lines: Vec<Line> = help_text(app, popup.width.saturating_sub(2))
        .into_iter()
        .map(|(title, text)| {
            if title {
                Line::styled(text, t.title())
            } else {
                Line::from(text)
            }
        })
        .collect();
    let title = if r.help_lines + 2 > popup.height {
        " Help (↑/↓ pgup/pgdn scroll) "
    } else {
        " Help "
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((app.help_scroll, 0))
            .block(Block::bordered().title(Span::styled(title, t.title()))),
        popup,
    );
}
