"""From which body size the registry client takes its fast path: one constant, read by the client and by the
simulator.

The real client (:mod:`soci_lab.remote.ranges`) sends GETs of at least :data:`FAST_MIN_BYTES` body bytes over
urllib3's pooled connections on worker threads (:mod:`soci_lab.remote.fastpath`) and smaller ones through
httpx. The two paths have different first-byte costs, which the calibration fits apart
(:mod:`soci_lab.sim.calibrate`, from the ``fast`` detail of ``http_request`` events) and the simulator charges
by this same threshold (:mod:`soci_lab.sim.network`). It lives in a leaf module of its own, like
:mod:`soci_lab.slotqueue`, because the house rules keep ``sim/`` from importing ``remote/`` (which would also
load httpx), not from sharing a constant with it.
"""

from __future__ import annotations

#: Transfers at least this large take the fast path; smaller ones stay on httpx (benchmarks/bulk_http.py and
#: benchmarks/README.md compare the two, and curl).
FAST_MIN_BYTES = 512 << 10

__all__ = ["FAST_MIN_BYTES"]
