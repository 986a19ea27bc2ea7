//! Go's `archive/tar` as the reference reader: `go_tar_list.go` beside this file lists what
//! Go reads in tar archives (every header `Next` returns, the content's hash, the error that
//! ends it), and [`terra_list`] lists what terra's reader reads, in the same form. The Go
//! program is built once per test run with Debian's `golang-go` into the target dir, cached
//! by the hash of its source.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};
use terra_builder::oci::tarstream::{Records, TarError, TarReader};

const SOURCE: &str = include_str!("go_tar_list.go");

/// Content hashed per entry, as the Go program does.
const LIMIT: u64 = 64 << 20;

/// The built Go lister (built on first use).
pub fn go_lister() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build) {
        Ok(p) => p,
        Err(e) => panic!("building the Go tar lister: {e}"),
    }
}

/// The `go` command, offline, with the toolchain as installed and its caches in the target
/// dir (CI may have no `$HOME`): the lister uses the standard library only.
fn go() -> Command {
    let mut c = Command::new("go");
    c.env("GOCACHE", lab::lab_dir().join("go-cache"))
        .env("GOPATH", lab::lab_dir().join("go-path"))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod");
    c
}

/// Go's own test archives (`$GOROOT/src/archive/tar/testdata`, in Debian's golang-src).
pub fn go_testdata() -> PathBuf {
    let out = go()
        .args(["env", "GOROOT"])
        .output()
        .expect("go (install Debian's golang-go: scripts/setup-host.sh does)");
    assert!(
        out.status.success(),
        "go env GOROOT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&root).join("src/archive/tar/testdata")
}

fn build() -> Result<PathBuf, String> {
    let hash = super::sha256_hex(SOURCE.as_bytes());
    let dir = lab::lab_dir().join("go-tar-list").join(&hash[..16]);
    let bin = dir.join("go-tar-list");
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join(format!("main-{}.go", std::process::id()));
    std::fs::write(&src, SOURCE).map_err(|e| format!("{}: {e}", src.display()))?;
    let tmp = dir.join(format!(".go-tar-list.tmp-{}", std::process::id()));
    let out = go()
        .arg("build")
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .env("CGO_ENABLED", "0")
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("go: {e} (install Debian's golang-go: scripts/setup-host.sh does)"))?;
    let _ = std::fs::remove_file(&src);
    if !out.status.success() {
        return Err(format!(
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    Ok(bin)
}

/// What Go's reader reads in each of `archives`.
pub fn go_list(archives: &[&Path]) -> String {
    let out = Command::new(go_lister())
        .args(archives)
        .output()
        .expect("running the Go tar lister");
    assert!(
        out.status.success(),
        "go-tar-list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the listing is ASCII")
}

/// What terra's reader reads in each of `archives`, in the Go program's form.
pub fn terra_list(archives: &[&Path]) -> String {
    let mut out = String::new();
    for p in archives {
        out.push_str(&format!(
            "archive {}\n",
            esc(p.to_string_lossy().as_bytes())
        ));
        let f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        list(std::io::BufReader::new(f), &mut out);
    }
    out
}

/// The listing of one archive read from `r`.
pub fn list(r: impl Read, out: &mut String) {
    let mut tr = TarReader::new(r);
    loop {
        let h = match tr.next_entry() {
            Ok(Some(h)) => h,
            Ok(None) => {
                out.push_str("end\n");
                return;
            }
            Err(e) => {
                out.push_str(&format!("error {}\n", e.kind()));
                return;
            }
        };
        if h.kind == b'g' {
            out.push_str(&format!(
                "global name={} xattrs={} pax={}\n",
                esc(&h.name),
                kv(&h.xattrs),
                kv(&h.pax)
            ));
            continue;
        }
        let mut sum = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        let mut err = None;
        while n < LIMIT {
            let want = (LIMIT - n).min(buf.len() as u64) as usize;
            match tr.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => {
                    sum.update(&buf[..k]);
                    n += k as u64;
                }
                Err(e) => {
                    let kind = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<TarError>())
                        .map_or("io", TarError::kind);
                    err = Some(kind);
                    break;
                }
            }
        }
        let hex: String = sum.finalize().iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            "entry type={} name={} link={} size={} mode={} uid={} gid={} mtime={}.{:09} dev={},{} xattrs={} pax={} data={hex} len={n}\n",
            esc(&[h.kind]),
            esc(&h.name),
            esc(&h.link),
            h.size,
            h.mode,
            h.uid,
            h.gid,
            h.mtime.secs,
            h.mtime.nanos,
            h.devmajor,
            h.devminor,
            kv(&h.xattrs),
            kv(&h.pax),
        ));
        if let Some(kind) = err {
            out.push_str(&format!("data-error {kind}\n"));
            return;
        }
    }
}

fn esc(s: &[u8]) -> String {
    let mut out = String::new();
    for &c in s {
        if c > 0x20 && c < 0x7f && !matches!(c, b'%' | b';' | b'=') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn kv(m: &Records) -> String {
    m.iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect::<Vec<_>>()
        .join(";")
}

/// Go's and terra's listings of `archives`, compared line by line; the differences, each
/// with the archive it is in.
pub fn disagreements(archives: &[&Path]) -> Vec<String> {
    let go = go_list(archives);
    let terra = terra_list(archives);
    let mut out = Vec::new();
    let mut archive = "";
    let (g, t): (Vec<&str>, Vec<&str>) = (go.lines().collect(), terra.lines().collect());
    for i in 0..g.len().max(t.len()) {
        let (gl, tl) = (
            g.get(i).copied().unwrap_or("-"),
            t.get(i).copied().unwrap_or("-"),
        );
        if let Some(a) = gl.strip_prefix("archive ") {
            archive = a;
        }
        if gl != tl {
            out.push(format!("{archive}:\n  go    {gl}\n  terra {tl}"));
        }
    }
    out
}

/// Asserts that Go's reader and terra's read the archive `tar` alike (`what` names it in a
/// failure); returns Go's listing.
pub fn assert_agree(tar: &[u8], what: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("layer.tar");
    std::fs::write(&p, tar).unwrap();
    let d = disagreements(&[&p]);
    assert!(
        d.is_empty(),
        "{what}: Go and terra read it differently:\n{}",
        d.join("\n")
    );
    go_list(&[&p])
}

/// Whether a listing ends as an archive Go reads whole.
pub fn accepted(listing: &str) -> bool {
    listing.lines().last() == Some("end")
}

/// The entry names in a listing.
pub fn names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("entry "))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("name=")))
        .map(str::to_string)
        .collect()
}
