"""summarize(): hand-built event lists against hand-computed numbers, and one rule for real and sim."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from analysis_synth import IMAGE_BYTES, STRATEGIES, make_events
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.analysis import SUMMARY_COLUMNS, merged_length, network_events, summarize, summary_frame
from soci_lab.errors import AnalysisError
from soci_lab.events import Event, events_to_frame


def ev(kind: str, t0: float, t1: float, **kw: object) -> Event:
    attrs = kw.pop("attrs", {})
    return Event("r1", "real", "lazy", kind, t0, t1, attrs=attrs, **kw)  # type: ignore[arg-type]


def hand_built() -> list[Event]:
    return [
        ev("index_fetch", 0.0, 0.1, bytes=100),
        ev("http_request", 0.0, 0.1, bytes=100),
        ev("http_request", 0.1, 0.3, layer="L1", bytes=200),
        ev("http_request", 0.3, 0.35, layer="L1", bytes=50, ok=False, error="reset"),  # failed: counted, no bytes
        ev("http_request", 0.35, 0.6, layer="L1", bytes=300),
        ev("blob_download", 0.1, 0.6, layer="L1", bytes=500),  # http events exist: transfers are not counted
        ev("apply", 0.6, 0.9, layer="L1", bytes=1000),
        ev("apply", 0.9, 1.0, layer="L2", bytes=500),
        ev("apply", 1.0, 1.1, layer="L3", bytes=77, ok=False),  # failed apply wrote nothing we count
        ev("mount", 1.0, 1.2),
        ev("ready", 0.0, 2.5),
        ev("workload", 2.5, 4.0),
        ev("file_read", 2.6, 2.7, path="/a", bytes=100, attrs={"offset": 0}),
        ev("file_read", 2.7, 2.8, path="/a", bytes=100, attrs={"offset": 50}),  # overlaps [50, 100)
        ev("file_read", 2.8, 2.9, path="/a", bytes=100, attrs={"offset": 50}),  # repeat
        ev("file_read", 2.9, 3.0, path="/b", bytes=40, attrs={"offset": 10}),
        ev("file_read", 3.0, 3.1, path="/c", bytes=999, ok=False, error="EIO"),  # failed read: not read
        ev("file_read", 3.1, 3.2, path="/d", bytes=5),  # no offset attr: offset 0
        ev("bg_fetch", 3.0, 4.4, layer="L1", bytes=4096),
    ]


def test_summarize_hand_built() -> None:
    s = summarize(hand_built(), image_bytes=1000)
    assert s["run_id"] == "r1" and s["source"] == "real" and s["strategy"] == "lazy"
    assert s["ready_s"] == 2.5
    assert s["workload_done_s"] == 4.0
    assert s["total_s"] == 4.4
    assert s["bytes_fetched"] == 100 + 200 + 300
    assert s["requests"] == 4
    assert s["network_rule"] == "http_request"
    assert s["bytes_written"] == 1500
    # /a: [0,150) = 150, /b: [10,50) = 40, /d: [0,5) = 5
    assert s["bytes_read"] == 195
    assert s["files_read"] == 3
    assert s["fraction_read"] == pytest.approx(0.195)
    assert s["events"] == len(hand_built())


def test_fallback_rule_without_http_events() -> None:
    events = [
        ev("index_fetch", 0.0, 0.1, bytes=10),
        ev("ztoc_fetch", 0.1, 0.2, layer="A", bytes=20),
        ev("blob_download", 0.2, 1.0, layer="A", bytes=1000),  # A came in chunks: the chunks count
        ev("chunk_download", 0.2, 0.6, layer="A", bytes=400),
        ev("chunk_download", 0.2, 1.0, layer="A", bytes=600),
        ev("blob_download", 0.2, 0.5, layer="B", bytes=300),  # B came whole
        ev("span_fetch", 1.0, 1.1, layer="C", span=0, bytes=50),
        ev("span_fetch", 1.1, 1.2, layer="C", span=1, bytes=70),
        ev("span_fetch", 1.2, 1.3, layer="C", span=2, bytes=90, ok=False),  # failed: a request, no bytes
        ev("bg_fetch", 1.0, 1.2, layer="C", bytes=120),  # why, not what: never counted
        ev("prefetch", 1.0, 1.2, layer="C", bytes=120),
    ]
    s = summarize(events)
    assert s["network_rule"] == "transfers"
    assert s["bytes_fetched"] == 10 + 20 + 400 + 600 + 300 + 50 + 70
    assert s["requests"] == 8
    net, rule = network_events(events)
    assert rule == "transfers" and sorted(net["kind"]) == sorted(
        ["index_fetch", "ztoc_fetch", "chunk_download", "chunk_download", "blob_download"] + ["span_fetch"] * 3
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_answer_with_or_without_http_events(strategy: str) -> None:
    """A real run (HTTP events) and a model of it that only records transfers give the same numbers."""
    events = make_events(strategy)
    with_http = summarize(events, IMAGE_BYTES)
    transfers_only = summarize(events[events["kind"] != "http_request"], IMAGE_BYTES)
    assert with_http["network_rule"] == "http_request" and transfers_only["network_rule"] == "transfers"
    for key in ("bytes_fetched", "requests", "ready_s", "bytes_written", "fraction_read"):
        assert with_http[key] == transfers_only[key], key
    assert with_http["requests"] > 0 and with_http["bytes_fetched"] > 0


def test_no_ready_no_workload_no_size() -> None:
    s = summarize([ev("http_request", 0.0, 0.5, bytes=7)])
    assert math.isnan(s["ready_s"]) and math.isnan(s["workload_done_s"]) and math.isnan(s["fraction_read"])
    assert s["total_s"] == 0.5 and s["bytes_fetched"] == 7 and s["requests"] == 1 and s["bytes_written"] == 0


def test_empty_run() -> None:
    s = summarize(events_to_frame([]), run_id="x", source="sim", strategy="lazy")
    assert s["total_s"] == 0.0 and s["bytes_fetched"] == 0 and s["requests"] == 0 and s["run_id"] == "x"


def test_summarize_refuses_mixed_runs() -> None:
    both = pd.concat([make_events("lazy", seed=1), make_events("lazy", seed=2)], ignore_index=True)
    with pytest.raises(AnalysisError, match="one run"):
        summarize(both)


def test_image_bytes_must_be_positive() -> None:
    with pytest.raises(AnalysisError):
        summarize(hand_built(), image_bytes=0)


def test_merged_length_examples() -> None:
    assert merged_length([]) == 0
    assert merged_length([(0, 10), (5, 15), (20, 25), (25, 30), (3, 3)]) == 25
    assert merged_length([(10, 20), (0, 5), (4, 12)]) == 20


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 60)), max_size=30))
def test_merged_length_counts_each_byte_once(pairs: list[tuple[int, int]]) -> None:
    ranges = [(a, a + n) for a, n in pairs]
    covered = {b for a, e in ranges for b in range(a, e)}
    assert merged_length(ranges) == len(covered)


def test_summary_frame_contract_columns_and_order(synthetic_runs: list) -> None:
    frame = summary_frame(list(reversed(synthetic_runs)))
    assert list(frame.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    assert list(zip(frame["strategy"], frame["source"], strict=True)) == [
        (s, src) for s in STRATEGIES for src in ("real", "sim")
    ]
    # from an events frame of many runs: one row per run_id, same numbers as the runs' own summaries
    all_events = pd.concat([r.events for r in synthetic_runs], ignore_index=True)
    again = summary_frame(all_events)
    assert len(again) == len(synthetic_runs)
    assert sorted(again["bytes_fetched"]) == sorted(r.summary["bytes_fetched"] for r in synthetic_runs)
