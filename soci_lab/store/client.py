"""Asking a store for builds and reading its state (``soci-lab store build``), async on anyio + httpx.

:class:`StoreClient` wraps the build endpoints of :mod:`.server`: :meth:`~StoreClient.build` queues one
(:class:`~soci_lab.errors.BuildQueueFull` when the store answers 429 or 503 — the store reports a full
queue instead of dropping the request), :meth:`~StoreClient.status` and :meth:`~StoreClient.wait` follow it
to ``Ready`` or ``Failed``. :func:`request_build` is the synchronous one-call form. ``token`` is the
store's build token (sent as ``Authorization: Bearer``; the build then uses the store's registry
credentials); a ``unix:PATH`` URL talks to the store's local build socket (trusted without a token).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from .._sync import run_sync
from ..errors import BuildQueueFull, StoreError

FINAL = ("Ready", "Failed")


def _message(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except ValueError:
        pass
    return resp.text[:4096].strip() or resp.reason_phrase


class StoreClient:
    """An async client for one store at ``url`` (``http://HOST:PORT``)."""

    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        if self.url.startswith("unix:"):  # the store's local build socket: unix:/run/soci-lab-store.sock
            transport = httpx.AsyncHTTPTransport(uds=self.url.removeprefix("unix:"))
            self._base = "http://localhost"
            self._http = httpx.AsyncClient(timeout=timeout, trust_env=False, transport=transport, headers=headers)
        else:
            self._base = self.url
            self._http = httpx.AsyncClient(timeout=timeout, trust_env=False, headers=headers)

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._http.request(method, self._base + path, **kw)
        except httpx.HTTPError as exc:
            raise StoreError(f"store {self.url} unreachable: {type(exc).__name__}: {exc}".rstrip(": ")) from None

    async def build(self, image: str, *, platform: str | None = None, profile: str | None = None,
                    trace: str | Path | None = None, sync_until_s: float | None = None) -> dict[str, Any]:
        """Queue a build of ``image``; returns the build as the store shows it (with ``deduplicated``).
        ``trace`` (a trace file or CSV text) and ``sync_until_s`` are for the ``trace-v1`` profile."""
        doc: dict[str, Any] = {"image": image}
        if platform:
            doc["platform"] = platform
        if profile:
            doc["profile"] = profile
        if trace is not None:
            doc["trace"] = trace if isinstance(trace, str) and "\n" in trace else Path(trace).read_text()
        if sync_until_s is not None:
            doc["syncUntil"] = sync_until_s
        resp = await self._request("POST", "/v1/builds", json=doc)
        if resp.status_code in (429, 503):
            raise BuildQueueFull(f"store {self.url}: {_message(resp)}")
        if resp.status_code in (401, 403):
            raise StoreError(f"store {self.url} refused the build of {image} ({resp.status_code}): {_message(resp)}"
                             + (" (give its build token: --token-file)" if resp.status_code == 401 else ""))
        if resp.status_code != 202:
            raise StoreError(f"store {self.url} refused the build of {image} ({resp.status_code}): {_message(resp)}")
        return resp.json()

    async def status(self, build_id: str) -> dict[str, Any]:
        """The build's current state."""
        resp = await self._request("GET", f"/v1/builds/{build_id}")
        if resp.status_code != 200:
            raise StoreError(f"store {self.url}: {_message(resp)}")
        return resp.json()

    async def wait(self, build_id: str, timeout: float = 600.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll until the build is ``Ready`` or ``Failed``; :class:`StoreError` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self.status(build_id)
            if state["status"] in FINAL:
                return state
            if time.monotonic() > deadline:
                raise StoreError(f"build {build_id} of {state['image']} still {state['status']} after {timeout:g}s")
            await anyio.sleep(poll)

    async def artifacts(self) -> list[dict[str, Any]]:
        """``GET /v1/artifacts``."""
        resp = await self._request("GET", "/v1/artifacts")
        if resp.status_code != 200:
            raise StoreError(f"store {self.url}: {_message(resp)}")
        return resp.json()


async def arequest_build(url: str, image: str, *, wait: bool = False, timeout: float = 600.0,
                         token: str | None = None, **kw: Any) -> dict[str, Any]:
    """Queue a build (and with ``wait`` follow it to its end); keyword arguments go to :meth:`StoreClient.build`."""
    async with StoreClient(url, token=token) as client:
        state = await client.build(image, **kw)
        if wait:
            state = {**await client.wait(state["id"], timeout), "deduplicated": state.get("deduplicated", False)}
        return state


def request_build(url: str, image: str, **kw: Any) -> dict[str, Any]:
    """:func:`arequest_build` for synchronous callers."""
    return run_sync(functools.partial(arequest_build, url, image, **kw))


__all__ = ["StoreClient", "arequest_build", "request_build"]
