"""Simulate a fleet pulling one image: :func:`simulate_fleet` → :class:`FleetRun` (tidy DataFrames).

Each host pool's kind of host is simulated once by the single-host simulator (:mod:`.program`); the engine
(:mod:`.engine`) runs the fleet's groups of identical hosts. Results are per group (one row for ``m``
identical hosts, so 10,000 hosts need not make 10,000 rows, let alone one per event), per host on demand,
aggregated into percentiles weighted by group size, and as full request events for the sampled hosts.

Times are seconds from a host's own arrival (``ready_s``, ``workload_done_s``, ``total_s``, as in the
single-host summary); ``bytes_fetched`` and ``requests`` are per host (requests count 429 answers and
requests to peers too; ``peer_bytes`` of the bytes came from peers). Hosts that gave up (429s past the retry
budget) have no times and are left out of the percentiles (``failed_hosts`` counts them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ...errors import SimulationError
from ..image import ImageModel
from ..run import MODES
from ..workload import Access
from ..world import SimParams
from .engine import Engine, Group
from .model import FleetSpec
from .program import MILESTONES, HostProgram, host_program

if TYPE_CHECKING:
    import pandas as pd

#: the percentiles :meth:`FleetRun.summary` reports
PERCENTILES = (50, 90, 99)


@dataclass
class FleetRun:
    """The outcome of one fleet simulation."""

    mode: str
    spec: FleetSpec
    groups: pd.DataFrame
    events: pd.DataFrame
    programs: list[HostProgram]
    checks: dict[str, Any] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in self.summary().items())
        return f"<table><caption>simulated fleet, {self.mode}</caption>{rows}</table>"

    def hosts(self) -> pd.DataFrame:
        """One row per host (expands the groups; fine up to a few hundred thousand hosts)."""
        g = self.groups.explode("host_ids").rename(columns={"host_ids": "host"})
        return g.drop(columns=["members"]).astype({"host": int}).sort_values("host").reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        """Percentiles over hosts (weighted by group size) of each milestone, and totals."""
        return self._aggregate(self.groups)

    def by_pool(self) -> pd.DataFrame:
        """:meth:`summary` per host pool: one tidy row per pool (``pool`` column first)."""
        import pandas as pd

        rows = [{"pool": int(pool), **self._aggregate(g)} for pool, g in self.groups.groupby("pool", sort=True)]
        return pd.DataFrame(rows)

    def _aggregate(self, g: pd.DataFrame) -> dict[str, Any]:
        ok = g[g.failed.isna()]
        out: dict[str, Any] = {"mode": self.mode, "hosts": int(g.members.sum()), "groups": len(g),
                               "failed_hosts": int(g.members[g.failed.notna()].sum())}  # fmt: skip
        for name in MILESTONES:
            for p in PERCENTILES:
                out[f"{name[:-2]}_p{p}_s"] = _weighted_percentile(ok[name].tolist(), ok.members.tolist(), p)
        out["bytes_fetched"] = int((g.bytes_fetched * g.members).sum())
        out["registry_bytes"] = out["bytes_fetched"] - int((g.peer_bytes * g.members).sum())
        out["requests"] = int((g.requests * g.members).sum())
        out["responses_429"] = int((g.responses_429 * g.members).sum())
        return out


def _weighted_percentile(values: list[float], weights: list[int], p: float) -> float | None:
    """The nearest-rank percentile ``p`` of ``values`` each repeated ``weights`` times."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return None
    rank = max(1, -(-p * total // 100))  # ceil(p/100 · n)
    seen = 0
    for v, w in pairs:
        seen += w
        if seen >= rank:
            return float(v)
    return float(pairs[-1][0])


def simulate_fleet(
    image: ImageModel,
    mode: str,
    spec: FleetSpec,
    *,
    workload: list[Access] | None = None,
    params: SimParams | None = None,
    flows: str = "auto",
) -> FleetRun:
    """Simulate ``spec.hosts`` hosts pulling ``image`` in ``mode`` (then the workload) through one registry.

    ``flows="dense"`` solves every flow in flight at every instant (the reference; slow past a few hundred
    hosts); ``auto`` keeps flows per group where the topology allows (the same rates, see :mod:`.star`)."""
    import pandas as pd

    if mode not in MODES:
        raise SimulationError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if spec.hosts < 1:
        raise SimulationError("a fleet needs at least one host")
    params = params or SimParams()
    params = replace(params, fine_events=False, record=False)
    programs: dict[tuple[float, tuple[int, ...]], HostProgram] = {}
    rng = random.Random(spec.seed)
    arrivals = spec.arrivals.times(spec.hosts, rng)
    engine = Engine(spec, conn_cap=params.network.conn_cap, flows=flows)
    sample = frozenset(spec.sample_hosts)
    host = 0
    pool_programs = []
    for pi, pool in enumerate(spec.pools):
        nic = float(pool.nic or params.network.bandwidth)
        key = (nic, tuple(sorted(pool.held)))
        if key not in programs:
            programs[key] = host_program(image, mode, params=params, nic=nic, workload=workload, held=key[1])
        prog = programs[key]
        pool_programs.append(prog)
        deps = prog.dependents()
        ids = list(range(host, host + pool.count))
        host += pool.count
        if spec.group:  # hosts of a pool arriving at the same instant are one group
            by_t: dict[float, list[int]] = {}
            for h in ids:
                by_t.setdefault(arrivals[h], []).append(h)
            batches = list(by_t.items())
        else:
            batches = [(arrivals[h], [h]) for h in ids]
        for t0, members in batches:
            g = Group(len(engine.groups), pi, prog, deps, members, nic, t0, any(h in sample for h in members),
                      params.network.conn_cap)  # fmt: skip
            engine.add_group(g)
    groups = engine.run()
    rows = [_group_row(g) for g in groups if g.m > 0]
    frame = pd.DataFrame(rows).sort_values(["arrival_s", "gid"]).reset_index(drop=True)
    events = _events(groups, sample)
    work = engine.star.touched if engine.star is not None else engine.work
    checks = {"recomputes": engine.recomputes, "max_flows": engine.max_flows, "rate_work": work,
              "max_egress_load": engine.max_egress_load, "programs": len(programs)}  # fmt: skip
    return FleetRun(mode, spec, frame, events, pool_programs, checks)


def _group_row(g: Group) -> dict[str, Any]:
    row: dict[str, Any] = {"gid": g.gid, "pool": g.pool, "members": g.m, "arrival_s": g.arrival}
    for name in MILESTONES:
        row[name] = g.milestones.get(name) if not g.failed else None
    row["bytes_fetched"] = g.bytes
    row["peer_bytes"] = g.peer_bytes
    row["requests"] = g.requests
    row["responses_429"] = g.n429
    row["failed"] = g.failed
    row["host_ids"] = list(g.hosts)
    return row


def _events(groups: list[Group], sample: frozenset[int]) -> pd.DataFrame:
    """Every request of each sampled host: one ``http_request`` row per completed request (its first byte and
    end, bytes) and one ``http_429`` row per rejected attempt; times from the host's arrival."""
    import pandas as pd

    rows = []
    for g in groups:
        if g.events is None:
            continue
        reqs = g.prog.requests
        for h in g.hosts:
            if h not in sample:
                continue
            for e in g.events:
                if e[0] == "send" and e[4] == 429:
                    _, k, t, attempt, status = e
                    rows.append((h, "http_429", k, reqs[k].what, reqs[k].layer, t - g.arrival, t - g.arrival, 0,
                                 attempt, status))  # fmt: skip
                elif e[0] == "done":
                    _, k, t_first, t_end, nbytes = e
                    rows.append((h, "http_request", k, reqs[k].what, reqs[k].layer, t_first - g.arrival,
                                 t_end - g.arrival, nbytes, None, 200))  # fmt: skip
    cols = ["host", "kind", "request", "what", "layer", "t_start", "t_end", "bytes", "attempt", "status"]
    return pd.DataFrame(rows, columns=cols).sort_values(["host", "t_start", "request"]).reset_index(drop=True)


__all__ = ["PERCENTILES", "FleetRun", "simulate_fleet"]
