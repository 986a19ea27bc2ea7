//! `terra install`: node.toml's disk groups become btrfs filesystems, and the OCI image
//! becomes the root subvolume.
//!
//! Order matters for "nothing destroyed for nothing": the config, the image (a layout's or
//! archive's every blob; a registry image's manifests, signature and config) are checked,
//! and every disk is probed, before the first mkfs. A registry image's layers download
//! onto the root filesystem just made, resumably (`installing` finds an interrupted
//! install again). The image is unpacked into a staging subvolume that is renamed to the root
//! subvolume's name only once it is complete, with `/etc/fstab` and `/etc/hostname` written.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use terra_init::bootstate::{self, BootState, NODE_FILE, STATE_DIR};
use terra_init::config::{ConfigError, Disk, Group, NodeConfig, DEFAULT_ROOT_NAME};
use terra_init::persist::DEFAULT_ETC_OVERLAY;
use terra_init::probe;

use crate::bootdisk::{self, BootPlan};
use crate::installing;
use crate::oci::{self, ApplyOptions, ImageRef, OciError, Platform, ResolveOptions, UnpackReport};
use crate::tool::{self, Missing, Need, ToolError};
use crate::versions::disk::{self, attach, fstab, mount, subvolume_create, DiskError, Loops};
use crate::versions::{self, VersionsError};

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallSpec {
    /// node.toml.
    pub config: PathBuf,
    /// The image; overrides node.toml's `image`.
    pub image: Option<String>,
    /// Disks replacing node.toml's, in order over all groups; with a node.toml without
    /// groups, they make one group labelled `os`.
    pub disks: Vec<PathBuf>,
    /// Overwrite disks that hold a filesystem or partition table.
    pub force: bool,
    /// Platform picked from an image index.
    pub platform: Platform,
    /// Registry over plain HTTP.
    pub plain_http: bool,
    /// Layer application options.
    pub apply: ApplyOptions,
    /// Filesystem UUID of the root group (reproducible test disks).
    pub root_uuid: Option<String>,
    /// Leave the first version writable (images that need a writable root).
    pub writable: bool,
    /// Refuse the image unless signed by one of these keys (`--verify-key`).
    pub verify: Option<oci::VerifyPolicy>,
    /// The base kernel of a bootable disk (`mbr = true`); default: the host's newest
    /// `/boot/vmlinuz-*` with modules.
    pub kernel: Option<PathBuf>,
    /// Extra kernel arguments of a bootable disk's GRUB entry.
    pub cmdline: String,
    /// A Unified Kernel Image (`terra uki`, signed for Secure Boot) that UEFI firmware
    /// starts from the bootable disk's ESP instead of GRUB; BIOS still boots GRUB.
    pub uki: Option<PathBuf>,
}

impl InstallSpec {
    /// Installs with defaults for everything but the config.
    pub fn new(config: &Path) -> Self {
        InstallSpec {
            config: config.to_path_buf(),
            image: None,
            disks: Vec::new(),
            force: false,
            platform: Platform::default(),
            plain_http: false,
            apply: ApplyOptions::default(),
            root_uuid: None,
            writable: false,
            verify: None,
            kernel: None,
            cmdline: String::new(),
            uki: None,
        }
    }
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// Each group: label, profile, devices.
    pub groups: Vec<(String, String, Vec<PathBuf>)>,
    /// The root group's label.
    pub root_label: String,
    /// The root subvolume.
    pub root_subvolume: String,
    /// The image's reference and manifest digest.
    pub image: String,
    /// The unpack.
    pub unpack: UnpackReport,
    /// The /etc/fstab written.
    pub fstab: String,
}

/// Why an install stopped; each variant names the config, disk or group.
#[derive(Debug)]
pub enum InstallError {
    /// node.toml cannot be read or is invalid.
    Config(ConfigError),
    /// Neither node.toml nor `--image` names an image.
    NoImage(PathBuf),
    /// No disks: node.toml has no groups and no `--disk` was given.
    NoDisks(PathBuf),
    /// `--disk` count differs from node.toml's disks.
    DiskCount {
        /// `--disk` given.
        given: usize,
        /// Disks in node.toml.
        configured: usize,
    },
    /// A group is unusable.
    Group {
        /// Its label.
        label: String,
        /// Why.
        reason: String,
    },
    /// A disk that does not exist and has no size to create it with.
    DiskMissing(PathBuf),
    /// A disk holds data and `--force` was not given.
    DiskInUse {
        /// The disk.
        disk: PathBuf,
        /// What is on it.
        what: String,
    },
    /// A disk could not be created, opened or probed.
    Disk {
        /// The disk.
        disk: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// Installing needs root (mkfs on devices, loop devices, mount).
    NotRoot,
    /// A host tool failed.
    Tool(ToolError),
    /// Host tools or files the install needs are missing (nothing was written).
    Missing(Missing),
    /// The image failed.
    Image(OciError),
    /// Making the first version failed.
    Version(Box<VersionsError>),
    /// Making the disk bootable (`mbr = true`) failed.
    Boot(bootdisk::BootDiskError),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Config(e) => write!(f, "{e}"),
            InstallError::NoImage(p) => write!(
                f,
                "{}: no image to install (set `image = ` or pass --image REF)",
                p.display()
            ),
            InstallError::NoDisks(p) => write!(
                f,
                "{}: no disks (add [[groups]] with [[groups.disk]] or pass --disk PATH)",
                p.display()
            ),
            InstallError::DiskCount { given, configured } => write!(
                f,
                "{given} --disk given but node.toml has {configured} disks: give one per disk"
            ),
            InstallError::Group { label, reason } => write!(f, "group {label:?}: {reason}"),
            InstallError::DiskMissing(d) => write!(
                f,
                "disk {}: does not exist, and node.toml gives no size to create it",
                d.display()
            ),
            InstallError::DiskInUse { disk, what } => write!(
                f,
                "disk {} holds {what}; refusing to overwrite it without --force",
                disk.display()
            ),
            InstallError::Disk { disk, err } => write!(f, "disk {}: {err}", disk.display()),
            InstallError::NotRoot => write!(
                f,
                "terra install needs root (mkfs.btrfs, loop devices and mount)"
            ),
            InstallError::Tool(e) => write!(f, "{e}"),
            InstallError::Missing(e) => write!(f, "{e}"),
            InstallError::Image(e) => write!(f, "{e}"),
            InstallError::Version(e) => write!(f, "{e}"),
            InstallError::Boot(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InstallError {}

impl From<OciError> for InstallError {
    fn from(e: OciError) -> Self {
        InstallError::Image(e)
    }
}

impl From<bootdisk::BootDiskError> for InstallError {
    fn from(e: bootdisk::BootDiskError) -> Self {
        InstallError::Boot(e)
    }
}

impl From<DiskError> for InstallError {
    fn from(e: DiskError) -> Self {
        match e {
            DiskError::Io { disk, err } => InstallError::Disk { disk, err },
            DiskError::Tool(e) => InstallError::Tool(e),
        }
    }
}

impl From<ToolError> for InstallError {
    fn from(e: ToolError) -> Self {
        InstallError::Tool(e)
    }
}

const PROFILES: [&str; 5] = ["single", "raid0", "raid1", "raid5", "raid10"];

/// The groups to make: node.toml's, with `--disk` replacing their devices in order.
pub fn plan_groups(
    node: &NodeConfig,
    disks: &[PathBuf],
    config: &Path,
) -> Result<Vec<Group>, InstallError> {
    let mut groups = node.groups.clone();
    if groups.is_empty() {
        if disks.is_empty() {
            return Err(InstallError::NoDisks(config.to_path_buf()));
        }
        groups.push(Group {
            label: DEFAULT_ROOT_NAME.into(),
            profile: "single".into(),
            ..Default::default()
        });
        groups[0].disk = disks
            .iter()
            .map(|d| Disk {
                device: d.to_string_lossy().into_owned(),
                size: None,
            })
            .collect();
    } else if !disks.is_empty() {
        let configured: usize = groups.iter().map(|g| g.disk.len()).sum();
        if configured != disks.len() {
            return Err(InstallError::DiskCount {
                given: disks.len(),
                configured,
            });
        }
        let mut given = disks.iter();
        for d in groups.iter_mut().flat_map(|g| g.disk.iter_mut()) {
            if let Some(p) = given.next() {
                d.device = p.to_string_lossy().into_owned();
            }
        }
    }
    for g in &groups {
        let bad = |reason: String| InstallError::Group {
            label: g.label.clone(),
            reason,
        };
        if g.label.is_empty() || g.label.len() > 255 {
            return Err(bad("a label of 1 to 255 bytes is needed".into()));
        }
        if !PROFILES.contains(&g.profile.as_str()) {
            return Err(bad(format!(
                "type = {:?}: expected one of {}",
                g.profile,
                PROFILES.join(", ")
            )));
        }
        let min = if g.profile == "single" { 1 } else { 2 };
        if g.disk.len() < min {
            return Err(bad(format!(
                "{} needs at least {min} disks, the group has {}",
                g.profile,
                g.disk.len()
            )));
        }
        for s in &g.subvolumes {
            if s.name.is_empty() || s.name.contains('/') || s.name == "." || s.name == ".." {
                return Err(bad(format!(
                    "subvolume name {:?} is not a plain name",
                    s.name
                )));
            }
            if !s.path.starts_with('/') {
                return Err(bad(format!(
                    "subvolume {:?}: path {:?} is not absolute",
                    s.name, s.path
                )));
            }
        }
    }
    Ok(groups)
}

/// Index of the group that holds the root: the one labelled `os`, else the first.
fn root_group(groups: &[Group]) -> usize {
    groups
        .iter()
        .position(|g| g.label == DEFAULT_ROOT_NAME)
        .unwrap_or(0)
}

/// The root subvolume's name: a subvolume mounted at `/`, else `[boot] version`, else `os`.
fn root_subvolume(node: &NodeConfig, group: &Group) -> String {
    group
        .subvolumes
        .iter()
        .find(|s| s.path == "/")
        .map(|s| s.name.clone())
        .or_else(|| node.boot.version.clone())
        .unwrap_or_else(|| DEFAULT_ROOT_NAME.into())
}

/// What a disk holds, as a refusal would say it; None when it looks blank.
pub fn disk_contents(disk: &Path) -> Result<Option<String>, InstallError> {
    let derr = |err| InstallError::Disk {
        disk: disk.to_path_buf(),
        err,
    };
    let mut f = fs::File::open(disk).map_err(derr)?;
    let id = probe::probe_fs(&mut f).map_err(derr)?;
    if let Some(fstype) = id.fstype {
        let mut what = format!("a {fstype} filesystem");
        if let Some(l) = id.label {
            what.push_str(&format!(" labelled {l:?}"));
        }
        if let Some(u) = id.uuid {
            what.push_str(&format!(" (UUID {u})"));
        }
        return Ok(Some(what));
    }
    if let Ok(Some(_)) = probe::partition_identity(&mut f, 1, 512) {
        return Ok(Some("a partition table".into()));
    }
    Ok(None)
}

/// Creates missing image files and refuses disks in use (but those of group `resumed`,
/// an interrupted install of ours): all before anything is written.
fn prepare_disks(
    groups: &[Group],
    force: bool,
    resumed: Option<usize>,
) -> Result<(), InstallError> {
    let groups = groups
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != resumed)
        .map(|(_, g)| g);
    for d in groups.flat_map(|g| &g.disk) {
        let path = PathBuf::from(&d.device);
        if !path.exists() {
            let Some(mb) = d.size else {
                return Err(InstallError::DiskMissing(path));
            };
            continue_create(&path, mb)?;
            continue;
        }
        if let Some(what) = disk_contents(&path)? {
            if !force {
                return Err(InstallError::DiskInUse { disk: path, what });
            }
        }
    }
    Ok(())
}

fn continue_create(path: &Path, mb: u64) -> Result<(), InstallError> {
    let derr = |err| InstallError::Disk {
        disk: path.to_path_buf(),
        err,
    };
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(derr)?;
    // Sizes are MiB, like the lab's disk images; the file stays sparse.
    f.set_len(mb << 20).map_err(derr)
}

/// mkfs.btrfs over a group's devices with its label and profile. Metadata is mirrored
/// like the data for raid1/raid10, raid1 under raid5 (btrfs's advice), striped for raid0.
fn mkfs(group: &Group, devs: &[String], uuid: Option<&str>) -> Result<(), InstallError> {
    let mut cmd = Command::new("mkfs.btrfs");
    cmd.args(["-q", "-f", "-L", &group.label]);
    if let Some(u) = uuid {
        cmd.args(["-U", u]);
    }
    let meta = match group.profile.as_str() {
        "single" if devs.len() == 1 => None,
        "single" => Some("raid1"),
        "raid5" => Some("raid1"),
        p => Some(p),
    };
    cmd.args(["-d", &group.profile]);
    if let Some(m) = meta {
        cmd.args(["-m", m]);
    }
    cmd.args(devs);
    tool::run(&mut cmd, "btrfs-progs")?;
    Ok(())
}

/// The boot plan when the root group has `mbr = true` (refused on other groups), with the
/// root filesystem's UUID fixed (generated when `--uuid` is not given) since the partition
/// identifiers and `root=` derive from it.
fn plan_boot(
    spec: &InstallSpec,
    node: &NodeConfig,
    groups: &[Group],
    root_idx: usize,
) -> Result<Option<BootPlan>, InstallError> {
    if let Some(g) = groups
        .iter()
        .enumerate()
        .find(|(i, g)| g.mbr && *i != root_idx)
    {
        return Err(InstallError::Group {
            label: g.1.label.clone(),
            reason: "mbr = true: only the root group's first disk can be made bootable \
                     (the root group is the one labelled `os`, else the first)"
                .into(),
        });
    }
    let root = &groups[root_idx];
    if !root.mbr {
        for (flag, path) in [("--kernel", &spec.kernel), ("--uki", &spec.uki)] {
            if let Some(p) = path {
                return Err(InstallError::Group {
                    label: root.label.clone(),
                    reason: format!(
                        "{flag} {}: only a bootable disk (mbr = true) carries a kernel",
                        p.display()
                    ),
                });
            }
        }
        return Ok(None);
    }
    if let Some(u) = &spec.uki {
        // Read before any disk is touched.
        fs::File::open(u).map_err(|err| InstallError::Disk {
            disk: u.clone(),
            err,
        })?;
    }
    let uuid = match &spec.root_uuid {
        Some(u) => u.clone(),
        None => fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(|err| InstallError::Disk {
                disk: "/proc/sys/kernel/random/uuid".into(),
                err,
            })?
            .trim()
            .to_string(),
    };
    let kernel = bootdisk::base_kernel(spec.kernel.as_deref())?;
    Ok(Some(BootPlan {
        disk: PathBuf::from(&root.disk[0].device),
        layout: bootdisk::Layout::derive(&uuid),
        kernel,
        cmdline: bootdisk::kernel_cmdline(&spec.config, node, &uuid, &spec.cmdline),
        root_uuid: uuid,
        uki: spec.uki.clone(),
    }))
}

/// The by-digest reference a registry install downloads (the digest the signature
/// verified, else the platform's manifest), and the manifest's digest.
fn pin(
    reg: &oci_client::Reference,
    checked: &oci::Image,
) -> Result<(ImageRef, oci::Digest), InstallError> {
    let manifest = checked.manifest_digest.clone().ok_or_else(|| {
        InstallError::Image(OciError::NotFound {
            reference: reg.whole(),
            reason: "the registry named no manifest digest".into(),
        })
    })?;
    let top = checked
        .verified
        .as_ref()
        .map_or(&manifest, |v| &v.digest)
        .to_string();
    Ok((ImageRef::Registry(reg.clone_with_digest(top)), manifest))
}

/// The host tools an install runs: mkfs.btrfs and the disk tools, and for a bootable disk
/// (`mbr = true`) the partitioning, FAT, mtools and GRUB ones.
pub fn needs(bootable: bool) -> Vec<Need> {
    let mut n = Need::programs(&["mkfs.btrfs"], "btrfs-progs");
    n.extend(disk::needs());
    if bootable {
        n.extend(bootdisk::needs());
    }
    n
}

/// Installs per `spec`.
pub fn install(spec: &InstallSpec) -> Result<InstallReport, InstallError> {
    install_with(spec, &oci::Silent)
}

/// The node's controller token when node.toml names a controller: (its file name under
/// `.terra`, the token), read from beside node.toml before any disk is touched. The token
/// file must be a plain file name there (stage0 reads it relative to the kept node.toml).
fn controller_token(
    node: &NodeConfig,
    config: &Path,
) -> Result<Option<(String, String)>, InstallError> {
    if node.controller.url.is_none() {
        return Ok(None);
    }
    let name = node
        .controller
        .token_file
        .clone()
        .unwrap_or_else(|| terra_init::config::controller::DEFAULT_TOKEN_FILE.to_string());
    let refuse = |message: String| {
        InstallError::Config(ConfigError::Node {
            path: config.to_path_buf(),
            message,
        })
    };
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(refuse(format!(
            "controller.token_file {name:?}: a file name beside node.toml (no directories)"
        )));
    }
    let path = config.parent().unwrap_or(Path::new(".")).join(&name);
    let token = fs::read_to_string(&path)
        .map_err(|e| refuse(format!("controller.token_file {}: {e}", path.display())))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(refuse(format!(
            "controller.token_file {}: empty",
            path.display()
        )));
    }
    Ok(Some((name, token)))
}

/// [`install`], telling `progress` of the pull of a registry image and of the layers
/// unpacked.
pub fn install_with(
    spec: &InstallSpec,
    progress: &dyn oci::Progress,
) -> Result<InstallReport, InstallError> {
    let text = fs::read_to_string(&spec.config).map_err(|e| {
        InstallError::Config(ConfigError::Node {
            path: spec.config.clone(),
            message: e.to_string(),
        })
    })?;
    let node = NodeConfig::parse(&text, &spec.config).map_err(InstallError::Config)?;
    let token = controller_token(&node, &spec.config)?;
    let image_ref = spec
        .image
        .clone()
        .or_else(|| node.image.clone())
        .ok_or_else(|| InstallError::NoImage(spec.config.clone()))?;
    let groups = plan_groups(&node, &spec.disks, &spec.config)?;
    let root_idx = root_group(&groups);
    let root_label = groups[root_idx].label.clone();
    let root_name = root_subvolume(&node, &groups[root_idx]);
    if !rustix::process::geteuid().is_root() {
        return Err(InstallError::NotRoot);
    }
    // Every host tool the install runs, before the image is fetched and any disk touched:
    // a missing GRUB found after partitioning would leave a wiped disk and no install.
    let bootable = groups[root_idx].mbr;
    tool::check(&needs(bootable)).map_err(InstallError::Missing)?;
    if bootable {
        // The base kernel's initramfs packs stage0.
        crate::initramfs::find_stage0().map_err(|e| {
            InstallError::Boot(bootdisk::BootDiskError::Kernel(
                crate::bootfiles::BootFilesError::Initramfs(e),
            ))
        })?;
    }

    // The image first: a missing tag, a bad signature or config (and, from a layout or an
    // archive, a corrupt blob) must fail before any disk is touched.
    let r: ImageRef = image_ref.parse()?;
    // The keys node.toml names join --verify-key's; they are kept on the disk for upgrades.
    let config_dir = spec.config.parent().unwrap_or(Path::new("."));
    let signature_error = |message: String| {
        InstallError::Config(ConfigError::Node {
            path: spec.config.clone(),
            message: format!("[signature]: {message}"),
        })
    };
    let node_keys =
        versions::node_keys(&node, config_dir).map_err(|e| signature_error(e.to_string()))?;
    let policy = versions::combine_policy(
        spec.verify.as_ref(),
        node_keys,
        node.signature.require,
        &spec.config.display().to_string(),
    )
    .map_err(signature_error)?;
    let resolve = ResolveOptions {
        platform: spec.platform.clone(),
        plain_http: spec.plain_http,
        verify: policy.clone(),
        ..Default::default()
    };
    // A registry image's layers are fetched onto the root filesystem once it is made (not
    // into /tmp, which is RAM on a live system), resumably: now only its manifests, its
    // signature and its config, and the digest they resolved to, which the download
    // then names (a tag moved meanwhile is not followed).
    let registry = matches!(r, ImageRef::Registry(_));
    let checked = oci::resolve_with(
        &r,
        &ResolveOptions {
            skip_layers: registry,
            ..resolve.clone()
        },
        progress,
    )?;
    let (mut image, pinned) = match &r {
        ImageRef::Registry(reg) => (None, Some(pin(reg, &checked)?)),
        _ => {
            checked.verify_blobs()?;
            (Some(checked), None)
        }
    };
    let manifest_digest = match (&image, &pinned) {
        (Some(i), _) => i.manifest_digest.clone(),
        (None, Some((_, d))) => Some(d.clone()),
        (None, None) => None,
    };
    // An install of this root group that died after its mkfs goes on on that filesystem,
    // with what it had downloaded.
    let resumed = pinned
        .as_ref()
        .and_then(|_| installing::find(&groups[root_idx]))
        .filter(|m| {
            spec.root_uuid
                .as_ref()
                .is_none_or(|u| u.eq_ignore_ascii_case(&m.uuid))
        });
    let spec = &InstallSpec {
        root_uuid: resumed
            .as_ref()
            .map(|m| m.uuid.clone())
            .or_else(|| spec.root_uuid.clone()),
        ..spec.clone()
    };
    let boot_plan = plan_boot(spec, &node, &groups, root_idx)?;
    prepare_disks(&groups, spec.force, resumed.as_ref().map(|_| root_idx))?;

    let work = oci::image::temp_dir("terra-install")?;
    let _work = oci::image::TempDir(work.clone());
    let mut loops = Loops(Vec::new());
    let root_uuid = boot_plan
        .as_ref()
        .map(|p| p.root_uuid.clone())
        .or_else(|| spec.root_uuid.clone());
    let mut report = InstallReport {
        groups: Vec::new(),
        root_label: root_label.clone(),
        root_subvolume: root_name.clone(),
        image: match &manifest_digest {
            Some(d) => format!("{r}@{d}"),
            None => r.to_string(),
        },
        unpack: UnpackReport::default(),
        fstab: fstab(&groups, &root_label, &root_name),
    };
    // The root group first: its filesystem holds the download, and an install that dies
    // there has touched no other group's disks.
    let order = std::iter::once(root_idx).chain((0..groups.len()).filter(|i| *i != root_idx));
    let mut made = vec![None; groups.len()];
    for i in order {
        let g = &groups[i];
        let boot_disk = boot_plan.as_ref().filter(|_| i == root_idx);
        let resume = i == root_idx && resumed.is_some();
        if let Some(p) = boot_disk.filter(|_| !resume) {
            bootdisk::partition(&p.disk, &p.layout)?;
        }
        let mut devs = attach(g, &mut loops)?;
        // The whole first disk (GRUB's boot sector) and its ESP; btrfs gets partition 3.
        let mut bootable = None;
        if boot_disk.is_some() {
            let whole = devs[0].clone();
            let esp = bootdisk::wait_partition(&whole, terra_init::esp::ESP_PARTLABEL)?;
            devs[0] = bootdisk::wait_partition(&whole, terra_init::esp::ROOT_PARTLABEL)?
                .display()
                .to_string();
            bootable = Some((PathBuf::from(whole), esp));
        }
        let uuid = if i == root_idx {
            root_uuid.as_deref()
        } else {
            None
        };
        if !resume {
            mkfs(g, &devs, uuid)?;
        }
        let mnt = work.join(format!("mnt{i}"));
        let mounted = mount(&devs, &mnt)?;
        if let (true, Some((reference, _))) = (i == root_idx, &pinned) {
            if resume {
                installing::clear(&mnt)?;
            } else {
                let fs_uuid = fs::File::open(&devs[0])
                    .and_then(|mut f| probe::probe_fs(&mut f))
                    .map_err(|err| InstallError::Disk {
                        disk: PathBuf::from(&devs[0]),
                        err,
                    })?
                    .uuid
                    .unwrap_or_default();
                let mark = installing::Mark::for_group(g, &fs_uuid);
                let at = mnt.join(STATE_DIR);
                mark.store(&mnt).map_err(|e| OciError::io(&at, e))?;
            }
            image = Some(oci::resolve_with(
                reference,
                &ResolveOptions {
                    download_dir: Some(versions::downloads_dir(&mnt)),
                    ..resolve.clone()
                },
                progress,
            )?);
        }
        for sv in &g.subvolumes {
            if i == root_idx && sv.name == root_name {
                continue;
            }
            subvolume_create(&mnt.join(&sv.name))?;
        }
        if i == root_idx {
            // The first version, built like every upgrade's (layer chains kept for the
            // next one), then the boot state that makes it the default.
            let state_dir = mnt.join(STATE_DIR);
            fs::create_dir_all(&state_dir).map_err(|e| OciError::io(&state_dir, e))?;
            // Owner-only: a node.toml may hold CHAP secrets.
            let kept = state_dir.join(NODE_FILE);
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&kept)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .map_err(|e| OciError::io(&kept, e))?;
                // The fleet controller's token beside it, where stage0 looks
                // (`[controller] token_file`, relative to the kept node.toml).
                if let Some((name, token)) = &token {
                    let path = state_dir.join(name);
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .and_then(|mut f| f.write_all(token.as_bytes()))
                        .map_err(|e| OciError::io(&path, e))?;
                }
            }
            if !g.subvolumes.iter().any(|s| s.name == DEFAULT_ETC_OVERLAY) {
                subvolume_create(&mnt.join(DEFAULT_ETC_OVERLAY))?;
            }
            if let Some(p) = &policy {
                versions::keep_keys(&mnt, p.keys()).map_err(|e| OciError::io(&state_dir, e))?;
            }
            let mut kept_node = node.clone();
            kept_node.groups = groups.clone();
            let boot = crate::bootfiles::BootInitramfs::for_disk(&state_dir).map_err(|err| {
                InstallError::Version(Box::new(VersionsError::Kernel {
                    version: root_name.clone(),
                    err,
                }))
            })?;
            let Some(image) = image.as_ref() else {
                return Err(InstallError::NoImage(spec.config.clone()));
            };
            let (version, built) = versions::build_version(
                &mnt,
                &versions::NewVersion {
                    name: &root_name,
                    image,
                    reference: &image_ref,
                    node: &kept_node,
                    label: &root_label,
                    apply: &spec.apply,
                    writable: spec.writable,
                    verify: false,
                    boot: Some(&boot),
                    progress,
                },
            )
            .map_err(|e| InstallError::Version(Box::new(e)))?;
            report.unpack = built.unpack;
            let mut state = BootState::new(version);
            bootstate::store(&mnt, &mut state)
                .map_err(|e| InstallError::Version(Box::new(e.into())))?;
            versions::settled(&mnt, &root_name);
            if let (Some(p), Some((whole, esp))) = (boot_disk, &bootable) {
                bootdisk::finish(p, &mnt, whole, esp, &work, &root_name, &boot)?;
            }
            // Complete: the downloads are spent (their space given back to an image file
            // or LUN), and a re-run is a new install.
            if versions::clear_downloads(&mnt) && !loops.0.is_empty() {
                disk::trim(&mnt);
            }
            installing::unmark(&mnt).map_err(|e| OciError::io(&state_dir, e))?;
        }
        // Unmount now (not at the end) so a later group's failure leaves this one whole.
        rustix::fs::sync();
        drop(mounted);
        made[i] = Some((
            g.label.clone(),
            g.profile.clone(),
            g.disk.iter().map(|d| PathBuf::from(&d.device)).collect(),
        ));
    }
    report.groups = made.into_iter().flatten().collect();
    drop(loops);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> NodeConfig {
        NodeConfig::parse(text, Path::new("node.toml")).unwrap()
    }

    #[test]
    fn groups_and_fstab() {
        let n = node(
            r#"
image = "oci:/x"
[[groups]]
label = "os"
type = "raid1"
  [[groups.disk]]
  device = "/tmp/a.img"
  size = 300
  [[groups.disk]]
  device = "/tmp/b.img"
  size = 300
  [[groups.subvolumes]]
  name = "home"
  path = "/home"
[[groups]]
label = "data"
  [[groups.disk]]
  device = "/tmp/c.img"
  [[groups.subvolumes]]
  name = "srv"
  path = "/srv"
"#,
        );
        let g = plan_groups(&n, &[], Path::new("node.toml")).unwrap();
        assert_eq!(root_group(&g), 0);
        assert_eq!(root_subvolume(&n, &g[0]), "os");
        assert_eq!(
            fstab(&g, "os", "os"),
            "# written by terra install\n\
             LABEL=os / btrfs subvol=/os 0 0\n\
             LABEL=os /home btrfs subvol=/home 0 0\n\
             LABEL=data /srv btrfs subvol=/srv 0 0\n"
        );
        let err = plan_groups(&n, &[PathBuf::from("/dev/x")], Path::new("node.toml")).unwrap_err();
        assert!(matches!(
            err,
            InstallError::DiskCount {
                given: 1,
                configured: 3
            }
        ));
        let g = plan_groups(
            &n,
            &["/1", "/2", "/3"].map(PathBuf::from),
            Path::new("node.toml"),
        )
        .unwrap();
        assert_eq!(g[1].disk[0].device, "/3");
    }

    #[test]
    fn a_bootable_install_needs_the_partitioning_fat_mtools_and_grub_tools_too() {
        let program = |needs: &[Need], name: &str| {
            needs
                .iter()
                .any(|n| matches!(n, Need::Program(p, _) if *p == name))
        };
        let (plain, bootable) = (needs(false), needs(true));
        for p in ["mkfs.btrfs", "btrfs", "losetup", "mount"] {
            assert!(program(&plain, p) && program(&bootable, p), "{p}");
        }
        for p in [
            "sfdisk",
            "partx",
            "mkfs.fat",
            "mcopy",
            "mren",
            "grub-mkimage",
        ] {
            assert!(!program(&plain, p) && program(&bootable, p), "{p}");
        }
        assert!(bootable
            .iter()
            .any(|n| matches!(n, Need::File(f, "grub-pc-bin") if f.ends_with("boot.img"))));
    }

    #[test]
    fn bare_config_takes_disks_and_checks_profiles() {
        let g = plan_groups(&node(""), &[PathBuf::from("/d")], Path::new("n")).unwrap();
        assert_eq!(
            (g[0].label.as_str(), g[0].profile.as_str()),
            ("os", "single")
        );
        assert!(matches!(
            plan_groups(&node(""), &[], Path::new("n")),
            Err(InstallError::NoDisks(_))
        ));
        let n = node(
            "[[groups]]\nlabel = \"os\"\ntype = \"raid1\"\n[[groups.disk]]\ndevice = \"/a\"\n",
        );
        let err = plan_groups(&n, &[], Path::new("n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("raid1 needs at least 2 disks"), "{err}");
        let n = node(
            "[[groups]]\nlabel = \"os\"\ntype = \"raid6\"\n[[groups.disk]]\ndevice = \"/a\"\n",
        );
        assert!(plan_groups(&n, &[], Path::new("n"))
            .unwrap_err()
            .to_string()
            .contains("raid6"));
        let n = node("[boot]\nversion = \"v2\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = \"/a\"\n");
        assert_eq!(root_subvolume(&n, &n.groups[0]), "v2");
    }
}
