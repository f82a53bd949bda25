"""Properties of the max-min solver: feasible, max-min optimal, conserving, and exact for grouped flows."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.sim.fleet.flows import max_min_rates, star_level


@st.composite
def networks(draw: st.DrawFn) -> tuple[list[list[int]], list[float], list[float], list[float]]:
    n_links = draw(st.integers(1, 6))
    capacity = draw(st.lists(st.floats(1.0, 1e9), min_size=n_links, max_size=n_links))
    n_flows = draw(st.integers(1, 12))
    routes = [draw(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=n_links, unique=True))
              for _ in range(n_flows)]  # fmt: skip
    mult = draw(st.lists(st.integers(1, 5).map(float), min_size=n_flows, max_size=n_flows))
    caps = draw(st.lists(st.one_of(st.just(math.inf), st.floats(0.5, 1e9)), min_size=n_flows, max_size=n_flows))
    return routes, capacity, mult, caps


def _loads(routes: list[list[int]], n_links: int, rates: list[float], mult: list[float]) -> list[float]:
    load = [0.0] * n_links
    for route, r, m in zip(routes, rates, mult, strict=True):
        for link in route:
            load[link] += r * m
    return load


@settings(max_examples=300, deadline=None)
@given(networks())
def test_no_link_carries_more_than_its_capacity_and_no_flow_exceeds_its_cap(net) -> None:
    routes, capacity, mult, caps = net
    rates = max_min_rates(routes, capacity, mult=mult, caps=caps)
    for load, cap in zip(_loads(routes, len(capacity), rates, mult), capacity, strict=True):
        assert load <= cap * (1 + 1e-9)
    for r, c in zip(rates, caps, strict=True):
        assert 0 <= r <= c * (1 + 1e-9)


@settings(max_examples=300, deadline=None)
@given(networks())
def test_every_flow_is_capped_or_has_a_saturated_bottleneck_where_it_is_fastest(net) -> None:
    """Max-min optimality (Bertsekas & Gallager, Prop. 6.5.2): each flow below its own cap crosses a full link
    on which no flow is faster than it."""
    routes, capacity, mult, caps = net
    rates = max_min_rates(routes, capacity, mult=mult, caps=caps)
    load = _loads(routes, len(capacity), rates, mult)
    for f, route in enumerate(routes):
        if rates[f] >= caps[f] * (1 - 1e-9):
            continue
        bottleneck = [
            link for link in route
            if load[link] >= capacity[link] * (1 - 1e-7)
            and all(rates[g] <= rates[f] * (1 + 1e-7) for g, r in enumerate(routes) if link in r)
        ]  # fmt: skip
        assert bottleneck, f"flow {f} at {rates[f]} has no bottleneck"


@settings(max_examples=200, deadline=None)
@given(networks())
def test_a_flow_of_multiplicity_m_is_m_identical_flows(net) -> None:
    """Grouping is exact: expanding each flow into ``mult`` unit flows gives each copy the grouped rate."""
    routes, capacity, mult, caps = net
    grouped = max_min_rates(routes, capacity, mult=mult, caps=caps)
    ex_routes, ex_caps, owner = [], [], []
    for f, route in enumerate(routes):
        for _ in range(int(mult[f])):
            ex_routes.append(route)
            ex_caps.append(caps[f])
            owner.append(f)
    flat = max_min_rates(ex_routes, capacity, caps=ex_caps)
    for r, f in zip(flat, owner, strict=True):
        assert math.isclose(r, grouped[f], rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(networks())
def test_a_single_link_is_fully_used_unless_every_flow_is_capped(net) -> None:
    """Conservation: one link's flows use all of it, or each of them runs at its cap (no capacity is lost)."""
    _, capacity, mult, caps = net
    routes = [[0] for _ in mult]
    rates = max_min_rates(routes, capacity[:1], mult=mult, caps=caps)
    used = sum(r * m for r, m in zip(rates, mult, strict=True))
    all_capped = all(r >= c * (1 - 1e-9) for r, c in zip(rates, caps, strict=True))
    assert all_capped or math.isclose(used, capacity[0], rel_tol=1e-9)


def test_a_known_allocation() -> None:
    """Two links of 10 and 4: a flow on both gets 2 (the 4-link shared with another), the flow on the 10-link
    alone gets the 8 left."""
    assert max_min_rates([[0, 1], [1], [0]], [10.0, 4.0]) == [2.0, 2.0, 8.0]


@settings(max_examples=300, deadline=None)
@given(
    st.floats(1.0, 1e10),
    st.lists(st.tuples(st.integers(1, 50), st.integers(1, 6), st.floats(1e3, 1e9)), min_size=1, max_size=10),
    st.one_of(st.none(), st.floats(1e3, 1e9)),
)
def test_the_star_water_filling_is_the_general_solver_on_egress_plus_nics(egress, groups, conn_cap) -> None:
    """The engine's fast path (egress shared, each group's hosts on their own NICs) gives the rates of the
    general progressive filling on the same links."""
    routes, capacity, mult, caps, owner = [], [egress], [], [], []
    for gi, (m, n, nic) in enumerate(groups):
        capacity.append(m * nic)
        for _ in range(n):
            routes.append([0, len(capacity) - 1])
            mult.append(float(m))
            caps.append(conn_cap or math.inf)
            owner.append(gi)
    general = max_min_rates(routes, capacity, mult=mult, caps=caps)
    bound = np.array([nic / n for m, n, nic in groups])
    if conn_cap:
        bound = np.minimum(bound, conn_cap)
    weight = np.array([float(m * n) for m, n, _ in groups])
    level = star_level(egress, bound, weight)
    for r, gi in zip(general, owner, strict=True):
        assert math.isclose(r, min(level, bound[gi]), rel_tol=1e-9)
