"""The parallel strategy's unpack grants against the real puller's ``UnpackQueue``, and layers applied while
they download (``SimParams.stream_slots``)."""

from __future__ import annotations

import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci_lab.config import Config
from soci_lab.sim import NetworkParams, SimParams, SyntheticSpec, generate, simulate
from soci_lab.sim.schedule import SimUnpackQueue
from soci_lab.unpack.schedule import UnpackQueue

MIB = 1 << 20

# --- the policy: the same operations give the same grants -----------------------------------------------

_enqueue = st.tuples(st.just("enqueue"), st.integers(0, 50), st.booleans(), st.booleans())
_ready = st.tuples(st.just("ready"), st.integers(0, 30))
# enqueues and finished downloads more often than releases, so that layers compete for the slots
ops = st.lists(
    st.one_of(
        _enqueue,
        _enqueue,
        _ready,
        _ready,
        st.tuples(st.just("leave"), st.integers(0, 30)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(slots=st.integers(-1, 4), stream=st.one_of(st.none(), st.integers(-1, 3)), ops=ops)
def test_the_sim_queue_grants_as_the_real_one(slots, stream, ops):
    real = UnpackQueue(slots, stream)
    sim = SimUnpackQueue(simpy.Environment(), slots, stream)
    assert (sim.slots, sim.stream_slots) == (real.slots, real.stream_slots)
    r_entries: list = []
    s_entries: list = []
    for op in ops:
        if op[0] == "enqueue":
            _, size, streamable, ready = op
            r_entries.append(real.enqueue(size, streamable=streamable, ready=ready))
            s_entries.append(sim.enqueue(size, streamable=streamable, ready=ready))
        elif r_entries:
            i = op[1] % len(r_entries)
            if op[0] == "ready" and not r_entries[i].done:
                real.mark_ready(r_entries[i])
                sim.mark_ready(s_entries[i])
            elif op[0] == "leave":
                real.leave(r_entries[i])
                sim.leave(s_entries[i])
        # who holds a slot, in grant order, and how each was granted
        assert [r_entries.index(e) for e in real.holding] == [s_entries.index(e) for e in sim.holding]
        for r, s in zip(r_entries, s_entries, strict=True):
            assert (r.granted, r.streaming, r.ready, r.done) == (s.granted, s.streaming, s.ready, s.done)
            assert s.waiter.triggered == s.granted
    assert (real.peak, real.peak_streaming) == (sim.peak, sim.peak_streaming)


# --- the strategy: its grants are what the real queue would grant, given the same downloads -----------------


def _config(slots: int, chunk: str = "") -> Config:
    cfg = Config()
    ppu = cfg.pull_modes.parallel_pull_unpack
    ppu.max_concurrent_unpacks_per_image = slots
    ppu.concurrent_download_chunk_size = chunk
    return cfg


def _replay_on_the_real_queue(image, run, cfg: Config, stream_slots: int | None) -> list[tuple[str, bool]]:
    """Feed the real ``UnpackQueue`` what the simulated puller lived through — every layer enqueued largest
    first at the start, each download's end, each apply's end — and return its grants in order."""
    ppu = cfg.pull_modes.parallel_pull_unpack
    chunk = ppu.chunk_size_bytes()
    slots = min((n for n in (ppu.max_concurrent_unpacks_per_image, ppu.max_concurrent_unpacks) if n > 0), default=0)
    q = UnpackQueue(slots, stream_slots)

    def streamable(size: int) -> bool:  # one whole-blob request of a known size
        return size > 0 and not (chunk > 0 and size > chunk)

    digest_of: dict[int, str] = {}
    entries = {}
    grants: list[tuple[str, bool]] = []

    def granted_by(action) -> None:  # type: ignore[no-untyped-def]
        """Run one queue operation and note the layers it granted, in grant order (``holding`` keeps it)."""
        before = {id(e) for e in q.holding}
        action()
        grants.extend((digest_of[id(e)], e.streaming) for e in q.holding if id(e) not in before)

    for la in sorted(image.layers, key=lambda la: -la.compressed_size):  # the puller's order
        before = {id(e) for e in q.holding}
        entry = entries[la.digest] = q.enqueue(la.compressed_size, streamable=streamable(la.compressed_size))
        digest_of[id(entry)] = la.digest
        grants.extend((digest_of[id(e)], e.streaming) for e in q.holding if id(e) not in before)
    ev = run.events
    happenings = []
    for kind, what in (("blob_download", "ready"), ("apply", "leave")):
        rows = ev[ev.kind == kind]
        happenings += [(float(t), what, d) for t, d in zip(rows.t_end, rows.layer, strict=True)]
    for _, what, digest in sorted(happenings, key=lambda h: (h[0], h[1] == "leave")):
        e = entries[digest]
        granted_by(lambda e=e, what=what: q.mark_ready(e) if what == "ready" else q.leave(e))
    return grants


scenario = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 50),
        "layers": st.integers(2, 7),
        "slots": st.sampled_from([1, 2, 3]),
        "stream": st.sampled_from([None, 0, 1, 2]),
        "bandwidth": st.sampled_from([5e6, 40e6, 400e6]),
        "chunk": st.sampled_from(["", "4mb"]),
        "dl_per_image": st.sampled_from([1, 3]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenario)
def test_the_strategy_grants_unpack_slots_as_the_real_queue_would(sc):
    image = generate(SyntheticSpec(seed=sc["seed"], compressed_size=40 * MIB, layers=sc["layers"], min_layer_size=MIB))
    cfg = _config(sc["slots"], sc["chunk"])
    cfg.pull_modes.parallel_pull_unpack.max_concurrent_downloads_per_image = sc["dl_per_image"]
    params = SimParams(network=NetworkParams(bandwidth=sc["bandwidth"]), stream_slots=sc["stream"])
    run = simulate(image, "parallel", config=cfg, params=params)
    grants = run.checks["unpack_grants"]
    assert sorted(d for d, _ in grants) == sorted(la.digest for la in image.layers)
    assert grants == _replay_on_the_real_queue(image, run, cfg, sc["stream"])
    # and the decompress events say which layers were applied while downloading
    dec = run.events[run.events.kind == "decompress"]
    streamed = {d for d, s in zip(dec.layer, dec["streamed"], strict=True) if s}
    assert streamed <= {d for d, s in grants if s}
    if (sc["slots"] == 1 and sc["stream"] is None) or sc["stream"] == 0:  # the default with one slot; or never
        assert not streamed
    if sc["chunk"]:  # a layer downloaded in chunks is not written front to back: it never streams
        assert all(la.digest not in streamed for la in image.layers if la.compressed_size > 4 * MIB)


# --- applying while downloading ---------------------------------------------------------------------------


def _layer_times(run, digest: str) -> dict[str, tuple[float, float, dict]]:
    ev = run.events
    rows = ev[ev.layer == digest]
    return {
        k: (float(r.t_start), float(r.t_end), r.to_dict())
        for k in ("blob_download", "decompress", "apply")
        for r in [rows[rows.kind == k].iloc[0]]
    }


def _slow_link_runs(stream_slots_values, slots: int = 2):
    image = generate(SyntheticSpec(seed=3, compressed_size=80 * MIB, layers=5, min_layer_size=2 * MIB))
    big = max(image.layers, key=lambda la: la.compressed_size)
    runs = [
        simulate(
            image,
            "parallel",
            config=_config(slots),
            params=SimParams(network=NetworkParams(bandwidth=20e6), stream_slots=s, record=True),
        )
        for s in stream_slots_values
    ]
    return image, big, runs


def test_two_slots_on_a_slow_link_apply_the_largest_layer_while_it_downloads():
    _, big, (streaming, waiting) = _slow_link_runs([None, 0])
    s = _layer_times(streaming, big.digest)
    w = _layer_times(waiting, big.digest)
    dl_end = s["blob_download"][1]
    assert s["decompress"][2]["streamed"] and not w["decompress"][2]["streamed"]
    # started long before its last byte, ended shortly after it: the CPU work of its last piece or so
    assert s["apply"][0] < dl_end - 1.0
    assert dl_end <= s["decompress"][1] <= s["apply"][1]
    unpack_alone = w["apply"][1] - w["apply"][0]
    assert unpack_alone > 0.3  # so that "shortly after" below means something
    assert s["apply"][1] - dl_end < 0.1 * unpack_alone
    # the same downloads; without streaming its unpack starts at its last byte and the pull ends later
    assert w["blob_download"][1] == pytest.approx(dl_end)
    assert w["apply"][0] >= dl_end
    assert streaming.summary["ready_s"] < waiting.summary["ready_s"]
    assert streaming.summary["bytes_written"] == waiting.summary["bytes_written"]


def test_one_slot_streams_nothing_and_hands_the_slot_to_the_largest_finished_download():
    image, _, (run,) = _slow_link_runs([None], slots=1)
    dec = run.events[run.events.kind == "decompress"]
    assert not dec["streamed"].any()
    assert not any(s for _, s in run.checks["unpack_grants"])
    ev = run.events
    for digest in (la.digest for la in image.layers):
        rows = ev[ev.layer == digest]
        assert float(rows[rows.kind == "decompress"].t_start.iloc[0]) >= float(
            rows[rows.kind == "blob_download"].t_end.iloc[0]
        )


def test_one_slot_picks_the_largest_ready_layer_not_the_first_finished():
    """Slow unpacks, fast downloads: when the first layer's unpack ends every other layer is downloaded, and the
    next slot goes to the largest of them (upstream: the first whose download finished)."""
    image = generate(SyntheticSpec(seed=5, compressed_size=60 * MIB, layers=6, min_layer_size=MIB))
    cfg = _config(1)
    run = simulate(image, "parallel", config=cfg, params=SimParams(network=NetworkParams(bandwidth=2e9)))
    ev = run.events
    grants = [d for d, _ in run.checks["unpack_grants"]]
    dl_end = dict(zip(ev[ev.kind == "blob_download"].layer, ev[ev.kind == "blob_download"].t_end, strict=True))
    first_apply_end = float(ev[(ev.kind == "apply") & (ev.layer == grants[0])].t_end.iloc[0])
    assert all(t <= first_apply_end for t in dl_end.values())  # the premise
    size = {la.digest: la.compressed_size for la in image.layers}
    assert [size[d] for d in grants[1:]] == sorted((size[d] for d in grants[1:]), reverse=True)
    by_finish = [d for d, _ in sorted(dl_end.items(), key=lambda kv: kv[1])]
    assert grants != by_finish  # the order differs from the old "first finished" one here


@pytest.mark.parametrize("bandwidth", [5e6, 40e6, 400e6, 4e9])
def test_a_streamed_unpack_keeps_to_the_slower_of_its_bytes_and_the_cpu(bandwidth):
    """One layer, two slots: granted at once, applied as it downloads. It ends no earlier than its last byte
    and never faster than the same unpack done after the download (the CPU's pace), and no later than the
    slower of the two plus about one piece of work (the pipeline's tail)."""
    image = generate(SyntheticSpec(seed=11, compressed_size=24 * MIB, layers=1, min_layer_size=MIB))
    (layer,) = image.layers
    piece = 1 << 20

    def run(stream_slots):
        params = SimParams(
            network=NetworkParams(bandwidth=bandwidth), stream_slots=stream_slots, stream_piece_bytes=piece
        )
        return _layer_times(simulate(image, "parallel", config=_config(2), params=params), layer.digest)

    s, w = run(None), run(0)
    assert s["decompress"][2]["streamed"] and not w["decompress"][2]["streamed"]
    dl_end = s["blob_download"][1]
    start, end = s["apply"][0], s["apply"][1]
    cpu_alone = w["apply"][1] - w["apply"][0]
    assert start < s["blob_download"][0] + 0.01  # granted before its first byte
    assert s["decompress"][1] >= dl_end - 1e-9
    assert end - start >= cpu_alone * (1 - 1e-9)
    tail = 2 * cpu_alone * piece / layer.compressed_size
    assert end <= max(dl_end, start + cpu_alone) + tail + 1e-6
