"""``soci-lab index create`` / ``index info``: output, JSON keys and exit codes (cli.md), checked against the
image itself — span counts recomputed from each zTOC's geometry, sizes from the layer blobs."""

from __future__ import annotations

import json
import zlib

import anyio
from arttools import MIN_LAYER, SPAN, build_small_image, soci_lab, spans_by_geometry, unique_repo

from soci_lab.artifacts import fetch_soci_artifacts
from soci_lab.cli import main
from soci_lab.config import Config
from soci_lab.events import read_events
from soci_lab.oci import OCILayout
from soci_lab.remote import RegistryClient
from soci_lab.ztoc import Ztoc
from soci_lab.ztoc.index import ANNOTATION_DISABLE_XATTRS

INFO_KEYS = {"ref", "image_manifest_digest", "platform", "index_digest", "index_size", "format", "found_via",
             "build_tool_identifier", "layers"}
LAYER_KEYS = {"digest", "media_type", "size", "indexed", "compression", "uncompressed_size", "span_size",
              "span_count", "ztoc_digest", "ztoc_size", "prefetch_spans"}
CREATE_KEYS = {"ref", "format", "index_digest", "index_size", "image_manifest_digest", "platform",
               "annotated_manifest_digest", "image_index_digest", "ztocs", "skipped"}


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def repo_of(ref: str) -> str:
    return ref.split("/", 1)[1].rsplit(":", 1)[0]


async def blob(ref: str, digest: str) -> bytes:
    async with RegistryClient(ref) as rc:
        return await rc.get_blob(repo_of(ref), digest)


async def manifest_doc(ref: str, digest: str):
    async with RegistryClient(ref) as rc:
        return (await rc.get_manifest(repo_of(ref), digest)).doc


def test_create_prints_the_digest_and_info_describes_every_layer(registry, tmp_path):
    img = build_small_image(registry.ref(unique_repo(), "v1"), tmp_path)
    proc = soci_lab("index", "create", img.ref, "--span-size", "256KiB", "--min-layer-size", "256KiB")
    lines = proc.stdout.splitlines()
    assert proc.stderr.strip() == f"skipped layer {img.tiny.digest}: smaller than the minimum layer size {MIN_LAYER}"
    assert len(lines) == 1 and lines[0].startswith("sha256:") and len(lines[0]) == 71
    index_digest = lines[0]

    doc = json.loads(soci_lab("index", "info", img.ref, "--json").stdout)
    assert set(doc) == INFO_KEYS
    assert doc["index_digest"] == index_digest and doc["format"] == "v2" and doc["found_via"] == "v2"
    assert doc["build_tool_identifier"] == "AWS SOCI CLI v0.2"
    assert [layer["digest"] for layer in doc["layers"]] == [str(d.digest) for d in img.layers]
    for layer, desc in zip(doc["layers"], img.layers, strict=True):
        assert set(layer) == LAYER_KEYS
        assert layer["media_type"] == desc.media_type and layer["size"] == desc.size
        if desc.size < MIN_LAYER:
            assert not layer["indexed"]
            assert all(layer[k] is None for k in ("ztoc_digest", "ztoc_size", "span_count", "span_size"))
            continue
        assert layer["indexed"] and layer["compression"] == "gzip" and layer["span_size"] == SPAN
        zblob = anyio.run(blob, img.ref, layer["ztoc_digest"])
        assert len(zblob) == layer["ztoc_size"]
        z = Ztoc.from_bytes(zblob)
        spans = spans_by_geometry(z)  # walked span by span, not max_span_id
        assert layer["span_count"] == len(spans)
        # upstream's rule: a checkpoint only once more than span_size bytes came out since the last one
        assert all(end - start > SPAN for start, end in spans[:-1])
        assert layer["span_count"] <= -(-layer["uncompressed_size"] // SPAN)
        # the tar stream as the TOC builder saw it ends inside the decompressed layer's trailing blocks
        raw = zlib.decompress(anyio.run(blob, img.ref, layer["digest"]), wbits=31)
        assert len(raw) - 10240 <= layer["uncompressed_size"] <= len(raw)
        assert doc["layers"] and spans[-1][1] == layer["uncompressed_size"]

    text = soci_lab("index", "info", img.ref).stdout
    assert index_digest in text and str(img.big.digest)[7:19] in text


def test_v1_create_and_info_through_main(registry, tmp_path, capsys):
    img = build_small_image(registry.ref(unique_repo(), "v1"), tmp_path)
    events = tmp_path / "events.jsonl"
    code, out, err = run_main(capsys, "index", "create", img.ref, "--format", "v1", "--span-size", "512KiB",
                              "--min-layer-size", "256KiB", "--json", "--events", str(events),
                              "--optimizations", "xattr")
    assert code == 0, err
    created = json.loads(out)
    frame = read_events(events)
    built = frame[frame.kind == "ztoc_build"]
    assert sorted(built.layer) == sorted([str(img.big.digest), str(img.mid.digest)]) and built.ok.all()
    assert (frame.kind == "push").sum() == 3  # two zTOCs and the {} config
    assert (frame.kind == "blob_download").sum() == 2  # only the layers worth indexing were downloaded
    assert set(created) == CREATE_KEYS
    assert created["format"] == "v1" and created["image_index_digest"] is None
    assert created["image_manifest_digest"] == img.digest
    assert set(created["ztocs"]) == {str(img.big.digest), str(img.mid.digest)}
    assert set(created["skipped"]) == {str(img.tiny.digest)}
    code, out, err = run_main(capsys, "index", "info", img.ref, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["found_via"] == "v1" and info["index_digest"] == created["index_digest"]
    assert {layer["digest"]: layer["ztoc_digest"] for layer in info["layers"] if layer["indexed"]} == created["ztocs"]
    assert all(layer["span_size"] == 512 << 10 for layer in info["layers"] if layer["indexed"])
    code, out, err = run_main(capsys, "index", "info", img.ref, "--json", "--index-digest", created["index_digest"])
    assert code == 0, err
    assert json.loads(out)["found_via"] == "explicit"
    # the layers have neither xattrs nor opaque directories: their zTOCs say so
    index = anyio.run(lambda: manifest_doc(img.ref, created["index_digest"]))
    assert [d.annotations.get(ANNOTATION_DISABLE_XATTRS) for d in index.layers] == ["true", "true"]


def test_prefetch_trace_becomes_span_ranges_of_the_reads(registry, tmp_path, capsys):
    img = build_small_image(registry.ref(unique_repo(), "v1"), tmp_path)
    trace = tmp_path / "trace.csv"
    reads = [(300_000, 100), (1_200_000, 250_000)]
    trace.write_text(
        "t_s,op,path,offset,size\n"
        "0.0,open,/opt/big/blob.bin,0,0\n"
        "0.1,stat,/usr/lib/mid.so,0,0\n"
        + "".join(f"0.{i + 2},read,/opt/big/blob.bin,{off},{size}\n" for i, (off, size) in enumerate(reads))
    )
    code, out, err = run_main(capsys, "index", "create", img.ref, "--span-size", "256KiB", "--min-layer-size",
                              "256KiB", "--prefetch-trace", str(trace))
    assert code == 0, err

    async def go():
        async with RegistryClient(img.ref) as rc:
            desc = (await rc.resolve_image(img.ref)).manifest_descriptor
            return await fetch_soci_artifacts(rc, img.ref, desc, config=Config(), local_store=OCILayout(tmp_path / "s"))

    arts = anyio.run(go)
    assert arts.prefetch_for(img.mid.digest) is None  # a stat reads nothing
    z = arts.ztoc_for(img.big.digest)
    [entry] = [e for e in z.toc if e.name.lstrip("./") == "opt/big/blob.bin"]
    bounds = [z.uncompressed_range(i) for i in range(len(spans_by_geometry(z)))]

    def span_at(offset: int) -> int:
        return next(i for i, (s, e) in enumerate(bounds) if s <= offset < e)

    want: set[int] = set()
    for off, size in reads:
        start = entry.uncompressed_offset + off
        want.update(range(span_at(start), span_at(start + size) + 1))
    got = arts.prefetch_for(img.big.digest)
    assert got is not None and set(got.span_ids()) == want
    code, out, _ = run_main(capsys, "index", "info", img.ref, "--json")
    per_layer = {layer["digest"]: layer["prefetch_spans"] for layer in json.loads(out)["layers"]}
    assert per_layer == {str(img.big.digest): len(want), str(img.tiny.digest): 0, str(img.mid.digest): 0}


def test_exit_codes(registry, tmp_path, capsys):
    img = build_small_image(registry.ref(unique_repo(), "v1"), tmp_path)
    # runtime failures: one line on stderr, exit 1, no traceback
    proc = soci_lab("index", "info", img.ref, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no SOCI index" in proc.stderr
    code, out, err = run_main(capsys, "index", "create", img.ref, "--min-layer-size", "64MiB")
    assert code == 1 and "no ztocs created" in err and "Traceback" not in err and out == ""
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text("t_s,op,path,offset,size\n0,read,relative/path,0,10\n")
    code, _, err = run_main(capsys, "index", "create", img.ref, "--prefetch-trace", str(bad_trace),
                            "--min-layer-size", "256KiB")
    assert code == 1 and "line 2" in err
    code, _, err = run_main(capsys, "index", "info", registry.ref(unique_repo(), "absent"))
    assert code == 1 and err.count("\n") == 1
    # usage errors: exit 2 from argparse
    for args in (["index", "create", "Not A Ref"], ["index", "create", img.ref, "--span-size", "0"],
                 ["index", "create", img.ref, "--format", "v3"], ["index", "create", img.ref, "--min-layer-size", "x"],
                 ["index", "info"], ["index", "info", img.ref, "--index-digest", "sha256:nothex"]):
        assert main(args) == 2, args  # main returns argparse's exit code (issue 16)
        capsys.readouterr()
