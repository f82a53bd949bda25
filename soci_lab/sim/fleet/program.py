"""A host's pull as a request program, taken from the single-host simulator (no second host model).

The fleet engine does not model a host's cores, disk, FUSE or span cache again. It runs the single-host
simulator (:func:`soci_lab.sim.simulate`) once per kind of host — mode, host parameters and calibration,
its NIC as the network, the layers it already holds — and reads the run's ``http_request`` events as a
program: each request waits for the request whose end came last before it started (its *predecessor*, or
the pull's start) plus the host-side time between the two (the *gap*: decompression, apply, FUSE, the
workload's think time, all priced by the single-host model's formulas and calibration), then pays its
first-byte latency and moves its body. ``workload_done`` and ``total`` follow their last request the same
way; ``ready`` is a join: the mount is ready when every layer is prepared, so it waits for *every* request
that ended before it in the single-host run (the index, the zTOCs, the small layers fetched whole, their
header reads), then the gap after the last of them. (With one predecessor only, a small request of one
layer that happened to end last let ``ready`` pass before another layer's download slowed by the egress.)
In the fleet the network parts stretch (shared egress, rate limits, service times); the host-side gaps are
kept.

Assumptions, stated: a gap does not shrink or grow with the network (work that overlapped a download in the
single-host run, such as a layer applied while it streams, is charged after the download it followed);
requests keep their single-host order, byte counts and count (exact per host); slow start is not
modelled in the fleet.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from ...errors import SimulationError
from ..image import ImageModel
from ..run import simulate
from ..workload import Access
from ..world import SimParams

#: the milestones a program ends with, as the single-host summary names them
MILESTONES = ("ready_s", "workload_done_s", "total_s")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request of a host's pull: ``nbytes`` of body after ``latency`` seconds of first-byte cost
    (RTT, the registry's per-request overhead, a redirect hop), started ``gap`` seconds after request
    ``pred`` ended (-1: after the pull started)."""

    nbytes: int
    pred: int
    gap: float
    latency: float
    what: str
    layer: str | None = None


@dataclass(frozen=True)
class HostProgram:
    """A host's requests in start order, its milestones as ``name → (pred, gap)``, and the single-host run's
    summary (the host alone on its NIC); ``joins``: milestones that wait for several requests (``name →`` the
    requests; ``gap`` then counts from the last of them to end)."""

    requests: tuple[Request, ...]
    milestones: dict[str, tuple[int, float]]
    single: dict[str, Any] = field(default_factory=dict)
    joins: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(r.nbytes for r in self.requests)

    def items(self) -> list[tuple[str, str, int, int] | None]:
        """What each request fetches, as content peers could share: ``(layer, what, bytes, n)`` for the
        ``n``-th request of that layer, kind and size (None: no layer — manifests, configs, indexes, which
        peer-to-peer systems leave to the registry). Hosts of different kinds (a warm pool) share an item when
        their programs agree on it, as they do for the layers both fetch."""
        seen: dict[tuple[str, str, int], int] = {}
        out: list[tuple[str, str, int, int] | None] = []
        for r in self.requests:
            if r.layer is None or r.nbytes <= 0:
                out.append(None)
                continue
            key = (r.layer, r.what, r.nbytes)
            seen[key] = n = seen.get(key, -1) + 1
            out.append((*key, n))
        return out

    def dependents(self) -> list[list[int]]:
        """For each request, the requests that wait for it; index ``-1`` of the result: the roots."""
        out: list[list[int]] = [[] for _ in range(len(self.requests) + 1)]
        for k, r in enumerate(self.requests):
            out[r.pred].append(k)
        return out


def without_layers(image: ImageModel, held: frozenset[int] | set[int] | tuple[int, ...]) -> ImageModel:
    """The image as a host that already holds layers ``held`` pulls it: those layers and their files gone.

    Eager pulls skip layers already unpacked (containerd checks each layer's chain ID); a lazy pull finds
    them as local snapshots. Reads of their files then cost what a missing path costs in the single-host
    model (a lookup), a slight under-estimate of a local read.
    """
    held = frozenset(held)
    if not held:
        return image
    bad = [li for li in held if not 0 <= li < len(image.layers)]
    if bad:
        raise SimulationError(f"warm layers {bad} are not layers of {image.name} (it has {len(image.layers)})")
    keep = [li for li in range(len(image.layers)) if li not in held]
    new_index = {old: new for new, old in enumerate(keep)}
    files = [
        type(f)(f.path, new_index[f.layer], f.offset, f.size, f.type, f.header)
        for f in image.files
        if f.layer in new_index
    ]
    prefetch = {new_index[li]: r for li, r in image.prefetch_spans.items() if li in new_index}
    return ImageModel(
        name=image.name, layers=[image.layers[li] for li in keep], files=files, manifest_size=image.manifest_size,
        config_size=image.config_size, index_size=image.index_size, prefetch_spans=prefetch,
        meta=dict(image.meta), image_index_size=image.image_index_size,
    )  # fmt: skip


def host_program(
    image: ImageModel,
    mode: str,
    *,
    params: SimParams,
    nic: float | None = None,
    workload: list[Access] | None = None,
    held: tuple[int, ...] = (),
) -> HostProgram:
    """Run the single-host simulator for one kind of host and read its requests as a :class:`HostProgram`.

    ``nic``: the host's network rate in bytes/s (None: ``params.network.bandwidth``); ``held``: layer indices
    the host already holds (a warm node).
    """
    from dataclasses import replace

    if nic is not None:
        params = replace(params, network=replace(params.network, bandwidth=float(nic), burst=0.0))
    run = simulate(without_layers(image, held), mode, workload=workload, params=params)
    return program_of(run.recorder.events, run.summary, params)


def program_of(events: list[Any], summary: dict[str, Any], params: SimParams) -> HostProgram:
    """The program of a single-host run from its events and summary (see the module's docstring)."""
    net = params.network
    reqs = sorted((e for e in events if e.kind == "http_request"), key=lambda e: (e.t_start, e.t_end))
    ends = sorted((e.t_end, k) for k, e in enumerate(reqs))
    end_times = [t for t, _ in ends]
    eps = 1e-12

    def pred_of(t: float, before: int | None) -> tuple[int, float]:
        """The request whose end came last at or before ``t`` (ties: the later-started one), and the gap."""
        i = bisect_right(end_times, t + eps) - 1
        while i >= 0 and before is not None and ends[i][1] >= before:
            i -= 1  # a zero-length request can end when a later one starts; keep the order
        if i < 0:
            return -1, max(0.0, t)
        return ends[i][1], max(0.0, t - end_times[i])

    out: list[Request] = []
    for k, e in enumerate(reqs):
        fast = bool(e.attrs.get("fast"))
        overhead = net.fast_request_overhead if fast and net.fast_request_overhead is not None else net.request_overhead
        latency = net.rtt + overhead + (net.rtt if e.attrs.get("redirected") else 0.0)
        pred, gap = pred_of(e.t_start, k)
        out.append(Request(int(e.bytes), pred, gap, latency, str(e.attrs.get("what", "")), e.layer))
    milestones = {name: pred_of(float(summary[name]), None) for name in MILESTONES}
    ready = float(summary["ready_s"])
    joins = {"ready_s": tuple(k for k, e in enumerate(reqs) if e.t_end <= ready + eps)}
    return HostProgram(tuple(out), milestones, dict(summary), {k: v for k, v in joins.items() if v})


__all__ = ["MILESTONES", "HostProgram", "Request", "host_program", "program_of", "without_layers"]
