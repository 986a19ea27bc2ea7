//! Debian 12 nodes that carry `terra` themselves, for the update scenarios: the lab's
//! Debian root ([`crate::debian`], image v1's layer), then a layer made by
//! `apt-get install ./terra_*.deb` in it (the package from `cargo xtask deb`, with its
//! Recommends, btrfs-progs, from Debian's mirror) — what a user building their OS image on
//! Debian does — then a small layer per image:
//!
//! | tag | `/etc/terra-demo-version` | `/etc/terra/health.d/` |
//! |---|---|---|
//! | [`N1`] | `1` | `10-terra` (passes: `terra --version`) |
//! | [`N2`] | `2` | the same |
//! | [`N3`] | `3` | `10-terra`, `20-app` (fails, printing [`FAILING_CHECK_SAYS`]) |
//!
//! Each holds systemd-networkd with DHCP on every Ethernet link (a node reaches its
//! registry) and the scenario agent, `terra-e2e.service` (only when the kernel command line
//! has `terra.e2e`): after `multi-user.target`, the network and Terra's confirmation it
//! counts the boot in `/etc/terra-e2e/boots` (the persistent `/etc` overlay keeps it across
//! versions), prints [`BOOT_MARKER`] and `terra versions --json`, and runs the first of the
//! scenario's steps for the running version that has not run yet (`/etc/terra-e2e/on-<version>.<k>`,
//! left in the disk's `/etc` overlay before the VM starts, renamed `….done` as it starts),
//! its lines prefixed with [`STEP_MARKER`]`<version>.<k>`.
//!
//! Built once per content (the Debian layout, the package's bytes and this recipe) under
//! `target/lab/images/debian-node-<digest>`; needs root (chroot, overlayfs) and the mirror.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::debian::{self, DebianImages};
use crate::oci_root::{put_image, put_layer, root_layer_from_dir, sha256, LayerBlob};
use crate::{lab_dir, lab_lock, run};

/// The node image that boots first.
pub const N1: &str = "n1";
/// The upgrade whose checks pass.
pub const N2: &str = "n2";
/// The upgrade whose health check fails.
pub const N3: &str = "n3";

/// Printed by the agent at each boot: `TERRA-E2E-BOOT n=<boot> version=<1|2|3>`.
pub const BOOT_MARKER: &str = "TERRA-E2E-BOOT";
/// Prefix of the agent's `terra versions --json` line.
pub const VERSIONS_MARKER: &str = "TERRA-E2E-VERSIONS";
/// Prefix of a step's output lines: `TERRA-E2E-STEP<version>.<k> …`.
pub const STEP_MARKER: &str = "TERRA-E2E-STEP";
/// What N3's failing health check prints before it exits 1.
pub const FAILING_CHECK_SAYS: &str = "app answers 503 on :8080";

/// Bumped whenever what goes into the images changes.
const RECIPE: &str = "node-3";

/// Every mtime in the layers is clamped to this (2023-11-14).
const MTIME_CLAMP: u64 = 1_700_000_000;

/// Bound on each command run in the image's root while building.
const CHROOT_TIMEOUT_S: u32 = 900;

const AGENT: &str = r#"#!/bin/sh
# Terra lab (tests-qemu/src/debian_node.rs): the node's side of the update scenarios.
dir=/etc/terra-e2e
mkdir -p $dir
n=$(( $(cat $dir/boots 2>/dev/null || echo 0) + 1 ))
echo $n > $dir/boots
sync
version=$(cat /etc/terra-demo-version)
echo "TERRA-E2E-BOOT n=$n version=$version"
echo "TERRA-E2E-VERSIONS $(terra versions --json 2>&1 | tr -d '\n')"
# The scenario's steps for this version, each run once: on-<version>.<k>, lowest k first.
for step in $(ls $dir/on-$version.* 2>/dev/null | grep -v '\.done$' | sort); do
  mv $step $step.done
  sync
  k=${step##*.}
  /bin/sh $step.done 2>&1 | sed -u "s/^/TERRA-E2E-STEP$version.$k /"
  break
done
echo "TERRA-E2E-DONE n=$n"
"#;

const AGENT_UNIT: &str = "[Unit]
Description=Terra lab: the update scenario's agent
ConditionKernelCommandLine=terra.e2e
Wants=network-online.target
After=multi-user.target terra-bless.service network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/terra-e2e
StandardOutput=journal+console
TimeoutStartSec=900

[Install]
WantedBy=multi-user.target
";

const NETWORK: &str = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n";

const CHECK_PASSES: &str = "#!/bin/sh\n# Terra lab: the node's own terra runs.\nterra --version\n";

const CHECK_FAILS: &str =
    "#!/bin/sh\n# Terra lab: a check that fails, as an application's would.\necho 'app answers 503 on :8080'\nexit 1\n";

/// The node images in one layout.
#[derive(Debug, Clone)]
pub struct NodeImages {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// (tag, manifest digest) of [`N1`], [`N2`], [`N3`].
    pub digests: Vec<(String, String)>,
}

impl NodeImages {
    /// `oci:<layout>:<tag>`.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }

    /// The manifest digest of `tag`.
    pub fn digest(&self, tag: &str) -> Option<&str> {
        self.digests
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, d)| d.as_str())
    }
}

/// The node images for the package `deb`, built on first use and cached by content.
pub fn node_images(deb: &Path) -> crate::Result<NodeImages> {
    let base = debian::debian_images()?;
    let deb_bytes = fs::read(deb).map_err(|e| format!("{}: {e}", deb.display()))?;
    let key = sha256(
        format!(
            "{RECIPE} {} {} {AGENT}{AGENT_UNIT}{CHECK_PASSES}{CHECK_FAILS}",
            base.v1_digest,
            sha256(&deb_bytes)
        )
        .as_bytes(),
    );
    let layout = lab_dir()
        .join("images")
        .join(format!("debian-node-{}", &key[7..19]));
    let _turn = lab_lock("debian-node")?;
    if !layout.join("index.json").is_file() {
        let work = layout.with_extension("build");
        let _ = Command::new("umount")
            .arg("-l")
            .arg(work.join("merged"))
            .output();
        let _ = fs::remove_dir_all(&work);
        let built = build(&base, deb, &work);
        let _ = Command::new("umount")
            .arg("-l")
            .arg(work.join("merged"))
            .output();
        let placed = built.and_then(|()| {
            fs::rename(work.join("layout"), &layout)
                .map_err(|e| format!("{}: {e}", layout.display()))
        });
        let _ = fs::remove_dir_all(&work);
        placed?;
    }
    let digests = [N1, N2, N3]
        .iter()
        .map(|t| Ok((t.to_string(), tag_digest(&layout, t)?)))
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(NodeImages { layout, digests })
}

fn tag_digest(layout: &Path, tag: &str) -> crate::Result<String> {
    let path = layout.join("index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no manifest tagged {tag}", path.display()))
}

fn build(base: &DebianImages, deb: &Path, work: &Path) -> crate::Result<()> {
    if !crate::host::nix_is_root() {
        return Err("building the Debian node images needs root (chroot, overlayfs)".into());
    }
    let (lower, upper, ovl_work, merged, out) = (
        work.join("lower"),
        work.join("upper"),
        work.join("work"),
        work.join("merged"),
        work.join("layout"),
    );
    for d in [&lower, &upper, &ovl_work, &merged, &out] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // v1's one layer, the Debian root, unpacked as it is.
    let base_layer = v1_layer(base)?;
    run(Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpzf"])
        .arg(
            base.layout
                .join("blobs/sha256")
                .join(&base_layer.digest[7..]),
        )
        .arg("-C")
        .arg(&lower))?;
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            ovl_work.display()
        ))
        .arg(&merged))?;
    let installed = install_package(&merged, deb);
    run(Command::new("umount").arg(&merged))?;
    installed?;
    whiteouts_to_oci(&upper)?;
    let terra_tar = root_layer_from_dir(&upper, MTIME_CLAMP)?;
    // The blobs live in the new layout too: it stands alone.
    let base_blob = put_layer_copy(&out, base, &base_layer)?;
    let terra_blob = put_layer(&out, &terra_tar, true)?;
    eprintln!(
        "lab: the Debian node's terra layer is {} MB ({} MB gzip)",
        terra_tar.len() >> 20,
        terra_blob.size >> 20
    );
    for (tag, version, failing) in [(N1, "1", false), (N2, "2", false), (N3, "3", true)] {
        let tree = work.join(format!("top-{tag}"));
        top_layer(&tree, &lower, version, failing)?;
        let top = put_layer(&out, &root_layer_from_dir(&tree, MTIME_CLAMP)?, true)?;
        put_image(
            &out,
            tag,
            &[base_blob.clone(), terra_blob.clone(), top],
            &[
                (
                    "org.opencontainers.image.title",
                    "Debian 12 node with terra (Terra lab)",
                ),
                ("org.opencontainers.image.version", version),
            ],
        )?;
    }
    Ok(())
}

/// The blob of v1's only layer, with what its manifest says of it.
fn v1_layer(base: &DebianImages) -> crate::Result<LayerBlob> {
    let blob = |d: &str| base.layout.join("blobs/sha256").join(&d[7..]);
    let read = |d: &str| -> crate::Result<serde_json::Value> {
        serde_json::from_slice(&fs::read(blob(d)).map_err(|e| format!("{d}: {e}"))?)
            .map_err(|e| format!("{d}: {e}"))
    };
    let manifest = read(&base.v1_digest)?;
    let config = read(manifest["config"]["digest"].as_str().unwrap_or_default())?;
    let layer = &manifest["layers"][0];
    Ok(LayerBlob {
        digest: layer["digest"].as_str().unwrap_or_default().to_string(),
        size: layer["size"].as_u64().unwrap_or_default(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        diff_id: config["rootfs"]["diff_ids"][0]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

fn put_layer_copy(out: &Path, base: &DebianImages, layer: &LayerBlob) -> crate::Result<LayerBlob> {
    let from = base.layout.join("blobs/sha256").join(&layer.digest[7..]);
    let to_dir = out.join("blobs/sha256");
    fs::create_dir_all(&to_dir).map_err(|e| format!("{}: {e}", to_dir.display()))?;
    let to = to_dir.join(&layer.digest[7..]);
    run(Command::new("cp").arg("--reflink=auto").arg(&from).arg(&to))?;
    Ok(layer.clone())
}

/// `apt-get install ./terra.deb` in `root`, then apt's lists, caches and logs removed.
fn install_package(root: &Path, deb: &Path) -> crate::Result<()> {
    let inside = root.join("tmp/terra.deb");
    fs::copy(deb, &inside).map_err(|e| format!("{}: {e}", inside.display()))?;
    // Name resolution for apt inside the root; removed again below.
    fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))
        .map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    let chroot = |args: &[&str]| {
        run(Command::new("timeout")
            .args(["--kill-after=10", &CHROOT_TIMEOUT_S.to_string(), "chroot"])
            .arg(root)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    // apt-key and dpkg's scripts want /dev/null and /proc.
    let dev = root.join("dev");
    let proc = root.join("proc");
    run(Command::new("mount").arg("--bind").arg("/dev").arg(&dev))?;
    let installed = run(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(&proc))
    .and_then(|_| chroot(&["apt-get", "-q", "update"]))
    .and_then(|_| chroot(&["apt-get", "-q", "-y", "install", "/tmp/terra.deb"]))
    .and_then(|_| chroot(&["apt-get", "clean"]));
    for m in [&proc, &dev] {
        let _ = Command::new("umount").arg("-l").arg(m).output();
    }
    installed?;
    for gone in ["tmp/terra.deb", "etc/resolv.conf"] {
        fs::remove_file(root.join(gone)).map_err(|e| format!("{gone}: {e}"))?;
    }
    debian::tidy(root)
}

/// Turns overlayfs's whiteouts in `upper` (0/0 character devices, opaque directories) into
/// the OCI layer's (`.wh.<name>` files, `.wh..wh..opq`).
/// Also drops overlayfs's own `trusted.overlay.*` attributes, which are not the image's.
fn whiteouts_to_oci(dir: &Path) -> crate::Result<()> {
    let opaque = drop_overlay_xattrs(dir)?;
    if opaque {
        fs::write(dir.join(".wh..wh..opq"), b"").map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let m = e
            .metadata()
            .map_err(|err| format!("{}: {err}", e.path().display()))?;
        if m.file_type().is_char_device() && m.rdev() == 0 {
            fs::remove_file(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?;
            let wh = dir.join(format!(".wh.{}", e.file_name().to_string_lossy()));
            fs::write(&wh, b"").map_err(|err| format!("{}: {err}", wh.display()))?;
        } else if m.is_dir() {
            whiteouts_to_oci(&e.path())?;
        } else if !m.file_type().is_symlink() {
            drop_overlay_xattrs(&e.path())?;
        }
    }
    Ok(())
}

/// Removes the `trusted.overlay.*` attributes of `path`; true when it was an opaque
/// directory.
fn drop_overlay_xattrs(path: &Path) -> crate::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut names = vec![0u8; 4096];
    // SAFETY: `p` is a NUL-terminated path that outlives the call; the kernel writes at
    // most `names.len()` bytes into `names`.
    let len = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(format!(
            "{}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let mut opaque = false;
    for name in names[..len as usize]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"trusted.overlay."))
    {
        let n = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
        if name == b"trusted.overlay.opaque" {
            let mut v = [0u8; 4];
            // SAFETY: as above; at most `v.len()` bytes are written into `v`.
            let l =
                unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            opaque = l == 1 && v[0] == b'y';
        }
        // SAFETY: both strings are NUL-terminated and outlive the call.
        if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } != 0 {
            return Err(format!(
                "{}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(opaque)
}

/// The small top layer of one image: its version, the agent, its health checks.
fn top_layer(tree: &Path, lower: &Path, version: &str, failing: bool) -> crate::Result<()> {
    let mut files: Vec<(&str, String, u32)> = vec![
        ("etc/terra-demo-version", format!("{version}\n"), 0o644),
        ("usr/local/sbin/terra-e2e", AGENT.into(), 0o755),
        (
            "etc/systemd/system/terra-e2e.service",
            AGENT_UNIT.into(),
            0o644,
        ),
        ("etc/terra/health.d/10-terra", CHECK_PASSES.into(), 0o755),
        (
            "etc/systemd/network/80-terra-e2e.network",
            NETWORK.into(),
            0o644,
        ),
    ];
    if failing {
        files.push(("etc/terra/health.d/20-app", CHECK_FAILS.into(), 0o755));
    }
    for (rel, text, mode) in files {
        let path = tree.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::write(&path, text)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for (wants, unit) in [
        ("multi-user.target.wants", "systemd-networkd.service"),
        ("sockets.target.wants", "systemd-networkd.socket"),
        (
            "network-online.target.wants",
            "systemd-networkd-wait-online.service",
        ),
    ] {
        let dir = tree.join("etc/systemd/system").join(wants);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::os::unix::fs::symlink(format!("/lib/systemd/system/{unit}"), dir.join(unit))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let wants = tree.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).map_err(|e| format!("{}: {e}", wants.display()))?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/terra-e2e.service",
        wants.join("terra-e2e.service"),
    )
    .map_err(|e| format!("{}: {e}", wants.display()))?;
    // Directories the base has keep its owner and mode (a layer's entry replaces them).
    for dir in [
        "etc",
        "etc/systemd",
        "etc/systemd/system",
        "etc/systemd/system/multi-user.target.wants",
        "usr",
        "usr/local",
        "usr/local/sbin",
    ] {
        let (from, to) = (lower.join(dir), tree.join(dir));
        if let Ok(m) = fs::metadata(&from) {
            std::os::unix::fs::chown(&to, Some(m.uid()), Some(m.gid()))
                .map_err(|e| format!("{}: {e}", to.display()))?;
            fs::set_permissions(&to, m.permissions())
                .map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    Ok(())
}

/// Image [`N1`] installed by `terra install` on a bootable disk (`mbr = true`: SeaBIOS and
/// GRUB start the base kernel in `.terra/kernel`, which `terra apply --reboot` kexecs),
/// 2 GiB, with `append` on its kernel command line; cached by content
/// ([`crate::oci_root::boot_disk`]).
pub fn boot_disk(images: &NodeImages, uuid: &str, append: &str) -> crate::Result<PathBuf> {
    let a = crate::build::artifacts()?;
    let digest = images
        .digest(N1)
        .ok_or_else(|| format!("{}: no image {N1}", images.layout.display()))?;
    crate::oci_root::boot_disk(
        &crate::oci_root::BootDisk {
            terra: &a.terra,
            stage0: &a.stage0,
            kernel: &a.kernel,
            image: &images.reference(N1),
            uuid,
            append,
            size_mb: 2048,
        },
        &format!("debian-node-{}", &digest[7..19]),
    )
}

/// Writes a scenario's steps (`on-<version>.<k>`, and any helper file, each executable)
/// into `disk`'s persistent `/etc/terra-e2e` (the `/etc` overlay's upper directory in
/// subvolume `persist`) and appends `node_toml` (an `[update]` table, say) to the
/// `.terra/node.toml` the install kept, beside which it writes `kept` (name, content; 0600:
/// a controller token, say).
pub fn prepare(
    disk: &Path,
    steps: &[(&str, String)],
    node_toml: &str,
    kept: &[(&str, String)],
) -> crate::Result<()> {
    crate::disk::with_mount(disk, |top| {
        let dir = top.join("persist/etc/upper/terra-e2e");
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, text) in steps {
            let path = dir.join(name);
            fs::write(&path, text)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for (name, text) in kept {
            let path = top.join(".terra").join(name);
            fs::write(&path, text)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o600)))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let node = top.join(".terra/node.toml");
        let mut toml = fs::read_to_string(&node).map_err(|e| format!("{}: {e}", node.display()))?;
        toml.push_str(node_toml);
        fs::write(&node, toml).map_err(|e| format!("{}: {e}", node.display()))
    })
}
