//! `cargo xtask circles`: file-level import circles inside each crate's source tree.
//!
//! A circle (a.rs uses b.rs, which uses a.rs, possibly through others) means two files share
//! a job, or a type lives away from its owner; the cure is moving the type, not merging the
//! files. The compiler allows such circles inside a crate, so CI checks for them here.
//!
//! A file's module is its path under `src/` (`mod.rs`, `lib.rs` and `main.rs` name their
//! directory); `src/bin/` holds separate crates and is skipped. An edge is any `crate::…`
//! or `super::…` path in the file's non-test code (text before the first `#[cfg(test)]`,
//! comments removed), resolved to the deepest module file that exists. Edges between a module
//! and its own ancestor or descendant are ignored: a parent declares and re-exports its
//! children.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: its path segments under `src/` (empty for the crate root).
type Module = Vec<String>;

/// The modules of one source tree, with their files.
fn modules(src: &Path) -> Result<BTreeMap<Module, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap_or(&path).with_extension("");
            let mut segs: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segs.first().map(String::as_str) == Some("bin") {
                continue;
            }
            if matches!(
                segs.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                segs.pop();
            }
            out.insert(segs, path);
        }
    }
    Ok(out)
}

/// The file's code that counts: before the first `#[cfg(test)]`, without `//` comments.
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]").map_or(text, |cut| &text[..cut]);
    text.lines()
        .map(|l| l.find("//").map_or(l, |c| &l[..c]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…`/`super::…` path in `code`, with `use x::{a, b::c}` groups expanded one
/// level, as segment lists.
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i..].starts_with(b"crate::") || bytes[i..].starts_with(b"super::"))
            && (i == 0 || !ident(bytes[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        // Read `seg::seg::…` as far as it goes.
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            if s == j {
                break;
            }
            segs.push(code[s..j].to_string());
            if code[j..].starts_with("::") && j + 2 < bytes.len() && ident(bytes[j + 2]) {
                j += 2;
            } else {
                break;
            }
        }
        // A group: `prefix::{a, b::c}` adds each member.
        if code[j..].starts_with("::{") {
            if let Some(end) = code[j..].find('}') {
                for item in code[j + 3..j + end].split(',') {
                    let item = item.split(" as ").next().unwrap_or("").trim();
                    if item.is_empty() || item == "self" {
                        continue;
                    }
                    let mut p = segs.clone();
                    p.extend(item.split("::").map(|s| s.trim().to_string()));
                    out.push(p);
                }
            }
        }
        out.push(segs);
        i = j.max(i + 1);
    }
    out
}

/// The graph of one tree: module → the modules its code names.
fn edges(mods: &BTreeMap<Module, PathBuf>) -> Result<BTreeMap<Module, BTreeSet<Module>>, String> {
    let mut out = BTreeMap::new();
    for (m, file) in mods {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut targets = BTreeSet::new();
        for p in paths(&code(&text)) {
            let abs: Module = if p[0] == "crate" {
                p[1..].to_vec()
            } else {
                let ups = p.iter().take_while(|s| *s == "super").count();
                let mut base = m[..m.len().saturating_sub(ups)].to_vec();
                base.extend_from_slice(&p[ups..]);
                base
            };
            // The deepest module file along the path (items resolve to their file).
            let Some(t) = (0..=abs.len())
                .rev()
                .map(|n| &abs[..n])
                .find(|n| mods.contains_key(*n))
            else {
                continue;
            };
            if t == m.as_slice() || m.starts_with(t) || t.starts_with(m) {
                continue;
            }
            targets.insert(t.to_vec());
        }
        out.insert(m.clone(), targets);
    }
    Ok(out)
}

/// Strongly connected components with more than one member (Tarjan's algorithm, iterative).
fn circles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let nodes: Vec<&Module> = g.keys().collect();
    let id: BTreeMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|m| g[*m].iter().filter_map(|t| id.get(t).copied()).collect())
        .collect();
    let n = nodes.len();
    let (mut index, mut low) = (vec![usize::MAX; n], vec![0; n]);
    let (mut on, mut stack, mut next, mut out) = (vec![false; n], Vec::new(), 0, Vec::new());
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, position in its successor list)
        let mut work = vec![(root, 0)];
        while let Some(&(v, pos)) = work.last() {
            if pos == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on[v] = true;
            }
            if let Some(&w) = succ[v].get(pos) {
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on[w] = false;
                    comp.push(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// The circles of each source tree, one line each (`tree: a <-> b <-> c`).
pub fn find(trees: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for src in trees {
        for comp in circles(&edges(&modules(src)?)?) {
            let names: Vec<String> = comp
                .iter()
                .map(|m| {
                    if m.is_empty() {
                        "(root)".into()
                    } else {
                        m.join("/")
                    }
                })
                .collect();
            lines.push(format!("{}: {}", src.display(), names.join(" <-> ")));
        }
    }
    Ok(lines)
}

/// The crate source trees the check covers.
pub const TREES: [&str; 5] = [
    "init/src",
    "builder/src",
    "controller/src",
    "tests-qemu/src",
    "xtask/src",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn finds_a_circle_through_three_files_and_a_group_import() {
        let t = tree(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod net;"),
            ("a.rs", "use crate::b::Thing;"),
            ("b.rs", "use crate::net::{self, lease::Lease};"),
            ("net/mod.rs", "pub mod lease;"),
            ("net/lease.rs", "fn f() { crate::a::g() }"),
        ]);
        let found = find(&[t.path().to_path_buf()]).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].ends_with("a <-> b <-> net/lease"), "{found:?}");
    }

    #[test]
    fn ignores_tests_comments_parents_and_bins() {
        let t = tree(&[
            ("lib.rs", "pub mod a; pub mod b; pub use b::X;"),
            // a parent re-exporting its child and the child naming its parent: no circle
            ("b.rs", "pub mod c; pub struct X;"),
            ("b/c.rs", "use super::X;"),
            // only test code and comments name b
            (
                "a.rs",
                "// crate::b::X\n#[cfg(test)]\nmod tests { use crate::b::X; }",
            ),
            ("bin/tool.rs", "use crate::a;"),
        ]);
        assert_eq!(
            find(&[t.path().to_path_buf()]).unwrap(),
            Vec::<String>::new()
        );
        // …but a real edge back from b to a closes one.
        std::fs::write(t.path().join("a.rs"), "use crate::b::X;").unwrap();
        std::fs::write(
            t.path().join("b.rs"),
            "pub mod c; pub struct X; use super::a;",
        )
        .unwrap();
        assert_eq!(find(&[t.path().to_path_buf()]).unwrap().len(), 1);
    }
}
