"""JSON documents from untrusted sources (registries, layouts, stores), parsed with bounds.

A manifest, index or config comes from whoever serves it. The standard library's ``json.loads`` accepts
input that turns into a bare traceback further on: nesting deep enough to raise ``RecursionError`` (in the
parser, or later in whatever walks the document), integers of thousands of digits (``ValueError`` from
``int()``, or a "size" no file can have), and ``NaN``/``Infinity``, which JSON does not have. Here each of
these is refused with the caller's error class and one line naming the document and what was wrong:

* nesting deeper than ``max_depth`` (default :data:`MAX_DEPTH`, 64; an OCI manifest needs 4);
* an integer outside ``[-2**63, 2**63)`` (what Go's ``int64`` of every OCI implementation holds);
* ``NaN``, ``Infinity``, ``-Infinity``; bytes that are not UTF-8; anything that is not JSON.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidManifest, SociLabError

#: the deepest nesting accepted (objects and arrays)
MAX_DEPTH = 64
#: integers must fit Go's int64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_MAX_INT_TEXT = len(str(INT_MIN))


class _Refused(ValueError):
    """Raised inside the parser's hooks; carries the reason."""


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_TEXT:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise _Refused(f"the integer {text} is outside the 64-bit range")
    return value


def _parse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        d += 1
        deepest = max(deepest, d)
        stack.extend((child, d) for child in v if isinstance(child, dict | list))
    return deepest


def loads(
    data: bytes | str,
    what: str,
    *,
    max_depth: int = MAX_DEPTH,
    error: type[SociLabError] = InvalidManifest,
) -> Any:
    """``data`` parsed as JSON within the bounds above; ``error(f"{what} …")`` (one line) otherwise."""
    try:
        doc = json.loads(data, parse_int=_parse_int, parse_constant=_parse_constant)
    except _Refused as exc:
        raise error(f"{what} is refused: {exc}") from None
    except RecursionError:
        raise error(f"{what} is refused: nested more than {max_depth} levels deep") from None
    except UnicodeDecodeError:
        raise error(f"{what} is not valid JSON: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    except ValueError as exc:  # anything else the parser's number handling raises
        raise error(f"{what} is not valid JSON: {str(exc).splitlines()[0][:200]}") from None
    if depth(doc) > max_depth:
        raise error(f"{what} is refused: nested more than {max_depth} levels deep")
    return doc


def loads_object(data: bytes | str, what: str, *, max_depth: int = MAX_DEPTH,
                 error: type[SociLabError] = InvalidManifest) -> dict[str, Any]:
    """:func:`loads`, and the document must be a JSON object."""
    doc = loads(data, what, max_depth=max_depth, error=error)
    if not isinstance(doc, dict):
        raise error(f"{what} is not a JSON object")
    return doc


__all__ = ["INT_MAX", "INT_MIN", "MAX_DEPTH", "depth", "loads", "loads_object"]
