//! The terminal front end: a fold of engine events ([`model`]), view state and keys ([`app`],
//! [`keys`]), drawing ([`view`]), and the loop below that ties them to the engine.
//!
//! The loop redraws only when something changed, at most every 33 ms, so a fast transfer
//! cannot make it spin; the engine never waits for it (events queue, the fold is cheap).

pub mod app;
pub mod keys;
pub mod model;
pub mod view;

use std::io;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ratatui::crossterm::event::{
    DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream, MouseButton,
    MouseEventKind,
};
use ratatui::crossterm::execute;

use crate::engine::Engine;
use crate::event::{Command, Event};
use app::{App, Settings};

/// Least time between two frames (about 30 per second).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// Most engine events folded between two looks at the keyboard.
const EVENTS_PER_TURN: usize = 10_000;

/// Options of the terminal UI.
#[derive(Debug, Clone)]
pub struct Options {
    /// Capture the mouse (click to select, wheel to scroll).
    pub mouse: bool,
    /// Facts for the header and help.
    pub settings: Settings,
}

/// Runs the UI on `engine` until the user quits; shuts the engine down cleanly.
pub async fn run(mut engine: Engine, opts: Options) -> io::Result<()> {
    let mut terminal = ratatui::init();
    if opts.mouse {
        let _ = execute!(io::stdout(), EnableMouseCapture);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(io::stdout(), DisableMouseCapture);
            previous(info);
        }));
    }
    let result = event_loop(&mut terminal, &mut engine, &opts).await;
    if opts.mouse {
        let _ = execute!(io::stdout(), DisableMouseCapture);
    }
    ratatui::restore();
    // Let the engine close peers and flush storage before the process ends.
    let _ = engine.commands.send(Command::Quit);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = engine.events.recv().await {
            if ev == Event::Stopped {
                break;
            }
        }
    })
    .await;
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    engine: &mut Engine,
    opts: &Options,
) -> io::Result<()> {
    let started = Instant::now();
    let mut app = App::new(opts.settings.clone());
    let mut input = EventStream::new();
    let mut dirty = true;
    let mut last_frame = Instant::now() - FRAME_INTERVAL;
    let mut peers_area = ratatui::layout::Rect::default();
    loop {
        if dirty && last_frame.elapsed() >= FRAME_INTERVAL {
            terminal.draw(|f| {
                view::render(f, &app);
                let a = f.area();
                peers_area = ratatui::layout::Rect {
                    x: 0,
                    y: 2,
                    width: view::peers_width(a.width),
                    height: a.height,
                };
            })?;
            dirty = false;
            last_frame = Instant::now();
        }
        let wait = if dirty {
            FRAME_INTERVAL.saturating_sub(last_frame.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            ev = engine.events.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                app.on_event(&ev, started.elapsed().as_secs_f64());
                for _ in 0..EVENTS_PER_TURN {
                    match engine.events.try_recv() {
                        Ok(ev) => app.on_event(&ev, started.elapsed().as_secs_f64()),
                        Err(_) => break,
                    }
                }
                dirty = true;
            }
            term = input.next() => {
                let Some(Ok(term)) = term else { return Ok(()) };
                if let TermEvent::Mouse(m) = &term {
                    if m.kind == MouseEventKind::Down(MouseButton::Left)
                        && m.column < peers_area.width
                        && m.row >= peers_area.y
                    {
                        app.click_peer((m.row - peers_area.y) as usize);
                    }
                }
                for cmd in app.on_terminal(&term) {
                    let _ = engine.commands.send(cmd);
                }
                if app.quit {
                    return Ok(());
                }
                dirty = true;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
