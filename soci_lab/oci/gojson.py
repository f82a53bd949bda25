"""JSON as Go's ``encoding/json`` writes it, so that documents built here have upstream's digests.

Upstream (soci-snapshotter, containerd) serialises manifests, indexes and descriptors with ``json.Marshal``
of image-spec's Go structs: fields in struct order, empty ``omitempty`` fields left out, map keys sorted,
and strings escaped HTML-safe. The ``to_dict`` methods of :mod:`soci_lab.oci` build dicts in struct order;
this module writes them.
"""

from __future__ import annotations

import json
from typing import Any

_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _go_text(s: str) -> str:
    """A Python string as Go holds it: a lone surrogate (invalid UTF-8) becomes U+FFFD."""
    try:
        s.encode()
    except UnicodeEncodeError:
        s = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
    return s


def _go_clean(obj: Any) -> Any:
    if isinstance(obj, str):
        return _go_text(obj)
    if isinstance(obj, dict):
        return {_go_text(k): _go_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_go_clean(v) for v in obj]
    return obj


def go_json(obj: Any) -> bytes:
    """JSON as Go's ``json.Marshal`` writes it, for documents built in Go struct field order.

    Keys are written in the order the dicts hold them (build them in struct order, map-typed fields such
    as annotations sorted: :func:`go_map`); compact; non-ASCII kept as UTF-8; ``<``, ``>``, ``&``, U+2028
    and U+2029 escaped as ``\\u003c``-style sequences, as Go's HTML-safe encoder does; control characters
    as Go 1.22+ writes them (``\\b``, ``\\f``, ``\\n``, ``\\r``, ``\\t``, else ``\\u00XX``, which is also
    what Python writes). Those characters occur only inside strings, so escaping the text is exact.
    """
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.translate(_GO_ESCAPES).encode()
    except UnicodeEncodeError:
        return json.dumps(_go_clean(obj), separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES).encode()


def go_map(m: dict[str, str]) -> dict[str, str]:
    """A Go ``map[string]string`` as ``json.Marshal`` orders it: keys sorted by their UTF-8 bytes."""
    return {k: m[k] for k in sorted(m, key=lambda k: _go_text(k).encode())}
