//! The terminal front end: a fold of engine events ([`model`]), view state and keys ([`app`],
//! [`keys`]), drawing ([`view`]), and the loop below that ties them to the engine.
//!
//! The loop redraws only when something changed, at most every 33 ms, so a fast transfer
//! cannot make it spin. The engine never waits for it: each turn the loop empties the engine's
//! channel into the bounded, coalescing [`inbox`], then folds what waits there for at most
//! [`FOLD_BUDGET`], so keys and frames keep their turn however busy the engine is.

pub mod app;
pub mod inbox;
pub mod keys;
pub mod model;
pub mod view;

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture, EventStream};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{disable_raw_mode, LeaveAlternateScreen};

use crate::engine::Engine;
use crate::event::{Command, Event, ProblemKind};
use app::{App, Settings};
use inbox::Inbox;

/// Least time between two frames (about 30 per second).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// Most time spent folding events between two looks at the keyboard and the clock.
pub const FOLD_BUDGET: Duration = Duration::from_millis(8);
/// Most events taken from the engine's channel in one turn (taking one costs tens of
/// nanoseconds, so this only bounds a turn, it does not slow the taking).
pub const TAKE_PER_TURN: usize = 65_536;

/// Options of the terminal UI.
#[derive(Debug, Clone)]
pub struct Options {
    /// Capture the mouse (click to select, wheel to scroll).
    pub mouse: bool,
    /// Facts for the header and help.
    pub settings: Settings,
}

/// Runs the UI on `engine` until the user quits or `stop` resolves (the binary passes SIGTERM,
/// SIGHUP and SIGINT), then restores the terminal and shuts the engine down cleanly. An engine
/// that cannot listen ends the UI too, with its message as the error.
pub async fn run(
    mut engine: Engine,
    opts: Options,
    mut recorder: Option<crate::record::Recorder>,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut terminal = ratatui::init();
    if opts.mouse {
        let _ = execute!(io::stdout(), EnableMouseCapture);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(io::stdout(), DisableMouseCapture);
            previous(info);
        }));
    }
    tokio::pin!(stop);
    let result = tokio::select! {
        result = event_loop(&mut terminal, &mut engine, &opts, &mut recorder) => result,
        () = &mut stop => Ok(()),
    };
    let result = hung_up_is_quit(result, stop).await;
    restore(terminal, opts.mouse);
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
    recorder: &mut Option<crate::record::Recorder>,
) -> io::Result<()> {
    let started = Instant::now();
    let mut app = App::new(opts.settings.clone());
    let mut inbox = Inbox::new();
    let mut input = EventStream::new();
    let mut dirty = true;
    let mut engine_gone = false;
    let mut last_frame = Instant::now() - FRAME_INTERVAL;
    loop {
        dirty |= app.tick(Instant::now());
        if dirty && last_frame.elapsed() >= FRAME_INTERVAL {
            draw(terminal, &mut app)?;
            dirty = false;
            last_frame = Instant::now();
        }
        if engine_gone && inbox.is_empty() {
            return Ok(());
        }
        let wait = if !inbox.is_empty() {
            Duration::ZERO
        } else if dirty {
            FRAME_INTERVAL.saturating_sub(last_frame.elapsed())
        } else {
            until_deadline(&app)
        };
        let mut first = None;
        tokio::select! {
            ev = engine.events.recv(), if inbox.is_empty() && !engine_gone => {
                match ev {
                    Some(ev) => first = Some(ev),
                    None => engine_gone = true,
                }
            }
            term = input.next() => {
                let Some(Ok(term)) = term else { return Ok(()) };
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
        let at = started.elapsed().as_secs_f64();
        let turn = ingest(
            &mut app,
            &mut inbox,
            &mut engine.events,
            first,
            at,
            recorder,
        )?;
        engine_gone |= turn.engine_gone;
        dirty |= turn.folded > 0;
    }
}

/// What one turn of [`ingest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Events folded into the model.
    pub folded: usize,
    /// Whether the engine's channel is closed and empty.
    pub engine_gone: bool,
}

/// One turn of the UI's intake: moves what the engine sent (after `first`, already received)
/// into `inbox`, at most [`TAKE_PER_TURN`] events, each written to `recorder` first so a
/// recording keeps what the inbox coalesces or drops; then folds what waits for at most
/// [`FOLD_BUDGET`]. An engine that cannot listen ends the UI with its message.
pub fn ingest(
    app: &mut App,
    inbox: &mut Inbox,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    first: Option<Event>,
    at: f64,
    recorder: &mut Option<crate::record::Recorder>,
) -> io::Result<Turn> {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut turn = Turn {
        folded: 0,
        engine_gone: false,
    };
    let mut first = first;
    for _ in 0..TAKE_PER_TURN {
        let ev = match first.take().map_or_else(|| events.try_recv(), Ok) {
            Ok(ev) => ev,
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                turn.engine_gone = true;
                break;
            }
        };
        if let Some(r) = recorder.as_mut() {
            if let Err(e) = r.write(&ev) {
                app.report(format!("recording stopped: {e}"));
                *recorder = None;
            }
        }
        if let Some((at, older)) = inbox.push(at, ev) {
            fold(app, &older, at)?;
            turn.folded += 1;
        }
    }
    let deadline = Instant::now() + FOLD_BUDGET;
    while let Some((at, ev)) = inbox.pop() {
        fold(app, &ev, at)?;
        turn.folded += 1;
        if turn.folded.is_multiple_of(256) && Instant::now() >= deadline {
            break;
        }
    }
    app.ingest = inbox.stats();
    Ok(turn)
}

/// Folds one event; an engine that cannot listen ends the UI with its message.
fn fold(app: &mut App, ev: &Event, at: f64) -> io::Result<()> {
    app.on_event(ev, at);
    if let Event::Error {
        peer: None,
        kind: ProblemKind::Listen | ProblemKind::Metrics,
        message,
    } = ev
    {
        // The engine stops: there is nothing left to show.
        return Err(io::Error::other(message.clone()));
    }
    Ok(())
}

/// Lays the screen out for the terminal's size, then draws it.
fn draw(terminal: &mut ratatui::DefaultTerminal, app: &mut App) -> io::Result<()> {
    let size = terminal.size()?;
    app.set_area(ratatui::layout::Rect::new(0, 0, size.width, size.height));
    terminal.draw(|f| view::render(f, app))?;
    Ok(())
}

/// How long the loop may sleep before a message goes stale.
fn until_deadline(app: &App) -> Duration {
    app.next_deadline().map_or(Duration::from_secs(3600), |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// How long a terminal error waits for the `stop` that explains it.
const HANG_UP_GRACE: Duration = Duration::from_millis(500);

/// A terminal that hangs up fails the next draw, often before its SIGHUP is handled: an OS
/// error followed at once by `stop` is that hang-up asking to quit, not a failure.
async fn hung_up_is_quit(
    result: io::Result<()>,
    stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error().is_some() => {
            match tokio::time::timeout(HANG_UP_GRACE, stop).await {
                Ok(()) => Ok(()),
                Err(_) => Err(e),
            }
        }
        other => other,
    }
}

/// Puts the terminal back as it was before [`ratatui::init`]: cooked mode, the main screen, the
/// cursor shown and the mouse released. Each step is tried even when one before it failed (on a
/// terminal that hung up, they all fail).
fn restore(mut terminal: ratatui::DefaultTerminal, mouse: bool) {
    if mouse {
        let _ = execute!(io::stdout(), DisableMouseCapture);
    }
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen);
    if terminal.show_cursor().is_err() {
        // Dropped, it would try again and report the failure with `eprintln!`, which panics
        // when stderr is the terminal that hung up.
        std::mem::forget(terminal);
    }
}

/// Shows a recording in the same views, with a timeline, until the user quits or `stop`
/// resolves.
pub async fn replay(
    entries: Vec<crate::record::Entry>,
    settings: Settings,
    problem: Option<String>,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    use keys::{replay_action_for, ReplayAction};
    use ratatui::crossterm::event::Event as TermEvent;
    let mut terminal = ratatui::init();
    let mut app = App::new(settings);
    if let Some(p) = problem {
        app.report(p);
    }
    let end = entries.last().map_or(0.0, |e| e.t);
    let mut input = EventStream::new();
    let (mut pos, mut playing, mut speed) = (0usize, true, 1.0f64);
    // The playhead in recording time, and when it was last moved in wall time.
    let (mut head, mut moved) = (0.0f64, Instant::now());
    let shown = async {
        loop {
            if playing {
                head = (head + moved.elapsed().as_secs_f64() * speed).min(end);
            }
            moved = Instant::now();
            while pos < entries.len() && entries[pos].t <= head {
                app.on_event(&entries[pos].event, entries[pos].t);
                pos += 1;
            }
            if pos == entries.len() {
                playing = false;
            }
            app.replay = Some(format!(
                "{} {:.1}s/{:.1}s  event {pos}/{}  x{speed}",
                if playing { "▶ playing" } else { "⏸ paused" },
                head,
                end,
                entries.len()
            ));
            app.tick(Instant::now());
            draw(&mut terminal, &mut app)?;
            let wait = if playing {
                entries
                    .get(pos)
                    .map_or(FRAME_INTERVAL, |e| {
                        Duration::from_secs_f64(((e.t - head) / speed).max(0.0))
                    })
                    .clamp(Duration::from_millis(5), Duration::from_millis(250))
            } else {
                until_deadline(&app)
            };
            tokio::select! {
                term = input.next() => {
                    let Some(Ok(term)) = term else { return Ok(()) };
                    let action = match &term {
                        TermEvent::Key(k) if app.input.is_none() && !app.help => {
                            replay_action_for(k)
                        }
                        _ => None,
                    };
                    let mut rebuild_to = None;
                    match action {
                        Some(ReplayAction::PlayPause) => playing = !playing && pos < entries.len(),
                        Some(ReplayAction::Forward) => {
                            playing = false;
                            if pos < entries.len() {
                                head = entries[pos].t;
                            }
                        }
                        Some(ReplayAction::Back) => {
                            playing = false;
                            rebuild_to = Some(pos.saturating_sub(1));
                        }
                        Some(ReplayAction::Faster) => speed = (speed * 2.0).min(64.0),
                        Some(ReplayAction::Slower) => speed = (speed / 2.0).max(1.0 / 64.0),
                        Some(ReplayAction::Start) => {
                            playing = false;
                            rebuild_to = Some(0);
                        }
                        Some(ReplayAction::End) => {
                            playing = false;
                            head = end;
                        }
                        None => {
                            // Navigation, panes, help and quitting work as in the live UI;
                            // commands that need an engine are refused with a reason.
                            let _ = app.on_terminal(&term);
                            if app.quit {
                                return Ok(());
                            }
                        }
                    }
                    if let Some(to) = rebuild_to {
                        app.reset_model();
                        for e in &entries[..to] {
                            app.on_event(&e.event, e.t);
                        }
                        pos = to;
                        head = if to == 0 { 0.0 } else { entries[to - 1].t };
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    };
    tokio::pin!(stop);
    let result: io::Result<()> = tokio::select! {
        result = shown => result,
        () = &mut stop => Ok(()),
    };
    let result = hung_up_is_quit(result, stop).await;
    restore(terminal, false);
    result
}
