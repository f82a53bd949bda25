// go_fb_oracle builds a zTOC with Go's FlatBuffers builder in upstream soci-snapshotter's call order
// (ztocToFlatbuffer: strings, FileMetadata from last to first, vectors, CompressionInfo with the algorithm
// added last, Ztoc) from a JSON description on stdin, and writes the bytes to stdout. Test tooling for
// soci_lab (tests/ztoc/test_ztoc_upstream_oracles.py); needs the FlatBuffers Go runtime (SOCI_LAB_FLATBUFFERS_GO).
package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"sort"

	flatbuffers "github.com/google/flatbuffers/go"
	z "go_fb_oracle/gen/ztoc"
)

type fm struct {
	Name, Type, Linkname, Uname, Gname, ModTime string
	Off, Size, Mode, Devmajor, Devminor        int64
	UID, GID                                   uint32
	PAX                                        map[string]string
}
type in struct {
	Version, Tool         string
	CSize, USize          int64
	Algo                  int8
	AlgoSet               bool
	MaxSpan               int32
	Digests               []string
	Checkpoints           string
	TOC                   []fm
}

func main() {
	var d in
	if err := json.NewDecoder(os.Stdin).Decode(&d); err != nil {
		panic(err)
	}
	cps, _ := base64.StdEncoding.DecodeString(d.Checkpoints)
	b := flatbuffers.NewBuilder(0)
	version := b.CreateString(d.Version)
	tool := b.CreateString(d.Tool)
	offs := make([]flatbuffers.UOffsetT, len(d.TOC))
	for i := len(d.TOC) - 1; i >= 0; i-- {
		e := d.TOC[i]
		name := b.CreateString(e.Name)
		t := b.CreateString(e.Type)
		ln := b.CreateString(e.Linkname)
		un := b.CreateString(e.Uname)
		gn := b.CreateString(e.Gname)
		mt := b.CreateString(e.ModTime)
		keys := make([]string, 0, len(e.PAX))
		for k := range e.PAX {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		xs := []flatbuffers.UOffsetT{}
		for _, k := range keys {
			ko := b.CreateString(k)
			vo := b.CreateString(e.PAX[k])
			z.XattrStart(b)
			z.XattrAddKey(b, ko)
			z.XattrAddValue(b, vo)
			xs = append(xs, z.XattrEnd(b))
		}
		z.FileMetadataStartXattrsVector(b, len(xs))
		for j := len(xs) - 1; j >= 0; j-- {
			b.PrependUOffsetT(xs[j])
		}
		xv := b.EndVector(len(xs))
		z.FileMetadataStart(b)
		z.FileMetadataAddName(b, name)
		z.FileMetadataAddType(b, t)
		z.FileMetadataAddUncompressedOffset(b, e.Off)
		z.FileMetadataAddUncompressedSize(b, e.Size)
		z.FileMetadataAddLinkname(b, ln)
		z.FileMetadataAddMode(b, e.Mode)
		z.FileMetadataAddUid(b, e.UID)
		z.FileMetadataAddGid(b, e.GID)
		z.FileMetadataAddUname(b, un)
		z.FileMetadataAddGname(b, gn)
		z.FileMetadataAddModTime(b, mt)
		z.FileMetadataAddDevmajor(b, e.Devmajor)
		z.FileMetadataAddDevminor(b, e.Devminor)
		z.FileMetadataAddXattrs(b, xv)
		offs[i] = z.FileMetadataEnd(b)
	}
	z.TOCStartMetadataVector(b, len(offs))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	mv := b.EndVector(len(offs))
	z.TOCStart(b)
	z.TOCAddMetadata(b, mv)
	toc := z.TOCEnd(b)
	cv := b.CreateByteVector(cps)
	ds := []flatbuffers.UOffsetT{}
	for _, s := range d.Digests {
		ds = append(ds, b.CreateString(s))
	}
	z.CompressionInfoStartSpanDigestsVector(b, len(ds))
	for i := len(ds) - 1; i >= 0; i-- {
		b.PrependUOffsetT(ds[i])
	}
	dv := b.EndVector(len(ds))
	z.CompressionInfoStart(b)
	z.CompressionInfoAddMaxSpanId(b, d.MaxSpan)
	z.CompressionInfoAddSpanDigests(b, dv)
	z.CompressionInfoAddCheckpoints(b, cv)
	if d.AlgoSet {
		z.CompressionInfoAddCompressionAlgorithm(b, z.CompressionAlgorithm(d.Algo))
	}
	ci := z.CompressionInfoEnd(b)
	z.ZtocStart(b)
	z.ZtocAddVersion(b, version)
	z.ZtocAddBuildToolIdentifier(b, tool)
	z.ZtocAddToc(b, toc)
	z.ZtocAddCompressedArchiveSize(b, d.CSize)
	z.ZtocAddUncompressedArchiveSize(b, d.USize)
	z.ZtocAddCompressionInfo(b, ci)
	b.Finish(z.ZtocEnd(b))
	os.Stdout.Write(b.FinishedBytes())
}
