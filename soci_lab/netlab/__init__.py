"""The network lab: an embedded OCI registry on loopback and a shaping proxy for any registry.

``EmbeddedRegistry`` serves per-repository OCI layouts over the distribution spec (pull, push, ranged
GETs, referrers API, optional token auth). ``ShapingProxy`` sits in front of any registry and adds a
shared bandwidth limit, latency, a per-connection cap and seeded fault injection. Both run in a
background thread with their own asyncio loop, so they work from sync code, notebooks and trio alike.
"""

from .distribution import DistributionRegistry
from .faults import FaultDecision, FaultPlan, FaultSpec
from .proxy import InjectedFault, ProxyStats, ShapingProxy
from .registry import EmbeddedRegistry, RegistryApp, RegistryStats
from .registry_auth import RegistryAuth
from .registry_store import RepositoryStore
from .shaping import TokenBucket

__all__ = [
    "DistributionRegistry",
    "EmbeddedRegistry",
    "FaultDecision",
    "FaultPlan",
    "FaultSpec",
    "InjectedFault",
    "ProxyStats",
    "RegistryApp",
    "RegistryAuth",
    "RegistryStats",
    "RepositoryStore",
    "ShapingProxy",
    "TokenBucket",
]
