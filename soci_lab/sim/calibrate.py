"""Fit the simulator's host and network parameters from a run's events; save and load the fit.

What is fitted, and from which events (the shape the real rooms' events must have for this to hold):

- ``http_request`` (``t_start`` = request sent, ``t_end`` = last body byte, ``bytes`` = body bytes):
  requests that overlap no other request are fitted by least squares to
  ``duration = first_byte_s + bytes / bandwidth`` — the per-request latency (RTT + registry overhead)
  and the effective bandwidth of one transfer. When every request overlapped another (an eager pull),
  the latency is the median duration of body-less (HEAD) or smallest requests and the bandwidth is the
  bytes moved over the time any transfer was in flight (``notes["http_fit"]`` says which);
- ``span_decompress`` (duration = inflating one span, ``attrs.compression``): the median of
  ``bytes / duration`` per algorithm (bytes = uncompressed output). Without span events, whole-layer
  ``decompress`` events are used; they time the decompress→apply pipeline, so the rate is a lower bound
  (``notes["decompress_source"]`` says which);
- ``mount`` events of lazy layers (``attrs.how == "lazy"``): the median is ``mount_s``; of the rootfs
  (``attrs.what == "overlay"``): the median is ``overlay_mount_s``; ``file_op``
  events (open, stat, readdir, readlink) of lazy runs give ``fuse_op_s``, of eager runs ``syscall_s``;
- ``apply`` (``attrs.entries``, else ``attrs.files``; bytes = file content): least squares of
  ``duration = entries × per_file + bytes × per_byte``. Apply runs in a pipeline with decompression, so
  this fits the apply side only where it is the slower stage (true of most real layers: many small files).

A :class:`Calibration` is saved as JSON (e.g. ``datasets/calibration/<host>-<network>.json``) and turned
into :class:`SimParams` with :meth:`Calibration.params`. Fitting the simulator's own events recovers the
parameters it ran with (a test holds it to that), so what a fit of real events says is the real system's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SimulationError
from .world import SimParams

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "soci_lab.sim.calibration/1"


@dataclass
class Calibration:
    """Fitted parameters (None where the events did not allow a fit) and the sample counts behind them."""

    bandwidth: float | None = None
    first_byte_s: float | None = None
    decompress_rate: dict[str, float] = field(default_factory=dict)
    apply_per_file_s: float | None = None
    apply_per_byte_s: float | None = None
    mount_s: float | None = None
    overlay_mount_s: float | None = None
    fuse_op_s: float | None = None
    syscall_s: float | None = None
    samples: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def params(self, base: SimParams | None = None, *, rtt: float | None = None) -> SimParams:
        """``base`` with the fitted values in; ``rtt`` (if known, e.g. from the shaping) splits
        ``first_byte_s`` into RTT and registry overhead, else it is all RTT."""
        base = base or SimParams()
        net, host = base.network, base.host
        if self.bandwidth:
            net = replace(net, bandwidth=self.bandwidth)
        if self.first_byte_s is not None:
            if rtt is None:
                net = replace(net, rtt=self.first_byte_s, request_overhead=0.0)
            else:
                net = replace(net, rtt=rtt, request_overhead=max(0.0, self.first_byte_s - rtt))
        if self.decompress_rate:
            host = replace(host, decompress_rate={**host.decompress_rate, **self.decompress_rate})
        if self.apply_per_file_s is not None and self.apply_per_byte_s is not None:
            host = replace(host, apply_per_file_s=self.apply_per_file_s, apply_per_byte_s=self.apply_per_byte_s)
        for key in ("mount_s", "overlay_mount_s", "fuse_op_s", "syscall_s"):
            if getattr(self, key) is not None:
                host = replace(host, **{key: getattr(self, key)})
        return replace(base, network=net, host=host)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        """Write as JSON (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save` (a :class:`SimulationError` for anything else)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SimulationError(f"{path}: cannot read a calibration: {exc}") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise SimulationError(f"{path}: not a soci_lab calibration ({FORMAT})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SimulationError(f"{path}: malformed calibration: {exc}") from None


def fit(events: pd.DataFrame | list[pd.DataFrame]) -> Calibration:
    """Fit a :class:`Calibration` from one or more runs' event frames."""
    import pandas as pd

    frames = events if isinstance(events, list) else [events]
    cal = Calibration()
    _fit_http(cal, frames)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    ok = frame[frame["ok"]]
    _fit_decompress(cal, ok)
    _fit_apply(cal, ok)
    _fit_fs(cal, ok)
    return cal


def _fit_fs(cal: Calibration, frame: pd.DataFrame) -> None:
    """Per-layer FUSE mount cost, the overlay mount's, and the latency of metadata ops (FUSE: lazy; disk: eager)."""
    dur = frame["t_end"] - frame["t_start"]
    how = _attr(frame, "how")
    mounts = dur[(frame["kind"] == "mount") & (how == "lazy")]
    if len(mounts):
        cal.mount_s = float(mounts.median())
        cal.samples["mount"] = len(mounts)
    overlays = dur[(frame["kind"] == "mount") & (_attr(frame, "what") == "overlay")]
    if len(overlays):
        cal.overlay_mount_s = float(overlays.median())
        cal.samples["overlay_mount"] = len(overlays)
    ops = frame["kind"] == "file_op"
    op_names = _attr(frame, "op")
    ops &= op_names.isin(["open", "stat", "readdir", "readlink"])
    lazy = frame["strategy"].astype(str).str.startswith("lazy")
    if (ops & lazy).any():
        cal.fuse_op_s = float(dur[ops & lazy].median())
        cal.samples["fuse_op"] = int((ops & lazy).sum())
    if (ops & ~lazy).any():
        cal.syscall_s = float(dur[ops & ~lazy].median())
        cal.samples["syscall"] = int((ops & ~lazy).sum())


def _fit_http(cal: Calibration, frames: list[pd.DataFrame]) -> None:
    xs: list[float] = []
    ys: list[float] = []
    all_x: list[float] = []
    all_y: list[float] = []
    busy = 0.0
    for frame in frames:
        http = frame[(frame["kind"] == "http_request") & frame["ok"]].sort_values("t_start")
        starts = http["t_start"].to_numpy()
        ends = http["t_end"].to_numpy()
        nbytes = http["bytes"].to_numpy()
        n = len(http)
        if not n:
            continue
        prev_end = np.maximum.accumulate(np.concatenate(([-np.inf], ends[:-1])))
        next_start = np.concatenate((starts[1:], [np.inf]))
        alone = (prev_end <= starts) & (next_start >= ends)
        xs.extend(nbytes[alone].astype(float))
        ys.extend((ends - starts)[alone])
        all_x.extend(nbytes.astype(float))
        all_y.extend(ends - starts)
        busy += _union_length(starts[nbytes > 0], ends[nbytes > 0])
    cal.samples["http_isolated"] = len(xs)
    cal.samples["http"] = len(all_x)
    if len(xs) >= 2 and len(set(xs)) >= 2:
        x, y = np.array(xs), np.array(ys)
        a = np.vstack([np.ones_like(x), x]).T
        (intercept, slope), *_ = np.linalg.lstsq(a, y, rcond=None)
        if slope > 0:
            cal.bandwidth = float(1 / slope)
        cal.first_byte_s = float(max(0.0, intercept))
        cal.notes["http_fit"] = "isolated requests"
        cal.notes["http_residual_s"] = float(np.sqrt(np.mean((a @ np.array([intercept, slope]) - y) ** 2)))
        return
    if not all_x:
        return
    # every request overlapped another: latency from the body-less or smallest requests, bandwidth from
    # the bytes moved while any transfer was in flight (a lower bound on the link's rate)
    x, y = np.array(all_x), np.array(all_y)
    small = y[x == 0] if (x == 0).any() else y[x <= np.percentile(x, 10)]
    cal.first_byte_s = float(np.median(small))
    moving = busy - cal.first_byte_s
    if x.sum() > 0 and moving > 0:
        cal.bandwidth = float(x.sum() / moving)
    cal.notes["http_fit"] = "aggregate (no isolated requests)"


def _union_length(starts: np.ndarray, ends: np.ndarray) -> float:
    total, cur_a, cur_b = 0.0, None, None
    for a, b in sorted(zip(starts.tolist(), ends.tolist(), strict=True)):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        elif b > cur_b:
            cur_b = b
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def _attr(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame["attrs"].map(lambda a: a.get(key) if isinstance(a, dict) else None)


def _fit_decompress(cal: Calibration, frame: pd.DataFrame) -> None:
    usable = (frame["bytes"] > 0) & (frame["t_end"] > frame["t_start"])
    dec = frame[(frame["kind"] == "span_decompress") & usable]
    cal.notes["decompress_source"] = "span_decompress"
    if dec.empty:
        dec = frame[(frame["kind"] == "decompress") & usable]
        cal.notes["decompress_source"] = "decompress (pipeline)"
    if dec.empty:
        cal.notes.pop("decompress_source")
        return
    algo = _attr(dec, "compression").fillna("gzip")
    rate = dec["bytes"] / (dec["t_end"] - dec["t_start"])
    for name, rates in rate.groupby(algo):
        cal.decompress_rate[str(name)] = float(rates.median())
        cal.samples[f"decompress_{name}"] = len(rates)


def _fit_apply(cal: Calibration, frame: pd.DataFrame) -> None:
    ap = frame[(frame["kind"] == "apply") & (frame["t_end"] > frame["t_start"])]
    files = _attr(ap, "entries")
    if files.isna().all():
        files = _attr(ap, "files")
    ap, files = ap[files.notna()], files[files.notna()].astype(float)
    cal.samples["apply"] = len(ap)
    if len(ap) < 2:
        return
    a = np.vstack([files.to_numpy(dtype=float), ap["bytes"].to_numpy(dtype=float)]).T
    y = (ap["t_end"] - ap["t_start"]).to_numpy()
    per_file, per_byte = _nnls2(a, y)
    cal.apply_per_file_s, cal.apply_per_byte_s = float(per_file), float(per_byte)


def _nnls2(a: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares with two non-negative coefficients (few layers make the two columns collinear)."""
    (c0, c1), *_ = np.linalg.lstsq(a, y, rcond=None)
    if c0 >= 0 and c1 >= 0:
        return float(c0), float(c1)
    best: tuple[float, float, float] | None = None
    for col in (0, 1):
        x = a[:, col]
        denom = float(x @ x)
        c = max(0.0, float(x @ y) / denom) if denom > 0 else 0.0
        resid = float(np.sum((x * c - y) ** 2))
        cand = (resid, c if col == 0 else 0.0, c if col == 1 else 0.0)
        if best is None or cand[0] < best[0]:
            best = cand
    assert best is not None
    return best[1], best[2]
