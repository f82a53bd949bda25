"""Parsing of the human units the CLI and config files accept: sizes, rates and durations.

Sizes: ``4194304``, ``4MiB``, ``8mb``, ``1GiB`` (``kb``/``mb``/``gb`` are binary, as soci's
``concurrent_download_chunk_size`` reads them; ``KB``-style SI is not distinguished on purpose).
Rates: ``100Mbit``, ``12.5MB/s``, ``1Gbit`` → bytes per second. Durations: ``20ms``, ``1.5s``, ``2m``.
"""

from __future__ import annotations

import re

from .errors import InvalidInput

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1024**4, "tib": 1024**4,
}
_NUM = r"\s*(\d+(?:\.\d+)?)\s*"


def parse_size(text: str | int) -> int:
    """Bytes in ``text`` (an int passes through)."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidInput(f"size must not be negative: {text}")
        return text
    m = re.fullmatch(_NUM + r"([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise InvalidInput(f"not a size: {text!r} (examples: 4194304, 4MiB, 8mb, 1GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


_RATE_BITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
_RATE_BYTES = {"b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "kib/s": 1024, "mib/s": 1024**2, "gib/s": 1024**3}


def parse_rate(text: str | float) -> float:
    """Bytes per second in ``text`` (``100Mbit``, ``12.5MB/s``, ``1Gbit``; a bare number is bytes/s)."""
    if isinstance(text, int | float):
        if text <= 0:
            raise InvalidInput(f"rate must be positive: {text}")
        return float(text)
    m = re.fullmatch(_NUM + r"([a-zA-Z/]*)\s*", str(text))
    if m:
        value, unit = float(m.group(1)), m.group(2).lower()
        if unit == "":
            rate = value
        elif unit in _RATE_BITS:
            rate = value * _RATE_BITS[unit] / 8
        elif unit in _RATE_BYTES:
            rate = value * _RATE_BYTES[unit]
        else:
            rate = -1
        if rate > 0:
            return rate
    raise InvalidInput(f"not a rate: {text!r} (examples: 100Mbit, 12.5MB/s, 1Gbit)")


_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str | float) -> float:
    """Seconds in ``text`` (``20ms``, ``1.5s``, ``2m``; a bare number is seconds)."""
    if isinstance(text, int | float):
        if text < 0:
            raise InvalidInput(f"duration must not be negative: {text}")
        return float(text)
    m = re.fullmatch(_NUM + r"([a-zA-Zµ]*)\s*", str(text))
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise InvalidInput(f"not a duration: {text!r} (examples: 20ms, 1.5s)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def format_size(n: float) -> str:
    """A short human form of a byte count (``4.0 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
