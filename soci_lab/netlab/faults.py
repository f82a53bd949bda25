"""Fault specs (``--faults``) and the seeded plan that decides, request by request, which fault to inject.

Spec grammar (docs/cli.md): comma-separated ``key=value`` pairs, each rate a probability per response:
``seed=N``, ``http500=R``, ``http503=R``, ``http429=R`` (answer with that status instead of forwarding),
``reset=R`` (abort the TCP connection mid-body), ``truncate=R`` (close cleanly mid-body, the
Content-Length announcing more), ``corrupt=R`` (flip one byte of the body), ``stall=R:DURATION`` (pause
mid-body). soci_lab adds ``retry-after=DURATION``: the ``Retry-After`` header sent with injected 429/503
answers (none by default). Rates must sum to at most 1: at most one fault hits a response.

Reproducibility: a ``random.Random(seed)`` draws exactly two numbers per request, in the order requests
arrive, whether or not a fault fires: the first picks the fault, the second where in the body it strikes.
So one seed and one request sequence always give the same faults. A body fault drawn for a response
without a body to break (HEAD, errors, redirects, bodies of unknown length or under 2 bytes) is not
injected and not counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from ..errors import InvalidFaultSpec, InvalidInput
from ..units import parse_duration

#: status faults: the proxy answers with this status instead of forwarding
STATUS_FAULTS = {"http500": 500, "http503": 503, "http429": 429}
#: body faults: the body of a forwarded 200/206 response is broken
BODY_FAULTS = ("reset", "truncate", "corrupt", "stall")
FAULT_KINDS = (*STATUS_FAULTS, *BODY_FAULTS)


@dataclass(frozen=True)
class FaultSpec:
    """Parsed ``--faults``: a probability per response for each kind, a seed and the stall duration."""

    seed: int | None = None
    http500: float = 0.0
    http503: float = 0.0
    http429: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    corrupt: float = 0.0
    stall: float = 0.0
    stall_duration: float = 1.0
    retry_after: float | None = None

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            rate = getattr(self, kind)
            if not 0.0 <= rate <= 1.0:
                raise InvalidFaultSpec(f"fault rate {kind}={rate} is not a probability in [0, 1]")
        if self.total > 1.0 + 1e-9:
            raise InvalidFaultSpec(f"fault rates sum to {self.total:g}, more than 1")
        if self.stall_duration < 0:
            raise InvalidFaultSpec("stall duration must not be negative")

    @property
    def total(self) -> float:
        """Probability that a response gets some fault."""
        return sum(getattr(self, kind) for kind in FAULT_KINDS)

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """Parse a spec string such as ``"seed=7,http500=0.1,stall=0.02:2s"`` (empty: no faults)."""
        values: dict[str, object] = {}
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip().lower().replace("_", "-"), value.strip()
            if not sep or not value:
                raise InvalidFaultSpec(f"fault spec item {item!r} is not key=value")
            try:
                if key == "seed":
                    values["seed"] = int(value)
                elif key == "retry-after":
                    values["retry_after"] = parse_duration(value)
                elif key == "stall":
                    rate, _, duration = value.partition(":")
                    values["stall"] = float(rate)
                    if duration:
                        values["stall_duration"] = parse_duration(duration)
                elif key in FAULT_KINDS:
                    values[key] = float(value)
                else:
                    known = ", ".join(("seed", *FAULT_KINDS, "retry-after"))
                    raise InvalidFaultSpec(f"unknown fault {key!r} (known: {known})")
            except InvalidFaultSpec:
                raise
            except (ValueError, InvalidInput) as exc:
                raise InvalidFaultSpec(f"bad value in fault spec item {item!r}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts = [] if self.seed is None else [f"seed={self.seed}"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in FAULT_KINDS and value:
                parts.append(f"{f.name}={value:g}" + (f":{self.stall_duration:g}s" if f.name == "stall" else ""))
        if self.retry_after is not None:
            parts.append(f"retry-after={self.retry_after:g}s")
        return ",".join(parts)


@dataclass(frozen=True)
class FaultDecision:
    """What the plan decided for one request: a fault kind (or None) and where in the body it strikes."""

    index: int
    kind: str | None
    position: float

    def cut(self, length: int) -> int:
        """The body offset where a body fault strikes: at least 1 byte in, at least 1 byte short."""
        return max(1, min(length - 1, int(self.position * length)))


class FaultPlan:
    """Draws a ``FaultDecision`` per request from a seeded generator (see the module docstring)."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self._rng = random.Random(spec.seed)
        self._count = 0

    def next(self) -> FaultDecision:
        pick, position = self._rng.random(), self._rng.random()
        index = self._count
        self._count += 1
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += getattr(self.spec, kind)
            if pick < edge:
                return FaultDecision(index, kind, position)
        return FaultDecision(index, None, position)
