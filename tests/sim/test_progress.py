"""Following a transfer's bytes as they arrive (:class:`soci_lab.sim.network.Progress`)."""

from __future__ import annotations

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.sim.network import EPS_BYTES, Link, Progress


def test_a_byte_count_is_reached_when_the_fluid_model_says():
    # 100 B/s; the followed flow of 200 B alone until t=0.5 (50 B), then shared with a second flow at 50 B/s:
    # 100 B at 0.5 + 50/50 = 1.5 s; the other (50 B) ends at 1.5 too, then 100 B/s: 150 B at 2.0 s.
    env = simpy.Environment()
    link = Link(env, 100.0)
    progress = Progress(env)
    at: dict[int, float] = {}

    def follower(n: int):
        yield progress.reached(n)
        at[n] = env.now

    def late():
        yield env.timeout(0.5)
        yield link.transfer(50.0)

    env.process(late())
    done = link.transfer(200.0, progress=progress)
    for n in (0, 25, 100, 150, 200):
        env.process(follower(n))
    env.run()
    assert done.triggered and progress.finished
    assert at == pytest.approx({0: 0.0, 25: 0.25, 100: 1.5, 150: 2.0, 200: 2.5})


def test_a_count_asked_for_before_the_transfer_starts_waits_for_it():
    env = simpy.Environment()
    link = Link(env, 10.0)
    progress = Progress(env)
    seen: list[float] = []

    def start():
        yield env.timeout(1.0)  # the request's round trip
        yield link.transfer(30.0, progress=progress)

    def follower():
        yield progress.reached(20)
        seen.append(env.now)

    env.process(follower())
    env.process(start())
    env.run()
    assert seen == pytest.approx([3.0])


flows = st.lists(
    st.tuples(st.floats(0, 2), st.floats(1, 5000), st.one_of(st.none(), st.floats(5, 400))), min_size=1, max_size=6
)


@settings(max_examples=80, deadline=None)
@given(capacity=st.floats(50, 1000), flows=flows, marks=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_following_a_flow_changes_no_completion_and_fires_at_its_byte_count(capacity, flows, marks):
    """The same flows with and without a follower on the first one end at the same times; each byte count
    the follower waited for had arrived (and not much more) when its event fired."""

    def run(follow: bool):
        env = simpy.Environment()
        link = Link(env, capacity, record=True)
        progress = Progress(env)
        ends: dict[int, float] = {}
        fired: list[tuple[float, float]] = []

        def one(i, t, n, cap):
            yield env.timeout(t)
            yield link.transfer(n, cap=cap, progress=progress if i == 0 else None)
            ends[i] = env.now

        def follower(n):
            yield progress.reached(n)
            fired.append((n, progress.arrived()))

        for i, (t, n, cap) in enumerate(flows):
            env.process(one(i, t, n, cap))
        if follow:
            for m in marks:
                env.process(follower(m * flows[0][1]))
        env.run()
        return [ends[i] for i in range(len(flows))], fired, link

    plain, _, _ = run(False)
    followed, fired, link = run(True)
    # the fluid model calls a flow complete with EPS_BYTES left; a follower's extra recomputation may meet that
    # sliver a little earlier (at most EPS_BYTES / the slowest rate, 5 B/s here), nothing more
    assert followed == pytest.approx(plain, rel=1e-9, abs=2 * EPS_BYTES / 5)
    assert len(fired) == len(marks)
    size = flows[0][1]
    for want, arrived in fired:
        assert want - (EPS_BYTES + 1e-9 * size) <= arrived <= want + EPS_BYTES + 1e-9 * size
    assert link.delivered == pytest.approx(sum(n for _, n, _ in flows), rel=1e-9)
