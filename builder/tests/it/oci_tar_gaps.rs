//! Where tar readers differ: layers written byte by byte at the edges of the format, each
//! unpacked by terra and by `umoci unpack` (Go's `archive/tar`). terra accepts what umoci
//! accepts (a stream cut in its padding, ending after one zero block or without end
//! blocks; signed checksums, blank or NUL-led numeric fields, header-only entries with a
//! size) and unpacks it identically; refuses what both refuse (a header or data cut
//! short), naming the blob and the entry. The gaps left open are pinned here so that a
//! change is noticed.

use crate::oci_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lab::netns::{run_timed, Timed};
use oci_common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn bounded(cmd: &mut Command) -> Timed {
    run_timed(cmd, LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// A ustar header: name, type flag, size field.
fn header(name: &[u8], kind: u8, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_cksum();
    *h.as_bytes()
}

/// A file entry with its data padded to a block.
fn file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = header(name.as_bytes(), b'0', data.len() as u64).to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().next_multiple_of(512), 0);
    v
}

struct Outcome {
    terra: Result<std::collections::BTreeMap<String, Info>, String>,
    /// terra's stderr (with TERRA_DEBUG=1).
    debug: String,
    umoci: Result<std::collections::BTreeMap<String, Info>, String>,
    blob: String,
}

/// Unpacks a one-layer image of `tar` (gzipped) with both.
fn both(tar: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image_layout(&layout, "t", &[(tar.to_vec(), Comp::Gzip)]);
    let ours = dir.path().join("terra");
    let t = bounded(
        Command::new(env!("CARGO_BIN_EXE_terra"))
            .env("TERRA_DEBUG", "1")
            .args(["image", "unpack", &format!("oci:{}:t", layout.display())])
            .arg(&ours),
    );
    let terra = if t.status.success() {
        Ok(snapshot(&ours))
    } else {
        Err(t.stderr.clone())
    };
    let umoci = umoci(&layout, &dir.path().join("bundle"));
    Outcome {
        terra,
        debug: t.stderr,
        umoci,
        blob: digest(&gzip(tar)),
    }
}

fn umoci(layout: &Path, bundle: &Path) -> Result<std::collections::BTreeMap<String, Info>, String> {
    let u = bounded(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:t", layout.display()))
            .arg(bundle),
    );
    if u.status.success() {
        Ok(snapshot(&bundle.join("rootfs")))
    } else {
        Err(u.stderr)
    }
}

fn same(o: &Outcome, what: &str) {
    let (Ok(t), Ok(u)) = (&o.terra, &o.umoci) else {
        panic!(
            "{what}: terra {:?}, umoci {:?}",
            o.terra.as_ref().err(),
            o.umoci.as_ref().err()
        );
    };
    let d = differences(t, u, "umoci");
    assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
    assert!(t.contains_key("a"), "{what}: {t:?}");
}

#[test]
fn stream_ends_go_accepts_unpack_the_same() {
    let a = file("a", b"abc");
    // Cut inside the padding, right after the data, after the padding, after one zero
    // block, and the POSIX end (two zero blocks).
    for (what, len, zeros) in [
        ("cut inside the padding", 512 + 100, 0),
        ("cut right after the data", 512 + 3, 0),
        ("no end-of-archive blocks", 1024, 0),
        ("one zero block", 1024, 512),
        ("two zero blocks", 1024, 1024),
    ] {
        let mut tar = a[..len].to_vec();
        tar.extend(std::iter::repeat_n(0u8, zeros));
        same(&both(&tar), what);
    }
    // Cut inside the first end block: a header cut short to Go, refused by both.
    let mut tar = a.clone();
    tar.extend_from_slice(&[0u8; 100]);
    let o = both(&tar);
    assert!(o.umoci.is_err(), "umoci accepted a partial end block");
    let err = o.terra.unwrap_err();
    assert!(
        err.contains("entry \"a\": malformed tar after this entry"),
        "{err}"
    );
    // Cut inside the second end block: refused by both.
    let mut tar = a.clone();
    tar.extend_from_slice(&[0u8; 600]);
    let o = both(&tar);
    assert!(
        o.umoci.is_err(),
        "umoci accepted a partial second end block"
    );
    let err = o.terra.unwrap_err();
    assert!(
        err.contains("end-of-archive zero block is followed by"),
        "{err}"
    );
    // Two entries, the second without its padding.
    let mut tar = file("b", b"first");
    tar.extend_from_slice(&file("a", b"second")[..512 + 6]);
    same(&both(&tar), "two entries, the last cut after its data");
}

#[test]
fn cuts_go_refuses_are_refused_naming_the_entry() {
    let a = file("a", &[b'x'; 1000]);
    // Inside the data of "a".
    let o = both(&a[..512 + 600]);
    assert!(o.umoci.is_err(), "umoci accepted data cut short");
    let err = o.terra.unwrap_err();
    assert!(
        err.contains(&format!("layer {}: entry \"a\": data truncated", o.blob)),
        "{err}"
    );
    // Inside the next header.
    let mut tar = a.clone();
    tar.extend_from_slice(&header(b"b", b'0', 0)[..300]);
    let o = both(&tar);
    assert!(o.umoci.is_err(), "umoci accepted a header cut short");
    let err = o.terra.unwrap_err();
    assert!(
        err.contains(&format!(
            "layer {}: entry \"a\": malformed tar after this entry",
            o.blob
        )),
        "{err}"
    );
}

/// A header-only entry (hardlink, symlink, directory, fifo) whose size field says 512: Go
/// reads no data for it and takes the next block as the header of `evil`; so does terra
/// (the tar crate would skip that block: its reader is handed the size Go reads).
#[test]
fn header_only_entries_with_a_size_are_read_as_go_reads_them() {
    let tar = file("target", b"t");
    for kind in [b'1', b'2', b'5', b'6'] {
        let mut t = tar.clone();
        let mut h = tar::Header::from_byte_slice(&header(b"link", kind, 512)).clone();
        h.set_link_name("target").unwrap();
        h.set_cksum();
        t.extend_from_slice(h.as_bytes());
        t.extend_from_slice(&header(b"evil", b'0', 0));
        t.extend_from_slice(&file("a", b"after"));
        let o = both(&t);
        same(&o, &format!("type {}", kind as char));
        assert!(o.terra.as_ref().unwrap().contains_key("evil"));
        assert!(
            o.debug.contains("size 512 of a header-only type read as 0"),
            "{}",
            o.debug
        );
    }
}

/// The same with the size in a PAX record: Go applies it and still reads no data; the
/// tar crate would skip 512 bytes, and a PAX record cannot be rewritten in place, so terra
/// refuses, naming the entry (an open gap: umoci accepts).
#[test]
fn a_pax_size_on_a_header_only_entry_is_refused() {
    let mut t = file("target", b"t");
    let records = b"12 size=512\n";
    t.extend_from_slice(&header(b"PaxHeaders/link", b'x', records.len() as u64));
    let mut data = records.to_vec();
    data.resize(512, 0);
    t.extend_from_slice(&data);
    let mut h = tar::Header::from_byte_slice(&header(b"link", b'1', 0)).clone();
    h.set_link_name("target").unwrap();
    h.set_cksum();
    t.extend_from_slice(h.as_bytes());
    t.extend_from_slice(&header(b"evil", b'0', 0));
    t.extend_from_slice(&file("a", b"after"));
    let o = both(&t);
    let u = o.umoci.expect("umoci reads it");
    assert!(u.contains_key("evil"), "{u:?}");
    let err = o.terra.unwrap_err();
    assert!(
        err.contains(&format!("layer {}: entry \"link\"", o.blob))
            && err.contains("bytes of data: tar readers disagree"),
        "{err}"
    );
}

/// Headers Go reads and the tar crate would not: a checksum over signed bytes (historic
/// Sun tar; it differs only for bytes ≥ 0x80), a blank size field, numeric fields led by
/// NULs. terra reads them as Go does, saying so on its debug line.
#[test]
fn signed_checksums_and_blank_or_nul_led_fields_are_read_as_go_reads_them() {
    let reseal = |h: &mut [u8; 512]| {
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    };
    // Signed checksum on a name with a byte ≥ 0x80.
    let mut h = header("caf\u{e9}".as_bytes(), b'0', 0);
    h[148..156].fill(b' ');
    let signed: i64 = h.iter().map(|&b| i64::from(b as i8)).sum();
    h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    let mut tar = h.to_vec();
    tar.extend_from_slice(&file("a", b"a"));
    let o = both(&tar);
    same(&o, "signed checksum");
    assert!(
        o.debug.contains("its checksum is over signed bytes"),
        "{}",
        o.debug
    );
    // A blank size field, and a mode and mtime led by NULs.
    let mut h = header(b"blank", b'0', 0);
    h[124..136].fill(0);
    h[100..108].copy_from_slice(b"\x00\x00\x000640\x00");
    h[136..148].copy_from_slice(b"\x00\x00\x00\x00\x00\x00\x00\x00123\x00");
    reseal(&mut h);
    let mut tar = h.to_vec();
    tar.extend_from_slice(&file("a", b"a"));
    let o = both(&tar);
    same(&o, "blank size, NUL-led mode and mtime");
    let t = o.terra.as_ref().unwrap();
    assert_eq!((t["blank"].mode, t["blank"].mtime), (0o640, 0o123));
    assert!(
        o.debug.contains("size field 0 written as Go reads it"),
        "{}",
        o.debug
    );
}

/// A zero block followed by a header: Go calls it malformed, and so does terra (the tar
/// crate alone would end at the zero block and drop what follows). Zeros padding an
/// archive to a record size are fine for both.
#[test]
fn a_zero_block_then_a_header_is_refused_and_record_padding_is_not() {
    let mut tar = file("a", b"a");
    tar.extend_from_slice(&[0u8; 512]);
    tar.extend_from_slice(&file("hidden", b"after a zero block"));
    let o = both(&tar);
    assert!(o.umoci.is_err(), "umoci now reads past a zero block");
    let err = o.terra.unwrap_err();
    assert!(
        err.contains(&format!("layer {}: entry \"a\"", o.blob))
            && err.contains("end-of-archive zero block is followed by"),
        "{err}"
    );
    let mut tar = file("a", b"a");
    tar.resize(10240, 0);
    same(&both(&tar), "zeros to a 10 KiB record");
}

/// An old GNU sparse file with more chunks than its header holds: GNU tar writes extension
/// blocks between the header and the data, which the reader's walk of the stream must
/// step over as the crate does (terra checks they agree). umoci refuses the entry type
/// (see oci_corpus.rs); the reference is the file itself.
#[test]
fn old_gnu_sparse_with_extension_blocks_unpacks() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let path = src.join("many-holes");
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..12u64 {
        f.seek(SeekFrom::Start(i * 65536)).unwrap();
        f.write_all(format!("chunk {i}").as_bytes()).unwrap();
    }
    f.set_len(12 * 65536 + 4096).unwrap();
    drop(f);
    let tar_path = dir.path().join("l.tar");
    let t = bounded(
        Command::new("tar")
            .args(["--format=gnu", "--sparse", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&tar_path)
            .arg("many-holes"),
    );
    assert!(t.status.success(), "GNU tar: {}", t.stderr);
    let tar = std::fs::read(&tar_path).unwrap();
    assert_eq!(tar[156], b'S');
    assert_ne!(tar[482], 0, "GNU tar wrote no extension block");
    let layout = dir.path().join("layout");
    image_layout(&layout, "t", &[(tar, Comp::None)]);
    let out = dir.path().join("r");
    let t = bounded(
        Command::new(env!("CARGO_BIN_EXE_terra"))
            .args(["image", "unpack", &format!("oci:{}:t", layout.display())])
            .arg(&out),
    );
    assert!(t.status.success(), "{}", t.stderr);
    let got = std::fs::read(out.join("many-holes")).unwrap();
    assert_eq!(got, std::fs::read(&path).unwrap());
    let m = std::fs::metadata(out.join("many-holes")).unwrap();
    assert!(m.blocks() * 512 < 200 * 1024, "{} blocks", m.blocks());
}

/// A PAX or GNU long-name header with no entry after it, at the end of the stream or
/// before the end-of-archive blocks: Go's reader ends there, ignoring it, and so does
/// terra, saying so on its debug line.
#[test]
fn an_extension_header_at_the_end_is_ignored_as_go_does() {
    for (kind, data, end_blocks) in [
        (b'x', &b"10 path=z\n"[..], 0usize),
        (b'x', &b"10 path=z\n"[..], 1024),
        (b'L', &b"a-long-name\0"[..], 0),
    ] {
        let mut tar = file("a", b"a");
        tar.extend_from_slice(&header(b"././@Ext", kind, data.len() as u64));
        let mut d = data.to_vec();
        d.resize(512, 0);
        tar.extend_from_slice(&d);
        tar.extend(std::iter::repeat_n(0u8, end_blocks));
        let o = both(&tar);
        same(&o, &format!("a dangling {} header", kind as char));
        assert!(
            o.debug
                .contains("an extension header at the end describes no entry"),
            "{}",
            o.debug
        );
    }
}

/// The pre-POSIX regular-file flag (NUL) on a name ending in `/` is a directory to Go's
/// reader (and to old tars that wrote them); so it is to terra.
#[test]
fn a_nul_typed_entry_ending_in_a_slash_is_a_directory() {
    let mut h = header(b"olddir/", b'0', 0);
    h[156] = 0;
    h[100..108].copy_from_slice(b"0000750\0");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = h.to_vec();
    tar.extend_from_slice(&file("olddir/inside", b"x"));
    tar.extend_from_slice(&file("a", b"a"));
    let o = both(&tar);
    same(&o, "a NUL-typed directory");
    let t = o.terra.unwrap();
    assert_eq!((t["olddir"].kind, t["olddir"].mode), ("dir", 0o750));
}

/// Go's own test archives (`archive/tar/testdata`, shipped with Debian's golang-go): every
/// one reads with terra's reader exactly as with Go's, entries, contents and errors.
#[test]
fn go_testdata_reads_as_go_reads_it() {
    let out = bounded(Command::new("go").args(["env", "GOROOT"]));
    assert!(out.status.success(), "go env: {}", out.stderr);
    let dir = Path::new(out.stdout.trim()).join("src/archive/tar/testdata");
    let mut archives: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    archives.sort();
    assert!(
        archives.len() >= 40,
        "{} archives in {}",
        archives.len(),
        dir.display()
    );
    let refs: Vec<&Path> = archives.iter().map(|p| p.as_path()).collect();
    let d = go_tar::disagreements(&refs);
    assert!(d.is_empty(), "{} disagreements:\n{}", d.len(), d.join("\n"));
}
