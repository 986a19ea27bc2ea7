//! The command line as data: help for every command, completions for every shell, man
//! pages, suggestions for typos, and progress bars only on a terminal.

use crate::oci_common;

use std::path::Path;
use std::process::{Command, Output};

use oci_common::{image_layout, layer, Comp, E};

fn terra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terra"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every command, as typed after `terra`.
const COMMANDS: &[&str] = &[
    "initramfs",
    "kernel",
    "iso",
    "pxe",
    "uki",
    "image",
    "image pull",
    "image unpack",
    "install",
    "run",
    "upgrade",
    "apply",
    "versions",
    "bless",
    "rollback",
    "gc",
    "completions",
    "man",
];

#[test]
fn every_command_has_help() {
    let o = terra(&["--help"]);
    assert!(o.status.success());
    let top = text(&o.stdout);
    assert!(
        top.starts_with("terra — builds Terra boot artifacts"),
        "{top}"
    );
    assert!(
        top.contains("Exit status:") && top.contains("2  usage error"),
        "{top}"
    );
    for cmd in COMMANDS {
        let words: Vec<&str> = cmd.split(' ').collect();
        if !["completions", "man"].contains(&words[0]) {
            assert!(
                top.contains(&format!("\n  {} ", words[0])),
                "{cmd} not listed"
            );
        }
        for flag in ["--help", "-h"] {
            let o = terra(&[&words[..], &[flag]].concat());
            let out = text(&o.stdout);
            assert!(o.status.success(), "{cmd} {flag}: {}", text(&o.stderr));
            assert!(
                out.contains(&format!("Usage: terra {cmd}")),
                "{cmd} {flag}: {out}"
            );
        }
    }
    // `terra help image pull` is `terra image pull --help`.
    let o = terra(&["help", "image", "pull"]);
    assert!(o.status.success() && text(&o.stdout).contains("Usage: terra image pull"));
}

#[test]
fn help_keeps_the_defaults_it_documents() {
    let o = terra(&["initramfs", "--help"]);
    let out = text(&o.stdout);
    assert!(out.contains("[default: zstd:6]"), "{out}");
    let o = terra(&["uki", "--help"]);
    let out = text(&o.stdout);
    assert!(
        out.contains("systemd-boot-efi") && out.contains("linuxx64.efi.stub"),
        "{out}"
    );
    let o = terra(&["run", "--help"]);
    let out = text(&o.stdout);
    assert!(
        out.contains("[default: 10G]") && out.contains("Ctrl-A X quits"),
        "{out}"
    );
    let o = terra(&["gc", "--help"]);
    let out = text(&o.stdout);
    assert!(
        out.contains("[default: 3]") && out.contains("--disk"),
        "{out}"
    );
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = terra(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", text(&o.stderr));
        let script = text(&o.stdout);
        for word in ["terra", "initramfs", "unpack", "verify-key"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let o = terra(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("possible values"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn man_pages_for_every_visible_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let o = terra(&["man", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let page = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let top = page("terra.1");
    assert!(
        top.starts_with(".ie") || top.contains(".TH terra 1"),
        "{top}"
    );
    assert!(
        top.contains("initramfs") && top.contains("Exit status"),
        "{top}"
    );
    for cmd in COMMANDS
        .iter()
        .filter(|c| !["completions", "man"].contains(c))
    {
        let name = format!("terra-{}.1", cmd.replace(' ', "-"));
        let text = page(&name);
        assert!(text.contains(".TH"), "{name}: {text}");
    }
    assert!(page("terra-pxe.1").contains("pxelinux"));
    // Hidden helpers get no page.
    assert!(!out.join("terra-completions.1").exists());
    assert!(!out.join("terra-man.1").exists());
}

#[test]
fn terra_run_refuses_bad_sizes_and_both_accelerators_as_usage_errors() {
    for (args, wanted) in [
        (&["run", "--disk-size", "10X", "oci:/x"][..], "unknown unit"),
        (
            &["run", "--kvm", "--tcg", "oci:/x"][..],
            "cannot be used with",
        ),
    ] {
        let o = terra(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o.stderr).contains(wanted), "{}", text(&o.stderr));
    }
}

#[test]
fn typos_get_suggestions_and_exit_2() {
    for (args, wanted) in [
        (&["instal"][..], "'install'"),
        (&["versoins"], "'versions'"),
        (&["image", "unpak"], "'unpack'"),
        (&["initramfs", "--outptu", "x"], "--output"),
        (&["upgrade", "--verify-keys", "k", "r"], "--verify-key"),
    ] {
        let o = terra(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = text(&o.stderr);
        assert!(
            err.contains("tip:") && err.contains(wanted),
            "{args:?}: {err}"
        );
    }
}

/// An OCI layout with one small image, tagged `t`.
fn small_layout(dir: &Path) -> String {
    let layout = dir.join("layout");
    image_layout(
        &layout,
        "t",
        &[(
            layer(&[
                E::Dir("etc/", 0o755),
                E::File("etc/hostname", b"node\n", 0o644),
            ]),
            Comp::Gzip,
        )],
    );
    format!("oci:{}:t", layout.display())
}

/// What indicatif draws: the bar, or cursor and line control.
fn has_progress(s: &str) -> bool {
    s.contains("=>") || s.contains("] ") || s.contains('\r') || s.contains("\x1b[")
}

#[test]
fn no_progress_when_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let reference = small_layout(dir.path());
    let root = dir.path().join("root");
    let o = terra(&["image", "unpack", &reference, root.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(
        out.starts_with("terra: unpacked ") && !has_progress(&out),
        "{out:?}"
    );
    assert!(err.is_empty(), "{err:?}");
    assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"node\n");
}

/// On a terminal (a pty from util-linux `script`) the unpack draws its bar, and `--quiet`
/// draws none.
#[test]
fn progress_on_a_terminal_unless_quiet() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = small_layout(dir.path());
    let on_tty = |quiet: bool, name: &str| {
        let root = dir.path().join(name);
        let cmd = format!(
            "{} {}image unpack {reference} {}",
            env!("CARGO_BIN_EXE_terra"),
            if quiet { "--quiet " } else { "" },
            root.display()
        );
        let o = Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{cmd}: {}", text(&o.stdout));
        text(&o.stdout)
    };
    // script(1) turns each \n into \r\n: look for the bar itself and its line control.
    let drawn = on_tty(false, "a");
    assert!(
        drawn.contains("unpack [") && drawn.contains(" 1/1 ") && drawn.contains("\x1b["),
        "{drawn:?}"
    );
    let quiet = on_tty(true, "b");
    assert!(quiet.contains("terra: unpacked"), "{quiet:?}");
    assert!(
        !quiet.contains("unpack [") && !quiet.contains("\x1b["),
        "{quiet:?}"
    );
}
