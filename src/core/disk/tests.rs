use super::*;
use crate::core::tree::Want;

fn writer(dir: &Path) -> Core {
    let secret = SigningKey::from_bytes(&[5; 32]);
    Core::create(dir, Flavour::Hc10, secret.verifying_key(), Some(secret)).unwrap()
}

/// A replica of `w` in `path`, upgraded to its whole length (no block yet).
fn replica_of(w: &mut Core, path: &Path) -> Core {
    let mut r = Core::create(path, Flavour::Hc10, *w.key(), None).unwrap();
    let up = w
        .proof(&Request {
            upgrade: Some((0, w.info().length)),
            ..Request::default()
        })
        .unwrap();
    assert!(r.apply(up).unwrap());
    r
}

/// Block `i` of `from`, asked for as one holding `nodes` levels of its path would.
fn block_of(from: &mut Core, i: u64, nodes: u64) -> Vec<u8> {
    let p = from
        .proof(&Request {
            block: Some(Want { index: i, nodes }),
            ..Request::default()
        })
        .unwrap();
    p.block.unwrap().value
}

/// Fetches block `i` of `w` into `r`, which did not hold it.
fn fetch(w: &mut Core, r: &mut Core, i: u64) {
    let nodes = r.missing_nodes(i).unwrap();
    let p = w
        .proof(&Request {
            block: Some(Want { index: i, nodes }),
            ..Request::default()
        })
        .unwrap();
    assert!(r.apply(p).unwrap(), "block {i}");
}

#[test]
fn appends_survive_a_reopen_and_blocks_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let mut w = writer(&path);
    w.append(&[b"hello".as_slice(), b"world"]).unwrap();
    w.append(&[b"!"]).unwrap();
    drop(w);
    let (mut w, notes) = Core::open(&path).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(w.info().length, 3);
    assert_eq!(w.info().byte_length, 11);
    assert_eq!(w.get(1).unwrap().unwrap(), b"world");
    assert_eq!(w.append(&[b"more"]).unwrap(), 4);
    let mode = fs::metadata(path.join("secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_replica_fetches_reopens_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("w"));
    let blocks: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_le_bytes().repeat(9)).collect();
    w.append(&blocks).unwrap();
    let rpath = dir.path().join("r");
    let mut r = replica_of(&mut w, &rpath);
    for i in (0..100).rev() {
        fetch(&mut w, &mut r, i);
        if i == 50 {
            r.commit().unwrap();
        }
    }
    assert_eq!(r.info().contiguous_length, 100);
    // Not committed since block 50: a kill now keeps 50..100.
    drop(r);
    let (mut r, notes) = Core::open(&rpath).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(r.info().length, 100);
    assert_eq!(r.info().contiguous_length, 0);
    assert!(r.has(50) && !r.has(49));
    assert_eq!(r.get(77).unwrap().unwrap(), blocks[77]);
    assert_eq!(block_of(&mut r, 60, 0), blocks[60]);
}

#[test]
fn a_hypercore_9_feed_replicates_by_its_own_proofs_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let secret = SigningKey::from_bytes(&[9; 32]);
    let key = secret.verifying_key();
    let mut w = Core::create(&dir.path().join("w"), Flavour::Hc9, key, Some(secret)).unwrap();
    let blocks: Vec<Vec<u8>> = (0..37u32).map(|i| i.to_be_bytes().repeat(3)).collect();
    w.append(&blocks[..20]).unwrap();
    w.append(&blocks[20..]).unwrap();
    let rpath = dir.path().join("r");
    let mut r = Core::create(&rpath, Flavour::Hc9, key, None).unwrap();
    // Whole proofs (digest 0), then proofs cut to what the reader holds.
    for i in [36, 0, 17] {
        assert!(
            r.apply_hc9(w.proof_hc9(i, 0).unwrap()).unwrap(),
            "block {i}"
        );
    }
    for i in [35, 1] {
        let digest = r.digest_hc9(i).unwrap();
        let p = w.proof_hc9(i, digest).unwrap();
        assert!(
            p.signature.is_none(),
            "block {i}: a held node vouches for it"
        );
        assert!(r.apply_hc9(p).unwrap(), "block {i}");
    }
    assert!(
        !r.apply_hc9(w.proof_hc9(0, 0).unwrap()).unwrap(),
        "held already"
    );
    let mut bad = w.proof_hc9(5, r.digest_hc9(5).unwrap()).unwrap();
    bad.value[0] ^= 1;
    assert!(r.apply_hc9(bad).is_err());
    r.commit().unwrap();
    drop(r);
    let (mut r, notes) = Core::open(&rpath).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(r.info().flavour, Flavour::Hc9);
    assert_eq!(r.info().length, 37);
    assert_eq!(r.info().contiguous_length, 2);
    assert_eq!(r.get(17).unwrap().unwrap(), blocks[17]);
    assert!(!r.has(5));
    // And it serves what it holds to a third copy.
    let mut third = Core::create(&dir.path().join("t"), Flavour::Hc9, key, None).unwrap();
    assert!(third.apply_hc9(r.proof_hc9(35, 0).unwrap()).unwrap());
    let digest = third.digest_hc9(17).unwrap();
    assert!(third.apply_hc9(r.proof_hc9(17, digest).unwrap()).unwrap());
}

#[test]
fn a_torn_header_slot_falls_back_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c");
    let mut w = writer(&path);
    w.append(&[b"a"]).unwrap();
    w.append(&[b"b"]).unwrap();
    let newest = w.seq;
    drop(w);
    let f = OpenOptions::new()
        .write(true)
        .open(path.join("header"))
        .unwrap();
    f.write_all_at(&[0xee; 40], (newest % 2) * SLOT_BYTES + 20)
        .unwrap();
    let (w, notes) = Core::open(&path).unwrap();
    assert_eq!(w.info().length, 1);
    assert_eq!(notes.len(), 1, "{notes:?}");
}

#[test]
fn damaged_files_are_errors_not_panics() {
    for (file, at) in [("tree", 0u64), ("data", 0), ("header", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut w = writer(&path);
        w.append(&[b"only"]).unwrap();
        drop(w);
        let f = OpenOptions::new()
            .write(true)
            .open(path.join(file))
            .unwrap();
        f.write_all_at(&[0xff; 8], at).unwrap();
        if file == "header" {
            f.write_all_at(&[0xff; 8], SLOT_BYTES).unwrap();
        }
        match Core::open(&path) {
            // A writer keeps its length and says what it cannot serve.
            Ok((core, _)) if file == "data" => {
                assert!(core.damage.unwrap().contains("does not check"))
            }
            Ok((core, _)) => panic!("{file}: opened {core:?}"),
            Err(err) => assert!(matches!(err, CoreError::Damaged(_)), "{file}: {err}"),
        }
    }
}

/// A replica holds blocks 0..100 and 200..300, serves 0..100 in order (reading ahead into
/// the gap, which reads as zeros), then fills the gap: every block it then serves or reads is
/// the writer's, staged or committed, never the zeros read ahead.
#[test]
fn blocks_read_in_order_stay_right_as_gaps_fill() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("w"));
    let blocks: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().repeat(100)).collect();
    w.append(&blocks).unwrap();
    let mut r = replica_of(&mut w, &dir.path().join("r"));
    for i in (0..100).chain(200..300) {
        fetch(&mut w, &mut r, i);
    }
    r.commit().unwrap();
    for i in 0..100 {
        assert_eq!(block_of(&mut r, i, 0), blocks[i as usize], "block {i}");
    }
    // Staged, not yet committed: read from the staged run, mid-run included.
    for i in 100..200 {
        fetch(&mut w, &mut r, i);
    }
    for i in 100..200 {
        assert_eq!(r.get(i).unwrap().unwrap(), blocks[i as usize], "staged {i}");
    }
    r.commit().unwrap();
    for i in 100..300 {
        assert_eq!(block_of(&mut r, i, 0), blocks[i as usize], "committed {i}");
    }
}
