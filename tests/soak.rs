//! `feedscope soak` as a user runs it, kept short: a few peers for a few seconds.

mod common;

use std::time::{Duration, Instant};

use common::{bin, feedscope};

#[test]
fn a_short_soak_passes_and_reports_memory_fds_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let out = feedscope(
        &[
            "soak",
            "--peers",
            "4",
            "--seconds",
            "5",
            "--report-every",
            "2",
            // Idle RSS is about 17 MB with 4 peers, and the allocator alone moves it by up to
            // 1 MB (6%) between two idle moments of a 5 s run; the 10% default is meant for
            // the 100-peer run, whose idle RSS is about 75 MB.
            "--rss-tolerance",
            "30",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit status {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(began.elapsed() < Duration::from_secs(60), "{stdout}");
    for row in [
        "| RSS ",
        "| open fds ",
        "| tasks, server runtime ",
        "| tasks, peers' runtime ",
        "| server connections ",
        "verdict: PASS",
        "failures: 0",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
    // At least one progress line while the peers were busy.
    assert!(stdout.contains("0:0"), "{stdout}");
    // The temporary storage is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_bad_soak_argument_is_refused() {
    let out = feedscope(&["soak", "--peers", "0", "--seconds", "1"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--peers"), "{stderr}");
}

#[test]
fn storage_typed_for_the_soak_is_refused_and_taken_from_the_environment_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    for args in [
        ["soak", "--storage", storage, "--seconds", "1"],
        ["--storage", storage, "soak", "--seconds", "1"],
    ] {
        let out = feedscope(&args, None);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--storage does not apply"), "{stderr}");
        assert!(stderr.contains("--dir"), "{stderr}");
    }
    // A storage folder set for every command is no reason to refuse a replay.
    let out = std::process::Command::new(bin())
        .args(["replay", "/nonexistent/recording.jsonl", "--json"])
        .env("FEEDSCOPE_STORAGE", storage)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read recording"), "{stderr}");
}
