//! `feedscope demo`: real peers on loopback with sample feeds, busy enough to watch.
//!
//! Two engines run in this process, each with its own storage in a temporary folder:
//! a "field team" that offers a chat and field notes and keeps chatting, and a "sensor
//! station" that appends readings every second and, after a few seconds, offers a new feed.
//! Nothing of the user's own storage is touched.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use feedscope::engine::{self, Config, Engine};
use feedscope::event::Command;
use feedscope::policy::Policy;
use feedscope::store::StoreError;
use feedscope::wire::FeedKey;

use super::kit;
use super::signals::QuitSignals;

const CHAT: &str = include_str!("../../assets/demo/chat.txt");
const FIELD_NOTES: &str = include_str!("../../assets/demo/field-notes.txt");
const SENSOR_LOG: &str = include_str!("../../assets/demo/sensor-log.txt");

const MORE_CHAT: &[&str] = &[
    "carol: gauge says 1.70 m, I'm heading to bridge 2",
    "bob: take the radio, reception is bad down there",
    "alice: new photos from trap 3 are syncing now",
    "carol: bridge 2 still under water",
    "bob: copy that",
];

/// Opens the terminal UI on the demo peers, with storage of its own beside theirs in a
/// temporary folder that is removed on the way out.
pub(crate) async fn main(mouse: bool) -> Result<()> {
    let signals = QuitSignals::catch()?;
    let base = std::env::temp_dir().join(format!("feedscope-demo-{}", std::process::id()));
    let peers = start(base.join("peers"), kit::key()).await?;
    let config = Config {
        policy: Policy::Manual,
        ..kit::config(base.join("you"), true, peers.addrs.clone())
    };
    let result = super::ui::run(config, mouse, None, signals).await;
    drop(peers);
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// The demo peers, running until dropped.
#[derive(Debug)]
struct Demo {
    /// Addresses to dial.
    addrs: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Seeds `dir` with feeds whose blocks are the lines of their text.
async fn seed(dir: &std::path::Path, feeds: &[(&str, &str)]) -> Result<(), StoreError> {
    let lines = feeds.iter().map(|(name, text)| (name, text.lines()));
    kit::seed(dir, lines).await.map(drop)
}

/// The address `engine` listens on, or none if it does not.
async fn listening(engine: &mut Engine) -> String {
    kit::listening(&mut engine.events, Duration::from_secs(30))
        .await
        .unwrap_or_default()
}

fn drain(
    mut engine: Engine,
) -> (
    tokio::sync::mpsc::UnboundedSender<Command>,
    tokio::task::JoinHandle<()>,
) {
    let commands = engine.commands.clone();
    let task = tokio::spawn(async move { while engine.events.recv().await.is_some() {} });
    (commands, task)
}

/// Starts the demo peers under `dir` (which it removes when dropped), with `key` shared.
async fn start(dir: PathBuf, key: FeedKey) -> Result<Demo, StoreError> {
    let team_dir = dir.join("field-team");
    let sensor_dir = dir.join("sensor-station");
    seed(&team_dir, &[("chat", CHAT), ("field-notes", FIELD_NOTES)]).await?;
    seed(&sensor_dir, &[("sensor-log", SENSOR_LOG)]).await?;
    let config = |storage: PathBuf| Config {
        key,
        ..kit::config(storage, true, vec![])
    };
    let mut team = engine::start(config(team_dir)).await?;
    let mut sensors = engine::start(config(sensor_dir)).await?;
    let addrs = vec![listening(&mut team).await, listening(&mut sensors).await];
    let (team_cmds, t1) = drain(team);
    let (sensor_cmds, t2) = drain(sensors);
    let activity = tokio::spawn(async move {
        for tick in 0u64..3600 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let level = 1.46 + tick as f64 * 0.01;
            let _ = sensor_cmds.send(Command::Append {
                feed: "sensor-log".into(),
                data: Some(format!(
                    "t={} temp={:.1} humidity={} level={level:.2}",
                    3000 + tick * 600,
                    12.8 + (tick % 7) as f64 * 0.2,
                    75 - (tick % 5)
                )),
                data_hex: None,
            });
            if tick % 4 == 3 {
                let line = MORE_CHAT[(tick / 4) as usize % MORE_CHAT.len()];
                let _ = team_cmds.send(Command::Append {
                    feed: "chat".into(),
                    data: Some(line.into()),
                    data_hex: None,
                });
            }
            if tick == 7 {
                let _ = sensor_cmds.send(Command::AddFeed {
                    name: "trap7-photos".into(),
                    wire: None,
                });
            }
            if tick >= 7 && tick % 2 == 1 {
                let _ = sensor_cmds.send(Command::Append {
                    feed: "trap7-photos".into(),
                    data: Some(format!("IMG_{:04}.jpg {} bytes", tick, 48_000 + tick * 37)),
                    data_hex: None,
                });
            }
        }
    });
    Ok(Demo {
        addrs,
        tasks: vec![t1, t2, activity],
        dir,
    })
}

#[cfg(test)]
mod tests {
    use feedscope::event::Event;

    use super::*;

    #[tokio::test]
    async fn demo_peers_offer_their_sample_feeds_and_keep_appending() {
        let base = tempfile::tempdir().unwrap();
        let demo = start(base.path().join("demo"), kit::key()).await.unwrap();
        let me = kit::config(base.path().join("me"), false, demo.addrs.clone());
        let mut me = engine::start(me).await.unwrap();
        let mut names = std::collections::BTreeSet::new();
        let mut chat_grew = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !(names.len() >= 4 && chat_grew) {
            let ev = tokio::time::timeout_at(deadline, me.events.recv())
                .await
                .expect("demo activity within 30 s")
                .unwrap();
            if let Event::OfferReceived { meta, .. } = &ev {
                for (_, m) in meta.iter() {
                    if let Some(n) = m.get("name").and_then(|v| v.as_str().map(str::to_string)) {
                        names.insert(n);
                    }
                }
            }
            if let Event::FeedSynced { length, .. } = &ev {
                // chat starts with 8 lines; a longer synced feed means live appends arrived.
                chat_grew |= *length > 8;
            }
        }
        assert!(names.contains("trap7-photos"), "{names:?}");
        let _ = me.commands.send(Command::Quit);
        drop(demo);
    }
}
