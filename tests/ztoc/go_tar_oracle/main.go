// go_tar_oracle reads a layer (tar, or gzip with -gzip) from stdin with Go's archive/tar through a
// byte-position counter — the way upstream soci-snapshotter builds a TOC — and prints, as JSON, what each
// entry's TOC fields would be plus the uncompressed archive size, or the error Go reports.
// Test tooling for soci_lab (tests/ztoc/test_ztoc_upstream_oracles.py); standard library only.
package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
)

type counter struct {
	r   io.Reader
	pos int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.pos += int64(n)
	return n, err
}

type entry struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Offset   int64             `json:"offset"`
	Size     int64             `json:"size"`
	Linkname string            `json:"linkname"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Uname    string            `json:"uname"`
	Gname    string            `json:"gname"`
	ModTime  string            `json:"mod_time"`
	Devmajor int64             `json:"devmajor"`
	Devminor int64             `json:"devminor"`
	PAX      map[string]string `json:"pax"`
}

var typeNames = map[byte]string{
	tar.TypeLink: "hardlink", tar.TypeSymlink: "symlink", tar.TypeDir: "dir", tar.TypeReg: "reg",
	tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo",
}

func main() {
	gz := flag.Bool("gzip", false, "stdin is gzip (multistream)")
	flag.Parse()
	var src io.Reader = bufio.NewReaderSize(os.Stdin, 1<<20)
	if *gz {
		zr, err := gzip.NewReader(src)
		if err != nil {
			fail(err)
		}
		src = zr
	}
	c := &counter{r: src}
	tr := tar.NewReader(c)
	entries := []entry{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(err)
		}
		t, ok := typeNames[hdr.Typeflag]
		if !ok {
			fail(fmt.Errorf("unsupported input tar entry %q", hdr.Typeflag))
		}
		mt, _ := hdr.ModTime.MarshalText() // upstream ignores the error (years outside 0..9999): ""
		pax := hdr.PAXRecords
		if pax == nil {
			pax = map[string]string{}
		}
		entries = append(entries, entry{hdr.Name, t, c.pos, hdr.Size, hdr.Linkname, hdr.Mode, hdr.Uid, hdr.Gid,
			hdr.Uname, hdr.Gname, string(mt), hdr.Devmajor, hdr.Devminor, pax})
	}
	out, _ := json.Marshal(map[string]interface{}{"entries": entries, "uas": c.pos})
	os.Stdout.Write(out)
}

func fail(err error) {
	out, _ := json.Marshal(map[string]string{"error": err.Error()})
	os.Stdout.Write(out)
	os.Exit(0)
}
