//! An image made by `terra create` for the boot scenarios and `terra run`: the demo image
//! as the base, a `RUN` step whose output the guest shows, and an init named only in
//! server.toml (`init =`, recorded in the image config) that stage0 must start by itself.
//! Cached under target/lab/images by the inputs and terra's bytes; buildah's storage
//! lives in a temporary directory removed afterwards.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::oci_root::{demo_layout, sha256};
use crate::{lab_dir, lab_lock, publish_dir};

/// The tag of the created image.
pub const TAG: &str = "1";

/// The line the image's init prints before it starts the demo init.
pub const MARKER: &str = "TERRA-CREATED run=made-by-a-run-step";

const SERVER_TOML: &str = r#"hostname = "created"
version = "1"
os = "oci:base:demo"
userland = """
RUN echo made-by-a-run-step > /etc/created-run
COPY created-init /sbin/created-init
"""
init = "/sbin/created-init"
"#;

const CREATED_INIT: &str = r#"#!/bin/sh
echo "TERRA-CREATED run=$(cat /etc/created-run) pid=$$ host=$(cat /etc/hostname)"
exec /sbin/init
"#;

/// The created image's layout (tag [`TAG`]) made by `terra` from the demo image.
pub fn created_layout(terra: &Path, busybox: &Path) -> crate::Result<PathBuf> {
    let (demo, digest) = demo_layout(busybox)?;
    let terra_bytes = fs::read(terra).map_err(|e| format!("{}: {e}", terra.display()))?;
    let key = sha256(
        format!(
            "{digest}\n{SERVER_TOML}\n{CREATED_INIT}\n{}",
            sha256(&terra_bytes)
        )
        .as_bytes(),
    );
    let layout = lab_dir()
        .join("images")
        .join(format!("created-{}", &key[7..19]));
    let _turn = lab_lock("created-layout")?;
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    let work = crate::disk::tempdir("created")?;
    let made = (|| -> crate::Result<()> {
        let ctx = work.join("ctx");
        fs::create_dir_all(&ctx).map_err(|e| format!("{}: {e}", ctx.display()))?;
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&demo)
            .arg(ctx.join("base"))
            .status()
            .map_err(|e| format!("cp: {e}"))?;
        if !cp.success() {
            return Err(format!("cp -a {} failed", demo.display()));
        }
        let init = ctx.join("created-init");
        fs::write(&init, CREATED_INIT).map_err(|e| format!("{}: {e}", init.display()))?;
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", init.display()))?;
        fs::write(ctx.join("server.toml"), SERVER_TOML).map_err(|e| e.to_string())?;
        let conf = buildah_storage(&work)?;
        let tmp = work.join("layout");
        let t = crate::netns::run_timed(
            Command::new(terra)
                .env("CONTAINERS_STORAGE_CONF", &conf)
                .current_dir(&ctx)
                .arg("create")
                .arg("--output")
                .arg(format!("oci:{}:{TAG}", tmp.display()))
                .arg("server.toml"),
            Duration::from_secs(300),
        )?;
        if !t.status.success() {
            return Err(format!("terra create failed: {}{}", t.stdout, t.stderr));
        }
        if let Some(parent) = layout.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        publish_dir(&tmp, &layout)
    })();
    let _ = fs::remove_dir_all(&work);
    made.map(|()| layout)
}

/// The fenced block of README.md whose first line is `first` (the fences left out): the
/// walkthrough's files and commands as the README shows them.
pub fn readme_block(first: &str) -> crate::Result<String> {
    let path = crate::workspace().join("README.md");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            if body.first() == Some(&first) {
                return Ok(body.join("\n") + "\n");
            }
        }
    }
    Err(format!(
        "{}: no fenced block starting with {first:?}",
        path.display()
    ))
}

/// The first line of the README's walkthrough commands.
pub const README_COMMANDS: &str =
    "# as root; a registry on localhost:5000 (Debian's docker-registry), the package beside server.toml";

/// README's Debian example laid out in `work` as the README has it: `web/server.toml`
/// and `web/hello.service` (README's text, `localhost:5000` replaced by `registry`), the
/// lab's Debian 12 image as `web/debian:bookworm`, and `storage.conf` for buildah's storage
/// under `work`. `deb` is copied in as `web/terra.deb` only when `copy_deb` (the README's
/// own `cp` does it otherwise). Returns the `web` directory.
pub fn debian_example(
    work: &Path,
    registry: &str,
    deb: &Path,
    copy_deb: bool,
) -> crate::Result<PathBuf> {
    let debian = crate::debian::debian_images()?;
    let web = work.join("web");
    fs::create_dir_all(&web).map_err(|e| format!("{}: {e}", web.display()))?;
    for (name, first) in [
        ("server.toml", "# web/server.toml"),
        ("hello.service", "# web/hello.service"),
    ] {
        let text = readme_block(first)?.replace("localhost:5000", registry);
        fs::write(web.join(name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    if copy_deb {
        fs::copy(deb, web.join("terra.deb")).map_err(|e| format!("{}: {e}", deb.display()))?;
    }
    let layout = web.join("debian");
    if !layout.exists() {
        let t = crate::netns::run_timed(
            Command::new("skopeo")
                .arg("copy")
                .arg(debian.reference(crate::debian::V1))
                .arg(format!("oci:{}:bookworm", layout.display())),
            Duration::from_secs(300),
        )?;
        if !t.status.success() {
            return Err(format!("skopeo copy of the Debian base: {}", t.stderr));
        }
    }
    buildah_storage(work)?;
    Ok(web)
}

/// Writes `dir/storage.conf`, buildah's storage (vfs) under `dir` alone, for
/// `CONTAINERS_STORAGE_CONF`; returns its path. Removing `dir` removes all of it.
pub fn buildah_storage(dir: &Path) -> crate::Result<PathBuf> {
    let conf = dir.join("storage.conf");
    fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/storage\"\nrunroot = \"{0}/run\"\n",
            dir.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    Ok(conf)
}
