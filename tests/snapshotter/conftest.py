"""Fixtures of the snapshotter room: the soci-lab snapshotter daemon, containerd 1.6 from Debian using it
as a proxy plugin, and a small runnable image in the embedded registry.

containerd runs with its own root, state, sockets and config (CRI disabled: ``ctr`` drives it), so it
never touches a system containerd. The image holds the host's ``cat`` and the libc it needs (layer 1)
and a data file (layer 2): a container ``cat``\\s the file with runc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctdtools import CatImage, Containerd, Daemon, stop, wait_for

from soci_lab.snapshot import umount_tree
from soci_lab.snapshotter.containerd_config import containerd_config


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """The daemon; parametrize it indirectly with a config.toml text to start it with ``--config``."""
    d = Daemon(tmp_path, getattr(request, "param", None)).start()
    try:
        yield d
    finally:
        d.stop()
        from soci_lab.snapshotter import remove_root

        remove_root(d.root)  # layer servers outlive the daemon by design: stop them too


@pytest.fixture
def containerd(tmp_path: Path, daemon: Daemon) -> Iterator[Containerd]:
    """containerd 1.6 with its own root/state/socket, soci-lab (``daemon``) as proxy snapshotter ``soci-lab``."""
    base = tmp_path / "ctd"
    base.mkdir()
    namespace = f"soci-lab-test-{uuid.uuid4().hex[:8]}"
    config = base / "config.toml"
    config.write_text(containerd_config(base, daemon.socket))
    with (base / "containerd.log").open("wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(base / "containerd.sock", proc, "containerd")
        yield Containerd(base, base / "containerd.sock", proc, namespace)
    finally:
        c = Containerd(base, base / "containerd.sock", proc, namespace)
        if proc.poll() is None:
            for line in c.ctr("tasks", "ls", "-q", check=False).stdout.decode().split():
                c.ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
                c.ctr("tasks", "delete", "-f", line, check=False)
            for line in c.ctr("containers", "ls", "-q", check=False).stdout.decode().split():
                c.ctr("containers", "delete", line, check=False)
        stop(proc)
        with contextlib.suppress(Exception):
            umount_tree(tmp_path)


@pytest.fixture(scope="session")
def cat_image(embedded_registry, tmp_path_factory: pytest.TempPathFactory) -> CatImage:  # type: ignore[no-untyped-def]
    """Two layers: the host's ``cat`` with its libc and loader; a 400 KB data file at /data/hello.txt."""
    from soci_lab.images import build_image

    base = tmp_path_factory.mktemp("catimage")
    l1, l2 = base / "l1", base / "l2"
    cat = Path(shutil.which("cat") or "/usr/bin/cat")
    (l1 / "bin").mkdir(parents=True)
    shutil.copy(cat, l1 / "bin" / "cat")
    out = subprocess.run(["ldd", str(cat)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            dst = l1 / path.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(path).resolve(), dst)
    data = os.urandom(300_000).hex().encode()[:400_000] + b"\nend\n"
    (l2 / "data").mkdir(parents=True)
    (l2 / "data" / "hello.txt").write_bytes(data)
    ref = embedded_registry.ref("ctd/cat", "v1")
    build_image([l1, l2], ref, insecure=True)
    return CatImage(ref, data)


@pytest.fixture(scope="session")
def lazy_image(embedded_registry, cat_image: CatImage) -> CatImage:  # type: ignore[no-untyped-def]
    """``cat_image`` copied to another repository and given a v2 SOCI index covering both layers (1 MiB spans)."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.images import copy_image

    ref = embedded_registry.ref("ctd/cat-lazy", "v1")
    copy_image(cat_image.ref, ref, insecure=True)
    create_soci_index(ref, span_size=1 << 20, min_layer_size=0)
    return CatImage(ref, cat_image.data)
