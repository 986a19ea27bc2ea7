//! Phases 7–8, root and switch: check the new root, set the host name, move the pseudo
//! filesystems into the root, free the initramfs, chroot and exec the real init.

use std::convert::Infallible;
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot, execv};

use crate::layout::SYSROOT;

/// Mount points the real root must have.
const MOVED: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

/// Why the switch into the real root failed.
#[derive(Debug)]
pub enum SwitchError {
    /// The init program is not in the new root.
    NoInit {
        /// The init path inside the root.
        init: String,
        /// What resolving it found.
        reason: String,
    },
    /// A mount point is missing and the root is read-only.
    NoMountPoint {
        /// The missing directory inside the root.
        path: String,
    },
    /// A syscall failed.
    Sys {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        errno: Errno,
    },
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::NoInit { init, reason } => {
                write!(f, "init {init} is not usable in the root: {reason}")
            }
            SwitchError::NoMountPoint { path } => write!(
                f,
                "the root has no {path} and is read-only, so it cannot be created"
            ),
            SwitchError::Sys { what, errno } => write!(f, "{what}: {errno}"),
        }
    }
}

impl std::error::Error for SwitchError {}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> SwitchError {
    let what = what.into();
    move |errno| SwitchError::Sys { what, errno }
}

/// Resolves `path` inside `root` as the kernel would after chroot: absolute symlinks are
/// taken relative to `root`, and `..` never climbs above it.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, String> {
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(part);
        let host = root.join(cur.join("/"));
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err("too many levels of symbolic links".into());
                }
                let target = fs::read_link(&host).map_err(|e| e.to_string())?;
                let target = target.to_string_lossy().into_owned();
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_string));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("/{}: {e}", cur.join("/"))),
        }
    }
    Ok(root.join(cur.join("/")))
}

/// Checks that the root has its init and mount points, creating missing mount points
/// when the root is writable.
pub fn check_root(root: &Path, init: &str) -> Result<(), SwitchError> {
    let resolved = resolve_in_root(root, init).map_err(|reason| SwitchError::NoInit {
        init: init.to_string(),
        reason,
    })?;
    let meta = fs::metadata(&resolved).map_err(|e| SwitchError::NoInit {
        init: init.to_string(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Err(SwitchError::NoInit {
            init: init.to_string(),
            reason: "not an executable file".into(),
        });
    }
    // exec happens after the initramfs is gone: what would make it fail is checked now,
    // while another version can still boot instead.
    runnable(root, &resolved).map_err(|reason| SwitchError::NoInit {
        init: init.to_string(),
        reason,
    })?;
    for dir in MOVED {
        let path = root.join(&dir[1..]);
        if !path.is_dir() && fs::create_dir(&path).is_err() {
            return Err(SwitchError::NoMountPoint {
                path: dir.to_string(),
            });
        }
    }
    Ok(())
}

/// The ELF machine this stage0 runs on (and so the root's init must be built for).
const ELF_MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else {
    None
};

/// Whether the kernel could exec `path` (inside `root`): an ELF for this machine whose
/// interpreter exists in the root, or a `#!` script whose interpreter does.
pub fn runnable(root: &Path, path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .map_err(|e| e.to_string())?;
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let Some(interp) = line.split_whitespace().next() else {
            return Err("#! names no interpreter".into());
        };
        let resolved =
            resolve_in_root(root, interp).map_err(|e| format!("its interpreter {interp}: {e}"))?;
        let meta = fs::metadata(&resolved).map_err(|e| format!("its interpreter {interp}: {e}"))?;
        if !meta.is_file() || meta.mode() & 0o111 == 0 {
            return Err(format!(
                "its interpreter {interp} is not an executable file"
            ));
        }
        return Ok(());
    }
    let Some(elf) = head.strip_prefix(b"\x7fELF") else {
        return Err("neither an ELF executable nor a #! script".into());
    };
    let u16_at = |o: usize| {
        elf.get(o - 4..o - 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        head.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    // Only 64-bit little-endian ELF is checked further; other kinds fail at exec anyway
    // on the machines stage0 is built for.
    if elf.first() != Some(&2) || elf.get(1) != Some(&1) {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let machine = u16_at(0x12);
    if let (Some(want), Some(got)) = (ELF_MACHINE, machine) {
        if want != got {
            return Err(format!("an ELF for machine {got}, not this one ({want})"));
        }
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err("a truncated ELF header".into());
    };
    if phnum > 256 || phentsize > 256 {
        return Err(format!(
            "an ELF with an unusual program header table ({phnum} x {phentsize} bytes)"
        ));
    }
    let mut f = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut table = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(phoff))
        .and_then(|_| f.read_exact(&mut table))
        .map_err(|e| format!("its program headers: {e}"))?;
    for ph in table.chunks_exact(usize::from(phentsize.max(56))) {
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) != 3 {
            continue; // not PT_INTERP
        }
        let field = |o: usize| u64::from_le_bytes(ph[o..o + 8].try_into().unwrap_or_default());
        let (offset, size) = (field(8), field(32));
        let mut interp = vec![0u8; usize::try_from(size.min(4096)).unwrap_or(0)];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut interp))
            .map_err(|e| format!("its interpreter path: {e}"))?;
        let interp = String::from_utf8_lossy(interp.split(|&b| b == 0).next().unwrap_or_default())
            .into_owned();
        let resolved = resolve_in_root(root, &interp)
            .map_err(|e| format!("its ELF interpreter {interp}: {e}"))?;
        if !resolved.is_file() {
            return Err(format!("its ELF interpreter {interp} is not a file"));
        }
    }
    Ok(())
}

/// Sets the host name before the switch, so the real init starts with it and a configured
/// name beats one from DHCP: `name` is `hostname=`, else node.toml's (config phase). Linux
/// ≥ 5.19 applies `hostname=` itself at boot; node.toml's name and older kernels need this.
/// Best effort: a name the kernel refuses is logged, not fatal.
pub fn set_hostname(name: Option<&str>) {
    let Some(name) = name else {
        return;
    };
    match nix::unistd::sethostname(name) {
        Ok(()) => log::info!("hostname {name}"),
        Err(e) => log::warn!("cannot set hostname {name:?}: {e}"),
    }
}

/// Moves /dev, /proc, /sys and /run into /sysroot, deletes the initramfs, makes /sysroot the
/// root and returns, chrooted, ready to exec. Past the first move the initramfs is no longer
/// usable for rescue; everything that can fail for a reason the user can fix is checked before.
pub fn enter_root() -> Result<(), SwitchError> {
    for dir in MOVED {
        let target = format!("{SYSROOT}{dir}");
        mount(
            Some(dir),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(sys(format!("move {dir} to {target}")))?;
    }
    let root_dev = fs::symlink_metadata("/")
        .map(|m| m.dev())
        .map_err(|e| SwitchError::Sys {
            what: "stat /".into(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
    // The initramfs is a tmpfs/ramfs that is never unmounted: free its memory by deleting
    // everything on it, staying on its device (so /sysroot is untouched).
    delete_tree(Path::new("/"), root_dev);
    chdir(SYSROOT).map_err(sys(format!("chdir {SYSROOT}")))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys(format!("move {SYSROOT} to /")))?;
    chroot(".").map_err(sys("chroot"))?;
    chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}

/// Executes the real init; returns only on failure.
pub fn exec_init(init: &str) -> SwitchError {
    let Ok(path) = CString::new(init) else {
        return SwitchError::NoInit {
            init: init.to_string(),
            reason: "contains a NUL byte".into(),
        };
    };
    match execv(&path, &[&path]) {
        Ok(never) => match never {},
        Err(errno) => SwitchError::Sys {
            what: format!("exec {init}"),
            errno,
        },
    }
}

fn delete_tree(dir: &Path, dev: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            delete_tree(&path, dev);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Never returns Ok: the type says "this diverges on success".
pub type Diverges = Result<Infallible, SwitchError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn resolves_absolute_symlinks_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("lib/systemd")).unwrap();
        fs::create_dir_all(r.join("sbin")).unwrap();
        fs::write(r.join("lib/systemd/systemd"), "#!/lib/systemd/systemd\n").unwrap();
        fs::set_permissions(
            r.join("lib/systemd/systemd"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("/lib/systemd/systemd", r.join("sbin/init")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/sbin/init").unwrap(),
            r.join("lib/systemd/systemd")
        );
        // ../ cannot escape
        symlink("../../../../lib/systemd/systemd", r.join("sbin/up")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/sbin/up").unwrap(),
            r.join("lib/systemd/systemd")
        );
        check_root(r, "/sbin/init").unwrap();
        for d in ["dev", "proc", "sys", "run"] {
            assert!(r.join(d).is_dir());
        }
    }

    #[test]
    fn inits_that_exec_would_refuse_are_found_before_the_switch() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("sbin")).unwrap();
        let put = |name: &str, data: &[u8]| {
            fs::write(r.join(name), data).unwrap();
            fs::set_permissions(r.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        };
        // A dynamic ELF (the host's sh) whose interpreter the root lacks.
        let sh = fs::read("/bin/sh").unwrap();
        put("sbin/init", &sh);
        let err = check_root(r, "/sbin/init").unwrap_err().to_string();
        assert!(err.contains("interpreter"), "{err}");
        // A script whose interpreter is missing, then present.
        put("sbin/init", b"#!/bin/busybox sh\necho hi\n");
        let err = check_root(r, "/sbin/init").unwrap_err().to_string();
        assert!(err.contains("/bin/busybox"), "{err}");
        fs::create_dir_all(r.join("bin")).unwrap();
        put("bin/busybox", b"#!/sbin/init\n");
        check_root(r, "/sbin/init").unwrap();
        // Neither ELF nor script, and an ELF for another machine.
        put("sbin/init", b"MZ\x90\x00 not for this kernel");
        let err = check_root(r, "/sbin/init").unwrap_err().to_string();
        assert!(err.contains("neither an ELF"), "{err}");
        let mut arm = sh.clone();
        arm[0x12] = 183;
        arm[0x13] = 0;
        put("sbin/init", &arm);
        let err = check_root(r, "/sbin/init").unwrap_err().to_string();
        assert!(err.contains("machine 183"), "{err}");
        put("sbin/init", &sh[..40]);
        assert!(check_root(r, "/sbin/init").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_init_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), elf in proptest::prelude::any::<bool>()) {
            let root = tempfile::tempdir().unwrap();
            let mut data = if elf { b"\x7fELF\x02\x01".to_vec() } else { Vec::new() };
            data.extend_from_slice(&bytes);
            fs::write(root.path().join("init"), &data).unwrap();
            let _ = runnable(root.path(), &root.path().join("init"));
        }
    }

    #[test]
    fn missing_or_looping_init_is_explained() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let err = check_root(r, "/sbin/init").unwrap_err();
        assert!(err.to_string().contains("/sbin/init"), "{err}");
        fs::create_dir_all(r.join("sbin")).unwrap();
        symlink("/sbin/init", r.join("sbin/init")).unwrap();
        let err = check_root(r, "/sbin/init").unwrap_err();
        assert!(err.to_string().contains("symbolic links"), "{err}");
        fs::remove_file(r.join("sbin/init")).unwrap();
        fs::write(r.join("sbin/init"), "not executable").unwrap();
        let err = check_root(r, "/sbin/init").unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
    }
}
