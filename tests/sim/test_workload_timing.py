"""The simulated workload keeps the recorded trace's timing and shares the host's cores (issue 17, point 3).

A timed trace (``dur_s``) replays its gaps: the workload's own time between the end of one call and the
start of the next, spent after whatever this simulation's file system made the call cost — so a slow read
delays everything after it, as in the real program. That own time, and every access's cost, holds one of
the host's cores, so the workload competes with decompression, FUSE and apply. Before, accesses were due at
``start + t_s`` whatever came before them (a slow read swallowed the think time after it) and the workload
held no core.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import pytest

from soci_lab.config import Config
from soci_lab.events import detail
from soci_lab.sim import (
    Access,
    HostParams,
    NetworkParams,
    SimParams,
    SyntheticSpec,
    WorkloadParams,
    generate,
    read_trace,
    simulate,
    write_trace,
)

MIB = 1 << 20


@lru_cache(maxsize=1)
def _image():
    return generate(SyntheticSpec(seed=3, compressed_size=16 * MIB, layers=2, span_size=1 * MIB, min_layer_size=MIB))


def _two_reads(gap: float, first_dur: float = 0.01) -> list[Access]:
    files = sorted((f for f in _image().view().values() if f.type == "reg" and f.size > 4096),
                   key=lambda f: (-f.layer, f.offset))
    a, b = files[0], files[-1]
    return [Access(0.0, "read", a.path, 0, 4096, first_dur), Access(first_dur + gap, "read", b.path, 0, 4096, 0.001)]


SLOW = SimParams(network=NetworkParams(bandwidth=0.5e6, rtt=0.05))


def _config() -> Config:
    cfg = Config()
    return replace(cfg, background_fetch=replace(cfg.background_fetch, disable=True))


def _workload_span(run) -> float:
    return run.summary["workload_done_s"] - run.summary["ready_s"]


def test_the_gap_after_a_slow_read_is_replayed_after_it() -> None:
    trace = _two_reads(gap=0.5)
    run = simulate(_image(), "lazy", workload=trace, params=SLOW, config=_config())
    reads = run.events[run.events.kind == "file_read"].sort_values("t_start")
    first_end, second_start = reads.t_end.iloc[0], reads.t_start.iloc[1]
    assert reads.t_end.iloc[0] - reads.t_start.iloc[0] > 0.5  # the first read missed and waited on the network
    assert second_start - first_end == pytest.approx(0.5, abs=1e-6)  # then the program's own 0.5 s
    w = run.events[run.events.kind == "workload"]
    assert detail(w, "timing").iloc[0] == "gaps" and detail(w, "own_s").iloc[0] == pytest.approx(0.5)


def test_a_trace_without_durations_keeps_its_absolute_times() -> None:
    trace = [replace(a, dur=0.0) for a in _two_reads(gap=0.5)]
    run = simulate(_image(), "lazy", workload=trace, params=SLOW, config=_config())
    reads = run.events[run.events.kind == "file_read"].sort_values("t_start")
    # due at 0.51 s after the workload started, which the slow first read is already past
    assert reads.t_start.iloc[1] == pytest.approx(reads.t_end.iloc[0], abs=1e-6)
    assert detail(run.events[run.events.kind == "workload"], "timing").iloc[0] == "absolute"


def test_the_workloads_own_time_holds_a_core() -> None:
    """On one core, the workload computing for 2 s delays the background fetcher's span work (its verify and
    cache writes need the core); with its time spent thinking (``cpu_fraction=0``) they do not wait."""
    trace = _two_reads(gap=2.0)
    one_core = replace(SLOW, host=HostParams(cores=1), network=NetworkParams(bandwidth=200e6, rtt=0.0))

    def bg_end(fraction: float) -> float:
        params = replace(one_core, workload=WorkloadParams(cpu_fraction=fraction))
        cfg = Config()
        cfg = replace(cfg, background_fetch=replace(cfg.background_fetch, silence_period_msec=10, fetch_period_msec=10))
        run = simulate(_image(), "lazy", workload=trace, params=params, config=cfg)
        assert run.checks["max_cores_used"] == 1
        bg = run.events[run.events.kind == "bg_fetch"]
        assert len(bg) > 0
        return float(bg.t_end.max()), run

    computing, run_c = bg_end(1.0)
    thinking, run_t = bg_end(0.0)
    assert computing > thinking + 1.0
    # the workload itself takes as long either way: its own 2 s, then its second read
    assert _workload_span(run_c) == pytest.approx(_workload_span(run_t), rel=0.05)


def test_durations_survive_the_simulators_trace_files(tmp_path) -> None:
    trace = _two_reads(gap=0.25)
    back = read_trace(write_trace(trace, tmp_path / "t.csv"))
    assert [(a.t, a.dur) for a in back] == [(pytest.approx(a.t), pytest.approx(a.dur)) for a in trace]
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "t_s,op,path,offset,size,dur_s"
