"""Fit the simulator's host and network parameters from a run's events; save and load the fit.

What is fitted, and from which events (the shape the real rooms' events must have for this to hold):

- ``http_request`` (``t_start`` = request sent, ``t_end`` = last body byte, ``bytes`` = body bytes):
  requests that overlap no other request are fitted by least squares to
  ``duration = first_byte_s + bytes / bandwidth`` — the per-request latency (RTT + registry overhead)
  and the effective bandwidth of one transfer; where transfers of 8 MiB or more ran (eager pulls), the
  bytes they moved over the time any of them was moving is the sustained rate, and ``bandwidth`` is the
  lower of the two (a shaper's burst speeds small requests up, not blobs). When every request overlapped
  another (an eager pull), the latency is the median duration of body-less (HEAD) or smallest requests
  and the bandwidth is the bytes moved over the time any transfer was in flight (``notes["http_fit"]``
  says which);
- ``span_decompress`` (duration = inflating one span, ``attrs.compression``): the median of
  ``bytes / duration`` per algorithm (bytes = uncompressed output). Without span events, whole-layer
  ``decompress`` events are used (``notes["decompress_source"]`` says which);
- whole-layer ``decompress`` events (an unpacker's producer thread: inflate and, where the layer's digests
  were checked — its ``verify`` events — both sha256 at ``HostParams.verify_rate``): the median of
  ``bytes / (duration − digests)`` per algorithm is ``layer_decompress_rate``. The eager unpackers inflate
  with ISA-L, the lazy path's spans with zlib resumed at a checkpoint, so the two rates differ (python-pandas:
  438 against 252 MB/s; with the spans' rate the simulated unpack was decompress-bound, the real one is
  apply-bound). The producer waits when the apply thread's queue is full, so this is a lower bound of the
  rate: it decides nothing where apply is the slower stage, as in every real pull measured;
- the first ``http_request`` of each run: the median of its start is ``start_s`` (set-up before any request);
- ``mount`` events of lazy layers: each layer's FUSE server emits its own (``layer`` set, no ``how``; from
  its start to mounted, ``attrs.cpu_s`` = the CPU the process used), inside the snapshotter's
  (``attrs.how == "lazy"``, from asking for the server). Servers are forked one at a time, so a server's
  spawn latency is its start minus the later of its request and the previous server's start: the median
  is ``mount_s``; ``cpu_s`` against the zTOC's entries (``attrs.entries``, else the layer's ``apply``
  entries in an eager run of the same image) by non-negative least squares gives ``mount_cpu_s`` and
  ``mount_cpu_per_entry``; the time from the last ``ztoc_fetch`` to the first snapshotter mount, over the
  indexed layers' entries, is ``ztoc_parse_per_entry``. Without the servers' events (or their ``cpu_s``),
  ``mount_s`` is the median snapshotter mount and no CPU is fitted. The rootfs mount
  (``attrs.what == "overlay"``): the median is ``overlay_mount_s``;
- ``file_read`` events of lazy runs, the workload's (no ``layer``) matched to the FUSE requests they caused
  (the same file's reads by its layer's server during them): reads during which no on-demand span fetch ran
  are fitted by non-negative least squares to ``requests × fuse_op_s + bytes / fuse_read_rate + first read
  of the file × header_verify_s``. A simulated run's reads carry ``attrs.fuse_requests`` and
  ``attrs.first_read`` instead. ``span_cache_rate``: from the end of a span's decompression to the end of
  the read that waited for it (the span's put into the cache). ``file_op`` events (open, stat, readdir,
  readlink): the mean of lazy runs' is ``fuse_meta_s``, of eager runs' ``syscall_s``;
- parallel pulls whose first applied layer waited after its download: from the first download to that
  apply is the start of the apply worker process, ``apply_worker_s``;
- eager pulls, from the end of their last ``apply`` to the start of the rootfs ``mount``: the median of the
  sequential pulls' is ``pull_finish_s``, what the parallel pulls' median adds to it ``apply_worker_exit_s``
  (the puller waits for its workers to exit; without sequential pulls the parallel gap is all of it);
- ``apply`` (``attrs.entries``, else ``attrs.files``; bytes = file content): least squares of
  ``duration = entries × per_file + bytes × per_byte``, per place the apply ran: the puller's own process
  (the sequential puller, a lazy pull's local layers) gives ``apply_per_file_s``/``apply_per_byte_s``, the
  parallel puller's apply worker processes ``worker_apply_per_file_s``/``worker_apply_per_byte_s`` (real
  pulls: the same layers 5–45 % slower there, most for a fresh worker's first layers). Without applies of
  the first kind, the first pair is fitted from every apply. Only applies that overlapped no other apply of
  their run count (a lazy pull applies its local layers all at once, 1.5-3× slower each: the cores are
  shared, as the simulator models), unless fewer than two did. Apply runs in a pipeline with decompression,
  so this fits the apply side only where it is the slower stage (true of most real layers: many small
  files).

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
from .host import HostParams
from .world import SimParams

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "soci_lab.sim.calibration/1"
#: the notes of the HTTP fit (the network's, see :meth:`Calibration.with_network_of`)
NETWORK_NOTES = ("http_fit", "http_residual_s", "bandwidth_isolated", "bandwidth_sustained", "burst_latency_s")
#: fitted values that go into :class:`~soci_lab.sim.HostParams` under the same name
HOST_KEYS = (
    "mount_s", "mount_cpu_s", "mount_cpu_per_entry", "ztoc_parse_per_entry", "overlay_mount_s", "start_s", "fuse_op_s",
    "fuse_read_rate", "fuse_meta_s", "header_verify_s", "span_cache_rate", "apply_worker_s", "syscall_s",
    "pull_finish_s", "apply_worker_exit_s",
)  # fmt: skip


@dataclass
class Calibration:
    """Fitted parameters (None where the events did not allow a fit) and the sample counts behind them."""

    bandwidth: float | None = None
    first_byte_s: float | None = None
    conn_cap: float | None = None
    burst: float | None = None
    decompress_rate: dict[str, float] = field(default_factory=dict)
    apply_per_file_s: float | None = None
    apply_per_byte_s: float | None = None
    mount_s: float | None = None
    mount_cpu_s: float | None = None
    mount_cpu_per_entry: float | None = None
    ztoc_parse_per_entry: float | None = None
    overlay_mount_s: float | None = None
    start_s: float | None = None
    fuse_op_s: float | None = None
    fuse_read_rate: float | None = None
    fuse_meta_s: float | None = None
    header_verify_s: float | None = None
    span_cache_rate: float | None = None
    apply_worker_s: float | None = None
    syscall_s: float | None = None
    layer_decompress_rate: dict[str, float] = field(default_factory=dict)
    worker_apply_per_file_s: float | None = None
    worker_apply_per_byte_s: float | None = None
    pull_finish_s: float | None = None
    apply_worker_exit_s: float | None = None
    samples: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def params(self, base: SimParams | None = None, *, rtt: float | None = None) -> SimParams:
        """``base`` with the fitted values in; ``rtt`` (if known, e.g. from the shaping) splits
        ``first_byte_s`` into RTT and registry overhead, else it is all RTT."""
        base = base or SimParams()
        net, host = base.network, base.host
        if self.bandwidth:
            net = replace(net, bandwidth=self.bandwidth)
        if self.conn_cap:
            net = replace(net, conn_cap=self.conn_cap)
        if self.burst:
            net = replace(net, burst=self.burst)
        if self.first_byte_s is not None:
            if rtt is None:
                net = replace(net, rtt=self.first_byte_s, request_overhead=0.0)
            else:
                net = replace(net, rtt=rtt, request_overhead=max(0.0, self.first_byte_s - rtt))
        if self.decompress_rate:
            host = replace(host, decompress_rate={**host.decompress_rate, **self.decompress_rate})
        if self.apply_per_file_s is not None and self.apply_per_byte_s is not None:
            host = replace(host, apply_per_file_s=self.apply_per_file_s, apply_per_byte_s=self.apply_per_byte_s)
        if self.worker_apply_per_file_s is not None and self.worker_apply_per_byte_s is not None:
            host = replace(host, worker_apply_per_file_s=self.worker_apply_per_file_s,
                           worker_apply_per_byte_s=self.worker_apply_per_byte_s)  # fmt: skip
        if self.layer_decompress_rate:
            host = replace(host, layer_decompress_rate={**host.layer_decompress_rate, **self.layer_decompress_rate})
        for key in HOST_KEYS:
            if getattr(self, key) is not None:
                host = replace(host, **{key: getattr(self, key)})
        return replace(base, network=net, host=host)

    def with_network_of(self, other: Calibration) -> Calibration:
        """This calibration's host with ``other``'s network (``bandwidth``, ``first_byte_s``, ``conn_cap``,
        ``burst`` and what the HTTP fit noted and counted). The host is the same whatever network a run went
        through: fit it from every run, where a burst of load on a shared machine weighs less, and the network
        per network."""
        notes = {k: v for k, v in self.notes.items() if k not in NETWORK_NOTES}
        notes.update({k: v for k, v in other.notes.items() if k in NETWORK_NOTES})
        samples = {k: v for k, v in self.samples.items() if not k.startswith("http")}
        samples.update({k: v for k, v in other.samples.items() if k.startswith("http")})
        return replace(self, bandwidth=other.bandwidth, first_byte_s=other.first_byte_s, conn_cap=other.conn_cap,
                       burst=other.burst, notes=notes,
                       samples=samples, decompress_rate=dict(self.decompress_rate),
                       layer_decompress_rate=dict(self.layer_decompress_rate))  # fmt: skip

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
    # one key per run even where runs share a run_id (simulations do unless given one)
    keyed = [f.assign(_run=f"{i}:" + f["run_id"].astype(str)) for i, f in enumerate(frames)]
    frame = pd.concat(keyed, ignore_index=True) if len(keyed) > 1 else keyed[0]
    ok = frame[frame["ok"]]
    _fit_decompress(cal, ok)
    _fit_layer_decompress(cal, ok)
    _fit_apply(cal, ok)
    _fit_apply_worker(cal, ok)
    _fit_pull_finish(cal, ok)
    _fit_fs(cal, ok)
    _fit_start(cal, frame)
    return cal


def _fit_start(cal: Calibration, frame: pd.DataFrame) -> None:
    """``start_s``: the median over runs of when the first request went out."""
    http = frame[frame["kind"] == "http_request"]
    if http.empty:
        return
    firsts = http.groupby("_run")["t_start"].min()
    cal.start_s = float(firsts.median())
    cal.samples["start"] = len(firsts)


def _fit_fs(cal: Calibration, frame: pd.DataFrame) -> None:
    """FUSE server mounts, the overlay mount, FUSE reads and metadata ops (FUSE: lazy; disk: eager)."""
    dur = frame["t_end"] - frame["t_start"]
    how = _attr(frame, "how")
    what = _attr(frame, "what")
    mount = frame["kind"] == "mount"
    outer = mount & (how == "lazy")
    inner = mount & how.isna() & frame["layer"].notna() & (what != "overlay")
    if inner.any() and outer.any():
        _fit_servers(cal, frame, frame[outer], frame[inner])
    elif outer.any():
        cal.mount_s = float(dur[outer].median())
        cal.samples["mount"] = int(outer.sum())
    overlays = dur[mount & (what == "overlay")]
    if len(overlays):
        cal.overlay_mount_s = float(overlays.median())
        cal.samples["overlay_mount"] = len(overlays)
    ops = frame["kind"] == "file_op"
    op_names = _attr(frame, "op")
    ops &= op_names.isin(["open", "stat", "readdir", "readlink"])
    lazy = frame["strategy"].astype(str).str.startswith("lazy")
    # means, not medians: a workload's time is the sum of its ops, and their durations are skewed (a
    # lookup the kernel has not cached costs several times one it has)
    if (ops & lazy).any():
        cal.fuse_meta_s = float(dur[ops & lazy].mean())
        cal.samples["fuse_meta"] = int((ops & lazy).sum())
    if (ops & ~lazy).any():
        cal.syscall_s = float(dur[ops & ~lazy].mean())
        cal.samples["syscall"] = int((ops & ~lazy).sum())
    _fit_fuse_reads(cal, frame[lazy])
    _fit_span_cache(cal, frame[lazy])


def _fit_servers(cal: Calibration, frame: pd.DataFrame, outer: pd.DataFrame, inner: pd.DataFrame) -> None:
    """``mount_s`` (spawn latency, servers forked one at a time), the servers' CPU against their zTOC
    entries, and the snapshotter's pass over the zTOCs before its first mount."""
    spawn: list[float] = []
    cpu: list[float] = []
    entries: list[float] = []
    parse: list[float] = []
    ztocs = frame[frame["kind"] == "ztoc_fetch"]
    applied = frame[frame["kind"] == "apply"]
    known = dict(zip(applied["layer"], _attr(applied, "entries"), strict=True))
    for run, out_run in outer.groupby("_run"):
        asked = dict(zip(out_run["layer"], out_run["t_start"], strict=True))
        inn = inner[(inner["_run"] == run) & inner["layer"].isin(asked)].sort_values("t_start")
        prev = -np.inf
        n_run = 0.0
        for layer, t0, attrs in zip(inn["layer"], inn["t_start"], inn["attrs"], strict=True):
            spawn.append(float(t0 - max(asked[layer], prev)))
            prev = t0
            a = attrs if isinstance(attrs, dict) else {}
            n = a.get("entries", known.get(layer))
            if n is not None and n == n:  # not NaN
                n_run += float(n)
                if a.get("cpu_s") is not None:
                    cpu.append(float(a["cpu_s"]))
                    entries.append(float(n))
        z = ztocs[ztocs["_run"] == run]
        if len(z) and n_run > 0:
            parse.append(max(0.0, float(out_run["t_start"].min() - z["t_end"].max())) / n_run)
    if spawn:
        cal.mount_s = float(np.median(spawn))
        cal.samples["mount"] = len(spawn)
    if cpu:
        y = np.array(cpu)
        a2 = np.vstack([np.ones_like(y), np.array(entries)]).T
        fixed, per_entry = _nnls2(a2, y) if len(set(entries)) >= 2 else (float(np.mean(y)), 0.0)
        cal.mount_cpu_s, cal.mount_cpu_per_entry = float(fixed), float(per_entry)
        cal.samples["mount_cpu"] = len(cpu)
    if parse:
        cal.ztoc_parse_per_entry = float(np.median(parse))
        cal.samples["ztoc_parse"] = len(parse)


def _fit_span_cache(cal: Calibration, frame: pd.DataFrame) -> None:
    """``span_cache_rate``: a read that waited for exactly one span ends when that span is in the cache, so
    the time from the end of its ``span_decompress`` to the end of the read is the cache put. Real runs: the
    FUSE server's read (``layer`` set). Simulated runs: the workload's single-request reads that missed,
    less their FUSE costs as fitted (``fuse_op_s``, ``fuse_read_rate``, ``header_verify_s``)."""
    reads = frame[(frame["kind"] == "file_read") & frame["ok"]]
    dec = frame[(frame["kind"] == "span_decompress") & frame["ok"]]
    if reads.empty or dec.empty:
        return
    n_attr = _attr(reads, "fuse_requests")
    simulated = n_attr.notna().any()
    if simulated:
        missed = _attr(reads, "missed").fillna(False).astype(bool)
        reads = reads[missed & (n_attr == 1)]
    else:
        reads = reads[reads["layer"].notna()]
    nbytes, gaps, count = 0.0, 0.0, 0
    for run, run_reads in reads.groupby("_run"):
        d = dec[dec["_run"] == run]
        if d.empty:
            continue
        d_start, d_end, d_bytes = d["t_start"].to_numpy(), d["t_end"].to_numpy(), d["bytes"].to_numpy()
        attrs = run_reads["attrs"]
        for t0, t1, size, a in zip(run_reads["t_start"], run_reads["t_end"], run_reads["bytes"], attrs, strict=True):
            inside = (d_start >= t0) & (d_end <= t1)
            if inside.sum() != 1:
                continue
            gap = t1 - float(d_end[inside][0])
            if simulated:
                gap -= (cal.fuse_op_s or 0.0) + size / (cal.fuse_read_rate or np.inf)
                gap -= (cal.header_verify_s or 0.0) if a.get("first_read") else 0.0
            nbytes += float(d_bytes[inside][0])
            gaps += gap
            count += 1
    if nbytes > 0 and gaps > 0:
        cal.span_cache_rate = nbytes / gaps
        cal.samples["span_cache"] = count


def _fit_fuse_reads(cal: Calibration, frame: pd.DataFrame) -> None:
    """Per-request FUSE cost, copy rate and first-read header check from the workload's cache-hit reads."""
    reads = frame[(frame["kind"] == "file_read") & frame["ok"]]
    if reads.empty:
        return
    rows: list[tuple[float, float, float, float]] = []  # requests, bytes, first read, duration
    n_attr = _attr(reads, "fuse_requests")
    if n_attr.notna().any():  # simulated: the model says how many requests each read made
        first = _attr(reads, "first_read").fillna(False).astype(float)
        missed = _attr(reads, "missed").fillna(False).astype(bool)
        ok = n_attr.notna() & (n_attr > 0) & ~missed
        for n, b, f, d in zip(n_attr[ok], reads["bytes"][ok], first[ok], (reads["t_end"] - reads["t_start"])[ok],
                              strict=True):  # fmt: skip
            rows.append((float(n), float(b), float(f), float(d)))
    else:
        top, server = reads[reads["layer"].isna()], reads[reads["layer"].notna()]
        fetch = frame[(frame["kind"] == "span_fetch") & ~_attr(frame, "background").fillna(False).astype(bool)]
        f_start, f_end = fetch["t_start"].to_numpy(), fetch["t_end"].to_numpy()
        seen: set[tuple[str, str]] = set()
        for run, run_top in top.sort_values("t_start").groupby("_run", sort=False):
            srv = server[server["_run"] == run]
            by_path = {p: g for p, g in srv.groupby(srv["path"].astype(str))}
            for path, t0, t1, nbytes in zip(run_top["path"], run_top["t_start"], run_top["t_end"], run_top["bytes"],
                                            strict=True):  # fmt: skip
                key = (str(run), str(path))
                first = key not in seen
                seen.add(key)
                g = by_path.get(str(path).lstrip("/"))
                if g is None:
                    continue
                n = int(((g["t_start"] >= t0) & (g["t_start"] <= t1)).sum())
                if n == 0 or ((f_start < t1) & (f_end > t0)).any():
                    continue  # served by the page cache, or waited for a span
                rows.append((float(n), float(nbytes), float(first), float(t1 - t0)))
    if len(rows) < 3:
        return
    m = np.array(rows)
    coef = _nnls(m[:, :3], m[:, 3])
    cal.fuse_op_s = float(coef[0])
    if coef[1] > 0:
        cal.fuse_read_rate = float(1 / coef[1])
    cal.header_verify_s = float(coef[2])
    cal.samples["fuse_read"] = len(rows)


def _fit_http(cal: Calibration, frames: list[pd.DataFrame]) -> None:
    xs: list[float] = []
    ys: list[float] = []
    idle: list[float] = []  # before each isolated request: the time since the last transfer ended
    all_x: list[float] = []
    all_y: list[float] = []
    busy = 0.0
    large: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
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
        idle.extend((starts - prev_end)[alone])
        all_x.extend(nbytes.astype(float))
        all_y.extend(ends - starts)
        busy += _union_length(starts[nbytes > 0], ends[nbytes > 0])
        big = nbytes >= SUSTAINED_MIN_BYTES
        if big.any():
            large.append((starts, ends, nbytes.astype(float), big))
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
        if _sustained(cal, large):  # a shaper: isolated requests went faster than whole blobs
            _burst(cal, x, y, np.array(idle))
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


#: transfers at least this large measure the link's sustained rate (a shaper's burst is small beside them)
SUSTAINED_MIN_BYTES = 8 << 20
#: large transfers at once this much faster than an isolated request make the latter a per-connection cap
CONN_CAP_MARGIN = 1.15


def _sustained(cal: Calibration, large: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> bool:
    """Where large transfers ran, the link's rate is the bytes moved (by every transfer) while any large one
    was moving bytes (after its first-byte latency), over that time: a shaper that lets small requests
    through in a burst (the netlab proxy's token bucket: 20 ms of data) makes isolated requests look faster
    than the link goes for a whole blob. The lower of the two becomes ``bandwidth``; ``notes`` keep both.
    A transfer partly inside that time counts in proportion (its rate taken as even).

    Where the large transfers went more than :data:`CONN_CAP_MARGIN` × faster than one request alone
    (unshaped loopback: 1.34 GB/s for three blob downloads at once, 0.86 GB/s for one), one connection is
    what limited the isolated requests: ``conn_cap`` is their rate and ``bandwidth`` the sustained one (a
    lower bound of the link's: the last large transfer's tail, alone, ran at the cap).

    True when the sustained rate became ``bandwidth`` (it was below the isolated requests' rate)."""
    if not large or cal.first_byte_s is None:
        return False
    fb = cal.first_byte_s
    moved = busy = 0.0
    n_large = 0
    for starts, ends, nbytes, big in large:
        segs = _union(starts[big] + fb, ends[big])
        busy += sum(b - a for a, b in segs)
        n_large += int(big.sum())
        for s0, e0, nb in zip(starts + fb, ends, nbytes, strict=True):
            if nb <= 0 or e0 <= s0:
                continue
            inside = sum(max(0.0, min(e0, b) - max(s0, a)) for a, b in segs)
            moved += nb * inside / (e0 - s0)
    if busy <= 0:
        return False
    rate = moved / busy
    cal.notes["bandwidth_isolated"] = cal.bandwidth
    cal.notes["bandwidth_sustained"] = rate
    cal.samples["http_sustained"] = n_large
    big_mib = SUSTAINED_MIN_BYTES >> 20
    if cal.bandwidth is None or rate < cal.bandwidth:
        cal.bandwidth = rate
        cal.notes["http_fit"] = f"isolated requests (latency); transfers of >= {big_mib} MiB (bandwidth)"
        return True
    if rate > CONN_CAP_MARGIN * cal.bandwidth:
        cal.conn_cap, cal.bandwidth = cal.bandwidth, rate
        cal.notes["http_fit"] = (f"isolated requests (latency, rate of one connection); transfers of >= {big_mib} "
                                 "MiB (bandwidth)")  # fmt: skip
    return False


#: isolated requests this small measure the first-byte latency alone; this large, the burst they got
BURST_SMALL_BYTES = 64 << 10
BURST_LARGE_BYTES = 1 << 20


def _burst(cal: Calibration, nbytes: np.ndarray, secs: np.ndarray, idle: np.ndarray) -> None:
    """A shaper's token bucket, from isolated requests, where the sustained rate is below the isolated one.

    After an idle moment a shaper like the netlab proxy's lets its bucket (20 ms of its rate) through at
    once, so an isolated span fetch of ``n`` bytes takes ``first byte + (n - saved) / bandwidth``, not
    ``n / bandwidth`` — at 1 Gbit a 4 MiB span arrives ~2.5x sooner than the link's rate says. The bucket
    refills at the link's rate, so what a request saves is ``min(burst, bandwidth * idle)`` (``idle``: the
    silence before it). Each isolated request of at least :data:`BURST_LARGE_BYTES` gives its saving,
    ``n - bandwidth * (duration - latency)`` (latency: the median duration of isolated requests of at most
    :data:`BURST_SMALL_BYTES`); ``burst`` is the size that fits those savings best (least absolute error of
    that ``min``). None when either group has fewer than three requests, or no request saved anything."""
    small = secs[nbytes <= BURST_SMALL_BYTES]
    large = nbytes >= BURST_LARGE_BYTES
    if len(small) < 3 or int(large.sum()) < 3 or not cal.bandwidth:
        return
    latency = float(np.median(small))
    n = nbytes[large]
    saved = np.clip(n - cal.bandwidth * np.maximum(0.0, secs[large] - latency), 0.0, n)
    # a request cannot save more than the bucket held (it refills at the link's rate) nor than its own size
    limit = np.minimum(cal.bandwidth * np.maximum(0.0, idle[large]), n)
    candidates = np.unique(np.concatenate((saved, limit)))
    candidates = candidates[candidates > 0]
    if not len(candidates):
        return
    errors = [float(np.abs(saved - np.minimum(c, limit)).sum()) for c in candidates]
    best = float(candidates[int(np.argmin(errors))])
    if float(np.abs(saved).sum()) <= min(errors):  # "no bucket" fits as well: keep none
        return
    cal.burst = best
    cal.samples["http_burst"] = int(large.sum())
    cal.notes["burst_latency_s"] = latency


def _union(starts: np.ndarray, ends: np.ndarray) -> list[tuple[float, float]]:
    """The disjoint segments covered by ``[starts[i], ends[i]]``."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(zip(starts.tolist(), ends.tolist(), strict=True)):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


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
    """Apply costs in the puller's process and in the parallel puller's worker processes (module docstring)."""
    ap = frame[(frame["kind"] == "apply") & (frame["t_end"] > frame["t_start"])]
    alone = _alone(ap)
    if alone.sum() >= 2:
        ap = ap[alone]
    in_worker = ap["strategy"].astype(str) == "parallel"
    own = _apply_cost(ap[~in_worker])
    cal.samples["apply"] = int((~in_worker).sum())
    if own is None:  # only parallel pulls: their cost stands for both
        own = _apply_cost(ap)
        cal.samples["apply"] = len(ap)
    if own is not None:
        cal.apply_per_file_s, cal.apply_per_byte_s = own
    worker = _apply_cost(ap[in_worker])
    if worker is not None:
        cal.worker_apply_per_file_s, cal.worker_apply_per_byte_s = worker
        cal.samples["worker_apply"] = int(in_worker.sum())


def _alone(ap: pd.DataFrame) -> np.ndarray:
    """Which applies (in ``ap``'s row order) overlapped no other apply of their run: layers applied at once
    (a lazy pull's local layers, all prepared together) share the cores, so their wall time is not their
    cost."""
    mask = np.ones(len(ap), dtype=bool)
    runs = ap["_run"].to_numpy()
    starts, ends = ap["t_start"].to_numpy(), ap["t_end"].to_numpy()
    for run in set(runs.tolist()):
        rows = np.flatnonzero(runs == run)
        rows = rows[np.argsort(starts[rows], kind="stable")]
        s, e = starts[rows], ends[rows]
        prev_end = np.maximum.accumulate(np.concatenate(([-np.inf], e[:-1])))
        next_start = np.concatenate((s[1:], [np.inf]))
        mask[rows] = (prev_end <= s) & (next_start >= e)
    return mask


def _apply_cost(ap: pd.DataFrame) -> tuple[float, float] | None:
    """Per entry and per content byte, from ``apply`` events (None below two usable events)."""
    files = _attr(ap, "entries")
    if files.isna().all():
        files = _attr(ap, "files")
    ap, files = ap[files.notna()], files[files.notna()].astype(float)
    if len(ap) < 2:
        return None
    a = np.vstack([files.to_numpy(dtype=float), ap["bytes"].to_numpy(dtype=float)]).T
    y = (ap["t_end"] - ap["t_start"]).to_numpy()
    return _nnls2(a, y)


def _fit_layer_decompress(cal: Calibration, frame: pd.DataFrame) -> None:
    """``layer_decompress_rate`` per algorithm from whole-layer ``decompress`` events, less the digests
    (module docstring)."""
    dec = frame[(frame["kind"] == "decompress") & (frame["bytes"] > 0) & (frame["t_end"] > frame["t_start"])]
    if dec.empty:
        return
    verify_rate = HostParams().verify_rate
    ver = frame[(frame["kind"] == "verify") & frame["layer"].notna()]
    checked = set(zip(ver["_run"], ver["layer"], strict=True))
    compressed = _attr(dec, "compressed_bytes").fillna(0).astype(float)
    algo = _attr(dec, "compression").fillna("gzip")
    rates: dict[str, list[float]] = {}
    for run, layer, u, c, t0, t1, name in zip(dec["_run"], dec["layer"], dec["bytes"], compressed, dec["t_start"],
                                              dec["t_end"], algo, strict=True):  # fmt: skip
        cost = float(t1 - t0)
        if (run, layer) in checked:
            cost -= (float(u) + float(c)) / verify_rate
        if cost > 0:
            rates.setdefault(str(name), []).append(float(u) / cost)
    for name, rs in rates.items():
        cal.layer_decompress_rate[name] = float(np.median(rs))
        cal.samples[f"layer_decompress_{name}"] = len(rs)
    cal.notes["layer_decompress_verify_rate"] = verify_rate


def _fit_apply_worker(cal: Calibration, frame: pd.DataFrame) -> None:
    """``apply_worker_s``: in a parallel pull whose first layer was downloaded before the apply worker was
    up, that layer's apply starts when the worker is: the time from the puller's first download to it."""
    par = frame[frame["strategy"].astype(str) == "parallel"]
    waits: list[float] = []
    for _, run in par.groupby("_run"):
        dl = run[run["kind"] == "blob_download"]
        ap = run[run["kind"] == "apply"]
        if dl.empty or ap.empty:
            continue
        first = ap.sort_values("t_start").iloc[0]
        got = dl[dl["layer"] == first["layer"]]
        if got.empty or first["t_start"] - got["t_end"].max() < 0.005:
            continue  # its download was the wait, not the worker
        waits.append(float(first["t_start"] - dl["t_start"].min()))
    if waits:
        cal.apply_worker_s = float(np.median(waits))
        cal.samples["apply_worker"] = len(waits)


def _fit_pull_finish(cal: Calibration, frame: pd.DataFrame) -> None:
    """``pull_finish_s`` and ``apply_worker_exit_s``: from the last apply of an eager pull to its rootfs
    mount, sequential and parallel (module docstring)."""
    eager = frame[frame["strategy"].astype(str).isin(["sequential", "parallel"])]
    gaps: dict[str, list[float]] = {"sequential": [], "parallel": []}
    for _, run in eager.groupby("_run"):
        applied = run[run["kind"] == "apply"]
        mounts = run[(run["kind"] == "mount") & (_attr(run, "what") == "overlay")]
        if applied.empty or mounts.empty:
            continue
        gap = float(mounts["t_start"].min() - applied["t_end"].max())
        if gap >= 0:
            gaps[str(run["strategy"].iloc[0])].append(gap)
    seq = float(np.median(gaps["sequential"])) if gaps["sequential"] else None
    if seq is not None:
        cal.pull_finish_s = seq
        cal.samples["pull_finish"] = len(gaps["sequential"])
    if gaps["parallel"]:
        cal.apply_worker_exit_s = max(0.0, float(np.median(gaps["parallel"])) - (seq or 0.0))
        cal.samples["apply_worker_exit"] = len(gaps["parallel"])


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


def _nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a few columns: the best unconstrained fit over every subset of
    columns whose coefficients all come out non-negative (exact for the 2–3 columns used here)."""
    k = a.shape[1]
    best: tuple[float, np.ndarray] | None = None
    for mask in range(1, 1 << k):
        cols = [j for j in range(k) if mask >> j & 1]
        sub, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
        if (sub < 0).any():
            continue
        coef = np.zeros(k)
        coef[cols] = sub
        resid = float(np.sum((a @ coef - y) ** 2))
        if best is None or resid < best[0]:
            best = (resid, coef)
    return best[1] if best is not None else np.zeros(k)
