"""``lab.lazy_read`` builds its layers with the FUSE server's builder (:func:`soci_lab.lazy.layer.build_layer`),
so it honours the knobs a FUSE server honours; here the config's span fetch timeout, which the reader path
used to drop (a span fetch then waited as long as the registry took)."""

from __future__ import annotations

from urllib.parse import urlsplit

from soci_lab import lab
from soci_lab.config import Config
from soci_lab.netlab import ShapingProxy
from soci_lab.run import Run
from soci_lab.workload import Trace, TraceRow

TRACE = Trace([TraceRow(0.0, "read", "/data/one.bin", 0, 4096)])


def _cfg(fetch_timeout_s: float | None) -> Config:
    cfg = Config()
    cfg.background_fetch.disable = True
    cfg.blob.max_span_verification_retries = 0
    if fetch_timeout_s is not None:
        cfg.blob.fetching_timeout_sec = fetch_timeout_s  # type: ignore[assignment]  # (whole seconds in TOML)
    return cfg


def _span_fetches(run: Run) -> list[bool]:
    ev = run.events
    return [bool(ok) for ok in ev[ev["kind"] == "span_fetch"]["ok"]]


def test_lazy_read_honours_the_fetch_timeout(small_image) -> None:  # type: ignore[no-untyped-def]
    registry = "http://" + small_image.ref.split("/", 1)[0]
    with ShapingProxy(registry, latency=0.5) as proxy:  # every answer of the registry 0.5 s late
        ref = urlsplit(proxy.url).netloc + "/" + small_image.ref.split("/", 1)[1]
        # the default timeout (300 s) waits out the latency: the read is served
        slow = lab.lazy_read(ref, TRACE, config=_cfg(None), insecure=True)
        assert slow.provenance["read_failures"] == [] and _span_fetches(slow) and all(_span_fetches(slow))
        # a 0.2 s timeout gives up on each span fetch, as a FUSE server does (EIO there, a read failure here)
        timed_out = lab.lazy_read(ref, TRACE, config=_cfg(0.2), insecure=True)
    failures = timed_out.provenance["read_failures"]
    assert len(failures) == 1 and failures[0].startswith("/data/one.bin: span "), failures
    assert _span_fetches(timed_out) and not any(_span_fetches(timed_out))
