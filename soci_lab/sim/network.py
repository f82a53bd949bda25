"""The network: a processor-sharing link inside simpy, and HTTP requests over it.

:class:`Link` is an event-driven fluid model. It keeps the set of flows in flight; whenever a flow starts
or ends (or a flow's own cap changes, during a TCP-like ramp) it advances every flow by ``rate × elapsed``,
recomputes the rates by max-min fairness (water-filling: flows whose cap is below the fair share get their
cap, the rest share what is left equally) and schedules one timer for the next completion. Nothing has a
fixed per-request rate: a flow's speed is whatever the link gives it at each instant.

The same class models any shared bandwidth — the host's disk is a :class:`Link` too (see ``host.py``).

:class:`Network` puts HTTP on top: a request costs one RTT before the first byte (plus the per-request
overhead, plus one RTT per redirect hop), then its body flows through the link, optionally under a
per-connection cap and a slow-start ramp (congestion window doubling every RTT from ``init_cwnd``).

The per-request overhead depends on the path the real client would take. Its GETs of at least
``FAST_MIN_BYTES`` (:mod:`soci_lab.fastpath`) go over urllib3's pooled connections, the rest through httpx,
and the two differ in first-byte cost (the fast path is cheaper); ``fast_request_overhead`` is the fast
path's, charged by the same threshold rule (``fast_min_bytes``, the real client's threshold unless set).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from ..errors import SimulationError
from ..fastpath import FAST_MIN_BYTES

#: a flow with fewer bytes than this left is complete (fluid arithmetic is in floats)
EPS_BYTES = 1e-3


class Progress:
    """How far one transfer has come, for a reader that follows it (a layer applied while it downloads).

    Made before the transfer starts (the request still has its round trip to pay) and handed to
    :meth:`Link.transfer`; :meth:`reached` gives an event that fires once ``n`` bytes of it have arrived.
    The link schedules its next recomputation no later than the next byte count waited for, so the event
    fires at the exact instant of the fluid model (extra recomputations do not change any rate).
    """

    __slots__ = ("_flow", "_link", "_watches", "env", "finished")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.finished = False
        self._link: Link | None = None
        self._flow: Flow | None = None
        self._watches: list[tuple[float, simpy.Event]] = []

    def arrived(self) -> float:
        """Bytes of the transfer arrived by now (all of them once it is complete)."""
        if self.finished:
            return self._flow.nbytes if self._flow is not None else float("inf")
        if self._flow is None or self._link is None:
            return 0.0
        self._link._advance()
        return self._flow.nbytes - self._flow.remaining

    def reached(self, nbytes: float) -> simpy.Event:
        """An event that fires once ``nbytes`` of the transfer have arrived (at once if they have)."""
        ev = self.env.event()
        if nbytes <= 0 or self.finished or (self._flow is not None and self._due(self._flow, nbytes)):
            ev.succeed()
            return ev
        self._watches.append((float(nbytes), ev))
        self._watches.sort(key=_watch_key)
        if self._link is not None and self._flow is not None:  # in flight: the link's next timer may be too late
            self._link._advance()
            self._link._recompute()
        return ev

    def _attach(self, link: Link, flow: Flow) -> None:
        self._link, self._flow = link, flow

    def _due(self, f: Flow, nbytes: float) -> bool:
        return f.nbytes - f.remaining >= nbytes - (EPS_BYTES + 1e-12 * f.nbytes + f.rate * 1e-9)

    def _fire(self, f: Flow) -> None:
        """Fire the watches that the flow's bytes have reached."""
        while self._watches and self._due(f, self._watches[0][0]):
            self._watches.pop(0)[1].succeed()

    def _finish(self) -> None:
        self.finished = True
        for _, ev in self._watches:
            ev.succeed()
        self._watches.clear()

    def _next(self) -> float | None:
        """Bytes the first pending watch waits for (None: none)."""
        return self._watches[0][0] if self._watches else None


def _watch_key(w: tuple[float, simpy.Event]) -> float:
    return w[0]


class Flow:
    """One transfer in flight on a link."""

    __slots__ = (
        "base_cap", "cap", "done", "nbytes", "next_ramp", "progress", "rate", "remaining", "rtt", "started", "window",
    )  # fmt: skip

    def __init__(self, nbytes: float, done: simpy.Event, cap: float, started: float) -> None:
        self.nbytes = nbytes
        self.remaining = float(nbytes)
        self.done = done
        self.base_cap = cap  # the per-connection cap (bytes/s), inf when uncapped
        self.cap = cap  # the cap in force now (lower during a slow-start ramp)
        self.rate = 0.0
        self.started = started
        self.window = 0.0  # slow start: congestion window in bytes (0 = no ramp)
        self.rtt = 0.0
        self.next_ramp = float("inf")
        self.progress: Progress | None = None


class Link:
    """A shared bandwidth (bytes/s) divided fairly among the flows in flight.

    ``record=True`` keeps ``(time, total rate, flows)`` at every recomputation so tests can check that the
    link never carries more than its capacity. ``max_load`` (highest total rate / capacity seen) is kept
    always, and a recomputation exceeding the capacity raises :class:`SimulationError`.
    """

    def __init__(
        self,
        env: simpy.Environment,
        capacity: float,
        *,
        name: str = "link",
        record: bool = False,
        burst: float = 0.0,
        burst_rate: float | None = None,
    ) -> None:
        if capacity <= 0:
            raise SimulationError(f"{name}: capacity must be positive, not {capacity}")
        if burst < 0:
            raise SimulationError(f"{name}: burst must not be negative, not {burst}")
        self.env = env
        self.capacity = float(capacity)
        #: a token bucket in front of the link (a shaper's allowance): up to ``burst`` bytes saved while the
        #: link carries less than its capacity, spent at ``burst_rate`` (default 8x the capacity) when it is busy
        self.burst = float(burst)
        self.burst_rate = float(burst_rate) if burst_rate else 8.0 * self.capacity
        self.tokens = self.burst
        self._total = 0.0
        self.name = name
        self.flows: list[Flow] = []
        self.delivered = 0.0  # bytes moved so far (integral of the rates)
        self.requested = 0  # bytes asked for
        self.max_load = 0.0
        self.max_flows = 0
        self.busy_time = 0.0
        self.history: list[tuple[float, float, int]] | None = [] if record else None
        self._t_last = env.now
        self._gen = 0

    def transfer(
        self,
        nbytes: float,
        *,
        cap: float | None = None,
        rtt: float = 0.0,
        init_window: float = 0.0,
        progress: Progress | None = None,
    ) -> simpy.Event:
        """Start moving ``nbytes``; the returned event fires when the last byte has arrived.

        ``cap`` limits this flow's rate (a per-connection cap); ``init_window`` > 0 with ``rtt`` > 0 adds a
        slow-start ramp: the flow may carry at most ``window / rtt``, and the window doubles every RTT.
        ``progress`` follows the flow's bytes as they arrive (:class:`Progress`).
        """
        done = self.env.event()
        if nbytes <= 0:
            if progress is not None:
                progress._finish()
            done.succeed()
            return done
        self.requested += int(nbytes)
        self._advance()
        flow = Flow(nbytes, done, cap if cap else float("inf"), self.env.now)
        if init_window > 0 and rtt > 0:
            flow.window, flow.rtt = float(init_window), rtt
            flow.next_ramp = self.env.now + rtt
            flow.cap = min(flow.cap, flow.window / rtt)
        if progress is not None:
            flow.progress = progress
            progress._attach(self, flow)
        self.flows.append(flow)
        self._recompute()
        return done

    # --- the fluid model ----------------------------------------------------------------------------

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._t_last
        if dt > 0 and self.burst:  # the bucket fills while the link carries less than its capacity
            self.tokens = min(self.burst, max(0.0, self.tokens + (self.capacity - self._total) * dt))
        if dt > 0 and self.flows:
            moved = 0.0
            for f in self.flows:
                step = f.rate * dt
                f.remaining -= step
                moved += step
            self.delivered += moved
            self.busy_time += dt
        self._t_last = now

    def _recompute(self) -> None:
        flows = self.flows
        now = self.env.now
        # finish what is done; ramp what is due
        if flows:
            finished = [f for f in flows if f.remaining <= EPS_BYTES + 1e-12 * f.nbytes + f.rate * 1e-9]
            if finished:
                for f in finished:
                    self.delivered += f.remaining  # account the sliver left by float arithmetic
                    f.remaining = 0.0
                    if f.progress is not None:
                        f.progress._finish()
                    f.done.succeed()
                flows = self.flows = [f for f in flows if f.remaining > 0.0]
            for f in flows:
                if f.next_ramp <= now + 1e-12:
                    while f.next_ramp <= now + 1e-12:
                        f.window *= 2
                        f.next_ramp += f.rtt
                    ramp = f.window / f.rtt
                    if ramp >= self.capacity:  # the window no longer limits: the ramp is over
                        f.next_ramp = float("inf")
                        f.cap = f.base_cap
                    else:
                        f.cap = min(f.base_cap, ramp)
        n = len(flows)
        if n == 0:
            self._total = 0.0
            self._note(0.0, 0, self.capacity)
            return
        # what the link can carry now: its capacity, or the burst rate while the bucket has tokens
        spending = self.burst > 0 and self.tokens > EPS_BYTES
        capacity = self.burst_rate if spending else self.capacity
        # max-min fair shares with caps (water-filling)
        capped = [f for f in flows if f.cap < capacity]
        if not capped:
            share = capacity / n
            for f in flows:
                f.rate = share
            total = capacity
        else:
            left, k = capacity, n
            total = 0.0
            for f in sorted(flows, key=_cap_key):
                share = left / k
                f.rate = f.cap if f.cap < share else share
                left -= f.rate
                total += f.rate
                k -= 1
        self._total = total
        self._note(total, n, capacity)
        # next event: the first completion, the first binding ramp step, or the bucket running dry
        t_next = float("inf")
        if spending and total > self.capacity:
            t_next = self.tokens / (total - self.capacity)
        for f in flows:
            if f.rate > 0:
                t = f.remaining / f.rate
                if t < t_next:
                    t_next = t
            if f.next_ramp != float("inf") and f.rate >= f.cap * (1 - 1e-9):
                t = f.next_ramp - now
                if t < t_next:
                    t_next = t
            if f.progress is not None:  # a reader follows this flow: wake at the byte count it waits for
                f.progress._fire(f)
                want = f.progress._next()
                if want is not None and f.rate > 0:
                    t = (want - (f.nbytes - f.remaining)) / f.rate
                    if t < t_next:
                        t_next = t
        if t_next == float("inf"):
            raise SimulationError(f"{self.name}: flows in flight but none can progress")
        self._gen += 1
        timer = self.env.timeout(max(t_next, 0.0), value=self._gen)
        timer.callbacks.append(self._on_timer)

    def _on_timer(self, event: simpy.Event) -> None:
        if event.value != self._gen:
            return  # superseded by a later recomputation
        self._advance()
        self._recompute()

    def _note(self, total: float, n: int, limit: float) -> None:
        """Record a recomputation; ``limit`` is what the link may carry now (capacity, or the burst rate)."""
        load = total / self.capacity
        if total > limit * (1.0 + 1e-9):
            raise SimulationError(f"{self.name}: carries {total:.0f} B/s over a capacity of {limit:.0f}")
        if load > self.max_load:
            self.max_load = load
        if n > self.max_flows:
            self.max_flows = n
        if self.history is not None:
            self.history.append((self.env.now, total, n))


def _cap_key(f: Flow) -> float:
    return f.cap


@dataclass(frozen=True)
class NetworkParams:
    """What the path to the registry looks like.

    ``bandwidth`` bytes/s shared by every transfer; ``rtt`` seconds per round trip; ``request_overhead``
    seconds of registry time per request (auth checks, storage lookup); ``redirect``: blob GETs are
    answered by a redirect to storage (one more RTT unless the client cached the final URL);
    ``conn_cap`` bytes/s per connection (None: none); ``slow_start``: each request's body ramps from
    ``init_cwnd`` bytes doubling every RTT (a cold TCP connection; None of it on a warm one); ``burst``
    bytes of a shaper's token bucket (:class:`Link`); ``fast_request_overhead``: the per-request overhead
    of GETs of at least ``fast_min_bytes`` body bytes, which the real client sends over its fast path
    (None: ``request_overhead``, one cost for both paths); ``fast_min_bytes`` None: the real client's
    threshold (:func:`lean_min_bytes`).
    """

    bandwidth: float = 125e6
    rtt: float = 0.001
    request_overhead: float = 0.0005
    redirect: bool = False
    conn_cap: float | None = None
    slow_start: bool = False
    init_cwnd: int = 10 * 1460
    #: a shaper's token bucket (bytes): saved while the link is under-used, sent at once when a transfer
    #: starts (the netlab proxy's: 20 ms of its rate); 0 = none
    burst: float = 0.0
    #: the fast path's per-request overhead (seconds; None: ``request_overhead``)
    fast_request_overhead: float | None = None
    #: body bytes from which a GET takes the fast path (None: the real client's ``FAST_MIN_BYTES``)
    fast_min_bytes: int | None = None
    #: the round trip as a distribution instead of the constant ``rtt``: a lognormal with median ``rtt`` and
    #: this log-space standard deviation (0: constant) ...
    rtt_sigma: float = 0.0
    #: ... or empirical quantiles of the round trip (seconds, ascending, evenly spaced in probability from
    #: 0 to 1: ``sim.fit_costs.fit_latency`` gives them), sampled by inverse transform; () : not used
    rtt_quantiles: tuple[float, ...] = ()
    #: the seed of the round-trip draws (one stream per simulation, so a run is reproducible)
    rtt_seed: int = 0

    def __post_init__(self) -> None:
        if self.rtt_sigma < 0:
            raise SimulationError(f"rtt_sigma must not be negative, not {self.rtt_sigma}")
        q = self.rtt_quantiles
        if q and (len(q) < 2 or list(q) != sorted(q) or q[0] < 0):
            raise SimulationError("rtt_quantiles must be at least two ascending non-negative seconds")


def lean_min_bytes() -> int:
    """The real client's fast-path threshold, :data:`soci_lab.fastpath.FAST_MIN_BYTES` (read, not copied, so
    the simulator follows it when it changes)."""
    return FAST_MIN_BYTES


class Network:
    """HTTP requests over one shared :class:`Link`; counts requests and bytes (also per layer)."""

    def __init__(self, env: simpy.Environment, params: NetworkParams, *, record: bool = False) -> None:
        self.env = env
        self.params = params
        self.link = Link(env, params.bandwidth, name="network", record=record, burst=params.burst)
        #: GETs of at least this many body bytes take the fast path
        self.fast_min_bytes = params.fast_min_bytes if params.fast_min_bytes is not None else lean_min_bytes()
        self.requests = 0
        self.bytes = 0
        self.by_layer: dict[str, int] = {}
        self._rng = (
            np.random.default_rng(params.rtt_seed) if params.rtt_sigma > 0 or params.rtt_quantiles else None
        )

    def round_trip(self) -> float:
        """One request's round trip: ``rtt``, or a draw from the configured distribution."""
        p = self.params
        rng = self._rng
        if rng is None:
            return p.rtt
        u = float(rng.random())
        if p.rtt_quantiles:
            q = p.rtt_quantiles
            x = u * (len(q) - 1)
            i = min(int(x), len(q) - 2)
            return q[i] + (q[i + 1] - q[i]) * (x - i)
        return p.rtt * float(np.exp(p.rtt_sigma * _probit(u)))

    def get(
        self, nbytes: int, *, redirect: bool = False, layer: str | None = None, progress: Progress | None = None
    ) -> Generator[Any, Any, float]:
        """One GET of ``nbytes`` body bytes; use with ``yield from``. Returns the time of its first byte.

        ``redirect`` adds one RTT (the hop to the storage URL) when the registry redirects blob GETs;
        ``progress`` follows the body's bytes as they arrive. A GET the real client would send over its fast
        path (:meth:`is_fast`) pays ``fast_request_overhead`` instead of ``request_overhead``.
        """
        p = self.params
        env = self.env
        overhead = p.request_overhead
        if p.fast_request_overhead is not None and self.is_fast(nbytes):
            overhead = p.fast_request_overhead
        rtt = self.round_trip()
        wait = rtt + overhead + (self.round_trip() if redirect and p.redirect else 0.0)
        if wait > 0:
            yield env.timeout(wait)
        t_first = env.now
        if nbytes > 0:
            if p.slow_start and p.rtt > 0:
                yield self.link.transfer(nbytes, cap=p.conn_cap, rtt=p.rtt, init_window=p.init_cwnd, progress=progress)
            else:
                yield self.link.transfer(nbytes, cap=p.conn_cap, progress=progress)
        elif progress is not None:
            progress._finish()
        self.requests += 1
        self.bytes += nbytes
        if layer is not None:
            self.by_layer[layer] = self.by_layer.get(layer, 0) + nbytes
        return t_first

    def is_fast(self, nbytes: int) -> bool:
        """Whether the real client would send a GET of ``nbytes`` body bytes over its fast path (the rule of
        ``soci_lab.remote.ranges.fetch_into``: a known length of at least the threshold)."""
        return nbytes > 0 and nbytes >= self.fast_min_bytes


def _probit(u: float) -> float:
    """The standard normal quantile of ``u`` (clipped into (0, 1))."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12))
