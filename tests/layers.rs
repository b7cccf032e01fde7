//! The crate's modules form one order, and dependencies point down it: a module may use the
//! modules listed before it, never one listed after it (nor another of its own rank). The order is
//! ARCHITECTURE.md's "Layers" section; this test reads every `use crate::…` line and every inline
//! `crate::…` / `super::…` path under `src/` (comments and doc comments are not code and are
//! skipped) and fails on an edge that runs back up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The modules, lowest first; modules on one line share a rank and may not use each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["shaders"],
    &["gpu"],
    &["kernel"],
    &["quant"],
    &["kernels"],
    &["cpu"],
    &["ledger", "profile", "nvml"],
    &["graph"],
    &["model"],
    &["generator"],
    &["spread"],
    &["eval", "picture", "bench"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text` without comments (line comments, doc comments and block comments).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if rest.starts_with('"') {
            // Skip string literals (they may hold "//" or "crate::").
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            rest = rest.get(i + 1..).unwrap_or("");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Names the crate root re-exports (`pub use module::{A, B}` in lib.rs), mapped to their module.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else { continue };
        let module = ident_at(rest).to_string();
        let names = rest.split_once('{').map_or_else(
            || vec![rest.rsplit("::").next().unwrap_or("").trim_end_matches(';').to_string()],
            |(_, tail)| tail.trim_end_matches("};").split(',').map(|n| n.trim().to_string()).collect(),
        );
        for n in names {
            map.insert(n, module.clone());
        }
    }
    map
}

/// The top-level modules a file's code refers to through `crate::` or through `super::` chains
/// that climb to the crate root, each with the line it appears on.
fn references(code: &str, depth: usize, reexports: &BTreeMap<String, String>) -> Vec<(String, usize)> {
    let mut refs = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut search = line;
        while let Some(i) = search.find("crate::") {
            // `milliwatt_crate::` or similar is not `crate::`.
            let before = search[..i].chars().last();
            let after = &search[i + "crate::".len()..];
            search = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = after.strip_prefix('{') {
                // use crate::{a::X, b, c::{...}}: the first segment of each top-level item.
                let mut nest = 0;
                let mut item_start = true;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => nest += 1,
                        '}' if nest == 0 => break,
                        '}' => nest -= 1,
                        ',' if nest == 0 => item_start = true,
                        c if item_start && (c.is_alphanumeric() || c == '_') => {
                            refs.push((ident_at(&group[j..]).to_string(), n + 1));
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                refs.push((ident_at(after).to_string(), n + 1));
            }
        }
        // super::super::x from src/a/b.rs (depth 2) climbs to the root after two supers; a
        // test module inside a file adds one more level, so count chains at least that long.
        let mut search = line;
        while let Some(i) = search.find("super::") {
            let mut rest = &search[i..];
            let mut k = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                rest = r;
                k += 1;
            }
            search = rest;
            if k >= depth && depth > 1 {
                refs.push((ident_at(rest).to_string(), n + 1));
            }
        }
    }
    refs.into_iter().map(|(name, line)| (reexports.get(&name).cloned().unwrap_or(name), line)).collect()
}

#[test]
fn dependencies_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    let mut unranked = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
        if parts == ["lib"] {
            continue;
        }
        let module = parts[0].clone();
        let Some(own) = rank(&module) else {
            unranked.push(module);
            continue;
        };
        let depth = if parts.last().is_some_and(|p| p == "mod") { parts.len() - 1 } else { parts.len() };
        let text = std::fs::read_to_string(file).unwrap();
        for (target, line) in references(&code(&text), depth, &reexports) {
            if target == module || target == "self" {
                continue;
            }
            match rank(&target) {
                Some(r) if r < own => {}
                Some(_) => bad.push(format!("src/{}:{line}: `{module}` uses `{target}`", rel.display())),
                None if target.chars().next().is_some_and(char::is_uppercase) => {
                    bad.push(format!("src/{}:{line}: `crate::{target}` is not a module path", rel.display()));
                }
                // Re-exported crates (`crate::wgpu`) and macros sit outside the order.
                None => {}
            }
        }
    }
    assert!(unranked.is_empty(), "modules missing from LAYERS: {unranked:?}");
    assert!(bad.is_empty(), "dependencies that run back up the layers:\n{}", bad.join("\n"));
}

#[test]
fn the_reader_sees_edges_in_every_form() {
    let reexports = root_reexports("pub use kernel::{Kernel, Prepared};\npub use wgpu;\n");
    let found = |src: &str, depth: usize| -> Vec<String> {
        references(&code(src), depth, &reexports).into_iter().map(|(m, _)| m).collect()
    };
    assert_eq!(found("use crate::graph::Phase;", 1), ["graph"]);
    assert_eq!(found("use crate::{error::Result, model::{a, b}, gpu};", 1), ["error", "model", "gpu"]);
    assert_eq!(found("fn f(p: &crate::Prepared) {}", 1), ["kernel"]);
    assert_eq!(found("let x = crate::kernels::matmul::split_rows(1);", 1), ["kernels"]);
    assert_eq!(found("use super::super::model::X;", 2), ["model"]);
    assert!(found("use super::attention::attention;", 2).is_empty());
    assert!(found("// uses crate::model\n/// see [`crate::graph`]\nlet s = \"crate::x\";", 1).is_empty());
    assert!(found("/* crate::model */ let my_crate::x = 1;", 1).is_empty());
}

/// The graph finds what to fuse through the kernel contract (`kernels::fusion`), never by
/// looking at a kernel's concrete type.
#[test]
fn the_graph_never_downcasts() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/graph"), &mut files);
    assert!(!files.is_empty());
    for path in files {
        let text = code(&std::fs::read_to_string(&path).unwrap());
        for word in ["Any", "downcast", "type_id", "TypeId"] {
            let hit = text.match_indices(word).any(|(i, _)| {
                let before = text[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '_');
                let after = text[i + word.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric() && c != '_');
                before && after
            });
            assert!(!hit, "{} uses `{word}`", path.display());
        }
    }
}
