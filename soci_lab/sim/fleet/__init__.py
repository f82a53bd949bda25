"""soci_lab.sim.fleet — many hosts pulling one image through one registry, at flow level.

- ``flows``: max-min fair rates over shared links (progressive filling), for flows of any multiplicity;
- ``program``: a host's pull as a request program, read from the single-host simulator's run (no second
  host model: its gaps are the single-host model's CPU, disk and FUSE costs under its calibration);
- ``model``: :class:`FleetSpec` — host pools (NIC, warm layers), the :class:`Registry` (egress, request-rate
  limit answered 429 + Retry-After, service time), :class:`Arrivals` (all, Poisson, waves);
- ``star``: the flows of the egress + NIC topology (no P2P) kept per group on virtual clocks, so an instant
  costs the groups it changed, not every flow in flight (the dense water-filling is the reference);
- ``engine``: the event loop over groups of identical hosts (exact by symmetry, split when they diverge);
- ``run``: :func:`simulate_fleet` → :class:`FleetRun` (per-group frame, percentiles, sampled hosts' events);
- ``sweep``: grids of fleets on Dask distributed (or any Executor).

Like the rest of ``sim/`` it imports nothing of the real data path; the retry policy it shares with the real
client is the leaf :mod:`soci_lab.retrypolicy`.
"""

from .flows import max_min_rates
from .model import P2P, Arrivals, FleetSpec, HostPool, Registry
from .program import HostProgram, Request, host_program, program_of, without_layers
from .run import FleetRun, simulate_fleet
from .sweep import GRID_KEYS, spec_for, sweep_fleet

__all__ = [
    "GRID_KEYS",
    "P2P",
    "Arrivals",
    "FleetRun",
    "FleetSpec",
    "HostPool",
    "HostProgram",
    "Registry",
    "Request",
    "host_program",
    "max_min_rates",
    "program_of",
    "simulate_fleet",
    "spec_for",
    "sweep_fleet",
    "without_layers",
]
