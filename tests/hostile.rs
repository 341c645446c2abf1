//! A hostile peer built from feedscope's own transport and framing: it speaks the protocol
//! correctly but serves blocks whose bytes were altered after the proof was made.
//! More hostile peers are in `hostile_peers.rs`.

mod common;

use std::time::Duration;

use common::evil::{runtime, Bait, Evil, FEED};
use common::*;

#[test]
fn blocks_that_do_not_verify_are_rejected_and_nothing_is_written() {
    let rt = runtime();
    let (evil_dir, victim_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The hostile peer holds a real feed, so its upgrade proofs are genuine.
    let bait = rt.block_on(Bait::new(evil_dir.path(), "bait", 8, 100));
    let key = bait.key.to_hex();
    let (mut victim, addr) = Node::listen(victim_dir.path(), &[]);
    let mut evil = rt.block_on(Evil::connect(&addr)).unwrap();
    evil.hello();

    let mut tampered = 0;
    while tampered < 3 {
        let r = rt
            .block_on(evil.next_request(&bait.key, 8, Duration::from_secs(30)))
            .expect("the victim keeps asking");
        let mut data = rt.block_on(bait.answer(&r));
        if let Some(b) = data.block.as_mut() {
            b.value[0] ^= 0xff; // the lie
            tampered += 1;
        }
        evil.core(FEED, data);
    }
    let w = victim.wait_for("warning", |v| v["kind"] == "bad_data");
    let events = victim.quit();
    assert!(
        w["message"].as_str().unwrap().contains("does not verify"),
        "{w}"
    );
    assert!(
        !events
            .iter()
            .any(|v| v["type"] == "feed_synced" && v["key"] == key.as_str()),
        "a forged feed must never count as synced"
    );
    // The replica exists (the upgrade was genuine) but holds none of the forged blocks.
    let listed = feeds(victim_dir.path());
    let replica = listed.iter().find(|f| f["key"] == key.as_str()).unwrap();
    assert_eq!(replica["writable"], false);
    let out = feedscope(
        &[
            "cat",
            "--storage",
            victim_dir.path().to_str().unwrap(),
            "--key",
            &key,
        ],
        None,
    );
    assert!(!out.status.success(), "forged blocks were written");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not downloaded"));
}
