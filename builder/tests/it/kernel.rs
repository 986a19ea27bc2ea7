//! The fragments in kernel-config/ against Debian's kernel source (package linux-source):
//! merged onto defconfig, olddefconfig must keep every requested option. No compilation;
//! the unpacked tree is cached under target/kernel/src.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use terra_builder::kernel;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Runs `terra kernel --check-only` with fragments from kernel-config/ (or absolute
/// paths), killed after `limit`.
fn check(source: &Path, fragments: &[&str], out: &Path, limit: Duration) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_terra"));
    cmd.args(["kernel", "--check-only", "--source"]).arg(source);
    for f in fragments {
        cmd.arg("--fragment")
            .arg(workspace().join("kernel-config").join(f));
    }
    let mut child = cmd
        .arg("-o")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("terra kernel --check-only took more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn fragments_hold_on_debian_linux_source() {
    let tarball = kernel::debian_source_tarball(Path::new(kernel::DEBIAN_SOURCE_DIR))
        .unwrap_or_else(|e| panic!("{e}"));
    let source = kernel::unpack_source(&tarball, &target().join("kernel/src"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = target().join("kernel/check");
    let limit = Duration::from_secs(600);
    // The two configurations release engineers build, checked side by side.
    let q = std::thread::spawn({
        let (source, out) = (source.clone(), out.join("qemu"));
        move || check(&source, &["base.config", "qemu.config"], &out, limit)
    });
    let (ok, log) = check(
        &source,
        &["base.config", "baremetal.config"],
        &out.join("baremetal"),
        limit,
    );
    assert!(ok, "base + baremetal:\n{log}");
    let (ok, log) = q.join().unwrap();
    assert!(ok, "base + qemu:\n{log}");
}

#[test]
fn a_dropped_option_is_named() {
    let tarball = kernel::debian_source_tarball(Path::new(kernel::DEBIAN_SOURCE_DIR))
        .unwrap_or_else(|e| panic!("{e}"));
    let source = kernel::unpack_source(&tarball, &target().join("kernel/src"))
        .unwrap_or_else(|e| panic!("{e}"));
    let d = tempfile::tempdir().unwrap();
    let frag = d.path().join("bad.config");
    // ISCSI_TCP depends on INET, which needs NET; a symbol that does not exist cannot be
    // kept either.
    std::fs::write(
        &frag,
        "# CONFIG_NET is not set\nCONFIG_ISCSI_TCP=y\nCONFIG_TERRA_NO_SUCH_OPTION=y\n",
    )
    .unwrap();
    // The output under target/ like the other checks': its build directory keeps the
    // compiled kconfig tools between runs (each check starts from a fresh defconfig).
    let (ok, err) = check(
        &source,
        &[frag.to_str().unwrap()],
        &target().join("kernel/check/dropped"),
        Duration::from_secs(600),
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains("bad.config:2: requested CONFIG_ISCSI_TCP=y"),
        "{err}"
    );
    assert!(
        err.contains("bad.config:3: requested CONFIG_TERRA_NO_SUCH_OPTION=y"),
        "{err}"
    );
}
