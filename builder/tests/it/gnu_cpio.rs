//! Our newc writer read back by GNU cpio, the reference implementation of the format.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use terra_builder::cpio::Archive;

fn gnu_cpio(dir: &Path, args: &[&str], input: &Path) -> (String, String) {
    let out = Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(std::fs::File::open(input).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("GNU cpio is installed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cpio {args:?} failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

fn sample() -> Archive {
    let mut a = Archive::new();
    // Every data length modulo 4, to exercise the padding.
    for len in 0..8usize {
        let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
        a.add_file(&format!("data/len{len}"), data, false).unwrap();
    }
    a.add_file("init", b"\x7fELF pretend".repeat(1000), true)
        .unwrap();
    a.add_file(
        "etc/terra/node.toml",
        b"hostname = \"terra-01\"\n".to_vec(),
        false,
    )
    .unwrap();
    a.add_file("bin/busybox", b"#!busybox".to_vec(), true)
        .unwrap();
    a.add_symlink("bin/sh", "busybox").unwrap();
    a.add_symlink("lib64", "/lib").unwrap();
    a.add_char_device("dev/console", 5, 1).unwrap();
    for d in ["proc", "sys", "run", "sysroot", "a-b", "a/b", "a.b"] {
        a.add_dir(d).unwrap();
    }
    a
}

#[test]
fn gnu_cpio_lists_entries_in_our_order() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("a.cpio");
    let a = sample();
    let mut f = std::fs::File::create(&img).unwrap();
    a.write(&mut f, 1_700_000_000).unwrap();
    drop(f);

    let (listing, stderr) = gnu_cpio(tmp.path(), &["-it", "--quiet"], &img);
    assert_eq!(stderr, "");
    let names: Vec<&str> = listing.lines().collect();
    let expected: Vec<&str> = a.paths().collect();
    assert_eq!(names, expected);
    // Parents precede children.
    for (i, n) in names.iter().enumerate() {
        if let Some((parent, _)) = n.rsplit_once('/') {
            assert!(names[..i].contains(&parent), "{parent} after {n}");
        }
    }

    let (verbose, _) = gnu_cpio(tmp.path(), &["-itv", "--quiet"], &img);
    let line = |name: &str| {
        verbose
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("{name} missing in\n{verbose}"))
            .to_string()
    };
    let console = line("dev/console");
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(console.contains("5,   1"), "{console}");
    assert!(line("init").starts_with("-rwxr-xr-x"));
    assert!(line("etc/terra/node.toml").starts_with("-rw-r--r--"));
    assert!(line("sysroot").starts_with("drwxr-xr-x"));
    assert!(line("bin/sh").ends_with("bin/sh -> busybox"));
    assert!(
        verbose.lines().all(|l| l.contains(" root     root ")),
        "{verbose}"
    );
}

#[test]
fn gnu_cpio_extracts_identical_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("a.cpio");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let a = sample();
    let mut f = std::fs::File::create(&img).unwrap();
    a.write(&mut f, 0).unwrap();
    drop(f);

    // The device node needs CAP_MKNOD; it is checked in the listing test instead.
    gnu_cpio(
        &out,
        &[
            "-idm",
            "--quiet",
            "--no-absolute-filenames",
            "-f",
            "dev/console",
        ],
        &img,
    );
    for path in a.paths() {
        let on_disk = out.join(path);
        match a.get(path).unwrap() {
            terra_builder::cpio::Node::File { data, executable } => {
                assert_eq!(&std::fs::read(&on_disk).unwrap(), data, "{path}");
                let mode = std::fs::metadata(&on_disk).unwrap().permissions().mode();
                assert_eq!(mode & 0o111 != 0, *executable, "{path}: {mode:o}");
            }
            terra_builder::cpio::Node::Symlink { target } => {
                assert_eq!(
                    std::fs::read_link(&on_disk).unwrap().to_str(),
                    Some(target.as_str())
                );
            }
            terra_builder::cpio::Node::Dir => assert!(on_disk.is_dir(), "{path}"),
            terra_builder::cpio::Node::CharDevice { .. } => {}
        }
    }
    let mtime = std::fs::metadata(out.join("init"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, std::time::UNIX_EPOCH);
}
