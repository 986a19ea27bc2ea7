//! Boot configuration: the embedded `node.toml` (ARCHITECTURE.md §4) overlaid by the kernel
//! command line (§5). The builder uses the same [`NodeConfig`] type to validate what it embeds.
//!
//! The schema flows one way: the tables of node.toml are plain data defined here (`[network]`
//! in [`network`], `[iscsi]` in [`iscsi`], `[update]` in [`update`], `[controller]` in
//! [`controller`]); the phases read them and own what they mean.
//! Nothing under `config` names a phase module.

pub mod controller;
pub mod iscsi;
pub mod network;
pub mod update;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cmdline::{self, Param};

/// `node.toml`: a machine's identity, disk groups and boot settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Host name for the real system.
    pub hostname: Option<String>,
    /// Identity for PXE and provisioning.
    pub mac: Option<String>,
    /// OCI image reference that becomes the root.
    pub image: Option<String>,
    /// btrfs disk groups.
    #[serde(default)]
    pub groups: Vec<Group>,
    /// How stage0 boots this node.
    #[serde(default)]
    pub boot: BootSection,
    /// `[network]`: interfaces, DNS and the phase's bound (network phase).
    #[serde(default)]
    pub network: network::NetworkSection,
    /// `[iscsi]`: initiator name and targets (iscsi phase).
    #[serde(default)]
    pub iscsi: iscsi::IscsiSection,
    /// `[signature]`: the keys images must be signed by (terra install and upgrade).
    #[serde(default)]
    pub signature: SignatureSection,
    /// `[update]`: how the node updates itself (terra update) and confirms (health checks).
    #[serde(default)]
    pub update: update::UpdateSection,
    /// `[controller]`: the fleet controller the node reports its boots to.
    #[serde(default)]
    pub controller: controller::ControllerSection,
    /// `[[extensions]]`: images `terra extension add` overlays on `/usr` (and `/etc`).
    /// stage0 ignores the list: it applies what is on the disk (`.terra/extensions/`).
    #[serde(default)]
    pub extensions: Vec<Extension>,
}

/// One `[[extensions]]` entry: an extension image (checked like the root under
/// `[signature]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// OCI image reference of the extension.
    pub image: String,
}

/// `[signature]`: which cosign keys the node's images must be signed by. `terra install`
/// checks the image with them and keeps them on the disk (`.terra/keys/`), so that every
/// `terra upgrade` of that disk is checked with the keys the node was installed with.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignatureSection {
    /// PEM public keys (ECDSA P-256, PKIX), relative to node.toml's directory; any one
    /// suffices.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Refuse to install or upgrade without a key to check with.
    #[serde(default)]
    pub require: bool,
}

/// A btrfs disk group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Filesystem label; the group labelled `os` holds the root.
    pub label: String,
    /// Data profile: single, raid0, raid1, raid5, raid10.
    #[serde(default = "default_profile", rename = "type")]
    pub profile: String,
    /// Provisioning stage (Terra OS).
    pub stage: Option<String>,
    /// Whether the disks get an MBR.
    #[serde(default)]
    pub mbr: bool,
    /// Member disks.
    #[serde(default)]
    pub disk: Vec<Disk>,
    /// Subvolumes and where they mount.
    #[serde(default)]
    pub subvolumes: Vec<Subvolume>,
}

fn default_profile() -> String {
    "single".into()
}

/// One member of a disk group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// A block device or an image file.
    pub device: String,
    /// Size in MB for image files and LUNs.
    pub size: Option<u64>,
}

/// A subvolume of a disk group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subvolume {
    /// Subvolume name.
    pub name: String,
    /// Mount point in the real root.
    pub path: String,
}

/// `[boot]`: defaults that the kernel command line may override.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// Like `root=`.
    pub root: Option<String>,
    /// Like `version=`: the root subvolume; on a filesystem with versions it pins that
    /// version (no counting, no fallback).
    pub version: Option<String>,
    /// The subvolume that keeps the `/etc` overlay's upper directory for read-only
    /// versions (default `persist`, when the disk has it); `""` turns the overlay off.
    /// Read from the node.toml `terra install` keeps on the disk.
    pub etc_overlay: Option<String>,
    /// Like `init=`.
    pub init: Option<String>,
    /// Like `terra.timeout=`, seconds.
    pub timeout: Option<u64>,
    /// Like `terra.rescue=`.
    pub rescue: Option<String>,
    /// Like `terra.modules=`.
    #[serde(default)]
    pub modules: Vec<String>,
}

/// Which block device holds the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `LABEL=`
    Label(String),
    /// `UUID=`
    Uuid(String),
    /// `PARTUUID=`
    PartUuid(String),
    /// `PARTLABEL=`
    PartLabel(String),
    /// `/dev/…`
    Path(String),
}

impl fmt::Display for RootSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSpec::Label(v) => write!(f, "LABEL={v}"),
            RootSpec::Uuid(v) => write!(f, "UUID={v}"),
            RootSpec::PartUuid(v) => write!(f, "PARTUUID={v}"),
            RootSpec::PartLabel(v) => write!(f, "PARTLABEL={v}"),
            RootSpec::Path(v) => write!(f, "{v}"),
        }
    }
}

impl RootSpec {
    /// Parses a `root=` value.
    pub fn parse(v: &str) -> Option<Self> {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        if let Some(s) = v.strip_prefix("LABEL=") {
            nonempty(s).map(RootSpec::Label)
        } else if let Some(s) = v.strip_prefix("UUID=") {
            nonempty(s).map(|s| RootSpec::Uuid(s.to_ascii_lowercase()))
        } else if let Some(s) = v.strip_prefix("PARTUUID=") {
            nonempty(s).map(|s| RootSpec::PartUuid(s.to_ascii_lowercase()))
        } else if let Some(s) = v.strip_prefix("PARTLABEL=") {
            nonempty(s).map(RootSpec::PartLabel)
        } else if v.starts_with("/dev/") && v.len() > 5 {
            Some(RootSpec::Path(v.to_string()))
        } else {
            None
        }
    }
}

/// A live root (`root=live:…`): where the squashfs image is on the medium
/// (`rd.live.dir=`, `rd.live.squashimg=`, dracut's keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Directory on the medium.
    pub dir: String,
    /// Image file name in it.
    pub image: String,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            dir: "LiveOS".into(),
            image: "squashfs.img".into(),
        }
    }
}

/// Parses a `root=` value that may be a live medium: `live:LABEL=…`, `live:CDLABEL=…`
/// (dracut's name for an ISO's label), `live:UUID=…`, `live:/dev/…`. Returns the medium
/// and whether it is live.
fn parse_root(v: &str) -> Option<(RootSpec, bool)> {
    match v.strip_prefix("live:") {
        Some(m) => {
            let m = m
                .strip_prefix("CD")
                .filter(|m| m.starts_with("LABEL="))
                .unwrap_or(m);
            RootSpec::parse(m).map(|r| (r, true))
        }
        None => RootSpec::parse(v).map(|r| (r, false)),
    }
}

/// What stage0 does when the boot fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RescueAction {
    /// Run the rescue shell when the image has one, else halt.
    Shell,
    /// Reboot the machine.
    Reboot,
    /// Power off.
    Halt,
}

impl RescueAction {
    fn parse(v: &str) -> Option<Self> {
        match v {
            "shell" => Some(Self::Shell),
            "reboot" => Some(Self::Reboot),
            "halt" | "poweroff" => Some(Self::Halt),
            _ => None,
        }
    }
}

/// Everything stage0 needs to know to boot, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BootConfig {
    /// The root device.
    pub root: RootSpec,
    /// `rootfstype=`; None means "as probed".
    pub rootfstype: Option<String>,
    /// `rootflags=` as given.
    pub rootflags: Option<String>,
    /// The btrfs subvolume to mount when `rootflags=` names none.
    pub subvol: String,
    /// Whether `version=` or `[boot] version` named [`BootConfig::subvol`]: on a
    /// filesystem with versions that pins it.
    pub pinned: bool,
    /// Mount the root read-only (`ro`, the default as with dracut) or read-write (`rw`).
    pub read_only: bool,
    /// The real init.
    pub init: String,
    /// Whether node.toml or `init=` named [`BootConfig::init`]: otherwise a version's
    /// image may name its own ([`BootConfig::init_for`]).
    pub init_given: bool,
    /// How long to wait for the root device.
    pub timeout: Duration,
    /// What to do on failure.
    pub rescue: RescueAction,
    /// Modules to load before looking for devices.
    pub modules: Vec<String>,
    /// Debug logging.
    pub debug: bool,
    /// The host name to set: `hostname=` (Terra OS's key; the last non-empty one wins),
    /// else node.toml's `hostname`.
    pub hostname: Option<String>,
    /// Kernels carried by versions (`terra.kexec=`).
    pub kexec: Kexec,
    /// A live root (`root=live:…`): [`BootConfig::root`] is the medium.
    pub live: Option<Live>,
    /// The node config, when the image embeds one.
    pub node: NodeConfig,
}

/// `terra.kexec=`: what stage0 does with a kernel a version carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Kexec {
    /// A version whose kernel is not the running one is booted on its kernel (kexec).
    #[default]
    Auto,
    /// `terra.kexec=off`: every version boots on the running kernel.
    Off,
    /// `terra.kexec.into=<version>`: this boot is the kexec a previous stage0 made into
    /// that version's kernel: it boots that version, counts nothing and kexecs no further.
    Into {
        /// The version.
        version: String,
        /// `terra.kexec.from=<release>@<ms>`: the kernel that chose it and how long that
        /// boot took (ms since its kernel started) up to the kexec.
        from: Option<(String, u64)>,
    },
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A kernel command line key has an invalid value.
    Key {
        /// The key, e.g. `terra.timeout`.
        key: String,
        /// The value given.
        value: String,
        /// What is expected (and, for a key with parts, which part was wrong).
        expected: std::borrow::Cow<'static, str>,
    },
    /// Network links that cannot be made together (a member in two bonds, a name given
    /// twice…), from the keys or tables named.
    Links {
        /// Where they came from, e.g. `bond=/bondslaves=, vlan=`.
        what: String,
        /// What is wrong, naming the link.
        problem: String,
    },
    /// node.toml cannot be read or does not parse.
    Node {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key, line and column).
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Key {
                key,
                value,
                expected,
            } => write!(f, "invalid {key}={value:?}: expected {expected}"),
            ConfigError::Links { what, problem } => write!(f, "invalid {what}: {problem}"),
            ConfigError::Node { path, message } => {
                write!(f, "invalid {}: {}", path.display(), message.trim_end())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl NodeConfig {
    /// Parses node.toml text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Node {
            path: path.to_path_buf(),
            // The parser quotes the offending line: never one holding a CHAP secret.
            message: iscsi::redact_toml_error(&e.to_string()),
        })?;
        if let Some(url) = &cfg.controller.url {
            controller::ControllerUrl::parse(url).map_err(|e| ConfigError::Node {
                path: path.to_path_buf(),
                message: format!("controller.url: {url:?}: {e}"),
            })?;
        }
        Ok(cfg)
    }

    /// Reads node.toml; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ConfigError::Node {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }
}

/// What `root=` takes, for errors.
const ROOT_FORMS: &str =
    "LABEL=, UUID=, PARTUUID=, PARTLABEL=, /dev/… or live: followed by one of them (or CDLABEL=)";

/// Default wait for the root device.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default root subvolume and disk label (Terra OS's layout).
pub const DEFAULT_ROOT_NAME: &str = "os";
/// Default real init.
pub const DEFAULT_INIT: &str = "/sbin/init";

impl BootConfig {
    /// The init to start in a version whose image names `image_init` (the
    /// `org.terra.init` label `terra create` records): node.toml's or the kernel line's
    /// when given, else the image's, else [`DEFAULT_INIT`].
    pub fn init_for<'a>(&'a self, image_init: Option<&'a str>) -> &'a str {
        match image_init {
            Some(i) if !self.init_given => i,
            _ => &self.init,
        }
    }

    /// Overlays the command line on the node config and validates the result.
    pub fn resolve(node: NodeConfig, cmdline: &str) -> Result<Self, ConfigError> {
        let bad = |p: &Param, expected: &'static str| ConfigError::Key {
            key: p.key.clone(),
            value: p.value.clone().unwrap_or_default(),
            expected: expected.into(),
        };
        let boot = node.boot.clone();
        let mut root = None;
        let mut disk_label = None;
        let mut rootfstype = None;
        let mut rootflags = None;
        let mut version = boot.version.clone();
        let mut read_only = true;
        let mut init = boot.init.clone();
        let mut timeout = boot.timeout.map(Duration::from_secs);
        let mut rescue = None;
        let mut modules = boot.modules.clone();
        let mut debug = false;
        let mut hostname = None;
        let mut kexec = Kexec::Auto;
        let mut kexec_from = None;
        let mut live = false;
        let (mut live_dir, mut live_image) = (None, None);
        if let Some(r) = &boot.root {
            let (spec, is_live) = parse_root(r).ok_or_else(|| ConfigError::Node {
                path: PathBuf::from(crate::layout::NODE_CONFIG),
                message: format!("boot.root = {r:?}: expected {ROOT_FORMS}"),
            })?;
            (root, live) = (Some(spec), is_live);
        }
        if let Some(r) = &boot.rescue {
            rescue = Some(RescueAction::parse(r).ok_or_else(|| ConfigError::Node {
                path: PathBuf::from(crate::layout::NODE_CONFIG),
                message: format!("boot.rescue = {r:?}: expected shell, reboot or halt"),
            })?);
        }
        for p in cmdline::split(cmdline) {
            let v = p.value.as_deref();
            match (p.key.as_str(), v) {
                ("root", Some(s)) => {
                    let (spec, is_live) = parse_root(s).ok_or_else(|| bad(&p, ROOT_FORMS))?;
                    (root, live) = (Some(spec), is_live);
                }
                ("rd.live.dir", Some(s)) => live_dir = Some(s.to_string()),
                ("rd.live.squashimg", Some(s)) if !s.is_empty() && !s.contains('/') => {
                    live_image = Some(s.to_string())
                }
                ("rd.live.squashimg", _) => return Err(bad(&p, "a file name")),
                ("disk_label", Some(s)) if !s.is_empty() => disk_label = Some(s.to_string()),
                ("rootfstype", Some(s)) if !s.is_empty() => rootfstype = Some(s.to_string()),
                ("rootflags", Some(s)) => rootflags = Some(s.to_string()),
                ("version", Some(s)) if valid_subvol(s) => version = Some(s.to_string()),
                ("ro", None) => read_only = true,
                ("rw", None) => read_only = false,
                ("init", Some(s)) if s.starts_with('/') => init = Some(s.to_string()),
                ("terra.timeout", Some(s)) => {
                    let secs: u64 = s.parse().map_err(|_| bad(&p, "whole seconds"))?;
                    timeout = Some(Duration::from_secs(secs));
                }
                ("terra.rescue", Some(s)) => {
                    rescue = Some(
                        RescueAction::parse(s).ok_or_else(|| bad(&p, "shell, reboot or halt"))?,
                    )
                }
                ("rd.shell", None | Some("1")) if rescue.is_none() => {
                    rescue = Some(RescueAction::Shell)
                }
                ("rd.shell", Some("0")) if rescue.is_none() => rescue = Some(RescueAction::Halt),
                ("terra.modules", Some(s)) => {
                    modules.extend(s.split(',').filter(|m| !m.is_empty()).map(str::to_string))
                }
                ("hostname", Some(s)) if !s.is_empty() => hostname = Some(s.to_string()),
                ("terra.debug", None | Some("1")) => debug = true,
                ("terra.debug", Some("0")) => debug = false,
                ("terra.kexec", Some("off")) => kexec = Kexec::Off,
                ("terra.kexec", Some("on")) => kexec = Kexec::Auto,
                ("terra.kexec.into", Some(s)) if valid_subvol(s) => {
                    kexec = Kexec::Into {
                        version: s.to_string(),
                        from: None,
                    }
                }
                ("terra.kexec.from", Some(s)) => {
                    kexec_from = s
                        .rsplit_once('@')
                        .and_then(|(r, ms)| Some((r.to_string(), ms.parse().ok()?)))
                        .filter(|(r, _)| !r.is_empty());
                    if kexec_from.is_none() {
                        return Err(bad(&p, "<kernel release>@<milliseconds>"));
                    }
                }
                // Keys we own, with values we cannot use.
                ("disk_label" | "rootfstype", _) => return Err(bad(&p, "a non-empty name")),
                ("version", _) => return Err(bad(&p, "a subvolume name without '/' or ','")),
                ("terra.kexec", _) => return Err(bad(&p, "on or off")),
                ("terra.kexec.into", _) => return Err(bad(&p, "a version name")),
                ("init", _) => return Err(bad(&p, "an absolute path")),
                ("terra.debug" | "ro" | "rw", Some(_)) => return Err(bad(&p, "no value")),
                ("rd.shell", Some(_)) => return Err(bad(&p, "0 or 1")),
                (
                    "root" | "rootflags" | "terra.timeout" | "terra.rescue" | "terra.modules"
                    | "terra.kexec.from" | "rd.live.dir",
                    None,
                ) => return Err(bad(&p, "a value")),
                _ => {}
            }
        }
        let root = root
            .or_else(|| disk_label.map(RootSpec::Label))
            .unwrap_or_else(|| RootSpec::Label(DEFAULT_ROOT_NAME.into()));
        Ok(BootConfig {
            root,
            rootfstype,
            rootflags,
            pinned: version.is_some(),
            subvol: version.unwrap_or_else(|| DEFAULT_ROOT_NAME.into()),
            read_only,
            init_given: init.is_some(),
            init: init.unwrap_or_else(|| DEFAULT_INIT.into()),
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            rescue: rescue.unwrap_or(RescueAction::Shell),
            modules,
            debug,
            hostname: hostname.or_else(|| node.hostname.clone()),
            kexec: match kexec {
                Kexec::Into { version, .. } => Kexec::Into {
                    version,
                    from: kexec_from,
                },
                k => k,
            },
            live: live.then(|| {
                let d = Live::default();
                Live {
                    dir: live_dir.unwrap_or(d.dir),
                    image: live_image.unwrap_or(d.image),
                }
            }),
            node,
        })
    }

    /// The module (alias) of the root's filesystem as far as it is known before the device is
    /// found: `rootfstype=`, else btrfs, the filesystem of Terra's layout. stage0 starts
    /// loading it early; when the guess is wrong (and the module is packed at all) the cost
    /// is a module loaded in parallel for nothing.
    pub fn expected_fs_module(&self) -> String {
        // A live medium is most often an ISO 9660.
        let guess = if self.live.is_some() {
            "iso9660"
        } else {
            "btrfs"
        };
        format!("fs-{}", self.rootfstype.as_deref().unwrap_or(guess))
    }

    /// Mount options for the root: `rootflags=` plus, for btrfs, the subvolume unless
    /// `rootflags=` already picks one.
    pub fn mount_options(&self, fstype: &str) -> String {
        self.mount_options_for(fstype, &self.subvol)
    }

    /// `rootflags=` as a clean option list, without anything added.
    pub fn rootflags_options(&self) -> String {
        self.rootflags
            .as_deref()
            .map(|f| f.split(',').filter(|o| !o.is_empty()).collect::<Vec<_>>())
            .unwrap_or_default()
            .join(",")
    }

    /// Whether `rootflags=` picks the subvolume itself (then versions do not apply).
    pub fn rootflags_name_subvol(&self) -> bool {
        self.rootflags_options()
            .split(',')
            .any(|o| o.starts_with("subvol=") || o.starts_with("subvolid="))
    }

    /// Mount options for subvolume `subvol`: `rootflags=` plus, for btrfs, the subvolume
    /// unless `rootflags=` already picks one.
    pub fn mount_options_for(&self, fstype: &str, subvol: &str) -> String {
        let flags = self.rootflags_options();
        if fstype != "btrfs" || self.rootflags_name_subvol() {
            return flags;
        }
        let subvol = format!("subvol={subvol}");
        if flags.is_empty() {
            subvol
        } else {
            format!("{flags},{subvol}")
        }
    }
}

fn valid_subvol(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', ',']) && s != "." && s != ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resolve(cmdline: &str) -> Result<BootConfig, ConfigError> {
        BootConfig::resolve(NodeConfig::default(), cmdline)
    }

    #[test]
    fn an_image_names_its_init_unless_node_toml_or_the_line_does() {
        let image = Some("/lib/systemd/systemd");
        assert_eq!(
            resolve("quiet").unwrap().init_for(image),
            "/lib/systemd/systemd"
        );
        assert_eq!(resolve("quiet").unwrap().init_for(None), DEFAULT_INIT);
        assert_eq!(resolve("init=/bin/sh").unwrap().init_for(image), "/bin/sh");
        let mut node = NodeConfig::default();
        node.boot.init = Some("/sbin/runit".into());
        let c = BootConfig::resolve(node, "quiet").unwrap();
        assert_eq!(c.init_for(image), "/sbin/runit");
    }

    #[test]
    fn the_last_non_empty_hostname_wins_over_node_toml() {
        let node = NodeConfig {
            hostname: Some("from-toml".into()),
            ..NodeConfig::default()
        };
        let name = |line| BootConfig::resolve(node.clone(), line).unwrap().hostname;
        assert_eq!(name("quiet").as_deref(), Some("from-toml"));
        assert_eq!(name("hostname=a hostname=b").as_deref(), Some("b"));
        assert_eq!(name("hostname=a hostname=").as_deref(), Some("a"));
        assert_eq!(name("hostname=").as_deref(), Some("from-toml"));
        assert_eq!(resolve("hostname").unwrap().hostname, None);
    }

    #[test]
    fn defaults_follow_terra_layout() {
        let c = resolve("console=ttyS0 quiet").unwrap();
        assert_eq!(c.root, RootSpec::Label("os".into()));
        assert_eq!(c.subvol, "os");
        assert!(!c.pinned, "no version= given: the boot state chooses");
        assert_eq!(c.init, "/sbin/init");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.rescue, RescueAction::Shell);
        assert!(c.read_only);
        assert_eq!(c.mount_options("btrfs"), "subvol=os");
        assert_eq!(c.mount_options("ext4"), "");
    }

    #[test]
    fn kexec_forms() {
        assert_eq!(resolve("").unwrap().kexec, Kexec::Auto);
        assert_eq!(resolve("terra.kexec=off").unwrap().kexec, Kexec::Off);
        assert_eq!(
            resolve("terra.kexec.into=v2 terra.kexec.from=6.1.0-9-amd64@2345")
                .unwrap()
                .kexec,
            Kexec::Into {
                version: "v2".into(),
                from: Some(("6.1.0-9-amd64".into(), 2345)),
            }
        );
        for bad in [
            "terra.kexec",
            "terra.kexec=v2",
            "terra.kexec.into=a/b",
            "terra.kexec.from=x",
            "terra.kexec.from=@1",
        ] {
            assert!(
                matches!(resolve(bad), Err(ConfigError::Key { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn root_forms() {
        assert_eq!(
            resolve("root=UUID=ABC-1").unwrap().root,
            RootSpec::Uuid("abc-1".into())
        );
        assert_eq!(
            resolve("root=PARTUUID=1234-01").unwrap().root,
            RootSpec::PartUuid("1234-01".into())
        );
        assert_eq!(
            resolve("root=/dev/vda2").unwrap().root,
            RootSpec::Path("/dev/vda2".into())
        );
        assert_eq!(
            resolve("disk_label=data version=v2 rw").unwrap(),
            BootConfig {
                root: RootSpec::Label("data".into()),
                subvol: "v2".into(),
                pinned: true,
                read_only: false,
                ..resolve("").unwrap()
            }
        );
        // root= beats disk_label=
        assert_eq!(
            resolve("disk_label=a root=LABEL=b").unwrap().root,
            RootSpec::Label("b".into())
        );
    }

    #[test]
    fn live_roots_name_the_medium_and_the_image() {
        let c = resolve("root=live:CDLABEL=TERRA").unwrap();
        assert_eq!(c.root, RootSpec::Label("TERRA".into()));
        assert_eq!(c.live, Some(Live::default()));
        let c = resolve("root=live:UUID=2026-12-01-00-00-00-00 rd.live.dir=/boot/live rd.live.squashimg=root.sqfs")
            .unwrap();
        assert_eq!(c.root, RootSpec::Uuid("2026-12-01-00-00-00-00".into()));
        assert_eq!(
            c.live,
            Some(Live {
                dir: "/boot/live".into(),
                image: "root.sqfs".into()
            })
        );
        // A later plain root= is not live; the live keys alone make nothing live.
        assert_eq!(
            resolve("root=live:LABEL=A root=LABEL=os").unwrap().live,
            None
        );
        assert_eq!(resolve("rd.live.dir=x").unwrap().live, None);
        for (line, key) in [
            ("root=live:", "root"),
            ("root=live:CDLABEL=", "root"),
            ("root=live:sr0", "root"),
            (
                "root=live:LABEL=A rd.live.squashimg=a/b",
                "rd.live.squashimg",
            ),
            ("root=live:LABEL=A rd.live.dir", "rd.live.dir"),
        ] {
            let err = resolve(line).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Key { key: k, .. } if k == key),
                "{line}: {err}"
            );
        }
    }

    #[test]
    fn rootflags_subvol_wins_over_version() {
        let c = resolve("version=v3 rootflags=compress=zstd,subvol=/snap").unwrap();
        assert_eq!(c.mount_options("btrfs"), "compress=zstd,subvol=/snap");
        let c = resolve("version=v3 rootflags=noatime").unwrap();
        assert_eq!(c.mount_options("btrfs"), "noatime,subvol=v3");
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (line, key) in [
            ("terra.timeout=soon", "terra.timeout"),
            ("terra.rescue=panic", "terra.rescue"),
            ("root=sda1", "root"),
            ("root", "root"),
            ("init=sbin/init", "init"),
            ("version=a/b", "version"),
            ("terra.debug=yes", "terra.debug"),
        ] {
            let err = resolve(line).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Key { key: k, .. } if k == key),
                "{line}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn cmdline_overrides_node_config() {
        let node = NodeConfig::parse(
            "hostname = \"n1\"\n[boot]\ntimeout = 5\nrescue = \"halt\"\nmodules = [\"e1000\"]\nversion = \"v1\"\n",
            Path::new("node.toml"),
        )
        .unwrap();
        let c = BootConfig::resolve(node.clone(), "terra.modules=nvme terra.timeout=7").unwrap();
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.rescue, RescueAction::Halt);
        assert_eq!(c.modules, vec!["e1000", "nvme"]);
        assert_eq!(c.subvol, "v1");
        assert_eq!(c.node.hostname.as_deref(), Some("n1"));
    }

    #[test]
    fn node_toml_unknown_key_is_named() {
        let err = NodeConfig::parse(
            "hostname = \"a\"\nbogus_key = 1\n",
            Path::new("/etc/terra/node.toml"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("bogus_key") && msg.contains("/etc/terra/node.toml"),
            "{msg}"
        );
        let err = NodeConfig::parse(
            "[[groups]]\nlabel = \"os\"\n[[groups.disk]]\nsize = \"big\"\n",
            Path::new("n.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn the_controller_table_is_checked_and_names_its_key() {
        let cfg = NodeConfig::parse(
            "[controller]\nurl = \"http://10.0.2.2:8080\"\ntoken_file = \"node.token\"\n",
            Path::new("n.toml"),
        )
        .unwrap();
        assert_eq!(cfg.controller.url.as_deref(), Some("http://10.0.2.2:8080"));
        assert_eq!(cfg.controller.token_file.as_deref(), Some("node.token"));
        let err = NodeConfig::parse(
            "[controller]\nurl = \"https://ctl.example\"\n",
            Path::new("/etc/terra/node.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/etc/terra/node.toml")
                && err.contains("controller.url: \"https://ctl.example\"")
                && err.contains("no TLS"),
            "{err}"
        );
        // A token written into node.toml by mistake is named, not shown.
        let err = NodeConfig::parse(
            "[controller]\ntoken = \"s3cr3t-t0ken\"\n",
            Path::new("n.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("token") && !err.contains("s3cr3t-t0ken"),
            "{err}"
        );
    }

    #[test]
    fn extensions_name_their_image_and_nothing_else() {
        let cfg = NodeConfig::parse(
            "[[extensions]]\nimage = \"oci:/x:hello\"\n[[extensions]]\nimage = \"r.example/tools:1\"\n",
            Path::new("n.toml"),
        )
        .unwrap();
        let images: Vec<_> = cfg.extensions.iter().map(|e| e.image.as_str()).collect();
        assert_eq!(images, ["oci:/x:hello", "r.example/tools:1"]);
        let err = NodeConfig::parse("[[extensions]]\nname = \"x\"\n", Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("name") && err.contains("n.toml"), "{err}");
        let err = NodeConfig::parse("[[extensions]]\n", Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("image"), "{err}");
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
hostname = "terra-01"
mac = "52:54:00:12:34:56"
image = "registry.example/org/os:6"
[[groups]]
label = "os"
type = "single"
stage = "stage1"
mbr = true
  [[groups.disk]]
  device = "/dev/sda"
  size = 128000
  [[groups.subvolumes]]
  name = "home"
  path = "/home"
"#;
        let n = NodeConfig::parse(text, Path::new("node.toml")).unwrap();
        assert_eq!(n.groups[0].disk[0].size, Some(128000));
        assert_eq!(n.groups[0].subvolumes[0].path, "/home");
        assert_eq!(n.groups[0].profile, "single");
    }

    proptest! {
        #[test]
        fn arbitrary_cmdlines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = resolve(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn arbitrary_toml_never_panics(s in "\\PC{0,200}") {
            let _ = NodeConfig::parse(&s, Path::new("x"));
        }
    }
}
