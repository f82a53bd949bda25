"""Traces keep their timing (issue 17, point 3): ``t_s`` since the workload's start and, where strace ``-T``
gave it, each call's duration (the optional ``dur_s`` column), through recording, saving, loading and the
events a run emits, so the simulator can tell the workload's own time between calls from its waits.
Before, a recorded trace dropped the durations (``TraceRow`` had none) and a trace taken from events lost
them too."""

from __future__ import annotations

from pathlib import Path

import pytest

from soci_lab.errors import TraceFormatError
from soci_lab.events import EventRecorder
from soci_lab.workload import HEADER, TraceRow, format_trace, load_trace, parse_trace, record_trace
from soci_lab.workload.fromevents import trace_from_events


def test_durations_round_trip_and_an_untimed_trace_is_written_as_before() -> None:
    rows = [TraceRow(0.0, "open", "/a"), TraceRow(0.25, "read", "/a", 0, 10, 0.0125)]
    text = format_trace(rows)
    assert text.splitlines()[0] == "t_s,op,path,offset,size,dur_s"
    back = parse_trace(text)
    assert list(back) == rows and back.timed
    plain = format_trace([TraceRow(0.0, "open", "/a"), TraceRow(0.25, "read", "/a", 0, 10)])
    assert plain.splitlines()[0] == ",".join(HEADER)  # cli.md's five columns, unchanged
    assert not parse_trace(plain).timed


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("t_s,op,path,offset,size,dur_s\n0,read,/a,0,1,soon\n", "line 2: dur_s 'soon' is not a number"),
        ("t_s,op,path,offset,size,dur_s\n0,read,/a,0,1,-1\n", "line 2: dur_s must be a finite number >= 0"),
        ("t_s,op,path,offset,size,dur_s\n0,read,/a,0,1\n", "line 2: expected 6 fields"),
        ("t_s,op,path,offset,size,lat\n", "line 1: header must be t_s,op,path,offset,size (optionally ,dur_s)"),
    ],
)
def test_a_bad_duration_is_one_line_naming_it(text: str, words: str) -> None:
    with pytest.raises(TraceFormatError) as err:
        parse_trace(text, "t.csv")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_trace_taken_from_events_keeps_each_access_duration() -> None:
    rec = EventRecorder("r", clock=lambda: 0.0, origin=0.0)
    rec.emit("workload", 1.0, 3.0)
    rec.emit("file_read", 1.5, 1.75, path="/a", nbytes=10, offset=0)
    rec.emit("file_op", 2.0, 2.0625, path="/b", op="stat", result=0)
    trace = trace_from_events(rec.to_frame())
    assert [(r.t_s, r.op, r.dur_s) for r in trace] == [(0.5, "read", 0.25), (1.0, "stat", 0.0625)]
    assert trace_from_events(rec.events) == trace  # Event objects as well as a frame


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
def test_a_recorded_trace_keeps_its_calls_durations(mini_rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace.csv"
    rec = record_trace(mini_rootfs, ["/bin/cat", "/data/file.bin"], "exit", 20, out=out)
    assert out.read_text().splitlines()[0].endswith(",dur_s")
    trace = load_trace(out)
    assert trace == rec.trace and trace.timed
    reads = [r for r in trace if r.op == "read" and r.path == "/data/file.bin"]
    assert reads and all(r.dur_s >= 0 for r in reads)
    assert any(r.dur_s > 0 for r in trace)
    # one process, one call at a time: the calls' time fits in the command's (rounding to the microsecond)
    assert sum(r.dur_s for r in trace) <= trace.duration + max(r.dur_s for r in trace) + 1e-3


def test_a_timed_trace_feeds_the_prefetch_builder_too() -> None:
    """``index create --prefetch-trace`` takes what ``run --trace-out`` writes, durations and all."""
    from soci_lab.artifacts.prefetch import trace_accesses

    text = format_trace([TraceRow(0.0, "open", "/a"), TraceRow(0.1, "read", "/a", 5, 10, 0.002)])
    assert trace_accesses(text) == [("/a", 5, 10)]
    with pytest.raises(TraceFormatError, match="line 2: expected 6 fields"):
        trace_accesses("t_s,op,path,offset,size,dur_s\n0,read,/a,0,1\n")
