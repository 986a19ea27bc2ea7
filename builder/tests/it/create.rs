//! `terra create`: the image it makes from a server.toml is, entry by entry, what
//! `buildah bud` makes of the equivalent Containerfile written by hand (both unpacked by
//! umoci); it is the same bytes when made again; pushed with `--sign-key` it verifies with
//! the key and is refused with another; and bad recipes fail naming server.toml's key and
//! line with nothing written. buildah's storage lives in the test's directory.

use crate::oci_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use oci_common::signing::{bounded, openssl_key};
use oci_common::*;

/// Bound on one build (TCG-free: buildah on the host).
const T: u64 = 300;

/// The component: a unit to enable and networkd's program and unit (the busybox base has
/// no systemd; the component brings what `[netplan]` needs).
fn component_tree(root: &Path) {
    let put = |p: &str, text: &str, mode: u32| {
        let f = root.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, text).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
    };
    put("usr/bin/agent", "#!/bin/sh\necho agent\n", 0o755);
    put(
        "usr/lib/systemd/system/agent.service",
        "[Service]\nExecStart=/usr/bin/agent\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    put("usr/lib/systemd/systemd-networkd", "#!/bin/sh\n", 0o755);
    put(
        "usr/lib/systemd/system/systemd-networkd.service",
        "[Service]\nExecStart=/usr/lib/systemd/systemd-networkd\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
}

const SERVER_TOML: &str = r#"hostname = "example"
version = "7"
os = "oci:base:demo"
userland = """
RUN echo built-by-run > /etc/run-output && \
    mkdir -p /srv/www
COPY motd /etc/motd
ENV GREETING=hello
WORKDIR /srv/www
"""
init = "/sbin/init"
[[components]]
image = "oci:component:c"
systemd = ["agent.service"]
[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops@example"]
[netplan]
[[netplan.interfaces]]
name = "eth0"
addresses = ["10.0.0.5/24"]
gateway = "10.0.0.1"
[resolvconf]
nameservers = ["192.0.2.53"]
search = ["example"]
"#;

/// What terra create should make of SERVER_TOML, as a Containerfile a user would write.
const EQUIVALENT: &str = r#"FROM oci:component:c AS agent
FROM oci:base:demo
RUN echo built-by-run > /etc/run-output && mkdir -p /srv/www
COPY motd /etc/motd
ENV GREETING=hello
WORKDIR /srv/www
COPY --from=agent / /
RUN mkdir -p -m 0700 /root/.ssh \
 && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops@example' > /root/.ssh/authorized_keys \
 && chmod 0600 /root/.ssh/authorized_keys \
 && mkdir -p /etc/systemd/network /etc/systemd/system/multi-user.target.wants \
 && printf '# Written by terra create from server.toml [netplan]\n[Match]\nName=eth0\n\n[Network]\nAddress=10.0.0.5/24\nGateway=10.0.0.1\n' > /etc/systemd/network/50-terra-0.network \
 && ln -s /usr/lib/systemd/system/systemd-networkd.service /etc/systemd/system/multi-user.target.wants/systemd-networkd.service \
 && ln -s /usr/lib/systemd/system/agent.service /etc/systemd/system/multi-user.target.wants/agent.service
# RUN steps see the build host's /etc/hostname and /etc/resolv.conf (bind mounts): these
# two are copied in.
COPY hostname /etc/hostname
COPY resolv.conf /etc/resolv.conf
LABEL org.terra.init=/sbin/init
"#;

/// A directory with the base, the component, server.toml, its COPY source and buildah's
/// storage configuration.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let busybox = lab::host::static_busybox().expect("a static busybox (busybox-static)");
        let (demo, _) = lab::oci_root::demo_layout(&busybox).unwrap_or_else(|e| panic!("{e}"));
        must_run(Command::new("cp").arg("-a").arg(&demo).arg(d.join("base")));
        let comp = d.join("component-tree");
        component_tree(&comp);
        let made = d.join("component-made");
        lab::oci_root::layout_from_dir(&comp, &made).unwrap_or_else(|e| panic!("{e}"));
        // Tag it `c` (the lab tags `demo`).
        skopeo(&[
            "copy",
            &format!("oci:{}:demo", made.display()),
            &format!("oci:{}:c", d.join("component").display()),
        ]);
        fs::write(d.join("motd"), "welcome\n").unwrap();
        fs::write(d.join("hostname"), "example\n").unwrap();
        fs::write(
            d.join("resolv.conf"),
            "# Written by terra create from server.toml [resolvconf]\nnameserver 192.0.2.53\nsearch example\n",
        )
        .unwrap();
        fs::write(d.join("server.toml"), SERVER_TOML).unwrap();
        lab::created::buildah_storage(d).unwrap_or_else(|e| panic!("{e}"));
        Fixture { dir }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }

    fn env(&self, c: &mut Command) {
        c.env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"));
    }

    /// `terra create ARGS` in the fixture's directory, bounded.
    fn create(&self, args: &[&str]) -> (bool, String) {
        let mut c = terra();
        self.env(&mut c);
        c.current_dir(self.dir.path()).arg("create").args(args);
        let out = bounded(&mut c, T);
        (out.status.success(), text(&out))
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn must_run(c: &mut Command) -> String {
    let out = bounded(c, T);
    assert!(out.status.success(), "{c:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The digest and config of layout:tag's image.
fn image(layout: &Path, tag: &str) -> (String, serde_json::Value) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{}: no {tag}", layout.display()));
    let digest = m["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&digest)).unwrap()).unwrap();
    let config = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    (digest, config)
}

#[test]
fn terra_create_makes_what_buildah_makes_of_the_equivalent_containerfile() {
    let f = Fixture::new();
    let (ok, out) = f.create(&["--output", "oci:made:7", "server.toml"]);
    assert!(ok, "{out}");
    assert!(out.contains("terra: created oci:made:7 (sha256:"), "{out}");
    // The same inputs, the same image.
    let (digest, _) = image(&f.path("made"), "7");
    let (ok, out) = f.create(&["--output", "oci:again", "server.toml"]);
    assert!(ok, "{out}");
    assert_eq!(image(&f.path("again"), "7").0, digest, "{out}");

    // buildah's storage keeps no image or container of the builds (the bases are cached).
    let mut l = Command::new("buildah");
    f.env(&mut l);
    l.args(["images", "--all", "--format", "{{.Name}}"]);
    let names = must_run(&mut l);
    // Only the images pulled (under their layouts' stable names): nothing built is kept.
    assert!(names.lines().count() >= 1, "{names}");
    assert!(
        names
            .lines()
            .all(|n| n.starts_with("localhost/tmp/terra-create-layouts/")),
        "{names}"
    );
    let mut l = Command::new("buildah");
    f.env(&mut l);
    l.args(["containers", "--quiet"]);
    let mut cs = must_run(&mut l);
    cs.retain(|c| !c.is_whitespace());
    assert!(cs.is_empty(), "containers left: {cs}");
    // The reference: buildah bud of the Containerfile written by hand.
    fs::write(f.path("Containerfile"), EQUIVALENT).unwrap();
    let mut b = Command::new("buildah");
    f.env(&mut b);
    b.current_dir(f.dir.path()).args([
        "bud",
        "--isolation",
        "chroot",
        "--timestamp",
        "0",
        "--omit-history",
        "-t",
        "reference",
        ".",
    ]);
    must_run(&mut b);
    let mut p = Command::new("buildah");
    f.env(&mut p);
    p.current_dir(f.dir.path())
        .args(["push", "reference", "oci:reference:7"]);
    must_run(&mut p);

    let ours = snapshot(&umoci_unpack(&f.path("made"), "7", &f.path("ours")));
    let theirs = snapshot(&umoci_unpack(&f.path("reference"), "7", &f.path("theirs")));
    let strip = |m: std::collections::BTreeMap<String, Info>| {
        m.into_iter()
            .map(|(k, mut v)| {
                // Times of what each build wrote: the trees are compared, not the clocks.
                v.mtime = 0;
                (k, v)
            })
            .collect()
    };
    assert_same(
        &strip(ours.clone()),
        &strip(theirs),
        "terra create vs buildah bud",
    );
    assert_eq!(
        fs::read_to_string(f.path("ours/rootfs/etc/run-output")).unwrap(),
        "built-by-run\n"
    );

    let (_, config) = image(&f.path("made"), "7");
    assert_eq!(
        config["config"]["Labels"]["org.terra.init"], "/sbin/init",
        "{config}"
    );
    let env = config["config"]["Env"].to_string();
    assert!(env.contains("GREETING=hello"), "{env}");
    assert_eq!(config["config"]["WorkingDir"], "/srv/www");
}

#[test]
fn terra_create_pushes_and_signs_what_it_pushed() {
    let f = Fixture::new();
    let reg = Registry::start();
    let src = SERVER_TOML.replace(
        "init = ",
        &format!("repo = \"{}/org\"\ninit = ", reg.host()),
    );
    // A failing step first: nothing reaches the registry (skopeo finds no such image).
    let failing = src.replace("mkdir -p /srv/www", "false");
    fs::write(f.path("failing.toml"), &failing).unwrap();
    let (ok, out) = f.create(&["--push", "--plain-http", "failing.toml"]);
    assert!(!ok && out.contains("nothing was pushed"), "{out}");
    let inspected = bounded(
        Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/org/example:7", reg.host()),
        ]),
        T,
    );
    assert!(!inspected.status.success(), "the failed build was pushed");
    fs::write(f.path("server.toml"), src).unwrap();
    let k = openssl_key(f.dir.path(), "release");
    let other = openssl_key(f.dir.path(), "other");
    let key = k.private.to_str().unwrap();
    let (ok, out) = f.create(&["--push", "--plain-http", "--sign-key", key, "server.toml"]);
    assert!(ok, "{out}");
    let reference = format!("{}/org/example:7", reg.host());
    assert!(
        out.contains(&format!("terra: created {reference}")),
        "{out}"
    );
    assert!(out.contains("signed:"), "{out}");
    let pull = |key: &Path, dest: &str| {
        terra_run(&[
            "image",
            "pull",
            "--plain-http",
            "--verify-key",
            key.to_str().unwrap(),
            "--layout",
            f.path(dest).to_str().unwrap(),
            &reference,
        ])
    };
    let (ok, out) = pull(&k.public, "pulled");
    assert!(ok, "{out}");
    let (ok, out) = pull(&other.public, "refused");
    assert!(!ok && out.contains("does not verify"), "{out}");
}

fn terra_run(args: &[&str]) -> (bool, String) {
    let out = bounded(terra().args(args), T);
    (out.status.success(), text(&out))
}

#[test]
fn bad_recipes_name_the_key_and_line_and_write_nothing() {
    let f = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        // (change to server.toml, what the error must say, what the output must show)
        (
            "init = \"/sbin/init\"",
            "server.toml:11: unknown field `colour`",
            "colour = 1\ninit = \"/sbin/init\"",
        ),
        (
            "RUN echo built-by-run > /etc/run-output && \\\n    mkdir -p /srv/www",
            "server.toml:5: userland: `RUN echo about to fail && false` failed",
            "RUN echo about to fail && false",
        ),
        (
            "oci:base:demo",
            "server.toml:3: os:",
            "oci:no-such-base:demo",
        ),
        (
            "[\"agent.service\"]",
            "server.toml:14: components[0].systemd: gone.service: no such unit",
            "[\"gone.service\"]",
        ),
        (
            "image = \"oci:component:c\"\nsystemd = [\"agent.service\"]",
            "server.toml:16: netplan: the base has neither systemd-networkd nor netplan",
            "image = \"oci:base:demo\"",
        ),
    ];
    for (n, (from, says, to)) in cases.iter().enumerate() {
        let src = SERVER_TOML.replace(from, to);
        assert_ne!(src, SERVER_TOML, "case {n}");
        let name = format!("bad-{n}.toml");
        fs::write(f.path(&name), &src).unwrap();
        let out_dir = format!("oci:bad-{n}");
        let (ok, out) = f.create(&["--output", &out_dir, &name]);
        let says = says.replace("server.toml", &name);
        assert!(!ok, "case {n} succeeded: {out}");
        assert!(
            out.contains(&says),
            "case {n}: expected {says:?} in:\n{out}"
        );
        assert!(
            !f.path(&format!("bad-{n}")).exists(),
            "case {n} wrote its output"
        );
        if n == 1 {
            assert!(
                out.contains("about to fail"),
                "the RUN step's output: {out}"
            );
        }
    }
}
