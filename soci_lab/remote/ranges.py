"""Reading blob bytes over HTTP: whole bodies and inclusive byte ranges, resumable after breaks.

:func:`fetch_into` is the one loop every download goes through. It sends the GET (with ``Range`` when a
range is asked, or when resuming), accepts ``206`` (checking that ``Content-Range`` starts where it was
asked and ends there or at the blob's end) and ``200`` (skipping to the wanted offset, as soci's
``GetContentWithRange`` callers should), passes the bytes to a sink, and when the body breaks mid-way
asks again from the first byte not yet delivered, spending the same :class:`RetryBudget` as status retries.
Redirects to storage URLs are followed, and with ``cache_redirect`` the final URL is remembered and used
directly next time (soci's parallel pull ``CacheRedirects``). Transfers of at least ``FAST_MIN_BYTES`` take
the fast path of :mod:`.fastpath` (urllib3 on worker threads; ``Transport.fast_path``, on by default), the
rest httpx; both give an exchange with the same face (``status``, ``headers``, ``aiter_raw``, ``aclose``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from ..errors import InvalidInput, RegistryError, SizeMismatch, TruncatedBody
from .fastpath import FAST_MIN_BYTES, FastExchange, send_fast
from .fastpath import FIRST as PREFETCH
from .pump import Pumpable
from .retry import redact_url
from .transport import Exchange, RetryBudget, Transport

#: Where streamed blob bytes go: ``await sink(chunk)``, in order; an exception stops the download. The one sink
#: type of blob reads (:mod:`.blobs` re-exports it for the lazy and eager rooms).
Sink = Callable[[bytes], Awaitable[None]]

_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def check_range(lower: int, upper: int) -> None:
    """Reject ``lower > upper`` and negative offsets (soci: "illogical content range")."""
    if not isinstance(lower, int) or not isinstance(upper, int) or isinstance(lower, bool) or isinstance(upper, bool):
        raise InvalidInput(f"content range offsets must be integers, not {lower!r}-{upper!r}")
    if lower < 0 or upper < lower:
        raise InvalidInput(f"illogical content range {lower}-{upper} (need 0 <= lower <= upper)")


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes b-e/total`` → ``(b, e, total)`` (``total`` None for ``*``); None when absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE_RE.fullmatch(value.strip())
    if not m:
        return None
    b, e, t = m.groups()
    return int(b), int(e), None if t == "*" else int(t)


async def fetch_into(
    transport: Transport,
    url: str,
    sink: Sink,
    *,
    lower: int = 0,
    upper: int | None = None,
    ranged: bool = True,
    scopes: tuple[str, ...] | None = (),
    budget: RetryBudget | None = None,
    cache_redirect: bool = False,
    expect_total: int | None = None,
) -> int:
    """Deliver bytes ``lower..upper`` (inclusive; ``upper=None`` = to the end) of ``url`` to ``sink``.

    ``ranged=False`` sends the first GET without a ``Range`` header (whole-blob download; ``lower`` must
    be 0); resumptions always use one. ``expect_total`` (the descriptor's size) turns a registry announcing
    another total length into ``SizeMismatch`` before any byte is delivered. Returns the number of bytes
    delivered, which is ``upper - lower + 1`` unless the blob ends sooner.

    A :class:`~.pump.Pumpable` sink (the blob feeder of ``fetch_blob``, the eager puller's ingest file) lets
    a fast-path body skip the event loop: it is pumped from the connection into the sink on worker threads
    (:meth:`.FastExchange.pump_into`).
    """
    if upper is not None:
        check_range(lower, upper)
    elif lower < 0:
        raise InvalidInput(f"illogical content range start {lower}")
    budget = budget or RetryBudget(transport.policy)
    # (a runtime protocol check is slow: once per call, not per GET)
    pumped = sink if isinstance(sink, Pumpable) else None
    pos = lower
    first = True
    while upper is None or pos <= upper:
        headers: dict[str, str] = {}
        if ranged or not first or pos > 0:
            headers["Range"] = f"bytes={pos}-{'' if upper is None else upper}"
        first = False
        exchange: Exchange | FastExchange
        wanted = None if upper is None else upper - pos + 1
        if transport.fast_path and wanted is not None and wanted >= FAST_MIN_BYTES:
            exchange = await send_fast(transport, url, headers=headers, scopes=scopes, budget=budget,
                                       cache_redirect=cache_redirect,
                                       prefetch=0 if pumped is not None else PREFETCH)
        else:
            exchange = await transport.send("GET", url, headers=headers, ok=(200, 206), stream=True, scopes=scopes,
                                            follow_redirects=True, cache_redirect=cache_redirect, budget=budget)
        ended_cleanly = False
        failure: str | None = None  # what cut this exchange short, for its event
        try:
            skip = 0
            if exchange.status == 206:
                parsed = parse_content_range(exchange.headers.get("Content-Range"))
                if parsed is None:
                    raise RegistryError(
                        f"GET {redact_url(url)}: 206 without a valid Content-Range "
                        f"({exchange.headers.get('Content-Range')!r})", status=206)
                start, end, total = parsed
                _check_total(url, total, expect_total)
                at_end = total is not None and end == total - 1
                if start != pos or (upper is not None and end != upper and not (at_end and end < upper)) or (
                    upper is None and total is not None and not at_end
                ):
                    raise RegistryError(
                        f"GET {redact_url(url)}: asked for bytes {pos}-{'' if upper is None else upper}, "
                        f"got Content-Range {exchange.headers.get('Content-Range')!r}", status=206)
                upper = end if upper is None else min(upper, end)
            else:
                skip = pos
                length = exchange.headers.get("Content-Length")
                if length is not None and length.isdigit():
                    _check_total(url, int(length), expect_total)
                    last = int(length) - 1
                    if pos > last and not (pos == 0 and last == -1):  # an empty blob is fine from offset 0
                        raise RegistryError(f"GET {redact_url(url)}: offset {pos} is past the end of a "
                                            f"{int(length)}-byte blob", status=200)
                    upper = last if upper is None else min(upper, last)
            if pumped is not None and isinstance(exchange, FastExchange) and exchange.can_pump \
                    and upper is not None:
                await pumped.drain()  # whatever an earlier attempt queued is written first
                delivered = 0
                try:
                    delivered = await exchange.pump_into(pumped.split_sink(), skip=skip, limit=upper + 1 - pos)
                except TruncatedBody as exc:
                    delivered = getattr(exc, "delivered", 0)
                    raise
                finally:
                    pos += delivered
                    pumped.pumped(delivered)
            else:
                async with aclosing(exchange.aiter_raw()) as body:  # type: ignore[type-var]
                    async for chunk in body:
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk = chunk[skip:]
                            skip = 0
                        if upper is not None and pos + len(chunk) > upper + 1:
                            chunk = chunk[: upper + 1 - pos]
                        if chunk:
                            pos += len(chunk)
                            await sink(chunk)
                        if upper is not None and pos > upper:
                            break
                    else:
                        ended_cleanly = True
        except TruncatedBody as exc:
            failure = type(exc).__name__
            await budget.spend("GET", url, str(exc).rpartition("(")[2].rstrip(")") or "body broke", exchange.status,
                               None)
            continue
        except BaseException as exc:  # a sink's error, a cancellation: the event must not say ok
            failure = type(exc).__name__
            raise
        finally:
            await exchange.aclose(failure)
        if upper is None and ended_cleanly:
            return pos - lower  # no length announced: the body's end is the blob's end
        if upper is not None and pos <= upper:
            # the body ended cleanly but short (truncated by a proxy): ask for the rest
            await budget.spend("GET", url, f"body ended after {pos - lower} of {upper - lower + 1} bytes",
                               exchange.status, None)
    return pos - lower


def _check_total(url: str, total: int | None, expected: int | None) -> None:
    if total is not None and expected is not None and total != expected:
        raise SizeMismatch(f"GET {redact_url(url)}: the registry serves {total} bytes, the descriptor says {expected}")


async def get_content_with_range(
    transport: Transport,
    url: str,
    lower: int,
    upper: int,
    *,
    scopes: tuple[str, ...] | None = (),
    cache_redirect: bool = True,
) -> bytes:
    """The bytes ``lower..upper`` (inclusive) of ``url`` (soci's ``GetContentWithRange``), in memory.

    Raises ``InvalidInput`` for an illogical range, ``RangeNotSatisfiable`` on 416, ``TruncatedBody``
    when the blob ends before ``upper``.
    """
    check_range(lower, upper)
    parts: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        parts.append(chunk)

    n = await fetch_into(transport, url, sink, lower=lower, upper=upper, scopes=scopes, cache_redirect=cache_redirect)
    if n != upper - lower + 1:
        raise TruncatedBody(f"GET {redact_url(url)}: the blob ends after {n} of the {upper - lower + 1} bytes asked")
    return b"".join(parts)
