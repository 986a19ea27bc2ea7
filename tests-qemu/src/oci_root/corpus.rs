//! A corpus of OCI images made by real tools, built on this host from Debian's packages:
//! `umoci` (insert of a file, a directory, a whiteout, an opaque directory; repack after
//! deleting and replacing files), `buildah` (a Containerfile with `RUN`, `COPY`, `USER`
//! and deletions of a lower layer's files, per-instruction layers and `--squash`),
//! `skopeo` (a `docker save`-style archive, `oci:` ↔ `dir:` with zstd and gzip) and GNU
//! `tar` layers added with `umoci raw add-layer` (PAX and GNU long names, hardlinks across
//! layers, a file replaced by a directory and back, xattrs, device nodes, sparse files in
//! every GNU format, the opaque-directory marker).
//!
//! Built once and cached under `target/lab/corpus/<key>`, where the key hashes the tool
//! versions, the busybox binary, the demo init and this file: a new tool or a changed
//! recipe makes a new corpus.
//! Every command runs under a time bound and is killed by PID when it overruns; buildah
//! keeps its storage in a temporary directory removed afterwards.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::disk::{tempdir, DEMO_INIT};
use crate::host::which;
use crate::lab_dir;
use crate::netns::run_bounded;

/// The recipes, hashed into the cache key.
const RECIPES: &str = include_str!("corpus.rs");

/// The tools the corpus is made with: (command, Debian package).
pub const TOOLS: &[(&str, &str)] = &[
    ("umoci", "umoci"),
    ("skopeo", "skopeo"),
    ("buildah", "buildah"),
    ("tar", "tar"),
    ("mknod", "coreutils"),
];

const LIMIT: Duration = Duration::from_secs(300);

/// One image of the corpus and what it is compared with.
#[derive(Debug, Clone)]
pub struct Image {
    /// A short name, saying which tool made it how.
    pub name: &'static str,
    /// What terra unpacks: `oci:LAYOUT:TAG` or `docker-archive:FILE`.
    pub terra_ref: String,
    /// What `umoci unpack` reads as the reference: this image's layout and tag, or (when
    /// umoci cannot read this form) the same layers in a form it reads.
    pub umoci: (PathBuf, String),
    /// Why the reference is another form of the image, when it is.
    pub reference_note: Option<&'static str>,
}

/// The corpus: its directory and images.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// `target/lab/corpus/<key>`.
    pub dir: PathBuf,
    /// Every image, by name.
    pub images: Vec<Image>,
}

impl Corpus {
    /// The image called `name`.
    pub fn get(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }

    /// The umoci layout (tags from `umoci insert` and `umoci repack`).
    pub fn umoci_layout(&self) -> PathBuf {
        self.dir.join("umoci")
    }

    /// The buildah layout (tags `layers`, `squash`, and `layers-umoci`: `layers` with a
    /// file added by `umoci insert`).
    pub fn buildah_layout(&self) -> PathBuf {
        self.dir.join("buildah")
    }
}

/// Missing tools, named by their Debian packages.
pub fn missing_tools() -> Vec<String> {
    missing(TOOLS)
}

fn missing(tools: &[(&str, &str)]) -> Vec<String> {
    tools
        .iter()
        .filter(|(cmd, _)| which(cmd).is_none())
        .map(|(cmd, pkg)| format!("{cmd} (apt-get install {pkg})"))
        .collect()
}

fn cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("LC_ALL", "C");
    c
}

fn run(c: &mut Command) -> crate::Result<String> {
    run_bounded(c, LIMIT)
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

/// The corpus, built now when it is not cached. Fails naming the Debian package of every
/// missing tool.
pub fn corpus(busybox: &Path) -> crate::Result<Corpus> {
    // One builder at a time, across processes too; it also prunes older corpora.
    let _turn = crate::lab_lock("corpus")?;
    let missing = missing_tools();
    if !missing.is_empty() {
        return Err(format!(
            "the image corpus needs {} (scripts/setup-host.sh installs them)",
            missing.join(", ")
        ));
    }
    let mut key = Sha256::new();
    key.update(RECIPES.as_bytes());
    key.update(DEMO_INIT.as_bytes());
    for (tool, args) in [
        ("umoci", "--version"),
        ("skopeo", "--version"),
        ("buildah", "--version"),
        ("tar", "--version"),
    ] {
        key.update(run(cmd(tool).arg(args))?.as_bytes());
    }
    key.update(fs::read(busybox).map_err(io_err(busybox))?);
    let key: String = key.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = lab_dir().join("corpus").join(&key);
    if !dir.join("done").is_file() {
        let work = tempdir("corpus")?;
        let built = build(&work.join("c"), busybox, &work);
        let placed = built.and_then(|()| {
            fs::create_dir_all(dir.parent().unwrap_or(&dir)).map_err(io_err(&dir))?;
            fs::write(work.join("c/done"), &key).map_err(io_err(&work))?;
            match fs::rename(work.join("c"), &dir) {
                Ok(()) => Ok(()),
                // Another process built it meanwhile.
                Err(_) if dir.join("done").is_file() => Ok(()),
                Err(e) => Err(format!("{}: {e}", dir.display())),
            }
        });
        let _ = fs::remove_dir_all(&work);
        placed?;
        // Corpora of older tools or recipes are not read again, nor the disks installed
        // from them (named after their key).
        let mut old = Vec::new();
        if let Ok(entries) = fs::read_dir(lab_dir().join("corpus")) {
            for e in entries.flatten() {
                if e.file_name() != key.as_str() {
                    old.push(e.file_name().to_string_lossy().into_owned());
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        if let Ok(entries) = fs::read_dir(lab_dir().join("disks")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if old.iter().any(|k| name.contains(&format!("-{k}"))) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(Corpus {
        images: images(&dir),
        dir,
    })
}

fn oci(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}

fn images(dir: &Path) -> Vec<Image> {
    let same = |name: &'static str, layout: &str, tag: &str| Image {
        name,
        terra_ref: oci(&dir.join(layout), tag),
        umoci: (dir.join(layout), tag.to_string()),
        reference_note: None,
    };
    let mut v = vec![
        same("umoci-insert-dir", "umoci", "dir"),
        same("umoci-insert-file", "umoci", "file"),
        same("umoci-insert-whiteout", "umoci", "whiteout"),
        same("umoci-insert-opaque", "umoci", "opaque"),
        same("umoci-repack", "umoci", "repack"),
        same("buildah-layers", "buildah", "layers"),
        same("buildah-squash", "buildah", "squash"),
        same("buildah-then-umoci-insert", "buildah", "layers-umoci"),
        same("skopeo-oci-from-docker-archive", "from-archive", "layers"),
        same("skopeo-oci-from-dir-gzip", "from-dir-gzip", "layers"),
        same("gnu-tar-layers", "gnu", "layers"),
        same("gnu-tar-sparse-pax", "gnu", "sparse-pax"),
    ];
    v.push(Image {
        name: "skopeo-docker-archive",
        terra_ref: format!(
            "docker-archive:{}",
            dir.join("buildah.docker.tar").display()
        ),
        umoci: (dir.join("buildah"), "layers".into()),
        reference_note: Some("umoci reads OCI layouts only: the layout it was saved from"),
    });
    v.push(Image {
        name: "skopeo-oci-from-dir-zstd",
        terra_ref: oci(&dir.join("from-dir-zstd"), "layers"),
        umoci: (dir.join("from-dir-gzip"), "layers".into()),
        reference_note: Some(
            "umoci 0.4.7 predates zstd layers: the same layers (same diff_ids) gzipped",
        ),
    });
    v.push(Image {
        name: "gnu-tar-sparse-old-gnu",
        terra_ref: oci(&dir.join("gnu"), "sparse-gnu"),
        umoci: (dir.join("gnu"), "sparse-pax-1.0".into()),
        reference_note: Some(
            "umoci 0.4.7 refuses old GNU sparse entries (typeflag 'S', which Go's reader \
             expands): the same file in PAX sparse format 1.0",
        ),
    });
    v
}

fn build(out: &Path, busybox: &Path, work: &Path) -> crate::Result<()> {
    fs::create_dir_all(out).map_err(io_err(out))?;
    umoci_images(&out.join("umoci"), &work.join("umoci-src"))?;
    buildah_images(&out.join("buildah"), busybox, &work.join("buildah"))?;
    skopeo_images(out)?;
    gnu_tar_images(&out.join("gnu"), &work.join("gnu-src"))?;
    Ok(())
}

fn write(p: &Path, data: &[u8]) -> crate::Result<()> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    fs::write(p, data).map_err(io_err(p))
}

fn umoci(args: &[&str], layout: &Path, tag: &str) -> crate::Result<String> {
    run(cmd("umoci")
        .arg(args[0])
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .args(&args[1..]))
}

/// `umoci insert` of a directory, a file (the layer issue 18 found: no padding, no end
/// blocks), a whiteout and an opaque directory; `umoci repack` after deleting a file,
/// replacing one, and turning a directory into a file.
fn umoci_images(layout: &Path, src: &Path) -> crate::Result<()> {
    run(cmd("umoci").arg("init").arg("--layout").arg(layout))?;
    umoci(&["new"], layout, "empty")?;
    write(&src.join("d/a"), b"a\n")?;
    write(&src.join("d/sub/b"), b"b\n")?;
    write(&src.join("d/sub/c"), b"c\n")?;
    write(&src.join("marker"), b"hi\n")?;
    write(&src.join("od/new"), b"only this survives\n")?;
    let d = src.join("d");
    let insert = |from_tag: &str, tag: &str, extra: &[&str], args: &[&Path], target: &str| {
        run(cmd("umoci")
            .args(["insert", "--image"])
            .arg(format!("{}:{from_tag}", layout.display()))
            .args(["--tag", tag])
            .args(extra)
            .args(args)
            .arg(target))
    };
    insert("empty", "dir", &[], &[&d], "/etc/d")?;
    insert("dir", "file", &[], &[&src.join("marker")], "/etc/marker")?;
    insert("file", "whiteout", &["--whiteout"], &[], "/etc/d/a")?;
    insert(
        "whiteout",
        "opaque",
        &["--opaque"],
        &[&src.join("od")],
        "/etc/d/sub",
    )?;
    let bundle = src.join("bundle");
    run(cmd("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:opaque", layout.display()))
        .arg(&bundle))?;
    let root = bundle.join("rootfs");
    let edit = || -> std::io::Result<()> {
        fs::remove_file(root.join("etc/marker"))?;
        fs::write(root.join("etc/d/new-file"), b"added by repack\n")?;
        fs::remove_dir_all(root.join("etc/d/sub"))?;
        fs::write(root.join("etc/d/sub"), b"a directory became this file\n")?;
        fs::create_dir(root.join("etc/marker.d"))?;
        fs::write(
            root.join("etc/marker.d/x"),
            b"a file's name is now a directory\n",
        )?;
        Ok(())
    };
    edit().map_err(|e| format!("editing {}: {e}", root.display()))?;
    run(cmd("umoci")
        .args(["repack", "--image"])
        .arg(format!("{}:repack", layout.display()))
        .arg(&bundle))?;
    Ok(())
}

/// The Containerfile of the buildah images: busybox, the lab's demo init (so that the
/// image boots in QEMU to the harness's markers), `RUN` steps that make, change and
/// delete files of earlier layers, and a `USER` step whose `RUN` makes files it owns.
const CONTAINERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY init /sbin/init
COPY corpus-check /sbin/corpus-check
RUN mkdir -p /etc /dev /proc /sys /run /tmp /root /home/user /usr/share/doc/old /var/lib \
 && chmod 1777 /tmp && chmod 0700 /root \
 && echo os > /etc/demo-subvol && echo terra-demo > /etc/hostname \
 && printf 'root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' > /etc/passwd \
 && chown 1000:1000 /home/user \
 && echo a > /usr/share/doc/a && echo b > /usr/share/doc/b && echo x > /usr/share/doc/old/x \
 && ln /usr/share/doc/b /usr/share/doc/b-link && ln -s ../share/doc/a /usr/share/doc/a-sym \
 && echo 'NAME="Terra corpus (buildah)"' > /etc/os-release
RUN rm -rf /usr/share/doc/a /usr/share/doc/old \
 && echo b, changed > /usr/share/doc/b && echo c > /usr/share/doc/c \
 && mkdir /usr/share/doc/a && echo now a directory > /usr/share/doc/a/inside \
 && chmod 4755 /bin/busybox
USER 1000
RUN echo made by uid 1000 > /home/user/mine && mkdir -m 0750 /home/user/dir \
 && ln -s mine /home/user/mine-link
"#;

/// An init for the booted buildah image (`init=/sbin/corpus-check`): reports what the
/// layers' `RUN` steps left, as the guest sees it, then runs the demo init.
pub const CORPUS_CHECK: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
echo "TERRA-CORPUS mine=$(stat -c %u:%a /home/user/mine) busybox=$(stat -c %a /bin/busybox) doc-a=$(stat -c %F /usr/share/doc/a) old=$(test -e /usr/share/doc/old && echo present || echo absent) b=$(cat /usr/share/doc/b)"
echo "TERRA-CORPUS-MARKER $(cat /etc/umoci-marker 2>/dev/null || echo none)"
exec /sbin/init
"#;

/// buildah bud with per-instruction layers, and with `--squash`, pushed into one layout.
fn buildah_images(layout: &Path, busybox: &Path, work: &Path) -> crate::Result<()> {
    let ctx = work.join("context");
    fs::create_dir_all(&ctx).map_err(io_err(&ctx))?;
    fs::copy(busybox, ctx.join("busybox")).map_err(io_err(busybox))?;
    for (name, text) in [("init", DEMO_INIT), ("corpus-check", CORPUS_CHECK)] {
        write(&ctx.join(name), text.as_bytes())?;
        fs::set_permissions(ctx.join(name), fs::Permissions::from_mode(0o755))
            .map_err(io_err(&ctx))?;
    }
    write(&ctx.join("Containerfile"), CONTAINERFILE.as_bytes())?;
    let storage = |c: &mut Command| {
        c.arg("--root")
            .arg(work.join("root"))
            .arg("--runroot")
            .arg(work.join("run"))
            .args(["--storage-driver", "vfs"]);
    };
    let result = (|| -> crate::Result<()> {
        for (tag, flag) in [("layers", "--layers"), ("squash", "--squash")] {
            let mut b = cmd("buildah");
            storage(&mut b);
            b.args(["bud", "--isolation", "chroot", flag, "-t"])
                .arg(format!("terra-corpus:{tag}"))
                .arg("-f")
                .arg(ctx.join("Containerfile"))
                .arg(&ctx);
            run(&mut b)?;
            let mut p = cmd("buildah");
            storage(&mut p);
            p.arg("push")
                .arg(format!("terra-corpus:{tag}"))
                .arg(format!("oci:{}:{tag}", layout.display()));
            run(&mut p)?;
        }
        Ok(())
    })();
    // Nothing of buildah's stays behind: its storage lives under `work` alone.
    let _ = fs::remove_dir_all(work);
    result?;
    // The buildah image with a file added on top by `umoci insert`: a bootable image whose
    // top layer has issue 18's shape (no padding, no end-of-archive blocks).
    let marker = layout.with_extension("marker");
    write(&marker, b"inserted by umoci\n")?;
    let inserted = run(cmd("umoci")
        .args(["insert", "--image"])
        .arg(format!("{}:layers", layout.display()))
        .args(["--tag", "layers-umoci"])
        .arg(&marker)
        .arg("/etc/umoci-marker"));
    let _ = fs::remove_file(&marker);
    inserted.map(drop)
}

fn skopeo(args: &[&str]) -> crate::Result<String> {
    run(cmd("skopeo").arg("--insecure-policy").args(args))
}

/// skopeo conversions of the buildah image: a `docker save`-style archive and back to
/// `oci:`, and `oci:` → `dir:` → `oci:` recompressed with zstd and with gzip.
fn skopeo_images(out: &Path) -> crate::Result<()> {
    let src = oci(&out.join("buildah"), "layers");
    let archive = out.join("buildah.docker.tar");
    skopeo(&[
        "copy",
        &src,
        &format!("docker-archive:{}:terra/corpus:layers", archive.display()),
    ])?;
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &oci(&out.join("from-archive"), "layers"),
    ])?;
    for comp in ["zstd", "gzip"] {
        let dir = out.join(format!("dir-{comp}"));
        skopeo(&[
            "copy",
            "--dest-compress",
            "--dest-compress-format",
            comp,
            &src,
            &format!("dir:{}", dir.display()),
        ])?;
        skopeo(&[
            "copy",
            &format!("dir:{}", dir.display()),
            &oci(&out.join(format!("from-dir-{comp}")), "layers"),
        ])?;
        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    Ok(())
}

/// A file of `size` bytes with data only at `chunks` (the rest holes).
fn sparse_file(p: &Path, size: u64, chunks: &[(u64, &[u8])]) -> crate::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::File::create(p).map_err(io_err(p))?;
    for (off, data) in chunks {
        f.seek(SeekFrom::Start(*off))
            .and_then(|_| f.write_all(data))
            .map_err(io_err(p))?;
    }
    f.set_len(size).map_err(io_err(p))
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> crate::Result<()> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let key = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: both strings are NUL-terminated and live across the call; value is a valid
    // slice of value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "setxattr {name} on {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// GNU tar of `dir` (its entries as `./…`, sorted) in `format`, with `extra` options.
/// xattrs only in PAX: asked for with `--format=gnu`, GNU tar silently writes PAX.
fn gnu_tar(dir: &Path, out: &Path, format: &str, extra: &[&str]) -> crate::Result<()> {
    let xattrs: &[&str] = if format == "pax" { &["--xattrs"] } else { &[] };
    run(cmd("tar")
        .arg(format!("--format={format}"))
        .args(["--sort=name", "--numeric-owner"])
        .args(xattrs)
        .args(extra)
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg("."))?;
    Ok(())
}

/// GNU tar layers added with `umoci raw add-layer`: three layers with long names in PAX
/// and GNU form, xattrs, device nodes and a fifo, hardlinks within and across layers, a
/// file replaced by a directory and back (and a directory by a file and back), a whiteout
/// and an opaque directory; and sparse files in PAX formats 0.0, 0.1, 1.0 and old GNU.
fn gnu_tar_images(layout: &Path, src: &Path) -> crate::Result<()> {
    run(cmd("umoci").arg("init").arg("--layout").arg(layout))?;
    umoci(&["new"], layout, "empty")?;
    let long_dir = "usr/share/a-directory-whose-name-is-long-enough/to-need/more-than-the-hundred-bytes/of-a-ustar-name";
    // Layer 1 (PAX).
    let l1 = src.join("l1");
    let made = (|| -> crate::Result<()> {
        for d in ["etc", "dev", "opq/sub", "tree/y", long_dir] {
            fs::create_dir_all(l1.join(d)).map_err(io_err(&l1))?;
        }
        write(
            &l1.join(long_dir).join("file-with-a-long-name"),
            b"pax path\n",
        )?;
        write(&l1.join("tree/x"), b"x is a file in layer 1\n")?;
        write(&l1.join("tree/y/inside"), b"y is a directory in layer 1\n")?;
        write(&l1.join("tree/gone"), b"whited out in layer 2\n")?;
        write(&l1.join("opq/old"), b"hidden by the opaque marker\n")?;
        write(&l1.join("opq/sub/old2"), b"hidden too\n")?;
        write(&l1.join("etc/target"), b"hardlinked from layer 2\n")?;
        write(&l1.join("etc/a"), b"a\n")?;
        fs::hard_link(l1.join("etc/a"), l1.join("etc/a-link")).map_err(io_err(&l1))?;
        symlink(
            format!("/{long_dir}/file-with-a-long-name"),
            l1.join("etc/long-symlink"),
        )
        .map_err(io_err(&l1))?;
        let x = l1.join("etc/xattrs");
        write(&x, b"with xattrs\n")?;
        set_xattr(&x, "user.comment", b"hello")?;
        set_xattr(&x, "trusted.terra", b"trusted value")?;
        // VFS_CAP_REVISION_2, cap_net_raw permitted and effective.
        let cap = [
            1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        set_xattr(&x, "security.capability", &cap)?;
        for (name, kind, dev) in [
            ("dev/null", "c", Some((1, 3))),
            ("dev/loop0", "b", Some((7, 0))),
            ("dev/fifo", "p", None),
        ] {
            let mut c = cmd("mknod");
            c.args(["-m", "0640"]).arg(l1.join(name)).arg(kind);
            if let Some((ma, mi)) = dev {
                c.args([ma.to_string(), mi.to_string()]);
            }
            run(&mut c)?;
        }
        fs::set_permissions(l1.join("tree/x"), fs::Permissions::from_mode(0o640))
            .map_err(io_err(&l1))?;
        let l1_tar = src.join("l1.tar");
        gnu_tar(&l1, &l1_tar, "pax", &[])?;
        run(cmd("umoci")
            .args(["raw", "add-layer", "--image"])
            .arg(format!("{}:empty", layout.display()))
            .args(["--tag", "l1"])
            .arg(&l1_tar))?;

        // Layer 2 (GNU): long names as 'L'/'K' entries, x becomes a directory and y a
        // file, a whiteout, an opaque directory, a hardlink to a file of layer 1.
        let l2 = src.join("l2");
        let long2 = format!("{long_dir}/gnu-long-names");
        for d in ["tree/x", "opq", "etc", long2.as_str()] {
            fs::create_dir_all(l2.join(d)).map_err(io_err(&l2))?;
        }
        write(&l2.join(&long2).join("file"), b"GNU long name\n")?;
        symlink(
            format!("/{long2}/file-and-a-link-target-longer-than-one-hundred-bytes"),
            l2.join("etc/gnu-long-link"),
        )
        .map_err(io_err(&l2))?;
        write(&l2.join("tree/x/inside"), b"x is a directory in layer 2\n")?;
        write(&l2.join("tree/y"), b"y is a file in layer 2\n")?;
        write(&l2.join("tree/.wh.gone"), b"")?;
        write(&l2.join("opq/.wh..wh..opq"), b"")?;
        write(&l2.join("opq/new"), b"the opaque directory's own file\n")?;
        write(&l2.join("etc/target"), b"")?;
        // Sorted after its target, so that the target is the archive's file.
        fs::hard_link(l2.join("etc/target"), l2.join("etc/zz-cross-layer-link"))
            .map_err(io_err(&l2))?;
        let l2_tar = src.join("l2.tar");
        gnu_tar(&l2, &l2_tar, "gnu", &[])?;
        // GNU tar writes a hardlink only to a file earlier in the same archive; deleting
        // that file leaves a link whose target is layer 1's etc/target.
        run(cmd("tar")
            .arg("--delete")
            .arg("-f")
            .arg(&l2_tar)
            .arg("./etc/target"))?;
        run(cmd("umoci")
            .args(["raw", "add-layer", "--image"])
            .arg(format!("{}:l1", layout.display()))
            .args(["--tag", "l2"])
            .arg(&l2_tar))?;

        // Layer 3 (PAX): x back to a file, y back to a directory.
        let l3 = src.join("l3");
        fs::create_dir_all(l3.join("tree/y")).map_err(io_err(&l3))?;
        write(&l3.join("tree/x"), b"x is a file again in layer 3\n")?;
        write(
            &l3.join("tree/y/again"),
            b"y is a directory again in layer 3\n",
        )?;
        let l3_tar = src.join("l3.tar");
        gnu_tar(&l3, &l3_tar, "pax", &[])?;
        run(cmd("umoci")
            .args(["raw", "add-layer", "--image"])
            .arg(format!("{}:l2", layout.display()))
            .args(["--tag", "layers"])
            .arg(&l3_tar))?;

        // Sparse files: one image per GNU format umoci reads, one with all three, and the
        // old GNU form alone.
        let sp = src.join("sparse");
        fs::create_dir_all(sp.join("s")).map_err(io_err(&sp))?;
        sparse_file(
            &sp.join("s/holes"),
            3 << 20,
            &[(0, b"head"), (1 << 20, b"middle"), ((3 << 20) - 4, b"tail")],
        )?;
        sparse_file(&sp.join("s/all-hole"), 1 << 20, &[])?;
        sparse_file(&sp.join("s/hole-at-end"), 2 << 20, &[(0, &[0x5a; 8192])])?;
        let mut tag = "empty".to_string();
        for v in ["0.0", "0.1", "1.0"] {
            let t = src.join(format!("sparse-{v}.tar"));
            gnu_tar(
                &sp,
                &t,
                "pax",
                &["--sparse", &format!("--sparse-version={v}")],
            )?;
            let next = format!("sparse-pax-{v}");
            run(cmd("umoci")
                .args(["raw", "add-layer", "--image"])
                .arg(format!("{}:empty", layout.display()))
                .args(["--tag", &next])
                .arg(&t))?;
            run(cmd("umoci")
                .args(["raw", "add-layer", "--image"])
                .arg(format!("{}:{tag}", layout.display()))
                .args(["--tag", "sparse-pax"])
                .arg(&t))?;
            tag = "sparse-pax".into();
        }
        let t = src.join("sparse-gnu.tar");
        gnu_tar(&sp, &t, "gnu", &["--sparse"])?;
        run(cmd("umoci")
            .args(["raw", "add-layer", "--image"])
            .arg(format!("{}:empty", layout.display()))
            .args(["--tag", "sparse-gnu"])
            .arg(&t))?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(src);
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        assert_eq!(
            missing(&[("sh", "dash"), ("terra-no-such-tool", "terra-pkg")]),
            ["terra-no-such-tool (apt-get install terra-pkg)"]
        );
    }
}
