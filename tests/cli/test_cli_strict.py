"""Strict input, clear errors (issue 16, point 8): every usage error exits 2 before any work starts, config
typos name the key and the closest valid one, connect errors that cannot heal fail at once in one line,
a web server that is not a registry is named as such, a non-empty mountpoint is refused."""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import soci_lab

from soci_lab.cli import main
from soci_lab.config import Config
from soci_lab.errors import ConfigError

SIM = ["simulate", "--image", "synthetic:1,size=64MiB,layers=2", "--mode", "lazy"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*SIM, "--rtt", "20"], "needs a unit"),
        ([*SIM, "--bandwidth", "100"], "needs a unit"),
        ([*SIM, "--request-overhead", "1"], "needs a unit"),
        ([*SIM, "--rtt", "soon"], "not a duration"),
        ([*SIM, "--read-fraction", "1.5"], "between 0 and 1"),
        ([*SIM, "--read-fraction", "-0.1"], "between 0 and 1"),
        ([*SIM, "--cores", "0"], "must be positive"),
        ([*SIM, "--span-size", "0"], "size must be positive"),
        (["compare", "127.0.0.1:5000/a:b", "--modes", "lazy,eager", "--out", "d"], "unknown mode 'eager'"),
        (["compare", "127.0.0.1:5000/a:b", "--modes", "lazy,lazy", "--out", "d"], "named twice"),
        (["compare", "127.0.0.1:5000/a:b", "--out", "d", "--trace", __file__, "--", "/bin/true"], "not both"),
        (["netlab", "proxy", "--upstream", "127.0.0.1:5055"], "http:// or https:// URL"),
        (["registry", "serve", "--port", "70000"], "0..65535"),
        (["registry", "serve", "--latency", "5"], "needs a unit"),
        (["store", "build", "127.0.0.1:5000/a:b", "--store", "localhost:39091"], "http:// or https:// URL"),
        (["umount", "/nowhere", "--timeout", "30"], "needs a unit"),
        (["mount", "127.0.0.1:5000/a:b", "/mnt", "--mode", "lazy", "--artifact-store", "store:1"], "URL"),
        (["demo", "--scale", "0"], "must be positive"),
        (["registry", "serve", "--layout", "nodir"], "--layout takes NAME=DIR"),
        (["registry", "serve", "--user", "nopass"], "--user takes USER:PASS"),
        (["store", "build", "127.0.0.1:5000/a:b", "--profile", "trace-v1"], "needs --trace FILE"),
        (["store", "build", "Not A Ref"], "invalid repository"),
        ([*SIM, "--trace", "/nonexistent/trace.csv"], "no such file"),
        ([*SIM, "--calibration", "/nonexistent/cal.json"], "no such file"),
        ([*SIM, "--config", "/nonexistent/config.toml"], "cannot read config"),
        (["compare", "127.0.0.1:5000/a:b", "--out", "d", "--trace", "/nonexistent/t.csv"], "no such file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("soci-lab")


def test_rates_and_durations_with_units_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SIM, "--rtt", "20ms", "--bandwidth", "100Mbit", "--request-overhead", "0", "--json"]) == 0
    assert '"mode": "lazy"' in capsys.readouterr().out


# --- config files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[pull_modes.soci_v1]\nenabel = true\n", "unknown config key 'pull_modes.soci_v1.enabel'; did you mean "
                                                 "'pull_modes.soci_v1.enable'?"),
        ("[nonsense]\nx = 1\n", "unknown config section [nonsense]"),
        ("[backgroud_fetch]\ndisable = true\n", "did you mean 'background_fetch'?"),
        ("[http]\nmax_retries = -5\n", "http.max_retries must be 0 or more, not -5"),
        ("[fuse]\nattr_timeout = -1\n", "fuse.attr_timeout must be 0 or more"),
        ("max_concurency = 3\n", "did you mean 'max_concurrency'?"),
    ],
)
def test_config_typos_and_out_of_range_values_are_errors(tmp_path: Path, toml: str, message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "config.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        Config.from_toml(f)
    assert message in str(info.value) and str(f) in str(info.value)
    assert main([*SIM, "--config", str(f)]) == 2  # a usage error, before the simulation starts
    err = capsys.readouterr()
    assert message in err.err and err.out == ""


def test_production_configs_still_load(tmp_path: Path) -> None:
    """soci-snapshotter's own keys that soci_lab does not model are kept aside, not refused."""
    f = tmp_path / "config.toml"
    f.write_text('metrics_address = "127.0.0.1:8000"\nmetadata_store = "db"\n[cri_keychain]\nenable_keychain = true\n'
                 "[fuse]\nlog_fuse_operations = false\nattr_timeout = 2\n[blob]\nmax_span_verification_retries = -1\n"
                 "[pull_modes.parallel_pull_unpack]\nmax_concurrent_downloads = -1\n")
    c = Config.from_toml(f)
    assert c.fuse.attr_timeout == 2 and c.blob.max_span_verification_retries == -1
    assert set(c.unknown) == {"metrics_address", "metadata_store", "cri_keychain", "fuse.log_fuse_operations"}


# --- output formats -------------------------------------------------------------------------------------------


def test_parquet_events_without_pyarrow_are_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyarrow is installed here, so its absence is simulated (``sys.modules[name] = None`` makes
    ``find_spec`` and ``import`` fail as they would on a machine without it)."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    out = tmp_path / "events.parquet"
    assert main([*SIM, "--events", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    assert "needs pyarrow" in captured.err and captured.out == ""
    assert not out.exists()
    assert main([*SIM, "--events", str(tmp_path / "events.txt")]) == 2
    assert ".csv, .jsonl or .parquet" in capsys.readouterr().err


# --- network errors -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_on_loopback_fails_at_once(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    port = _free_port()  # nothing listens there
    proc = soci_lab("index", "info", f"127.0.0.1:{port}/a:b", "--events", str(events), timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"connection refused: nothing listens on 127.0.0.1:{port}" in lines[0]
    import pandas as pd

    requests = pd.read_csv(events).query("kind == 'http_request'")
    assert len(requests) == 1  # one attempt, not nine


def test_a_name_that_does_not_resolve_fails_at_once(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    proc = soci_lab("index", "info", "no-such-host.invalid/a:b", "--events", str(events), timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot resolve host 'no-such-host.invalid'" in lines[0]
    import pandas as pd

    assert len(pd.read_csv(events).query("kind == 'http_request'")) == 1


@contextlib.contextmanager
def _plain_web_server(root: Path) -> Iterator[str]:
    """Python's own file server on a free loopback port: a web server, not a registry."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_web_server_is_named_as_not_a_registry(tmp_path: Path) -> None:
    with _plain_web_server(tmp_path) as host:
        proc = soci_lab("index", "info", f"{host}/a:b", timeout=60)
        sim = soci_lab("simulate", "--image", f"{host}/a:b", "--mode", "lazy", timeout=60)
    for p in (proc, sim):
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert f"GET http://{host}/v2/ answered 404: {host} is not an OCI registry" in lines[0]


def test_a_registry_404_stays_a_plain_not_found(embedded_registry) -> None:  # type: ignore[no-untyped-def]
    proc = soci_lab("index", "info", embedded_registry.ref("cli/none", "v1"), timeout=60)
    assert proc.returncode == 1 and "not an OCI registry" not in proc.stderr and "404" in proc.stderr


# --- mounting -------------------------------------------------------------------------------------------------


def test_mount_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    proc = soci_lab("mount", "127.0.0.1:1/a:b", str(target), "--mode", "lazy", "--background", timeout=60)
    assert proc.returncode == 1
    assert "is not empty" in proc.stderr and "--allow-nonempty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (target / "keep.txt").read_text() == "mine\n" and [p.name for p in target.iterdir()] == ["keep.txt"]
