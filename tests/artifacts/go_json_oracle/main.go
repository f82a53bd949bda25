// go_json_oracle re-marshals an OCI document with Go's encoding/json, as upstream soci-snapshotter and
// containerd write them: it unmarshals stdin into the Go struct named by the first argument (manifest,
// index, prefetch) and writes json.Marshal of it to stdout. "annotate DIGEST" does what upstream's
// annotateImages (soci/soci_convert.go) does to an image manifest before writing it: OCI manifest and
// config media types, and the com.amazon.soci.index-digest annotation. Test tooling for soci_lab
// (tests/artifacts/test_artifacts_go_json.py); standard library only, built offline.
//
// The structs carry image-spec v1.1.1's field order, JSON names and omitempty flags (specs-go/v1
// descriptor.go, manifest.go, index.go; specs-go/versioned.go), which upstream pins, and upstream's
// prefetch artifact (soci/prefetch.go). They are written here from those published definitions; the
// serialisation itself (field order, omitempty, map key order, escaping, base64 of []byte) is Go's.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Data         []byte            `json:"data,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
}

type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type Index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type PrefetchSpan struct {
	StartSpan int32 `json:"start_span"`
	EndSpan   int32 `json:"end_span"`
	Priority  int   `json:"priority,omitempty"`
}

type PrefetchArtifact struct {
	Version       string         `json:"version"`
	PrefetchSpans []PrefetchSpan `json:"prefetch_spans"`
}

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	var v any
	switch os.Args[1] {
	case "manifest":
		v = &Manifest{}
	case "index":
		v = &Index{}
	case "prefetch":
		v = &PrefetchArtifact{}
	case "annotate":
		m := &Manifest{}
		if err := json.Unmarshal(in, m); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		m.MediaType = "application/vnd.oci.image.manifest.v1+json"
		m.Config.MediaType = "application/vnd.oci.image.config.v1+json"
		if m.Annotations == nil {
			m.Annotations = make(map[string]string)
		}
		m.Annotations["com.amazon.soci.index-digest"] = os.Args[2]
		out, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		os.Stdout.Write(out)
		return
	default:
		fmt.Fprintln(os.Stderr, "usage: go_json_oracle manifest|index|prefetch < doc.json")
		os.Exit(2)
	}
	if err := json.Unmarshal(in, v); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(out)
}
