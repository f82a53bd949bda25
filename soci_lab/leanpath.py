"""From which body size the registry client takes its lean HTTP path: one constant, read by the client and
by the simulator.

The real client (:mod:`soci_lab.remote.ranges`) sends GETs of at least :data:`FAST_MIN_BYTES` body bytes over
pooled raw sockets (:mod:`soci_lab.remote.fastget`, :mod:`soci_lab.remote.leanpool`) and smaller ones
through httpx. The two paths have different first-byte costs, which the calibration fits apart
(:mod:`soci_lab.sim.calibrate`) and the simulator charges by this same threshold
(:mod:`soci_lab.sim.network`). It lives in a leaf module of its own, like :mod:`soci_lab.slotqueue`, because
the house rules keep ``sim/`` from importing ``remote/`` (which would also load httpx), not from sharing a
constant with it.
"""

from __future__ import annotations

#: Transfers at least this large take the lean path; smaller ones stay on httpx. Pooled lean GETs are faster
#: down to 512 KiB (benchmarks/lean_ranges.py: 0.47-0.80x httpx's wall time for 8 MiB-512 KiB ranges written
#: to a file, faster at every size read into memory).
FAST_MIN_BYTES = 512 << 10

__all__ = ["FAST_MIN_BYTES"]
