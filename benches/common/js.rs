//! The JavaScript hypercore 10 baseline: `tests/js/bench.mjs`, run as JS ↔ JS on one workload.
//!
//! `node bench.mjs --feeds 1 --blocks N --block-size S` prints one JSON line with `mb_per_s` and
//! `seconds`, timed from the dialer's connection to its last `synced`. Anything else is reported
//! as "n/a" with the reason.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

/// Longest a single JS run may take.
const JS_BUDGET: Duration = Duration::from_secs(180);

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Runs the baseline for `blocks` × `size` bytes; the rate in MB/s, or why there is none.
pub async fn baseline(blocks: usize, size: usize) -> Result<f64, String> {
    let dir = js_dir();
    if !dir.join("bench.mjs").exists() {
        return Err("tests/js/bench.mjs does not exist yet".into());
    }
    run(&dir, "node", &["--version"])
        .await
        .map_err(|e| format!("node is not usable: {e}"))?;
    if !dir.join("node_modules").exists() {
        run(&dir, "npm", &["ci", "--no-audit", "--no-fund"])
            .await
            .map_err(|e| format!("npm ci in tests/js failed: {e}"))?;
    }
    let (blocks, size) = (blocks.to_string(), size.to_string());
    let args = [
        "bench.mjs",
        "--feeds",
        "1",
        "--blocks",
        &blocks,
        "--block-size",
        &size,
    ];
    let out = run(&dir, "node", &args)
        .await
        .map_err(|e| format!("bench.mjs failed: {e}"))?;
    let bytes = blocks.parse::<f64>().unwrap_or(0.0) * size.parse::<f64>().unwrap_or(0.0);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            let num = |k: &str| v.get(k).and_then(Value::as_f64);
            num("mb_per_s").or_else(|| num("seconds").map(|s| bytes / s / 1e6))
        })
        .ok_or_else(|| "bench.mjs printed no JSON line with mb_per_s or seconds".into())
}

async fn run(dir: &Path, program: &str, args: &[&str]) -> Result<Output, String> {
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(JS_BUDGET, child)
        .await
        .map_err(|_| format!("no result within {} s", JS_BUDGET.as_secs()))?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!("{} ({first})", out.status))
    }
}
