//! The terminal UI's start-up: on live engines (`feedscope`, `feedscope demo`) and on a
//! recording (`feedscope replay`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use feedscope::engine::{self, Config};
use feedscope::policy::Policy;
use feedscope::record::Recorder;

use super::signals::QuitSignals;

fn log_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "feedscope")
        .map(|d| d.data_dir().join("logs"))
        .unwrap_or_else(|| std::env::temp_dir().join("feedscope-logs"))
}

pub(crate) async fn replay(file: &std::path::Path, json: bool, sequence: bool) -> Result<()> {
    let (_header, entries, problem) = feedscope::record::read(file)?;
    if json {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for e in &entries {
            writeln!(out, "{}", serde_json::to_string(&e.event)?)?;
        }
        out.flush()?;
    } else if sequence {
        print!("{}", feedscope::record::sequence(&entries));
    } else {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            bail!("the replay UI needs a terminal; use --json or --sequence in scripts");
        }
        let settings = feedscope::tui::app::Settings {
            key: "replay".into(),
            policy: file.display().to_string(),
            log_file: log_dir().join("feedscope.log").display().to_string(),
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            ..Default::default()
        };
        let mut signals = QuitSignals::catch()?;
        feedscope::tui::replay(
            entries,
            settings,
            problem.as_ref().map(|p| p.to_string()),
            async move { signals.recv().await },
        )
        .await?;
        return Ok(());
    }
    if let Some(p) = problem {
        bail!("{p}");
    }
    Ok(())
}

pub(crate) async fn run(
    config: Config,
    mouse: bool,
    recorder: Option<Recorder>,
    mut signals: QuitSignals,
) -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        bail!("the terminal UI needs a terminal; for scripts use `feedscope run --json`");
    }
    let dir = log_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the log folder {}", dir.display()))?;
    let appender = tracing_appender::rolling::never(&dir, "feedscope.log");
    let (writer, _guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "feedscope=info,warn".into()),
        )
        .init();
    let settings = feedscope::tui::app::Settings {
        key: config.key.short(),
        policy: match config.policy {
            Policy::AcceptAll => "accept-all".into(),
            Policy::Manual => "manual".into(),
            Policy::Observe => "observe".into(),
        },
        storage: config.storage.display().to_string(),
        log_file: dir.join("feedscope.log").display().to_string(),
        no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    };
    let engine = engine::start(config).await?;
    feedscope::tui::run(
        engine,
        feedscope::tui::Options { mouse, settings },
        recorder,
        async move { signals.recv().await },
    )
    .await?;
    Ok(())
}
