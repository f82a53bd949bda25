"""The applier's shortcut for plain entries (``TarApplier._plain_entry``) against its general path.

The shortcut creates plain regular files and directories straight from the header's seven values; every
other entry, and every plain one it is not sure about (a name that needs cleaning, a dot-file, a parent not
yet open, ...), goes the general way. These tests apply the same archives with the shortcut on and off and
require the very same outcome: the same tree (modes, owners, times, contents, link targets), the same
statistics, the same error. The security suite (``test_unpack_security.py``) runs with it on (serial) and
off (file workers).
"""

from __future__ import annotations

import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unpack_helpers import E, scan, tar_bytes

from soci_lab.errors import SociLabError
from soci_lab.unpack.chunkstream import ChunkStream
from soci_lab.unpack.tarapply import ApplyOptions, TarApplier

_COMPONENTS = ["a", "b", "c", "d", ".hid", ".wh.b", ".wh..wh..opq", "..", ".", "ü"]


def _apply(data: bytes, dest: Path, chunk: int, *, plain: bool, taken: list[int] | None = None) -> Any:
    """Apply ``data`` in ``chunk``-byte pieces; the statistics, or the error's type and text."""
    dest.mkdir()
    pieces = iter([data[i : i + chunk] for i in range(0, len(data), chunk)])
    with TarApplier(dest, ApplyOptions()) as applier:
        general = applier._plain_entry
        if not plain:
            applier._plain_entry = lambda *a: False  # type: ignore[method-assign]
        elif taken is not None:

            def counting(*a: Any) -> bool:
                ok = general(*a)
                taken.append(ok)
                return ok

            applier._plain_entry = counting  # type: ignore[method-assign]
        try:
            return applier.apply(ChunkStream(lambda: next(pieces, None)))
        except (SociLabError, OSError) as exc:
            return type(exc), str(exc)


def _same(data: bytes, tmp: Path, chunk: int) -> list[int]:
    taken: list[int] = []
    fast = _apply(data, tmp / "fast", chunk, plain=True, taken=taken)
    slow = _apply(data, tmp / "slow", chunk, plain=False)
    assert fast == slow
    assert scan(tmp / "fast", mtimes=True) == scan(tmp / "slow", mtimes=True)
    return taken


@st.composite
def _entry(draw: st.DrawFn) -> E:
    name = "/".join(draw(st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=4)))
    name = draw(st.sampled_from(["", "", "./", "/"])) + name
    kind = draw(st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]))
    if kind == tarfile.DIRTYPE:
        mode = draw(st.sampled_from([0o755, 0o700, 0o1777]))
        return E(name + "/", kind, mode=mode, mtime=draw(st.integers(0, 8**11 - 1)))
    if kind == tarfile.SYMTYPE:
        return E(name, kind, linkname=draw(st.sampled_from(["/", "..", "a", "/a/b", "c/../.."])))
    return E(
        name + draw(st.sampled_from(["", "", "", "/"])),
        kind,
        data=draw(st.binary(max_size=1200)),
        mode=draw(st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2711, 0o777, 0o000])),
        uid=draw(st.sampled_from([0, 0, 1000])),
        gid=draw(st.sampled_from([0, 0, 50])),
        mtime=draw(st.integers(0, 8**11 - 1)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(_entry(), min_size=1, max_size=12),
    st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    st.sampled_from([512, 700, 4096, 1 << 20]),
)
def test_plain_entries_come_out_as_the_general_path_makes_them(
    tmp_path_factory: pytest.TempPathFactory, entries: list[E], fmt: int, chunk: int
) -> None:
    _same(tar_bytes(entries, fmt=fmt), tmp_path_factory.mktemp("plain"), chunk)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("chunk", [600, 1 << 20])
def test_a_typical_layer_takes_the_shortcut(tmp_path: Path, fmt: int, chunk: int) -> None:
    """Not vacuous: a layer of plain entries (with ``./`` names, as ``tar -C dir .`` writes them) is applied
    almost wholly by the shortcut; the dot-file, the symlink and the name that needs cleaning are not."""
    entries = [E("./", tarfile.DIRTYPE), E("./usr/", tarfile.DIRTYPE), E("./usr/lib/", tarfile.DIRTYPE, mode=0o700)]
    entries += [E(f"./usr/lib/f{i}", data=bytes([i]) * (i * 100), mode=0o755 if i % 2 else 0o644) for i in range(20)]
    entries += [E("./usr/.hidden", data=b"h"), E("./usr/link", tarfile.SYMTYPE, linkname="lib/f1")]
    entries += [E("usr//lib/f3", data=b"again", uid=1000), E("usr/lib/setuid", data=b"s", mode=0o4755)]
    taken = _same(tar_bytes(entries, fmt=fmt), tmp_path, chunk)
    if chunk > 1 << 16:  # (a header split across two chunks goes the general way)
        # usr/, f1..f19 and setuid; not ./, .hidden, link, usr//lib/f3, nor the first entry in a new
        # directory (usr/lib/, f0: the general path opens the directory, then its other children are plain)
        assert sum(taken) == 21
    assert (tmp_path / "fast/usr/lib/f3").read_bytes() == b"again"
    assert stat.S_IMODE((tmp_path / "fast/usr/lib/setuid").stat().st_mode) == 0o4755
    lib = (tmp_path / "fast/usr/lib").stat()
    assert (stat.S_IMODE(lib.st_mode), lib.st_mtime_ns) == (0o700, 1_600_000_000 * 10**9)
