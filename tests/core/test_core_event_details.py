"""Event details are declared per kind (``events.DETAILS``) and every real and simulated run keeps to it:
real pulls in lazy, parallel and sequential mode and the no-FUSE lazy reader (a small image in the
embedded registry), and simulated pulls in every mode."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest

from soci_lab import events as ev
from soci_lab.events import DETAILS, KINDS, EventRecorder, frame_detail_problems, undeclared_details

#: the detail keys ``sim/calibrate.py`` reads by name, by the kind it reads them from
CALIBRATE_READS: dict[str, tuple[str, ...]] = {
    "mount": ("how", "what", "entries", "cpu_s"),
    "file_op": ("op",),
    "apply": ("entries", "files"),
    "file_read": ("fuse_requests", "missed", "first_read"),
    "span_fetch": ("background",),
    "http_request": ("fast", "reused"),
    "span_decompress": ("compression",),
    "decompress": ("compression", "compressed_bytes"),
}


def test_every_kind_declares_its_details_with_known_types() -> None:
    assert set(DETAILS) == KINDS
    for kind, keys in DETAILS.items():
        for key, want in keys.items():
            for t in want if isinstance(want, tuple) else (want,):
                assert t in ev.DETAIL_TYPES, (kind, key, t)


def test_the_keys_calibration_reads_are_declared() -> None:
    names = {k for keys in CALIBRATE_READS.values() for k in keys}
    assert len(names) == 14
    for kind, keys in CALIBRATE_READS.items():
        assert set(keys) <= set(DETAILS[kind]), kind


def test_undeclared_keys_and_wrong_types_are_named() -> None:
    assert undeclared_details("http_request", {"status": 206, "range": "0-9", "fast": True}) == []
    assert undeclared_details("http_request", {"status": None}) == []  # None: no such detail
    problems = undeclared_details("http_request", {"status": "206", "colour": "red", "retry": True})
    assert len(problems) == 3 and "colour" in problems[1] and "declared int" in problems[0]
    assert undeclared_details("mount", {"cpu_s": 1}) == []  # a float detail takes an integer
    rec = EventRecorder()
    rec.emit("span_fetch", 0.0, background=True, attempt=1)
    rec.emit("span_fetch", 0.0, background="yes")
    rec.emit("file_op", 0.0, op="stat", size=3)
    problems = frame_detail_problems(rec.to_frame())
    assert len(problems) == 2
    assert any("'background'" in p and "declared bool" in p for p in problems)
    assert any("'size_'" in p and p.startswith("file_op") for p in problems)


# --- real pulls and simulations ------------------------------------------------------------------------


class _Checked:
    """Checks every event emitted in this process as it is emitted (the FUSE servers' events, emitted in
    their own processes, are checked in the runs' frames)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.problems: list[str] = []
        self.kinds: set[str] = set()
        real = EventRecorder.emit

        def emit(rec: EventRecorder, kind: str, t_start: float, t_end: float | None = None, **kw: Any) -> ev.Event:
            event = real(rec, kind, t_start, t_end, **kw)
            self.kinds.add(kind)
            self.problems += undeclared_details(kind, event.attrs)
            return event

        monkeypatch.setattr(EventRecorder, "emit", emit)


def _tree(d: Path, seed: int, big: bool) -> None:
    rng = random.Random(seed)
    table = bytes(b"0123456789abcdef"[b & 15] for b in range(256))  # 4 bits a byte: > 1 MiB gzip from 3 MiB
    (d / "data").mkdir(parents=True)
    (d / "etc").mkdir()
    if big:
        (d / "data" / f"f{seed}.bin").write_bytes(rng.randbytes(3 << 20).translate(table))
    (d / "etc" / f"c{seed}").write_bytes(b"x\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_real_pulls_emit_only_declared_details(  # type: ignore[no-untyped-def]
    embedded_registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from soci_lab import lab
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import build_image
    from soci_lab.snapshot import mounts_under
    from soci_lab.workload import Trace, TraceRow

    monkeypatch.setenv("SOCI_LAB_STATE_ROOT", str(tmp_path / "state"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    dirs = [tmp_path / f"s{i}" for i in range(3)]
    for i, d in enumerate(dirs):
        _tree(d, i, i != 1)  # layers 0 and 2 indexed (lazy), layer 1 too small (local)
    ref = embedded_registry.ref("details/small", "v1")
    build_image(dirs, ref, insecure=True)
    create_soci_index(ref, span_size=1 << 20, min_layer_size=1 << 20)
    trace = Trace(
        [
            TraceRow(0.0, "open", "/data/f0.bin", 0, 0),
            TraceRow(0.0, "read", "/data/f0.bin", 0, 4096),
            TraceRow(0.01, "read", "/data/f2.bin", 2 << 20, 4096),
            TraceRow(0.02, "read", "/etc/c1", 0, 2),
            TraceRow(0.03, "stat", "/etc/c2", 0, 0),
        ]
    )
    checked = _Checked(monkeypatch)
    frames = {
        mode: lab.pull(ref, mode, trace=trace, insecure=True).events for mode in ("lazy", "parallel", "sequential")
    }
    frames["reader"] = lab.lazy_read(ref, trace, insecure=True).events
    assert checked.problems == []
    for name, frame in frames.items():
        assert frame_detail_problems(frame) == [], name
    seen = {k for f in frames.values() for k in f["kind"]}
    assert {"http_request", "span_fetch", "span_decompress", "decompress", "apply", "mount", "file_read"} <= seen
    lazy = frames["lazy"]
    assert (lazy["kind"] == "mount").sum() > 0 and "how" in lazy.columns  # the FUSE servers' events are in it
    assert not mounts_under(tmp_path)


def test_simulated_pulls_emit_only_declared_details(monkeypatch: pytest.MonkeyPatch) -> None:
    from soci_lab.sim import SyntheticSpec, generate, simulate, synthetic_trace

    checked = _Checked(monkeypatch)
    spec = SyntheticSpec(seed=1, compressed_size=16 << 20, layers=3, span_size=1 << 20, min_layer_size=2 << 20)
    image = generate(spec)
    for mode in ("lazy", "parallel", "sequential"):
        run = simulate(image, mode, workload=synthetic_trace(image, 0.2, seed=1))
        assert frame_detail_problems(run.events) == [], mode
    assert checked.problems == []
    assert {"http_request", "span_fetch", "file_read", "apply", "mount"} <= checked.kinds
