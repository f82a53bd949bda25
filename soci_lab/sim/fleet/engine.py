"""The fleet's event loop: host groups running their request programs over flow-level shared links.

Links are the registry's egress (shared by all) and each group's NICs (a group of ``m`` hosts has ``m``
NICs; its flows are flows of multiplicity ``m``). Flow rates are max-min fair (:mod:`.flows`) and are
recomputed only when a flow starts or ends — once per instant, however many flows start or end in it.
Between those instants rates are constant and each flow's completion time is known, so the loop jumps from
event to event. Without peer-to-peer the flows live in :class:`.star.StarFlows` (per-group virtual clocks:
an instant costs the groups it changed, not every flow in flight); with it, in a dense :class:`FlowTable`
solved over every link at each instant.

A group splits when its members stop being identical: when the registry's token bucket has tokens for
only some of them (those served go on; the rest get a 429 and wait), and then by jitter strata
(:attr:`FleetSpec.jitter_strata`). A split copies the group's progress, its flows in flight and its
pending events, so every member keeps exactly the history it had.
"""

from __future__ import annotations

import heapq
import math
import random
from typing import Any

import numpy as np

from ...errors import SimulationError
from .flows import max_min_rates, star_level
from .model import FleetSpec
from .program import HostProgram
from .star import StarFlows


class Group:
    """``m`` identical hosts at the same point of the same program."""

    __slots__ = (
        "arrival", "bytes", "conn_cap", "deps", "events", "failed", "flows", "gid", "holds_any",
        "hosts", "items", "left", "m", "milestones", "n429", "nic", "peer_bytes", "pending", "pool", "prog", "requests",
        "sampled", "seeding", "waits",
    )  # fmt: skip

    def __init__(self, gid: int, pool: int, prog: HostProgram, deps: list[list[int]], hosts: list[int],
                 nic: float, arrival: float, sampled: bool, conn_cap: float | None) -> None:  # fmt: skip
        self.gid, self.pool, self.prog, self.deps = gid, pool, prog, deps
        self.hosts, self.m, self.nic, self.arrival = hosts, len(hosts), nic, arrival
        self.milestones: dict[str, float] = {}
        self.left: dict[str, int] = {}  # requests a joined milestone still waits for (HostProgram.joins)
        self.bytes = 0
        self.requests = 0
        self.n429 = 0
        self.failed: str | None = None
        self.flows: list[Flow] = []
        self.pending: list[Ev] = []
        self.events: list[tuple[Any, ...]] | None = [] if sampled else None
        self.sampled = sampled
        self.conn_cap = conn_cap
        self.items: list[Any] = []  # the program's P2P items (HostProgram.items), set by the engine
        self.peer_bytes = 0  # of ``bytes``, those received from peers
        self.holds_any = False  # holds some P2P item (so its uplink serves the swarm)
        self.seeding: set[Any] = set()  # P2P items it is fetching from the registry for the swarm
        self.waits: list[tuple[Any, int]] = []  # (item, request) waiting for a first copy in the swarm


class Flow:
    """One request's body in flight (for each host of its group); its bytes left and rate live in the
    :class:`FlowTable` at ``slot``."""

    __slots__ = ("group", "item", "k", "peer", "slot", "t_first")

    def __init__(self, group: Group, k: int, t_first: float, item: Any = None, peer: bool = False) -> None:
        self.group, self.k, self.t_first, self.slot = group, k, t_first, -1
        self.item, self.peer = item, peer  # a P2P item (None: none); from peers (else from the registry)


class FlowTable:
    """The flows in flight as arrays (bytes left, rate, group), kept dense: a flow that ends is replaced by
    the last one, so advancing, solving and finding the next completion are array operations."""

    def __init__(self) -> None:
        self.n = 0
        self.rem = np.zeros(64)
        self.rate = np.zeros(64)
        self.gid = np.zeros(64, dtype=np.int64)
        self.owner: list[Flow] = []

    def add(self, flow: Flow, nbytes: float, rate: float = 0.0) -> None:
        if self.n == len(self.rem):
            self.rem = np.concatenate([self.rem, np.zeros(self.n)])
            self.rate = np.concatenate([self.rate, np.zeros(self.n)])
            self.gid = np.concatenate([self.gid, np.zeros(self.n, dtype=np.int64)])
        i = self.n
        self.rem[i], self.rate[i], self.gid[i] = nbytes, rate, flow.group.gid
        flow.slot = i
        self.owner.append(flow)
        self.n += 1

    def remove(self, flow: Flow) -> None:
        i, last = flow.slot, self.n - 1
        if i != last:
            moved = self.owner[last]
            self.rem[i], self.rate[i], self.gid[i] = self.rem[last], self.rate[last], self.gid[last]
            self.owner[i] = moved
            moved.slot = i
        self.owner.pop()
        self.n -= 1
        flow.slot = -1


class Ev:
    __slots__ = ("alive", "attempt", "group", "k", "kind", "t", "t_sent")

    def __init__(self, t: float, group: Group, kind: str, k: int, attempt: int = 0, t_sent: float = 0.0) -> None:
        self.t, self.group, self.kind, self.k = t, group, kind, k
        self.attempt, self.t_sent, self.alive = attempt, t_sent, True


class Engine:
    """Runs groups to completion; :meth:`run` returns the final groups."""

    def __init__(self, spec: FleetSpec, *, conn_cap: float | None = None, flows: str = "auto") -> None:
        """``flows``: ``auto`` (per-group clocks without P2P, else the dense table) or ``dense`` (the dense table
        always: every flow solved at every instant, the reference the other is checked against)."""
        if flows not in ("auto", "dense"):
            raise SimulationError(f"fleet flows must be auto or dense, not {flows!r}")
        self.spec = spec
        self.conn_cap = conn_cap  # a per-connection cap (bytes/s) on every flow, from NetworkParams
        self.reg = spec.registry
        self.policy = spec.retry
        self.rng = random.Random(spec.seed)
        self.heap: list[tuple[float, int, Ev]] = []
        self.seq = 0
        self.now = 0.0
        self.table = FlowTable()
        self.groups: list[Group] = []
        self.g_m = np.zeros(64)
        self.g_nic = np.zeros(64)
        self.g_flows = np.zeros(64)  # flows in flight per group (per host of it)
        self.t_flow = math.inf
        self.dirty = False
        self.tokens = max(1.0, self.reg.burst)
        self.t_tokens = 0.0
        self.recomputes = 0
        self.max_flows = 0
        self.max_egress_load = 0.0
        self._sample = frozenset(spec.sample_hosts)
        self.p2p = spec.p2p
        self.holders: dict[Any, float] = {}  # P2P item → upload capacity of the hosts holding it
        self.seeders: dict[Any, int] = {}  # P2P item → hosts fetching it from the registry now
        self.waiting: dict[Any, list[tuple[Group, int]]] = {}
        self.swarm_up = 0.0  # upload capacity of every host holding some item
        self.peer_flows = 0
        self._items: dict[int, list[Any]] = {}
        # without P2P every flow crosses the egress and its NIC only: kept per group (see .star)
        self.star = StarFlows(self.reg.egress, conn_cap) if spec.p2p is None and flows == "auto" else None
        self.work = 0  # flows the dense table's rate updates touched (per-group clocks: StarFlows.touched)
        # without a rate limit or P2P a request is sent when it is released (no 429, no wait for a seed) and no
        # group ever splits or gives up: the send and its event are folded into the release, pending events
        # need no tracking
        self.fold = self.star is not None and self.reg.rate_limit is None
        self._marks: dict[int, dict[int, list[tuple[str, float]]]] = {}
        self._joined: dict[int, dict[int, list[tuple[str, float]]]] = {}

    # --- scheduling ---------------------------------------------------------------------------------

    def push(self, ev: Ev) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (ev.t, self.seq, ev))
        if not self.fold:
            ev.group.pending.append(ev)

    def add_group(self, g: Group) -> None:
        if self.p2p is not None:
            key = id(g.prog)
            if key not in self._items:
                self._items[key] = g.prog.items()
            g.items = self._items[key]
        if id(g.prog) not in self._marks:
            marks: dict[int, list[tuple[str, float]]] = {}
            joined: dict[int, list[tuple[str, float]]] = {}
            for name, (pred, gap) in g.prog.milestones.items():
                for k in g.prog.joins.get(name, ()):
                    joined.setdefault(k, []).append((name, gap))
                if name not in g.prog.joins:
                    marks.setdefault(pred, []).append((name, gap))
            self._marks[id(g.prog)] = marks
            self._joined[id(g.prog)] = joined
        g.left = {name: len(ks) for name, ks in g.prog.joins.items()}
        self._register(g)
        self.push(Ev(g.arrival, g, "arrive", -1))

    def _register(self, g: Group) -> None:
        """Give ``g`` the next group id and its row in the group arrays."""
        g.gid = len(self.groups)
        self.groups.append(g)
        if g.gid >= len(self.g_m):
            self.g_m = np.concatenate([self.g_m, np.zeros(len(self.g_m))])
            self.g_nic = np.concatenate([self.g_nic, np.zeros(len(self.g_nic))])
            self.g_flows = np.concatenate([self.g_flows, np.zeros(len(self.g_flows))])
        self.g_m[g.gid], self.g_nic[g.gid] = g.m, g.nic
        if self.star is not None:
            self.star.register(g.gid, g.m, g.nic)

    # --- the loop -----------------------------------------------------------------------------------

    def run(self) -> list[Group]:
        if self.fold:
            return self._run_folded()
        heap = self.heap
        table = self.star if self.star is not None else self.table
        track = not self.fold
        while heap or table.n:
            t_ev = heap[0][0] if heap else math.inf
            t = min(t_ev, self.t_flow)
            if t == math.inf:
                raise SimulationError("fleet: flows in flight but none can progress")
            self._advance(t)
            if self.t_flow <= t:
                self._finish_flows()
            while heap and heap[0][0] <= t:
                ev = heapq.heappop(heap)[2]
                if ev.alive:
                    if track:
                        ev.group.pending.remove(ev)
                    self._handle(ev)
            if self.dirty:
                self._recompute()
        return self.groups

    def _run_folded(self) -> list[Group]:
        """:meth:`run` when nothing can refuse or delay a request (no rate limit, no P2P; see ``fold``): the same
        steps in one loop over plain tuples — no group splits or gives up, so no event needs cancelling and no
        group its list of flows."""
        star = self.star
        assert star is not None
        heap: list[tuple[float, int, Group, int, int, float]] = [(t, q, ev.group, -1, -1, t) for t, q, ev in self.heap]
        heapq.heapify(heap)
        self.heap = []
        push, pop = heapq.heappush, heapq.heappop
        reg, rng = self.reg, self.rng
        const = reg.service_s if reg.service_s <= 0 or reg.service == "const" else None
        marks_of = self._marks
        seq = self.seq
        t_flow = math.inf

        def release(g: Group, k: int, t: float) -> None:
            nonlocal seq
            marks = marks_of[id(g.prog)].get(k)
            if marks:
                for name, gap in marks:
                    g.milestones[name] = t + gap - g.arrival
            reqs = g.prog.requests
            for d in g.deps[k]:
                r = reqs[d]
                ts = t + r.gap
                g.requests += 1
                if g.events is not None:
                    g.events.append(("send", d, ts, 0, 200))
                service = const if const is not None else reg.draw_service(rng)
                seq += 1
                push(heap, (ts + r.latency + service, seq, g, d, 0, ts))

        joined_of = self._joined

        def complete(g: Group, k: int, t_first: float, t: float) -> None:
            nbytes = g.prog.requests[k].nbytes
            g.bytes += nbytes
            if g.events is not None:
                g.events.append(("done", k, t_first, t, nbytes))
            joined = joined_of[id(g.prog)].get(k)
            if joined:
                _join(g, joined, t)
            release(g, k, t)

        while heap or star.n:
            t = heap[0][0] if heap else math.inf
            if t_flow < t:
                t = t_flow
            if t == math.inf:
                raise SimulationError("fleet: flows in flight but none can progress")
            star.advance(t)
            self.now = t
            dirty = False
            if t_flow <= t:
                finished = star.finished()
                finished.sort(key=_group_request)
                for f in finished:
                    complete(f.group, f.k, f.t_first, t)
                dirty = True
            while heap and heap[0][0] <= t:
                _, _, g, k, _, _ = pop(heap)
                if k < 0:
                    release(g, -1, t)
                    continue
                nbytes = g.prog.requests[k].nbytes
                if nbytes <= 0:
                    complete(g, k, t, t)
                    continue
                star.add(g.gid, Flow(g, k, t), nbytes)
                dirty = True
            if dirty:
                self.recomputes += 1
                if star.n > self.max_flows:
                    self.max_flows = star.n
                t_flow, load = star.recompute()
                if load > self.max_egress_load:
                    self.max_egress_load = load
        self.seq = seq
        return self.groups

    def _advance(self, t: float) -> None:
        if self.star is not None:
            self.star.advance(t)
            self.now = t
            return
        dt = t - self.now
        n = self.table.n
        if dt > 0 and n:
            self.table.rem[:n] -= self.table.rate[:n] * dt
        self.now = t

    def _finish_flows(self) -> None:
        if self.star is not None:
            finished = self.star.finished()
            finished.sort(key=_group_request)  # the dense table's order too: ties are broken the same way
            for f in finished:
                f.group.flows.remove(f)
                self._complete(f.group, f.k, f.t_first)
            self.dirty = True
            return
        table = self.table
        n = table.n
        done = np.flatnonzero(table.rem[:n] <= 1e-3 + table.rate[:n] * 1e-9)
        finished = [table.owner[i] for i in done]
        for f in sorted(finished, key=_slot_desc):  # from the end, so the dense table's moves stay valid
            table.remove(f)
            self.g_flows[f.group.gid] -= 1
        finished.sort(key=_group_request)
        for f in finished:
            f.group.flows.remove(f)
            if f.item is not None:
                self._received(f)
            self._complete(f.group, f.k, f.t_first)
        self.dirty = True

    def _recompute(self) -> None:
        """Max-min rates of the flows in flight. Every flow crosses the registry's egress and its own host's
        NIC, and a group's ``m`` hosts each have the group's ``n`` flows on a NIC of their own: each flow may
        go at most ``min(nic / n, conn_cap)``, and the egress is shared by water-filling (:func:`star_level`)."""
        self.dirty = False
        self.recomputes += 1
        if self.star is not None:
            self.max_flows = max(self.max_flows, self.star.n)
            self.t_flow, load = self.star.recompute()
            self.max_egress_load = max(self.max_egress_load, load)
            return
        table = self.table
        n = table.n
        self.max_flows = max(self.max_flows, n)
        self.work += n
        if not n:
            self.t_flow = math.inf
            return
        if self.peer_flows:
            self._recompute_general()
            return
        gid = table.gid[:n]
        bound = self.g_nic[gid] / self.g_flows[gid]  # each class is one flow (of its group's m hosts)
        if self.conn_cap:
            bound = np.minimum(bound, self.conn_cap)
        weight = self.g_m[gid]
        level = star_level(self.reg.egress, bound, weight)
        rate = table.rate[:n] = np.minimum(bound, level)
        total = float(weight @ rate)
        self.max_egress_load = max(self.max_egress_load, total / self.reg.egress)
        self.t_flow = self.now + float(np.min(table.rem[:n] / rate))

    def _recompute_general(self) -> None:
        """With peer transfers in flight: registry flows cross the egress and their NIC, peer flows the item's
        holders' uplinks, the swarm's uplinks and their NIC (:func:`max_min_rates`)."""
        table = self.table
        n = table.n
        p2p = self.p2p
        assert p2p is not None  # peer flows exist only with P2P
        # the uplinks of the hosts downloading each item from peers, and of those holding nothing yet
        down: dict[Any, float] = {}
        fresh: dict[int, float] = {}
        seen: set[tuple[int, Any]] = set()
        for f in table.owner:
            if f.peer and (f.group.gid, f.item) not in seen:
                seen.add((f.group.gid, f.item))
                up = f.group.m * (p2p.uplink or f.group.nic)
                down[f.item] = down.get(f.item, 0.0) + up
                if not f.group.holds_any:
                    fresh[f.group.gid] = up
        capacity = [self.reg.egress, self.swarm_up + sum(fresh.values())]
        item_link: dict[Any, int] = {}
        nic_link: dict[int, int] = {}
        routes: list[tuple[int, ...]] = []
        mult = []
        for f in table.owner:
            g = f.group
            li = nic_link.get(g.gid)
            if li is None:
                li = nic_link[g.gid] = len(capacity)
                capacity.append(g.m * g.nic)
            if f.peer:
                il = item_link.get(f.item)
                if il is None:
                    il = item_link[f.item] = len(capacity)
                    capacity.append(self.holders[f.item] + p2p.efficiency * down[f.item])
                routes.append((1, il, li))
            else:
                routes.append((0, li))
            mult.append(g.m)
        caps = [self.conn_cap or math.inf] * n
        rates = np.array(max_min_rates(routes, capacity, mult=mult, caps=caps))
        table.rate[:n] = rates
        egress = sum(r * m for r, m, route in zip(rates, mult, routes, strict=True) if route[0] == 0)
        self.max_egress_load = max(self.max_egress_load, egress / self.reg.egress)
        self.t_flow = self.now + float(np.min(table.rem[:n] / rates))

    # --- a group's program --------------------------------------------------------------------------

    def _handle(self, ev: Ev) -> None:
        g = ev.group
        if g.failed:
            return
        if ev.kind == "arrive":
            self._release(g, -1, ev.t)
        elif ev.kind == "send":
            self._send(g, ev.k, ev.attempt)
        elif ev.kind == "body":
            self._body(g, ev.k, ev.t_sent)
        elif ev.kind == "peer":
            self._body(g, ev.k, ev.t_sent, peer=True)

    def _release(self, g: Group, k: int, t: float) -> None:
        """Request ``k`` of ``g`` (-1: the pull's start) is over at ``t``: start what waited for it."""
        marks = self._marks[id(g.prog)].get(k)
        if marks:
            for name, gap in marks:
                g.milestones[name] = t + gap - g.arrival
        reqs = g.prog.requests
        if not self.fold:
            for d in g.deps[k]:
                self.push(Ev(t + reqs[d].gap, g, "send", d))
            return
        for d in g.deps[k]:  # the send at t + gap, folded (see __init__): its body after latency + service
            r = reqs[d]
            ts = t + r.gap
            g.requests += 1
            if g.events is not None:
                g.events.append(("send", d, ts, 0, 200))
            service = self.reg.draw_service(self.rng)
            self.push(Ev(ts + r.latency + service, g, "body", d, 0, t_sent=ts))

    def _send(self, g: Group, k: int, attempt: int) -> None:
        r = g.prog.requests[k]
        t = self.now
        item = g.items[k] if g.items and attempt == 0 else None
        if item is not None:  # P2P: from the holders, or as one of the item's seeds, or wait for a first copy
            if self.holders.get(item, 0.0) > 0:
                g.requests += 1
                self.push(Ev(t + r.latency, g, "peer", k, t_sent=t))
                return
            assert self.p2p is not None  # items are P2P's only
            free = self.p2p.seeds - self.seeders.get(item, 0)
            if free <= 0:
                self._wait(g, item, k)
                return
            if free < g.m:
                self._wait(self._split(g, [free, g.m - free])[1], item, k)
            self.seeders[item] = self.seeders.get(item, 0) + g.m
            g.seeding.add(item)
        g.requests += 1
        served = g.m
        if self.reg.rate_limit is not None and (not self.reg.limited or r.what in self.reg.limited):
            dt = t - self.t_tokens
            self.tokens = min(max(1.0, self.reg.burst), self.tokens + dt * self.reg.rate_limit)
            self.t_tokens = t
            served = min(g.m, int(self.tokens + 1e-9))
            self.tokens -= served
        rejected = None
        if served < g.m:
            rejected = self._split(g, [served, g.m - served])[1] if served > 0 else g
        if served > 0:
            if g.events is not None:
                g.events.append(("send", k, t, attempt, 200))
            service = self.reg.draw_service(self.rng)
            self.push(Ev(t + r.latency + service, g, "body", k, attempt, t_sent=t))
        if rejected is not None:
            self._reject(rejected, k, attempt, t, r.latency)

    def _wait(self, g: Group, item: Any, k: int) -> None:
        self.waiting.setdefault(item, []).append((g, k))
        g.waits.append((item, k))

    def _wake(self, item: Any) -> None:
        """The item has a first copy in the swarm (or lost its seeds): its waiters ask again."""
        for g, k in self.waiting.pop(item, []):
            g.waits.remove((item, k))
            if not g.failed:
                self.push(Ev(self.now, g, "send", k))

    def _reject(self, g: Group, k: int, attempt: int, t: float, latency: float) -> None:
        """``g``'s request ``k`` was answered 429 (after ``latency``): wait as the client's policy says, or give up."""
        g.n429 += 1
        if g.events is not None:
            g.events.append(("send", k, t, attempt, 429))
        if attempt >= self.policy.max_retries:
            g.failed = f"request {k} ({g.prog.requests[k].what}): gave up after {attempt + 1} attempts (429)"
            for ev in g.pending:
                ev.alive = False
            g.pending.clear()
            if self.star is not None:
                self.star.drop(g.gid)
            for f in g.flows if self.star is None else ():
                self.table.remove(f)
            self.peer_flows -= sum(1 for f in g.flows if f.peer)
            g.flows.clear()
            self.g_flows[g.gid] = 0
            for item in g.seeding:  # its seeding is over: the waiters try to seed themselves
                self.seeders[item] -= g.m
                if self.seeders[item] <= 0:
                    self._wake(item)
            g.seeding.clear()
            self.dirty = True
            return
        n = min(g.m, self.spec.jitter_strata) if self.spec.group else 1
        sizes = [g.m // n + (1 if i < g.m % n else 0) for i in range(n)]
        parts = self._split(g, sizes) if n > 1 else [g]
        for i, part in enumerate(parts):
            u = (i + 0.5) / n if self.spec.group else self.rng.random()
            wait = self.policy.delay_at(attempt, self.reg.retry_after, u)
            self.push(Ev(t + latency + wait, part, "send", k, attempt + 1))

    def _body(self, g: Group, k: int, t_sent: float, *, peer: bool = False) -> None:
        nbytes = g.prog.requests[k].nbytes
        if nbytes <= 0:
            self._complete(g, k, self.now)
            return
        item = g.items[k] if g.items else None
        f = Flow(g, k, self.now, item if (peer or item in g.seeding) else None, peer)
        self.peer_flows += peer
        g.flows.append(f)
        if self.star is not None:
            self.star.add(g.gid, f, nbytes)
        else:
            self.table.add(f, nbytes)
        self.g_flows[g.gid] += 1
        self.dirty = True

    def _received(self, f: Flow) -> None:
        """A P2P item arrived at ``f``'s group: its hosts now serve it (and the swarm) with their uplinks."""
        g, item = f.group, f.item
        assert self.p2p is not None  # items are P2P's only
        up = g.m * (self.p2p.uplink or g.nic)
        self.holders[item] = self.holders.get(item, 0.0) + up
        if not g.holds_any:
            g.holds_any = True
            self.swarm_up += up
        if f.peer:
            self.peer_flows -= 1
            g.peer_bytes += g.prog.requests[f.k].nbytes
        elif item in g.seeding:
            g.seeding.discard(item)
            self.seeders[item] -= g.m
        self._wake(item)

    def _complete(self, g: Group, k: int, t_first: float) -> None:
        r = g.prog.requests[k]
        g.bytes += r.nbytes
        if g.events is not None:
            g.events.append(("done", k, t_first, self.now, r.nbytes))
        joined = self._joined[id(g.prog)].get(k)
        if joined:
            _join(g, joined, self.now)
        self._release(g, k, self.now)

    def _split(self, g: Group, sizes: list[int]) -> list[Group]:
        """Cut ``g`` into groups of ``sizes`` members (``g`` keeps the first), each with its whole history."""
        if sum(sizes) != g.m or any(s <= 0 for s in sizes):
            raise SimulationError(f"fleet: cannot split a group of {g.m} into {sizes}")
        out = [g]
        hosts = g.hosts
        lo = sizes[0]
        for size in sizes[1:]:
            part = hosts[lo : lo + size]
            lo += size
            sampled = bool(self.spec.sample_hosts) and any(h in self._sample for h in part)
            h = Group(-1, g.pool, g.prog, g.deps, part, g.nic, g.arrival, sampled, g.conn_cap)
            self._register(h)
            h.milestones, h.left = dict(g.milestones), dict(g.left)
            h.bytes, h.requests, h.n429 = g.bytes, g.requests, g.n429
            if h.events is not None and g.events is not None:
                h.events = list(g.events)
            h.items, h.peer_bytes, h.holds_any = g.items, g.peer_bytes, g.holds_any
            h.seeding, h.waits = set(g.seeding), list(g.waits)
            for item, k in h.waits:
                self.waiting[item].append((h, k))
            copies = {}
            for f in g.flows:
                c = copies[f] = Flow(h, f.k, f.t_first, f.item, f.peer)
                self.peer_flows += f.peer
                h.flows.append(c)
                if self.star is None:
                    self.table.add(c, self.table.rem[f.slot], self.table.rate[f.slot])
            if self.star is not None:
                self.star.clone(g.gid, h.gid, copies)
            self.g_flows[h.gid] = len(h.flows)
            for ev in list(g.pending):
                self.push(Ev(ev.t, h, ev.kind, ev.k, ev.attempt, ev.t_sent))
            out.append(h)
        g.hosts = hosts[: sizes[0]]
        g.m = sizes[0]
        self.g_m[g.gid] = g.m
        if self.star is not None:
            self.star.resize(g.gid, g.m)
        g.sampled = any(x in self._sample for x in g.hosts)
        if not g.sampled:
            g.events = None
        self.dirty = True
        return out


def _join(g: Group, joined: list[tuple[str, float]], t: float) -> None:
    """One of the requests the milestones ``joined`` wait for ended at ``t``: a milestone whose last it was is
    reached its gap later (requests end in time order, so the last to end is the latest)."""
    for name, gap in joined:
        g.left[name] -= 1
        if g.left[name] == 0:
            g.milestones[name] = t + gap - g.arrival


def _slot_desc(f: Flow) -> int:
    return -f.slot


def _group_request(f: Flow) -> tuple[int, int]:
    """Flows ending at one instant are handled in group, then request order (whatever engine kept them)."""
    return f.group.gid, f.k


__all__ = ["Engine", "Group"]
