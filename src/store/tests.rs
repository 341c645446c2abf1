use super::*;

#[tokio::test]
async fn a_second_open_of_the_same_storage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).await.unwrap();
    let err = Store::open(dir.path()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("in use"), "{msg}");
    assert!(msg.contains(&std::process::id().to_string()), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_asked_for_at_once_by_many_peers_is_created_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).await.unwrap());
    // Several rounds: the race, when there is one, does not show every time.
    for _ in 0..20 {
        let key = FeedKey(
            SigningKey::from_bytes(&rand::random())
                .verifying_key()
                .to_bytes(),
        );
        let start = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, start) = (store.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    store.get_or_create_replica(key, None).await.unwrap()
                })
            })
            .collect();
        let mut created = 0;
        let mut cores = Vec::new();
        for t in tasks {
            let (feed, new) = t.await.unwrap();
            created += usize::from(new);
            cores.push(feed.core);
        }
        assert_eq!(created, 1, "one peer creates it, the others get it");
        assert!(
            cores.iter().all(|c| Arc::ptr_eq(c, &cores[0])),
            "one core in memory"
        );
    }
}

#[tokio::test]
async fn feeds_survive_a_reopen_with_their_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = Store::open(dir.path()).await.unwrap();
        let (feed, created) = store.create_writable("notes").await.unwrap();
        assert!(created);
        feed.append(&[b"hello"]).await.unwrap();
        feed.append(&[b"world"]).await.unwrap();
        feed.entry.key
    };
    let store = Store::open(dir.path()).await.unwrap();
    let feed = store.by_name("notes").unwrap();
    assert_eq!(feed.entry.key, key);
    let mut core = feed.core.lock().await;
    assert_eq!(core.info().length, 2);
    assert_eq!(core.get(1).unwrap().unwrap(), b"world");
    assert!(core.info().writeable);
}

#[tokio::test]
async fn a_damaged_core_is_reported_and_the_others_open() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = {
        let store = Store::open(dir.path()).await.unwrap();
        let (a, _) = store.create_writable("a").await.unwrap();
        a.append(&[b"x"]).await.unwrap();
        let (b, _) = store.create_writable("b").await.unwrap();
        b.append(&[b"y"]).await.unwrap();
        (a.entry.key, b.entry.key)
    };
    fs::remove_file(core_dir(dir.path(), &bad).join("header")).unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    assert!(store.get(&good).is_some());
    assert!(store.get(&bad).is_none());
    assert_eq!(store.broken.len(), 1);
    assert!(store.broken[0].to_string().contains(&bad.to_hex()));
}

#[tokio::test]
async fn storage_of_the_earlier_format_that_cannot_be_read_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let key = FeedKey([7; 32]);
    let old = core_dir(dir.path(), &key);
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("oplog"), b"old").unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    assert_eq!(store.broken.len(), 1);
    let msg = store.broken[0].to_string();
    assert!(
        msg.contains("earlier build") || msg.contains("replicated again"),
        "{msg}"
    );
    assert_eq!(fs::read(old.join("oplog")).unwrap(), b"old");
}

/// A storage folder as builds before feedscope's own core wrote it, with the hypercore
/// crate itself: a writer of 47 blocks and a replica holding some of them.
async fn earlier_storage(dir: &Path, blocks: &[Vec<u8>]) -> (FeedKey, Vec<u64>) {
    use hypercore::{HypercoreBuilder, PartialKeypair, Storage};
    use hypercore_schema::{RequestBlock, RequestUpgrade};
    let secret = SigningKey::from_bytes(&[7; 32]);
    let key = FeedKey(secret.verifying_key().to_bytes());
    let open = |sub: &str, secret: Option<SigningKey>| {
        let path = dir.join(sub).join("cores").join(key.to_hex());
        async move {
            let storage = Storage::new_disk(&path, false).await.unwrap();
            HypercoreBuilder::new(storage)
                .key_pair(PartialKeypair {
                    public: SigningKey::from_bytes(&[7; 32]).verifying_key(),
                    secret,
                })
                .build()
                .await
                .unwrap()
        }
    };
    let w = open("w", Some(secret)).await;
    for chunk in blocks.chunks(10) {
        w.append_batch(chunk).await.unwrap();
    }
    let r = open("r", None).await;
    let upgrade = Some(RequestUpgrade {
        start: 0,
        length: blocks.len() as u64,
    });
    let p = w
        .create_proof(None, None, None, upgrade)
        .await
        .unwrap()
        .unwrap();
    assert!(r.verify_and_apply_proof(p).await.unwrap());
    let fetched: Vec<u64> = (0..blocks.len() as u64).filter(|i| i % 3 != 1).collect();
    for &i in &fetched {
        let nodes = r.missing_nodes(i).await.unwrap();
        let block = Some(RequestBlock { index: i, nodes });
        let p = w
            .create_proof(block, None, None, None)
            .await
            .unwrap()
            .unwrap();
        assert!(r.verify_and_apply_proof(p).await.unwrap());
    }
    let index = Index {
        feeds: vec![FeedEntry {
            key,
            name: Some("old".into()),
            writable: true,
            offered_name: None,
        }],
    };
    write_index(&dir.join("w"), &index).unwrap();
    (key, fetched)
}

#[tokio::test]
async fn storage_of_earlier_builds_is_converted_on_open_and_keeps_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let blocks: Vec<Vec<u8>> = (0..47u8).map(|i| vec![i; 100 + i as usize]).collect();
    let (key, fetched) = earlier_storage(dir.path(), &blocks).await;
    for round in 0..2 {
        let w = Store::open(&dir.path().join("w")).await.unwrap();
        assert!(w.broken.is_empty(), "{:?}", w.broken);
        let converted = w.notes.iter().any(|n| n.contains("converted"));
        assert_eq!(converted, round == 0, "{:?}", w.notes);
        let feed = w.by_name("old").unwrap();
        {
            let mut core = feed.core.lock().await;
            assert!(core.info().writeable);
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(&core.get(i as u64).unwrap().unwrap(), b, "block {i}");
            }
        }
        let r = Store::open(&dir.path().join("r")).await.unwrap();
        assert!(r.broken.is_empty(), "{:?}", r.broken);
        let mut core = r.get(&key).unwrap().core.lock_owned().await;
        assert_eq!(core.info().length, 47);
        for i in 0..47 {
            assert_eq!(core.has(i), fetched.contains(&i), "block {i}");
            if core.has(i) {
                assert_eq!(core.get(i).unwrap().unwrap(), blocks[i as usize]);
            }
        }
    }
    // Once converted, it is an ordinary feed: it grows, and nothing is said on opening.
    let w = Store::open(&dir.path().join("w")).await.unwrap();
    assert!(w.notes.is_empty(), "{:?}", w.notes);
    assert_eq!(
        w.by_name("old").unwrap().append(&[b"new"]).await.unwrap(),
        48
    );
}

#[tokio::test]
async fn storage_and_secret_keys_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).await.unwrap();
    let (feed, _) = store.create_writable("mine").await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let core = core_dir(store.dir(), &feed.entry.key);
    assert_eq!(mode(&dir.path().join("s").join("cores")), 0o700);
    assert_eq!(mode(&core), 0o700);
    assert_eq!(mode(&core.join("secret")), 0o600);
    drop((feed, store));
    fs::set_permissions(core.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&dir.path().join("s")).await.unwrap();
    assert!(
        store.notes.iter().any(|n| n.contains("chmod 600")),
        "{:?}",
        store.notes
    );
}

/// A crash while a writer is being created leaves its staging folder; the next open settles
/// it either way, and every later open is clean.
#[tokio::test]
async fn a_writer_creation_cut_short_by_a_crash_is_settled_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (listed, unlisted) = {
        let store = Store::open(dir.path()).await.unwrap();
        let (a, _) = store.create_writable("listed").await.unwrap();
        let (b, _) = store.create_writable("unlisted").await.unwrap();
        (a.entry.key, b.entry.key)
    };
    // The crash states: `listed` after the index was written but before the move;
    // `unlisted` before the index named it.
    for key in [listed, unlisted] {
        fs::rename(core_dir(dir.path(), &key), creating_dir(dir.path(), &key)).unwrap();
    }
    let mut index = read_index(dir.path()).unwrap();
    index.feeds.retain(|f| f.key != unlisted);
    write_index(dir.path(), &index).unwrap();

    let store = Store::open(dir.path()).await.unwrap();
    assert!(store.broken.is_empty(), "{:?}", store.broken);
    assert_eq!(store.notes.len(), 2, "{:?}", store.notes);
    assert!(store
        .notes
        .iter()
        .any(|n| n.contains(&listed.to_hex()) && n.contains("finished")));
    assert!(store
        .notes
        .iter()
        .any(|n| n.contains(&unlisted.to_hex()) && n.contains("removed")));
    let feed = store.by_name("listed").expect("the listed writer is kept");
    assert!(feed.core.lock().await.info().writeable);
    assert!(store.by_name("unlisted").is_none());
    assert!(!creating_dir(dir.path(), &unlisted).exists());
    drop(store);

    let again = Store::open(dir.path()).await.unwrap();
    assert!(
        again.notes.is_empty() && again.broken.is_empty(),
        "{:?}",
        again.notes
    );
}

/// A replica is created without waiting for the disk. If the machine stops before its first
/// sync, its folder can come back with blank files: opening removes it with a note, and the
/// other feeds open as before. A replica that holds blocks is never removed that way.
#[tokio::test]
async fn a_replica_whose_creation_never_reached_the_disk_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let key = |seed: u8| {
        FeedKey(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
    };
    let (blank, damaged) = (key(1), key(2));
    {
        let store = Store::open(dir.path()).await.unwrap();
        store.create_writable("notes").await.unwrap();
        for k in [blank, damaged] {
            store.get_or_create_replica(k, None).await.unwrap();
        }
    }
    // What a power cut can leave of an unsynced creation: files that exist, empty.
    for name in ["header", "tree", "data", "bitfield"] {
        fs::write(core_dir(dir.path(), &blank).join(name), b"").unwrap();
    }
    // A replica whose header is gone but whose data is not: damage, reported, kept.
    fs::write(core_dir(dir.path(), &damaged).join("header"), b"").unwrap();
    fs::write(core_dir(dir.path(), &damaged).join("data"), b"a block").unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    assert!(!core_dir(dir.path(), &blank).exists());
    assert!(
        store
            .notes
            .iter()
            .any(|n| n.contains(&blank.to_string()) && n.contains("removed")),
        "{:?}",
        store.notes
    );
    assert!(core_dir(dir.path(), &damaged).exists());
    assert!(
        store
            .broken
            .iter()
            .any(|e| e.to_string().contains(&damaged.to_hex())),
        "{:?}",
        store.broken
    );
    assert!(store.get(&blank).is_none());
    assert_eq!(store.feeds().len(), 1, "the writer opens as before");
}
