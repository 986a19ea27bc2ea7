//! Extension images for the extensions scenario (issue 28): a demo root whose os-release
//! says `ID=terra-demo VERSION_ID=1` (and whose init reports what the extensions did), and
//! extension images made by `umoci insert` (a real OCI tool): `hello` fits the root (a
//! `/usr/bin/hello` and an `/etc/hello.conf`), `other` names `VERSION_ID=2`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk::{demo_root, tempdir, write_exec};
use crate::oci_root::{layout_from_dir, Install};
use crate::{lab_dir, run};

/// The root's init: boot.json as the demo init prints it, then what the extensions
/// changed, then power off.
pub const EXT_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
echo "TERRA-DEMO-INIT subvol=$(cat /etc/demo-subvol) pid=$$"
echo "--- /run/terra/boot.json"
cat /run/terra/boot.json
echo
echo "--- end boot.json"
if [ -x /usr/bin/hello ]; then echo "TERRA-EXT-HELLO $(/usr/bin/hello)"; else echo "TERRA-EXT-HELLO missing"; fi
if [ -e /usr/bin/other ]; then echo "TERRA-EXT-OTHER present"; else echo "TERRA-EXT-OTHER absent"; fi
if touch /usr/ext-write 2>/run/ext-err; then echo "TERRA-EXT-USR-WRITE ok"
else echo "TERRA-EXT-USR-WRITE failed: $(cat /run/ext-err)"; fi
echo "TERRA-EXT-ETC $(cat /etc/hello.conf 2>&1)"
if echo edited > /etc/hello.conf; then echo "TERRA-EXT-ETC-WRITE $(cat /etc/hello.conf)"; fi
grep ' /usr ' /proc/mounts | sed 's/^/TERRA-EXT-MOUNT /'
sync
poweroff -f
"#;

/// The root image's os-release.
pub const OS_RELEASE: &str = "NAME=\"Terra demo\"\nID=terra-demo\nVERSION_ID=1\n";

/// The OCI layout of the scenario's root (tag `demo`), cached under target/lab/images.
pub fn root_layout(busybox: &Path) -> crate::Result<PathBuf> {
    let _turn = crate::lab_lock("extensions-root")?;
    let work = tempdir("ext-root")?;
    let root = work.join("root");
    let tmp = work.join("layout");
    let made = demo_root(&root, busybox, "v1")
        .and_then(|()| write_exec(&root.join("sbin/init"), EXT_INIT))
        .and_then(|()| {
            fs::write(root.join("etc/os-release"), OS_RELEASE).map_err(|e| e.to_string())
        })
        .and_then(|()| layout_from_dir(&root, &tmp));
    let placed = made.and_then(|digest| {
        let layout = lab_dir()
            .join("images")
            .join(format!("ext-root-{}", &digest[7..19]));
        if !layout.join("index.json").is_file() {
            fs::create_dir_all(lab_dir().join("images")).map_err(|e| e.to_string())?;
            crate::publish_dir(&tmp, &layout)?;
        }
        Ok(layout)
    });
    let _ = fs::remove_dir_all(&work);
    placed
}

/// The root installed by `terra install` (with its persistent `/etc` overlay), cached.
pub fn installed(terra: &Path, layout: &Path, uuid: &str) -> crate::Result<PathBuf> {
    let image = format!("oci:{}:demo", layout.display());
    let name = format!(
        "ext-{uuid}-{}",
        layout.file_name().unwrap_or_default().to_string_lossy()
    );
    Install::single(&image, "os", uuid, &name).disk(terra)
}

/// An extension image to make: tag, extension-release text, (path, content) files.
pub type ExtImage<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// An OCI layout under `dir` made by umoci: one image per (tag, extension-release text,
/// files), its `/usr`, `/etc` and `/opt` each `umoci insert`ed as a layer onto an empty
/// image. The release is written as `extension-release.<tag>` unless empty.
pub fn extension_layout(dir: &Path, images: &[ExtImage]) -> crate::Result<PathBuf> {
    let layout = dir.join("ext-layout");
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout))?;
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:empty", layout.display())))?;
    for (tag, release, files) in images {
        let src = dir.join(format!("src-{tag}"));
        let mut all: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        if !release.is_empty() {
            all.push((
                format!("usr/lib/extension-release.d/extension-release.{tag}"),
                release.to_string(),
            ));
        }
        for (p, text) in &all {
            let path = src.join(p);
            if let Some(d) = path.parent() {
                fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            if p.starts_with("usr/bin/") {
                write_exec(&path, text)?;
            } else {
                fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        // One layer per top directory, each inserted at its place in the image.
        let mut from = "empty".to_string();
        for top in ["usr", "etc", "opt"] {
            if !src.join(top).is_dir() {
                continue;
            }
            let to = format!("{tag}-{top}");
            run(Command::new("umoci")
                .args(["insert", "--image"])
                .arg(format!("{}:{from}", layout.display()))
                .args(["--tag", &to])
                .arg(src.join(top))
                .arg(format!("/{top}")))?;
            from = to;
        }
        run(Command::new("umoci")
            .args(["tag", "--image"])
            .arg(format!("{}:{from}", layout.display()))
            .arg(tag))?;
    }
    Ok(layout)
}
