// go-tar-list: what Go's archive/tar (umoci's, containerd's, podman's reader) reads in the
// tar archives named on the command line, one line per header Next returns, in the form
// builder/tests/it/oci_common/go_tar.rs prints for terra's reader. The oci_* tests build it
// once per run (cached by the hash of this file) and compare the two listings.
//
// Each archive's listing ends with "end" (Next returned io.EOF), "error KIND" (Next failed)
// or "data-error KIND" (reading an entry's content failed; the reader's error is sticky).
// Content is hashed up to 64 MiB per entry, so Go's large sparse test files list quickly.
package main

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

const limit = 64 << 20

// esc prints bytes as they are where that is unambiguous, others as %XX.
func esc(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c > 0x20 && c < 0x7f && c != '%' && c != ';' && c != '=' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func kv(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, esc(k)+"="+esc(m[k]))
	}
	return strings.Join(parts, ";")
}

// kind names Go's error the way the Rust side names its own.
func kind(err error) string {
	switch {
	case errors.Is(err, tar.ErrHeader):
		return "header"
	case errors.Is(err, tar.ErrFieldTooLong):
		return "too-long"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected-eof"
	case strings.Contains(err.Error(), "references non-existent data"):
		return "sparse-missing-data"
	case strings.Contains(err.Error(), "contains unreferenced data"):
		return "sparse-unreferenced-data"
	default:
		return "other:" + esc(err.Error())
	}
}

func list(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	// Not seekable: the layers terra reads are streams.
	tr := tar.NewReader(struct{ io.Reader }{f})
	for {
		h, err := tr.Next()
		if err == io.EOF {
			fmt.Println("end")
			return nil
		}
		if err != nil {
			fmt.Println("error " + kind(err))
			return nil
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			fmt.Printf("global name=%s xattrs=%s pax=%s\n", esc(h.Name), kv(h.Xattrs), kv(h.PAXRecords))
			continue
		}
		sum := sha256.New()
		n, rerr := io.CopyN(sum, tr, limit)
		if rerr == io.EOF {
			rerr = nil
		}
		fmt.Printf("entry type=%s name=%s link=%s size=%d mode=%d uid=%d gid=%d mtime=%d.%09d dev=%d,%d xattrs=%s pax=%s data=%x len=%d\n",
			esc(string([]byte{h.Typeflag})), esc(h.Name), esc(h.Linkname), h.Size, h.Mode,
			h.Uid, h.Gid, h.ModTime.Unix(), h.ModTime.Nanosecond(), h.Devmajor, h.Devminor,
			kv(h.Xattrs), kv(h.PAXRecords), sum.Sum(nil), n)
		if rerr != nil {
			fmt.Println("data-error " + kind(rerr))
			return nil
		}
	}
}

func main() {
	for _, p := range os.Args[1:] {
		fmt.Println("archive " + esc(p))
		if err := list(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
