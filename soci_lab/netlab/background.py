"""Run an aiohttp application on its own asyncio loop in a background thread.

The registry and the proxy are used from synchronous tests, from notebooks (whose loop is already
running) and from trio code; a private thread with a private loop serves all three the same way. The
async context-manager form just starts and stops that thread from a worker thread (``anyio``), so it
works under asyncio and trio alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self

import anyio
from aiohttp import web

from ..errors import ServerStartError


class BackgroundServer:
    """Base of the loopback servers: subclasses build the app in ``make_app`` (on the server loop)."""

    #: name shown in thread names and errors
    kind = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # --- to override ------------------------------------------------------------------------------

    async def make_app(self) -> web.Application:
        raise NotImplementedError

    async def on_stop(self) -> None:
        """Called on the server loop after the listener closed."""

    async def add_sites(self, runner: web.AppRunner) -> None:
        """Called on the server loop once the TCP site listens: start further sites (a unix socket)."""

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, ``http://HOST:PORT`` (valid once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise ServerStartError(f"{self.kind} already started")
        self._thread = threading.Thread(target=self._run, name=f"soci-lab-{self.kind}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            err = self._error
            raise ServerStartError(f"{self.kind} could not start on {self.host}:{self.port}: {err}") from err
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = None

    def call(self, fn: Callable[[], Awaitable[Any]], timeout: float | None = 30.0) -> Any:
        """Run a coroutine function on the server loop from another thread and return its result."""
        assert self._loop is not None, f"{self.kind} is not running"
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            app = await self.make_app()
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True, backlog=1024)
            await site.start()
            self._runner = runner
            sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
            self.port = sockets[0].getsockname()[1]
            await self.add_sites(runner)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await self.on_stop()

    # --- context managers ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.stop)
