"""The demo's sample image, as layer directories made from what any Debian machine has offline.

``sample_image_trees(dest, scale)`` writes five layer directories under ``dest`` (bottom first):

=========== ===================================================================================== =========
layer       content                                                                               at 1.0
=========== ===================================================================================== =========
00-base     ``etc/`` files; a tiny runtime (``sh``, ``cat``, ``head``, ``sha256sum``, ``ls``, ``wc``  ~12 MiB
            copied from this machine with the shared libraries ``ldd`` names, usr-merged: ``/bin``
            → ``usr/bin``); part of the running interpreter's standard library (text, many small
            files); ``/usr/share/zoneinfo`` (small binary files, symlinks, hard links)
01-libs     shared libraries from ``/usr/lib/<multiarch>`` (machine code), with their symlinks     ~12 MiB
02-data     deterministic pseudo-random but compressible files (4 bits of entropy per byte): the    ~28 MiB
            big layer, > 10 MiB compressed, well above SOCI's default minimum layer size
03-app      a small application: ``/app/run.sh`` (the workload: reads configs, every doc page and ~2 MiB
            2 MiB of data, and fails unless the whiteouts above were applied), ``/app/main.py``,
            configs, 400 small text files, a hard link, a symlink, an empty directory
04-upper    whiteouts: a file of 00-base (``etc/.wh.motd``), a directory of 02-data                ~40 KiB
            (``opt/data/.wh.extra``), an opaque directory (``etc/legacy/.wh..wh..opq``) with new
            content, and a changed config file
=========== ===================================================================================== =========

Deterministic: files are chosen in sorted order against byte budgets (times ``scale``); every entry gets
mode 0755 (directories, executables) or 0644, owner 0:0, and a fixed mtime per layer; generated content
comes from seeded generators. On one machine the same call always gives the same trees, hence the same
image digests. Host content (runtime, stdlib, zoneinfo, libraries) is copied as it is on this machine; a
missing source is skipped, and the generated layers alone still make a valid sample image.

``build_sample_image(ref, workdir)`` makes the trees and builds them into an image whose ``Cmd`` is
``/bin/sh /app/run.sh``, so ``soci-lab run REF -- /bin/sh /app/run.sh`` has a real workload to run.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import stat
import subprocess
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import BuildResult

MiB = 1 << 20
#: 2023-11-14T22:13:20Z, plus the layer's index in seconds
SAMPLE_MTIME = 1_700_000_000
LAYER_NAMES = ("00-base", "01-libs", "02-data", "03-app", "04-upper")

#: standard-library packages copied into 00-base, in this order, until the budget is spent
_STDLIB_PARTS = (
    "json", "email", "http", "urllib", "logging", "html", "xml", "importlib", "concurrent", "asyncio",
    "collections", "encodings", "sqlite3", "wsgiref", "xmlrpc", "zoneinfo", "tomllib", "unittest", "ctypes",
)  # fmt: skip


def sample_image_trees(dest_dir: str | os.PathLike[str], scale: float = 1.0) -> list[Path]:
    """Write the sample image's layer directories under ``dest_dir``; return them bottom first.

    Layer directories already there are replaced. ``scale`` multiplies every byte budget and generated
    size (0.05 makes a quick image for tests; 1.0 has one layer above 10 MiB compressed).
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    dirs = []
    for i, name in enumerate(LAYER_NAMES):
        d = dest / name
        if d.exists() or d.is_symlink():
            shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()
        d.mkdir()
        dirs.append(d)
        _BUILDERS[i](d, scale)
        _normalise(d, SAMPLE_MTIME + i)
    return dirs


#: the workload's command, and what the sample image's config runs
SAMPLE_CMD = ("/bin/sh", "/app/run.sh")
#: programs copied into 00-base (with the libraries they need), named as they are in the image
RUNTIME_TOOLS = ("sh", "cat", "head", "sha256sum", "ls", "wc")


def build_sample_image(
    ref: str,
    workdir: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    compression: str = "gzip",
    **build_options: Any,
) -> BuildResult:
    """Materialise the sample trees under ``workdir`` and build them into ``ref`` (registry or ``oci:``).

    The image runs ``/bin/sh /app/run.sh`` (``Cmd``) in ``/app`` with a usual ``PATH``. Other keyword
    arguments go to ``build_image`` (``gzip_level``, ``span_size``, ``insecure``, ``events`` …).
    """
    from .build import build_image
    from .config import RuntimeConfig

    dirs = sample_image_trees(workdir, scale=scale)
    runtime = RuntimeConfig(
        cmd=list(SAMPLE_CMD),
        env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
        working_dir="/app",
    )
    return build_image(dirs, ref, compression=compression, runtime=runtime, **build_options)


# --- layers ----------------------------------------------------------------------------------------


def _base(root: Path, scale: float) -> None:
    _runtime(root)
    etc = root / "etc"
    _text(etc / "os-release", 'NAME="soci-lab sample"\nID=soci-lab-sample\nVERSION_ID=1\n')
    _text(etc / "motd", "This file is whited out by the top layer.\n")
    _text(etc / "passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    _text(etc / "group", "root:x:0:\nnogroup:x:65534:\n")
    for i in range(3):
        _text(etc / "legacy" / f"old-{i}.conf", f"# legacy setting {i}\nvalue={i}\n" * 20)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    budget = int(7 * MiB * scale)
    target = root / "usr" / "lib" / "python3"
    top = sorted(p for p in stdlib.glob("*.py") if p.is_file())
    parts = [stdlib / name for name in _STDLIB_PARTS if (stdlib / name).is_dir()]
    budget = _copy_files(top, stdlib, target, budget)
    for part in parts:
        files = [p for p in _sorted_walk(part) if "__pycache__" not in p.parts and "test" not in p.parts[-3:]]
        budget = _copy_files(files, stdlib, target, budget)
        if budget <= 0:
            break
    zoneinfo = Path("/usr/share/zoneinfo")
    if zoneinfo.is_dir():
        files = [p for p in _sorted_walk(zoneinfo) if p.relative_to(zoneinfo).parts[0] not in ("posix", "right")]
        _copy_files(files, zoneinfo, root / "usr" / "share" / "zoneinfo", int(3 * MiB * scale))


def _libs(root: Path, scale: float) -> None:
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    libdir = Path("/usr/lib") / arch if arch else None
    if libdir is None or not libdir.is_dir():
        candidates = sorted(Path("/usr/lib").glob("*-linux-gnu"))
        libdir = candidates[0] if candidates else None
    target = root / "usr" / "lib" / "sample-libs"
    target.mkdir(parents=True)
    if libdir is None:
        return
    budget = int(12 * MiB * scale)
    biggest = max(budget // 4, 64 << 10)
    chosen = []
    for p in sorted(libdir.iterdir(), key=lambda q: os.fsencode(q.name)):
        if not p.name.startswith("lib") or ".so" not in p.name:
            continue
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_size <= biggest):
            chosen.append(p)
    _copy_files(chosen, libdir, target, budget)


def _data(root: Path, scale: float) -> None:
    data = root / "opt" / "data"
    _compressible(data / "model.bin", int(24 * MiB * scale), seed=1)
    _csv(data / "table.csv", int(3 * MiB * scale), seed=2)
    for i in range(4):
        _compressible(data / "extra" / f"shard-{i}.bin", int(256 * 1024 * scale), seed=10 + i)


def _app(root: Path, scale: float) -> None:
    app = root / "app"
    _text(
        app / "main.py",
        "#!/usr/bin/env python3\n"
        '"""The sample workload: read the configs, some data and every doc page."""\n'
        "import json, pathlib, sys\n"
        "root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else '/')\n"
        "cfg = json.loads((root / 'app/config/app.json').read_text())\n"
        "n = sum(len(p.read_bytes()) for p in sorted((root / 'app/docs').iterdir()))\n"
        "with open(root / 'opt/data/model.bin', 'rb') as f:\n"
        "    head = f.read(cfg['read_bytes'])\n"
        "print(cfg['name'], n, len(head))\n",
        mode=0o755,
    )
    _text(
        app / "run.sh",
        "#!/bin/sh\n"
        "# The sample workload: read what an application reads when it starts, and check that the image's\n"
        "# layers were merged right (whiteouts and the opaque directory of the top layer applied). No /dev needed.\n"
        "set -e\n"
        "cat /app/config/app.json /app/config/logging.json | wc -c\n"
        'for page in /app/docs/*; do cat "$page"; done | wc -c\n'
        "head -c 2097152 /opt/data/model.bin | sha256sum\n"
        "ls /usr/lib/python3 | wc -l\n"
        'fail() { echo "layers merged wrong: $1" >&2; exit 3; }\n'
        "[ ! -e /etc/motd ] || fail '/etc/motd should be whited out'\n"
        "[ ! -e /etc/legacy/old-0.conf ] || fail '/etc/legacy should be opaque'\n"
        "[ -e /etc/legacy/new.conf ] || fail '/etc/legacy/new.conf is missing'\n"
        "[ ! -e /opt/data/extra ] || fail '/opt/data/extra should be whited out'\n"
        "echo ok\n",
        mode=0o755,
    )
    _text(app / "config" / "app.json", '{"name": "sample", "read_bytes": 1048576, "version": 1}\n')
    _text(app / "config" / "logging.json", '{"level": "info"}\n')
    rng = random.Random(3)
    words = _words(rng, 600)
    count = max(10, int(400 * min(scale, 1.0)))
    for i in range(count):
        n = rng.randint(60, 900)
        _text(app / "docs" / f"page-{i:04d}.txt", " ".join(rng.choice(words) for _ in range(n)) + "\n")
    _text(app / "bin" / "tool", '#!/bin/sh\necho tool "$@"\n', mode=0o755)
    os.link(app / "bin" / "tool", app / "bin" / "tool-alias")
    os.symlink("config/app.json", app / "current-config")
    (app / "var" / "cache").mkdir(parents=True)


def _upper(root: Path, scale: float) -> None:
    etc = root / "etc"
    _text(etc / ".wh.motd", "")
    _text(etc / "legacy" / ".wh..wh..opq", "")
    _text(etc / "legacy" / "new.conf", "# replaces everything that was here\nvalue=new\n")
    _text(root / "opt" / "data" / ".wh.extra", "")
    _text(root / "app" / "config" / "app.json", '{"name": "sample", "read_bytes": 2097152, "version": 2}\n')


_BUILDERS = (_base, _libs, _data, _app, _upper)

_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def _in_image(host_path: str) -> str:
    """Where a host path lives in the usr-merged image (``/lib/x`` → ``usr/lib/x``)."""
    rel = host_path.lstrip("/")
    top = rel.split("/", 1)[0]
    return f"usr/{rel}" if top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32") else rel


def _runtime(root: Path) -> None:
    """``usr/bin/{sh,cat,…}`` copied from this machine, the shared libraries ``ldd`` lists for them, and
    the usr-merge symlinks (``bin`` → ``usr/bin`` …), so ``chroot ROOTFS /bin/sh /app/run.sh`` works."""
    for link in ("bin", "sbin", "lib", "lib64"):
        os.symlink(f"usr/{link}", root / link)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "sbin").mkdir(parents=True)
    (root / "usr" / "lib64").mkdir(parents=True)
    libs: set[str] = set()
    for tool in RUNTIME_TOOLS:
        found = shutil.which("dash" if tool == "sh" else tool) or shutil.which(tool)
        if found is None:
            continue
        real = os.path.realpath(found)
        shutil.copyfile(real, root / "usr" / "bin" / tool)
        os.chmod(root / "usr" / "bin" / tool, 0o755)
        try:
            out = subprocess.run(["ldd", real], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue  # no ldd: a static binary works anyway, a dynamic one will not run in the image
        libs.update(_LDD_PATH.findall(out))
    for lib in sorted(libs):
        dst = root / _in_image(lib)
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(os.path.realpath(lib), dst)
        except OSError:
            continue
        os.chmod(dst, 0o755)


# --- helpers ---------------------------------------------------------------------------------------


def _sorted_walk(top: Path) -> list[Path]:
    """Every non-directory under ``top``, sorted by path bytes (symlinks not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        out += [Path(dirpath) / f for f in filenames]
    return sorted(out, key=lambda p: os.fsencode(str(p)))


def _copy_files(files: Iterable[Path], base: Path, target: Path, budget: int) -> int:
    """Copy regular files and symlinks (as symlinks) keeping paths relative to ``base``, hard links kept,
    until ``budget`` bytes are spent; returns what is left of the budget."""
    links: dict[tuple[int, int], Path] = {}
    for src in files:
        if budget <= 0:
            break
        try:
            st = src.lstat()
        except OSError:
            continue
        dst = target / src.relative_to(base)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        key = (st.st_dev, st.st_ino)
        if key in links:
            os.link(links[key], dst)
            continue
        try:
            shutil.copyfile(src, dst)
        except OSError:
            continue  # unreadable on this machine: leave it out
        if st.st_mode & stat.S_IXUSR:
            os.chmod(dst, 0o755)
        links[key] = dst
        budget -= st.st_size
    return budget


def _text(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.chmod(path, mode)


_ALPHABET = b"ACGTacgt0123-_.:"  # 16 symbols: 4 bits of entropy per byte, ~2:1 for gzip and zstd


def _compressible(path: Path, size: int, seed: int) -> None:
    """``size`` bytes over a 16-symbol alphabet, from a seeded generator, written in 1 MiB pieces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    table = bytes(_ALPHABET[b & 15] for b in range(256))
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            f.write(rng.randbytes(n).translate(table))
            left -= n


def _csv(path: Path, size: int, seed: int) -> None:
    """A CSV table of about ``size`` bytes: ids, words and numbers (compresses like real text data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = _words(rng, 300)
    rows = ["id,name,category,value,checksum\n"]
    total = len(rows[0])
    i = 0
    while total < size:
        name = rng.choice(words)
        row = f"{i},{name},{rng.choice(words)},{rng.random() * 1000:.4f},{hashlib.md5(name.encode()).hexdigest()[:8]}\n"
        rows.append(row)
        total += len(row)
        i += 1
    path.write_text("".join(rows))


def _words(rng: random.Random, n: int) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    return ["".join(rng.choice(letters[: rng.randint(8, 26)]) for _ in range(rng.randint(2, 10))) for _ in range(n)]


def _normalise(root: Path, mtime: int) -> None:
    """Owner 0:0, modes 0755/0644, one mtime for everything under ``root`` (deepest first)."""
    ns = mtime * 1_000_000_000
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            os.lchown(p, 0, 0)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(p, 0o755)
            elif stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)
            os.utime(p, ns=(ns, ns), follow_symlinks=False)
        os.utime(dirpath, ns=(ns, ns))
    os.chmod(root, 0o755)
