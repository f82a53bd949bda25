"""Fit the simulator's host and network parameters from a run's events; save and load the fit.

What is fitted, and from which events (the shape the real rooms' events must have for this to hold):

- ``http_request`` (``t_start`` = request sent, ``t_end`` = last body byte, ``bytes`` = body bytes,
  ``fast``: sent over the real client's fast path, ``reused``: over a pooled connection):
  requests that overlap no other request are fitted by least squares to
  ``duration = first_byte + bytes / bandwidth`` — the per-request latency (RTT + registry overhead)
  and the effective bandwidth of one transfer — with a first byte per path and one bandwidth for both:
  ``first_byte_s`` for httpx's requests, ``fast_first_byte_s`` for the fast path's (the client sends GETs
  of at least ``FAST_MIN_BYTES`` that way, and its first byte costs less: one intercept for both made the
  path a size effect, which bent the slope — no bandwidth at all in 1 CI run of notebook 04 in 3, a
  phantom 0.8-1.2 MB token bucket on unshaped loopback). A path with fewer than :data:`MIN_PATH_SAMPLES`
  isolated requests is left out (``fast_first_byte_s`` None: one latency for both). Only the spread of
  sizes within a path tells the slope; where it does not fix it (:func:`_slope_is_fixed`: httpx's isolated
  requests are manifests of a few KiB, a small image's spans all one size), the bandwidth is the bytes moved
  over the time bodies of more than 64 KiB were in flight and each path's latency the median of its
  durations less their transfer. ``notes["fast_new_conn_s"]`` is what a new fast-path connection added to a
  pooled one's first byte (a note: not modelled; python-pandas, 512 KiB threshold: +4.6 ms on loopback,
  +2.1 ms at 1 Gbit, +1.5 ms at 100 Mbit from 9 new against 102 pooled, no steady cost). Where transfers
  of 8 MiB or more ran (eager pulls), the bytes they moved over the time any of them was moving is the
  sustained rate, and ``bandwidth`` is the lower of the two (a shaper's burst speeds small requests up,
  not blobs); a shaper's bucket is then fitted with the paths' latencies (:func:`_burst`). When every
  request overlapped another (an eager pull), the latency is the median duration of body-less (HEAD) or
  smallest requests and the bandwidth is the bytes moved over the time any transfer was in flight
  (``notes["http_fit"]`` says which);
- ``span_decompress`` (duration = inflating one span, ``compression``): the median of
  ``bytes / duration`` per algorithm (bytes = uncompressed output). Without span events, whole-layer
  ``decompress`` events are used (``notes["decompress_source"]`` says which);
- whole-layer ``decompress`` events (an unpacker's producer thread: inflate and, where the layer's digests
  were checked — its ``verify`` events — both sha256 at ``HostParams.verify_rate``): the highest of
  ``bytes / (duration − digests)`` per algorithm is ``layer_decompress_rate`` (each is a lower bound). The
  eager unpackers inflate with ISA-L, the lazy path's spans with zlib resumed at a checkpoint, so the two
  rates differ (python-pandas: 438 against 252 MB/s; with the spans' rate the simulated unpack was
  decompress-bound, the real one is apply-bound). The producer waits when the apply thread's queue is full,
  so each layer's is a lower bound of the rate: it decides nothing where apply is the slower stage (a suite
  needs layers of large files to measure it);
- the first ``http_request`` of each run: the median of its start is ``start_s`` (set-up before any request);
- ``mount`` events of lazy layers: each layer's FUSE server emits its own (``layer`` set, no ``how``; from
  its start to mounted, ``cpu_s`` = the CPU the process used), inside the snapshotter's
  (``how == "lazy"``, from asking for the server). Servers are forked one at a time, so a server's
  spawn latency is its start minus the later of its request and the previous server's start: the median
  of the first server's of each run is ``mount_first_s`` (it waits for the pre-warmed process: a cold
  start), of the later ones' ``mount_s`` (one median of both, on a loaded host 1.8 s and 15 ms, spread
  two servers forked 15 ms apart 0.9 s apart, and the simulated background fetcher began 0.9 s early);
  ``cpu_s`` against the zTOC's entries (``entries``, else the layer's ``apply`` entries in an eager
  run of the same image) by non-negative least squares gives ``mount_cpu_s`` and ``mount_cpu_per_entry``;
  the time from the last ``ztoc_fetch`` to the first snapshotter mount, over the indexed layers' entries, is
  ``ztoc_parse_per_entry``. Without the servers' events (or their ``cpu_s``), ``mount_s`` is the median
  snapshotter mount and no CPU is fitted. The rootfs mount
  (``what == "overlay"``): the median is ``overlay_mount_s``;
- ``file_read`` events of lazy runs, the workload's (no ``layer``) matched to the FUSE requests they caused
  (the same file's reads by its layer's server during them): reads during which no on-demand span fetch ran
  are fitted by non-negative least squares to ``requests × fuse_op_s + bytes / fuse_read_rate + first read
  of the file × header_verify_s``. A simulated run's reads carry ``fuse_requests`` and
  ``first_read`` instead. ``span_cache_rate``: from the end of a span's decompression to the end of
  the read that waited for it (the span's put into the cache). ``file_op`` events (open, stat, readdir,
  readlink): the mean of lazy runs' is ``fuse_meta_s``, of eager runs' ``syscall_s``;
- parallel pulls whose first applied layer waited after its download: from the first download to that
  apply is the start of the apply worker process, ``apply_worker_s``;
- eager pulls, from the end of their last ``apply`` to the start of the rootfs ``mount``: the median of the
  sequential pulls' is ``pull_finish_s``, what the parallel pulls' median adds to it ``apply_worker_exit_s``
  (the puller waits for its workers to exit; without sequential pulls the parallel gap is all of it);
- ``apply`` (``entries``, else ``files``; bytes = file content): least squares of
  ``duration = entries × per_file + bytes × per_byte``, per place the apply ran: the puller's own process
  (the sequential puller, a lazy pull's local layers) gives ``apply_per_file_s``/``apply_per_byte_s``, the
  parallel puller's apply worker processes ``worker_apply_per_file_s``/``worker_apply_per_byte_s`` (real
  pulls: the same layers 5–45 % slower there, most for a fresh worker's first layers). Without applies of
  the first kind, the first pair is fitted from every apply. Only applies that overlapped no other apply of
  their run count (a lazy pull applies its local layers all at once, 1.5-3× slower each: the cores are
  shared, as the simulator models), unless fewer than two did. Apply runs in a pipeline with decompression,
  so this fits the apply side only where it is the slower stage (true of most real layers: many small
  files).

What the data cannot tell is said, not guessed: each fitted parameter has a standard error in
``uncertainty`` (least squares for the isolated requests' latency and bandwidth, a bootstrap of
:data:`BOOTSTRAP` resamples for the FUSE read costs and the medians, the standard error of the mean for the
means; a parameter found another way has none), and a parameter with fewer samples than
:data:`MIN_SAMPLES` asks, outside its physical :data:`BOUNDS`, or not one standard error from 0 (a
non-negative fit that hit 0, a cost per byte lost in the noise) is left unfitted (None) with the reason in
``warnings``. The fallback is documented there and is always the same: :meth:`Calibration.params` keeps the
base parameters' value (the host profile's, else the :class:`HostParams` default). Before, three cache-hit
reads of a small image gave a FUSE read rate of 1.38 MB/s and a per-request cost of 0, silently.

A :class:`Calibration` holds the fit in two parts, as :class:`SimParams` holds the parameters: ``network``
(:class:`NetworkFit`, the HTTP fit: into ``NetworkParams``) and ``host`` (:class:`HostFit`, everything
else: into ``HostParams``), each turning itself into its parameters; the sample counts, notes, standard
errors and warnings sit beside them. It is saved as JSON in that nested form (:data:`FORMAT`; files of the
flat form before it, :data:`FLAT_FORMAT`, such as the committed ``datasets/calibration/*.json``, still
load) and turned into :class:`SimParams` with :meth:`Calibration.params`. Fitting the simulator's own events
recovers the parameters it ran with (a test holds it to that), so what a fit of real events says is the real
system's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SimulationError
from ..events import detail, upgrade_frame
from .host import HostParams
from .network import NetworkParams
from .world import SimParams

if TYPE_CHECKING:
    import pandas as pd

#: what :meth:`Calibration.save` writes: the network's and the host's fits apart (``network``, ``host``)
FORMAT = "soci_lab.sim.calibration/2"
#: what files written before the split hold: every fitted value at the top level (still read)
FLAT_FORMAT = "soci_lab.sim.calibration/1"
#: the event details (``attrs`` keys) the fit reads, by kind, in one place (the events' schema is
#: :mod:`soci_lab.events`; these are the keys that a real room's events must carry for the fit to hold)
EVENT_DETAILS: dict[str, tuple[str, ...]] = {
    "http_request": ("fast", "reused"),
    "span_decompress": ("compression",),
    "decompress": ("compression", "compressed_bytes"),
    "apply": ("entries", "files"),
    "mount": ("how", "what", "entries", "cpu_s"),
    "file_op": ("op",),
    "file_read": ("fuse_requests", "first_read", "missed"),
    "span_fetch": ("background",),
}
_DETAIL_KEYS = frozenset(k for keys in EVENT_DETAILS.values() for k in keys)
#: the notes of the HTTP fit (the network's, see :meth:`Calibration.with_network_of`)
NETWORK_NOTES = (
    "http_fit",
    "http_residual_s",
    "bandwidth_isolated",
    "bandwidth_sustained",
    "burst_latency_s",
    "fast_burst_latency_s",
    "fast_new_conn_s",
)


@dataclass
class NetworkFit:
    """What the HTTP fit found of the network (:class:`~soci_lab.sim.network.NetworkParams`); None: not
    fitted, the base parameters' value stands."""

    bandwidth: float | None = None
    first_byte_s: float | None = None
    #: the fast path's first-byte time (None: ``first_byte_s`` for both paths, as files without it say)
    fast_first_byte_s: float | None = None
    conn_cap: float | None = None
    burst: float | None = None

    def apply(self, net: NetworkParams, *, rtt: float | None = None) -> NetworkParams:
        """``net`` with the fitted values in (:meth:`Calibration.params` says how ``rtt`` splits the first
        byte)."""
        if self.bandwidth:
            net = replace(net, bandwidth=self.bandwidth)
        if self.conn_cap:
            net = replace(net, conn_cap=self.conn_cap)
        if self.burst:
            net = replace(net, burst=self.burst)
        if self.first_byte_s is not None:
            fb, fast = self.first_byte_s, self.fast_first_byte_s
            if rtt is None:
                rtt = fb if fast is None else min(fb, fast)
            net = replace(net, rtt=rtt, request_overhead=max(0.0, fb - rtt),
                          fast_request_overhead=None if fast is None else max(0.0, fast - rtt))  # fmt: skip
        return net


@dataclass
class HostFit:
    """What the fit found of the host (:class:`~soci_lab.sim.host.HostParams`, under the same names); None
    or empty: not fitted, the base parameters' value stands."""

    decompress_rate: dict[str, float] = field(default_factory=dict)
    layer_decompress_rate: dict[str, float] = field(default_factory=dict)
    apply_per_file_s: float | None = None
    apply_per_byte_s: float | None = None
    worker_apply_per_file_s: float | None = None
    worker_apply_per_byte_s: float | None = None
    apply_per_layer_s: float | None = None
    worker_apply_per_layer_s: float | None = None
    mount_s: float | None = None
    mount_first_s: float | None = None
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
    pull_finish_s: float | None = None
    apply_worker_exit_s: float | None = None

    def apply(self, host: HostParams) -> HostParams:
        """``host`` with the fitted values in (an apply cost only where both its terms were fitted; the rates
        per algorithm merged into the base's)."""
        if self.decompress_rate:
            host = replace(host, decompress_rate={**host.decompress_rate, **self.decompress_rate})
        # the three terms of an apply cost were fitted together: a fixed cost per layer the fit did not keep
        # (too few distinct layers, not one standard error from 0) is 0 under the slopes it gave, never the base's
        # (a worker fit stores its 0; None, in files from before the fixed cost: the in-process one)
        if self.apply_per_file_s is not None and self.apply_per_byte_s is not None:
            host = replace(host, apply_per_file_s=self.apply_per_file_s, apply_per_byte_s=self.apply_per_byte_s,
                           apply_per_layer_s=self.apply_per_layer_s or 0.0)  # fmt: skip
        if self.worker_apply_per_file_s is not None and self.worker_apply_per_byte_s is not None:
            host = replace(host, worker_apply_per_file_s=self.worker_apply_per_file_s,
                           worker_apply_per_byte_s=self.worker_apply_per_byte_s,
                           worker_apply_per_layer_s=self.worker_apply_per_layer_s)  # fmt: skip
        if self.layer_decompress_rate:
            host = replace(host, layer_decompress_rate={**host.layer_decompress_rate, **self.layer_decompress_rate})
        for key in HOST_KEYS:
            if getattr(self, key) is not None:
                host = replace(host, **{key: getattr(self, key)})
        return host


#: the network's parameters (:meth:`Calibration.with_network_of`)
NETWORK_KEYS = tuple(f.name for f in fields(NetworkFit))
#: fitted values that go into :class:`~soci_lab.sim.HostParams` under the same name, one for one
HOST_KEYS = (
    "mount_s", "mount_cpu_s", "mount_cpu_per_entry", "ztoc_parse_per_entry", "overlay_mount_s", "start_s", "fuse_op_s",
    "mount_first_s", "fuse_read_rate", "fuse_meta_s", "header_verify_s", "span_cache_rate", "apply_worker_s",
    "syscall_s", "pull_finish_s", "apply_worker_exit_s",
)  # fmt: skip
_HOST_FIELDS = tuple(f.name for f in fields(HostFit))


@dataclass
class Calibration:
    """Fitted parameters, the network's and the host's apart as the simulator's (:class:`SimParams`), and
    what stands behind them: sample counts, notes, standard errors, and why a parameter was not fitted."""

    network: NetworkFit = field(default_factory=NetworkFit)
    host: HostFit = field(default_factory=HostFit)
    samples: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    #: standard error of a fitted parameter, in its own unit (bootstrap or least squares; module docstring;
    #: NaN, or null in the JSON, where one sample gave it)
    uncertainty: dict[str, float | None] = field(default_factory=dict)
    #: per parameter the data could not identify: why, and what is used instead (the parameter is None)
    warnings: dict[str, str] = field(default_factory=dict)

    def params(self, base: SimParams | None = None, *, rtt: float | None = None) -> SimParams:
        """``base`` with the fitted values in; ``rtt`` (if known, e.g. from the shaping) splits
        ``first_byte_s`` into RTT and registry overhead, else it is all RTT. With ``fast_first_byte_s`` the
        fast path's first byte is its own (``NetworkParams.fast_request_overhead``; without ``rtt`` the
        RTT is the cheaper path's first byte, the dearer one's difference its overhead); without it both
        paths pay ``first_byte_s``."""
        base = base or SimParams()
        return replace(base, network=self.network.apply(base.network, rtt=rtt), host=self.host.apply(base.host))

    def with_network_of(self, other: Calibration) -> Calibration:
        """This calibration's host with ``other``'s network (``bandwidth``, ``first_byte_s``,
        ``fast_first_byte_s``, ``conn_cap``, ``burst`` and what the HTTP fit noted and counted). The host is
        the same whatever network a run went through: fit it from every run, where a burst of load on a shared
        machine weighs less, and the network per network."""
        notes = {k: v for k, v in self.notes.items() if k not in NETWORK_NOTES}
        notes.update({k: v for k, v in other.notes.items() if k in NETWORK_NOTES})
        samples = {k: v for k, v in self.samples.items() if not k.startswith("http")}
        samples.update({k: v for k, v in other.samples.items() if k.startswith("http")})
        se = {k: v for k, v in self.uncertainty.items() if k not in NETWORK_KEYS}
        se.update({k: v for k, v in other.uncertainty.items() if k in NETWORK_KEYS})
        warnings = {k: v for k, v in self.warnings.items() if k not in NETWORK_KEYS}
        warnings.update({k: v for k, v in other.warnings.items() if k in NETWORK_KEYS})
        host = replace(self.host, decompress_rate=dict(self.host.decompress_rate),
                       layer_decompress_rate=dict(self.host.layer_decompress_rate))  # fmt: skip
        return replace(self, network=replace(other.network), host=host, notes=notes, samples=samples,
                       uncertainty=se, warnings=warnings)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (an unknown uncertainty, NaN here, is null there)."""
        data = asdict(self)
        data["uncertainty"] = {k: (None if v is None or v != v else v) for k, v in self.uncertainty.items()}
        return {"format": FORMAT, **data}

    def save(self, path: str | Path) -> Path:
        """Write as JSON (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save`, or by the flat writer before it (``FLAT_FORMAT``: every
        fitted value at the top level); a :class:`SimulationError` for anything else."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SimulationError(f"{path}: cannot read a calibration: {exc}") from None
        fmt = data.pop("format", None) if isinstance(data, dict) else None
        if fmt not in (FORMAT, FLAT_FORMAT):
            raise SimulationError(f"{path}: not a soci_lab calibration ({FORMAT})")
        try:
            if fmt == FLAT_FORMAT:
                return cls.from_flat(data)
            network, host = data.pop("network", {}), data.pop("host", {})
            if not isinstance(network, dict) or not isinstance(host, dict):
                raise TypeError("'network' and 'host' must be objects")
            return cls(network=NetworkFit(**network), host=HostFit(**host), **data)
        except TypeError as exc:
            raise SimulationError(f"{path}: malformed calibration: {exc}") from None

    @classmethod
    def from_flat(cls, data: dict[str, Any]) -> Calibration:
        """A calibration from the flat form files written before the split hold (``FLAT_FORMAT``, without its
        ``format`` key): each fitted value to the part it belongs to (a TypeError for a key of neither)."""
        network = {k: v for k, v in data.items() if k in NETWORK_KEYS}
        host = {k: v for k, v in data.items() if k in _HOST_FIELDS}
        rest = {k: v for k, v in data.items() if k not in network and k not in host}
        return cls(network=NetworkFit(**network), host=HostFit(**host), **rest)


def _forward(part: str, name: str) -> property:
    """A read-only property of :class:`Calibration` that reads ``name`` of its ``part``."""
    return property(lambda self: getattr(getattr(self, part), name),
                    doc=f"``{part}.{name}`` (compatibility: read-only; the value lives in ``{part}``)")  # fmt: skip


# Compatibility: the flat attributes (``cal.bandwidth``, ``cal.mount_s``, …) of the calibration before the
# split, read-only, for the notebooks, benchmarks and tests that read them. New code reads the parts.
for _name in NETWORK_KEYS:
    setattr(Calibration, _name, _forward("network", _name))
for _name in _HOST_FIELDS:
    setattr(Calibration, _name, _forward("host", _name))
del _name


def fit(events: pd.DataFrame | list[pd.DataFrame]) -> Calibration:
    """Fit a :class:`Calibration` from one or more runs' event frames."""
    import pandas as pd

    frames = [upgrade_frame(f) for f in (events if isinstance(events, list) else [events])]
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
    _vet(cal)
    return cal


def _fit_start(cal: Calibration, frame: pd.DataFrame) -> None:
    """``start_s``: the median over runs of when the first request went out."""
    http = frame[frame["kind"] == "http_request"]
    if http.empty:
        return
    firsts = http.groupby("_run")["t_start"].min()
    _median(cal, "start_s", "start", firsts.tolist())


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
        _fit_startup_by_spawn(cal, frame)
    elif outer.any():
        _median(cal, "mount_s", "mount", dur[outer].tolist())
    overlays = dur[mount & (what == "overlay")]
    if len(overlays):
        _median(cal, "overlay_mount_s", "overlay_mount", overlays.tolist())
    ops = frame["kind"] == "file_op"
    op_names = _attr(frame, "op")
    ops &= op_names.isin(["open", "stat", "readdir", "readlink"])
    lazy = frame["strategy"].astype(str).str.startswith("lazy")
    # means, not medians: a workload's time is the sum of its ops, and their durations are skewed (a
    # lookup the kernel has not cached costs several times one it has)
    if (ops & lazy).any():
        _mean(cal, "fuse_meta_s", "fuse_meta", dur[ops & lazy].to_numpy(dtype=float))
    if (ops & ~lazy).any():
        _mean(cal, "syscall_s", "syscall", dur[ops & ~lazy].to_numpy(dtype=float))
    _fit_fuse_reads(cal, frame[lazy])
    _fit_span_cache(cal, frame[lazy])


def _fit_startup_by_spawn(cal: Calibration, frame: pd.DataFrame) -> None:
    """Where the layers' mount events say how each server started (``spawn``), cold and warm start-up come
    from those (:func:`soci_lab.sim.fit_costs.fit_startup`) instead of the first server of each run and the
    rest: with the per-host service running, a run's first server is a warm fork too."""
    from .fit_costs import fit_startup

    found = fit_startup(frame, run_col="_run")
    for name, key in (("mount_s", "mount"), ("mount_first_s", "mount_first")):
        est = found.get(name)
        if est is not None:
            setattr(cal.host, name, est.value)
            cal.samples[key] = est.n
            cal.uncertainty[name] = est.se
        elif "service_running" in found and name == "mount_first_s":  # every server was a warm fork
            cal.host.mount_first_s = None
            cal.uncertainty.pop(name, None)
            cal.warnings[name] = "no cold start in the runs (every layer server was a warm fork): not fitted"


def _fit_servers(cal: Calibration, frame: pd.DataFrame, outer: pd.DataFrame, inner: pd.DataFrame) -> None:
    """``mount_s`` (spawn latency, servers forked one at a time), the servers' CPU against their zTOC
    entries, and the snapshotter's pass over the zTOCs before its first mount."""
    spawn: list[float] = []  # every server's after the first of its run (a warm fork)
    first_spawn: list[float] = []  # the first server's of each run (waits for the pre-warmed process)
    cpu: list[float] = []
    entries: list[float] = []
    parse: list[tuple[float, float]] = []  # per run: the indexed layers' entries, the gap
    ztocs = frame[frame["kind"] == "ztoc_fetch"]
    applied = frame[frame["kind"] == "apply"]
    known = dict(zip(applied["layer"], _attr(applied, "entries"), strict=True))
    for run, out_run in outer.groupby("_run"):
        asked = dict(zip(out_run["layer"], out_run["t_start"], strict=True))
        inn = inner[(inner["_run"] == run) & inner["layer"].isin(asked)].sort_values("t_start")
        prev = -np.inf
        n_run = 0.0
        servers = zip(inn["layer"], inn["t_start"], _attr(inn, "entries"), _attr(inn, "cpu_s"), strict=True)
        for layer, t0, n_entries, cpu_s in servers:
            (spawn if prev > -np.inf else first_spawn).append(float(t0 - max(asked[layer], prev)))
            prev = t0
            n = known.get(layer) if n_entries is None else n_entries
            if n is not None and n == n:  # not NaN
                n_run += float(n)
                if cpu_s is not None:
                    cpu.append(float(cpu_s))
                    entries.append(float(n))
        z = ztocs[ztocs["_run"] == run]
        if len(z) and n_run > 0:
            parse.append((n_run, max(0.0, float(out_run["t_start"].min() - z["t_end"].max()))))
    if spawn:
        _median(cal, "mount_s", "mount", spawn)
        _median(cal, "mount_first_s", "mount_first", first_spawn)
    elif first_spawn:  # one server per run: no warm fork to tell apart
        _median(cal, "mount_s", "mount", first_spawn)
    if cpu:
        y = np.array(cpu)
        a2 = np.vstack([np.ones_like(y), np.array(entries)]).T
        cal.samples["mount_cpu"] = len(cpu)
        if len(set(entries)) >= 2:
            rows = np.column_stack([a2, y])
            cal.host.mount_cpu_s, cal.host.mount_cpu_per_entry = _nnls2(a2, y)
            se = _bootstrap_se(rows, lambda r: np.array(_nnls2(r[:, :2], r[:, 2])))
            cal.uncertainty.update(mount_cpu_s=float(se[0]), mount_cpu_per_entry=float(se[1]))
        else:
            _mean(cal, "mount_cpu_s", "mount_cpu", y)
            _unidentified(cal, "mount_cpu_per_entry", "every server's zTOC had as many entries (one CPU cost for all)")
    if parse:
        _fit_ztoc_parse(cal, parse)


def _fit_ztoc_parse(cal: Calibration, parse: list[tuple[float, float]]) -> None:
    """``ztoc_parse_per_entry`` from (entries, gap) per run. The gap has a fixed part too (the snapshotter's
    own steps before its first mount), so where runs' entry counts differ it is the slope of a non-negative
    fit of ``gap = fixed + entries × per_entry`` (the fixed part, not modelled, in ``notes``); a median of
    gap / entries over images of 16 entries made 4 ms a quarter of a millisecond per entry, 1.5 s on a
    6,000-entry image. With one entry count, that median (the per-entry cost is then not told from the
    fixed part: said in ``notes``)."""
    m = np.array(parse, dtype=float)
    if len(set(m[:, 0].tolist())) >= 2 and len(m) >= 3:
        a = np.column_stack([np.ones(len(m)), m[:, 0]])
        fixed, per_entry = _nnls2(a, m[:, 1])
        cal.host.ztoc_parse_per_entry = per_entry
        cal.samples["ztoc_parse"] = len(m)
        # least squares' error (a bootstrap of a few runs draws samples of one entry count: no slope at all)
        se = _ls_se(a, m[:, 1], np.array([fixed, per_entry]))
        cal.uncertainty["ztoc_parse_per_entry"] = float(se[1])
        cal.notes["ztoc_parse_fixed_s"] = fixed
    else:
        _median(cal, "ztoc_parse_per_entry", "ztoc_parse", (m[:, 1] / m[:, 0]).tolist())
        cal.notes["ztoc_parse_fit"] = "one entry count: gap / entries (its fixed part included)"


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
    items: list[tuple[float, float]] = []  # per read that waited for one span: its bytes, the cache put
    for run, run_reads in reads.groupby("_run"):
        d = dec[dec["_run"] == run]
        if d.empty:
            continue
        d_start, d_end, d_bytes = d["t_start"].to_numpy(), d["t_end"].to_numpy(), d["bytes"].to_numpy()
        first_reads = _attr(run_reads, "first_read")
        for t0, t1, size, first in zip(
            run_reads["t_start"], run_reads["t_end"], run_reads["bytes"], first_reads, strict=True
        ):
            inside = (d_start >= t0) & (d_end <= t1)
            if inside.sum() != 1:
                continue
            gap = t1 - float(d_end[inside][0])
            if simulated:
                gap -= (cal.host.fuse_op_s or 0.0) + size / (cal.host.fuse_read_rate or np.inf)
                gap -= (cal.host.header_verify_s or 0.0) if first else 0.0
            items.append((float(d_bytes[inside][0]), gap))
    m = np.array(items).reshape(-1, 2)
    nbytes, gaps = float(m[:, 0].sum()), float(m[:, 1].sum())
    if nbytes > 0 and gaps > 0:
        cal.host.span_cache_rate = nbytes / gaps
        cal.samples["span_cache"] = len(m)
        if len(m) > 1:
            ratio = lambda r: r[:, 0].sum() / r[:, 1].sum() if r[:, 1].sum() > 0 else np.nan  # noqa: E731
            cal.uncertainty["span_cache_rate"] = float(_bootstrap_se(m, ratio))


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
    if not rows:
        return
    cal.samples["fuse_read"] = len(rows)
    names = ("fuse_op_s", "fuse_read_rate", "header_verify_s")
    if len(rows) < MIN_SAMPLES["fuse_read"]:
        for name in names:
            _unidentified(cal, name, f"{len(rows)} cache-hit FUSE reads, fewer than {MIN_SAMPLES['fuse_read']}")
        return
    m = np.array(rows)
    coef = _nnls(m[:, :3], m[:, 3])
    se = _bootstrap_se(m, lambda r: _nnls(r[:, :3], r[:, 3]))
    cal.host.fuse_op_s = float(coef[0])
    cal.uncertainty["fuse_op_s"] = float(se[0])
    if coef[1] > 0:
        cal.host.fuse_read_rate = float(1 / coef[1])
        cal.uncertainty["fuse_read_rate"] = float(se[1] / coef[1] ** 2)
    else:
        _unidentified(cal, "fuse_read_rate", "the reads' sizes gave no cost per byte")
    if m[:, 2].any():
        cal.host.header_verify_s = float(coef[2])
        cal.uncertainty["header_verify_s"] = float(se[2])
    else:
        _unidentified(cal, "header_verify_s", "no first read of a file among the cache-hit reads")


#: isolated requests a path (httpx, fast) needs for a first-byte time of its own
MIN_PATH_SAMPLES = 3


def _fit_http(cal: Calibration, frames: list[pd.DataFrame]) -> None:
    """Latency per path, bandwidth, per-connection cap and a shaper's burst from ``http_request`` events
    (module docstring)."""
    xs: list[float] = []
    ys: list[float] = []
    idle: list[float] = []  # before each isolated request: the time since the last transfer ended
    fast: list[bool] = []  # each isolated request: sent over the fast path
    reused: list[bool] = []  # … over a pooled fast-path connection
    all_x: list[float] = []
    all_y: list[float] = []
    busy = 0.0
    runs: list[_Transfers] = []
    for frame in frames:
        http = frame[(frame["kind"] == "http_request") & frame["ok"]].sort_values("t_start")
        starts = http["t_start"].to_numpy()
        ends = http["t_end"].to_numpy()
        nbytes = http["bytes"].to_numpy()
        n = len(http)
        if not n:
            continue
        lean = _attr(http, "fast").fillna(False).astype(bool).to_numpy()
        pooled = _attr(http, "reused").fillna(False).astype(bool).to_numpy()
        prev_end = np.maximum.accumulate(np.concatenate(([-np.inf], ends[:-1])))
        next_start = np.concatenate((starts[1:], [np.inf]))
        alone = (prev_end <= starts) & (next_start >= ends)
        xs.extend(nbytes[alone].astype(float))
        ys.extend((ends - starts)[alone])
        idle.extend((starts - prev_end)[alone])
        fast.extend(lean[alone].tolist())
        reused.extend(pooled[alone].tolist())
        all_x.extend(nbytes.astype(float))
        all_y.extend(ends - starts)
        busy += _union_length(starts[nbytes > 0], ends[nbytes > 0])
        runs.append((starts, ends, nbytes.astype(float), lean))
    cal.samples["http_isolated"] = len(xs)
    cal.samples["http"] = len(all_x)
    if len(xs) >= 2 and len(set(xs)) >= 2:
        x, y, t_idle = np.array(xs), np.array(ys), np.array(idle)
        lean, pooled = np.array(fast, dtype=bool), np.array(reused, dtype=bool)
        split = _two_paths(x, lean)
        if not split and min(int(lean.sum()), int((~lean).sum())) > 0:
            # too few of one path to tell its cost apart: leave them out rather than bend the other's fit
            keep = lean if lean.sum() > (~lean).sum() else ~lean
            if len(set(x[keep].tolist())) >= 2:
                x, y, t_idle, lean, pooled = x[keep], y[keep], t_idle[keep], lean[keep], pooled[keep]
        a = np.vstack([~lean, lean, x]).T.astype(float) if split else np.vstack([np.ones_like(x), x]).T
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        ls_values: dict[str, float | None] = {}
        cal.notes["http_fit"] = "isolated requests"
        if not _slope_is_fixed(a, y, coef, x):
            coef = _paths_given_rate(cal, runs, x, y, lean, split=split)
        elif coef[-1] > 0:
            cal.network.bandwidth = float(1 / coef[-1])
            se = _ls_se(a, y, coef)
            names = ("first_byte_s", "fast_first_byte_s") if split else ("first_byte_s",)
            cal.uncertainty.update({n: float(v) for n, v in zip(names, se, strict=False)})
            cal.uncertainty["bandwidth"] = float(se[-1] / coef[-1] ** 2)
            ls_values["bandwidth"] = cal.network.bandwidth
        cal.network.first_byte_s = ls_values["first_byte_s"] = float(max(0.0, coef[0]))
        if split:
            cal.network.fast_first_byte_s = ls_values["fast_first_byte_s"] = float(max(0.0, coef[1]))
            cal.samples["http_isolated_fast"] = int(lean.sum())
            cal.notes["http_fit"] = _TWO_PATHS + cal.notes["http_fit"].removeprefix("isolated requests")
            _new_connections(cal, y - a @ coef, lean, pooled)
        cal.notes["http_residual_s"] = float(np.sqrt(np.mean((a @ coef - y) ** 2)))
        if _sustained(cal, runs, two_paths=split):  # a shaper's link: try its bucket
            paths = lean if split else np.zeros(len(x), dtype=bool)
            _burst(cal, x, y, t_idle, paths)
            for _ in range(4):  # the bucket moved the latencies: the sustained rate with them, then the bucket
                bw = cal.network.bandwidth
                if not cal.network.burst or bw is None or bw != cal.notes["bandwidth_sustained"]:
                    break
                rate, _ = _sustained_rate(cal, runs)
                if rate is None or abs(rate - bw) <= 1e-9 * bw:
                    break
                cal.network.bandwidth = cal.notes["bandwidth_sustained"] = rate
                _burst(cal, x, y, t_idle, paths)
        ls_bw_se = cal.uncertainty.get("bandwidth")
        for name in NETWORK_KEYS:  # an uncertainty is the least squares' only where its value still is
            if name in cal.uncertainty and getattr(cal.network, name) != ls_values.get(name):
                del cal.uncertainty[name]
        _network_se(cal, runs, x, y, lean, split=split, ls_bandwidth=(ls_values.get("bandwidth"), ls_bw_se))
        return
    if not all_x:
        return
    # every request overlapped another: latency from the body-less or smallest requests, bandwidth from
    # the bytes moved while any transfer was in flight (a lower bound on the link's rate)
    x, y = np.array(all_x), np.array(all_y)
    small = y[x == 0] if (x == 0).any() else y[x <= np.percentile(x, 10)]
    cal.network.first_byte_s = float(np.median(small))
    moving = busy - cal.network.first_byte_s
    if x.sum() > 0 and moving > 0:
        cal.network.bandwidth = float(x.sum() / moving)
    cal.notes["http_fit"] = "aggregate (no isolated requests)"


def _network_se(cal: Calibration, runs: list[_Transfers], x: np.ndarray, y: np.ndarray, lean: np.ndarray, *,
                split: bool, ls_bandwidth: tuple[float | None, float | None]) -> None:
    """The standard errors of the network's parameters that the least squares did not give (their value came
    another way): a bandwidth from transfers in flight or sustained ones, a jackknife over the runs (NaN
    from one run: one run's transfers share its moment's load, no resampling of them says how another run
    would go); a per-connection cap, the least squares' rate it was; a shaper's bucket, half the range of
    the buckets that fit as well (:func:`_burst`'s rule, never under 0.5 % of it: its grid's step); a path's
    first byte found as a median of durations less their transfer, that median's bootstrap error."""
    net = cal.network
    notes = cal.notes
    if net.conn_cap is not None and net.conn_cap == ls_bandwidth[0] and ls_bandwidth[1] is not None:
        cal.uncertainty["conn_cap"] = ls_bandwidth[1]
    if net.bandwidth is not None and "bandwidth" not in cal.uncertainty:
        fb = net.first_byte_s or 0.0
        fb_fast = fb if net.fast_first_byte_s is None else net.fast_first_byte_s
        if net.bandwidth == notes.get("bandwidth_sustained"):
            min_bytes: float = SUSTAINED_MIN_BYTES
        elif "in flight" in str(notes.get("http_fit", "")):
            min_bytes = BURST_SMALL_BYTES + 1
        else:
            min_bytes = 0.0
        if min_bytes:
            cal.uncertainty["bandwidth"] = _jackknife(
                runs, lambda sub: _rate_in_flight(sub, fb, fb_fast, min_bytes)[0], min_bytes)
    if net.burst:
        lo, hi = notes.get("burst_tied", (net.burst, net.burst))
        cal.uncertainty["burst"] = max((hi - lo) / 2, 0.005 * net.burst)
    if net.burst:  # each path's latency, the median _burst found with the bucket
        lat_se = notes.get("burst_latency_se") or []
        for name, se in zip(("first_byte_s", "fast_first_byte_s"), lat_se, strict=False):
            if getattr(net, name) is not None and name not in cal.uncertainty:
                cal.uncertainty[name] = float("nan") if se is None else se
    if net.bandwidth and len(x) and not net.burst:
        resid = y - x / net.bandwidth
        for name, group in (("first_byte_s", ~lean if split else np.ones(len(x), dtype=bool)),
                            ("fast_first_byte_s", lean if split else np.zeros(len(x), dtype=bool))):  # fmt: skip
            if getattr(net, name) is not None and name not in cal.uncertainty and int(group.sum()) > 1:
                cal.uncertainty[name] = _median_se(resid[group])


def _jackknife(runs: list[_Transfers], estimate: Any, min_bytes: float) -> float:
    """The leave-one-run-out standard error of ``estimate(runs)`` over the runs that have a transfer of at
    least ``min_bytes`` (NaN with fewer than two such runs)."""
    used = [r for r in runs if (r[2] >= min_bytes).any()]
    if len(used) < 2:
        return float("nan")
    values = [estimate(used[:i] + used[i + 1 :]) for i in range(len(used))]
    vals = np.array([v for v in values if v is not None], dtype=float)
    if len(vals) < 2:
        return float("nan")
    n = len(vals)
    return float(np.sqrt((n - 1) / n * np.sum((vals - vals.mean()) ** 2)))


#: one run's requests, by start: starts, ends, body bytes, sent over the fast path
_Transfers = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_TWO_PATHS = "isolated requests (a latency per path: httpx, lean)"
#: the per-path fit's slope must be this many standard errors above 0 to give the bandwidth
SLOPE_MIN_T = 2.0


def _slope_is_fixed(a: np.ndarray, y: np.ndarray, coef: np.ndarray, sizes: np.ndarray) -> bool:
    """Whether the isolated requests' sizes fix the slope: some body is larger than
    :data:`BURST_SMALL_BYTES` (below that the transfer hides in the latency's noise) and the slope is
    positive and :data:`SLOPE_MIN_T` standard errors from 0. With a first byte per path (``a`` has three
    columns) each path's intercept is free, so only the spread of sizes inside a path tells the rate, and a
    real run's may have little: httpx's isolated requests are manifests, the fast path's spans of one size;
    each path's scatter is its own (httpx's tiny requests scatter by milliseconds on a busy host and say
    nothing of the rate). An eager pull's isolated requests are only the manifest and the config (its blobs
    download at once): fitted alone they gave 166 KB/s, which then became a per-connection cap and simulated
    the eager benchmark image's 4 s pull in 1,500 s."""
    if coef[-1] <= 0 or not (sizes > BURST_SMALL_BYTES).any():
        return False
    x, resid = a[:, -1], y - a @ coef
    sxx = var_num = 0.0
    groups = (a[:, 0] > 0, a[:, 1] > 0) if a.shape[1] == 3 else (np.ones(len(x), dtype=bool),)
    for g in groups:
        if int(g.sum()) < 2:
            continue
        dev = float(np.sum((x[g] - x[g].mean()) ** 2))
        sxx += dev
        var_num += dev * float(np.sum(resid[g] ** 2)) / (int(g.sum()) - 1)
    if sxx <= 0:
        return False
    return coef[-1] >= SLOPE_MIN_T * np.sqrt(var_num) / sxx


def _paths_given_rate(
    cal: Calibration, runs: list[_Transfers], x: np.ndarray, y: np.ndarray, lean: np.ndarray, *, split: bool
) -> np.ndarray:
    """Where the isolated requests' sizes do not fix the slope: the bandwidth is the bytes that transfers of
    more than :data:`BURST_SMALL_BYTES` moved over the time their bodies were in flight (from their path's
    first byte), and each path's first byte (with ``split``; else the one latency) the median of its
    isolated requests' durations less their transfer at that rate (the two found in turn, each from the
    other, a few rounds from the medians of the durations). Returns the fit's coefficients (httpx's latency,
    the fast path's if ``split``, seconds per byte); with no such transfer, the medians and no slope (the
    bandwidth is then left unfitted)."""
    groups = (~lean, lean) if split else (np.ones(len(x), dtype=bool),)
    lats = [float(np.median(y[g])) for g in groups]
    per_byte = 0.0
    for _ in range(4):
        rate, n = _rate_in_flight(runs, lats[0], lats[-1], BURST_SMALL_BYTES + 1)
        if rate is None:
            break
        per_byte = 1 / rate
        lats = [float(np.median((y - x * per_byte)[g])) for g in groups]
        cal.network.bandwidth = rate
        cal.samples["http_in_flight"] = n
    if per_byte:
        cal.notes["http_fit"] = (f"isolated requests; transfers of > {BURST_SMALL_BYTES >> 10} KiB in flight "
                                 "(bandwidth: the isolated sizes did not fix it)")  # fmt: skip
    return np.array([*lats, per_byte])


def _rate_in_flight(
    runs: list[_Transfers], fb_slow: float, fb_fast: float, min_bytes: float
) -> tuple[float | None, int]:
    """The bytes moved (by every transfer) while any transfer of at least ``min_bytes`` was moving bytes
    (after its path's first-byte time), over that time; and how many such transfers there were (None, 0
    without any). A transfer partly inside that time counts in proportion (its rate taken as even)."""
    moved = busy = 0.0
    count = 0
    for starts, ends, nbytes, lean in runs:
        big = nbytes >= min_bytes
        if not big.any():
            continue
        first = starts + np.where(lean, fb_fast, fb_slow)
        segs = _union(first[big], ends[big])
        busy += sum(b - a for a, b in segs)
        count += int(big.sum())
        for s0, e0, nb in zip(first, ends, nbytes, strict=True):
            if nb <= 0 or e0 <= s0:
                continue
            inside = sum(max(0.0, min(e0, b) - max(s0, a)) for a, b in segs)
            moved += nb * inside / (e0 - s0)
    if busy <= 0 or moved <= 0:
        return None, count
    return moved / busy, count


def _sustained_rate(cal: Calibration, runs: list[_Transfers]) -> tuple[float | None, int]:
    """:func:`_rate_in_flight` of transfers of :data:`SUSTAINED_MIN_BYTES` and more, each after its path's
    fitted first byte (the fast path's is httpx's where it has none of its own)."""
    fb = cal.network.first_byte_s or 0.0
    fb_fast = fb if cal.network.fast_first_byte_s is None else cal.network.fast_first_byte_s
    return _rate_in_flight(runs, fb, fb_fast, SUSTAINED_MIN_BYTES)


def _two_paths(x: np.ndarray, lean: np.ndarray) -> bool:
    """Whether the isolated requests allow a first-byte time per path and one bandwidth: each path has
    :data:`MIN_PATH_SAMPLES` requests and the sizes vary within at least one of them (else the slope would
    come from the difference between the paths, which is the latency being told apart)."""
    if min(int(lean.sum()), int((~lean).sum())) < MIN_PATH_SAMPLES:
        return False
    return len(set(x[lean].tolist())) >= 2 or len(set(x[~lean].tolist())) >= 2


def _new_connections(cal: Calibration, residual: np.ndarray, lean: np.ndarray, pooled: np.ndarray) -> None:
    """``notes["fast_new_conn_s"]``: how much later a fast-path request's first byte came on a new connection
    than on a pooled one (the medians of their residuals; each side needs :data:`MIN_PATH_SAMPLES`)."""
    new, old = lean & ~pooled, lean & pooled
    if min(int(new.sum()), int(old.sum())) < MIN_PATH_SAMPLES:
        return
    cal.notes["fast_new_conn_s"] = float(np.median(residual[new]) - np.median(residual[old]))
    cal.samples["http_isolated_fast_new"] = int(new.sum())


#: transfers at least this large measure the link's sustained rate (a shaper's burst is small beside them)
SUSTAINED_MIN_BYTES = 8 << 20
#: large transfers at once this much faster than an isolated request make the latter a per-connection cap
CONN_CAP_MARGIN = 1.15
#: … and no more than this much faster, a shared link (a shaper's, whose bucket is looked for)
SHAPED_MARGIN = 1.05


def _sustained(cal: Calibration, runs: list[_Transfers], *, two_paths: bool = False) -> bool:
    """Where large transfers ran, the link's rate is the bytes moved (by every transfer) while any large one
    was moving bytes (after its first-byte latency, its path's), over that time: a shaper that lets small
    requests through in a burst (the netlab proxy's token bucket: 20 ms of data) makes isolated requests look
    faster than the link goes for a whole blob. The lower of the two becomes ``bandwidth``; ``notes`` keep
    both. A transfer partly inside that time counts in proportion (its rate taken as even).

    Where the large transfers went more than :data:`CONN_CAP_MARGIN` × faster than one request alone
    (unshaped loopback: 1.34 GB/s for three blob downloads at once, 0.86 GB/s for one), one connection is
    what limited the isolated requests: ``conn_cap`` is their rate and ``bandwidth`` the sustained one (a
    lower bound of the link's: the last large transfer's tail, alone, ran at the cap).

    True where a shaper's bucket may show in the isolated requests (:func:`_burst`): the sustained rate was
    below the isolated requests' (it became ``bandwidth``), or, with a latency per path (a bucket then
    lowers the fast path's latency more than the slope, :func:`_burst`), no more than
    :data:`SHAPED_MARGIN` × above it (one shared link, not one connection, limited both)."""
    if cal.network.first_byte_s is None:
        return False
    rate, n_large = _sustained_rate(cal, runs)
    if rate is None:
        return False
    cal.notes["bandwidth_isolated"] = cal.network.bandwidth
    cal.notes["bandwidth_sustained"] = rate
    cal.samples["http_sustained"] = n_large
    big_mib = SUSTAINED_MIN_BYTES >> 20
    if cal.network.bandwidth is None or rate < cal.network.bandwidth:
        cal.network.bandwidth = rate
        cal.notes["http_fit"] += f"; transfers of >= {big_mib} MiB (bandwidth)"
        return True
    if rate > CONN_CAP_MARGIN * cal.network.bandwidth:
        cal.network.conn_cap, cal.network.bandwidth = cal.network.bandwidth, rate
        cal.notes["http_fit"] += f" (rate of one connection); transfers of >= {big_mib} MiB (bandwidth)"
        return False
    return two_paths and rate <= SHAPED_MARGIN * cal.network.bandwidth


#: isolated requests this small measure the first-byte latency alone; this large, the burst they got
BURST_SMALL_BYTES = 64 << 10
BURST_LARGE_BYTES = 1 << 20
#: buckets whose fits' absolute errors are within this fraction of the best one's fit the data alike
BURST_TIE = 0.01
#: paths' latencies closer than this are as close (seconds; the clocks' and the medians' noise)
GAP_TOLERANCE_S = 20e-6


def _burst(cal: Calibration, nbytes: np.ndarray, secs: np.ndarray, idle: np.ndarray, lean: np.ndarray) -> None:
    """A shaper's token bucket, from isolated requests, where the link (not one connection) set the rate.

    After an idle moment a shaper like the netlab proxy's lets its bucket (20 ms of its rate) through at
    once, so an isolated span fetch of ``n`` bytes takes ``first byte + (n - saved) / bandwidth``, not
    ``n / bandwidth`` — at 1 Gbit a 4 MiB span arrives ~2.5x sooner than the link's rate says. The bucket
    refills at the link's rate, so what a request saves is ``min(burst, bandwidth * idle, n)`` (``idle``: the
    silence before it). With ``bandwidth`` fixed, ``burst`` and a first-byte time per path (``lean`` marks
    the fast path's requests; all False: one path) are fitted jointly to every isolated request by least
    absolute error: for each candidate bucket, each path's latency is the median of its requests' durations
    less their transfer; the latencies found with the bucket chosen replace the least-squares ones. None
    when fewer than three requests are of at most :data:`BURST_SMALL_BYTES` or of at least
    :data:`BURST_LARGE_BYTES`, or when no bucket fits better than none.

    A bucket is told apart from a path's latency only where that path's sizes (or refills) straddle it: a
    request larger than the bucket after a full refill takes ``latency + (n - burst) / bandwidth``, as one
    with a latency ``burst / bandwidth`` lower and no bucket does. Real runs have exactly that: httpx's
    isolated requests are manifests of a few KiB, the fast path's spans of 0.8-2 MiB; at 100 Mbit + 20 ms
    (a 250 KB bucket) every bucket from 0 to 250 KB fits within 0.05 % (the fast path's latency 4 to 24 ms),
    beyond it the fit worsens. Where two paths leave the choice open (errors within :data:`BURST_TIE` of the
    least), the bucket taken is the one that leaves the paths' latencies closest: a shaper's bucket spares
    every request alike, where the paths differ by the client's cost of a request (1.2 ms on loopback)."""
    small = nbytes <= BURST_SMALL_BYTES
    large = nbytes >= BURST_LARGE_BYTES
    if int(small.sum()) < 3 or int(large.sum()) < 3 or not cal.network.bandwidth:
        return
    bw = cal.network.bandwidth
    groups = [g for g in (~lean, lean) if g.any()]
    # a request cannot save more than the bucket held (it refills at the link's rate) nor than its own size
    limit = np.minimum(bw * np.maximum(0.0, idle), nbytes)
    top = float(limit.max())
    if top <= 0:
        return

    def cost(c: float) -> tuple[float, list[float]]:
        resid = secs - (nbytes - np.minimum(c, limit)) / bw
        lats = [float(np.median(resid[g])) for g in groups]
        return float(sum(np.abs(resid[g] - lat).sum() for g, lat in zip(groups, lats, strict=True))), lats

    def choose(cands: np.ndarray) -> float:
        fits = [cost(float(c)) for c in cands]
        errors = np.array([e for e, _ in fits])
        if len(groups) == 1:
            return float(cands[int(np.argmin(errors))])
        near = np.flatnonzero(errors <= errors.min() * (1 + BURST_TIE) + 1e-12)
        gaps = np.array([abs(fits[i][1][1] - fits[i][1][0]) for i in near])
        closest = near[gaps <= gaps.min() + GAP_TOLERANCE_S]
        return float(cands[closest[0]])  # the smallest bucket that leaves the paths that close

    grid = np.concatenate(([0.0], limit, np.geomspace(max(1.0, top * 1e-4), top, 1024)))
    best = choose(np.unique(grid[grid >= 0]))
    if best > 0:  # sharpen: each request's own saving at that bucket's latencies, and a fine grid about it
        _, lats = cost(best)
        path_lat = np.where(lean, lats[-1], lats[0])
        implied = nbytes - bw * (secs - path_lat)
        near = np.concatenate((implied, np.linspace(best / 1.01, best * 1.01, 65)))
        near = near[(near > best / 1.02) & (near < min(top, best * 1.02) + 1e-9)]
        best = choose(np.unique(np.append(near, best)))
    err, lats = cost(best)
    none_err, none_lats = cost(0.0)
    if best <= 0:
        return
    if len(lats) == 1:
        if none_err <= err:  # "no bucket" fits as well: keep none
            return
    else:
        as_close = abs(lats[1] - lats[0]) >= abs(none_lats[1] - none_lats[0]) - GAP_TOLERANCE_S
        if as_close and none_err <= err * (1 + BURST_TIE):  # no bucket fits as well, the paths as close
            return
    cal.network.burst = best
    # the buckets that fit as well by the same rule (errors within BURST_TIE, paths as close): its spread
    cands = np.unique(np.concatenate((grid[grid >= 0], [best])))
    fits = [cost(float(c)) for c in cands]
    errors = np.array([e for e, _ in fits])
    tied = errors <= err * (1 + BURST_TIE) + 1e-12
    if len(lats) == 2:
        gap = abs(lats[1] - lats[0])
        tied &= np.array([abs(f[1][1] - f[1][0]) <= gap + GAP_TOLERANCE_S for f in fits])
    cal.notes["burst_tied"] = [float(cands[tied].min()), float(cands[tied].max())]
    resid = secs - (nbytes - np.minimum(best, limit)) / bw  # each path's latency is the median of these
    ses = [_median_se(resid[g]) for g in groups]
    cal.notes["burst_latency_se"] = [None if v != v else v for v in ses]
    cal.samples["http_burst"] = int(large.sum())
    cal.network.first_byte_s = max(0.0, lats[0])  # httpx's (or the one path's)
    cal.notes["burst_latency_s"] = lats[0]
    if len(lats) == 2:
        cal.network.fast_first_byte_s = max(0.0, lats[1])
        cal.notes["fast_burst_latency_s"] = lats[1]


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
    """The detail ``key`` of each event (None/NA where an event has none), as object values; ``key`` must be
    one :data:`EVENT_DETAILS` declares."""
    if key not in _DETAIL_KEYS:
        raise KeyError(f"{key}: an event detail the fit reads must be declared in EVENT_DETAILS")
    values = detail(frame, key).astype(object)
    return values.where(values.notna(), None)


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
        cal.host.decompress_rate[str(name)] = float(rates.median())
        cal.samples[f"decompress_{name}"] = len(rates)
        cal.uncertainty[f"decompress_rate.{name}"] = _median_se(rates.to_numpy(dtype=float))


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
        _set_apply(cal, "", own)
    worker = _apply_cost(ap[in_worker])
    if worker is not None:
        _set_apply(cal, "worker_", worker)
        cal.samples["worker_apply"] = int(in_worker.sum())


def _set_apply(cal: Calibration, prefix: str, cost: tuple[np.ndarray, np.ndarray, str | None]) -> None:
    """The fitted apply terms (``prefix`` ``""`` or ``"worker_"``), their errors, and why no fixed cost per
    layer was kept where none was (the slopes are then those of a fit without it, and it is 0)."""
    (layer, per_file, per_byte), se, why = cost
    setattr(cal.host, f"{prefix}apply_per_file_s", float(per_file))
    setattr(cal.host, f"{prefix}apply_per_byte_s", float(per_byte))
    setattr(cal.host, f"{prefix}apply_per_layer_s", float(layer))
    cal.uncertainty.update({f"{prefix}apply_per_file_s": float(se[1]), f"{prefix}apply_per_byte_s": float(se[2])})
    if why is None:
        cal.uncertainty[f"{prefix}apply_per_layer_s"] = float(se[0])
    else:
        cal.warnings[f"{prefix}apply_per_layer_s"] = f"{why}: not fitted, 0 (the slopes fitted without it)"


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


def _apply_cost(ap: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """A fixed cost per layer, per entry and per content byte from ``apply`` events, their bootstrap standard
    errors, and why the fixed cost was left at 0 (None when it was fitted); None below two usable events.

    The fixed cost is fitted (non-negative least squares, intercept and two slopes) only from at least
    :data:`MIN_SAMPLES` ``["apply_layer"]`` distinct layers (sizes): fewer leave no residual to tell an
    intercept from the slopes — three python-pandas layers fit exactly, whatever the intercept. It is kept
    only where it is inside :data:`BOUNDS` and one standard error from 0; otherwise the slopes are fitted
    again without it (never a 3-term fit's slopes with its intercept dropped: those under-predict every
    layer by the intercept)."""
    files = _attr(ap, "entries")
    if files.isna().all():
        files = _attr(ap, "files")
    ap, files = ap[files.notna()], files[files.notna()].astype(float)
    if len(ap) < 2:
        return None
    a = np.vstack([files.to_numpy(dtype=float), ap["bytes"].to_numpy(dtype=float)]).T
    y = (ap["t_end"] - ap["t_start"]).to_numpy()
    distinct = len({(float(f), float(b)) for f, b in a})
    why: str | None
    if distinct < MIN_SAMPLES["apply_layer"]:
        why = f"{distinct} distinct layers, fewer than {MIN_SAMPLES['apply_layer']}"
    else:
        a3 = np.column_stack([np.ones(len(a)), a])
        coef = _nnls(a3, y)
        se = _bootstrap_se(np.column_stack([a3, y]), lambda r: _nnls(r[:, :3], r[:, 3]))
        lo, hi = APPLY_PER_LAYER_BOUNDS
        if not lo < coef[0] <= hi:
            why = f"{coef[0]:.4g} s is outside ({lo:.4g}, {hi:.4g}]"
        elif se[0] >= coef[0]:
            why = f"{coef[0]:.4g} ± {se[0]:.2g} s is not one standard error from 0"
        else:
            return coef, se, None
    se2 = _bootstrap_se(np.column_stack([a, y]), lambda r: np.array(_nnls2(r[:, :2], r[:, 2])))
    return np.array([0.0, *_nnls2(a, y)]), np.array([np.nan, *se2]), why


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
        # each layer's rate is a lower bound (its producer waited whenever apply was slower): the highest is
        # the tightest. A median over a suite's apply-bound layers of small files (122 MB/s) made a held-out
        # image of one 40 MB file decompress-bound in the model and 2-3x slower than real.
        v = np.array(rs)
        cal.host.layer_decompress_rate[name] = float(v.max())
        cal.samples[f"layer_decompress_{name}"] = len(rs)
        cal.uncertainty[f"layer_decompress_rate.{name}"] = (
            float(_bootstrap_se(v[:, None], lambda r: r.max())) if len(v) > 1 else np.nan)
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
        _median(cal, "apply_worker_s", "apply_worker", waits)


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
        _median(cal, "pull_finish_s", "pull_finish", gaps["sequential"])
    if gaps["parallel"]:
        cal.host.apply_worker_exit_s = max(0.0, float(np.median(gaps["parallel"])) - (seq or 0.0))
        cal.samples["apply_worker_exit"] = len(gaps["parallel"])
        se = [_median_se(np.array(g)) for g in (gaps["parallel"], gaps["sequential"]) if g]
        cal.uncertainty["apply_worker_exit_s"] = float(np.sqrt(sum(v * v for v in se)))


# --- what the data can tell ---------------------------------------------------------------------------

#: the fewest samples a fit takes (fewer: the parameters are left unfitted, with a warning)
MIN_SAMPLES = {"fuse_read": 8, "apply_layer": 5}
#: physical bounds per parameter (seconds, bytes/s); a fit outside them is a sign of data that cannot tell
#: the parameter (1.38 MB/s for a copy through FUSE from 3 reads), never a value to simulate with
BOUNDS: dict[str, tuple[float, float]] = {
    "bandwidth": (1e5, 1e11), "conn_cap": (1e5, 1e11), "first_byte_s": (0.0, 10.0), "fast_first_byte_s": (0.0, 10.0),
    # a FUSE copy slower than 50 MB/s is reads whose cost is not the copy: a quick suite on a loaded host gave
    # 13 ± 11 MB/s from 54 reads of one size (requests and bytes in proportion), 1 s for 13 MB held out
    "fuse_op_s": (0.0, 0.05), "fuse_read_rate": (50e6, 1e11), "header_verify_s": (0.0, 0.05),
    "fuse_meta_s": (0.0, 0.5), "syscall_s": (0.0, 0.5), "span_cache_rate": (1e6, 1e11), "mount_s": (0.0, 60.0),
    "mount_first_s": (0.0, 60.0), "overlay_mount_s": (0.0, 10.0), "start_s": (0.0, 60.0),
    # a shaper's bucket: at least a packet's worth, at most a GB (a bucket that large is no shaping at all)
    "burst": (1500.0, 1e9),
}  # fmt: skip
#: an apply's fixed cost per layer (seconds): above 0 (else there is none to keep), at most a second; checked
#: where it is fitted (:func:`_apply_cost`), since its slopes are fitted again without it when it fails
APPLY_PER_LAYER_BOUNDS = (0.0, 1.0)
#: a fitted zero is a value only where the bootstrap agrees to within this (seconds): else the fit hit its bound
ZERO_SE = 1e-9
#: bootstrap resamples behind an uncertainty
BOOTSTRAP = 200


def _part(cal: Calibration, name: str) -> NetworkFit | HostFit:
    """The part of ``cal`` a fitted parameter called ``name`` belongs to."""
    if name in NETWORK_KEYS:
        return cal.network
    if name in _HOST_FIELDS:
        return cal.host
    raise KeyError(f"{name}: not a fitted parameter")


def _unidentified(cal: Calibration, name: str, why: str) -> None:
    """Leave ``name`` unfitted and say why and what stands in for it (:meth:`Calibration.params` keeps the
    base parameters' value: the host profile's, or :class:`HostParams`/``NetworkParams``' default)."""
    setattr(_part(cal, name), name, None)
    cal.uncertainty.pop(name, None)
    cal.warnings[name] = f"{why}: not fitted, the base parameters' {name} is used"


def _vet(cal: Calibration) -> None:
    """Every fitted parameter against its bounds and its uncertainty: a value outside :data:`BOUNDS`, or not
    one standard error away from 0 (a zero the bootstrap does not agree on, a rate whose cost per byte is
    lost in the noise), is a parameter the data cannot identify (:func:`_unidentified`)."""
    for name, (lo, hi) in BOUNDS.items():
        value = getattr(_part(cal, name), name)
        if value is None:
            continue
        se = cal.uncertainty.get(name)
        if not lo <= value <= hi:
            _unidentified(cal, name, f"{value:.4g} is outside [{lo:.4g}, {hi:.4g}]")
        elif se is not None and se == se and (se > ZERO_SE if value == 0 else se >= abs(value)):
            _unidentified(cal, name, f"{value:.4g} ± {se:.2g} is not one standard error from 0")
    # fitted from one sample: a value, but no spread to tell its uncertainty (NaN in ``uncertainty``)
    single = sorted(k for k, v in cal.uncertainty.items() if v is None or v != v)
    if single:
        cal.notes["uncertainty_unknown"] = single


def _bootstrap_se(rows: np.ndarray, estimate: Any, n: int = BOOTSTRAP) -> np.ndarray:
    """The standard error of ``estimate(rows)`` (an array) over ``n`` resamples of the rows (seeded: the same
    data give the same uncertainty)."""
    rng = np.random.default_rng(0)
    draws = np.array([estimate(rows[rng.integers(0, len(rows), len(rows))]) for _ in range(n)], dtype=float)
    return draws.std(axis=0, ddof=1)


def _median(cal: Calibration, name: str, key: str, values: list[float]) -> None:
    """``name`` the median of ``values``, its bootstrap standard error (NaN from one sample)."""
    v = np.asarray(values, dtype=float)
    setattr(_part(cal, name), name, float(np.median(v)))
    cal.samples[key] = len(v)
    cal.uncertainty[name] = _median_se(v)


def _median_se(values: np.ndarray) -> float:
    """The bootstrap standard error of the median of ``values`` (NaN from one value)."""
    return float(_bootstrap_se(values[:, None], lambda r: np.median(r))) if len(values) > 1 else np.nan


def _mean(cal: Calibration, name: str, key: str, values: np.ndarray) -> None:
    """``name`` the mean of ``values``, its standard error (NaN from one sample)."""
    setattr(_part(cal, name), name, float(values.mean()))
    cal.samples[key] = len(values)
    cal.uncertainty[name] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else np.nan


def _ls_se(a: np.ndarray, y: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """The least-squares coefficients' standard errors (NaN where the rows do not exceed the columns)."""
    n, k = a.shape
    if n <= k:
        return np.full(k, np.nan)
    resid = y - a @ coef
    cov = np.linalg.pinv(a.T @ a) * float(resid @ resid) / (n - k)
    return np.sqrt(np.clip(np.diag(cov), 0.0, None))


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
