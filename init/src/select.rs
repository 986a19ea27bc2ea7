//! Phase 7, root: which version boots (ARCHITECTURE.md, "Versions and boot state"), or the
//! live medium's image.
//!
//! When the root filesystem carries a boot state (`.terra/state.json` at its top level),
//! stage0 mounts the top level read-write at [`TOP`], chooses, counts and stores *before*
//! the switch, and tries the candidates in order: a version that fails here — subvolume
//! missing, mount refused, init missing, not executable or of a format that cannot run —
//! is marked bad and the next one boots in the same boot. `version=` pins one version and
//! never touches the counters. A filesystem without a state boots `version=`/`os` as it
//! always did.

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::bootstate::{self, BootState, Candidate, StateError, Status, Why};
use crate::config::update::DEFAULT_HEALTH_TIMEOUT;
use crate::config::{BootConfig, Kexec};
use crate::kexec::{self, KernelPlan};
use crate::layout::{SYSROOT, TOP};
use crate::live::{self, LiveError};
use crate::report::outbox::Destination;
use crate::report::{Attempt, KexecReport, RootReport, VersionReport};
use crate::storage::{self, RootDevice, StorageError};
use crate::switch::{self, SwitchError};

/// What mounting the ESP needs: FAT with its default code page and I/O charset.
const ESP_MODULES: [&str; 3] = ["vfat", "nls_cp437", "nls_ascii"];

/// Why no version could be mounted.
#[derive(Debug)]
pub enum SelectError {
    /// The root (without versions) could not be mounted.
    Storage(StorageError),
    /// The root (without versions, or a live one) is unusable.
    Switch(SwitchError),
    /// The live medium's image could not be mounted.
    Live(LiveError),
    /// The pinned version cannot boot; pins never fall back.
    Pinned {
        /// The version.
        name: String,
        /// Why.
        reason: String,
    },
    /// The version a previous stage0 kexecd into cannot boot on its kernel (there is no
    /// fallback on this kernel: the next boot, from the firmware, has one).
    AfterKexec {
        /// The version.
        name: String,
        /// Why.
        reason: String,
        /// What the stored state makes the next boot do instead (the version marked bad,
        /// or its kernel not started again); None when nothing could be stored, and a
        /// reboot would come back here.
        recorded: Option<&'static str>,
    },
    /// Every candidate failed.
    AllFailed {
        /// Each attempt: version, why it was a candidate, why it failed.
        attempts: Vec<Attempt>,
    },
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::Storage(e) => e.fmt(f),
            SelectError::Switch(e) => e.fmt(f),
            SelectError::Live(e) => e.fmt(f),
            SelectError::Pinned { name, reason } => write!(
                f,
                "version {name} (pinned by version=) cannot boot: {reason}"
            ),
            SelectError::AfterKexec {
                name,
                reason,
                recorded,
            } => {
                write!(f, "version {name} cannot boot on its own kernel: {reason}")?;
                match recorded {
                    Some(next) => write!(f, " ({next})"),
                    None => Ok(()),
                }
            }
            SelectError::AllFailed { attempts } => {
                write!(f, "no version can boot:")?;
                for a in attempts {
                    write!(f, " {} ({}): {};", a.name, a.why, a.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SelectError {}

/// What the root phase mounted.
#[derive(Debug)]
pub struct Chosen {
    /// The root at /sysroot.
    pub root: RootReport,
    /// The version, when the filesystem carries versions.
    pub version: Option<VersionReport>,
    /// The controller the disk's node.toml (`.terra/node.toml`) names, when it names one.
    pub disk_controller: Option<Destination>,
    /// The hostname the disk's node.toml names (the node's name to its controller when
    /// the initramfs and the network name none).
    pub disk_hostname: Option<String>,
    /// The init to start: the config's, or the one the chosen version's image names.
    pub init: String,
}

/// The root phase: mounts the root at /sysroot. A live medium (`root=live:…`) carries one
/// root and no boot state, so there is nothing to choose or count; otherwise
/// [`mount_root`].
pub fn mount(
    cfg: &BootConfig,
    dev: &RootDevice,
    load_module: &mut dyn FnMut(&str) -> bool,
) -> Result<Chosen, SelectError> {
    let Some(l) = &cfg.live else {
        return mount_root(cfg, dev, load_module);
    };
    let root = live::mount_root(l, dev, load_module).map_err(SelectError::Live)?;
    switch::check_root(Path::new(SYSROOT), &cfg.init).map_err(SelectError::Switch)?;
    Ok(Chosen {
        root,
        version: None,
        disk_controller: None,
        disk_hostname: None,
        init: cfg.init.clone(),
    })
}

/// Mounts the root at /sysroot: the chosen version when the filesystem has a boot state,
/// else the subvolume the config names. `init` is checked in each candidate.
pub fn mount_root(
    cfg: &BootConfig,
    dev: &RootDevice,
    load_module: &mut dyn FnMut(&str) -> bool,
) -> Result<Chosen, SelectError> {
    let plain = |subvol: &str| -> Result<Chosen, SelectError> {
        let root = storage::mount_at(
            dev,
            SYSROOT,
            &cfg.mount_options_for(&dev.fstype, subvol),
            cfg.read_only,
        )
        .map_err(SelectError::Storage)?;
        switch::check_root(Path::new(SYSROOT), &cfg.init).map_err(SelectError::Switch)?;
        Ok(Chosen {
            root,
            version: None,
            disk_controller: None,
            disk_hostname: None,
            init: cfg.init.clone(),
        })
    };
    if dev.fstype != "btrfs" || cfg.rootflags_name_subvol() {
        return plain(&cfg.subvol);
    }
    if cfg.pinned && !bootstate::valid_name(&cfg.subvol) {
        return Err(SelectError::Pinned {
            name: cfg.subvol.clone(),
            reason: "not a plain subvolume name".into(),
        });
    }
    let top_options = storage::join_options(&cfg.rootflags_options(), "subvolid=5");
    // Read-write to count tries; a write-protected disk or LUN still boots its default,
    // read-only and without counting.
    let writable = match storage::mount_at(dev, TOP, &top_options, false) {
        Ok(_) => true,
        Err(e) => match storage::mount_at(dev, TOP, &top_options, true) {
            Ok(_) => {
                log::warn!(
                    "root: {e}; the top level is read-only: no counting, no tentative version"
                );
                false
            }
            Err(e) => {
                log::warn!("root: no boot state ({e}); booting {}", cfg.subvol);
                return plain(&cfg.subvol);
            }
        },
    };
    let top = Path::new(TOP);
    let chosen = match bootstate::load(top) {
        Ok(Some(state)) => choose(cfg, dev, state, writable, &top_options, load_module),
        Ok(None) => {
            log::debug!("root: no .terra/state.json: booting {}", cfg.subvol);
            unmount(TOP);
            return plain(&cfg.subvol);
        }
        Err(e) => {
            // A state this stage0 cannot use (a newer format, damage): its default is still
            // the best guess when it can be read at all; else the configured subvolume.
            let default = std::fs::read(bootstate::path(top))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["default"].as_str().map(str::to_string))
                .filter(|d| bootstate::valid_name(d) && !cfg.pinned);
            let name = default.unwrap_or_else(|| cfg.subvol.clone());
            log::error!("root: {e}; booting {name} without the boot state");
            unmount(TOP);
            return plain(&name);
        }
    };
    unmount(TOP);
    chosen
}

fn choose(
    cfg: &BootConfig,
    dev: &RootDevice,
    mut state: BootState,
    writable_top: bool,
    top_options: &str,
    load_module: &mut dyn FnMut(&str) -> bool,
) -> Result<Chosen, SelectError> {
    let top = Path::new(TOP);
    let kexeced = match &cfg.kexec {
        // A command line reused after the state changed (a `kexec --reuse-cmdline`, a
        // rollback in between) may name a version that is bad or gone: choose afresh.
        Kexec::Into { version, from }
            if state
                .get(version)
                .is_some_and(|v| matches!(v.status, Status::Good | Status::Tentative)) =>
        {
            Some((version.clone(), from.clone()))
        }
        Kexec::Into { version, .. } => {
            log::warn!("root: terra.kexec.into={version} names no bootable version; choosing");
            None
        }
        _ => None,
    };
    let before = state.clone();
    if kexeced.is_none() {
        if let Some(name) = state.kexec_unfinished() {
            log::warn!(
                "root: the kexec into version {name}'s kernel at the last boot never reached the root; {name} boots on the running kernel from now on"
            );
        }
    }
    let mut candidates = if let Some((name, _)) = &kexeced {
        // Chosen and counted by the stage0 that kexecd into this kernel.
        let why = match state.get(name) {
            _ if cfg.pinned && *name == cfg.subvol => Why::Pinned,
            Some(v) if v.status == Status::Tentative => Why::Tentative,
            _ if *name == state.default => Why::Default,
            _ => Why::LastGood,
        };
        vec![Candidate {
            name: name.clone(),
            why,
        }]
    } else if cfg.pinned {
        vec![Candidate {
            name: cfg.subvol.clone(),
            why: Why::Pinned,
        }]
    } else if !writable_top {
        let mut c = state.clone().begin_boot();
        c.retain(|c| c.why != Why::Tentative);
        c
    } else {
        state.begin_boot()
    };
    // The count must be on disk before the switch: a version that hangs or resets the
    // machine has spent its try. Without it, skip the tentative version. A boot of the
    // default changes nothing and writes nothing.
    if writable_top && state != before {
        if let Err(e) = bootstate::store(top, &mut state) {
            log::error!("root: cannot store the boot state ({e}); not trying a tentative version");
            candidates.retain(|c| c.why != Why::Tentative);
        }
    }
    let mut fallbacks: Vec<Attempt> = Vec::new();
    for c in candidates {
        let version = state.get(&c.name);
        let writable = version.is_some_and(|v| v.writable) && !cfg.read_only;
        let read_only = if version.is_some() {
            !writable
        } else {
            cfg.read_only
        };
        let tries_left = version.map_or(0, |v| v.tries_left);
        let init = cfg
            .init_for(version.and_then(|v| v.init.as_deref()))
            .to_string();
        log::info!("root: trying version {} ({})", c.name, c.why);
        match try_version(cfg, dev, &c.name, read_only, &init) {
            Ok(root) => {
                if !fallbacks.is_empty() {
                    log::warn!(
                        "root: fell back to version {} ({}) after {} failed",
                        c.name,
                        c.why,
                        fallbacks
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    // This version passes the checks the others failed: theirs was their
                    // own fault. Only now are they marked bad, so that a wrong init= that
                    // fails every version marks none.
                    if writable_top {
                        for a in &fallbacks {
                            state.mark_bad(&a.name, &a.reason);
                        }
                        if let Err(e) = bootstate::store(top, &mut state) {
                            log::error!("root: cannot record the failed versions as bad: {e}");
                        }
                    }
                }
                // On the kernel a previous stage0 kexecd into, and mounted: it got here.
                if kexeced.is_some() && writable_top && state.kexec_arrived(&c.name) {
                    if let Err(e) = bootstate::store(top, &mut state) {
                        log::error!(
                            "root: cannot record that the kexec into {} arrived: {e}",
                            c.name
                        );
                    }
                }
                let mut kernel_skipped = None;
                if cfg.kexec == Kexec::Auto {
                    match kexec_into(&c.name, &mut state, writable_top) {
                        Ok(skipped) => kernel_skipped = skipped,
                        Err(reason) => {
                            log::error!(
                                "root: version {} ({}) cannot boot: {reason}",
                                c.name,
                                c.why
                            );
                            unmount(SYSROOT);
                            fallbacks.push(Attempt {
                                name: c.name,
                                why: c.why,
                                reason,
                            });
                            continue;
                        }
                    }
                }
                let tentative = c.why == Why::Tentative;
                if tentative
                    && top
                        .join(bootstate::STATE_DIR)
                        .join(crate::esp::ESP_FILE)
                        .is_file()
                {
                    // The confirmation brings the disk's ESP to this version, in a root
                    // that may have neither these modules (a version without a kernel
                    // runs on the initramfs's) nor a modprobe for the kernel to call.
                    for m in ESP_MODULES {
                        load_module(m);
                    }
                }
                // Beneath the persistent /etc overlay, which takes /etc as it is then.
                let extensions =
                    crate::extensions::overlay::apply(top, Path::new(SYSROOT), load_module);
                let node = crate::persist::disk_node(top);
                let mounts = node.as_ref().map_or_else(Vec::new, |n| {
                    crate::persist::mount(n, top, dev, read_only, load_module)
                });
                // For the confirmation's health checks (bless reads it from boot.json).
                let health_timeout = tentative.then(|| {
                    node.as_ref()
                        .and_then(|n| n.update.health_timeout)
                        .unwrap_or(DEFAULT_HEALTH_TIMEOUT)
                });
                let confirm = if tentative {
                    crate::bless::install(Path::new(SYSROOT))
                } else {
                    None
                };
                if tentative {
                    log::info!(
                        "root: version {} is tentative ({tries_left} tries left after this boot); the booted system confirms it",
                        c.name
                    );
                }
                let (image, digest) = state
                    .get(&c.name)
                    .map(|v| (v.image.clone(), v.digest.clone()))
                    .unwrap_or_default();
                // Read while the top level is mounted: the token is in its `.terra`.
                let disk_controller = node.as_ref().and_then(|n| {
                    Destination::load(&n.controller, &top.join(bootstate::STATE_DIR))
                        .map_err(|e| log::warn!("root: no boot report: {e}"))
                        .ok()
                        .flatten()
                });
                return Ok(Chosen {
                    root,
                    disk_controller,
                    disk_hostname: node.as_ref().and_then(|n| n.hostname.clone()),
                    init,
                    version: Some(VersionReport {
                        image,
                        digest,
                        name: c.name,
                        why: c.why,
                        tentative,
                        tries_left,
                        fallbacks,
                        generation: state.generation,
                        top_options: storage::join_options(&dev.options, top_options),
                        confirm,
                        mounts,
                        extensions,
                        kernel_skipped,
                        health_timeout,
                        kexec: kexeced
                            .and_then(|(_, from)| from)
                            .map(|(r, ms)| KexecReport {
                                from_release: r,
                                first_boot_ms: ms,
                                release: kexec::running_release(),
                            }),
                    }),
                });
            }
            Err(reason) => {
                log::error!("root: version {} ({}) cannot boot: {reason}", c.name, c.why);
                if kexeced.is_some() {
                    // Its kernel got here (the root was found) and the version passed the
                    // same checks on the kernel before: the kernel is at fault. Marked bad,
                    // or, when it cannot be (pinned, the only good one), its kernel is not
                    // started again; either way the reboot does not come back here.
                    state.kexec_arrived(&c.name);
                    let recorded = if c.why != Why::Pinned && state.mark_bad(&c.name, &reason) {
                        "marked bad: the next boot chooses another version"
                    } else {
                        state.kernel_failed(&c.name, &format!("on its own kernel: {reason}"));
                        "its kernel is not started again: the next boot runs it on the machine's kernel"
                    };
                    let stored = writable_top && bootstate::store(top, &mut state).is_ok();
                    return Err(SelectError::AfterKexec {
                        name: c.name,
                        reason,
                        recorded: stored.then_some(recorded),
                    });
                }
                if c.why == Why::Pinned {
                    return Err(SelectError::Pinned {
                        name: c.name,
                        reason,
                    });
                }
                fallbacks.push(Attempt {
                    name: c.name,
                    why: c.why,
                    reason,
                });
            }
        }
    }
    Err(SelectError::AllFailed {
        attempts: fallbacks,
    })
}

/// When the version mounted at /sysroot carries a kernel other than the running one
/// ([`kexec::plan`]): loads it, records the kexec in the state (stored) and reboots into
/// it (no return). Ok(None) when it boots on the running kernel as planned, Ok(Some(why))
/// when it does although it carries another kernel; Err(reason) when its kernel cannot be
/// started, a failure of this version like a missing init.
fn kexec_into(
    name: &str,
    state: &mut BootState,
    writable_top: bool,
) -> Result<Option<String>, String> {
    let root = Path::new(SYSROOT);
    let running = kexec::running_release();
    let failed = state.get(name).and_then(|v| v.kernel_failed.clone());
    let carried = kexec::carried_release(root);
    let release = match kexec::plan(
        carried.as_deref(),
        &running,
        failed.as_deref(),
        writable_top,
    ) {
        KernelPlan::Running => return Ok(None),
        KernelPlan::RunningInstead(why) => {
            log::warn!("root: version {name} boots on the running kernel {running}: {why}");
            return Ok(Some(why));
        }
        KernelPlan::Kexec(release) => release,
    };
    let current = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let uptime = crate::report::uptime_ms() as u64;
    let line = kexec::next_cmdline(current.trim(), name, &running, uptime);
    log::info!("root: version {name} carries kernel {release} (running {running}): kexec");
    match kexec::load(root, &line) {
        Ok(()) => {}
        // Not this version's fault: it boots on the running kernel.
        Err(e) if e.is_environment() => {
            log::warn!("root: {e}; version {name} boots on the running kernel {running}");
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    }
    // On disk before the kernel goes, with the try counted and the versions marked bad
    // before it: a kernel that never reaches the root is then found out by the next boot.
    state.kexec_started(name);
    if let Err(e) = bootstate::store(Path::new(TOP), state) {
        state.kexec_pending = None;
        let why = format!("the kexec into kernel {release} could not be recorded ({e})");
        log::error!("root: {why}; version {name} boots on the running kernel {running}");
        return Ok(Some(why));
    }
    if let Ok(top) = std::fs::File::open(TOP) {
        if let Err(e) = nix::unistd::syncfs(top.as_raw_fd()) {
            log::warn!("root: syncfs of {TOP}: {e}");
        }
    }
    nix::unistd::sync();
    let err = kexec::exec();
    // Still here: no kernel went, so none is missing at the next boot.
    state.kexec_pending = None;
    Err(format!("reboot into kernel {release} failed: {err}"))
}

/// Mounts version `name` at /sysroot and checks its init; on failure nothing stays
/// mounted and the reason is returned.
fn try_version(
    cfg: &BootConfig,
    dev: &RootDevice,
    name: &str,
    read_only: bool,
    init: &str,
) -> Result<RootReport, String> {
    if !Path::new(TOP).join(name).is_dir() {
        return Err(format!("subvolume {name} is missing"));
    }
    let root = storage::mount_at(
        dev,
        SYSROOT,
        &cfg.mount_options_for(&dev.fstype, name),
        read_only,
    )
    .map_err(|e| e.to_string())?;
    if let Err(e) = switch::check_root(Path::new(SYSROOT), init) {
        unmount(SYSROOT);
        return Err(e.to_string());
    }
    Ok(root)
}

fn unmount(path: &str) {
    if let Err(e) = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        log::warn!("cannot unmount {path}: {e}");
    }
}

/// After the switch, exec of the chosen version's init failed: mark it bad (unless it
/// was pinned) so the next boot falls back. `/run` is the real root's now, so the top
/// level is mounted there again. Returns whether the state was changed.
pub fn exec_failed(root: &RootReport, version: &VersionReport, reason: &str) -> bool {
    if version.why == Why::Pinned {
        return false;
    }
    let marked = bootstate::with_top(&root.device, &version.top_options, |top| {
        let mut state = bootstate::load(top)?
            .ok_or_else(|| StateError::Refused("the boot state disappeared".into()))?;
        // The last good version is never marked bad: rebooting into it again would loop.
        if !state.mark_bad(&version.name, reason) {
            return Ok(false);
        }
        bootstate::store(top, &mut state).map(|()| true)
    });
    match marked {
        Ok(true) => {
            log::error!("root: version {} marked bad: {reason}", version.name);
            true
        }
        Ok(false) => {
            log::error!(
                "root: version {} is the last good one; not rebooting",
                version.name
            );
            false
        }
        Err(e) => {
            log::error!("root: cannot mark version {} bad: {e}", version.name);
            false
        }
    }
}
