"""What a fleet is: host pools, the registry in front of them, and when hosts arrive.

A :class:`FleetSpec` is plain data (picklable, so sweeps ship it to Dask workers). Hosts come in
:class:`HostPool`\\ s — a count, a NIC rate, the layers they already hold — and arrive all at once, as a
Poisson process, or in scale-out waves (:class:`Arrivals`). The :class:`Registry` has a finite egress
shared by every transfer from it, an optional request-rate limit (a token bucket; a request finding it
empty is answered ``429 Too Many Requests``, with a ``Retry-After`` header or without) and a per-request
service time (constant, or drawn from an exponential or log-normal distribution of that mean). Clients
retry a 429 as the real client does (:class:`soci_lab.retrypolicy.RetryPolicy`, from ``[http]``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ...errors import SimulationError
from ...retrypolicy import RetryPolicy

ARRIVALS = ("all", "poisson", "waves")
SERVICE = ("const", "exp", "lognormal")


@dataclass(frozen=True)
class Registry:
    """The registry every host pulls from.

    ``egress``: bytes/s shared by all its transfers; ``rate_limit``: requests/s the token bucket refills
    (None: no limit) with room for ``burst`` requests; ``retry_after``: the seconds its 429 answers carry in
    ``Retry-After`` (None: no header, so clients back off exponentially); ``service_s``: mean extra seconds
    a request spends in the registry before its first byte, distributed as ``service`` (``lognormal`` with
    ``service_sigma``); ``limited``: the request kinds the rate limit counts (``Request.what``: ``manifest``,
    ``config``, ``blob``, …; empty: every request) — Docker Hub's pull limit counts manifest GETs only. The
    host-side per-request overhead and RTT come from the host's calibration.
    """

    egress: float = 1.25e9
    rate_limit: float | None = None
    burst: float = 0.0
    retry_after: float | None = None
    service_s: float = 0.0
    service: str = "const"
    service_sigma: float = 1.0
    limited: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.egress <= 0:
            raise SimulationError(f"registry egress must be positive, not {self.egress}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise SimulationError(f"registry rate limit must be positive, not {self.rate_limit}")
        if self.service not in SERVICE:
            raise SimulationError(f"service time must be one of {', '.join(SERVICE)}, not {self.service!r}")
        if self.service_s < 0 or self.burst < 0:
            raise SimulationError("registry service time and burst must not be negative")

    def draw_service(self, rng: random.Random) -> float:
        """One request's service time."""
        if self.service_s <= 0 or self.service == "const":
            return self.service_s
        if self.service == "exp":
            return rng.expovariate(1.0 / self.service_s)
        s = self.service_sigma  # a log-normal of mean service_s
        return rng.lognormvariate(math.log(self.service_s) - s * s / 2, s)


@dataclass(frozen=True)
class HostPool:
    """``count`` identical hosts: NIC rate ``nic`` bytes/s (None: the host calibration's network bandwidth),
    already holding layers ``held`` (indices into the image; a warm node)."""

    count: int
    nic: float | None = None
    held: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.count < 0:
            raise SimulationError(f"a host pool's count must not be negative, not {self.count}")
        if self.nic is not None and self.nic <= 0:
            raise SimulationError(f"a NIC rate must be positive, not {self.nic}")


@dataclass(frozen=True)
class Arrivals:
    """When hosts start pulling: ``all`` at 0; ``poisson`` at ``rate`` hosts/s (seeded); ``waves`` of ``size``
    hosts every ``interval`` seconds (a scale-out in steps).

    ``quantum`` > 0 rounds every arrival down to a multiple of it — an approximation, stated in the result,
    that lets hosts arriving within one quantum run as one group (a Poisson fleet is otherwise one group per
    host, the engine's slowest case)."""

    kind: str = "all"
    rate: float = 100.0
    size: int = 100
    interval: float = 10.0
    quantum: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ARRIVALS:
            raise SimulationError(f"arrivals must be one of {', '.join(ARRIVALS)}, not {self.kind!r}")
        if self.kind == "poisson" and self.rate <= 0:
            raise SimulationError(f"a Poisson arrival rate must be positive, not {self.rate}")
        if self.kind == "waves" and (self.size < 1 or self.interval < 0):
            raise SimulationError("waves need a size of at least 1 and a non-negative interval")
        if self.quantum < 0:
            raise SimulationError(f"an arrival quantum must not be negative, not {self.quantum}")

    def times(self, n: int, rng: random.Random) -> list[float]:
        """The arrival time of each of ``n`` hosts, in host order."""
        if self.kind == "all":
            return [0.0] * n
        if self.kind == "waves":
            out = [(i // self.size) * self.interval for i in range(n)]
        else:
            t, out = 0.0, []
            for _ in range(n):
                out.append(t)
                t += rng.expovariate(self.rate)
        if self.quantum > 0:
            out = [math.floor(t / self.quantum) * self.quantum for t in out]
        return out


@dataclass(frozen=True)
class P2P:
    """Peer-to-peer distribution of layer data (blobs, chunks, spans), as Dragonfly, Kraken and DADI do.

    Assumptions (the fluid swarm of Qiu & Srikant, SIGCOMM 2004): an item (one request's bytes of a layer)
    is fetched from the registry by at most ``seeds`` hosts at a time while no host holds it; other hosts
    asking for it wait for that first copy (store-and-forward at the seed), then fetch it from the swarm.
    Each host uploads at ``uplink`` bytes/s (None: its NIC rate). The hosts downloading an item from peers
    exchange its pieces among themselves, so the item's transfers share the uplinks of its holders plus
    ``efficiency`` times those of its downloaders (piece exchange; 1: every downloader's uplink is useful, as
    for many pieces and rarest-first); every peer transfer also crosses the whole swarm's uplinks (each host
    holding or downloading anything counted once) and the downloader's NIC. Manifests, configs and indexes
    come from the registry, through its rate limit; peer requests do not. No tree depth, peer selection or
    piece scheduling is modelled beyond that sharing.
    """

    seeds: int = 1
    uplink: float | None = None
    efficiency: float = 1.0

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise SimulationError(f"P2P needs at least one seed, not {self.seeds}")
        if self.uplink is not None and self.uplink <= 0:
            raise SimulationError(f"a peer uplink must be positive, not {self.uplink}")
        if not 0.0 <= self.efficiency <= 1.0:
            raise SimulationError(f"P2P efficiency must be within [0, 1], not {self.efficiency}")


@dataclass(frozen=True)
class FleetSpec:
    """A fleet: its host pools (in host-id order), the registry, arrivals, the retry policy of its clients,
    and how the engine may group hosts.

    ``group``: identical hosts (same pool, same arrival time) run as one group, exact by symmetry;
    ``jitter_strata``: hosts of a group answered 429 together split into at most this many subgroups, each
    waiting the policy's delay at the middle of its share of the jitter range (exact in distribution as the
    strata grow; with ``group=False`` each host draws its own jitter); ``sample_hosts``: host ids whose
    every request is kept as an event; ``seed``: arrivals, service times and jitter; ``p2p``: peer-to-peer
    distribution of layer data (:class:`P2P`; None: every byte from the registry).
    """

    pools: tuple[HostPool, ...] = (HostPool(1),)
    registry: Registry = field(default_factory=Registry)
    arrivals: Arrivals = field(default_factory=Arrivals)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    group: bool = True
    jitter_strata: int = 8
    sample_hosts: tuple[int, ...] = (0,)
    seed: int = 0
    p2p: P2P | None = None

    @property
    def hosts(self) -> int:
        return sum(p.count for p in self.pools)


__all__ = ["ARRIVALS", "P2P", "SERVICE", "Arrivals", "FleetSpec", "HostPool", "Registry"]
