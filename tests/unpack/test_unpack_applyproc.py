"""Layer apply in worker processes: the same tree, result, errors and events as in process; cancellation and
the starter's death leave no worker writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import anyio
import pytest
from treecmp import assert_same_tree
from unpack_helpers import E, write_layer

from soci_lab.errors import UnsafeArchiveEntry, VerificationFailed
from soci_lab.events import EventRecorder
from soci_lab.unpack import apply_layer
from soci_lab.unpack.applyproc import ApplyWorkers

ENTRIES = [
    E("etc/", tarfile.DIRTYPE, mode=0o755),
    E("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
    E("bin/", tarfile.DIRTYPE, mode=0o755),
    E("bin/tool", data=os.urandom(70_000), mode=0o4755),
    E("bin/link", tarfile.SYMTYPE, linkname="tool"),
    E("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"),
    E("etc/.wh.gone"),
    E("var/", tarfile.DIRTYPE, mode=0o755),
    E("var/.wh..wh..opq"),
]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_worker_gives_the_same_tree_result_and_events(tmp_path: Path) -> None:
    blob = tmp_path / "l.tar.gz"
    digest, diff_id = write_layer(blob, ENTRIES)
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    local = apply_layer(blob, tmp_path / "here", expected_digest=digest, expected_diff_id=diff_id)
    rec = EventRecorder(strategy="parallel")
    workers = ApplyWorkers(1)

    async def main() -> object:
        t0 = rec.now()
        try:
            result = await workers.apply(
                blob, tmp_path / "there", expected_digest=digest, expected_diff_id=diff_id, recorder=rec, layer=digest
            )
        finally:
            workers.close()
        return t0, rec.now(), result

    t0, t1, remote = anyio.run(main)
    assert_same_tree(tmp_path / "here", tmp_path / "there")
    assert remote.stats == local.stats and remote.digest == digest and remote.diff_id == diff_id
    ev = rec.to_frame()
    assert {"decompress", "apply", "verify"} <= set(ev["kind"])
    assert set(ev["run_id"]) == {rec.run_id} and set(ev["layer"].dropna()) == {digest}
    # the worker's clock is the caller's: its events lie inside the call
    assert ev["t_start"].min() >= t0 - 0.01 and ev["t_end"].max() <= t1 + 0.01


@pytest.mark.parametrize("what", ["digest", "unsafe"])
def test_a_worker_raises_the_callers_exception(tmp_path: Path, what: str) -> None:
    blob = tmp_path / "l.tar.gz"
    entries = ENTRIES if what == "digest" else [E("../escape", data=b"x")]
    digest, _ = write_layer(blob, entries)
    (tmp_path / "d").mkdir()
    workers = ApplyWorkers(1)

    async def main() -> None:
        try:
            await workers.apply(
                blob, tmp_path / "d", expected_digest="sha256:" + "0" * 64 if what == "digest" else digest
            )
        finally:
            workers.close()

    with pytest.raises(VerificationFailed if what == "digest" else UnsafeArchiveEntry):
        anyio.run(main)
    assert not (tmp_path / "escape").exists()


def test_cancelling_kills_the_worker_before_returning(tmp_path: Path) -> None:
    blob = tmp_path / "l.tar.gz"
    write_layer(blob, [E("many/", tarfile.DIRTYPE)] + [E(f"many/f{i:05d}", data=b"x" * 100) for i in range(40_000)])
    dest = tmp_path / "d"
    dest.mkdir()
    workers = ApplyWorkers(1)
    workers.start()
    pid = workers._idle[0].proc.pid

    async def main() -> bool:
        done = False

        async def run() -> None:
            nonlocal done
            await workers.apply(blob, dest)
            done = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            # cancel once the worker is writing (a few hundred files in), wherever the machine's speed
            while not done and not ((dest / "many").is_dir() and len(os.listdir(dest / "many")) > 300):
                await anyio.sleep(0.002)
            tg.cancel_scope.cancel()
        return not done

    try:
        cancelled = anyio.run(main)
    finally:
        workers.close()
    assert cancelled, "the apply finished before the cancellation; make the layer bigger"
    assert not _alive(pid)  # killed and reaped before apply() let the cancellation through
    n = sum(1 for _ in (dest / "many").iterdir())
    time.sleep(0.3)
    assert sum(1 for _ in (dest / "many").iterdir()) == n  # nothing writes any more
    assert 0 < n < 40_000


CHILD = r"""
import sys, anyio
from soci_lab.unpack.applyproc import ApplyWorkers
w = ApplyWorkers(1)
w.start()
print(w._idle[0].proc.pid, flush=True)
anyio.run(lambda: w.apply(sys.argv[1], sys.argv[2]))
"""


def test_a_busy_worker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    blob = tmp_path / "l.tar.gz"
    write_layer(blob, [E("many/", tarfile.DIRTYPE)] + [E(f"many/f{i:05d}", data=b"x" * 100) for i in range(40_000)])
    dest = tmp_path / "d"
    dest.mkdir()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(blob), str(dest)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        deadline = time.monotonic() + 30
        while not ((dest / "many").is_dir() and len(os.listdir(dest / "many")) > 300):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.002)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid)  # SIGKILLed by the kernel (PR_SET_PDEATHSIG), not left writing
    n = len(os.listdir(dest / "many"))
    time.sleep(0.3)
    assert len(os.listdir(dest / "many")) == n < 40_000


def test_the_puller_applies_in_process_when_no_worker_can_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from soci_lab.unpack import LayerSpec, LocalFileSource, ParallelPuller

    blob = tmp_path / "l.tar.gz"
    digest, diff_id = write_layer(blob, ENTRIES)
    spec = LayerSpec(digest=digest, size=blob.stat().st_size, diff_id=diff_id)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))

    async def main() -> bool:
        async with ParallelPuller(tmp_path / "root", LocalFileSource({digest: str(blob)})) as puller:
            in_process = puller._workers is None
            await puller.pull("img", [spec], [tmp_path / "snap"])
        return in_process

    assert anyio.run(main)
    assert (tmp_path / "snap" / "etc/passwd").read_bytes().startswith(b"root:")



_MMAPPED = """
import ctypes, sys
from soci_lab.unpack.applyproc import keep_chunk_memory
from soci_lab.unpack.decompress import MAX_CHUNK
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "keep":
    assert keep_chunk_memory()
before = libc.mallinfo2().hblkhd  # bytes in blocks glibc got with mmap (and unmaps when they are freed)
chunk = bytes([1]) * MAX_CHUNK
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_a_worker_keeps_chunks_out_of_mmap() -> None:
    """keep_chunk_memory (run at every worker's start) has glibc serve a decompressed chunk of the largest
    size from the heap, whose freed pages the next chunk reuses, not with an mmap that each free returns to
    the kernel (and each new chunk faults in and zeroes again)."""
    run = [sys.executable, "-c", _MMAPPED]
    mmapped = {
        how: int(subprocess.run([*run, how], capture_output=True, text=True, check=True).stdout)
        for how in ("default", "keep")
    }
    assert mmapped["default"] >= 8 << 20 and mmapped["keep"] == 0, mmapped
