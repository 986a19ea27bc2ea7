//! `terra create` against its engine: the README's Debian example (`lab::created`) made by
//! `terra create --output oci:…` and, side by side in the same run, by `buildah bud` of the
//! equivalent Containerfile written by hand (the userland lines, then the settings terra
//! writes as COPY/RUN steps) pushed to a layout the same way. Each run starts from the same
//! state: the base pulled into buildah's storage, nothing built kept. Reports each one's
//! time (median of `runs`) and image bytes (the layers' and config's blobs), and the ratios.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::created::debian_example;

/// Bound on one build.
const BUILD_S: u64 = 900;

/// The hand-written equivalent of the README's server.toml (its userland, then what terra
/// writes after the build: host name, root's key, networkd enabled for `en*`, resolver,
/// the init label).
const EQUIVALENT: &str = r#"FROM oci:debian:bookworm
COPY terra.deb /tmp/terra.deb
RUN apt-get update && apt-get install -y /tmp/terra.deb \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/terra.deb
COPY hello.service /etc/systemd/system/hello.service
RUN systemctl enable hello.service
RUN mkdir -p -m 0700 /root/.ssh \
 && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHello you@laptop' > /root/.ssh/authorized_keys \
 && chmod 0600 /root/.ssh/authorized_keys \
 && printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' > /etc/systemd/network/50-terra-0.network \
 && systemctl enable systemd-networkd.service
COPY bench-hostname /etc/hostname
COPY bench-resolv.conf /etc/resolv.conf
LABEL org.terra.init=/lib/systemd/systemd
"#;

fn timed(cmd: &mut Command) -> crate::Result<f64> {
    let start = Instant::now();
    let t = crate::netns::run_timed(cmd, Duration::from_secs(BUILD_S))?;
    if !t.status.success() {
        return Err(format!("{cmd:?} failed: {}{}", t.stdout, t.stderr));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Bytes of the image tagged `tag` in `layout`: config and layer blobs.
fn image_bytes(layout: &Path, tag: &str) -> crate::Result<u64> {
    let read = |p: &Path| -> crate::Result<serde_json::Value> {
        serde_json::from_slice(&fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let index = read(&layout.join("index.json"))?;
    let m = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .ok_or_else(|| format!("{}: no {tag}", layout.display()))?;
    let digest = m["digest"].as_str().unwrap_or_default();
    let manifest = read(&layout.join("blobs/sha256").join(&digest[7..]))?;
    let mut bytes = manifest["config"]["size"].as_u64().unwrap_or(0);
    for l in manifest["layers"].as_array().into_iter().flatten() {
        bytes += l["size"].as_u64().unwrap_or(0);
    }
    Ok(bytes)
}

/// The create case: `runs` builds of each, alternating.
pub fn create_case(terra: &Path, runs: usize) -> crate::Result<String> {
    let deb = crate::package::build_deb()?;
    let work = crate::disk::tempdir("bench-create")?;
    let result = (|| -> crate::Result<String> {
        let web = debian_example(&work, "localhost:5000", &deb, true)?;
        fs::write(web.join("Containerfile.bench"), EQUIVALENT).map_err(|e| e.to_string())?;
        fs::write(web.join("bench-hostname"), "web\n").map_err(|e| e.to_string())?;
        fs::write(web.join("bench-resolv.conf"), "nameserver 10.0.2.3\n")
            .map_err(|e| e.to_string())?;
        let conf = work.join("storage.conf");
        let buildah = |args: &[&str]| {
            let mut c = Command::new("buildah");
            c.env("CONTAINERS_STORAGE_CONF", &conf)
                .current_dir(&web)
                .args(args);
            c
        };
        // The base in buildah's storage before the first run, for both.
        timed(&mut buildah(&["pull", "oci:debian:bookworm"]))?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut ours_bytes, mut theirs_bytes) = (0, 0);
        for n in 0..runs.max(1) {
            let out = work.join(format!("terra-{n}"));
            ours.push(timed(
                Command::new(terra)
                    .env("CONTAINERS_STORAGE_CONF", &conf)
                    .current_dir(&web)
                    .args(["create", "--output"])
                    .arg(format!("oci:{}", out.display()))
                    .arg("server.toml"),
            )?);
            ours_bytes = image_bytes(&out, "1")?;
            let out = work.join(format!("buildah-{n}"));
            let start = Instant::now();
            timed(&mut buildah(&[
                "bud",
                "--isolation",
                "chroot",
                "--layers=false",
                "--timestamp=0",
                "--omit-history",
                "-f",
                "Containerfile.bench",
                "-t",
                "bench-equivalent",
                ".",
            ]))?;
            timed(&mut buildah(&[
                "push",
                "bench-equivalent",
                &format!("oci:{}:1", out.display()),
            ]))?;
            timed(&mut buildah(&["rmi", "bench-equivalent"]))?;
            theirs.push(start.elapsed().as_secs_f64());
            theirs_bytes = image_bytes(&out, "1")?;
        }
        let (o, t) = (super::median(&ours), super::median(&theirs));
        Ok(format!(
            "### Making an OS image: terra create vs buildah bud\n\n\
             README's Debian example (Debian 12 base, the terra package installed by apt, a unit,\n\
             SSH key, networkd, resolver), {runs} build(s) each, alternating, the base already in\n\
             buildah's storage (vfs, chroot isolation), written to an OCI layout.\n\n\
             | | terra create | buildah bud (equivalent Containerfile) | ratio |\n\
             |---|---|---|---|\n\
             | build time, median | {o:.1} s | {t:.1} s | {:.2}× |\n\
             | image bytes (config + layers) | {ours_bytes} | {theirs_bytes} | {:.4}× |\n\n\
             Goal: within 1.2× of buildah's time, no larger.\n",
            o / t,
            ours_bytes as f64 / theirs_bytes as f64
        ))
    })();
    let _ = fs::remove_dir_all(&work);
    result
}
