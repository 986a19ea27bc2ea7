//! Confirmation: the booted system says whether the version it runs is good.
//!
//! When a tentative version boots, stage0 leaves a copy of itself at [`PROGRAM`] (stage0
//! is a multi-call binary: run as anything but PID 1 it is this command) and, for systemd
//! roots, a runtime unit in `/run/systemd/system` ordered after `boot-complete.target` and
//! `multi-user.target`, so greenboot-style health checks (`RequiredBy=boot-complete.target`)
//! gate the confirmation and nothing in the image has to change. Other inits call
//! `/run/terra/bless good` once they are up. The command mounts the root filesystem's top
//! level in a private mount namespace and changes the boot state there.

use std::io::Write;
use std::path::Path;

use crate::bootstate::{self, StateError};
use crate::esp;
use crate::layout::{BLESS_PROGRAM as PROGRAM, BOOT_REPORT, INIT};

/// systemd's runtime unit directory.
pub const UNIT_DIR: &str = "/run/systemd/system";
/// The unit that runs [`PROGRAM`] once the boot is complete.
pub const UNIT: &str = "terra-bless.service";

const UNIT_TEXT: &str = "\
# Written by Terra's stage0: this boot runs a tentative root version. Confirming it makes
# it the default; health checks that are RequiredBy=boot-complete.target gate this.
[Unit]
Description=Confirm the Terra root version this boot runs
DefaultDependencies=no
Requires=boot-complete.target
After=boot-complete.target multi-user.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/run/terra/bless good
StandardOutput=journal+console
";

/// Leaves [`PROGRAM`] in /run (before the switch) and, when the root at `root` runs
/// systemd, its unit: `/run/systemd/system` existing tells programs that systemd is PID 1,
/// which would mislead them under another init. Returns the command the real system
/// runs, or None when stage0 could not leave itself there.
pub fn install(root: &Path) -> Option<String> {
    if let Err(e) = leave_program() {
        log::error!("cannot leave {PROGRAM} for the confirmation: {e}");
        return None;
    }
    let systemd = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
        .iter()
        .any(|p| crate::switch::resolve_in_root(root, p).is_ok_and(|p| p.is_file()));
    if !systemd {
        return Some(format!("{PROGRAM} good"));
    }
    let unit = Path::new(UNIT_DIR).join(UNIT);
    let wants = Path::new(UNIT_DIR).join("multi-user.target.wants");
    let unit_written = std::fs::create_dir_all(&wants)
        .and_then(|()| std::fs::write(&unit, UNIT_TEXT))
        .and_then(|()| std::os::unix::fs::symlink(format!("../{UNIT}"), wants.join(UNIT)));
    if let Err(e) = unit_written {
        log::warn!("cannot write {}: {e}", unit.display());
    }
    Some(format!("{PROGRAM} good"))
}

/// Makes [`PROGRAM`] this stage0 without copying it: a read-only bind mount of the
/// initramfs's `/init` on an empty file in /run. The mount moves with /run into the real
/// root, and it keeps the file after the switch empties the initramfs (the inode lives as
/// long as the mount; a copy in tmpfs would hold the same memory). A copy (1.9 MB, the
/// cost of a tentative boot before) only when the kernel refuses the bind mount.
fn leave_program() -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let program = Path::new(PROGRAM);
    if let Some(dir) = program.parent() {
        std::fs::create_dir_all(dir)?;
    }
    drop(std::fs::File::create(program)?);
    let init = format!("/{INIT}");
    let bound = mount(
        Some(init.as_str()),
        PROGRAM,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    );
    match bound {
        Ok(()) => {
            // Read-only: the running system must not write into the program every
            // confirmation runs. A failure leaves it writable, which root could change anyway.
            let _ = mount(
                None::<&str>,
                PROGRAM,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            Ok(())
        }
        Err(e) => {
            log::warn!("cannot bind {init} to {PROGRAM} ({e}); copying it");
            std::fs::copy(&init, program).map(|_| ())
        }
    }
}

/// Good or bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Make the booted version good and the default.
    Good,
    /// Make it bad: the next boot falls back.
    Bad,
}

impl Verdict {
    /// Parses `good`/`bad`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "good" => Some(Verdict::Good),
            "bad" => Some(Verdict::Bad),
            _ => None,
        }
    }
}

/// What the boot report says about the running version: root device, version name and
/// the top level's mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    /// Root device node.
    pub device: String,
    /// The booted version.
    pub name: String,
    /// Mount options of the top level.
    pub top_options: String,
}

/// Reads the booted version from boot report bytes.
pub fn booted_from_report(bytes: &[u8]) -> Result<Booted, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{BOOT_REPORT}: {e}"))?;
    let text = |ptr: &str| {
        v.pointer(ptr)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{BOOT_REPORT}: no {ptr}: this boot did not choose a version"))
    };
    Ok(Booted {
        device: text("/root/device")?,
        name: text("/version/name")?,
        top_options: text("/version/top_options")?,
    })
}

/// Records `verdict` for the booted version, in a private mount namespace. Returns what
/// was done, for the user.
pub fn bless(verdict: Verdict) -> Result<String, String> {
    let report = std::fs::read(BOOT_REPORT).map_err(|e| format!("{BOOT_REPORT}: {e}"))?;
    let booted = booted_from_report(&report)?;
    private_mounts()?;
    let name = booted.name.clone();
    bootstate::with_top(&booted.device, &booted.top_options, |top| {
        // Wait for a `terra` that is changing the versions (it holds this lock), so that
        // neither overwrites the other's change.
        let lock_path = top.join(bootstate::STATE_DIR).join("lock");
        let lock = std::fs::File::create(&lock_path).map_err(|err| StateError::Io {
            path: lock_path.clone(),
            err,
        })?;
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            StateError::Io {
                path: lock_path.clone(),
                err: std::io::Error::other(format!("flock: {e}")),
            }
        })?;
        let mut state = bootstate::load(top)?
            .ok_or_else(|| StateError::Refused("the root filesystem has no boot state".into()))?;
        let message = match verdict {
            Verdict::Good => {
                if state.confirm(&name)? {
                    format!("version {name} confirmed: it is the default now")
                } else {
                    return Ok(format!("version {name} is already good; nothing to do"));
                }
            }
            Verdict::Bad => {
                state.reject(Some(&name), "rejected by the booted system")?;
                format!(
                    "version {name} rejected: the next boot runs {}",
                    state.default
                )
            }
        };
        bootstate::store(top, &mut state)?;
        Ok(message + &follow_esp(top, &state.default))
    })
    .map_err(|e| e.to_string())
}

/// Where [`follow_esp`] mounts the ESP, inside this command's private mount namespace.
const ESP_MOUNT: &str = "/run/terra/esp";

/// Brings the disk's ESP (when it boots from one) to the default just stored. A failure
/// is said, not returned: the state is the truth, and the next sync (any `terra` command
/// on the disk, or the next confirmation) catches up. Returns a note when the ESP changed.
fn follow_esp(top: &Path, default: &str) -> String {
    match esp::with_esp(top, Path::new(ESP_MOUNT), |mnt| {
        esp::sync(top, mnt, default)
    }) {
        Ok(Some(true)) => format!("; the ESP boots {default} now"),
        Ok(_) => String::new(),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "terra: bless: warning: the ESP was not brought to {default}: {e}"
            );
            String::new()
        }
    }
}

/// A mount namespace of our own, so the top level never shows in the system's mounts.
fn private_mounts() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))
}

const USAGE: &str = "usage: bless [good|bad]   (also: stage0 bless [good|bad])
Confirms (good, the default) or rejects (bad) the Terra root version this boot runs.";

/// The multi-call entry: `bless [good|bad]` or `<anything> bless [good|bad]`. Returns
/// the exit code.
pub fn main(args: &[String]) -> i32 {
    let called_bless = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "bless");
    let rest: &[String] = match (called_bless, args.get(1).map(String::as_str)) {
        (true, _) => args.get(1..).unwrap_or_default(),
        (false, Some("bless")) => args.get(2..).unwrap_or_default(),
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    let verdict = match rest {
        [] => Verdict::Good,
        [v] => match Verdict::parse(v) {
            Some(v) => v,
            None => {
                eprintln!("{USAGE}");
                return 2;
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match bless(verdict) {
        Ok(msg) => {
            let _ = writeln!(std::io::stdout(), "terra: {msg}");
            0
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "terra: bless: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_booted_version_or_says_why_not() {
        let ok =
            br#"{"root":{"device":"/dev/vda"},"version":{"name":"v2","top_options":"subvolid=5"}}"#;
        assert_eq!(
            booted_from_report(ok).unwrap(),
            Booted {
                device: "/dev/vda".into(),
                name: "v2".into(),
                top_options: "subvolid=5".into()
            }
        );
        let err =
            booted_from_report(br#"{"root":{"device":"/dev/vda"},"version":null}"#).unwrap_err();
        assert!(err.contains("/version/name"), "{err}");
        assert!(booted_from_report(b"{").is_err());
    }
}
