"""Concurrency limits of parallel pull/unpack (soci-formats.md §5.5).

:class:`SemaphoreWithNil` is a semaphore whose limit ``<= 0`` means *unlimited* (upstream maps the config's
``-1`` to 0). :class:`LayerUnpackResourceController` holds the global download and unpack semaphores, and
one pair of per-image semaphores per image, and hands out *leases*: async context managers that take the
per-image unit, then the global one, and always give back what they took — on success, on error and on
cancellation, including cancellation while waiting for the global unit (upstream leaks the per-image
download unit when the global acquire fails; here that cannot happen because both acquisitions sit inside
one ``try``/``finally``).

Every semaphore counts its holders (``in_use``) and the most it ever had (``peak``), so tests and
benchmarks can check that a limit was never exceeded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from ..config import ParallelPullUnpackConfig
from ..errors import ConfigError, LayerIngestDoesNotExist, LayerUnpackDestinationHasContent


class SemaphoreWithNil:
    """A counting semaphore; ``limit <= 0`` makes acquire a no-op (unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit if limit > 0 else 0
        self._sem = anyio.Semaphore(limit) if limit > 0 else None
        self.in_use = 0
        self.peak = 0

    @property
    def unlimited(self) -> bool:
        return self._sem is None

    async def acquire(self) -> None:
        """Take one unit, waiting if the limit is reached (cancellable: nothing is taken then)."""
        if self._sem is not None:
            await self._sem.acquire()
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    def release(self) -> None:
        if self.in_use <= 0:
            raise RuntimeError("SemaphoreWithNil released more times than acquired")
        self.in_use -= 1
        if self._sem is not None:
            self._sem.release()

    async def __aenter__(self) -> SemaphoreWithNil:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


@dataclass
class ImageLimits:
    """The per-image semaphores of one image."""

    downloads: SemaphoreWithNil
    unpacks: SemaphoreWithNil


class LayerUnpackResourceController:
    """Global and per-image limits on downloads (HTTP requests) and unpacks (layer applies)."""

    def __init__(
        self,
        *,
        max_downloads: int = -1,
        max_downloads_per_image: int = 3,
        max_unpacks: int = -1,
        max_unpacks_per_image: int = 1,
    ) -> None:
        for kind, limit, per_image in (
            ("download", max_downloads, max_downloads_per_image),
            ("unpack", max_unpacks, max_unpacks_per_image),
        ):
            if limit > 0 and per_image > limit:
                raise ConfigError(f"global {kind} limit less than per-image {kind} limit ({limit} < {per_image})")
        self.max_downloads_per_image = max_downloads_per_image
        self.max_unpacks_per_image = max_unpacks_per_image
        self.downloads = SemaphoreWithNil(max_downloads)
        self.unpacks = SemaphoreWithNil(max_unpacks)
        self._images: dict[str, ImageLimits] = {}

    @classmethod
    def from_config(cls, cfg: ParallelPullUnpackConfig) -> LayerUnpackResourceController:
        return cls(
            max_downloads=cfg.max_concurrent_downloads,
            max_downloads_per_image=cfg.max_concurrent_downloads_per_image,
            max_unpacks=cfg.max_concurrent_unpacks,
            max_unpacks_per_image=cfg.max_concurrent_unpacks_per_image,
        )

    def image(self, key: str) -> ImageLimits:
        """The per-image semaphores of ``key`` (created on first use)."""
        limits = self._images.get(key)
        if limits is None:
            limits = ImageLimits(
                SemaphoreWithNil(self.max_downloads_per_image), SemaphoreWithNil(self.max_unpacks_per_image)
            )
            self._images[key] = limits
        return limits

    def forget_image(self, key: str) -> None:
        """Drop the per-image semaphores of an image whose job is gone."""
        self._images.pop(key, None)

    @asynccontextmanager
    async def download_lease(self, image: str) -> AsyncIterator[None]:
        """One HTTP request's worth of download concurrency (per-image, then global)."""
        async with _both(self.image(image).downloads, self.downloads):
            yield

    @asynccontextmanager
    async def unpack_lease(self, image: str) -> AsyncIterator[None]:
        """One layer apply's worth of unpack concurrency (per-image, then global)."""
        async with _both(self.image(image).unpacks, self.unpacks):
            yield

    @staticmethod
    def verify_unpack_destination_is_ready(path: str | os.PathLike[str]) -> None:
        """The destination must exist and be empty (protection from layer poisoning)."""
        try:
            with os.scandir(path) as it:
                first = next(it, None)
        except FileNotFoundError:
            raise LayerUnpackDestinationHasContent(f"unpack destination {path} does not exist") from None
        except NotADirectoryError:
            raise LayerUnpackDestinationHasContent(f"unpack destination {path} is not a directory") from None
        if first is not None:
            raise LayerUnpackDestinationHasContent(
                f"unpack destination {path} is not empty (found {first.name!r}): refusing to unpack into it"
            )

    @staticmethod
    def get_unpack_ingest_reader(path: str | os.PathLike[str]) -> Path:
        """The ingest file to unpack from (it must exist)."""
        p = Path(path)
        if not str(path) or not p.is_file():
            raise LayerIngestDoesNotExist(f"layer ingest does not exist: {path!s}")
        return p


@asynccontextmanager
async def _both(per_image: SemaphoreWithNil, global_: SemaphoreWithNil) -> AsyncIterator[None]:
    taken: list[SemaphoreWithNil] = []
    try:
        await per_image.acquire()
        taken.append(per_image)
        await global_.acquire()
        taken.append(global_)
        yield
    finally:
        for sem in reversed(taken):
            sem.release()


__all__ = ["ImageLimits", "LayerUnpackResourceController", "SemaphoreWithNil"]
