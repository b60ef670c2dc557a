//! The shape of the source, checked: module dependencies point one way (no cycles between
//! files, and the layers of docs/architecture.md in order), `net/` never locks session
//! state, and no source file grows past 800 lines.
//!
//! Dependencies are read from the paths the code names (`crate::a::b`, `super::x`,
//! `self::y`, `use super::{x, y}`), each resolved to the longest module it names. Unit-test
//! modules (`#[cfg(test)] mod ...`) are left out: a test may use what it tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first: a module may use its own layer's and lower ones only.
const LAYERS: &[&[&str]] = &[
    &["config", "metrics", "logging", "runtime"],
    &["store"],
    &["broker"],
    &["auth"],
    &["cluster"],
    &["net"],
    &["reload"],
    &["api"],
    &["server"],
    &["cli"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module of the crate (`broker/session/link`), and its file.
fn modules() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src()).unwrap().with_extension("");
            let mut name = rel.to_string_lossy().replace('\\', "/");
            if let Some(parent) = name.strip_suffix("/mod") {
                name = parent.to_string();
            }
            if name != "lib" && name != "main" {
                out.insert(name, path);
            }
        }
    }
    out
}

/// The code of a file without its unit-test modules.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// The modules `module` (in `file`) names.
fn uses(module: &str, file: &Path, all: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let text = code(file);
    let own: Vec<&str> = module.split('/').collect();
    let mut found = BTreeSet::new();
    let resolve = |parts: &[&str]| -> Option<String> {
        (1..=parts.len())
            .rev()
            .map(|k| parts[..k].join("/"))
            .find(|candidate| all.contains_key(candidate))
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        if !text.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        let head = ["crate::", "self::", "super::"]
            .into_iter()
            .find(|h| rest.starts_with(h));
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let Some(head) = head.filter(|_| boundary) else {
            i += 1;
            continue;
        };
        // The base the path starts from: `self` is the module itself, each `super` its
        // parent (for `a/b.rs` and `a/b/mod.rs` alike).
        let mut base: Vec<&str> = match head {
            "crate::" => Vec::new(),
            _ => own.clone(),
        };
        let mut j = i + head.len();
        if head == "super::" {
            base.pop();
            while text[j..].starts_with("super::") {
                base.pop();
                j += "super::".len();
            }
        }
        let tail = &text[j..];
        if tail.starts_with('{') {
            let end = tail.find('}').unwrap_or(tail.len());
            for item in tail[1..end].split(',') {
                let first: Vec<&str> = item.trim().split("::").collect();
                let mut parts = base.clone();
                parts.extend(first.iter().map(|s| s.trim()).filter(|s| !s.is_empty()));
                if let Some(m) = resolve(&parts) {
                    found.insert(m);
                }
            }
        } else {
            let path: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts = base.clone();
            parts.extend(path.split("::").filter(|s| !s.is_empty()));
            if let Some(m) = resolve(&parts) {
                found.insert(m);
            }
        }
        i = j;
    }
    found.remove(module);
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let all = modules();
    all.iter()
        .map(|(m, f)| (m.clone(), uses(m, f, &all)))
        .collect()
}

/// A cycle through `start`, if any (depth-first).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|n| n == node) {
            let mut c = path[pos..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_reader_sees_what_the_compiler_does() {
    let g = graph();
    let link = &g["broker/session/link"];
    assert!(link.contains("broker/session/closing"), "{link:?}");
    assert!(link.contains("broker/stats"), "{link:?}");
    assert!(
        g["net/connection"].contains("broker/session"),
        "{:?}",
        g["net/connection"]
    );
}

#[test]
fn no_module_cycles_between_files() {
    let g = graph();
    assert_eq!(cycle(&g), None, "a module cycle");
}

#[test]
fn layers_point_one_way() {
    let rank = |m: &str| {
        let top = m.split('/').next().unwrap_or(m);
        LAYERS
            .iter()
            .position(|layer| layer.contains(&top))
            .unwrap_or_else(|| panic!("module {m} is in no layer of LAYERS"))
    };
    let mut wrong = Vec::new();
    for (m, deps) in graph() {
        for d in deps {
            if rank(&d) > rank(&m) {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "upward dependencies: {wrong:#?}");
}

#[test]
fn the_broker_core_does_not_use_the_session_protocol() {
    // The link (the protocol of one connection) sits above the broker core it drives.
    let protocol = [
        "broker/session/link",
        "broker/session/inbound",
        "broker/session/outbound",
        "broker/session/connect",
    ];
    let mut wrong = Vec::new();
    for (m, deps) in graph() {
        if m.starts_with("broker") && !m.starts_with("broker/session") {
            for d in deps.iter().filter(|d| protocol.contains(&d.as_str())) {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn net_never_locks_session_state() {
    for (m, file) in modules() {
        if !m.starts_with("net") {
            continue;
        }
        let text = code(&file);
        for needle in ["session.lock()", "session().lock()", ".lock_state("] {
            assert!(!text.contains(needle), "{m} locks session state: {needle}");
        }
    }
}

#[test]
fn no_source_file_is_over_800_lines() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut long = Vec::new();
    for krate in ["herald", "herald-bench", "mqtt-codec"] {
        let mut dirs = vec![crates.join(krate).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                    if lines > 800 {
                        long.push(format!("{}: {lines}", path.display()));
                    }
                }
            }
        }
    }
    assert!(long.is_empty(), "files over 800 lines: {long:#?}");
}
