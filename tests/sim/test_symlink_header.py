"""A symlink in a lazy layer: walking through it (or reading it) makes its layer server check the symlink's
tar header (``soci_lab.lazy.fusefs.readlink`` → ``verify_entry``), which fetches the span the header lies in
even when no file data there is read. Real python-pandas pulls fetched span 0 of a layer for ``/etc/localtime``
(its 1,536-byte header) and nodejs ones a span for ``/usr/bin/x86_64``; the model did not (one request and
1.7 MB short). Checked once per symlink; not at all when headers are not verified."""

from __future__ import annotations

from dataclasses import replace

from soci_lab.sim import Access, LazyParams, NetworkParams, SimParams, simulate
from soci_lab.sim.image import FileModel, ImageModel, LayerModel, SpanModel

MIB = 1 << 20
FAST = NetworkParams(bandwidth=1e9, rtt=0.0, request_overhead=0.0)


def _image() -> ImageModel:
    spans = [SpanModel(i, 10 + i * MIB, 10 + (i + 1) * MIB, i * 4 * MIB, (i + 1) * 4 * MIB) for i in range(4)]
    layer = LayerModel("sha256:" + "a" * 64, "gzip", 10 + 4 * MIB, 16 * MIB, spans, 4 * MIB, 5000)
    files = [
        FileModel("/etc", 0, 0, 0, "dir", 512),
        FileModel("/etc/localtime", 0, 2048, 0, "symlink", 1536, "/usr/share/zoneinfo/UTC"),  # header in span 0
        FileModel("/usr", 0, 2560, 0, "dir", 512), FileModel("/usr/share", 0, 3072, 0, "dir", 512),
        FileModel("/usr/share/zoneinfo", 0, 3584, 0, "dir", 512),
        FileModel("/usr/share/zoneinfo/UTC", 0, 9 * MIB, 100, "reg", 512),  # data in span 2
    ]
    return ImageModel("links", [layer], files)


def _spans(run) -> set[int]:
    ev = run.events
    return set(ev[ev.kind == "span_fetch"].span.astype(int))


def test_a_path_through_a_symlink_fetches_its_header_span():
    params = SimParams(network=FAST, lazy=LazyParams(readahead_spans=0, max_readahead_spans=0, kernel_ra_pages=0))
    params = replace(params, lazy=replace(params.lazy, verify_headers=True))
    through = simulate(_image(), "lazy", workload=[Access(0.0, "read", "/etc/localtime", 0, 100)], params=params)
    direct = simulate(_image(), "lazy", workload=[Access(0.0, "read", "/usr/share/zoneinfo/UTC", 0, 100)],
                      params=params)  # fmt: skip
    assert 0 in _spans(through) and 0 not in _spans(direct)
    assert through.summary["requests"] == direct.summary["requests"] + 1
    twice = simulate(_image(), "lazy", workload=[Access(0.0, "stat", "/etc/localtime", 0, 0),
                                                 Access(0.0, "readlink", "/etc/localtime", 0, 0)], params=params)
    assert _spans(twice) == {0}  # once per symlink; a readlink reads it too
    off = replace(params, lazy=replace(params.lazy, verify_headers=False))
    assert 0 not in _spans(simulate(_image(), "lazy", workload=[Access(0.0, "stat", "/etc/localtime", 0, 0)],
                                    params=off))  # fmt: skip
