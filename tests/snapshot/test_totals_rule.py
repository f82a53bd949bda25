"""``totals_of`` and ``bytes_per_layer`` (the numbers of ``mount --json`` and ``umount --json``) count in plain
Python, without a DataFrame and without importing :mod:`soci_lab.analysis` (issue 18: that package brings
matplotlib, 1.5 s of a cold command, and framing a ready mount's events cost ~50 ms before its report). They
are held here to the rules as the summary states them, with pandas, over generated event lists, given as
events and as a frame (the two inputs they take)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.analysis.summary import network_events
from soci_lab.events import Event, events_to_frame
from soci_lab.snapshot.mounted import bytes_per_layer
from soci_lab.snapshot.teardown import Totals, totals_of

KINDS = ["http_request", "chunk_download", "blob_download", "index_fetch", "ztoc_fetch", "span_fetch", "mount",
         "file_read", "span_decompress"]

LAYERS = ["sha256:a", "sha256:b", "sha256:c"]
event = st.builds(
    lambda kind, ok, n, layer, span, path: Event(
        "r", "real", "lazy", kind, 0.0, 1.0, layer=layer, span=span, bytes=n, ok=ok, path=path
    ),
    st.sampled_from(KINDS),
    st.booleans(),
    st.integers(0, 10**9),
    st.sampled_from([None, *LAYERS]),
    st.one_of(st.none(), st.integers(0, 6)),
    st.sampled_from([None, "/v2/r/manifests/v1", *(f"/v2/r/blobs/sha256:{x}" for x in "abz")]),
)


def by_the_summary(events: list[Event], spans_total: int) -> Totals:
    """The rule as the summary states it, with pandas (what ``totals_of`` did before)."""
    frame = events_to_frame(events)
    if frame.empty:
        return Totals(spans_total=spans_total)
    net, rule = network_events(frame)
    ok = net[net["ok"].astype(bool)] if rule == "http_request" else net
    fetched = frame[(frame["kind"] == "span_fetch") & frame["ok"].astype(bool) & frame["span"].notna()]
    spans = {(str(layer), int(span)) for layer, span in zip(fetched["layer"], fetched["span"], strict=True)}
    return Totals(int(ok["bytes"].sum()), len(net), len(spans), spans_total)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(event, max_size=25), spans_total=st.integers(0, 50))
def test_totals_follow_the_summary_rule(events: list[Event], spans_total: int) -> None:
    want = by_the_summary(events, spans_total)
    assert totals_of(events, spans_total) == want
    assert totals_of(events_to_frame(events), spans_total) == want


def test_totals_of_events_imports_no_analysis() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from soci_lab.events import Event\n"
        "from soci_lab.snapshot.teardown import totals_of\n"
        "t = totals_of([Event('r', 'real', 'lazy', 'http_request', 0.0, 1.0, bytes=5)], 0)\n"
        "assert (t.bytes_fetched, t.requests) == (5, 1), t\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'pandas') "
        "or m.startswith('soci_lab.analysis')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def per_layer_by_frame(events: list[Event], digests: list[str]) -> dict[str, int]:
    """The per-layer rule with pandas (what ``bytes_per_layer`` did before)."""
    out = {d: 0 for d in digests}
    frame = events_to_frame(events)
    if frame.empty:
        return out
    http = frame[(frame["kind"] == "http_request") & frame["ok"].astype(bool)]
    if len(http):
        for path, nbytes in zip(http["path"], http["bytes"], strict=True):
            if isinstance(path, str) and "/blobs/" in path and path.rsplit("/", 1)[-1] in out:
                out[path.rsplit("/", 1)[-1]] += int(nbytes)
        return out
    ok = frame[frame["ok"].astype(bool) & frame["layer"].isin(list(out))]
    for digest in out:
        mine = ok[ok["layer"] == digest]
        chunks = mine[mine["kind"] == "chunk_download"]
        whole = chunks if len(chunks) else mine[mine["kind"] == "blob_download"]
        out[digest] = int(whole["bytes"].sum() + mine[mine["kind"] == "span_fetch"]["bytes"].sum())
    return out


@settings(max_examples=150, deadline=None)
@given(events=st.lists(event, max_size=25))
def test_bytes_per_layer_follow_the_frame_rule(events: list[Event]) -> None:
    want = per_layer_by_frame(events, LAYERS)
    assert bytes_per_layer(events, LAYERS) == want
    assert bytes_per_layer(events_to_frame(events), LAYERS) == want
