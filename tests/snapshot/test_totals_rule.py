"""``totals_of`` (the numbers of ``mount --json`` and ``umount --json``) counts by the summary's rule without
importing :mod:`soci_lab.analysis` (issue 18: that package brings matplotlib, 1.5 s of a cold command). The
rule is the summary's own, so both are held together here over generated event lists, as events and as a
frame (the two inputs ``totals_of`` takes)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.analysis.summary import network_events
from soci_lab.events import Event, events_to_frame
from soci_lab.snapshot.teardown import Totals, totals_of

KINDS = ["http_request", "chunk_download", "blob_download", "index_fetch", "ztoc_fetch", "span_fetch", "mount",
         "file_read", "span_decompress"]

event = st.builds(
    lambda kind, ok, n, layer, span: Event("r", "real", "lazy", kind, 0.0, 1.0, layer=layer, span=span, bytes=n, ok=ok),
    st.sampled_from(KINDS),
    st.booleans(),
    st.integers(0, 10**9),
    st.sampled_from([None, "sha256:a", "sha256:b", "sha256:c"]),
    st.one_of(st.none(), st.integers(0, 6)),
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
