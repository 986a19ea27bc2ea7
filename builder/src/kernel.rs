//! `terra kernel`: the fragments in `kernel-config/` merged onto the architecture's
//! defconfig, `make olddefconfig`, then bzImage and modules. Kconfig silently drops an
//! option whose dependencies are unmet, so after olddefconfig every requested line is
//! compared with the resulting `.config` and each one that did not hold is named.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tool::{self, ToolError};

/// Debian package with the compiler and make.
const BUILD_ESSENTIAL: &str = "build-essential";

/// A Kconfig symbol's value as `.config` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `=y`
    Yes,
    /// `=m`
    Module,
    /// `# CONFIG_X is not set`, or absent from `.config`.
    NotSet,
    /// A string (with its quotes) or number, as written.
    Other(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::NotSet => f.write_str("is not set"),
            Value::Other(v) => f.write_str(v),
        }
    }
}

impl Value {
    fn parse(v: &str) -> Value {
        match v {
            "y" => Value::Yes,
            "m" => Value::Module,
            "n" => Value::NotSet,
            other => Value::Other(other.to_string()),
        }
    }
}

/// One line of a fragment or `.config` that sets a symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The symbol with its prefix, e.g. `CONFIG_BTRFS_FS`.
    pub name: String,
    /// Its value.
    pub value: Value,
    /// 1-based line number in its file.
    pub line: usize,
}

impl Setting {
    /// The line as `.config` writes it.
    pub fn to_line(&self) -> String {
        match &self.value {
            Value::NotSet => format!("# {} is not set", self.name),
            v => format!("{}={v}", self.name),
        }
    }
}

/// Parses `.config` syntax: `CONFIG_X=value` and `# CONFIG_X is not set`; other comments and
/// blank lines are skipped; anything else is an error naming `path` and the line.
pub fn parse_config(text: &str, path: &Path) -> Result<Vec<Setting>, KernelError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = || KernelError::Syntax {
            path: path.to_path_buf(),
            line: i + 1,
            text: raw.to_string(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(name) = comment.trim().strip_suffix(" is not set") {
                if is_symbol(name) {
                    out.push(Setting {
                        name: name.to_string(),
                        value: Value::NotSet,
                        line: i + 1,
                    });
                }
            }
            continue;
        }
        let (name, value) = line.split_once('=').ok_or_else(bad)?;
        if !is_symbol(name) || value.is_empty() {
            return Err(bad());
        }
        out.push(Setting {
            name: name.to_string(),
            value: Value::parse(value),
            line: i + 1,
        });
    }
    Ok(out)
}

fn is_symbol(name: &str) -> bool {
    name.strip_prefix("CONFIG_")
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// A fragment file and what it asks for.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its settings, in file order.
    pub settings: Vec<Setting>,
}

impl Fragment {
    /// Reads and parses a fragment.
    pub fn load(path: &Path) -> Result<Self, KernelError> {
        let text = std::fs::read_to_string(path).map_err(|err| KernelError::Read {
            what: "fragment",
            path: path.to_path_buf(),
            err,
        })?;
        Ok(Fragment {
            path: path.to_path_buf(),
            settings: parse_config(&text, path)?,
        })
    }
}

/// `base` (a `.config`) with each fragment's settings applied in order: a symbol already in
/// `base` is rewritten in place, a new one is appended. Later fragments win, as with the
/// kernel's `scripts/kconfig/merge_config.sh`.
pub fn merge(base: &str, fragments: &[Fragment]) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for s in parse_config(base, Path::new(".config")).unwrap_or_default() {
        index.insert(s.name, s.line - 1);
    }
    for f in fragments {
        for s in &f.settings {
            match index.get(&s.name) {
                Some(&at) => lines[at] = s.to_line(),
                None => {
                    index.insert(s.name.clone(), lines.len());
                    lines.push(s.to_line());
                }
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// A requested setting that the final `.config` does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The symbol.
    pub name: String,
    /// What the fragment asked for.
    pub requested: Value,
    /// What olddefconfig left.
    pub actual: Value,
    /// The fragment (the last one that set the symbol) and its line.
    pub fragment: PathBuf,
    /// Line in the fragment.
    pub line: usize,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let req = Setting {
            name: self.name.clone(),
            value: self.requested.clone(),
            line: self.line,
        };
        let act = Setting {
            name: self.name.clone(),
            value: self.actual.clone(),
            line: 0,
        };
        write!(
            f,
            "{}:{}: requested {}, got {}",
            self.fragment.display(),
            self.line,
            req.to_line(),
            act.to_line()
        )
    }
}

/// Compares what the fragments request with the final `.config`. A module request that
/// ended up built in (`=m` → `=y`, because something built in selects it) still provides
/// the driver and is not reported.
pub fn dropped(fragments: &[Fragment], final_config: &str) -> Vec<Dropped> {
    let actual: HashMap<String, Value> = parse_config(final_config, Path::new(".config"))
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    // The last fragment that sets a symbol decides what was requested.
    let mut requested: Vec<(&Setting, &Path)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for f in fragments {
        for s in &f.settings {
            match at.get(s.name.as_str()) {
                Some(&i) => requested[i] = (s, &f.path),
                None => {
                    at.insert(&s.name, requested.len());
                    requested.push((s, &f.path));
                }
            }
        }
    }
    requested
        .into_iter()
        .filter_map(|(s, path)| {
            let got = actual.get(&s.name).cloned().unwrap_or(Value::NotSet);
            let holds = got == s.value || (s.value == Value::Module && got == Value::Yes);
            (!holds).then(|| Dropped {
                name: s.name.clone(),
                requested: s.value.clone(),
                actual: got,
                fragment: path.to_path_buf(),
                line: s.line,
            })
        })
        .collect()
}

/// What to build.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// An unpacked kernel source tree (kept clean: the build happens in `output/build`).
    pub source: PathBuf,
    /// Fragments, applied in order onto the defconfig.
    pub fragments: Vec<PathBuf>,
    /// Output directory: `config`, `bzImage`, `lib/modules/<kver>/`, and `build/` (objects).
    pub output: PathBuf,
    /// Stop after olddefconfig and the check.
    pub check_only: bool,
    /// `make -j`.
    pub jobs: usize,
    /// `SOURCE_DATE_EPOCH`: the build timestamp the kernel reports, when set.
    pub source_date_epoch: Option<u64>,
}

impl KernelSpec {
    /// A spec with `make -j<available CPUs>`.
    pub fn new(source: PathBuf, fragments: Vec<PathBuf>, output: PathBuf) -> Self {
        KernelSpec {
            source,
            fragments,
            output,
            check_only: false,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            source_date_epoch: None,
        }
    }

    fn build_dir(&self) -> PathBuf {
        self.output.join("build")
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct KernelReport {
    /// The final `.config`, copied to `output/config`.
    pub config: PathBuf,
    /// Number of settings the fragments requested.
    pub requested: usize,
    /// `output/bzImage` (None with `check_only`).
    pub bzimage: Option<PathBuf>,
    /// `make kernelrelease` (None with `check_only`).
    pub kver: Option<String>,
}

/// Errors of `terra kernel`; each names the file, option or command.
#[derive(Debug)]
pub enum KernelError {
    /// The source directory is not a kernel tree.
    NotASource { path: PathBuf },
    /// A file could not be read.
    Read {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    /// A file could not be written.
    Write { path: PathBuf, err: std::io::Error },
    /// A fragment line is neither `CONFIG_X=v`, `# CONFIG_X is not set`, a comment nor blank.
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// olddefconfig did not keep these requested settings.
    Dropped(Vec<Dropped>),
    /// make failed.
    Tool(ToolError),
    /// No Debian kernel source tarball.
    NoDebianSource { dir: PathBuf },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::NotASource { path } => write!(
                f,
                "{} is not a kernel source tree (no Makefile and Kconfig)",
                path.display()
            ),
            KernelError::Read { what, path, err } => {
                write!(f, "cannot read {what} {}: {err}", path.display())
            }
            KernelError::Write { path, err } => {
                write!(f, "cannot write {}: {err}", path.display())
            }
            KernelError::Syntax { path, line, text } => write!(
                f,
                "{}:{line}: expected CONFIG_X=value or `# CONFIG_X is not set`, found {text:?}",
                path.display()
            ),
            KernelError::Dropped(list) => {
                write!(
                    f,
                    "olddefconfig dropped {} requested option{} (unmet dependencies or \
                     renamed symbols):",
                    list.len(),
                    if list.len() == 1 { "" } else { "s" }
                )?;
                for d in list {
                    write!(f, "\n  {d}")?;
                }
                Ok(())
            }
            KernelError::Tool(e) => write!(f, "{e}"),
            KernelError::NoDebianSource { dir } => write!(
                f,
                "no linux-source-*.tar.xz in {} (apt-get install linux-source)",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for KernelError {}

impl From<ToolError> for KernelError {
    fn from(e: ToolError) -> Self {
        KernelError::Tool(e)
    }
}

fn make(spec: &KernelSpec) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(&spec.source)
        .arg(format!("O={}", spec.build_dir().display()))
        .env("KBUILD_BUILD_USER", "terra")
        .env("KBUILD_BUILD_HOST", "terra");
    if let Some(epoch) = spec.source_date_epoch {
        c.env("KBUILD_BUILD_TIMESTAMP", format!("@{epoch}"));
    }
    c
}

fn read(what: &'static str, path: &Path) -> Result<String, KernelError> {
    std::fs::read_to_string(path).map_err(|err| KernelError::Read {
        what,
        path: path.to_path_buf(),
        err,
    })
}

fn write(path: &Path, data: &[u8]) -> Result<(), KernelError> {
    std::fs::write(path, data).map_err(|err| KernelError::Write {
        path: path.to_path_buf(),
        err,
    })
}

/// Configures (and unless `check_only`, builds) the kernel. The configuration step always
/// starts from a fresh `make defconfig`, so a reused build directory cannot carry stale
/// options into the check.
pub fn build(spec: &KernelSpec) -> Result<KernelReport, KernelError> {
    // make -C changes directory first: O= and INSTALL_MOD_PATH= must not be relative.
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|err| KernelError::Read {
            what: "path",
            path: p.to_path_buf(),
            err,
        })
    };
    let spec = &KernelSpec {
        source: absolute(&spec.source)?,
        output: absolute(&spec.output)?,
        ..spec.clone()
    };
    if !spec.source.join("Makefile").is_file() || !spec.source.join("Kconfig").is_file() {
        return Err(KernelError::NotASource {
            path: spec.source.clone(),
        });
    }
    let fragments = spec
        .fragments
        .iter()
        .map(|p| Fragment::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let build_dir = spec.build_dir();
    std::fs::create_dir_all(&build_dir).map_err(|err| KernelError::Write {
        path: build_dir.clone(),
        err,
    })?;

    tool::run(make(spec).args(["-s", "defconfig"]), BUILD_ESSENTIAL)?;
    let dot_config = build_dir.join(".config");
    let merged = merge(&read("defconfig", &dot_config)?, &fragments);
    write(&dot_config, merged.as_bytes())?;
    tool::run(make(spec).args(["-s", "olddefconfig"]), BUILD_ESSENTIAL)?;
    let final_config = read("configuration", &dot_config)?;
    let config = spec.output.join("config");
    write(&config, final_config.as_bytes())?;
    let lost = dropped(&fragments, &final_config);
    if !lost.is_empty() {
        return Err(KernelError::Dropped(lost));
    }
    let requested = fragments.iter().map(|f| f.settings.len()).sum();
    if spec.check_only {
        return Ok(KernelReport {
            config,
            requested,
            bzimage: None,
            kver: None,
        });
    }

    tool::run_visible(
        make(spec)
            .arg(format!("-j{}", spec.jobs.max(1)))
            .args(["bzImage", "modules"]),
        BUILD_ESSENTIAL,
    )?;
    let kver = tool::run(make(spec).args(["-s", "kernelrelease"]), BUILD_ESSENTIAL)?
        .trim()
        .to_string();
    // Stripped before they are signed, so the signatures stay valid.
    tool::run(
        make(spec)
            .arg(format!("INSTALL_MOD_PATH={}", spec.output.display()))
            .args(["INSTALL_MOD_STRIP=1", "-s", "modules_install"]),
        BUILD_ESSENTIAL,
    )?;
    let bzimage = spec.output.join("bzImage");
    let built = build_dir.join("arch/x86/boot/bzImage");
    std::fs::copy(&built, &bzimage).map_err(|err| KernelError::Write {
        path: bzimage.clone(),
        err,
    })?;
    Ok(KernelReport {
        config,
        requested,
        bzimage: Some(bzimage),
        kver: Some(kver),
    })
}

/// Where Debian's `linux-source` package puts its tarball.
pub const DEBIAN_SOURCE_DIR: &str = "/usr/src";

/// The newest `linux-source-*.tar.xz` in `dir`.
pub fn debian_source_tarball(dir: &Path) -> Result<PathBuf, KernelError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|err| KernelError::Read {
            what: "directory",
            path: dir.to_path_buf(),
            err,
        })?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort_by_key(|p| version_key(&p.to_string_lossy()));
    found.pop().ok_or_else(|| KernelError::NoDebianSource {
        dir: dir.to_path_buf(),
    })
}

fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Unpacks `tarball` under `cache` once and returns the tree (`cache/linux-source-X.Y`).
/// tar writes into a scratch directory that is renamed into place when complete, so a tree
/// that exists is whole, and a build or check using it is never pulled from under it.
pub fn unpack_source(tarball: &Path, cache: &Path) -> Result<PathBuf, KernelError> {
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.xz"))
        .ok_or_else(|| KernelError::NoDebianSource {
            dir: tarball.to_path_buf(),
        })?;
    let tree = cache.join(name);
    // Threads of one process share the scratch name below: one unpacks, the others wait and
    // then find the tree (other processes get their own scratch and race only the rename).
    static UNPACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = UNPACK.lock().unwrap_or_else(|p| p.into_inner());
    if tree.join("Makefile").is_file() {
        return Ok(tree);
    }
    let scratch = cache.join(format!(".unpack-{}", std::process::id()));
    let cleanup = |err| {
        let _ = std::fs::remove_dir_all(&scratch);
        err
    };
    std::fs::create_dir_all(&scratch).map_err(|err| KernelError::Write {
        path: scratch.clone(),
        err,
    })?;
    tool::run(
        Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(&scratch),
        "xz-utils",
    )
    .map_err(|e| cleanup(KernelError::Tool(e)))?;
    // Another process may have finished first: its tree is as good as ours.
    if let Err(err) = std::fs::rename(scratch.join(name), &tree) {
        if !tree.join("Makefile").is_file() {
            return Err(cleanup(KernelError::Write { path: tree, err }));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(name: &str, text: &str) -> Fragment {
        Fragment {
            path: PathBuf::from(name),
            settings: parse_config(text, Path::new(name)).unwrap(),
        }
    }

    #[test]
    fn parses_settings_and_not_set_lines() {
        let s = parse_config(
            "# comment\n\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x y\"\nCONFIG_E=-1\n",
            Path::new("f"),
        )
        .unwrap();
        let got: Vec<String> = s.iter().map(Setting::to_line).collect();
        assert_eq!(
            got,
            [
                "CONFIG_A=y",
                "CONFIG_B=m",
                "# CONFIG_C is not set",
                "CONFIG_D=\"x y\"",
                "CONFIG_E=-1"
            ]
        );
        assert_eq!(s[2].line, 5);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = parse_config("CONFIG_A=y\nBTRFS=y\n", Path::new("base.config")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("base.config:2") && msg.contains("BTRFS=y"),
            "{msg}"
        );
        assert!(parse_config("CONFIG_A=\n", Path::new("f")).is_err());
    }

    #[test]
    fn merge_rewrites_in_place_appends_new_and_later_fragments_win() {
        let base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n";
        let merged = merge(
            base,
            &[
                frag("one", "CONFIG_B=y\nCONFIG_D=y\n"),
                frag("two", "# CONFIG_A is not set\nCONFIG_D=m\n"),
            ],
        );
        assert_eq!(
            merged,
            "# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=m\nCONFIG_D=m\n"
        );
    }

    #[test]
    fn dropped_names_every_option_that_did_not_hold() {
        let frags = [
            frag(
                "base.config",
                "CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=y\n# CONFIG_D is not set\n",
            ),
            frag("qemu.config", "CONFIG_E=m\nCONFIG_F=\"x\"\n"),
        ];
        let final_config =
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D=y\nCONFIG_E=y\nCONFIG_F=\"y\"\n";
        let d = dropped(&frags, final_config);
        let names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        // E: asked as a module, built in: the driver is there.
        assert_eq!(names, ["CONFIG_B", "CONFIG_C", "CONFIG_D", "CONFIG_F"]);
        assert_eq!(
            d[1].to_string(),
            "base.config:3: requested CONFIG_C=y, got # CONFIG_C is not set"
        );
        let msg = KernelError::Dropped(d).to_string();
        assert!(msg.contains("dropped 4 requested options"), "{msg}");
        assert!(
            msg.contains("qemu.config:2: requested CONFIG_F=\"x\""),
            "{msg}"
        );
    }

    #[test]
    fn later_fragment_decides_what_was_requested() {
        let frags = [frag("a", "CONFIG_X=y\n"), frag("b", "CONFIG_X=m\n")];
        assert!(dropped(&frags, "CONFIG_X=m\n").is_empty());
        let d = dropped(&frags, "# CONFIG_X is not set\n");
        assert_eq!(d[0].fragment, PathBuf::from("b"));
    }

    #[test]
    fn the_fragments_in_the_tree_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config");
        for name in ["base.config", "qemu.config", "baremetal.config"] {
            let f = Fragment::load(&dir.join(name)).unwrap();
            assert!(f.settings.len() > 5, "{name}");
        }
    }
}
