use super::*;

use hypercore::{Hypercore, HypercoreBuilder, PartialKeypair, Storage};
use hypercore_schema::{RequestBlock, RequestUpgrade};

use crate::core::flat;
use crate::core::hash::Flavour;

async fn disk_core(dir: &Path, key_pair: PartialKeypair) -> Hypercore {
    let storage = Storage::new_disk(&dir.to_path_buf(), false).await.unwrap();
    HypercoreBuilder::new(storage)
        .key_pair(key_pair)
        .build()
        .await
        .unwrap()
}

fn writer() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn writable() -> PartialKeypair {
    PartialKeypair {
        public: writer().verifying_key(),
        secret: Some(writer()),
    }
}

/// The signature of the crate's current tree, as it sends it in an upgrade from 0.
async fn signature_of(core: &Hypercore) -> Option<[u8; 64]> {
    let length = core.info().length;
    if length == 0 {
        return None;
    }
    let upgrade = Some(RequestUpgrade { start: 0, length });
    let proof = core.create_proof(None, None, None, upgrade).await.unwrap();
    Some(
        proof
            .unwrap()
            .upgrade
            .unwrap()
            .signature
            .try_into()
            .unwrap(),
    )
}

/// Checks `read_legacy` against what the crate reports, and the files, with the oplog's
/// nodes and bitfield changes laid over them, against feedscope's layout: every held
/// block's leaf in `tree` and its bytes in `data` at its offset, the bit of every block
/// as the crate has it, and the roots in `tree` verifying the signature.
async fn check(dir: &Path, core: &Hypercore, blocks: &[Vec<u8>], signature: Option<[u8; 64]>) {
    let legacy = read_legacy(dir).unwrap();
    let info = core.info();
    let key_pair = core.key_pair();
    assert_eq!(legacy.public_key, key_pair.public.to_bytes());
    assert_eq!(legacy.secret_key, key_pair.secret.map(|s| s.to_bytes()));
    assert_eq!((legacy.length, legacy.fork), (info.length, info.fork));
    assert_eq!(legacy.signature, signature);

    let read = |name| std::fs::read(dir.join(name)).unwrap_or_default();
    let (tree, data, bitfield) = (read("tree"), read("data"), read("bitfield"));
    let node = |index: u64| {
        if let Some(n) = legacy.oplog_nodes.iter().find(|n| n.index == index) {
            return Some(*n);
        }
        let at = 40 * index as usize;
        let bytes = tree.get(at..at + 40)?;
        (bytes.iter().any(|&b| b != 0)).then(|| Node {
            index,
            size: u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            hash: bytes[8..].try_into().unwrap(),
        })
    };
    let held = |i: u64| {
        let byte = bitfield.get(i as usize / 8).copied().unwrap_or(0);
        let mut held = byte & (1 << (i % 8)) != 0;
        for c in &legacy.oplog_bitfield {
            if (c.start..c.start + c.length).contains(&i) {
                held = !c.drop;
            }
        }
        held
    };
    let mut offset = 0;
    for i in 0..legacy.length {
        let block = &blocks[i as usize];
        assert_eq!(held(i), core.has(i), "bit of block {i}");
        if core.has(i) {
            assert_eq!(node(2 * i), Some(Flavour::Hc10.leaf(i, block)), "leaf {i}");
            assert_eq!(&data[offset..offset + block.len()], &block[..], "block {i}");
        }
        offset += block.len();
    }
    if let Some(signature) = legacy.signature {
        let roots: Vec<Node> = flat::full_roots(2 * legacy.length)
            .into_iter()
            .map(|r| node(r).expect("root in tree"))
            .collect();
        assert_eq!(roots.iter().map(|r| r.size).sum::<u64>(), info.byte_length);
        let key = VerifyingKey::from_bytes(&legacy.public_key).unwrap();
        assert!(Flavour::Hc10.verify(&key, &signature, &roots, legacy.length, legacy.fork));
    }
}

fn batch(first: usize, n: usize, size: usize) -> Vec<Vec<u8>> {
    (first..first + n).map(|i| vec![i as u8; size]).collect()
}

#[tokio::test]
async fn a_writable_core_reads_as_the_crate_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let core = disk_core(dir.path(), writable()).await;
    let mut blocks = Vec::new();
    check(dir.path(), &core, &blocks, None).await;
    assert_eq!(read_legacy(dir.path()).unwrap().secret_key, Some([7; 32]));
    let mut held_back = 0;
    for (n, size) in [
        (1, 10),
        (3, 100),
        (40, 333),
        (2, 1),
        (5, 4000),
        (1, 0),
        (7, 50),
    ] {
        let more = batch(blocks.len(), n, size);
        core.append_batch(&more).await.unwrap();
        blocks.extend(more);
        check(dir.path(), &core, &blocks, signature_of(&core).await).await;
        let legacy = read_legacy(dir.path()).unwrap();
        assert_eq!(legacy.length, blocks.len() as u64);
        held_back += usize::from(!legacy.oplog_nodes.is_empty());
    }
    assert!(held_back > 0, "some states had nodes only in the oplog");

    // The crate reads a writer's log back (its entries carry every field) to the same.
    let before = read_legacy(dir.path()).unwrap();
    let info = core.info();
    drop(core);
    let storage = Storage::new_disk(&dir.path().to_path_buf(), false)
        .await
        .unwrap();
    let reopened = HypercoreBuilder::new(storage)
        .open(true)
        .build()
        .await
        .unwrap();
    assert_eq!(reopened.info(), info);
    assert_eq!(before.signature, signature_of(&reopened).await);
}

/// Applies to `rc` the proof of block `i` that `wc` makes for the nodes `rc` lacks.
async fn fetch_block(wc: &Hypercore, rc: &Hypercore, i: u64) {
    let nodes = rc.missing_nodes(i).await.unwrap();
    let block = Some(RequestBlock { index: i, nodes });
    let p = wc.create_proof(block, None, None, None).await.unwrap();
    assert!(rc.verify_and_apply_proof(p.unwrap()).await.unwrap());
}

/// Applies to `rc` an upgrade from `start` to `start + length` made by `wc`; returns its
/// signature.
async fn fetch_upgrade(wc: &Hypercore, rc: &Hypercore, start: u64, length: u64) -> [u8; 64] {
    let upgrade = Some(RequestUpgrade { start, length });
    let p = wc.create_proof(None, None, None, upgrade).await.unwrap();
    let p = p.unwrap();
    let signature = p.upgrade.as_ref().unwrap().signature.clone();
    assert!(rc.verify_and_apply_proof(p).await.unwrap());
    signature.try_into().unwrap()
}

#[tokio::test]
async fn a_replica_reads_as_the_crate_sees_it() {
    let (wd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (w, r) = (wd.path(), rd.path());
    let wc = disk_core(w, writable()).await;
    let replica = PartialKeypair {
        public: writer().verifying_key(),
        secret: None,
    };
    let rc = disk_core(r, replica).await;
    check(r, &rc, &[], None).await;
    assert_eq!(read_legacy(r).unwrap().secret_key, None);

    let mut blocks = batch(0, 10, 70);
    wc.append_batch(&blocks).await.unwrap();
    let mut signature = fetch_upgrade(&wc, &rc, 0, 10).await;
    check(r, &rc, &blocks, Some(signature)).await;
    for i in [0, 1, 2, 5, 9] {
        fetch_block(&wc, &rc, i).await;
        check(r, &rc, &blocks, Some(signature)).await;
    }

    let more = batch(10, 40, 500);
    wc.append_batch(&more).await.unwrap();
    blocks.extend(more);
    signature = fetch_upgrade(&wc, &rc, 10, 40).await;
    check(r, &rc, &blocks, Some(signature)).await;
    assert_eq!(read_legacy(r).unwrap().length, 50);
    for i in (10..50).step_by(3).chain([3, 4, 49]) {
        fetch_block(&wc, &rc, i).await;
        check(r, &rc, &blocks, Some(signature)).await;
    }
}

/// A writer's oplog with a checkpoint in each slot and entries after them.
async fn real_oplog() -> (Vec<u8>, Legacy) {
    let dir = tempfile::tempdir().unwrap();
    let core = disk_core(dir.path(), writable()).await;
    let mut length = 0;
    for n in [2, 3, 40, 1, 4, 6, 2] {
        core.append_batch(batch(length, n, 90)).await.unwrap();
        length += n;
    }
    let legacy = read_legacy(dir.path()).unwrap();
    assert_eq!(legacy.length, length as u64);
    (std::fs::read(dir.path().join("oplog")).unwrap(), legacy)
}

#[tokio::test]
async fn damaged_oplogs_are_errors_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_legacy(dir.path()).unwrap_err();
    assert!(
        err.contains("cannot read") && err.contains("oplog"),
        "{err}"
    );

    std::fs::write(dir.path().join("oplog"), b"").unwrap();
    let err = read_legacy(dir.path()).unwrap_err();
    assert!(err.contains("empty"), "{err}");

    let garbage = crate::noise(0x2545_f491_4f6c_dd1d, 9000);
    std::fs::write(dir.path().join("oplog"), &garbage).unwrap();
    let err = read_legacy(dir.path()).unwrap_err();
    assert!(err.contains("neither header slot"), "{err}");

    let (file, full) = real_oplog().await;
    assert!(file.len() > ENTRIES_AT, "the log holds entries");
    // Cut anywhere: an error while no header is whole, and never a longer feed.
    let first = frame(&file, 0).unwrap().end;
    for cut in 0..file.len() {
        match decode_oplog(&file[..cut]) {
            Ok(l) => {
                assert!(cut >= first, "cut at {cut}");
                assert!(l.length <= full.length, "cut at {cut}");
            }
            Err(e) => assert!(cut < first, "cut at {cut}: {e}"),
        }
    }
    // Any byte changed: never a panic, never a longer feed.
    for at in 0..file.len() {
        let mut bad = file.clone();
        bad[at] ^= 0x5a;
        if let Ok(l) = decode_oplog(&bad) {
            assert!(l.length <= full.length, "byte {at}");
        }
    }
    // A header whose checksum holds but whose content does not.
    let mut bad = file.clone();
    let slots_equal =
        frame(&file, 0).unwrap().header_bit == frame(&file[SLOT_BYTES..], 0).unwrap().header_bit;
    let at = if slots_equal { 0 } else { SLOT_BYTES };
    bad[at + 8] = 9; // the version
    let end = frame(&file, at).unwrap().end;
    let crc = crc32(&bad[at + 4..end]);
    bad[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    let err = decode_oplog(&bad).unwrap_err();
    assert!(
        err.contains("header slot is damaged: header version 9"),
        "{err}"
    );
}

/// A frame around `body`, as the crate writes one.
fn framed(body: &[u8], header_bit: bool, partial: bool) -> Vec<u8> {
    let word = (body.len() as u32) << 2 | u32::from(partial) << 1 | u32::from(header_bit);
    let mut out = [&[0; 4][..], &word.to_le_bytes(), body].concat();
    let crc = crc32(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

#[tokio::test]
async fn an_unfinished_batch_and_entries_of_an_older_header_are_ignored() {
    let (file, full) = real_oplog().await;
    let mut at = ENTRIES_AT;
    let mut bit = None;
    while let Some(f) = frame(&file, at) {
        bit = Some(f.header_bit);
        at = f.end;
    }
    assert_eq!(at, file.len());
    let bit = bit.expect("the log holds entries");
    // An upgrade by 5 blocks (flags 4 alone: no nodes, no bitfield).
    let mut upgrade = vec![4, 0, full.length as u8, full.length as u8 + 5, 64];
    upgrade.extend([1; 64]);
    let with = |frames: &[Vec<u8>]| decode_oplog(&[&file[..], &frames.concat()].concat());

    let done = with(&[framed(&upgrade, bit, false)]).unwrap();
    assert_eq!(done.length, full.length + 5);
    assert_eq!(done.signature, Some([1; 64]));
    let unfinished = with(&[framed(&upgrade, bit, true)]).unwrap();
    assert_eq!(unfinished, full);
    let finished = with(&[framed(&upgrade, bit, true), framed(&[0], bit, false)]).unwrap();
    assert_eq!(finished.length, full.length + 5);
    let stale = with(&[framed(&upgrade, !bit, false)]).unwrap();
    assert_eq!(stale, full);
    let torn = with(&[framed(&upgrade, bit, false)[..40].to_vec()]).unwrap();
    assert_eq!(torn, full);
    let err = with(&[framed(&[0x10], bit, false)]).unwrap_err();
    assert!(err.contains("unknown entry flags 0x10"), "{err}");
}

#[test]
fn crc32_is_the_ieee_one() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}
