"""Readiness rules: when a workload's "startup" is over.

Three rules, as HelloBench used (a line printed, or the process finishing) plus the server's own signal
(a file or socket appearing):

- ``exit`` — the command exits with status 0 (a script: startup = the whole run);
- ``line:REGEX`` — a line of its output (stdout and stderr, merged) matches ``REGEX`` (``re.search``);
- ``path:/ABS/PATH`` — that path exists inside the rootfs (a pid file, a UNIX socket).

A rule is written as that string in recipes, on the command line and in JSON.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import InvalidInput
from .resolve import resolve_in_root

KINDS = ("exit", "line", "path")


@dataclass(frozen=True)
class Readiness:
    """One readiness rule (``kind`` in :data:`KINDS`, ``value`` the regex or the path)."""

    kind: str = "exit"
    value: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(f"readiness kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == "line":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise InvalidInput(f"readiness regex {self.value!r}: {exc}") from None
        if self.kind == "path" and not self.value.startswith("/"):
            raise InvalidInput(f"readiness path must be absolute inside the rootfs, not {self.value!r}")

    @classmethod
    def parse(cls, text: str) -> Readiness:
        """``exit``, ``line:REGEX`` or ``path:/ABS/PATH``."""
        kind, _, value = text.partition(":")
        if kind == "exit" and not value:
            return cls("exit")
        if kind in ("line", "path") and value:
            return cls(kind, value)
        raise InvalidInput(f"readiness {text!r}: expected exit, line:REGEX or path:/ABS/PATH")

    def __str__(self) -> str:
        return self.kind if self.kind == "exit" else f"{self.kind}:{self.value}"

    def matches_line(self, line: str) -> bool:
        return self.kind == "line" and re.search(self.value, line) is not None

    def path_exists(self, rootfs: str | os.PathLike[str]) -> bool:
        if self.kind != "path":
            return False
        try:
            return os.path.lexists(resolve_in_root(rootfs, self.value))
        except OSError:
            return False
