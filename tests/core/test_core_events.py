import threading

import pytest

from soci_lab.errors import InvalidInput
from soci_lab.events import COLUMNS, EventRecorder, read_events


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
    assert list(back.columns) == list(COLUMNS)
    assert back["attrs"].tolist() == frame["attrs"].tolist()
    cols = ["kind", "bytes", "ok", "layer", "error"]
    assert back[cols].values.tolist() == frame[cols].values.tolist()


def test_bad_extension(tmp_path):
    with pytest.raises(InvalidInput, match=r"\.csv, \.jsonl or \.parquet"):
        EventRecorder().write(tmp_path / "x.txt")
