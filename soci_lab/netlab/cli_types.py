"""argparse ``type=`` converters for the netlab commands: a bad value is a usage error (exit code 2)."""

from __future__ import annotations

import argparse

from ..errors import InvalidInput
from ..units import parse_duration, parse_rate
from .faults import FaultSpec


def rate(text: str) -> float:
    """A rate such as ``100Mbit`` or ``12.5MB/s``, in bytes/s."""
    try:
        return parse_rate(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration(text: str) -> float:
    """A duration such as ``20ms`` or ``1.5s``, in seconds."""
    try:
        return parse_duration(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fault_spec(text: str) -> FaultSpec:
    """A ``--faults`` spec string."""
    try:
        return FaultSpec.parse(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
