"""argparse ``type=`` converters shared by the command groups: a bad value is a usage error (exit 2)."""

from __future__ import annotations

import argparse

from ..errors import InvalidInput
from ..oci import Reference
from ..units import parse_size


def reference(text: str) -> Reference:
    """A REF (``HOST[:PORT]/REPO[:TAG|@DIGEST]`` or ``oci:PATH[:TAG]``)."""
    try:
        return Reference.parse(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def size(text: str) -> int:
    """A size in bytes, zero allowed (``4MiB``, ``8mb``, ``4194304``)."""
    try:
        return parse_size(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_size(text: str) -> int:
    """A size in bytes greater than zero."""
    n = size(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return n
