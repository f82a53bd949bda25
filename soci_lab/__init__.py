"""soci_lab: an instrumented re-creation of a lazy-loading snapshotter's data path.

Rooms along the data path (see docs/architecture.md): ``oci`` (model and local store), ``remote``
(registry client), ``ztoc`` (formats), ``artifacts`` (index discovery), ``lazy`` and ``unpack`` (the two
ways a layer reaches the host), ``snapshot`` (the Filesystem), ``workload``, ``events`` and ``analysis``;
beside it ``netlab`` (embedded registry, shaping proxy), ``store`` (Hermes) and ``sim`` (simpy models).
"""

__version__ = "0.1.0"
