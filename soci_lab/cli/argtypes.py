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
#: A REF checked like :data:`reference`, kept as the text the user gave.
reference_text = usage(lambda text: (Reference.parse(text), text)[1], "reference")
#: A size in bytes, zero allowed (``4MiB``, ``8mb``, ``4194304``).
size = usage(parse_size, "size")


def _needs_unit(kind: str, examples: str, zero_ok: bool) -> Callable[[str], str]:
    """A check that ``text`` names its unit: on a command line a bare ``20`` is ambiguous (``--rtt 20``
    meant 20 s where 20 ms was wanted), so rates and durations must say which."""

    def check(text: str) -> str:
        bare = text.strip()
        if bare and bare.replace(".", "", 1).isdigit() and not (zero_ok and float(bare) == 0):
            raise InvalidInput(f"{kind} {text!r} needs a unit (examples: {examples})")
        return text

    return check


_rate_unit = _needs_unit("rate", "100Mbit, 12.5MB/s, 1Gbit", zero_ok=False)
_duration_unit = _needs_unit("duration", "20ms, 1.5s, 10m", zero_ok=True)

#: A rate such as ``100Mbit`` or ``12.5MB/s``, in bytes/s; a bare number is refused (which unit?).
rate = usage(lambda text: parse_rate(_rate_unit(text)), "rate")
#: A duration such as ``20ms`` or ``1.5s``, in seconds; a bare number other than 0 is refused.
duration = usage(lambda text: parse_duration(_duration_unit(text)), "duration")


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


def fraction(text: str) -> float:
    """A number from 0 to 1 (``0.25``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number greater than zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {value}")
    return value


MODES = ("lazy", "parallel", "sequential")


def modes(text: str) -> tuple[str, ...]:
    """A comma-separated list of pull modes (``lazy,parallel``), each once."""
    out = tuple(m.strip() for m in text.split(",") if m.strip())
    if not out:
        raise argparse.ArgumentTypeError("no mode given (choose from lazy, parallel, sequential)")
    for m in out:
        if m not in MODES:
            import difflib

            near = difflib.get_close_matches(m, MODES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise argparse.ArgumentTypeError(f"unknown mode {m!r} (choose from lazy, parallel, sequential){hint}")
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"a mode is named twice: {text!r}")
    return out


def url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (``http://127.0.0.1:5000``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        hint = f" (e.g. http://{text})" if "://" not in text else ""
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, not {text!r}{hint}")
    return text.rstrip("/")


def config_file(text: str) -> str:
    """A soci-style ``config.toml`` that loads cleanly (unknown keys, bad values are usage errors, exit 2)."""
    from ..config import Config

    try:
        Config.from_toml(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def events_file(text: str) -> str:
    """An ``--events`` file whose format can be written here: ``.csv``, ``.jsonl``, or ``.parquet`` when
    pyarrow is installed; refused before any work starts otherwise."""
    from pathlib import PurePath

    suffix = PurePath(text).suffix.lower()
    if suffix not in (".csv", ".jsonl", ".parquet"):
        raise argparse.ArgumentTypeError(f"{text}: the events format follows the extension: .csv, .jsonl or .parquet")
    if suffix == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
            raise argparse.ArgumentTypeError(
                f"{text}: writing .parquet needs pyarrow (pip install pyarrow); .csv and .jsonl work without it"
            )
    return text


def positive_float(text: str) -> float:
    """A number greater than zero (``0.5``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def existing_file(text: str) -> str:
    """A file that exists now (a trace, a calibration): a missing one is a usage error, before any work."""
    import os

    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def existing_dir(text: str) -> str:
    """A directory that exists now."""
    import os

    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such directory: {text}")
    return text


def _network_text(text: str) -> str:
    """``loopback``, ``RATE`` or ``RATE+RTT`` (each with its unit), returned as written."""
    text = text.strip()
    if text != "loopback":
        rate_text, _, rtt_text = text.partition("+")
        parse_rate(_rate_unit(rate_text))
        if rtt_text:
            parse_duration(_duration_unit(rtt_text))
    return text


#: A network as a user names it for the simulator: ``loopback``, ``1Gbit``, ``100Mbit+20ms``.
network = usage(_network_text, "network")
