//! What an idle connected peer costs the process it is connected to: memory and file
//! descriptors of a real `feedscope run` child holding 10 feeds, before and after N peers
//! finished the Noise handshake and the multifeed handshake (and so were offered the 10 feeds)
//! and then went quiet.
//!
//! ```sh
//! cargo bench --locked --bench peers            # 1,000 peers
//! cargo bench --locked --bench peers -- 200     # another count
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::evil::Evil;
use common::{kit, Node};
use feedscope::wire;

/// Feeds the process holds and offers to every peer.
const FEEDS: usize = 10;

fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn threads(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("a temporary folder");
    // The process offers feeds of its own to every peer: an idle peer must hold none of their
    // files open.
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(kit::seed(
            dir.path(),
            (0..FEEDS).map(|f| {
                let name = format!("offered-{f}");
                let blocks: Vec<Vec<u8>> = kit::blocks(&name, 100, 1024).collect();
                (name, blocks)
            }),
        ))
        .expect("seeded feeds");
    let limit = (n + 16).to_string();
    let (mut node, addr) = Node::listen(dir.path(), &["--max-peers", &limit]);
    let pid = node.child.id().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let rss = |pid: &str| kit::memory(pid, "VmRSS").unwrap_or(0);
    let (rss0, fds0, threads0) = (rss(&pid), fds(&pid), threads(&pid));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut peers = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let joined = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for _ in chunk {
                let addr = addr.clone();
                set.spawn(async move {
                    let mut evil = Evil::connect(&addr).await?;
                    evil.hello();
                    evil.wait_ext(wire::EXT_HANDSHAKE, Duration::from_secs(20))
                        .await?;
                    Ok::<Evil, String>(evil)
                });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r.expect("a peer task").expect("a peer joins"));
            }
            out
        });
        peers.extend(joined);
    }
    let joined = node.wait_count("handshake_received", n, Duration::from_secs(60), |_| true);
    assert_eq!(
        joined.len(),
        n,
        "every peer finished the multifeed handshake"
    );
    // Past `store::CLOSE_FILES_AFTER`: the steady idle state.
    std::thread::sleep(Duration::from_secs(12));
    let (rss1, fds1, threads1) = (rss(&pid), fds(&pid), threads(&pid));
    let per_peer = |before: u64, after: u64| after.saturating_sub(before) as f64 / n as f64;

    println!("| {n} idle peers connected to one `feedscope run` | before | after | per peer |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| RSS | {:.1} MB | {:.1} MB | {:.1} KB |",
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6,
        per_peer(rss0, rss1) / 1e3
    );
    println!(
        "| open file descriptors | {fds0} | {fds1} | {:.2} |",
        per_peer(fds0 as u64, fds1 as u64)
    );
    println!("| threads | {threads0} | {threads1} | |");
    drop(peers);
    node.quit();
}
