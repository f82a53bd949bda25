// go_ztoc_oracle writes the zTOC of a layer from the layer's bytes alone, computed independently of
// soci_lab, so that tests/ztoc/test_ztoc_go_oracle.py can compare soci_lab's zTOC with it byte for byte.
//
//	go_ztoc_oracle -span N [-algo gzip|uncompressed] [-tool ID] LAYER > ZTOC
//
// Written for soci_lab's tests from the published format (soci_lab/ztoc/fbs/ztoc.fbs, zinfo.fbs and
// docs/formats.md, which records upstream soci-snapshotter's builder call order):
//   - TOC: Go's archive/tar over the uncompressed stream through a byte-position counter (compress/gzip,
//     multistream, for gzip layers): names, offsets, sizes and PAX records as Go reads them;
//     uncompressed_archive_size is the position when Next() returns io.EOF;
//   - gzip checkpoints: points.c, inflating with system zlib's Z_BLOCK; span digests: crypto/sha256 over
//     the compressed span ranges those points give;
//   - uncompressed layers: fixed spans and a nested TarZinfo table (version 2, span_size, size);
//   - the FlatBuffers: the C++ builder from Debian's libflatbuffers-dev (fb.cc), driven in the call order
//     upstream's ztocToFlatbuffer uses.
//
// Errors go to stderr with exit status 1.
package main

/*
#cgo CFLAGS: -O2
#cgo CXXFLAGS: -O2 -std=c++17
#cgo LDFLAGS: -lz -lstdc++
#include <stdlib.h>
#include "points.h"
#include "fb.h"
*/
import "C"

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"unsafe"
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
	hdr    *tar.Header
	typ    string
	offset int64
}

var typeNames = map[byte]string{
	tar.TypeLink: "hardlink", tar.TypeSymlink: "symlink", tar.TypeDir: "dir", tar.TypeReg: "reg",
	tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo",
}

func toc(r io.Reader) ([]entry, int64, error) {
	c := &counter{r: r}
	tr := tar.NewReader(c)
	var out []entry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, c.pos, nil
		}
		if err != nil {
			return nil, 0, err
		}
		t, ok := typeNames[hdr.Typeflag]
		if !ok {
			return nil, 0, fmt.Errorf("unsupported input tar entry %q", hdr.Typeflag)
		}
		out = append(out, entry{hdr, t, c.pos})
	}
}

type point struct {
	in, out int64
	bits    uint8
	window  []byte
}

func gzipPoints(data []byte, span int64) ([]point, error) {
	var pts *C.struct_zo_point
	var n C.int
	buf := C.CBytes(data)
	defer C.free(buf)
	if rc := C.zo_points((*C.uchar)(buf), C.size_t(len(data)), C.int64_t(span), &pts, &n); rc != 0 {
		return nil, fmt.Errorf("inflate failed (%d)", int(rc))
	}
	defer C.free(unsafe.Pointer(pts))
	cs := unsafe.Slice(pts, int(n))
	out := make([]point, len(cs))
	for i, p := range cs {
		out[i] = point{int64(p.in), int64(p.out), uint8(p.bits), C.GoBytes(unsafe.Pointer(&p.window[0]), C.ZO_WINDOW)}
	}
	return out, nil
}

func sha(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

type fb struct{ b unsafe.Pointer }

func newFB() fb    { return fb{C.fb_new()} }
func (f fb) free() { C.fb_free(f.b) }
func (f fb) str(s string) C.uint32_t {
	p := C.CString(s)
	defer C.free(unsafe.Pointer(p))
	return C.fb_string(f.b, p, C.size_t(len(s)))
}
func (f fb) bytes(b []byte) C.uint32_t {
	if len(b) == 0 {
		return C.fb_bytes(f.b, nil, 0)
	}
	p := C.CBytes(b)
	defer C.free(p)
	return C.fb_bytes(f.b, (*C.uint8_t)(p), C.size_t(len(b)))
}
func (f fb) offsets(offs []C.uint32_t) C.uint32_t {
	if len(offs) == 0 {
		return C.fb_offsets(f.b, nil, 0)
	}
	return C.fb_offsets(f.b, &offs[0], C.size_t(len(offs)))
}
func (f fb) start() C.uint32_t               { return C.fb_start(f.b) }
func (f fb) off(id int, o C.uint32_t)        { C.fb_add_offset(f.b, C.int(id), o) }
func (f fb) i64(id int, v int64)             { C.fb_add_i64(f.b, C.int(id), C.int64_t(v)) }
func (f fb) i32(id int, v int32)             { C.fb_add_i32(f.b, C.int(id), C.int32_t(v)) }
func (f fb) u32(id int, v uint32)            { C.fb_add_u32(f.b, C.int(id), C.uint32_t(v)) }
func (f fb) i8(id int, v, def int8)          { C.fb_add_i8(f.b, C.int(id), C.int8_t(v), C.int8_t(def)) }
func (f fb) end(start C.uint32_t) C.uint32_t { return C.fb_end(f.b, start) }
func (f fb) finish(root C.uint32_t) []byte {
	C.fb_finish(f.b, root)
	var n C.size_t
	p := C.fb_data(f.b, &n)
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// tarZinfo is the nested TarZinfo table: version, span_size, size added in that order.
func tarZinfo(span, size int64) []byte {
	f := newFB()
	defer f.free()
	t := f.start()
	f.i32(0, 2)
	f.i64(1, span)
	f.i64(2, size)
	return f.finish(f.end(t))
}

func main() {
	span := flag.Int64("span", 4<<20, "span size")
	algo := flag.String("algo", "gzip", "gzip or uncompressed")
	tool := flag.String("tool", "AWS SOCI CLI v0.2", "build tool identifier")
	flag.Parse()
	data, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	var (
		entries     []entry
		uas         int64
		checkpoints []byte
		digests     []string
		maxSpan     int32
		algoCode    int8
	)
	size := int64(len(data))
	switch *algo {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			fail(err)
		}
		if entries, uas, err = toc(zr); err != nil {
			fail(err)
		}
		pts, err := gzipPoints(data, *span)
		if err != nil {
			fail(err)
		}
		var blob bytes.Buffer
		binary.Write(&blob, binary.LittleEndian, int32(len(pts)))
		binary.Write(&blob, binary.LittleEndian, *span)
		for i, p := range pts {
			binary.Write(&blob, binary.LittleEndian, p.in)
			binary.Write(&blob, binary.LittleEndian, p.out)
			blob.WriteByte(p.bits)
			blob.Write(p.window)
			start := p.in
			if p.bits != 0 {
				start--
			}
			end := size
			if i+1 < len(pts) {
				end = pts[i+1].in
			}
			digests = append(digests, sha(data[start:end]))
		}
		checkpoints = blob.Bytes()
		maxSpan = int32(len(pts) - 1)
		algoCode = 1
	case "uncompressed":
		if entries, uas, err = toc(bytes.NewReader(data)); err != nil {
			fail(err)
		}
		n := size / *span
		if size%*span == 0 {
			n--
		}
		for i := int64(0); i <= n; i++ {
			end := (i + 1) * *span
			if end > size {
				end = size
			}
			digests = append(digests, sha(data[i**span:end]))
		}
		maxSpan = int32(n)
		checkpoints = tarZinfo(*span, size)
		algoCode = 2
	default:
		fail(fmt.Errorf("unknown algorithm %q", *algo))
	}
	os.Stdout.Write(ztoc(entries, uas, size, *tool, checkpoints, digests, maxSpan, algoCode))
}

// ztoc lays the zTOC out in upstream's builder order: version, build tool, the FileMetadata tables from
// the last entry to the first (each with its strings, then its PAX records sorted by key), the metadata
// vector, TOC, checkpoints, span digest strings and vector, CompressionInfo, Ztoc.
func ztoc(entries []entry, uas, size int64, tool string, checkpoints []byte, digests []string, maxSpan int32,
	algo int8) []byte {
	f := newFB()
	defer f.free()
	version := f.str("0.9")
	toolOff := f.str(tool)
	fms := make([]C.uint32_t, len(entries))
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		h := e.hdr
		name := f.str(h.Name)
		typ := f.str(e.typ)
		link := f.str(h.Linkname)
		uname := f.str(h.Uname)
		gname := f.str(h.Gname)
		mt, _ := h.ModTime.MarshalText()
		mtime := f.str(string(mt))
		keys := make([]string, 0, len(h.PAXRecords))
		for k := range h.PAXRecords {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		xs := make([]C.uint32_t, 0, len(keys))
		for _, k := range keys {
			ko := f.str(k)
			vo := f.str(h.PAXRecords[k])
			t := f.start()
			f.off(0, ko)
			f.off(1, vo)
			xs = append(xs, f.end(t))
		}
		xv := f.offsets(xs)
		t := f.start()
		f.off(0, name)
		f.off(1, typ)
		f.i64(2, e.offset)
		f.i64(3, h.Size)
		f.off(4, link)
		f.i64(5, h.Mode)
		f.u32(6, uint32(h.Uid))
		f.u32(7, uint32(h.Gid))
		f.off(8, uname)
		f.off(9, gname)
		f.off(10, mtime)
		f.i64(11, h.Devmajor)
		f.i64(12, h.Devminor)
		f.off(13, xv)
		fms[i] = f.end(t)
	}
	mv := f.offsets(fms)
	t := f.start()
	f.off(0, mv)
	tocOff := f.end(t)
	cv := f.bytes(checkpoints)
	ds := make([]C.uint32_t, len(digests))
	for i, d := range digests {
		ds[i] = f.str(d)
	}
	dv := f.offsets(ds)
	t = f.start()
	f.i32(1, maxSpan)
	f.off(2, dv)
	f.off(3, cv)
	f.i8(0, algo, 1)
	ci := f.end(t)
	t = f.start()
	f.off(0, version)
	f.off(1, toolOff)
	f.off(4, tocOff)
	f.i64(2, size)
	f.i64(3, uas)
	f.off(5, ci)
	return f.finish(f.end(t))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
