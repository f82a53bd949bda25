"""argparse ``type=`` converters shared by the command groups: a bad value is a usage error (exit 2).

Each wraps one of the package's own parsers, so the message a user sees is the parser's one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from ..errors import InvalidInput
from ..oci import Digest, Platform, Reference
from ..units import parse_duration, parse_rate, parse_size

T = TypeVar("T")


def usage(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """``parse`` with :class:`InvalidInput` turned into argparse's usage error; ``name`` shows in ``--help``."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except InvalidInput as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    convert.__doc__ = parse.__doc__
    return convert


#: A REF (``HOST[:PORT]/REPO[:TAG|@DIGEST]`` or ``oci:PATH[:TAG]``).
reference = usage(Reference.parse, "reference")
#: A size in bytes, zero allowed (``4MiB``, ``8mb``, ``4194304``).
size = usage(parse_size, "size")
#: A rate such as ``100Mbit`` or ``12.5MB/s``, in bytes/s.
rate = usage(parse_rate, "rate")
#: A duration such as ``20ms`` or ``1.5s``, in seconds.
duration = usage(parse_duration, "duration")


def _parse_fault_spec(text: str) -> object:
    """:meth:`FaultSpec.parse`, imported on use: ``soci_lab.netlab`` brings aiohttp and httpx (~0.2 s), which
    a command that takes no ``--faults`` (``mount`` above all) should not pay at start."""
    from ..netlab.faults import FaultSpec

    return FaultSpec.parse(text)


#: A ``--faults`` spec string of the shaping proxy.
fault_spec = usage(_parse_fault_spec, "fault_spec")
#: ``os/arch[/variant]``.
platform = usage(Platform.parse, "platform")
#: ``os/arch[/variant]``, normalised, as a string.
platform_text = usage(lambda text: str(Platform.parse(text)), "platform")
#: ``algo:hex``, as its canonical string.
digest_text = usage(lambda text: str(Digest(text)), "digest")


def positive_size(text: str) -> int:
    """A size in bytes greater than zero."""
    n = size(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return n


def nonnegative_size(text: str) -> int:
    """A size in bytes, zero or more."""
    n = size(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"size must not be negative: {text!r}")
    return n
