"""Properties of whole simulated pulls (hypothesis over images, networks, limits and workloads)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from functools import lru_cache

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci_lab.config import Config
from soci_lab.events import detail
from soci_lab.sim import (
    SUMMARY_KEYS,
    HostParams,
    NetworkParams,
    SimParams,
    SyntheticSpec,
    generate,
    read_everything,
    simulate,
    synthetic_trace,
)

MIB = 1024 * 1024


@lru_cache(maxsize=16)
def _image(seed: int, size_mib: int, layers: int, span_kib: int):
    spec = SyntheticSpec(
        seed=seed, compressed_size=size_mib * MIB, layers=layers, span_size=span_kib * 1024, min_layer_size=2 * MIB
    )
    return generate(spec)


@lru_cache(maxsize=32)
def _trace(seed: int, size_mib: int, layers: int, span_kib: int, fraction: float):
    return synthetic_trace(_image(seed, size_mib, layers, span_kib), fraction, seed=seed, read_size=192 * 1024)


scenario = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 5),
        "size_mib": st.sampled_from([8, 24, 40]),
        "layers": st.integers(1, 6),
        "span_kib": st.sampled_from([256, 1024, 4096]),
        "fraction": st.sampled_from([0.0, 0.02, 0.2, 1.0]),
        "mode": st.sampled_from(["sequential", "parallel", "lazy"]),
        "bandwidth": st.sampled_from([5e6, 50e6, 500e6]),
        "rtt": st.sampled_from([0.0, 0.002, 0.05]),
        "conn_cap": st.sampled_from([None, 3e6]),
        "slow_start": st.booleans(),
        "redirect": st.booleans(),
        "cores": st.integers(1, 4),
        "chunk": st.sampled_from(["", "1mb", "3mb"]),
        "dl_per_image": st.sampled_from([1, 2, 3, 8]),
        "dl_global": st.sampled_from([-1, 8, 16]),
        "up_per_image": st.sampled_from([1, 2]),
        "silence_ms": st.sampled_from([0, 200, 30_000]),
        "period_ms": st.sampled_from([10, 500]),
        "prefetch": st.booleans(),
    }
)


def _run(sc: dict, *, run_id: str = "r"):
    image = _image(sc["seed"], sc["size_mib"], sc["layers"], sc["span_kib"])
    if sc["prefetch"]:
        image = replace(image, prefetch_spans={li: [(0, 1)] for li, layer in enumerate(image.layers) if layer.indexed})
    trace = _trace(sc["seed"], sc["size_mib"], sc["layers"], sc["span_kib"], sc["fraction"]) if sc["fraction"] else None
    cfg = Config()
    ppu = cfg.pull_modes.parallel_pull_unpack
    ppu.concurrent_download_chunk_size = sc["chunk"]
    ppu.max_concurrent_downloads_per_image = sc["dl_per_image"]
    ppu.max_concurrent_downloads = sc["dl_global"]
    ppu.max_concurrent_unpacks_per_image = sc["up_per_image"]
    cfg.background_fetch.silence_period_msec = sc["silence_ms"]
    cfg.background_fetch.fetch_period_msec = sc["period_ms"]
    cfg.prefetch.enable = sc["prefetch"]
    params = SimParams(
        network=NetworkParams(
            bandwidth=sc["bandwidth"],
            rtt=sc["rtt"],
            conn_cap=sc["conn_cap"],
            slow_start=sc["slow_start"],
            redirect=sc["redirect"],
        ),
        host=HostParams(cores=sc["cores"]),
        record=True,
    )
    return image, trace, simulate(image, sc["mode"], workload=trace, config=cfg, params=params, run_id=run_id)


def _attr_values(frame: pd.DataFrame, key: str) -> list:
    return detail(frame, key).tolist()


def _chunked(sc: dict, size: int) -> bool:
    chunk = {"": 0, "1mb": MIB, "3mb": 3 * MIB}[sc["chunk"]]
    return chunk > 0 and size > chunk


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(a, 1) for a, b in intervals if b > a] + [(b, -1) for a, b in intervals if b > a])
    best = cur = 0
    for _, d in points:  # ends sort before starts at the same instant (-1 < 1)
        cur += d
        best = max(best, cur)
    return best


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenario)
def test_pull_properties(sc):
    image, trace, run = _run(sc)
    ev = run.events
    s = run.summary
    checks = run.checks

    # the summary is exactly the common keys, times ordered, fraction sane
    assert tuple(s) == SUMMARY_KEYS
    assert 0 < s["ready_s"] <= s["workload_done_s"] <= s["total_s"] + 1e-12
    assert 0.0 <= s["fraction_read"] <= 1.0 + 1e-12
    if trace is None:
        assert s["fraction_read"] == 0.0
    applied = [image.layer_stats(li)[2] for li, la in enumerate(image.layers) if sc["mode"] != "lazy" or not la.indexed]
    assert s["bytes_written"] == sum(applied)

    # bytes delivered equal bytes requested: per request, per layer, on the link
    http = ev[ev.kind == "http_request"]
    assert len(http) == s["requests"]
    assert int(http.bytes.sum()) == s["bytes_fetched"]
    assert checks["link_delivered"] == pytest.approx(
        checks["link_requested"] - checks["link_in_flight_remaining"], rel=1e-9, abs=1e-3 * max(1, len(http))
    )
    assert checks["link_requested"] == s["bytes_fetched"] + checks["link_in_flight_bytes"]
    meta = image.manifest_size + image.config_size
    if sc["mode"] in ("sequential", "parallel"):
        blobs = ev[ev.kind == "blob_download"]
        assert blobs.groupby("layer").bytes.sum().to_dict() == {la.digest: la.compressed_size for la in image.layers}
        assert s["bytes_fetched"] == meta + image.compressed_size
        probes = _attr_values(http, "what").count("probe")
        chunked = sum(1 for la in image.layers if _chunked(sc, la.compressed_size))
        # every chunked layer starts at once, before any probe has answered: each probes (as the real puller)
        assert probes == (chunked if sc["mode"] == "parallel" else 0)
        if sc["mode"] == "parallel":
            chunks = ev[ev.kind == "chunk_download"]
            assert chunks.groupby("layer").bytes.sum().to_dict() == {
                la.digest: la.compressed_size for la in image.layers if _chunked(sc, la.compressed_size)
            }
    else:
        spans = ev[ev.kind == "span_fetch"]
        by_key = {(la.digest, i): sp.c_size for la in image.layers for i, sp in enumerate(la.spans)}
        assert all(b == by_key[(la, int(i))] for la, i, b in zip(spans.layer, spans.span, spans.bytes, strict=True))
        # single flight: no span is fetched twice
        assert not spans.duplicated(["layer", "span"]).any()
        local = sum(la.compressed_size for la in image.layers if not la.indexed)
        ztocs = sum(la.ztoc_size for la in image.layers if la.indexed)
        resolves = sum(2 + la.spans[0].c_start for la in image.layers if la.indexed)  # + gzip header check
        prefetch_artifact = 200 * len(image.prefetch_spans) if image.prefetch_spans else 0
        refetch = image.manifest_size  # the snapshotter's own look-up of the manifest
        expected = (
            meta + refetch + image.index_size + ztocs + local + resolves + prefetch_artifact + int(spans.bytes.sum())
        )
        assert s["bytes_fetched"] == expected
    reads = ev[ev.kind == "file_read"]
    if trace:
        asked = [a for a in trace if a.op == "read"]
        assert len(reads) == len(asked)
        assert int(reads.bytes.sum()) == sum(a.size for a in asked)

    # no link ever carries more than its bandwidth (checked at every recomputation)
    cap = sc["bandwidth"]
    assert all(total <= cap * (1 + 1e-9) for _, total, _ in checks["network_history"])
    disk = run.params.host.disk_write_rate
    assert all(total <= disk * (1 + 1e-9) for _, total, _ in checks["disk_history"])
    if sc["conn_cap"] is not None:
        assert all(total <= cap * (1 + 1e-9) for _, total, _ in checks["network_history"])

    # concurrency limits are never exceeded — by the counters and, independently, by the event intervals
    assert checks["max_cores_used"] <= sc["cores"]
    for name, (limit, peak) in checks["limits"].items():
        assert limit == 0 or peak <= limit, name
    if sc["mode"] == "parallel":
        per_image = sc["dl_per_image"]
        glob = sc["dl_global"] if sc["dl_global"] > 0 else 10**9
        chunks = ev[ev.kind == "chunk_download"]
        assert _max_overlap(list(zip(chunks.t_start, chunks.t_end, strict=True))) <= min(per_image, glob)
        dec = ev[ev.kind == "decompress"]
        assert _max_overlap(list(zip(dec.t_start, dec.t_end, strict=True))) <= sc["up_per_image"]
        # no layer is decompressed before its bytes: one waiting for its download starts after it, one applied
        # while it downloads (only with two or more slots, never a chunked one) ends after its last byte
        blob_end = dict(zip(blobs.layer, blobs.t_end, strict=True))
        for digest, t0, t1, streamed in zip(dec.layer, dec.t_start, dec.t_end, dec["streamed"], strict=True):
            if streamed:
                assert sc["up_per_image"] >= 2
                assert not _chunked(sc, next(la.compressed_size for la in image.layers if la.digest == digest))
                assert t1 >= blob_end[digest] - 1e-9
            else:
                assert t0 >= blob_end[digest] - 1e-9
    if sc["mode"] == "sequential":
        blobs = ev[ev.kind == "blob_download"]
        assert _max_overlap(list(zip(blobs.t_start, blobs.t_end, strict=True))) <= 3
        dec = ev[ev.kind == "decompress"]
        assert _max_overlap(list(zip(dec.t_start, dec.t_end, strict=True))) <= 1
        assert list(dec.layer) == [la.digest for la in image.layers]  # unpacked in layer order

    # the background fetcher keeps its silence period and its rate
    if sc["mode"] == "lazy" and checks["bg_started"]:
        mounts = ev[(ev.kind == "mount") & (ev.layer.notna())]
        first_mount = float(mounts.t_end.min())
        started = checks["bg_started"]
        assert started[0] >= first_mount + sc["silence_ms"] / 1000 - 1e-9
        assert all(b - a >= sc["period_ms"] / 1000 - 1e-9 for a, b in itertools.pairwise(started))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenario)
def test_same_inputs_same_run(sc):
    _, _, a = _run(sc, run_id="same")
    _, _, b = _run(sc, run_id="same")
    pd.testing.assert_frame_equal(a.events, b.events)
    assert a.summary == b.summary


def test_same_seed_same_run_from_scratch():
    """Regenerating the image and the trace from the same seed gives an identical event frame."""

    def once():
        image = generate(SyntheticSpec(seed=9, compressed_size=30 * MIB, layers=4, min_layer_size=2 * MIB))
        trace = synthetic_trace(image, 0.1, seed=9)
        return simulate(image, "lazy", workload=trace, run_id="x")

    a, b = once(), once()
    pd.testing.assert_frame_equal(a.events, b.events)
    other = generate(SyntheticSpec(seed=10, compressed_size=30 * MIB, layers=4, min_layer_size=2 * MIB))
    c = simulate(other, "lazy", workload=synthetic_trace(other, 0.1, seed=10), run_id="x")
    assert not a.events.equals(c.events)


def test_read_everything_reads_everything_in_every_mode():
    image = _image(1, 24, 3, 1024)
    trace = read_everything(image)
    for mode in ("sequential", "parallel", "lazy"):
        run = simulate(image, mode, workload=trace)
        assert run.summary["fraction_read"] == pytest.approx(image.readable_bytes() / image.uncompressed_size)
        if mode == "lazy":
            assert run.checks["span_fetches"] + run.checks["bg_fetches"] <= run.checks["spans_total"]
            assert run.checks["span_fetches"] == run.checks["spans_total"]  # bg is silent for 30 s


def test_eager_modes_are_bandwidth_bound_on_a_slow_link():
    """At 10 MB/s a 40 MiB image cannot be ready before 40 MiB / 10 MB/s, and not much after."""
    image = _image(2, 40, 4, 1024)
    params = SimParams(network=NetworkParams(bandwidth=10e6, rtt=0.0))
    for mode in ("sequential", "parallel"):
        run = simulate(image, mode, params=params)
        floor = image.compressed_size / 10e6
        assert floor <= run.summary["ready_s"] <= floor + 2.0


def test_lazy_is_ready_before_eager_and_fetches_less_for_a_small_workload():
    image = _image(3, 40, 4, 1024)
    trace = synthetic_trace(image, 0.02, seed=3)
    lazy = simulate(image, "lazy", workload=trace).summary
    par = simulate(image, "parallel", workload=trace).summary
    assert lazy["ready_s"] < par["ready_s"]
    assert lazy["bytes_fetched"] < par["bytes_fetched"]


def test_unknown_mode_and_unknown_path():
    from soci_lab.errors import SimulationError
    from soci_lab.sim.workload import Access

    image = _image(0, 8, 1, 256)
    with pytest.raises(SimulationError):
        simulate(image, "teleport")
    run = simulate(image, "lazy", workload=[Access(0.0, "read", "/nope", 0, 10), Access(0.0, "stat", "/nope")])
    bad = run.events[~run.events.ok]
    assert list(bad.kind) == ["file_read", "file_op"]
    assert (bad.error == "ENOENT").all()


def test_run_events_frame_equals_the_recorders_own():
    image = _image(1, 24, 3, 1024)
    run = simulate(image, "lazy", workload=synthetic_trace(image, 0.2, seed=1))
    pd.testing.assert_frame_equal(run.events, run.recorder.to_frame())


@pytest.mark.parametrize("mode", ["sequential", "parallel", "lazy"])
def test_summary_agrees_with_the_common_run_rules(mode):
    """soci_lab.run.Run recomputes a summary from events alone; the simulator's must be the same."""
    run_mod = pytest.importorskip("soci_lab.run")
    image = _image(2, 24, 4, 1024)
    sim = simulate(image, mode, workload=synthetic_trace(image, 0.3, seed=2))
    common = run_mod.Run.from_sim(sim, image_bytes=image.uncompressed_size).summary
    for key in SUMMARY_KEYS:
        if key == "mode":
            continue
        assert common[key] == pytest.approx(sim.summary[key], rel=1e-9), key


def test_prefetch_from_the_workloads_own_trace_removes_every_miss():
    """A prefetch artifact built from the trace: all its spans resolve before ready, the workload never waits."""
    from soci_lab.sim.workload import prefetch_spans_from_trace

    image = _image(4, 40, 4, 1024)
    trace = synthetic_trace(image, 0.1, seed=4)
    cfg = Config()
    cfg.prefetch.enable = True
    plain = simulate(image, "lazy", workload=trace)
    pre = replace(image, prefetch_spans=prefetch_spans_from_trace(image, trace))
    run = simulate(pre, "lazy", workload=trace, config=cfg)
    ev = run.events
    spans = ev[ev.kind == "span_fetch"]
    assert len(spans) == plain.checks["span_fetches"]  # the same spans, fetched earlier
    assert (spans["why"] == "prefetch").all()
    assert (spans.t_end <= run.summary["ready_s"]).all()
    assert run.summary["ready_s"] > plain.summary["ready_s"]
    work = run.summary["workload_done_s"] - run.summary["ready_s"]
    assert work < plain.summary["workload_done_s"] - plain.summary["ready_s"]
    assert run.recorder.strategy == "lazy+prefetch"
    assert (ev.kind == "prefetch").sum() == len(pre.prefetch_spans)


def test_parallel_downloads_the_largest_layer_first_as_the_real_puller():
    """With one download slot the layers arrive largest first (soci_lab.unpack.parallel.largest_first)."""
    image = _image(3, 40, 5, 1024)
    cfg = Config()
    ppu = cfg.pull_modes.parallel_pull_unpack
    ppu.concurrent_download_chunk_size = ""
    ppu.max_concurrent_downloads_per_image = 1
    run = simulate(image, "parallel", config=cfg, params=SimParams(record=True))
    downloads = run.events[run.events["kind"] == "blob_download"].sort_values("t_end")
    by_size = sorted(image.layers, key=lambda layer: -layer.compressed_size)
    assert list(downloads["layer"]) == [layer.digest for layer in by_size]
    assert [layer.digest for layer in image.layers] != [layer.digest for layer in by_size]  # the order matters here
