"""Processor sharing on a :class:`Link`: hand-computed cases and hypothesis properties."""

from __future__ import annotations

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.errors import SimulationError
from soci_lab.sim.network import Link, Network, NetworkParams


def _run(capacity: float, flows: list[tuple[float, float, float | None]], **link_kw):
    """flows: (start time, bytes, cap) → (finish times, link)."""
    env = simpy.Environment()
    link = Link(env, capacity, record=True, **link_kw)
    done: dict[int, float] = {}

    def one(i: int, t: float, n: float, cap: float | None):
        yield env.timeout(t)
        yield link.transfer(n, cap=cap)
        done[i] = env.now

    for i, (t, n, cap) in enumerate(flows):
        env.process(one(i, t, n, cap))
    env.run()
    return [done[i] for i in range(len(flows))], link


def test_single_flow_takes_size_over_capacity():
    (t,), _ = _run(100.0, [(0.0, 250.0, None)])
    assert t == pytest.approx(2.5)


def test_two_equal_flows_finish_together_at_twice_the_time():
    (a, b), link = _run(100.0, [(0.0, 100.0, None), (0.0, 100.0, None)])
    assert a == pytest.approx(2.0) and b == pytest.approx(2.0)
    assert link.max_flows == 2


def test_late_second_flow():
    # A: 100 B from t=0; B: 100 B from t=0.5 on a 100 B/s link.
    # 0..0.5: A alone at 100 → 50 left. Then both at 50 B/s: A done at 0.5 + 50/50 = 1.5, B has 50 left,
    # alone again at 100 B/s → done at 2.0.
    (a, b), _ = _run(100.0, [(0.0, 100.0, None), (0.5, 100.0, None)])
    assert a == pytest.approx(1.5)
    assert b == pytest.approx(2.0)


def test_three_flows_unequal_sizes():
    # 30, 60, 90 B at t=0 on 30 B/s: all at 10 → first done at 3 (30 B); then 2 at 15 → second has 30 left
    # → done at 5; third has 30 left at 30 B/s → done at 6 (= 180 / 30, work-conserving).
    times, _ = _run(30.0, [(0.0, 30.0, None), (0.0, 60.0, None), (0.0, 90.0, None)])
    assert times == pytest.approx([3.0, 5.0, 6.0])


def test_capped_flow_leaves_the_rest_to_others():
    # cap 10 on a 100 B/s link: the other flow gets 90 (max-min fairness), not 50
    (a, b), _ = _run(100.0, [(0.0, 10.0, 10.0), (0.0, 90.0, None)])
    assert a == pytest.approx(1.0)
    assert b == pytest.approx(1.0)


def test_slow_start_ramp_doubles_every_rtt():
    env = simpy.Environment()
    link = Link(env, 1e6)
    out = []

    def go():
        yield link.transfer(1e6, rtt=0.1, init_window=14_600)
        out.append(env.now)

    env.process(go())
    env.run()
    # 14 600 + 29 200 + 58 400 bytes in the first three RTTs, then the window exceeds the link
    assert out[0] == pytest.approx(0.3 + (1e6 - 102_200) / 1e6)


def test_request_costs_one_rtt_plus_overhead_plus_redirect():
    env = simpy.Environment()
    net = Network(env, NetworkParams(bandwidth=1000.0, rtt=0.05, request_overhead=0.01, redirect=True))
    out = []

    def go():
        t_first = yield from net.get(500, redirect=True)
        out.append((t_first, env.now))

    env.process(go())
    env.run()
    assert out[0][0] == pytest.approx(0.11)
    assert out[0][1] == pytest.approx(0.61)
    assert (net.requests, net.bytes) == (1, 500)


def test_bad_capacity_is_refused():
    with pytest.raises(SimulationError):
        Link(simpy.Environment(), 0)


flows_st = st.lists(
    st.tuples(
        st.floats(0, 5, allow_nan=False),
        st.integers(1, 10_000_000),
        st.one_of(st.none(), st.floats(1e3, 2e7, allow_nan=False)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=80, deadline=None)
@given(capacity=st.floats(1e4, 1e8, allow_nan=False), flows=flows_st)
def test_bytes_delivered_equal_bytes_requested_and_capacity_is_never_exceeded(capacity, flows):
    times, link = _run(capacity, flows)
    total = sum(n for _, n, _ in flows)
    assert link.requested == total
    assert link.delivered == pytest.approx(total, rel=1e-9, abs=1e-3 * len(flows))
    assert link.history  # checked at every recomputation
    assert all(rate <= capacity * (1 + 1e-9) for _, rate, _ in link.history)
    assert link.max_load <= 1 + 1e-9
    for (t0, n, cap), t in zip(flows, times, strict=True):
        fastest = n / min(capacity, cap or capacity)
        # a flow counts as done within a nanosecond (or 1e-3 byte) of its end: fluid arithmetic is in floats
        assert t - t0 >= fastest * (1 - 1e-9) - 2e-9


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.floats(1e4, 1e8, allow_nan=False), sizes=st.lists(st.integers(1, 10_000_000), min_size=1, max_size=30)
)
def test_work_conserving_without_caps(capacity, sizes):
    times, _ = _run(capacity, [(0.0, n, None) for n in sizes])
    # uncapped flows all present from t=0: the link is never idle, so the last ends at total/capacity
    assert max(times) == pytest.approx(sum(sizes) / capacity, rel=1e-9)
    # smaller flows never finish after larger ones
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    assert all(times[order[i]] <= times[order[i + 1]] + 1e-9 for i in range(len(order) - 1))


def test_a_burst_sends_its_bytes_at_the_burst_rate_then_the_link_rate():
    """A token bucket of 50 bytes spent at 1,000 B/s on a 100 B/s link: 250 bytes take 50/900 s at the burst
    rate (55.6 bytes moved), then the rest at 100 B/s — and after an idle second the bucket is full again."""
    (a, b), link = _run(100.0, [(0.0, 250.0, None), (10.0, 250.0, None)], burst=50.0, burst_rate=1000.0)
    t1 = 50.0 / 900.0
    assert a == pytest.approx(t1 + (250.0 - 1000.0 * t1) / 100.0)
    assert b - 10.0 == pytest.approx(a)
    assert link.delivered == pytest.approx(500.0)


def test_without_idle_time_the_bucket_stays_empty():
    """Back-to-back transfers: the first spends the burst, the second (starting as it ends) gets none."""
    env = simpy.Environment()
    link = Link(env, 100.0, burst=50.0, burst_rate=1000.0)
    ends = []

    def chain():
        for _ in range(2):
            yield link.transfer(250.0)
            ends.append(env.now)

    env.process(chain())
    env.run()
    assert ends[1] - ends[0] == pytest.approx(2.5)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.floats(1e4, 1e8, allow_nan=False),
    burst_s=st.floats(0.001, 0.05, allow_nan=False),
    flows=flows_st,
)
def test_with_a_burst_no_interval_carries_more_than_capacity_times_its_length_plus_the_burst(capacity, burst_s, flows):
    burst = capacity * burst_s
    times, link = _run(capacity, flows, burst=burst)
    total = sum(n for _, n, _ in flows)
    assert link.delivered == pytest.approx(total, rel=1e-9, abs=1e-3 * len(flows))
    # the bytes carried up to each recomputation (the rate is constant in between)
    marks, carried, prev_t, prev_rate = [], 0.0, 0.0, 0.0
    for t, rate, _ in link.history:
        carried += prev_rate * (t - prev_t)
        marks.append((t, carried))
        prev_t, prev_rate = t, rate
    for i, (ti, ci) in enumerate(marks):
        for tj, cj in marks[i + 1 :]:
            assert cj - ci <= capacity * (tj - ti) + burst * (1 + 1e-6) + 1e-3 * len(flows)
    for (t0, n, _cap), t in zip(flows, times, strict=True):
        # no flow beats the burst rate, nor the link's rate for what the bucket could not hold
        fastest = max(n / link.burst_rate, (n - burst) / capacity)
        assert t - t0 >= fastest * (1 - 1e-9) - 2e-9
