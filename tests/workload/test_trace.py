"""The access-trace CSV: round trips (hypothesis), and bad rows rejected with the line named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.errors import TraceFormatError
from soci_lab.workload import HEADER, OPS, Trace, TraceRow, load_trace, merge_ranges, parse_trace, save_trace

_name = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\r/"), min_size=1, max_size=12
)
paths = st.lists(_name, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
rows = st.builds(
    TraceRow,
    t_s=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    op=st.sampled_from(sorted(OPS)),
    path=paths,
    offset=st.integers(min_value=0, max_value=2**62),
    size=st.integers(min_value=0, max_value=2**40),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(rows, max_size=30))
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, items: list[TraceRow]) -> None:
    path = tmp_path_factory.mktemp("rt") / "trace.csv"
    trace = Trace(items)
    save_trace(trace, path)
    back = load_trace(path)
    assert back == trace
    assert list(back) == sorted(items, key=lambda r: r.t_s)  # stable sort by time
    assert path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()[0] == ",".join(HEADER)


def test_commas_quotes_and_spaces_in_paths_survive(tmp_path: Path) -> None:
    trace = Trace([TraceRow(0.5, "read", '/a dir/with,comma/"quoted".txt', 10, 20)])
    save_trace(trace, tmp_path / "t.csv")
    assert load_trace(tmp_path / "t.csv") == trace


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("0.1,read,/a,0,10\nabc,read,/a,0,1\n", 3, "t_s"),
        ("0.1,write,/a,0,10\n", 2, "op"),
        ("0.1,read,relative/path,0,10\n", 2, "absolute"),
        ("0.1,read,/a,-5,10\n", 2, ">= 0"),
        ("0.1,read,/a,0,ten\n", 2, "integers"),
        ("0.1,read,/a,0\n", 2, "expected 5 fields"),
        ("0.1,read,/a,0,1,extra\n", 2, "expected 5 fields"),
        ("-1,read,/a,0,1\n", 2, "t_s"),
        ("nan,read,/a,0,1\n", 2, "t_s"),
        ("0,stat,/ok,0,0\n\n0.2,open,/x,1.5,0\n", 4, "integers"),
    ],
)
def test_bad_row_names_its_line(tmp_path: Path, body: str, line: int, words: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(",".join(HEADER) + "\n" + body)
    with pytest.raises(TraceFormatError) as info:
        load_trace(f)
    msg = str(info.value)
    assert f"{f} line {line}:" in msg
    assert words in msg
    assert "\n" not in msg


def test_bad_header_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="line 1: header must be"):
        parse_trace("time,op,path,offset,size\n", "x.csv")
    with pytest.raises(TraceFormatError, match="empty file"):
        parse_trace("", "x.csv")
    with pytest.raises(TraceFormatError, match="no such trace file"):
        load_trace(tmp_path / "missing.csv")


def test_distinct_bytes_read_merges_overlaps() -> None:
    t = Trace([
        TraceRow(0, "read", "/a", 0, 100),
        TraceRow(1, "read", "/a", 50, 100),  # overlaps → [0, 150)
        TraceRow(2, "read", "/a", 150, 10),  # touches → [0, 160)
        TraceRow(3, "read", "/a", 1000, 5),
        TraceRow(4, "read", "/b", 0, 7),
        TraceRow(5, "open", "/c", 0, 0),
        TraceRow(6, "read", "/a", 0, 160),  # repeated: counted once
    ])
    assert t.read_ranges() == {"/a": [(0, 160), (1000, 1005)], "/b": [(0, 7)]}
    assert t.bytes_read() == 160 + 5 + 7
    assert t.duration == 6
    assert merge_ranges([(5, 6), (0, 2), (2, 3)]) == [(0, 3), (5, 6)]
