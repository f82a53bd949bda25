"""Debian building blocks for dataset recipes: the machine's mirror, the suite's state, ``debootstrap``,
and package installs in a chroot.

- The mirror is the one this machine's apt uses (``/etc/apt/sources.list`` and ``sources.list.d``, one-line
  and deb822 forms), so builds go where the machine is allowed to go; ``SOCI_LAB_DEBIAN_MIRROR``
  overrides it. No host name is written into the code.
- The suite's state is its ``InRelease`` file: its ``Date`` and the digest of its ``main`` package list
  pin every package version a build can get, so they go into the cache key (:func:`suite_state`).
- ``apt-get install`` runs chrooted with ``/proc``, ``/dev`` and ``/sys`` mounted, a ``policy-rc.d`` that
  forbids starting services (a package's postinst must not launch a daemon on the build host), and the
  host's package cache bind-mounted on ``/var/cache/apt/archives`` (downloads are shared between recipes
  and never land in a layer). Each step ends as a Dockerfile ``RUN`` does: ``apt-get clean`` and the
  package lists removed.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import platform
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import DatasetError
from ..workload.mounts import bind_mount, chroot_mounts

log = logging.getLogger(__name__)

POLICY_RC_D = "#!/bin/sh\n# soci-lab dataset build: no service may start while packages are installed\nexit 101\n"
APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386", "ppc64le": "ppc64el",
         "s390x": "s390x"}


def host_arch() -> str:
    """The Debian architecture name of this machine."""
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return _ARCH.get(platform.machine(), platform.machine())


def host_suite() -> str:
    """This machine's Debian codename (``VERSION_CODENAME`` of ``/etc/os-release``), else ``bookworm``."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"') or "bookworm"
    except OSError:
        pass
    return "bookworm"


def _source_entries(root: str = "/") -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of every ``deb`` source of the apt configuration under ``root``."""
    base = Path(root, "etc/apt")
    files = [base / "sources.list", *sorted(base.glob("sources.list.d/*.list"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # type: ignore[assignment]
            if len(line) >= 3 and line[0] == "deb":
                yield line[1], [line[2]]
    for f in sorted(base.glob("sources.list.d/*.sources")):
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def debian_mirror(suite: str | None = None, root: str = "/") -> str:
    """The URI of the first apt source that carries ``suite`` itself (not ``-security``/``-updates``)."""
    env = os.environ.get("SOCI_LAB_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    want = suite or host_suite()
    for uri, suites in _source_entries(root):
        if want in suites:
            return uri.rstrip("/")
    raise DatasetError(
        f"no apt source for suite {want} in {root}etc/apt; set SOCI_LAB_DEBIAN_MIRROR to a Debian mirror URL"
    )


def suite_state(mirror: str, suite: str, arch: str) -> tuple[dict[str, str], bool]:
    """``({date, packages_sha256}, online)`` of the suite's ``InRelease`` on the mirror — what pins the
    package versions. ``online`` is False when the mirror could not be reached and the host's copy in
    ``/var/lib/apt/lists`` (or nothing) was used instead."""
    text = None
    try:
        import httpx

        r = httpx.get(f"{mirror}/dists/{suite}/InRelease", timeout=20, follow_redirects=True)
        if r.status_code == 200:
            text = r.text
    except Exception as exc:  # network trouble: fall back to the host's lists
        log.info("InRelease of %s not fetched (%s); using the host's copy", suite, exc)
    online = text is not None
    if text is None:
        for f in sorted(glob.glob(f"/var/lib/apt/lists/*_dists_{suite}_InRelease")):
            text = Path(f).read_text(errors="replace")
            break
    if text is None:
        return {"date": "unknown", "packages_sha256": "unknown"}, False
    date = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Date:")), "unknown")
    m = re.search(rf"^\s*([0-9a-f]{{64}})\s+\d+\s+main/binary-{re.escape(arch)}/Packages\.xz$", text, re.M)
    digest = m.group(1) if m else hashlib.sha256(text.encode()).hexdigest()
    return {"date": date, "packages_sha256": digest}, online


def debootstrap(target: str | os.PathLike[str], suite: str, mirror: str, *, variant: str = "minbase",
                arch: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> None:
    """``debootstrap --variant=VARIANT`` a rootfs into ``target`` (which must not exist or be empty)."""
    argv = ["debootstrap", f"--variant={variant}", f"--arch={arch or host_arch()}"]
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        argv.append(f"--cache-dir={os.path.abspath(cache_dir)}")
    argv += [suite, os.fspath(target), mirror]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise DatasetError("debootstrap is not installed (apt package debootstrap; scripts/setup.sh)") from None
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise DatasetError(f"debootstrap {suite} failed ({proc.returncode}): {' | '.join(tail)}")


def chroot_run(root: str | os.PathLike[str], script: str, *, what: str) -> str:
    """Run ``sh -ec SCRIPT`` chrooted in ``root`` (mounts already in place); returns its output."""
    proc = subprocess.run(["chroot", os.fspath(root), "/bin/sh", "-ec", script], env=APT_ENV,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-4:]
        raise DatasetError(f"{what} failed ({proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def clean_apt(root: str | os.PathLike[str]) -> None:
    """What a Dockerfile's ``RUN`` ends with: no package lists, no caches of downloads."""
    r = Path(root)
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for p in glob.glob(str(r / pattern)):
            if os.path.isfile(p) or os.path.islink(p):
                os.unlink(p)
    for p in glob.glob(str(r / "var/lib/apt/lists/partial/*")):
        os.unlink(p)


def apt_install(root: str | os.PathLike[str], packages: Sequence[str], commands: Sequence[str] = (), *,
                archive_cache: str | os.PathLike[str] | None = None) -> str:
    """Install ``packages`` (no recommends) in the chroot, then run ``commands`` there; clean up as a
    ``RUN`` line would. Services never start (``policy-rc.d``). Returns the combined output."""
    r = Path(root)
    policy = r / "usr/sbin/policy-rc.d"
    sbin = os.stat(policy.parent)
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    out = []
    try:
        with chroot_mounts(r, ("proc", "dev", "dev/shm", "sys")):
            if packages:
                cache = Path(archive_cache) if archive_cache else None
                ctx = bind_mount(cache, r / "var/cache/apt/archives") if cache else _nothing()
                if cache:
                    (cache / "partial").mkdir(parents=True, exist_ok=True)
                with ctx:
                    out.append(chroot_run(r, "apt-get update -qq", what="apt-get update"))
                    out.append(chroot_run(
                        r, "apt-get install -y -qq --no-install-recommends " + " ".join(packages),
                        what=f"apt-get install {' '.join(packages)}",
                    ))
            for cmd in commands:
                out.append(chroot_run(r, cmd, what=f"step command {cmd!r}"))
    finally:
        policy.unlink(missing_ok=True)
        # the build's own helper must not make /usr/sbin look changed in the layer
        os.utime(policy.parent, ns=(sbin.st_atime_ns, sbin.st_mtime_ns))
        clean_apt(r)
    return "".join(out)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def installed_packages(root: str | os.PathLike[str]) -> dict[str, str]:
    """``{package: version}`` of everything dpkg has installed in the rootfs."""
    proc = subprocess.run(["dpkg-query", f"--admindir={Path(root, 'var/lib/dpkg')}", "-W",
                           "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"], capture_output=True, text=True)
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith("ii"):
            out[parts[0]] = parts[1]
    return out
