//! The layers import one way (docs/architecture.md): this reads every `crate::` path in the
//! library's sources, outside unit tests, and fails on an import circle or on a layer that
//! reaches up.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layer a source file belongs to: its top-level module, or `net/<sub>` inside `net`.
fn layer_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix("src").ok()?.with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let first = parts.first()?.clone();
    if matches!(first.as_str(), "main" | "lib") || parts.iter().any(|p| p == "tests") {
        return None;
    }
    if first == "net" {
        return Some(match parts.get(1).map(String::as_str) {
            None | Some("mod") => "net".into(),
            Some(sub) => format!("net/{sub}"),
        });
    }
    Some(first)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Which layers each layer imports.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(layer) = layer_of(&file) else {
            continue;
        };
        let text = fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let entry = deps.entry(layer.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let mut names = rest
                .split("::")
                .map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next());
            let target = match names.next().flatten() {
                Some("net") => match names.next().flatten() {
                    Some(sub) if !sub.is_empty() => format!("net/{sub}"),
                    _ => "net".into(),
                },
                Some(name) => name.to_string(),
                None => continue,
            };
            if target != layer && !target.is_empty() {
                entry.insert(target);
            }
        }
    }
    deps
}

#[test]
fn no_layer_imports_one_that_imports_it_back() {
    let deps = imports();
    // Depth-first search for a path back to where it started.
    fn visit<'a>(
        node: &'a str,
        deps: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in deps.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in deps.keys() {
        let cycle = visit(start, &deps, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import circle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
    assert!(deps.len() > 10, "the sources were read: {deps:?}");
}

#[test]
fn lower_layers_never_reach_up() {
    let deps = imports();
    let never: &[(&str, &[&str])] = &[
        (
            "core",
            &["store", "net", "engine", "session", "tui", "event"],
        ),
        ("store", &["net", "engine", "session", "tui"]),
        ("frame", &["net", "engine", "session", "store", "tui"]),
        ("wire", &["net", "engine", "session", "store", "tui"]),
        ("session", &["net", "engine", "store", "tui"]),
        ("event", &["net", "engine", "session", "store", "tui"]),
        (
            "net/hc10",
            &[
                "engine",
                "net/peer",
                "net/replicate",
                "net/hc9",
                "store",
                "session",
                "tui",
            ],
        ),
        (
            "net/hc9",
            &[
                "engine",
                "net/peer",
                "net/replicate",
                "net/hc10",
                "store",
                "session",
                "tui",
            ],
        ),
        (
            "net/output",
            &[
                "engine",
                "net/peer",
                "net/replicate",
                "net/hc10",
                "net/hc9",
                "store",
                "session",
                "tui",
            ],
        ),
        (
            "net/replicate",
            &["engine", "net/peer", "net/hc10", "session", "tui"],
        ),
        ("net/peer", &["engine", "tui"]),
        ("engine", &["tui"]),
    ];
    for (layer, forbidden) in never {
        let Some(uses) = deps.get(*layer) else {
            panic!("no layer {layer} in {:?}", deps.keys());
        };
        for f in *forbidden {
            let reaches = uses
                .iter()
                .any(|u| u == f || u.starts_with(&format!("{f}/")));
            assert!(!reaches, "{layer} imports {f}, a layer above it: {uses:?}");
        }
    }
}
