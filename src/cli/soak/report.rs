//! What a soak run found, the verdict on it and how it is printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use super::Options;

/// The process and the server at one moment. `None` where the platform does not tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident set size in bytes (`VmRSS`).
    pub rss: Option<u64>,
    /// Open file descriptors.
    pub fds: Option<u64>,
    /// Live tasks of the server's runtime.
    pub server_tasks: usize,
    /// Live tasks of the peers' runtime.
    pub peer_tasks: usize,
    /// Connections the server holds.
    pub server_peers: i64,
}

/// What a soak run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Idle, the server just started.
    pub fresh: Sample,
    /// Idle, after the warm-up.
    pub start: Sample,
    /// Idle, after the run.
    pub end: Sample,
    /// Highest RSS in the first and in the last tenth of the run, peers busy.
    pub busy_rss: (Option<u64>, Option<u64>),
    /// Cycles completed in the run.
    pub cycles: u64,
    /// Cycles completed in the warm-up.
    pub warm_up_cycles: u64,
    /// Failed cycles (warm-up included), peers stuck past the end, a server that did not stop.
    pub failures: u64,
    /// `error` events from any engine.
    pub errors: u64,
    /// `warning` events from any engine.
    pub warnings: u64,
    /// `connect_retry` events.
    pub connect_retries: u64,
    /// Failures and events by kind.
    pub kinds: BTreeMap<String, u64>,
    /// The first few failure and event messages.
    pub examples: Vec<String>,
    /// Seconds the run took (without the warm-up).
    pub seconds: f64,
    /// Why the run failed; empty when it passed.
    pub problems: Vec<String>,
}

impl Report {
    /// Whether there were no failures and no growth.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Resident set size of this process in bytes (Linux).
pub fn rss() -> Option<u64> {
    crate::cli::kit::memory("self", "VmRSS")
}

/// Open file descriptors of this process (Linux `/proc/self/fd`, or `/dev/fd` elsewhere),
/// without the one used to list them.
pub fn open_fds() -> Option<u64> {
    ["/proc/self/fd", "/dev/fd"].iter().find_map(|dir| {
        let n = std::fs::read_dir(dir).ok()?.count() as u64;
        Some(n.saturating_sub(1))
    })
}

/// Why the run failed, if it did.
pub(super) fn verdict(r: &Report, options: &Options) -> Vec<String> {
    let mut problems = Vec::new();
    if r.failures > 0 {
        problems.push(format!("{} failures", r.failures));
    }
    if r.errors > 0 {
        problems.push(format!("{} error events", r.errors));
    }
    if r.cycles == 0 {
        problems.push("no cycle completed".into());
    }
    if let (Some(a), Some(b)) = (r.start.rss, r.end.rss) {
        let limit = a as f64 * (1.0 + options.rss_tolerance / 100.0);
        if b as f64 > limit {
            problems.push(format!(
                "idle RSS grew by {} (more than {}%)",
                percent(a, b),
                options.rss_tolerance
            ));
        }
    }
    if let (Some(a), Some(b)) = (r.start.fds, r.end.fds) {
        if b > a {
            problems.push(format!("{} more open file descriptors", b - a));
        }
    }
    if r.end.server_tasks > r.start.server_tasks {
        problems.push(format!(
            "{} more server tasks",
            r.end.server_tasks - r.start.server_tasks
        ));
    }
    if r.end.peer_tasks > r.start.peer_tasks {
        problems.push(format!(
            "{} more peer-side tasks",
            r.end.peer_tasks - r.start.peer_tasks
        ));
    }
    if r.end.server_peers != 0 {
        problems.push(format!(
            "the server still holds {} connections",
            r.end.server_peers
        ));
    }
    problems
}

pub(super) fn write_report(r: &Report, options: &Options, out: &mut dyn Write) -> Result<()> {
    let mb = |v: Option<u64>| v.map_or("n/a".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6));
    let n = |v: Option<u64>| v.map_or("n/a".to_string(), |x| x.to_string());
    let diff = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+}", b as i64 - a as i64),
        _ => "n/a".into(),
    };
    let tasks = |s: &Sample| Some(s.server_tasks as u64);
    let peer_tasks = |s: &Sample| Some(s.peer_tasks as u64);
    let conns = |s: &Sample| Some(s.server_peers.max(0) as u64);
    let rows: Vec<[String; 5]> = vec![
        [
            "RSS".into(),
            mb(r.fresh.rss),
            mb(r.start.rss),
            mb(r.end.rss),
            match (r.start.rss, r.end.rss) {
                (Some(a), Some(b)) => percent(a, b),
                _ => "n/a".into(),
            },
        ],
        [
            "open fds".into(),
            n(r.fresh.fds),
            n(r.start.fds),
            n(r.end.fds),
            diff(r.start.fds, r.end.fds),
        ],
        [
            "tasks, server runtime".into(),
            n(tasks(&r.fresh)),
            n(tasks(&r.start)),
            n(tasks(&r.end)),
            diff(tasks(&r.start), tasks(&r.end)),
        ],
        [
            "tasks, peers' runtime".into(),
            n(peer_tasks(&r.fresh)),
            n(peer_tasks(&r.start)),
            n(peer_tasks(&r.end)),
            diff(peer_tasks(&r.start), peer_tasks(&r.end)),
        ],
        [
            "server connections".into(),
            n(conns(&r.fresh)),
            n(conns(&r.start)),
            n(conns(&r.end)),
            diff(conns(&r.start), conns(&r.end)),
        ],
    ];
    let header = ["idle, no peer connected", "fresh", "start", "end", "change"];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    writeln!(out)?;
    let line = |out: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = " ".repeat(w - c.chars().count());
                if i == 0 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect();
        writeln!(out, "| {} |", padded.join(" | "))
    };
    line(out, &header.map(String::from))?;
    line(out, &widths.map(|w| "-".repeat(w)))?;
    for row in &rows {
        line(out, row)?;
    }
    writeln!(out)?;
    let (first, last) = r.busy_rss;
    writeln!(
        out,
        "RSS with {} peers busy, highest in the first / last tenth: {} / {}{}",
        options.peers,
        mb(first),
        mb(last),
        match (first, last) {
            (Some(a), Some(b)) => format!(" ({})", percent(a, b)),
            _ => String::new(),
        }
    )?;
    let per_second = r.cycles as f64 / r.seconds.max(f64::EPSILON);
    writeln!(
        out,
        "cycles: {} in {:.0} s ({per_second:.1} per second, {:.1} per peer), plus {} in the warm-up",
        r.cycles,
        r.seconds,
        r.cycles as f64 / options.peers as f64,
        r.warm_up_cycles
    )?;
    if let (Some(a), Some(b)) = (r.start.rss, r.end.rss) {
        if r.cycles > 0 {
            writeln!(
                out,
                "idle RSS change per cycle: {:+.0} bytes",
                (b as f64 - a as f64) / r.cycles as f64
            )?;
        }
    }
    writeln!(out, "failures: {}", r.failures)?;
    writeln!(
        out,
        "events: {} errors, {} warnings, {} connect retries",
        r.errors, r.warnings, r.connect_retries
    )?;
    for (kind, count) in &r.kinds {
        writeln!(out, "  {count} × {kind}")?;
    }
    for e in &r.examples {
        writeln!(out, "  e.g. {e}")?;
    }
    if r.passed() {
        writeln!(
            out,
            "verdict: PASS (no failures, idle RSS within {}%, fds and tasks back to their start)",
            options.rss_tolerance
        )?;
    } else {
        writeln!(out, "verdict: FAIL ({})", r.problems.join("; "))?;
    }
    out.flush()?;
    Ok(())
}

fn percent(from: u64, to: u64) -> String {
    if from == 0 {
        return "n/a".into();
    }
    format!("{:+.1}%", (to as f64 - from as f64) / from as f64 * 100.0)
}

pub(super) fn sample_text(s: &Sample) -> String {
    let rss = s
        .rss
        .map_or("n/a".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6));
    let fds = s.fds.map_or("n/a".to_string(), |n| n.to_string());
    format!(
        "RSS {rss}  fds {fds}  tasks {} server / {} peers  server connections {}",
        s.server_tasks, s.peer_tasks, s.server_peers
    )
}

/// `1:05` for 65 s.
pub(super) fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// `10 min`, `1 min 30 s`, `5 s`, `0.5 s`.
pub(super) fn duration_text(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 && secs.fract() != 0.0 {
        return format!("{secs:.1} s");
    }
    let secs = secs.round() as u64;
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_text(Duration::from_secs(600)), "10 min");
        assert_eq!(duration_text(Duration::from_secs(90)), "1 min 30 s");
        assert_eq!(duration_text(Duration::from_secs(5)), "5 s");
        assert_eq!(duration_text(Duration::from_millis(500)), "0.5 s");
        assert_eq!(clock(Duration::from_millis(65_900)), "1:05");
    }

    #[test]
    fn growth_fails_the_verdict() {
        let options = Options::default();
        let idle = Sample {
            rss: Some(100_000_000),
            fds: Some(20),
            server_tasks: 2,
            peer_tasks: 1,
            server_peers: 0,
        };
        let mut r = Report {
            start: idle,
            end: idle,
            cycles: 10,
            ..Default::default()
        };
        assert!(verdict(&r, &options).is_empty());
        r.end.rss = Some(109_000_000);
        assert!(verdict(&r, &options).is_empty(), "9% is within 10%");
        r.end.rss = Some(111_000_000);
        r.end.fds = Some(21);
        r.end.server_tasks = 3;
        r.end.server_peers = 1;
        r.failures = 1;
        assert_eq!(verdict(&r, &options).len(), 5);
    }

    #[test]
    fn this_process_can_be_measured() {
        if cfg!(target_os = "linux") {
            assert!(rss().unwrap() > 0);
            assert!(open_fds().unwrap() >= 3);
        }
    }
}
