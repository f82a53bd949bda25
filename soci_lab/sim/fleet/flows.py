"""Max-min fair rates of flows over shared links, by progressive filling.

A flow crosses a set of links (the registry's egress, the host's NIC, a peer's uplink); a link carries at
most its capacity. Max-min fairness (Bertsekas & Gallager, *Data Networks* §6.5.2): every flow's rate
rises together from zero; when a link fills, the flows crossing it freeze at the rate they reached (that
link is their bottleneck) and the others keep rising; a flow may also stop at a cap of its own (a
per-connection limit). The result is the unique allocation in which no flow can go faster without
slowing a flow that is no faster than it.

A flow may stand for ``mult`` identical flows (the same route, the same rate): the fleet engine groups
identical hosts, and a group of ``m`` hosts' request is one flow of multiplicity ``m`` on links whose
capacities are ``m`` times a host's (its NIC) or shared (the registry). By symmetry the max-min allocation
gives identical flows identical rates, so the grouped solution is exactly the ungrouped one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: relative slack under which a link counts as full
_EPS = 1e-12


def max_min_rates(
    routes: Sequence[Sequence[int]],
    capacity: Sequence[float],
    *,
    mult: Sequence[float] | None = None,
    caps: Sequence[float] | None = None,
) -> list[float]:
    """The max-min fair rate of each flow (per member, for a flow of multiplicity ``mult``).

    ``routes[f]``: indices into ``capacity`` of the links flow ``f`` crosses (no link twice); ``caps[f]``: the
    flow's own rate limit (inf: none). A flow crossing no link and with no cap gets ``inf``.
    """
    n = len(routes)
    m = [1.0] * n if mult is None else [float(x) for x in mult]
    cap = [float("inf")] * n if caps is None else [float(c) for c in caps]
    rate = [0.0] * n
    rem = [float(c) for c in capacity]
    load = [0.0] * len(rem)  # sum of multiplicities of the unfrozen flows on each link
    users: list[list[int]] = [[] for _ in rem]
    active: set[int] = set()
    for f, route in enumerate(routes):
        if m[f] <= 0:
            continue
        if not route and cap[f] == float("inf"):
            rate[f] = float("inf")
            continue
        active.add(f)
        for link in route:
            load[link] += m[f]
            users[link].append(f)
    level = 0.0
    while active:
        delta = float("inf")
        for link, w in enumerate(load):
            if w > 0:
                d = rem[link] / w
                if d < delta:
                    delta = d
        for f in active:
            d = cap[f] - level
            if d < delta:
                delta = d
        delta = max(delta, 0.0)
        level += delta
        frozen: list[int] = []
        for link, w in enumerate(load):
            if w > 0:
                rem[link] -= delta * w
                if rem[link] <= _EPS * max(1.0, capacity[link]):
                    rem[link] = 0.0
                    frozen.extend(f for f in users[link] if f in active)
        frozen.extend(f for f in active if cap[f] < math.inf and cap[f] - level <= _EPS * max(1.0, cap[f]))
        if not frozen:  # cannot happen: the smallest step fills a link or reaches a cap
            raise AssertionError("progressive filling made no progress")
        for f in frozen:
            if f in active:
                active.discard(f)
                rate[f] = min(level, cap[f])
                for link in routes[f]:
                    load[link] -= m[f]
                    if load[link] < 1e-9:
                        load[link] = 0.0
    return rate


def star_level(egress: float, bound: np.ndarray, weight: np.ndarray) -> float:
    """The fair level of one shared link (the registry's egress) whose flow classes are each bounded elsewhere.

    Class ``j`` stands for ``weight[j]`` unit flows (a group's flows times its hosts) that may each go no
    faster than ``bound[j]`` (a group of ``m`` hosts with ``n`` flows each on NICs of rate ``c``: ``c / n``,
    or a per-connection cap if lower). Every flow crosses the egress and its own class's bound, so the
    max-min rates are ``min(level, bound[j])`` with ``level`` from water-filling in ascending ``bound``
    order — the same allocation :func:`max_min_rates` gives this topology (a test holds them together), in
    ``O(k log k)`` for ``k`` classes instead of one pass over every link per bottleneck. ``inf``: the egress
    is not a bottleneck.
    """
    if len(bound) == 0:
        return math.inf
    order = np.argsort(bound, kind="stable")
    b = bound[order]
    w = weight[order]
    wb = w * b
    before = np.cumsum(wb) - wb  # capacity taken by the classes bounded below class j
    after = np.cumsum(w[::-1])[::-1]  # flows from class j up
    level = (egress - before) / after
    ok = np.flatnonzero(level <= b)
    return float(level[ok[0]]) if len(ok) else math.inf


__all__ = ["max_min_rates", "star_level"]
