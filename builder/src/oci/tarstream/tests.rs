//! The reader against archives written byte by byte: Go's rules for each form (Go's own
//! reader is compared in builder/tests/it/oci_tar_gaps.rs), and property tests: what the
//! tar crate writes reads back, in any read sizes; any bytes read or refused, no panic.

use super::*;
use proptest::prelude::*;

/// A reader that hands out at most `step` bytes a call.
struct Chunky<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.len().min(buf.len()).min(self.step);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every entry (header and content, holes as zeros) and how the stream ended.
/// Entries with their content.
type Entries = Vec<(Header, Vec<u8>)>;

fn read_all(data: &[u8], step: usize) -> (Entries, Result<(), TarError>) {
    let mut tr = TarReader::new(Chunky { data, step });
    let mut out = Vec::new();
    loop {
        match tr.next_entry() {
            Ok(Some(h)) => {
                let mut content = Vec::new();
                let r = tr.read_to_end(&mut content);
                out.push((h, content));
                if let Err(e) = r {
                    let e = *e.into_inner().unwrap().downcast::<TarError>().unwrap();
                    return (out, Err(e));
                }
            }
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// A header block: name, type flag, size, with the given magic; `edit` changes it before
/// the checksum is set.
fn header(
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
    b[136..148].copy_from_slice(b"00000000001\0");
    b[156] = kind;
    b[257..265].copy_from_slice(if gnu { b"ustar  \0" } else { b"ustar\x0000" });
    edit(&mut b);
    b[148..156].fill(b' ');
    let (sum, _) = block::checksums(&b);
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b.to_vec()
}

fn padded(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(v.len().next_multiple_of(512), 0);
    v
}

/// A header and its data, padded.
fn member(name: &[u8], kind: u8, data: &[u8], gnu: bool) -> Vec<u8> {
    let mut v = header(name, kind, data.len() as u64, gnu, |_| {});
    v.extend_from_slice(data);
    padded(v)
}

fn names(entries: &[(Header, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(h, _)| String::from_utf8_lossy(&h.name).into_owned())
        .collect()
}

const END: [u8; 1024] = [0; 1024];

#[test]
fn the_last_of_several_extension_headers_applies() {
    let mut t = member(b"././@LongLink", b'L', b"first\0", true);
    t.extend(member(b"././@LongLink", b'L', b"second\0", true));
    t.extend(member(b"././@LongLink", b'K', b"link-a\0", true));
    t.extend(member(b"././@LongLink", b'K', b"link-b\0", true));
    t.extend(header(b"short", b'2', 0, true, |_| {}));
    // PAX: the second header's records replace the first's, which are dropped.
    t.extend(member(
        b"PaxHeaders/x",
        b'x',
        &pax::write(&[(b"path", b"p1"), (b"uid", b"7")]),
        false,
    ));
    t.extend(member(
        b"PaxHeaders/x",
        b'x',
        &pax::write(&[(b"gid", b"9")]),
        false,
    ));
    t.extend(member(b"ustar-name", b'0', b"data", false));
    t.extend(END);
    let (e, end) = read_all(&t, 512);
    end.unwrap();
    assert_eq!(names(&e), ["second", "ustar-name"]);
    assert_eq!(e[0].0.link, b"link-b");
    assert_eq!((e[1].0.uid, e[1].0.gid), (0, 9));
    assert_eq!(e[1].1, b"data");
    let mut tr = TarReader::new(&t[..]);
    while tr.next_entry().unwrap().is_some() {}
    let notes = tr.take_notes().join("\n");
    assert!(
        notes.contains("follows another before one entry"),
        "{notes}"
    );
}

#[test]
fn a_long_name_ends_at_its_first_nul_and_wins_over_pax_path() {
    let mut t = member(
        b"PaxHeaders/x",
        b'x',
        &pax::write(&[(b"path", b"from-pax")]),
        false,
    );
    t.extend(member(b"././@LongLink", b'L', b"0123456789\0garbage", true));
    t.extend(member(b"short", b'0', b"x", true));
    // An empty long name leaves the header's name.
    t.extend(member(b"././@LongLink", b'L', b"\0", true));
    t.extend(member(b"kept", b'0', b"y", true));
    let (e, end) = read_all(&t, 7);
    end.unwrap();
    assert_eq!(names(&e), ["0123456789", "kept"]);
}

#[test]
fn types_without_data_read_none_whatever_their_size() {
    // A symlink with size 512, PAX size 1024 on a hardlink: no data follows either.
    let mut t = header(b"sym", b'2', 512, false, |b| {
        b[157..160].copy_from_slice(b"tgt")
    });
    t.extend(member(
        b"PaxHeaders/h",
        b'x',
        &pax::write(&[(b"size", b"1024")]),
        false,
    ));
    t.extend(header(b"hard", b'1', 0, false, |b| {
        b[157..160].copy_from_slice(b"sym")
    }));
    t.extend(member(b"after", b'0', b"z", false));
    let (e, end) = read_all(&t, 100);
    end.unwrap();
    assert_eq!(names(&e), ["sym", "hard", "after"]);
    assert_eq!((e[0].0.size, e[1].0.size), (512, 1024));
    assert!(e[0].1.is_empty() && e[1].1.is_empty());
}

#[test]
fn global_headers_are_entries_that_apply_to_nothing() {
    let mut t = member(
        b"global",
        b'g',
        &pax::write(&[(b"path", b"g"), (b"uid", b"5")]),
        false,
    );
    t.extend(member(b"f", b'0', b"x", false));
    let (e, end) = read_all(&t, 512);
    end.unwrap();
    assert_eq!(names(&e), ["g", "f"]);
    assert_eq!((e[0].0.kind, e[1].0.uid), (b'g', 0));
}

#[test]
fn records_go_cannot_read_refuse_the_entry() {
    for (k, v) in [
        (&b"mtime"[..], &b"not-a-number"[..]),
        (b"uid", b"1.5"),
        (b"size", b"-"),
        (b"atime", b"x"),
    ] {
        let mut t = member(b"PaxHeaders/f", b'x', &pax::write(&[(k, v)]), false);
        t.extend(member(b"f", b'0', b"x", false));
        let (e, end) = read_all(&t, 512);
        assert!(e.is_empty());
        let err = end.unwrap_err();
        assert_eq!(
            (err.kind(), err.entry()),
            ("header", Some(&b"f"[..])),
            "{err}"
        );
    }
    // Empty values keep the header's.
    let mut t = member(
        b"PaxHeaders/f",
        b'x',
        &pax::write(&[(b"mtime", b"")]),
        false,
    );
    t.extend(member(b"f", b'0', b"x", false));
    assert_eq!(read_all(&t, 512).0[0].0.mtime.secs, 1);
}

#[test]
fn the_stream_ends_as_go_ends_it() {
    let a = member(b"a", b'0', b"abc", false);
    let end_ok = |t: &[u8]| {
        let (e, end) = read_all(t, 512);
        end.map(|()| names(&e))
    };
    // Without padding or end blocks, inside the padding, at one or two zero blocks.
    for cut in [515, 600, 1024] {
        assert_eq!(end_ok(&a[..cut]).unwrap(), ["a"], "cut at {cut}");
    }
    let mut one = a.clone();
    one.extend([0u8; 512]);
    assert_eq!(end_ok(&one).unwrap(), ["a"]);
    // Cut inside the data, a header, or an end block: refused.
    let (e, end) = read_all(&a[..514], 512);
    assert_eq!(e.len(), 1);
    assert!(matches!(
        end,
        Err(TarError::DataTruncated { at: 514, left: 1 })
    ));
    assert_eq!(end_ok(&a[..300]).unwrap_err().kind(), "unexpected-eof");
    let mut t = a.clone();
    t.extend([0u8; 100]);
    assert_eq!(end_ok(&t).unwrap_err().kind(), "unexpected-eof");
    let mut t = a.clone();
    t.extend([0u8; 700]);
    assert_eq!(end_ok(&t).unwrap_err().kind(), "unexpected-eof");
    // A zero block, then a header.
    let mut t = a.clone();
    t.extend([0u8; 512]);
    t.extend(member(b"hidden", b'0', b"x", false));
    let err = end_ok(&t).unwrap_err();
    assert!(
        err.to_string().contains("zero block is followed by"),
        "{err}"
    );
    // What follows two zero blocks is not read.
    let mut t = a.clone();
    t.extend(END);
    t.extend([7u8; 100]);
    assert_eq!(end_ok(&t).unwrap(), ["a"]);
    // An extension header and then the end: the end, with a note.
    let mut t = a.clone();
    t.extend(member(b"././@LongLink", b'L', b"x\0", true));
    let mut tr = TarReader::new(&t[..]);
    assert!(tr.next_entry().unwrap().is_some());
    assert!(tr.next_entry().unwrap().is_none());
    assert!(tr.take_notes()[0].contains("describes no entry"));
}

#[test]
fn headers_with_unreadable_numbers_are_refused() {
    // A base-256 mtime beyond 63 bits (Go's issue 12435 fix), a size that is not octal.
    let t = header(b"f", b'0', 0, false, |b| {
        b[136..148].copy_from_slice(b"\x80\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff")
    });
    let err = read_all(&t, 512).1.unwrap_err();
    assert_eq!((err.kind(), err.entry()), ("header", Some(&b"f"[..])));
    let t = header(b"f", b'0', 0, false, |b| {
        b[124..136].copy_from_slice(b"00000000009\0")
    });
    assert!(read_all(&t, 512)
        .1
        .unwrap_err()
        .to_string()
        .contains("size"));
    // A negative size.
    let t = header(b"f", b'0', 0, false, |b| {
        b[124..136].copy_from_slice(&[0xff; 12])
    });
    assert!(read_all(&t, 512)
        .1
        .unwrap_err()
        .to_string()
        .contains("negative size"));
}

#[test]
fn a_gnu_header_with_a_prefix_joins_it() {
    let p = "a".repeat(99);
    let t = header(b"foo", b'0', 0, true, |b| {
        b[345..345 + 99].copy_from_slice(p.as_bytes())
    });
    let (e, end) = read_all(&t, 512);
    end.unwrap();
    assert_eq!(names(&e), [format!("{p}/foo")]);
}

#[test]
fn dumpdir_entries_carry_their_data() {
    let t = member(b"dir/", b'D', b"Yfoo\0Nbar\0\0", true);
    let (e, end) = read_all(&t, 512);
    end.unwrap();
    assert_eq!(
        (e[0].0.kind, e[0].1.as_slice()),
        (b'D', &b"Yfoo\0Nbar\0\0"[..])
    );
}

/// An old GNU sparse entry: chunks in the header and in extension blocks, then the data.
fn old_gnu_sparse(chunks: &[(u64, u64)], real: u64, data: &[u8]) -> Vec<u8> {
    let field = |v: u64| format!("{v:011o}\0").into_bytes();
    let (first, rest) = chunks.split_at(chunks.len().min(4));
    let mut t = header(b"sparse", b'S', data.len() as u64, true, |b| {
        for (i, &(o, l)) in first.iter().enumerate() {
            b[386 + i * 24..398 + i * 24].copy_from_slice(&field(o));
            b[398 + i * 24..410 + i * 24].copy_from_slice(&field(l));
        }
        b[482] = u8::from(!rest.is_empty());
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
    t.extend_from_slice(data);
    padded(t)
}

#[test]
fn sparse_files_expand_with_their_holes() {
    // One-byte chunks at odd offsets, 30 of them (two extension blocks): what GNU tar reads
    // and the tar crate refused (chunks not aligned to 512 bytes).
    let chunks: Vec<(u64, u64)> = (0..30).map(|i| (2 * i + 1, 1)).collect();
    let data: Vec<u8> = (0..30u8).map(|i| b'A' + i % 26).collect();
    let mut t = old_gnu_sparse(&chunks, 100, &data);
    t.extend(member(b"end", b'0', b"e", false));
    let (e, end) = read_all(&t, 333);
    end.unwrap();
    assert_eq!(names(&e), ["sparse", "end"]);
    let mut want = vec![0u8; 100];
    for (i, &(o, _)) in chunks.iter().enumerate() {
        want[o as usize] = data[i];
    }
    assert_eq!((e[0].0.size, &e[0].1), (100, &want));
    // Chunks as data and holes.
    let mut tr = TarReader::new(&t[..]);
    tr.next_entry().unwrap();
    let mut buf = [0u8; 64];
    let mut pieces = Vec::new();
    loop {
        match tr.read_chunk(&mut buf).unwrap() {
            Chunk::End => break,
            c => pieces.push(c),
        }
    }
    assert_eq!(
        &pieces[..3],
        [Chunk::Hole(1), Chunk::Data(1), Chunk::Hole(1)]
    );
    assert_eq!(pieces.last(), Some(&Chunk::Hole(100 - 60)));
    // PAX 1.0: the map at the start of the data.
    let mut map = b"2\n10\n3\n90\n2\n".to_vec();
    map.resize(512, 0);
    map.extend_from_slice(b"abcde");
    let recs = pax::write(&[
        (b"GNU.sparse.major", b"1"),
        (b"GNU.sparse.minor", b"0"),
        (b"GNU.sparse.name", b"real-name"),
        (b"GNU.sparse.realsize", b"95"),
    ]);
    let mut t = member(b"PaxHeaders/x", b'x', &recs, false);
    t.extend(member(b"GNUSparseFile.0/real-name", b'0', &map, false));
    let (e, end) = read_all(&t, 512);
    end.unwrap();
    let mut want = vec![0u8; 95];
    want[10..13].copy_from_slice(b"abc");
    want[90..92].copy_from_slice(b"de");
    assert_eq!((names(&e), &e[0].1), (vec!["real-name".to_string()], &want));
}

#[test]
fn sparse_maps_that_disagree_with_their_data_are_refused() {
    // More data than the map places; less; a map past the file's size.
    let t = old_gnu_sparse(&[(0, 2)], 10, b"abc");
    assert_eq!(
        read_all(&t, 512).1.unwrap_err().kind(),
        "sparse-unreferenced-data"
    );
    let t = old_gnu_sparse(&[(0, 4)], 10, b"abc");
    assert_eq!(
        read_all(&t, 512).1.unwrap_err().kind(),
        "sparse-missing-data"
    );
    let t = old_gnu_sparse(&[(8, 4)], 10, b"abcd");
    assert_eq!(read_all(&t, 512).1.unwrap_err().kind(), "header");
    // A sparse map on a directory.
    let recs = pax::write(&[(b"GNU.sparse.map", b"0,1"), (b"GNU.sparse.numblocks", b"1")]);
    let mut t = member(b"PaxHeaders/x", b'x', &recs, false);
    t.extend(header(b"d/", b'5', 0, false, |_| {}));
    assert_eq!(read_all(&t, 512).1.unwrap_err().kind(), "header");
}

#[test]
fn extension_data_over_a_mebibyte_is_refused() {
    let mut t = header(b"././@LongLink", b'L', (1 << 20) + 1, true, |_| {});
    t.resize(t.len() + (1 << 20) + 512, b'n');
    let err = read_all(&t, 1 << 16).1.unwrap_err();
    assert_eq!(err.kind(), "too-long");
}

/// An archive from the tar crate's writer: files (long names too, some with PAX records),
/// directories, symlinks with long targets, hardlinks.
/// Entries written: name, type flag, content.
type Written = Vec<(String, u8, Vec<u8>)>;

fn archive(entries: &[(u8, usize, usize, bool)]) -> (Vec<u8>, Written) {
    let mut b = tar::Builder::new(Vec::new());
    let mut want = Vec::new();
    for (i, &(kind, name_len, size, pax)) in entries.iter().enumerate() {
        let name = format!("{i}-{}", "n".repeat(name_len));
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1);
        if pax {
            b.append_pax_extensions([("SCHILY.xattr.user.x", &b"v"[..])])
                .unwrap();
        }
        let data = vec![(i % 251) as u8; size];
        match kind % 4 {
            0 => {
                h.set_size(size as u64);
                b.append_data(&mut h, &name, &data[..]).unwrap();
                want.push((name, b'0', data));
            }
            1 => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, &name, io::empty()).unwrap();
                want.push((name, b'5', Vec::new()));
            }
            2 => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &name, "t".repeat(size % 300 + 1))
                    .unwrap();
                want.push((name, b'2', Vec::new()));
            }
            _ => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &name, "0-x").unwrap();
                want.push((name, b'1', Vec::new()));
            }
        }
    }
    (b.into_inner().unwrap(), want)
}

/// Reads every entry's data (holes skipped) until the end or an error: the data bytes and
/// where the reader stopped.
fn drain(data: &[u8], step: usize) -> (u64, u64) {
    let mut tr = TarReader::new(Chunky { data, step });
    let mut buf = [0u8; 4096];
    let mut n = 0u64;
    while let Ok(Some(_)) = tr.next_entry() {
        loop {
            match tr.read_chunk(&mut buf) {
                Ok(Chunk::Data(k)) => n += k as u64,
                Ok(Chunk::Hole(_)) => {}
                Ok(Chunk::End) | Err(_) => break,
            }
        }
    }
    (n, tr.position())
}

proptest! {
    /// What the crate's writer makes reads back, entry for entry, in any read sizes.
    #[test]
    fn written_archives_read_back(
        entries in proptest::collection::vec((any::<u8>(), 0usize..220, 0usize..1500, any::<bool>()), 0..12),
        step in 1usize..2000) {
        let (tar, want) = archive(&entries);
        let (got, end) = read_all(&tar, step);
        prop_assert!(end.is_ok(), "{:?}", end);
        prop_assert_eq!(got.len(), want.len());
        for ((h, content), (name, kind, data)) in got.iter().zip(&want) {
            prop_assert_eq!(String::from_utf8_lossy(&h.name), name.as_str());
            prop_assert_eq!(h.kind, *kind);
            prop_assert_eq!(content, data);
        }
    }

    /// Any bytes, or a written archive with bytes changed and cut anywhere: read to the end
    /// or refused, never a panic, never more content than the stream could hold plus holes.
    #[test]
    fn damaged_archives_never_panic(
        entries in proptest::collection::vec((any::<u8>(), 0usize..120, 0usize..700, any::<bool>()), 0..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
        cut in any::<usize>(), step in 1usize..1500) {
        let (mut tar, _) = archive(&entries);
        for (at, b) in flips {
            let n = tar.len();
            tar[at % n] = b;
        }
        let cut = cut % (tar.len() + 1);
        let (data, pos) = drain(&tar[..cut], step);
        prop_assert!(data <= cut as u64);
        prop_assert!(pos <= cut as u64);
    }

    /// Blocks of arbitrary bytes with valid checksums, after a valid member: never a panic.
    #[test]
    fn arbitrary_headers_never_panic(blocks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 512), 1..4), kinds in proptest::collection::vec(
        prop_oneof![Just(b'x'), Just(b'L'), Just(b'S'), Just(b'g'), Just(b'0'), Just(b'D'), any::<u8>()], 4)) {
        let mut t = member(b"a", b'0', b"a", false);
        for (i, raw) in blocks.iter().enumerate() {
            let mut b = [0u8; 512];
            b.copy_from_slice(raw);
            b[156] = kinds[i % kinds.len()];
            b[148..156].fill(b' ');
            let (sum, _) = block::checksums(&b);
            b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            t.extend_from_slice(&b);
        }
        let (_, pos) = drain(&t, 512);
        prop_assert!(pos <= t.len() as u64);
    }
}
