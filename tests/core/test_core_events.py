import keyword
import threading

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas._libs.parsers import STR_NA_VALUES

from soci_lab.errors import InvalidInput
from soci_lab.events import (
    COLUMNS,
    EventRecorder,
    detail,
    detail_column,
    of_kind,
    read_events,
    upgrade_frame,
    write_events,
)


def test_step_records_duration_bytes_and_failure():
    t = [0.0]
    rec = EventRecorder("r1", strategy="lazy", clock=lambda: t[0])
    with rec.step("span_fetch", layer="sha256:aa", span=3) as info:
        t[0] = 0.25
        info["nbytes"] = 4096
        info["status"] = 206
    with pytest.raises(RuntimeError), rec.step("decompress", layer="sha256:aa"):
        t[0] = 0.5
        raise RuntimeError("inflate failed\nsecond line")
    a, b = rec.events
    assert (a.kind, a.t_start, a.t_end, a.bytes, a.span, a.attrs) == ("span_fetch", 0.0, 0.25, 4096, 3, {"status": 206})
    assert (b.ok, b.error, b.duration) == (False, "inflate failed", 0.25)


def test_unknown_kind_is_refused():
    with pytest.raises(InvalidInput, match="unknown event kind"):
        EventRecorder().emit("teleport", 0.0)


def test_threads_lose_no_event():
    rec = EventRecorder()
    def work():
        for _ in range(500):
            rec.emit("cache_hit", rec.now())
    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(rec) == 2000


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_write_read_round_trip(tmp_path, ext):
    rec = EventRecorder("run-x", strategy="parallel")
    rec.emit("http_request", 0.0, 0.1, path="/v2/", nbytes=10, status=200, range="bytes=0-9")
    rec.emit("apply", 0.1, 0.4, layer="sha256:bb", nbytes=123456, ok=False, error="boom")
    frame = rec.to_frame()
    back = read_events(rec.write(tmp_path / f"ev{ext}"))
    assert list(back.columns) == [*COLUMNS, "range", "status"] == list(frame.columns)
    assert_frames_equal(back, frame)
    cols = ["kind", "bytes", "ok", "layer", "error"]
    assert back[cols].values.tolist() == frame[cols].values.tolist()


def plain(frame: pd.DataFrame) -> list[list[object]]:
    """The frame's values with every kind of missing (None, NaN, NA) as None, to compare across formats."""
    return frame.astype(object).where(frame.notna(), None).values.tolist()


def assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert dict(a.dtypes.astype(str)) == dict(b.dtypes.astype(str))
    assert plain(a) == plain(b)


def test_details_are_columns_and_none_shadows_a_dataframe_attribute() -> None:
    rec = EventRecorder("r", strategy="lazy")
    rec.emit("http_request", 0.0, 0.1, path="/v2/x", nbytes=10, status=206, range="bytes=0-9", fast=True)
    rec.emit("file_read", 0.1, 0.2, path="/etc/hosts", nbytes=5, offset=7, size=5)
    rec.emit("job_status", 0.2, 0.2, layer="sha256:aa", **{"from": None, "to": "DONE"})
    rec.emit("ready", 0.3, 0.3, mode="lazy", hows={"lazy": 2})
    frame = rec.to_frame()
    shadowing = [c for c in frame.columns if hasattr(pd.DataFrame, c) or keyword.iskeyword(c)]
    assert shadowing == [] and "attrs" not in frame.columns
    assert {"size_", "mode_", "from_", "to", "status", "offset"} <= set(frame.columns)
    assert frame.attrs == {}  # pandas' own metadata, untouched
    # usable as columns: typed, queryable, empty for the kinds that do not carry them
    assert str(frame["status"].dtype) == "Int64" and str(frame["fast"].dtype) == "boolean"
    assert frame.query("status == 206")["path"].tolist() == ["/v2/x"]
    assert frame.loc[frame.kind == "file_read", "size_"].tolist() == [5]
    assert detail(frame, "size").tolist() == frame["size_"].tolist() and detail_column("mode") == "mode_"
    assert detail(frame, "no_such_detail").isna().all()
    assert frame.loc[frame.kind == "ready", "hows"].iloc[0] == {"lazy": 2}
    http = of_kind(frame, "http_request")
    assert list(http.columns) == [*COLUMNS, "fast", "range", "status"]


def test_an_old_events_file_with_an_attrs_column_is_read_into_detail_columns(tmp_path) -> None:
    old = tmp_path / "old.csv"
    header = ",".join([*COLUMNS, "attrs"])
    old.write_text(
        f"{header}\n"
        'r,real,lazy,http_request,0.0,0.1,,,/v2/,10,True,,"{""status"": 200, ""size"": 3}"\n'
        "r,real,lazy,ready,0.1,0.2,,,,0,True,,{}\n"
    )
    frame = read_events(old)
    assert list(frame.columns) == [*COLUMNS, "size_", "status"]
    assert frame["status"].tolist()[0] == 200 and pd.isna(frame["status"].tolist()[1])
    # and a frame built the old way (a column of dicts) still works where frames are taken
    legacy = frame[list(COLUMNS)].assign(attrs=[{"offset": 4}, {}])
    assert upgrade_frame(legacy)["offset"].tolist()[0] == 4


def _reads_as_another_type(text: str) -> bool:
    """Text a CSV reader takes for a number, a boolean or a missing value (CSV has no types; such a detail
    comes back as that type — the price of a file any tool can read; JSONL and Parquet keep it as text)."""
    try:
        float(text)
        return True
    except ValueError:
        return text.strip() != text or text in STR_NA_VALUES or text.lower() in ("true", "false")


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(lambda f: f + 0.5 if f == int(f) else f),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12).filter(
        lambda t: not _reads_as_another_type(t) and not t.startswith(("{", "["))
    ),
)
KEYS = st.sampled_from(["status", "size", "mode", "from", "offset", "how", "count", "via", "cpu_s", "hows"])


@settings(max_examples=60, deadline=None)
@given(details=st.lists(st.dictionaries(KEYS, VALUES, max_size=4), min_size=1, max_size=6))
def test_any_details_round_trip_through_every_format(tmp_path_factory, details) -> None:
    """Whatever details events carry (one type per key, as the rooms emit them), every format reads back the
    frame that was written: same columns, same dtypes, same values."""
    types: dict[str, type] = {}
    details = [{k: v for k, v in d.items() if v is None or types.setdefault(k, type(v)) is type(v)} for d in details]
    rec = EventRecorder("r", strategy="lazy", clock=lambda: 0.0)
    for i, d in enumerate(details):
        rec.emit("http_request", i * 0.5, i * 0.5 + 0.25, path=f"/p{i}", nbytes=i, **d)
    frame = rec.to_frame()
    assert not [c for c in frame.columns if hasattr(pd.DataFrame, c) or keyword.iskeyword(c)]
    out = tmp_path_factory.mktemp("ev")
    for ext in (".csv", ".jsonl", ".parquet"):
        assert_frames_equal(read_events(write_events(frame, out / f"ev{ext}")), frame)


def test_bad_extension(tmp_path):
    with pytest.raises(InvalidInput, match=r"\.csv, \.jsonl or \.parquet"):
        EventRecorder().write(tmp_path / "x.txt")
