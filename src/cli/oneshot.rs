//! The one-shot commands on a storage folder: `append`, `feeds`, `decisions` and `cat`.

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};

use feedscope::event::Wire;
use feedscope::policy::Decisions;
use feedscope::store::Store;
use feedscope::wire::FeedKey;

pub(crate) async fn append(
    dir: &std::path::Path,
    name: &str,
    wire: Option<Wire>,
    data: Vec<String>,
) -> Result<()> {
    let store = Store::open(dir).await?;
    // A feed named by its key is that feed, never a new one named after it.
    let by_key = FeedKey::parse(name).ok().and_then(|key| store.get(&key));
    let (feed, created) = match by_key {
        Some(feed) if !feed.entry.writable => bail!(
            "feed {} is read-only here: it was replicated from a peer; append to one of your own feeds (`feedscope feeds` lists them)",
            feed.entry.key
        ),
        Some(feed) => (feed, false),
        None => match wire {
            Some(wire) => store.create_writable_on(name, wire).await?,
            None => match store.by_name(name) {
                Some(feed) => (feed, false),
                None => store.create_writable(name).await?,
            },
        },
    };
    if let Some(wire) = wire.filter(|w| *w != feed.wire) {
        bail!(
            "feed {name} is a {} feed, not {wire}: a feed keeps the generation it was made with",
            feed.wire
        );
    }
    let blocks: Vec<Vec<u8>> = if data.is_empty() {
        let mut out = Vec::new();
        for line in std::io::stdin().lock().lines() {
            out.push(line?.into_bytes());
        }
        out
    } else {
        data.into_iter().map(String::into_bytes).collect()
    };
    let length = feed.append(&blocks).await?;
    feed.sync().await?;
    eprintln!(
        "{} {name} ({}): {} block(s) appended, length {}",
        if created { "created" } else { "feed" },
        feed.entry.key,
        blocks.len(),
        length
    );
    Ok(())
}

/// Opens storage that must already exist: the commands that only read it never create a
/// folder at a mistyped path.
async fn existing_store(dir: &std::path::Path) -> Result<Store> {
    if !dir.join("cores").is_dir() {
        bail!(
            "no feedscope storage at {}: check the path (storage is created by `feedscope append`, `feedscope run` or the UI)",
            dir.display()
        );
    }
    Ok(Store::open(dir).await?)
}

pub(crate) async fn feeds(dir: &std::path::Path, json: bool) -> Result<()> {
    let store = existing_store(dir).await?;
    for note in &store.notes {
        eprintln!("warning: {note}");
    }
    for e in &store.broken {
        eprintln!("warning: {e}");
    }
    let list = store.list().await;
    if json {
        println!("{}", serde_json::to_string(&list)?);
    } else {
        for f in list {
            let held = if f.held == f.length {
                String::new()
            } else {
                format!(" ({} held)", f.held)
            };
            let name = match (&f.name, &f.offered_name) {
                (Some(name), _) => name.clone(),
                (None, Some(offered)) => format!("{offered:?} (offered name)"),
                (None, None) => "-".into(),
            };
            println!(
                "{}  {:>8} blocks{held} {:>12} bytes  {name}{}{}",
                f.key,
                f.length,
                f.byte_length,
                if f.writable { " (writable)" } else { "" },
                if f.wire == Wire::Hc9 { " (hc9)" } else { "" }
            );
        }
    }
    Ok(())
}

pub(crate) async fn decisions(
    dir: &std::path::Path,
    json: bool,
    forget: Option<String>,
) -> Result<()> {
    // Taking the storage lock keeps this from racing a running engine.
    let _store = existing_store(dir).await?;
    let d = Decisions::load(dir).map_err(anyhow::Error::msg)?;
    if let Some(key) = forget {
        let key =
            unique_key(&key, d.all().into_keys(), "remembered decision").context("--forget")?;
        if !d.forget(&key).map_err(anyhow::Error::msg)? {
            bail!("no decision is remembered for {key}");
        }
        eprintln!("forgot the decision on {key}");
        return Ok(());
    }
    let all = d.all();
    if json {
        println!("{}", serde_json::to_string(&all)?);
    } else if all.is_empty() {
        println!("no decisions remembered in {}", dir.display());
    } else {
        for (k, r) in all {
            println!("{k}  {}", if r.approved { "approved" } else { "declined" });
        }
    }
    Ok(())
}

/// The one key of `known` that `text` names: a whole key, or a prefix of one (either case),
/// as the UI takes them.
fn unique_key(text: &str, known: impl Iterator<Item = FeedKey>, what: &str) -> Result<FeedKey> {
    let prefix = text.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) || prefix.len() > 64 {
        bail!("{text:?} is not a key or the start of one (hex digits)");
    }
    let matches: Vec<FeedKey> = known.filter(|k| k.to_hex().starts_with(&prefix)).collect();
    match matches.as_slice() {
        [key] => Ok(*key),
        [] => bail!("no {what} has a key starting with {prefix}"),
        many => bail!(
            "{} keys start with {prefix}: {}; give more of the key",
            many.len(),
            many.iter()
                .map(|k| k.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(crate) async fn cat(dir: &std::path::Path, key: &str) -> Result<()> {
    let store = existing_store(dir).await?;
    let key = unique_key(key, store.feeds().into_iter().map(|f| f.entry.key), "feed")
        .with_context(|| format!("--key, in {}", dir.display()))?;
    let feed = store
        .get(&key)
        .with_context(|| format!("no feed {key} in {}", dir.display()))?;
    let mut core = feed.core.lock().await;
    let length = core.info().length;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..length {
        match core.get(i)? {
            Some(block) => {
                out.write_all(&block)?;
                out.write_all(b"\n")?;
            }
            None => bail!("block {i} of {key} is not downloaded yet"),
        }
    }
    out.flush()?;
    Ok(())
}
