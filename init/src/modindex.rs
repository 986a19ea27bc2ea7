//! Kernel module index: `modules.dep`, `modules.alias`, `modules.builtin` and `modules.softdep`
//! as depmod writes them. The builder uses it to compute a closure, stage0 to answer
//! "which modules serve this modalias, and in what order do they load".

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed module index of one kernel version.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Normalized module name → (path relative to the modules dir, dependency names in depmod order).
    modules: HashMap<String, (String, Vec<String>)>,
    /// (normalized glob pattern, normalized module name) in file order.
    aliases: Vec<(String, String)>,
    builtin: HashSet<String>,
    /// Normalized module name → names (or aliases) to load before it.
    softdeps: HashMap<String, Vec<String>>,
}

/// Errors reading or resolving the index.
#[derive(Debug)]
pub enum IndexError {
    /// An index file could not be read.
    Read { path: PathBuf, err: std::io::Error },
    /// A module is neither packed nor built in.
    Missing { name: String },
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Read { path, err } => write!(f, "cannot read {}: {err}", path.display()),
            IndexError::Missing { name } => {
                write!(f, "module {name} is neither in modules.dep nor built in")
            }
        }
    }
}

impl std::error::Error for IndexError {}

/// Module names treat `-` and `_` alike; the kernel reports them with `_`.
/// Inside `[...]` of a glob the dash is a range and is kept.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_bracket = false;
    for c in name.chars() {
        match c {
            '[' => in_bracket = true,
            ']' => in_bracket = false,
            '-' if !in_bracket => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Module name of a path like `kernel/fs/btrfs/btrfs.ko.zst`.
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

impl ModuleIndex {
    /// Parses the text of the four index files (any may be empty).
    pub fn parse(dep: &str, alias: &str, builtin: &str, softdep: &str) -> Self {
        let mut idx = ModuleIndex::default();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(name_of_path).collect();
            idx.modules
                .insert(name_of_path(path), (path.to_string(), deps));
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                idx.aliases.push((normalize(pattern), normalize(module)));
            }
        }
        for line in builtin.lines() {
            let line = line.trim();
            if !line.is_empty() {
                idx.builtin.insert(name_of_path(line));
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            // Only `pre:` entries must load first; `post:` ones are conveniences.
            let mut pre = false;
            for w in words {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    _ if pre => idx
                        .softdeps
                        .entry(normalize(module))
                        .or_default()
                        .push(normalize(w)),
                    _ => {}
                }
            }
        }
        idx
    }

    /// Reads the index files from a `lib/modules/<kver>` directory; absent files count as empty.
    pub fn load(dir: &Path) -> Result<Self, IndexError> {
        let read = |name: &str| -> Result<String, IndexError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(err) => Err(IndexError::Read { path, err }),
            }
        };
        Ok(Self::parse(
            &read("modules.dep")?,
            &read("modules.alias")?,
            &read("modules.builtin")?,
            &read("modules.softdep")?,
        ))
    }

    /// Path of a module relative to the modules directory.
    pub fn path(&self, name: &str) -> Option<&str> {
        self.modules.get(&normalize(name)).map(|(p, _)| p.as_str())
    }

    /// The module's dependencies as modules.dep lists them (all of them, deepest first);
    /// None for a module modules.dep does not know.
    pub fn deps(&self, name: &str) -> Option<&[String]> {
        self.modules
            .get(&normalize(name))
            .map(|(_, d)| d.as_slice())
    }

    /// Whether the module is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Every (pattern, module) of modules.alias, normalized, in file order.
    pub fn aliases(&self) -> &[(String, String)] {
        &self.aliases
    }

    /// All module names known to modules.dep.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }

    /// Modules serving a modalias or alias (e.g. `pci:v00001AF4d…`, `crypto-crc32c`),
    /// or the module itself when `name` is a module name. Built-in modules are skipped:
    /// there is nothing to load for them.
    pub fn resolve(&self, name: &str) -> Vec<String> {
        let name = normalize(name);
        if self.modules.contains_key(&name) {
            return vec![name];
        }
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if !out.contains(module)
                && !self.builtin.contains(module)
                && glob_match(pattern.as_bytes(), name.as_bytes())
            {
                out.push(module.clone());
            }
        }
        out
    }

    /// Modules to load, in order, so that `name` loads: its soft pre-dependencies
    /// (each resolved through aliases; these may fail harmlessly), its modules.dep closure
    /// (deepest first) and finally the module itself.
    pub fn load_order(&self, name: &str) -> Result<Vec<String>, IndexError> {
        let name = normalize(name);
        let Some((_, deps)) = self.modules.get(&name) else {
            if self.builtin.contains(&name) {
                return Ok(Vec::new());
            }
            return Err(IndexError::Missing { name });
        };
        let mut order = Vec::new();
        for soft in self.softdeps.get(&name).into_iter().flatten() {
            for m in self.resolve(soft) {
                if m != name {
                    push_unique(&mut order, m);
                }
            }
        }
        // depmod lists the whole closure, the modules needed last first.
        for dep in deps.iter().rev() {
            push_unique(&mut order, dep.clone());
        }
        push_unique(&mut order, name);
        Ok(order)
    }

    /// Transitive closure of the given modules (deps and resolvable soft deps), sorted.
    /// Names that are built in are dropped; unknown names are an error naming them.
    pub fn closure<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, IndexError> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut todo: Vec<String> = Vec::new();
        for n in names {
            todo.extend(self.load_order(n)?);
        }
        while let Some(m) = todo.pop() {
            if !seen.insert(m.clone()) {
                continue;
            }
            if let Ok(order) = self.load_order(&m) {
                todo.extend(order.into_iter().filter(|o| !seen.contains(o)));
            }
        }
        let mut out: Vec<String> = seen
            .into_iter()
            .filter(|m| self.modules.contains_key(m))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The index text restricted to `keep` (normalized names), as depmod would have written it.
    pub fn filtered(&self, keep: &HashSet<String>) -> FilteredIndex {
        let mut dep: Vec<String> = Vec::new();
        let mut names: Vec<&String> = self.modules.keys().filter(|n| keep.contains(*n)).collect();
        names.sort();
        for n in names {
            let (path, deps) = &self.modules[n];
            let dep_paths: Vec<&str> = deps
                .iter()
                .filter_map(|d| self.modules.get(d).map(|(p, _)| p.as_str()))
                .collect();
            dep.push(
                format!("{path}: {}", dep_paths.join(" "))
                    .trim_end()
                    .to_string(),
            );
        }
        let alias = self
            .aliases
            .iter()
            .filter(|(_, m)| keep.contains(m))
            .map(|(p, m)| format!("alias {p} {m}"))
            .collect::<Vec<_>>();
        let mut softdep: Vec<String> = self
            .softdeps
            .iter()
            .filter(|(m, _)| keep.contains(*m))
            .map(|(m, pre)| format!("softdep {m} pre: {}", pre.join(" ")))
            .collect();
        softdep.sort();
        let mut builtin: Vec<&String> = self.builtin.iter().collect();
        builtin.sort();
        FilteredIndex {
            dep: lines(dep),
            alias: lines(alias),
            builtin: lines(builtin.into_iter().map(|b| format!("{b}.ko")).collect()),
            softdep: lines(softdep),
        }
    }
}

/// Index file contents for a packed module set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredIndex {
    /// `modules.dep`
    pub dep: String,
    /// `modules.alias`
    pub alias: String,
    /// `modules.builtin` (module names, one per line, as `name.ko`)
    pub builtin: String,
    /// `modules.softdep`
    pub softdep: String,
}

fn lines(v: Vec<String>) -> String {
    let mut s = v.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// fnmatch(3)-style matching without flags: `*`, `?`, `[...]` with ranges and `!`/`^` negation.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after star, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unterminated class is a literal '['.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pat` (which begins with `[`).
/// Returns (matched, length of the class) or None when the class is unterminated.
fn match_class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pat.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pat[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko kernel/lib/raid6/raid6_pq.ko kernel/lib/libcrc32c.ko\n\
kernel/crypto/xor.ko:\n\
kernel/lib/raid6/raid6_pq.ko:\n\
kernel/lib/libcrc32c.ko:\n\
kernel/crypto/crc32c_generic.ko:\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko\n";
    const ALIAS: &str = "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
alias virtio:d00000002v* virtio_blk\n\
alias crypto-crc32c crc32c_generic\n\
alias crc32c crc32c_generic\n\
alias fs-ext4 ext4\n\
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb-storage\n";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\n";
    const SOFTDEP: &str =
        "softdep libcrc32c pre: crc32c\nsoftdep btrfs pre: crypto-crc32c post: foo\n";

    fn idx() -> ModuleIndex {
        ModuleIndex::parse(DEP, ALIAS, BUILTIN, SOFTDEP)
    }

    #[test]
    fn modalias_resolves_through_globs() {
        let i = idx();
        assert_eq!(
            i.resolve("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
            vec!["virtio_pci"]
        );
        assert_eq!(i.resolve("virtio:d00000002v00001AF4"), vec!["virtio_blk"]);
        assert!(i
            .resolve("pci:v00008086d00001237sv0sd0bc06sc00i00")
            .is_empty());
    }

    #[test]
    fn dash_and_underscore_are_equivalent() {
        let i = idx();
        assert_eq!(i.resolve("crypto_crc32c"), vec!["crc32c_generic"]);
        assert_eq!(i.resolve("crc32c-generic"), vec!["crc32c_generic"]);
        assert_eq!(
            i.path("virtio-blk"),
            Some("kernel/drivers/block/virtio_blk.ko.xz")
        );
        // an alias naming a module with a dash resolves to the normalized name
        assert_eq!(
            i.resolve("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"),
            vec!["usb_storage"]
        );
    }

    #[test]
    fn builtin_modules_are_skipped() {
        let i = idx();
        assert!(i.resolve("fs-ext4").is_empty());
        assert!(i.is_builtin("ext4"));
        assert_eq!(i.load_order("ext4").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn load_order_puts_softdeps_and_deps_first() {
        let i = idx();
        assert_eq!(
            i.load_order("btrfs").unwrap(),
            vec!["crc32c_generic", "libcrc32c", "raid6_pq", "xor", "btrfs"]
        );
        assert!(matches!(
            i.load_order("nope"),
            Err(IndexError::Missing { name }) if name == "nope"
        ));
    }

    #[test]
    fn closure_follows_softdeps_transitively() {
        let i = idx();
        let c = i.closure(["btrfs", "virtio_blk"]).unwrap();
        assert_eq!(
            c,
            vec![
                "btrfs",
                "crc32c_generic",
                "libcrc32c",
                "raid6_pq",
                "virtio_blk",
                "virtio_ring",
                "xor"
            ]
        );
    }

    #[test]
    fn filtered_index_keeps_only_packed_modules() {
        let i = idx();
        let keep: HashSet<String> = ["virtio_blk", "virtio_ring"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = i.filtered(&keep);
        assert_eq!(
            f.dep,
            "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_ring.ko:\n"
        );
        assert_eq!(f.alias, "alias virtio:d00000002v* virtio_blk\n");
        let again = ModuleIndex::parse(&f.dep, &f.alias, &f.builtin, &f.softdep);
        assert_eq!(
            again.resolve("virtio:d00000002v00001AF4"),
            vec!["virtio_blk"]
        );
        assert!(again.is_builtin("ext4"));
    }

    #[test]
    fn glob_classes_and_stars() {
        assert!(glob_match(b"a[0-9]c", b"a5c"));
        assert!(!glob_match(b"a[!0-9]c", b"a5c"));
        assert!(glob_match(b"*x*y*", b"abxcdyef"));
        assert!(!glob_match(b"*x*y", b"abxcdyef"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"a[", b"a["));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
    }

    proptest::proptest! {
        #[test]
        fn glob_never_panics(p in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                             t in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _ = glob_match(&p, &t);
        }

        #[test]
        fn star_matches_everything(t in "[a-z:*?]{0,30}") {
            proptest::prop_assert!(glob_match(b"*", t.as_bytes()));
        }

        #[test]
        fn literal_matches_itself(t in "[a-zA-Z0-9:_]{0,30}") {
            proptest::prop_assert!(glob_match(t.as_bytes(), t.as_bytes()));
        }
    }
}
