//! Builds stage0 (static), the terra builder and initramfs images.
//!
//! `terra` and `terra-controller` are built with the release profile unless the environment
//! names a binary already built:
//!
//! - `LAB_TERRA`: the `terra` CLI to use ([`terra`]), e.g. `target/debug/terra`;
//! - `LAB_TERRA_CONTROLLER`: the `terra-controller` to use ([`controller`]).
//!
//! `cargo xtask test` sets both to the dev-profile binaries `cargo test --workspace` just
//! built, so the tests do not compile the dependency tree a second time for release;
//! `cargo xtask qemu`, the benches and a plain `cargo test -p tests-qemu` leave them unset
//! and get release builds. A variable naming a file that is not there is an error, not a
//! fallback.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{lab_dir, run, target_dir, workspace};

/// The musl target stage0 is built for.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn musl_installed() -> bool {
    Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| {
            let sysroot = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&sysroot).join("lib/rustlib").join(MUSL).is_dir()
        })
        .unwrap_or(false)
}

/// `rustup target add` of the musl target when rustup is there (once per process, bounded
/// in time); whether the target is installed afterwards.
fn add_musl() -> bool {
    static TRIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRIED.get_or_init(|| {
        if crate::host::which("rustup").is_none() {
            return false;
        }
        eprintln!("lab: installing the rust target {MUSL} (rustup target add {MUSL})");
        let added = Command::new("timeout")
            .args(["120", "rustup", "target", "add", MUSL])
            .status()
            .is_ok_and(|s| s.success());
        added && musl_installed()
    })
}

/// Builds stage0 with the size-tuned `stage0` profile, statically: for musl, or, when that
/// target cannot be installed, for glibc with crt-static. Returns the binary's path.
/// The session keeper and the confirmation command (`bless`) are built beside it, where
/// the builder finds and packs them.
pub fn stage0() -> crate::Result<PathBuf> {
    static_bin("terra-init", "keeper")?;
    static_bin("terra-init", "bless")?;
    static_bin("terra-init", "stage0")
}

/// Builds the benchmark root's init (static, like stage0). Returns its path.
pub fn bench_init() -> crate::Result<PathBuf> {
    static_bin("tests-qemu", "bench-init")
}

/// Builds the iSCSI bench's root init (static; links stage0's initiator). Returns its path.
pub fn bench_iscsi() -> crate::Result<PathBuf> {
    static_bin("tests-qemu", "bench-iscsi")
}

/// Builds a static binary with the `stage0` profile; see [`stage0`].
fn static_bin(package: &str, bin: &str) -> crate::Result<PathBuf> {
    let mut cmd = cargo();
    let target = if musl_installed() || add_musl() {
        MUSL
    } else {
        eprintln!("lab: rust target {MUSL} is not installed (rustup target add {MUSL}); building static glibc");
        // Only here: RUSTFLAGS changes every crate's fingerprint, so musl builds go without.
        cmd.env("RUSTFLAGS", "-C target-feature=+crt-static");
        "x86_64-unknown-linux-gnu"
    };
    run(cmd
        .args([
            "build",
            "--quiet",
            "--profile",
            "stage0",
            "--target",
            target,
        ])
        .args(["-p", package, "--bin", bin]))?;
    Ok(target_dir().join(target).join("stage0").join(bin))
}

/// The terra CLI: `LAB_TERRA` when set, else built with the release profile. Returns its
/// path.
pub fn terra() -> crate::Result<PathBuf> {
    prebuilt("LAB_TERRA", "terra-builder", "terra")
}

/// `terra-controller`: `LAB_TERRA_CONTROLLER` when set, else built with the release
/// profile. Returns its path.
pub fn controller() -> crate::Result<PathBuf> {
    prebuilt(
        "LAB_TERRA_CONTROLLER",
        "terra-controller",
        "terra-controller",
    )
}

/// The binary the environment variable `var` names (it must exist), or `bin` of `package`
/// built with `cargo build --release`.
fn prebuilt(var: &str, package: &str, bin: &str) -> crate::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{var}={} is not a file: build it (cargo build -p {package} --bin {bin}) or unset {var}",
                path.display()
            ))
        };
    }
    run(cargo().args(["build", "--quiet", "--release", "-p", package, "--bin", bin]))?;
    Ok(target_dir().join("release").join(bin))
}

/// Options for one initramfs.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    /// node.toml to embed.
    pub config: Option<PathBuf>,
    /// Include the busybox rescue shell.
    pub rescue_shell: bool,
    /// Extra `terra initramfs` arguments.
    pub extra: Vec<String>,
}

impl Initramfs {
    /// Builds the image into `out` with `terra initramfs` for kernel `kver`: under a
    /// temporary name beside it, renamed to `out` when whole, so a VM booting `out` (of
    /// this process or another) never reads half an image.
    pub fn build(&self, terra: &Path, stage0: &Path, kver: &str, out: &Path) -> crate::Result<()> {
        let tmp = crate::temp_name(out);
        let mut cmd = Command::new(terra);
        cmd.args(["initramfs", "--kver", kver, "--stage0"])
            .arg(stage0)
            .arg("-o")
            .arg(&tmp)
            .env("SOURCE_DATE_EPOCH", "0");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        if self.rescue_shell {
            cmd.arg("--rescue-shell");
        }
        cmd.args(&self.extra);
        let built = run(&mut cmd).and_then(|_| crate::publish(&tmp, out));
        if built.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        built
    }
}

/// Everything a boot needs, built once.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The kernel image.
    pub kernel: PathBuf,
    /// Its release.
    pub kver: String,
    /// stage0.
    pub stage0: PathBuf,
    /// terra.
    pub terra: PathBuf,
    /// The default initramfs (QEMU module set, no rescue shell).
    pub initramfs: PathBuf,
}

/// Ensures host tools, builds stage0, terra and the default initramfs: once per process
/// (later calls return the first result). The initramfs is written under a temporary name
/// and renamed to target/lab/initramfs.img, so a VM never boots half an image and two
/// processes building it at once (the scenarios, the builder's and controller's tests) do
/// not write into each other's file.
pub fn artifacts() -> crate::Result<Artifacts> {
    static A: std::sync::OnceLock<crate::Result<Artifacts>> = std::sync::OnceLock::new();
    A.get_or_init(build_artifacts).clone()
}

fn build_artifacts() -> crate::Result<Artifacts> {
    crate::host::ensure()?;
    let (kernel, kver) =
        crate::host::find_kernel().ok_or("no kernel under /boot with modules in /lib/modules")?;
    let stage0 = stage0()?;
    let terra = terra()?;
    let dir = lab_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let initramfs = dir.join("initramfs.img");
    Initramfs::default().build(&terra, &stage0, &kver, &initramfs)?;
    Ok(Artifacts {
        kernel,
        kver,
        stage0,
        terra,
        initramfs,
    })
}
