//! Where tar readers differ: layers written byte by byte at the edges of the format, each
//! read by Go's `archive/tar` (a small Go program, `oci_common/go_tar_list.go`) and by
//! terra's reader, which must list the same entries, contents and errors, and unpacked by
//! terra and by `umoci unpack` (Go's reader too). terra accepts what Go accepts (a stream cut
//! in its padding, ending after one zero block or without end blocks; signed checksums,
//! blank or NUL-led numeric fields, header-only entries with a size; several long names or
//! PAX headers before one entry; a GNU header with a ustar prefix) and unpacks it as umoci
//! does; refuses what Go refuses (a header or data cut short, a PAX time or a base-256
//! number Go cannot read), naming the blob and the entry. Go's own test archives are read
//! by both readers too.

use crate::oci_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lab::netns::{run_timed, Timed};
use oci_common::go_tar;
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
        err.contains("entry \"a\": malformed tar after this entry")
            && err.contains("inside the second end-of-archive block"),
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

/// The same with the size in a PAX record: Go applies it and still reads no data, and so
/// does terra (the tar crate would have skipped 512 bytes).
#[test]
fn a_pax_size_on_a_header_only_entry_is_read_as_go_reads_it() {
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
    go_tar::assert_agree(&t, "a PAX size on a hardlink");
    let o = both(&t);
    same(&o, "a PAX size on a hardlink");
    assert!(o.terra.unwrap().contains_key("evil"));
}

/// Headers Go reads and the tar crate would not: a checksum over signed bytes (historic
/// Sun tar; it differs only for bytes ≥ 0x80), a blank size field, numeric fields led by
/// NULs. terra reads them as Go does, saying so on its debug line for the checksum.
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
    go_tar::assert_agree(&tar, "blank size, NUL-led mode and mtime");
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
        assert!(o.debug.contains("describes no entry"), "{}", o.debug);
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
    let dir = go_tar::go_testdata();
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

/// A header block written byte by byte: ustar magic, or GNU's; `edit` changes it before
/// the checksum is set.
fn raw_header(
    name: &[u8],
    kind: u8,
    size: u64,
    gnu: bool,
    edit: impl FnOnce(&mut [u8; 512]),
) -> Vec<u8> {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(format!("{MTIME:011o}\0").as_bytes());
    b[156] = kind;
    b[257..265].copy_from_slice(if gnu { b"ustar  \0" } else { b"ustar\x0000" });
    edit(&mut b);
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b.to_vec()
}

/// A member: header and data, padded to a block.
fn member(name: &[u8], kind: u8, data: &[u8], gnu: bool) -> Vec<u8> {
    let mut v = raw_header(name, kind, data.len() as u64, gnu, |_| {});
    v.extend_from_slice(data);
    v.resize(v.len().next_multiple_of(512), 0);
    v
}

/// A PAX extended header with `records`, as GNU tar names it.
fn pax_header(entry: &str, records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len = body + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    member(
        format!("./PaxHeaders/{entry}").as_bytes(),
        b'x',
        &data,
        false,
    )
}

/// One of issue 29's cases: Go's listing (asserted equal to terra's reader's) and both
/// unpacks.
struct GoCase {
    go: String,
    o: Outcome,
}

fn go_case(tar: &[u8], what: &str) -> GoCase {
    GoCase {
        go: go_tar::assert_agree(tar, what),
        o: both(tar),
    }
}

/// Go reads the layer whole: terra unpacks it, as umoci does where umoci unpacks it.
fn accepted_as_go_does(c: &GoCase, what: &str) -> BTreeMap<String, Info> {
    assert!(go_tar::accepted(&c.go), "{what}: Go refuses it:\n{}", c.go);
    let t = match &c.o.terra {
        Ok(t) => t,
        Err(e) => panic!("{what}: terra refuses what Go reads: {e}"),
    };
    if let Ok(u) = &c.o.umoci {
        // A directory the layer does not list (the parent made for an entry) takes the
        // time of the unpack in both: runs a moment apart may differ by a second.
        let listed: Vec<String> = go_tar::names(&c.go)
            .iter()
            .map(|n| n.trim_start_matches("./").trim_end_matches('/').to_string())
            .collect();
        let unlisted = |m: &BTreeMap<String, Info>| -> BTreeMap<String, Info> {
            m.iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    if !listed.contains(k) {
                        v.mtime = 0;
                    }
                    (k.clone(), v)
                })
                .collect()
        };
        let d = differences(&unlisted(t), &unlisted(u), "umoci");
        assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
    }
    t.clone()
}

/// Go refuses the layer: terra refuses it too, naming the blob and `entry`; umoci refuses.
fn refused_as_go_does(c: &GoCase, entry: &str, what: &str) -> String {
    assert!(!go_tar::accepted(&c.go), "{what}: Go reads it:\n{}", c.go);
    assert!(c.o.umoci.is_err(), "{what}: umoci unpacked it");
    let err = match &c.o.terra {
        Ok(t) => panic!("{what}: terra unpacked what Go refuses: {t:?}"),
        Err(e) => e.clone(),
    };
    assert!(
        err.contains(&format!("layer {}: entry \"{entry}\"", c.o.blob)),
        "{what}: {err}"
    );
    err
}

/// Issue 29, 1 and 2: several GNU long names (`L`, `K`), or several PAX headers, before one
/// entry. Go uses the last of each kind; the earlier ones are dropped whole (a PAX header's
/// records are not merged with the next one's). terra refused them.
#[test]
fn several_extension_headers_the_last_applies() {
    let mut t = member(b"././@LongLink", b'L', b"first/dropped\0", true);
    t.extend(member(b"././@LongLink", b'L', b"second/used\0", true));
    t.extend(member(b"././@LongLink", b'K', b"target-1\0", true));
    t.extend(member(b"././@LongLink", b'K', b"target-2\0", true));
    t.extend(raw_header(b"short", b'2', 0, true, |_| {}));
    t.extend(file("a", b"a"));
    let c = go_case(&t, "two long names and two long links");
    let tree = accepted_as_go_does(&c, "two long names and two long links");
    assert_eq!(tree["second/used"].link.as_deref(), Some("target-2"));
    assert!(!tree.contains_key("first") && !tree.contains_key("short"));
    assert!(
        c.o.debug.contains("follows another before one entry"),
        "{}",
        c.o.debug
    );

    let mut t = pax_header("f", &[("path", b"from-the-first"), ("mtime", b"5")]);
    t.extend(pax_header("f", &[("gid", b"33")]));
    t.extend(file("ustar-name", b"x"));
    t.extend(file("a", b"a"));
    let c = go_case(&t, "two PAX headers");
    let tree = accepted_as_go_does(&c, "two PAX headers");
    assert!(!tree.contains_key("from-the-first"));
    assert_eq!(tree["ustar-name"].mtime, MTIME as i64);
    if rustix::process::geteuid().is_root() {
        assert_eq!(tree["ustar-name"].gid, 33);
    }
}

/// Issue 29, 3: a GNU long name with bytes after a NUL: Go takes the name up to the NUL;
/// terra refused the entry as an invalid name.
#[test]
fn a_long_name_ends_at_its_first_nul() {
    let mut t = member(
        b"././@LongLink",
        b'L',
        b"0123456789\0garbage after it\0",
        true,
    );
    t.extend(member(b"short", b'0', b"x", true));
    t.extend(file("a", b"a"));
    let c = go_case(&t, "a long name with a NUL");
    let tree = accepted_as_go_does(&c, "a long name with a NUL");
    assert_eq!(tree["0123456789"].size, 1);
}

/// Issue 29, 4: a GNU header whose atime and ctime bytes hold a ustar prefix (Go's writer
/// before 1.8 wrote such headers): Go joins prefix and name; terra wrote the entry at the
/// name alone, silently.
#[test]
fn a_gnu_header_with_a_prefix_is_read_at_its_full_path() {
    let prefix = "a".repeat(99);
    let mut t = raw_header(b"foo", b'0', 3, true, |b| {
        b[345..345 + 99].copy_from_slice(prefix.as_bytes())
    });
    t.extend(b"foo");
    t.resize(1024, 0);
    t.extend(file("a", b"a"));
    let c = go_case(&t, "a GNU header with a prefix");
    let tree = accepted_as_go_does(&c, "a GNU header with a prefix");
    assert_eq!(tree[&format!("{prefix}/foo")].size, 3);
    assert!(!tree.contains_key("foo"));
}

/// Issue 29, 5 (the hand-written half; GNU tar's are in oci_corpus.rs): an old GNU sparse
/// entry of one-byte chunks at odd offsets, its map running into two extension blocks.
/// Go and GNU tar read it; terra refused it ("previous block in sparse file was not
/// aligned", the tar crate's). umoci refuses the type; the file is the reference.
#[test]
fn an_old_gnu_sparse_file_with_unaligned_chunks_unpacks() {
    use std::os::unix::fs::MetadataExt;
    let field = |v: u64| format!("{v:011o}\0").into_bytes();
    let chunks: Vec<(u64, u64)> = (0..30).map(|i| (65536 * i + 1, 1)).collect();
    let real = 65536 * 30 + 5;
    let data: Vec<u8> = (0..30u8).map(|i| b'A' + i % 26).collect();
    let (first, rest) = chunks.split_at(4);
    let mut t = raw_header(b"sparse", b'S', data.len() as u64, true, |b| {
        for (i, &(o, l)) in first.iter().enumerate() {
            b[386 + i * 24..398 + i * 24].copy_from_slice(&field(o));
            b[398 + i * 24..410 + i * 24].copy_from_slice(&field(l));
        }
        b[482] = 1;
        b[483..495].copy_from_slice(&field(real));
    });
    let blocks: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
    for (n, c) in blocks.iter().enumerate() {
        let mut ext = [0u8; 512];
        for (i, &(o, l)) in c.iter().enumerate() {
            ext[i * 24..i * 24 + 12].copy_from_slice(&field(o));
            ext[i * 24 + 12..i * 24 + 24].copy_from_slice(&field(l));
        }
        ext[504] = u8::from(n + 1 < blocks.len());
        t.extend_from_slice(&ext);
    }
    t.extend_from_slice(&data);
    t.resize(t.len().next_multiple_of(512), 0);
    t.extend(file("a", b"a"));
    let c = go_case(&t, "unaligned old GNU sparse");
    assert!(go_tar::accepted(&c.go), "{}", c.go);
    let tree = c.o.terra.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let mut want = vec![0u8; real as usize];
    for (i, &(o, _)) in chunks.iter().enumerate() {
        want[o as usize] = data[i];
    }
    assert_eq!(
        tree["sparse"].sha256.as_deref(),
        Some(sha256_hex(&want).as_str())
    );
    if let Err(e) = &c.o.umoci {
        assert!(e.contains("unknown typeflag '\\x53'"), "umoci: {e}");
    }
    // Its holes stay holes.
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image_layout(&layout, "t", &[(t.clone(), Comp::None)]);
    let out = dir.path().join("r");
    let run = bounded(
        Command::new(env!("CARGO_BIN_EXE_terra"))
            .args(["image", "unpack", &format!("oci:{}:t", layout.display())])
            .arg(&out),
    );
    assert!(run.status.success(), "{}", run.stderr);
    let m = std::fs::metadata(out.join("sparse")).unwrap();
    assert!(m.blocks() * 512 < real / 2, "{} blocks", m.blocks());
}

/// Issue 29, 7: headers Go refuses, which terra accepted: a PAX `mtime` (or `atime`) that is
/// not a number, and a base-256 number beyond 63 bits (the overflow Go's fix for issue
/// 12435 refuses). terra refuses them too, naming the blob and the entry.
#[test]
fn headers_go_refuses_are_refused() {
    for (key, value) in [("mtime", &b"not-a-number"[..]), ("atime", b"1.x")] {
        let mut t = file("a", b"a");
        t.extend(pax_header("f", &[(key, value)]));
        t.extend(file("f", b"x"));
        let what = format!("PAX {key}");
        let c = go_case(&t, &what);
        let err = refused_as_go_does(&c, "f", &what);
        assert!(err.contains(&format!("PAX record \"{key}\"")), "{err}");
    }
    let mut t = file("a", b"a");
    t.extend(raw_header(b"f", b'0', 0, false, |b| {
        b[136..148].copy_from_slice(b"\x80\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff")
    }));
    let c = go_case(&t, "a base-256 mtime beyond 63 bits");
    let err = refused_as_go_does(&c, "f", "a base-256 mtime beyond 63 bits");
    assert!(err.contains("its mtime field"), "{err}");
}

/// An xattr the kernel does not let this process set on that file (`user.*` on a symlink:
/// Linux allows them only on regular files and directories) is left out and named on
/// stderr; the rest of the entry, and of the layer, is applied. (umoci, as root, refuses
/// the layer.)
#[test]
fn xattrs_the_kernel_refuses_are_left_out_and_named() {
    let mut t = file("target", b"t");
    t.extend(pax_header(
        "link",
        &[
            ("SCHILY.xattr.user.on-a-symlink", b"v"),
            ("SCHILY.xattr.trusted.kept", b"k"),
        ],
    ));
    t.extend(raw_header(b"link", b'2', 0, false, |b| {
        b[157..163].copy_from_slice(b"target")
    }));
    t.extend(file("a", b"a"));
    go_tar::assert_agree(&t, "a user xattr on a symlink");
    let o = both(&t);
    let tree = o.terra.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tree["link"].link.as_deref(), Some("target"));
    assert!(
        o.debug.contains(
            "terra: warning: xattr left out: link: user.on-a-symlink: the kernel does not \
             let this process set it here"
        ),
        "{}",
        o.debug
    );
    if rustix::process::geteuid().is_root() {
        let names: Vec<&str> = tree["link"]
            .xattrs
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(names, ["trusted.kept"]);
    }
}
