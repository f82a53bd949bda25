"""Jobs, storage and resource limits: unit tests and hypothesis state machines."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from soci_lab.errors import (
    ConfigError,
    ImageUnpackJobHasNoLayers,
    ImageUnpackJobNotFound,
    InvalidJobStatusTransition,
    LayerHasNoJobs,
    LayerIngestDoesNotExist,
    LayerJobCannotBeCleaned,
    LayerJobNotFound,
    LayerUnpackDestinationHasContent,
    NoClaimableLayerJobs,
)
from soci_lab.events import EventRecorder
from soci_lab.unpack.jobs import ALLOWED_TRANSITIONS, REMOVABLE, LayerUnpackJobStatus, UnpackJobs
from soci_lab.unpack.resources import LayerUnpackResourceController, SemaphoreWithNil
from soci_lab.unpack.storage import ID_LENGTH, LayerUnpackDiskStorage, LayerUnpackJobStorage

S = LayerUnpackJobStatus
BACKENDS = ["asyncio", "trio"]


# --- storage ----------------------------------------------------------------------------------------


def test_storage_layout_ids_modes_and_wipe(tmp_path: Path) -> None:
    storage = LayerUnpackDiskStorage(tmp_path)
    assert isinstance(storage, LayerUnpackJobStorage)
    assert stat.S_IMODE(os.stat(tmp_path / "unpack").st_mode) == 0o700
    ids = {storage.create() for _ in range(20)}
    assert len(ids) == 20
    for job_id in ids:
        assert len(job_id) == ID_LENGTH and job_id.isalnum() and job_id.isascii()
        assert (tmp_path / "unpack" / job_id / "fs").is_dir()
        assert stat.S_IMODE(os.stat(tmp_path / "unpack" / job_id).st_mode) == 0o700
    assert storage.keys() == sorted(ids)
    some = sorted(ids)[0]
    (storage.job_path(some) / "fs" / "f").write_text("x")
    storage.delete(some)
    storage.delete(some)  # missing is fine
    assert some not in set(storage.keys())
    # a new storage on the same root wipes what the previous process left
    again = LayerUnpackDiskStorage(tmp_path)
    assert again.keys() == []


def test_storage_keys_of_missing_root_is_empty(tmp_path: Path) -> None:
    storage = LayerUnpackDiskStorage(tmp_path / "r")
    os.rmdir(tmp_path / "r" / "unpack")
    assert storage.keys() == []


# --- jobs -------------------------------------------------------------------------------------------


def make_jobs(tmp_path: Path, clock: list[float] | None = None) -> tuple[UnpackJobs, EventRecorder]:
    rec = EventRecorder()
    t = clock if clock is not None else [0.0]
    return UnpackJobs(LayerUnpackDiskStorage(tmp_path), recorder=rec, clock=lambda: t[0], expiry_s=100.0), rec


def test_every_seed_error(tmp_path: Path) -> None:
    jobs, _ = make_jobs(tmp_path)
    with pytest.raises(ImageUnpackJobNotFound):
        jobs.get_image("img")
    jobs.get_or_add_image("img")
    with pytest.raises(ImageUnpackJobHasNoLayers):
        jobs.claim("img", "sha256:a")
    job = jobs.add_layer_job("img", "sha256:a")
    with pytest.raises(LayerHasNoJobs):
        jobs.claim("img", "sha256:b")
    with pytest.raises(LayerJobCannotBeCleaned):
        jobs.remove(job)  # InProgress
    assert jobs.claim("img", "sha256:a") is job
    with pytest.raises(NoClaimableLayerJobs):
        jobs.claim("img", "sha256:a")
    with pytest.raises(LayerJobNotFound):
        jobs.get_job("nosuchjob0")
    with pytest.raises(InvalidJobStatusTransition):
        job.compare_and_swap(S.DONE, S.IN_PROGRESS)
    with pytest.raises(LayerIngestDoesNotExist):
        LayerUnpackResourceController.get_unpack_ingest_reader(job.ingest_path)
    (job.fs_dir / "x").write_text("poison")
    with pytest.raises(LayerUnpackDestinationHasContent):
        LayerUnpackResourceController.verify_unpack_destination_is_ready(job.fs_dir)


def test_status_events_and_removal_of_finished_jobs(tmp_path: Path) -> None:
    jobs, rec = make_jobs(tmp_path)
    jobs.get_or_add_image("img")
    a = jobs.add_layer_job("img", "sha256:a")
    b = jobs.add_layer_job("img", "sha256:b")
    assert a.claim() and a.finish()
    assert a.status is S.DONE
    assert b.finish(RuntimeError("boom")) and b.status is S.FAILED
    assert not b.cancel()  # terminal
    jobs.remove(a)
    assert not a.path.exists()
    jobs.remove(b)
    with pytest.raises(ImageUnpackJobNotFound):
        jobs.get_image("img")  # last layer job gone → image gone
    moves = [(e.attrs["from"], e.attrs["to"]) for e in rec.events if e.kind == "job_status"]
    assert moves == [
        (None, "IN_PROGRESS"),
        (None, "IN_PROGRESS"),
        ("IN_PROGRESS", "CLAIMED"),
        ("CLAIMED", "DONE"),
        ("IN_PROGRESS", "FAILED"),
    ]
    failed = [e for e in rec.events if e.kind == "job_status" and e.attrs["to"] == "FAILED"]
    assert failed[0].error == "boom" and not failed[0].ok


def test_cancel_image_cancels_its_layers(tmp_path: Path) -> None:
    jobs, _ = make_jobs(tmp_path)
    jobs.get_or_add_image("img")
    a, b, c = (jobs.add_layer_job("img", f"sha256:{x}") for x in "abc")
    assert c.claim() and c.finish()
    jobs.cancel_image("img", RuntimeError("stop"))
    assert (a.status, b.status, c.status) == (S.CANCELLED, S.CANCELLED, S.DONE)
    jobs.remove_image("img")
    assert jobs.storage.keys() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_gc_expires_images_and_deletes_orphans(tmp_path: Path, backend: str) -> None:
    clock = [0.0]
    jobs, _ = make_jobs(tmp_path, clock)

    async def main() -> None:
        jobs.get_or_add_image("old")
        old = jobs.add_layer_job("old", "sha256:a")
        clock[0] = 50.0
        jobs.get_or_add_image("young")
        young = jobs.add_layer_job("young", "sha256:b")
        orphan = jobs.storage.create()  # on disk, unknown in memory
        clock[0] = 120.0
        async with anyio.create_task_group() as tg:
            tg.start_soon(jobs.run_gc, 0.01)
            with anyio.fail_after(5):
                while orphan in set(jobs.storage.keys()) or old.path.exists():
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert old.status is S.CANCELLED and "expired" in str(old.error)
        assert [i.key for i in jobs.images()] == ["young"]
        assert young.path.exists() and young.status is S.IN_PROGRESS

    anyio.run(main, backend=backend)


class JobMachine(RuleBasedStateMachine):
    """Random operations on jobs; every recorded status change must be an allowed one."""

    jobs_b = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.clock = [0.0]
        self.rec = EventRecorder()
        self.jobs = UnpackJobs(
            LayerUnpackDiskStorage(self._tmp.name), recorder=self.rec, clock=lambda: self.clock[0], expiry_s=10.0
        )
        self.removed: set[str] = set()

    def teardown(self) -> None:
        self._tmp.cleanup()

    @rule(target=jobs_b, image=st.sampled_from(["i1", "i2"]), layer=st.sampled_from(["l1", "l2", "l3"]))
    def add(self, image: str, layer: str) -> object:
        self.jobs.get_or_add_image(image)
        return self.jobs.add_layer_job(image, layer)

    @rule(job=jobs_b)
    def claim(self, job: object) -> None:
        before = job.status  # type: ignore[attr-defined]
        assert job.claim() == (before is S.IN_PROGRESS)  # type: ignore[attr-defined]

    @rule(job=jobs_b, ok=st.booleans())
    def finish(self, job: object, ok: bool) -> None:
        job.finish(None if ok else RuntimeError("x"))  # type: ignore[attr-defined]

    @rule(job=jobs_b)
    def cancel(self, job: object) -> None:
        job.cancel(RuntimeError("c"))  # type: ignore[attr-defined]

    @rule(image=st.sampled_from(["i1", "i2"]))
    def cancel_image(self, image: str) -> None:
        if image in {i.key for i in self.jobs.images()}:
            self.jobs.cancel_image(image)
            for job in self.jobs.get_image(image).jobs():
                assert job.status in (S.CANCELLED, S.DONE, S.FAILED)

    @rule(job=jobs_b)
    def remove(self, job: object) -> None:
        if job.id in self.removed:  # type: ignore[attr-defined]
            with pytest.raises(LayerJobNotFound):
                self.jobs.remove(job)  # type: ignore[arg-type]
            return
        if job.status in REMOVABLE:  # type: ignore[attr-defined]
            self.jobs.remove(job)  # type: ignore[arg-type]
            self.removed.add(job.id)  # type: ignore[attr-defined]
        else:
            with pytest.raises(LayerJobCannotBeCleaned):
                self.jobs.remove(job)  # type: ignore[arg-type]

    @rule(dt=st.floats(0, 8))
    def tick_and_collect(self, dt: float) -> None:
        self.clock[0] += dt
        expired = {i.key for i in self.jobs.images() if self.clock[0] - i.created >= 10.0}
        for img in list(self.jobs.images()):
            if img.key in expired:
                self.removed.update(j.id for j in img.jobs())
        assert set(self.jobs.collect_expired()) == expired
        assert not expired & {i.key for i in self.jobs.images()}

    @invariant()
    def transitions_allowed(self) -> None:
        for e in self.rec.events:
            if e.kind == "job_status" and e.attrs["from"] is not None:
                assert S[e.attrs["to"]] in ALLOWED_TRANSITIONS[S[e.attrs["from"]]]

    @invariant()
    def disk_matches_memory(self) -> None:
        on_disk = set(self.jobs.storage.keys())
        live = {j.id for img in self.jobs.images() for j in img.jobs()}
        assert live <= on_disk
        assert not (on_disk & self.removed)
        for img in self.jobs.images():
            assert img.layers, "an image job without layer jobs stayed"


TestJobMachine = JobMachine.TestCase
TestJobMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# --- resource limits ----------------------------------------------------------------------------------


def test_semaphore_with_nil_unlimited_and_limited() -> None:
    async def main() -> None:
        free = SemaphoreWithNil(0)
        for _ in range(100):
            await free.acquire()
        assert free.unlimited and free.in_use == 100
        one = SemaphoreWithNil(1)
        await one.acquire()
        with anyio.move_on_after(0.05) as scope:
            await one.acquire()
        assert scope.cancelled_caught and one.in_use == 1
        one.release()
        with pytest.raises(RuntimeError):
            one.release()

    anyio.run(main)


def test_per_image_limit_must_not_exceed_global() -> None:
    with pytest.raises(ConfigError, match="global download limit"):
        LayerUnpackResourceController(max_downloads=2, max_downloads_per_image=3)
    with pytest.raises(ConfigError, match="global unpack limit"):
        LayerUnpackResourceController(max_unpacks=1, max_unpacks_per_image=2)
    LayerUnpackResourceController(max_downloads=-1, max_downloads_per_image=50)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_image_unit_released_when_waiting_for_global_is_cancelled(backend: str) -> None:
    """Upstream leaks the per-image download unit when the global acquire fails; here it cannot."""

    async def main() -> None:
        ctrl = LayerUnpackResourceController(max_downloads=1, max_downloads_per_image=1)
        hold = anyio.Event()

        async def holder() -> None:
            async with ctrl.download_lease("a"):
                await hold.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.sleep(0.01)
            with anyio.move_on_after(0.05):
                async with ctrl.download_lease("b"):
                    raise AssertionError("global limit exceeded")
            assert ctrl.image("b").downloads.in_use == 0
            with pytest.raises(ValueError):
                async with ctrl.unpack_lease("c"):
                    raise ValueError("apply failed")
            assert ctrl.image("c").unpacks.in_use == 0 and ctrl.unpacks.in_use == 0
            hold.set()
        assert ctrl.downloads.in_use == 0

    anyio.run(main, backend=backend)


class LeaseMachine(RuleBasedStateMachine):
    """Random concurrent acquire / release / cancel of leases on a live event loop (in a portal thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self.portal_cm.__enter__()
        self.holders: list[dict[str, object]] = []

    @initialize(g=st.integers(-1, 4), p=st.integers(-1, 4), gu=st.integers(-1, 3), pu=st.integers(-1, 3))
    def setup(self, g: int, p: int, gu: int, pu: int) -> None:
        if g > 0 and p > g:
            p = g
        if gu > 0 and pu > gu:
            pu = gu
        self.limits = {"download": (g, p), "unpack": (gu, pu)}
        self.ctrl = LayerUnpackResourceController(
            max_downloads=g, max_downloads_per_image=p, max_unpacks=gu, max_unpacks_per_image=pu
        )

    def _tick(self) -> None:
        for _ in range(3):
            self.portal.call(anyio.sleep, 0)

    @rule(image=st.sampled_from(["a", "b", "c"]), kind=st.sampled_from(["download", "unpack"]))
    def acquire(self, image: str, kind: str) -> None:
        h: dict[str, object] = {"image": image, "kind": kind, "state": "waiting"}
        h["release"] = self.portal.call(anyio.Event)
        h["scope"] = self.portal.call(anyio.CancelScope)
        ctrl = self.ctrl

        async def run() -> None:
            lease = ctrl.download_lease if kind == "download" else ctrl.unpack_lease
            with h["scope"]:  # type: ignore[attr-defined]
                async with lease(image):
                    h["state"] = "holding"
                    await h["release"].wait()  # type: ignore[attr-defined]
            h["state"] = "done"

        self.portal.start_task_soon(run)
        self.holders.append(h)
        self._tick()

    @precondition(lambda self: any(h["state"] == "holding" for h in self.holders))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from([h for h in self.holders if h["state"] == "holding"]))
        self.portal.call(h["release"].set)  # type: ignore[attr-defined]
        self._tick()

    @precondition(lambda self: any(h["state"] != "done" for h in self.holders))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from([h for h in self.holders if h["state"] != "done"]))
        self.portal.call(h["scope"].cancel)  # type: ignore[attr-defined]
        self._tick()
        assert h["state"] == "done"

    @invariant()
    def limits_hold(self) -> None:
        if not hasattr(self, "ctrl"):
            return

        def check() -> None:
            for kind, (g, p) in self.limits.items():
                holding = [h for h in self.holders if h["kind"] == kind and h["state"] == "holding"]
                sem = self.ctrl.downloads if kind == "download" else self.ctrl.unpacks
                assert sem.in_use == len(holding)
                if g > 0:
                    assert sem.in_use <= g
                for image in "abc":
                    mine = [h for h in holding if h["image"] == image]
                    lim = self.ctrl.image(image)
                    isem = lim.downloads if kind == "download" else lim.unpacks
                    # per-image units are taken first: holders, plus waiters for a global unit
                    started = [
                        h for h in self.holders if h["kind"] == kind and h["image"] == image and h["state"] != "done"
                    ]
                    assert len(mine) <= isem.in_use <= len(started)
                    if p > 0:
                        assert isem.in_use <= p

        self.portal.call(check)

    def teardown(self) -> None:
        try:
            for h in self.holders:
                self.portal.call(h["scope"].cancel)  # type: ignore[attr-defined]
            self._tick()
            if hasattr(self, "ctrl"):
                assert self.ctrl.downloads.in_use == 0 and self.ctrl.unpacks.in_use == 0
                for image in "abc":
                    assert self.ctrl.image(image).downloads.in_use == 0
        finally:
            self.portal_cm.__exit__(None, None, None)


TestLeaseMachine = LeaseMachine.TestCase
TestLeaseMachine.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
