"""Flows over the registry's egress and each host's NIC, kept per group with virtual clocks (no per-flow sweep).

Without peer-to-peer every flow crosses exactly two links: the registry's egress (shared) and its host's NIC
(``m`` NICs for a group of ``m`` hosts). All the flows of a group then get the same max-min rate,
``min(b, L)``: ``b = min(nic / n, conn_cap)`` with ``n`` the group's flows in flight (per host), and ``L``
the egress's water level (:func:`.flows.star_level`). So a group is either *NIC-bound* (``b < L``: its
flows move at ``b``) or *egress-bound* (its flows move at ``L``), and within a group every flow has moved the
same number of bytes since the group's clock started — its *progress* ``P``. A flow started at progress
``P`` with ``x`` bytes ends when the group's progress reaches ``P + x``: one heap of targets per group.

The egress-bound groups all move at ``L``, so their progress is one global virtual clock ``V`` (bytes a flow
at the egress's level moved, ``dV/dt = L``) plus an offset: their next completions sit in one heap keyed in
``V``, untouched when ``L`` changes. NIC-bound groups' next completions sit in a heap keyed in time. When a
flow starts or ends only its group is re-keyed; ``L`` is kept from integer sums (egress-bound flows
``W = Σ m·n``; NIC-bound demand ``Σ m·nic`` or ``Σ m·n·cap``, counted per distinct rate), and the groups
whose side of ``L`` changed move between the two sides, one heap operation each. An instant costs
``O(c log G)`` for ``c`` changed groups of ``G`` — not ``O(F)`` for ``F`` flows in flight — and the rates
are those of the water-filling over every flow (a test holds the two engines together).
"""

from __future__ import annotations

import heapq
import math
from typing import Any

#: bytes (plus 1 ns at the flow's rate) under which a flow counts as arrived
BYTES_EPS = 1e-3
#: relative slack under which a group's bound counts as equal to the level (no move)
LEVEL_EPS = 1e-12
#: moves between the sides within one instant after which the level is found from scratch
MAX_MOVES = 64

NONE, EGRESS, NIC = 0, 1, 2


class _St:
    """A group's flows: multiplicity, NIC, flows in flight, its side of the level and its clock."""

    __slots__ = ("b", "key", "m", "mode", "n", "nic", "p0", "t0", "targets", "v0", "ver", "w")

    def __init__(self, m: int, nic: float) -> None:
        self.m, self.nic = m, nic
        self.n = 0
        self.b = math.inf
        self.mode = NONE
        self.key: tuple[float, int] = (0.0, 0)  # NIC side: (rate, count) in the demand sums
        self.w = 0  # egress side: m·n
        self.p0 = 0.0
        self.t0 = 0.0
        self.v0 = 0.0
        self.ver = 0
        self.targets: list[tuple[float, int, Any]] = []


class StarFlows:
    """The flows in flight of every group, for the egress + NIC topology (see the module's docstring)."""

    def __init__(self, egress: float, conn_cap: float | None) -> None:
        self.egress = float(egress)
        self.cap = float(conn_cap) if conn_cap else math.inf
        self.now = 0.0
        self.v = 0.0
        self.level = math.inf
        self.w_e = 0  # Σ m·n over egress-bound groups (an exact integer)
        self.demand: dict[float, int] = {}  # NIC-bound: rate → integer count (Σ of rate·count is their demand)
        self.s_n = 0.0
        self.st: list[_St] = []
        self.eside: list[tuple[float, int, int, int]] = []  # (b, seq, gid, ver): egress-bound, smallest b first
        self.nside: list[tuple[float, int, int, int]] = []  # (-b, seq, gid, ver): NIC-bound, largest b first
        self.c_e: list[tuple[float, int, int, int]] = []  # (V of next completion, seq, gid, ver)
        self.c_n: list[tuple[float, int, int, int]] = []  # (time of next completion, seq, gid, ver)
        self.changed: dict[int, None] = {}
        self.n = 0  # flows in flight (one per group, whatever its multiplicity)
        self.seq = 0
        self.rebuilds = 0
        self.moves = 0
        self.touched = 0  # groups whose rate was set again, over the run

    # --- groups and flows ---------------------------------------------------------------------------

    def register(self, gid: int, m: int, nic: float) -> None:
        assert gid == len(self.st)
        self.st.append(_St(m, nic))

    def resize(self, gid: int, m: int) -> None:
        self.st[gid].m = m
        self.changed[gid] = None

    def _progress(self, s: _St) -> float:
        if s.mode == EGRESS:
            return s.p0 + (self.v - s.v0)
        if s.mode == NIC:
            return s.p0 + s.b * (self.now - s.t0)
        return s.p0

    def add(self, gid: int, flow: Any, nbytes: float) -> None:
        """A flow of ``nbytes`` (per host) starts now in group ``gid``."""
        s = self.st[gid]
        self.seq += 1
        heapq.heappush(s.targets, (self._progress(s) + nbytes, self.seq, flow))
        s.n += 1
        self.n += 1
        self.changed[gid] = None

    def clone(self, src: int, dst: int, flows: dict[Any, Any]) -> None:
        """Group ``dst`` (new, same NIC) takes a copy of ``src``'s flows (``flows``: old flow → its copy) and
        its clock, so both keep exactly the same progress."""
        s, d = self.st[src], self.st[dst]
        p = self._progress(s)
        s.p0, s.t0, s.v0 = p, self.now, self.v
        d.p0, d.t0, d.v0 = p, self.now, self.v
        d.targets = [(t, q, flows[f]) for t, q, f in s.targets]  # a heap already (same order)
        d.n = s.n
        self.n += d.n
        self.changed[src] = None
        self.changed[dst] = None

    def drop(self, gid: int) -> None:
        """Group ``gid``'s flows stop (it gave up)."""
        s = self.st[gid]
        self.n -= s.n
        s.p0 = self._progress(s)
        s.t0, s.v0 = self.now, self.v
        s.targets = []
        s.n = 0
        self.changed[gid] = None

    # --- time ---------------------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        if t > self.now:
            if self.w_e:
                self.v += self.level * (t - self.now)
            self.now = t

    def next_time(self) -> float:
        """When the next flow ends at the current rates (inf: no flow in flight)."""
        t = math.inf
        c_e, c_n, st = self.c_e, self.c_n, self.st
        while c_e and (st[c_e[0][2]].ver != c_e[0][3] or st[c_e[0][2]].mode != EGRESS):
            heapq.heappop(c_e)
        if c_e:
            t = self.now + max(0.0, c_e[0][0] - self.v) / self.level
        while c_n and (st[c_n[0][2]].ver != c_n[0][3] or st[c_n[0][2]].mode != NIC):
            heapq.heappop(c_n)
        if c_n and c_n[0][0] < t:
            t = c_n[0][0]
        return t

    def finished(self) -> list[Any]:
        """The flows that have arrived by now (removed), in group then start order."""
        out: list[Any] = []
        st = self.st
        c_e, c_n = self.c_e, self.c_n
        due: list[int] = []
        if self.w_e:
            lim = self.v + BYTES_EPS + self.level * 1e-9
            while c_e and c_e[0][0] <= lim:
                _, _, gid, ver = heapq.heappop(c_e)
                if st[gid].ver == ver and st[gid].mode == EGRESS:
                    due.append(gid)
        while c_n:
            t, _, gid, ver = c_n[0]
            s = st[gid]
            if s.ver != ver or s.mode != NIC:
                heapq.heappop(c_n)
                continue
            if t > self.now + 1e-9 + BYTES_EPS / s.b:
                break
            heapq.heappop(c_n)
            due.append(gid)
        for gid in sorted(due):
            s = st[gid]
            p = self._progress(s)
            lim = p + 2 * BYTES_EPS + (s.b if s.mode == NIC else self.level) * 2e-9
            while s.targets and s.targets[0][0] <= lim:
                out.append(heapq.heappop(s.targets)[2])
                s.n -= 1
                self.n -= 1
            self.changed[gid] = None
        return out

    # --- rates --------------------------------------------------------------------------------------

    def _leave(self, s: _St) -> None:
        """Take ``s`` out of the sums (its clock settled at now first)."""
        s.p0 = self._progress(s)
        s.t0, s.v0 = self.now, self.v
        if s.mode == EGRESS:
            self.w_e -= s.w
        elif s.mode == NIC:
            rate, count = s.key
            left = self.demand[rate] - count
            if left:
                self.demand[rate] = left
            else:
                del self.demand[rate]
            self._sum_demand()
        s.mode = NONE
        s.ver += 1

    def _join(self, gid: int, s: _St, mode: int) -> None:
        s.mode = mode
        self.seq += 1
        if mode == EGRESS:
            s.w = s.m * s.n
            self.w_e += s.w
            heapq.heappush(self.eside, (s.b, self.seq, gid, s.ver))
        else:
            # a NIC-bound group's demand is m·nic, or m·n·cap when the per-connection cap binds: integer counts
            s.key = (s.nic, s.m) if s.nic <= s.n * self.cap else (self.cap, s.m * s.n)
            self.demand[s.key[0]] = self.demand.get(s.key[0], 0) + s.key[1]
            self._sum_demand()
            heapq.heappush(self.nside, (-s.b, self.seq, gid, s.ver))

    def _sum_demand(self) -> None:
        self.s_n = math.fsum(rate * count for rate, count in self.demand.items())

    def _level(self) -> float:
        if self.w_e:
            return (self.egress - self.s_n) / self.w_e
        return math.inf if self.s_n <= self.egress else -math.inf

    def recompute(self) -> tuple[float, float]:
        """Settle the changed groups at their rates; return (next completion time, egress load 0..1)."""
        st = self.st
        now, v, cap, level = self.now, self.v, self.cap, self.level
        push = heapq.heappush
        touched = list(self.changed)
        self.changed.clear()
        demand = False
        for gid in touched:  # each leaves its side (clock settled at now), then joins the side its bound says
            s = st[gid]
            mode = s.mode
            if mode == EGRESS:
                s.p0 += v - s.v0
                self.w_e -= s.w
            elif mode == NIC:
                s.p0 += s.b * (now - s.t0)
                rate, count = s.key
                left = self.demand[rate] - count
                if left:
                    self.demand[rate] = left
                else:
                    del self.demand[rate]
                demand = True
            s.t0, s.v0, s.mode = now, v, NONE
            s.ver += 1
            n = s.n
            if n > 0 and s.m > 0:
                b = s.nic / n
                if b > cap:
                    b = cap
                s.b = b
                self.seq += 1
                if b < level:
                    s.mode = NIC
                    s.key = key = (s.nic, s.m) if s.nic <= n * cap else (cap, s.m * n)
                    self.demand[key[0]] = self.demand.get(key[0], 0) + key[1]
                    demand = True
                    push(self.nside, (-b, self.seq, gid, s.ver))
                else:
                    s.mode = EGRESS
                    s.w = w = s.m * n
                    self.w_e += w
                    push(self.eside, (b, self.seq, gid, s.ver))
        if demand:
            self._sum_demand()
        moves = 0
        eside, nside = self.eside, self.nside
        while True:
            level = self._level()
            while eside:
                e = eside[0]
                g = st[e[2]]
                if g.ver == e[3] and g.mode == EGRESS:
                    break
                heapq.heappop(eside)
            while nside:
                e = nside[0]
                g = st[e[2]]
                if g.ver == e[3] and g.mode == NIC:
                    break
                heapq.heappop(nside)
            if eside and eside[0][0] < level * (1 - LEVEL_EPS):
                gid, to = eside[0][2], NIC
            elif nside and -nside[0][0] > level * (1 + LEVEL_EPS):
                gid, to = nside[0][2], EGRESS
            else:
                break
            moves += 1
            extra = dict.fromkeys(touched)
            if moves > MAX_MOVES:
                self._rebuild(extra)
                touched = list(extra)
                level = self._level()
                break
            s = st[gid]
            self._leave(s)
            self._join(gid, s, to)
            if gid not in extra:
                touched.append(gid)
            eside, nside = self.eside, self.nside
        self.moves += moves
        self.touched += len(touched)
        self.level = level
        c_e, c_n = self.c_e, self.c_n
        for gid in touched:
            s = st[gid]
            if s.mode == NONE or not s.targets:
                continue
            self.seq += 1
            ahead = s.targets[0][0] - s.p0
            if s.mode == EGRESS:
                push(c_e, (v + ahead, self.seq, gid, s.ver))
            else:
                push(c_n, (now + ahead / s.b, self.seq, gid, s.ver))
        if len(c_e) > 64 + 4 * len(st) or len(c_n) > 64 + 4 * len(st):
            self._compact()
        load = (self.s_n + (self.w_e * level if self.w_e else 0.0)) / self.egress
        return self.next_time(), load

    def _rebuild(self, touched: dict[int, None]) -> None:
        """Every group with flows put on its side of the level found from scratch (water-filling in ascending
        bound order) — when many groups cross the level in one instant."""
        self.rebuilds += 1
        live = [(s.b, gid) for gid, s in enumerate(self.st) if s.mode != NONE]
        for _, gid in live:
            self._leave(self.st[gid])
        live.sort()
        total = sum(self.st[gid].m * self.st[gid].n for _, gid in live)
        used = 0.0
        level = math.inf
        for i, (b, gid) in enumerate(live):
            s = self.st[gid]
            if b * total + used > self.egress:  # the egress fills before this class reaches its bound
                level = (self.egress - used) / total
                for _, rest in live[i:]:
                    self._join(rest, self.st[rest], EGRESS)
                    touched[rest] = None
                break
            used += b * s.m * s.n
            total -= s.m * s.n
            self._join(gid, s, NIC)
            touched[gid] = None
        del level  # the sums give it back exactly

    def _compact(self) -> None:
        st = self.st
        self.c_e = [e for e in self.c_e if st[e[2]].ver == e[3] and st[e[2]].mode == EGRESS]
        self.c_n = [e for e in self.c_n if st[e[2]].ver == e[3] and st[e[2]].mode == NIC]
        self.eside = [e for e in self.eside if st[e[2]].ver == e[3] and st[e[2]].mode == EGRESS]
        self.nside = [e for e in self.nside if st[e[2]].ver == e[3] and st[e[2]].mode == NIC]
        for h in (self.c_e, self.c_n, self.eside, self.nside):
            heapq.heapify(h)


__all__ = ["StarFlows"]
