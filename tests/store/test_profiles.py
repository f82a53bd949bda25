"""Startup profiles: ``startup-local-v1`` on the sample image covers the heuristic paths with Hermes's
priorities and annotations; ``trace-v1`` covers exactly the spans a recorded trace read."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from storetools import PLATFORM, SPAN, STORE_TOKEN

from soci_lab.images import RuntimeConfig, build_image, build_sample_image
from soci_lab.oci import ImageConfig, OCILayout
from soci_lab.store import ArtifactStore, BuildSettings, StartupLocalProfile, TraceProfile, request_build
from soci_lab.store.profiles import config_patterns
from soci_lab.store.view import ImageView
from soci_lab.ztoc import PrefetchArtifact, Ztoc
from soci_lab.ztoc.index import SociIndex, build_soci_index


@dataclass
class Built:
    ref: str
    layers: list[tuple[str, Ztoc]]
    config: ImageConfig
    view: ImageView

    def layer_of(self, path: str) -> str:
        ref = self.view.resolve(path)
        assert ref is not None, path
        return ref.layer


def _index(tmp: Path, ref: str, result) -> Built:
    layout = OCILayout(tmp / "layout")
    built = build_soci_index(list(result.manifest.layers), lambda d: layout.blob_path(d.digest), version="v2",
                             span_size=SPAN, min_layer_size=0)
    layers = [(str(d.digest), built.ztocs[str(d.digest)]) for d in result.manifest.layers]
    return Built(ref, layers, result.config, ImageView(layers))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("sample")
    ref = f"oci:{tmp / 'layout'}:v1"
    return _index(tmp, ref, build_sample_image(ref, tmp / "trees", scale=0.05))


def _priorities(art: PrefetchArtifact) -> dict[int, int]:
    return {s: p.priority for p in art.spans for s in range(p.start_span, p.end_span + 1)}


def test_view_follows_links_and_whiteouts(sample: Built):
    v = sample.view
    assert v.resolve("/bin/sh").path == "usr/bin/sh"  # bin -> usr/bin (usr-merged)
    assert v.resolve("/app/bin/tool-alias").path in ("app/bin/tool", "app/bin/tool-alias")
    assert v.resolve("/app/current-config").path == "app/config/app.json"
    assert v.resolve("/app/config/app.json").layer == sample.layers[-1][0]  # the top layer's copy
    assert v.resolve("/etc/motd") is None and v.resolve("/etc/legacy/old-0.conf") is None
    assert v.resolve("/opt/data/extra/shard-0.bin") is None
    assert v.resolve("/etc/legacy/new.conf") is not None


def test_startup_profile_covers_the_heuristic_paths(sample: Built):
    result = StartupLocalProfile().select(sample.layers, sample.config)
    heuristic = ["/bin/sh", "/etc/passwd", "/etc/group", "/app/run.sh", "/app/config/app.json", "/app/bin/tool",
                 "/app/config/logging.json"]
    heuristic += [p for p in ("/lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/libc.so.6")
                  if sample.view.resolve(p) is not None]
    for path in heuristic:
        ref = sample.view.resolve(path)
        assert ref is not None and ref.is_data_file, path
        assert ref.layer in result.artifacts, path
        prio = _priorities(result.artifacts[ref.layer])
        first, last = ref.span_range()
        assert prio.get(first) == 0, (path, first, prio)
        for s in range(first, min(last, first + 63) + 1):
            assert s in prio, (path, s)
            if last - first + 1 <= 2:
                assert prio[s] == 0, (path, s)
        assert "/" + ref.path in result.files[ref.layer]
    # nothing in the data layer is a startup path: it gets no prefetch artifact
    assert sample.layer_of("/opt/data/model.bin") not in result.artifacts
    # the lower copy of app.json (shadowed by the top layer) is not what was chosen
    assert "/app/config/app.json" not in result.files.get(sample.layer_of("/app/run.sh"), [])
    # the profile's annotations on every prefetch descriptor
    for layer, ann in result.descriptor_annotations.items():
        assert ann["hermes.cloudpilot.ai/prefetch-profile"] == "startup-local-v1"
        paths = json.loads(ann["hermes.cloudpilot.ai/prefetch-paths"])
        assert "bin/sh" in paths and "app/run.sh" in paths and "app/config/" in paths
        assert layer in result.artifacts


def test_startup_profile_knobs_annotations_and_key(sample: Built):
    p = StartupLocalProfile()
    assert p.min_layer_size == 0
    assert p.index_annotations() == {
        "hermes.cloudpilot.ai/background-fetch": "disabled",
        "hermes.cloudpilot.ai/prefetch-profile": "startup-local-v1",
        "hermes.cloudpilot.ai/skip-file-verification": "true",
    }
    assert re.fullmatch(r"startup-local-v1:[0-9a-f]{16}", p.key())
    # image paths never change the key; the knobs do
    assert StartupLocalProfile(extra_patterns=("opt/data/model.bin",)).key() == p.key()
    assert StartupLocalProfile(max_spans=10).key() != p.key()


def test_large_files_first_span_sync_rest_background(sample: Built):
    model = sample.view.resolve("/opt/data/model.bin")
    first, last = model.span_range()
    assert last - first + 1 > 3
    result = StartupLocalProfile(extra_patterns=("opt/data/model.bin",)).select(sample.layers, sample.config)
    art = result.artifacts[model.layer]
    n = min(last - first + 1, 64)
    assert _priorities(art) == {first: 0, **{s: 1 for s in range(first + 1, first + n)}}
    capped = StartupLocalProfile(extra_patterns=("opt/data/model.bin",), max_spans_per_file=3)
    assert _priorities(capped.select(sample.layers, sample.config).artifacts[model.layer]) == \
        {first: 0, first + 1: 1, first + 2: 1}
    tiny = StartupLocalProfile(max_spans=5).select(sample.layers, sample.config)
    assert sum(len(a.span_ids()) for a in tiny.artifacts.values()) == 5


def test_archives_get_head_and_tail_spans_first(tmp_path: Path):
    rng = random.Random(5)
    app = tmp_path / "tree" / "app"
    (app / "lib").mkdir(parents=True)
    (app / "lib" / "app.jar").write_bytes(rng.randbytes(200_000))
    (app / "data.zip").write_bytes(rng.randbytes(200_000))
    os.makedirs(app / "bin")
    (app / "bin" / "start").write_text("#!/bin/sh\n")
    ref = f"oci:{tmp_path / 'layout'}:v1"
    built = _index(tmp_path, ref, build_image([tmp_path / "tree"], ref,
                                              runtime=RuntimeConfig(entrypoint=["/app/bin/start"])))
    result = StartupLocalProfile(archive_edge_spans=2, extra_patterns=("app/data.zip",)).select(built.layers,
                                                                                                built.config)
    prio = _priorities(result.artifacts[built.layers[0][0]])
    jar = built.view.resolve("/app/lib/app.jar").span_range()
    zipf = built.view.resolve("/app/data.zip").span_range()
    assert prio[jar[0]] == 0 and prio[jar[1]] == 0  # a jar: one edge span each end
    assert all(prio[s] == 1 for s in range(jar[0] + 1, jar[1]) if s not in (zipf[0], zipf[1]))
    for s in (zipf[0], zipf[0] + 1, zipf[1] - 1, zipf[1]):  # other archives: archive_edge_spans each end
        assert prio[s] == 0


def test_image_config_patterns():
    def cfg(**rt) -> ImageConfig:
        return ImageConfig.from_bytes(json.dumps({"rootfs": {"type": "layers", "diff_ids": []}, "config": rt})
                                      .encode())

    pats = config_patterns(cfg(Entrypoint=["sh", "-c", "exec java -jar /opt/svc/app.jar"], Env=["PATH=/usr/bin:/bin"]))
    assert pats[:4] == ["usr/bin/sh", "bin/sh", "usr/bin/exec", "bin/exec"]
    pats = config_patterns(cfg(Cmd=["/opt/svc/bin/server", "--port", "80"], WorkingDir="/srv"))
    assert "opt/svc/bin/server" in pats and "opt/svc/lib/*.jar" in pats and "opt/svc/bin/" in pats
    assert "srv/config/" in pats and "opt/svc/bin/lib/*.so*" in pats
    pats = config_patterns(cfg(Cmd=["/usr/bin/python3", "/app/main.py"]))
    assert pats[0] == "usr/bin/python3" and not any(p.startswith("usr/bin/bin") for p in pats)
    assert not any(p.startswith("app/") for p in pats)  # python3 is not a shell: its argument is not a program
    assert config_patterns(cfg()) == []


def _expected_spans(built: Built, reads: list[tuple[float, str, int, int]]) -> dict[str, dict[int, float]]:
    """Independently: per layer, every span whose uncompressed range meets a read's bytes → first read time."""
    out: dict[str, dict[int, float]] = {}
    for t, path, offset, size in sorted(reads):
        ref = built.view.resolve(path)
        if ref is None:
            continue
        start = ref.entry.uncompressed_offset + min(offset, ref.entry.uncompressed_size)
        end = ref.entry.uncompressed_offset + min(offset + size, ref.entry.uncompressed_size)
        for sp in ref.ztoc.spans():
            if sp.start_uncomp < end and start < sp.end_uncomp:
                out.setdefault(ref.layer, {}).setdefault(sp.id, t)
    return out


TRACE = """t_s,op,path,offset,size
0.000,open,/bin/sh,0,0
0.010,read,/bin/sh,0,4096
0.020,stat,/app/run.sh,0,0
0.030,read,/app/run.sh,0,744
0.040,read,/opt/data/model.bin,100000,50000
0.050,read,/app/config/app.json,0,4096
0.060,read,/etc/motd,0,100
0.070,read,/opt/data/model.bin,120000,1000
0.080,read,/opt/data/model.bin,900000,70000
0.090,readdir,/app/docs,0,512
0.100,read,/usr/bin/sh,120000,999999
"""


def _trace_reads() -> list[tuple[float, str, int, int]]:
    return [(float(t), p, int(o), int(s)) for t, op, p, o, s in
            (line.split(",") for line in TRACE.splitlines()[1:]) if op == "read"]


def _check_order(art: PrefetchArtifact, first: dict[int, float]) -> None:
    """Ranges listed by (priority, first access, span id), none overlapping, none mergeable."""
    keys = [(r.priority, min(first[s] for s in range(r.start_span, r.end_span + 1)), r.start_span)
            for r in art.spans]
    assert keys == sorted(keys)
    ids = art.span_ids()
    assert len(ids) == sum(r.end_span - r.start_span + 1 for r in art.spans)
    by_start = sorted(art.spans, key=lambda r: r.start_span)
    for a, b in itertools.pairwise(by_start):
        assert not (a.end_span + 1 == b.start_span and a.priority == b.priority)


def test_trace_profile_covers_exactly_the_spans_read(sample: Built, tmp_path: Path):
    (tmp_path / "trace.csv").write_text(TRACE)
    profile = TraceProfile.from_trace(tmp_path / "trace.csv")
    expected = _expected_spans(sample, _trace_reads())
    result = profile.select(sample.layers, sample.config)
    assert set(result.artifacts) == set(expected)
    for layer, spans in expected.items():
        art = result.artifacts[layer]
        assert sorted(art.span_ids()) == sorted(spans)
        assert _priorities(art) == dict.fromkeys(spans, 0)  # the whole trace is the startup: all sync
        _check_order(art, spans)
    assert profile.index_annotations() == {"hermes.cloudpilot.ai/background-fetch": "disabled",
                                           "hermes.cloudpilot.ai/prefetch-profile": "trace-v1"}
    assert re.fullmatch(r"trace-v1:[0-9a-f]{16}", profile.key())
    assert TraceProfile.from_trace(TRACE).key() == profile.key()
    assert TraceProfile.from_trace(TRACE.replace("0.080", "0.085")).key() != profile.key()
    assert TraceProfile.from_trace(TRACE, sync_until_s=0.035).key() != profile.key()
    data_layer = sample.layer_of("/opt/data/model.bin")
    assert json.loads(result.descriptor_annotations[data_layer]["hermes.cloudpilot.ai/prefetch-paths"]) == \
        ["/opt/data/model.bin"]


def test_trace_profile_priorities_follow_first_access(sample: Built):
    cut = 0.035
    expected = _expected_spans(sample, _trace_reads())
    later = sorted({t for spans in expected.values() for t in spans.values() if t > cut})
    assert len(later) >= 2, "the trace reads new spans at several times after the cut"
    result = TraceProfile.from_trace(TRACE, sync_until_s=cut).select(sample.layers, sample.config)
    assert set(result.artifacts) == set(expected)
    for layer, spans in expected.items():
        art = result.artifacts[layer]
        assert _priorities(art) == {s: 0 if t <= cut else 1 + later.index(t) for s, t in spans.items()}
        _check_order(art, spans)
    assert any(p > 1 for art in result.artifacts.values() for p in _priorities(art).values())


def test_store_serves_the_trace_profile_first(sample: Built, tmp_path: Path):
    (tmp_path / "trace.csv").write_text(TRACE)
    with ArtifactStore(db=tmp_path / "h.db", platform=PLATFORM, settings=BuildSettings(span_size=SPAN),
                       build_token=STORE_TOKEN) as store:
        startup = request_build(store.url, sample.ref, wait=True, timeout=120, token=STORE_TOKEN)
        traced = request_build(store.url, sample.ref, profile="trace-v1", trace=tmp_path / "trace.csv", wait=True,
                               timeout=120, token=STORE_TOKEN)
        assert startup["status"] == traced["status"] == "Ready"
        assert startup["imageDigestRef"] == traced["imageDigestRef"]
        assert startup["indexDigest"] != traced["indexDigest"]

        def served(**params) -> SociIndex:
            r = httpx.get(store.url + "/v1/indexes/resolve", params={"image": traced["imageDigestRef"], **params})
            assert r.status_code == 200, r.text
            return SociIndex.from_bytes(httpx.get(f"{store.url}/v1/blobs/{r.json()['sociIndex']['digest']}").content)

        assert served().annotations["hermes.cloudpilot.ai/prefetch-profile"] == "trace-v1"
        assert served(profile="startup-local-v1").annotations["hermes.cloudpilot.ai/prefetch-profile"] == \
            "startup-local-v1"
        keys = sorted(r["accelerationKey"].split(":")[0] for r in httpx.get(store.url + "/v1/artifacts").json())
        assert keys == ["startup-local-v1", "trace-v1"]
        # the trace index's prefetch artifacts are exactly the profile's
        index = served()
        expected = TraceProfile.from_trace(TRACE).select(sample.layers, sample.config).artifacts
        got = {d.annotations["com.amazon.soci.image-layer-digest"]:
               PrefetchArtifact.from_bytes(httpx.get(f"{store.url}/v1/blobs/{d.digest}").content)
               for d in index.prefetch_descriptors().values()}
        assert got == expected
