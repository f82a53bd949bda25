"""The library's sync helpers work where a notebook cell runs them: inside a running event loop."""

import asyncio
import threading

from soci_lab._sync import run_sync


async def _where(x: int) -> tuple[int, str]:
    await asyncio.sleep(0)
    return x * 2, threading.current_thread().name


def test_without_a_loop_runs_here():
    assert run_sync(_where, 21) == (42, threading.current_thread().name)


def test_inside_a_running_loop_runs_on_a_worker_thread():
    async def cell():
        return run_sync(_where, 4)

    value, thread = asyncio.run(cell())
    assert value == 8 and thread.startswith("soci-lab-sync")


def test_a_real_helper_inside_a_running_loop(tmp_path):
    from soci_lab.images import build_image, copy_image, verify_image

    tree = tmp_path / "layer"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello\n")
    built = build_image([tree], f"oci:{tmp_path}/a:v1")

    async def cell():  # what a Jupyter cell does: call the sync helpers from inside the kernel's loop
        copy_image(f"oci:{tmp_path}/a:v1", f"oci:{tmp_path}/b:v1")
        return verify_image(f"oci:{tmp_path}/b:v1")

    verified = asyncio.run(cell())
    assert verified.digest == built.digest and len(verified.layers) == 1
