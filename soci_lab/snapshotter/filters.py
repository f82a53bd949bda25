"""containerd's filter syntax for ``Walk`` (``List``), the part snapshotters see.

A request carries filters; a snapshot matches if it matches ANY of them, and a filter is a comma-joined
list of selectors that must ALL hold: ``FIELD``, ``FIELD==VALUE``, ``FIELD!=VALUE`` or ``FIELD~=REGEX``,
where FIELD is ``name``, ``parent``, ``kind`` or ``labels.KEY`` (KEY may be double-quoted, as
``labels."containerd.io/gc.root"``; VALUE may be quoted too). Used by containerd's metadata layer and
by ``ctr snapshots ls``-like callers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from ..errors import InvalidInput
from .metastore import SnapshotInfo

_SELECTOR = re.compile(
    r"""\s*(?P<field>[A-Za-z_]+(?:\.(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_./-]+))*)\s*"""
    r"""(?:(?P<op>==|!=|~=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^,]*?))?\s*(?:,|$)"""
)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _field_value(info: SnapshotInfo, field: str) -> str | None:
    if field == "name":
        return info.key
    if field == "parent":
        return info.parent
    if field == "kind":
        return info.kind
    if field.startswith("labels."):
        return info.labels.get(_unquote(field[len("labels."):]))
    raise InvalidInput(f"snapshot filter: unknown field {field!r} (name, parent, kind, labels.KEY)")


def parse_filter(text: str) -> Callable[[SnapshotInfo], bool]:
    """One filter (selectors joined by commas) as a predicate; InvalidInput names what is wrong."""
    checks: list[Callable[[SnapshotInfo], bool]] = []
    pos = 0
    while pos < len(text):
        m = _SELECTOR.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidInput(f"snapshot filter {text!r}: cannot parse at {text[pos:]!r}")
        pos = m.end()
        field, op, raw = m.group("field"), m.group("op"), m.group("value")
        value = _unquote(raw.strip()) if raw is not None else None
        _field_value(SnapshotInfo(key="", kind="view"), field)  # unknown fields fail at parse time
        if op is None:
            checks.append(functools.partial(_present, field))
        elif op == "==":
            checks.append(functools.partial(_equals, field, value))
        elif op == "!=":
            checks.append(functools.partial(_differs, field, value))
        else:
            try:
                rx = re.compile(value or "")
            except re.error as exc:
                raise InvalidInput(f"snapshot filter {text!r}: bad regular expression: {exc}") from None
            checks.append(functools.partial(_matches, field, rx))
    return lambda info: all(check(info) for check in checks)


def _present(field: str, info: SnapshotInfo) -> bool:
    return _field_value(info, field) not in (None, "")


def _equals(field: str, value: str | None, info: SnapshotInfo) -> bool:
    return _field_value(info, field) == value


def _differs(field: str, value: str | None, info: SnapshotInfo) -> bool:
    return _field_value(info, field) != value


def _matches(field: str, rx: re.Pattern[str], info: SnapshotInfo) -> bool:
    return rx.search(_field_value(info, field) or "") is not None


def matcher(filters: Sequence[str]) -> Callable[[SnapshotInfo], bool]:
    """Any-of ``filters`` (empty: everything)."""
    preds = [parse_filter(f) for f in filters if f.strip()]
    if not preds:
        return lambda info: True
    return lambda info: any(p(info) for p in preds)
