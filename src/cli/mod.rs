//! The `feedscope` binary: clap's view of the command line ([`args`]), the front ends it
//! starts ([`headless`], [`ui`]), the one-shot commands ([`oneshot`]), the developer tools
//! ([`soak`], [`demo`]) and what they share ([`signals`], [`kit`]).
//!
//! None of it is library API: the library is the engine and its layers; this tree only wires a
//! front end to them.

mod args;
mod demo;
mod headless;
pub(crate) mod kit;
mod oneshot;
mod signals;
mod soak;
mod ui;

use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use feedscope::policy::Policy;

use args::{config, recorder, storage_dir, Cli, Cmd};
use signals::QuitSignals;

/// Reads the command line, runs what it asks for and returns the process's exit code.
pub(crate) fn main() -> std::process::ExitCode {
    // A replicating feed holds four files open; a soft limit of 1,024, common by default,
    // would stop at about 250 feeds replicating at once. The hard limit is what the system
    // allows this process.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Some(Cmd::Soak(_) | Cmd::SoakWorker(_) | Cmd::Demo { .. } | Cmd::Replay { .. })
            if storage_typed(&matches) =>
        {
            Err(anyhow::anyhow!(
                "--storage does not apply here: soak and demo run on temporary storage (soak \
                 takes --dir), and replay reads only its file"
            ))
        }
        _ => run(cli),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feedscope: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `--storage` was typed (not taken from `FEEDSCOPE_STORAGE`), before or after the
/// sub-command.
fn storage_typed(matches: &clap::ArgMatches) -> bool {
    let typed = |m: &clap::ArgMatches| m.value_source("storage") == Some(ValueSource::CommandLine);
    typed(matches) || matches.subcommand().is_some_and(|(_, sub)| typed(sub))
}

fn run(cli: Cli) -> Result<()> {
    // The soak runs its own two runtimes, to count the tasks of each.
    let command = match cli.command {
        Some(Cmd::Soak(args)) => return soak::main(args),
        Some(Cmd::SoakWorker(args)) => return soak::worker(args),
        other => other,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match command {
            Some(Cmd::Soak(_) | Cmd::SoakWorker(_)) => {
                bail!("soak runs outside the main runtime")
            }
            Some(Cmd::Run {
                net,
                json,
                skip,
                record,
            }) => {
                let config = config(&net, Policy::AcceptAll)?;
                headless::run(config, json, skip, recorder(&record)?).await
            }
            Some(Cmd::Replay {
                file,
                json,
                sequence,
            }) => ui::replay(&file, json, sequence).await,
            Some(Cmd::Demo { no_mouse }) => demo::main(!no_mouse).await,
            Some(Cmd::Append {
                feed,
                wire,
                data,
                storage,
            }) => oneshot::append(&storage_dir(&storage)?, &feed, wire, data).await,
            Some(Cmd::Feeds { json, storage }) => {
                oneshot::feeds(&storage_dir(&storage)?, json).await
            }
            Some(Cmd::Cat { key, storage }) => oneshot::cat(&storage_dir(&storage)?, &key).await,
            Some(Cmd::Decisions {
                json,
                forget,
                storage,
            }) => oneshot::decisions(&storage_dir(&storage)?, json, forget).await,
            None => {
                let signals = QuitSignals::catch()?;
                let mut net = cli.net;
                if net.listen.is_none() {
                    net.listen = Some("127.0.0.1:0".into());
                }
                ui::run(
                    config(&net, Policy::Manual)?,
                    !cli.no_mouse,
                    recorder(&cli.record)?,
                    signals,
                )
                .await
            }
        }
    })
}
