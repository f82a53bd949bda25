"""Issue 6, end to end on real parts: the ``minbase`` dataset image in distribution 2.8 (with a v2 SOCI
index), a Hermes-compatible :class:`ArtifactStore` that built its own index of it, and ``soci-lab run``
as a subprocess (the CLI a user runs), whose ``--events`` file is read back.

- store up: the index comes from the store; the registry sees no discovery request (no referrers API,
  no ``sha256-…`` referrers tag, no manifest GET beyond resolving REF);
- store down (a closed port): with ``fallback_to_registry`` the run goes lazy via registry discovery;
  without it ``NoIndex`` — the Filesystem pulls the whole image eagerly (sequential), and with
  ``--no-fallback`` the command fails with one clear line;
- the recorded-trace profile (``trace-v1`` built from ``datasets/minbase/startup-trace.csv``) fetches
  fewer bytes before the workload is done than the same store's plain index (profile ``none``).

A module guard checks that nothing — mount, process, temporary or state directory — is left behind,
whether the tests passed or not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from privateroots import private_roots

from soci_lab.events import detail, of_kind, read_events

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting and debootstrap need root"),
    pytest.mark.distribution,
    pytest.mark.root,
    pytest.mark.slow,
]

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "datasets" / "minbase" / "startup-trace.csv"
SPAN = 1 << 20
CLI = [sys.executable, "-c", "import sys; from soci_lab.cli import main; sys.exit(main(sys.argv[1:]))"]


# --- the leak guard -----------------------------------------------------------------------------------------


def _mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f]


def _procs_under(prefix: str) -> list[int]:
    """Processes whose root or cwd is under ``prefix`` (a chrooted workload, a FUSE server in our state)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        for link in ("root", "cwd"):
            try:
                target = os.readlink(f"/proc/{name}/{link}")
            except OSError:
                continue
            if target.startswith(prefix):
                out.append(int(name))
                break
    return out


def _children(parent: int | None = None) -> set[int]:
    parent = os.getpid() if parent is None else parent
    kids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            kids.add(int(name))
    return kids


@pytest.fixture(scope="module", autouse=True)
def roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Our own state root and TMPDIR (this process's and the CLI's); at the end of the module, passing or
    failing, no mount, process, temporary file or state directory may be left under them."""
    base = tmp_path_factory.mktemp("integration")
    r = {"state": base / "state", "tmp": base / "tmp", "work": base / "work"}
    for p in r.values():
        p.mkdir()
    kids_before = _children()
    served_before = _service_children()
    try:
        with private_roots(r["state"], r["tmp"]):
            yield r
    finally:
        prefix = str(base) + "/"
        problems = []
        if mounts := [m for m in _mounts() if m.startswith(prefix)]:
            problems.append(f"mounts left: {mounts}")
        if procs := _procs_under(prefix):
            problems.append(f"processes left (root/cwd in our dirs): {procs}")
        # the store and registry fixtures are module/session scoped and started before this guard's end
        # the lazy room's zygote lives as long as this process by design; the servers it forked may not
        zygotes = {p for p in _children() if "soci_lab.lazy.zygote" in _cmdline(p)}
        forked = {c for z in zygotes for c in _children(z)}
        # with the per-host service (tests/conftest.py starts one per session) the layer servers and background
        # serving processes are the service's children, not ours nor a zygote's
        forked |= _service_children() - served_before
        if forked:
            problems.append(f"layer servers left: {[(k, _cmdline(k)) for k in sorted(forked)]}")
        if kids := sorted(_children() - kids_before - zygotes - {p for p in _children() if _is_server(p)}):
            problems.append(f"child processes left: {[(k, _cmdline(k)) for k in kids]}")
        if tmp := sorted(p.name for p in r["tmp"].iterdir()):
            problems.append(f"temporary files left: {tmp}")
        if states := sorted(p.name for p in r["state"].iterdir()):
            problems.append(f"state directories left: {states}")
        assert not problems, "; ".join(problems)


def _service_children() -> set[int]:
    """The live children of this session's soci-lab service (its layer servers and background serving
    processes): the service's pid from its status, its children from /proc; none when no service runs."""
    from soci_lab import service

    try:
        client = service.connect(start=False)
    except Exception:  # no service (yet): nothing it forked can be alive
        return set()
    try:
        pid = int(client.status()["pid"])
    finally:
        client.close()
    return _children(pid)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def _is_server(pid: int) -> bool:
    """docker-registry (the session's distribution fixture) is a child of ours and is not a leak."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"docker-registry" in f.read()
    except OSError:
        return False


def test_the_leak_guard_sees_the_services_layer_servers(tmp_path: Path) -> None:
    """The guard above must see a layer server the session's service forked (it is neither our child nor a
    zygote's): while a layer is mounted its server is among the service's children, after unmount it is not."""
    import gzip
    import io
    import tarfile

    from soci_lab.lazy.mount import LazyLayerSpec, ServeOptions, mount_layer

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("hello")
        ti.size = 6
        tf.addfile(ti, io.BytesIO(b"hello\n"))
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(gzip.compress(buf.getvalue()))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = _service_children()
    with mount_layer(LazyLayerSpec.from_layer_file(layer), mnt, ServeOptions(background=False)) as m:
        assert (mnt / "hello").read_bytes() == b"hello\n"
        assert m.process is not None and m.process.pid in _service_children() - before
    assert m.process.pid not in _service_children()


# --- the image, the store -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    ref: str
    registry_host: str
    manifest_digest: str
    registry_index_digest: str  #: the v2 SOCI index in the registry (what registry discovery finds)
    cmd: tuple[str, ...]
    readiness: str


@pytest.fixture(scope="module")
def minbase_image(distribution_registry) -> Image:  # type: ignore[no-untyped-def]
    """``minbase`` (built once, cached across sessions) in distribution 2.8, with a v2 SOCI index of every
    layer (1 MiB spans, min layer size 0) for the registry-discovery fallback."""
    from soci_lab.artifacts import create_soci_index
    from soci_lab.datasets import build_dataset, export_image
    from soci_lab.datasets.recipes import get_recipe

    built = build_dataset("minbase")
    ref = distribution_registry.ref("integration/minbase", "v1")
    digest = export_image(built, ref, insecure=True)
    index = create_soci_index(ref, span_size=SPAN, min_layer_size=0)
    recipe = get_recipe("minbase")
    return Image(ref, distribution_registry.host, digest, str(index.digest), tuple(recipe.cmd), recipe.readiness)


@pytest.fixture(scope="module")
def store(minbase_image: Image, roots: dict[str, Path]) -> Iterator[str]:
    """A running store that built a plain index (profile ``none``, every layer indexed) of the image."""
    from soci_lab.store import ArtifactStore, BuildSettings, request_build

    settings = BuildSettings(span_size=SPAN, min_layer_size=0, insecure=True)
    with ArtifactStore(db=roots["work"] / "hermes.db", settings=settings) as st:
        state = request_build(st.url, minbase_image.ref, profile="none", wait=True, timeout=180)
        assert state["status"] == "Ready", state
        yield st.url


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _config(path: Path, endpoint: str, fallback: bool, soci_v1: bool = False) -> Path:
    path.write_text(
        "[background_fetch]\ndisable = true\n\n"
        + ("[pull_modes.soci_v1]\nenable = true\n\n" if soci_v1 else "")
        + "[external_artifact_store]\nenable = true\n"
        f'endpoint = "{endpoint}"\ntimeout_sec = 2\nfallback_to_registry = {"true" if fallback else "false"}\n'
    )
    return path


@dataclass
class CliRun:
    proc: subprocess.CompletedProcess[str]
    doc: dict | None
    events: pd.DataFrame | None


def _run_cli(image: Image, config: Path, work: Path, *extra: str, cmd: tuple[str, ...] | None = None) -> CliRun:
    events = work / "events.jsonl"
    argv = [*CLI, "run", image.ref, "--mode", "lazy", "--config", str(config), "--events", str(events),
            "--trace-out", str(work / "trace.csv"), "--json", *extra]
    if cmd is None:
        argv += ["--readiness", image.readiness, "--timeout", "60s", "--", *image.cmd]
    else:
        argv += ["--", *cmd]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=os.environ.copy())
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return CliRun(proc, doc, read_events(events) if events.exists() else None)


def _registry_requests(frame: pd.DataFrame, host: str) -> pd.DataFrame:
    http = frame[frame["kind"] == "http_request"]
    return http[detail(http, "host") == host]


def _paths(frame: pd.DataFrame) -> list[str]:
    """The URL paths (the ``path`` column of ``http_request`` events)."""
    paths = [str(p) for p in frame["path"]]
    assert all(p.startswith("/") for p in paths), paths
    return paths


def _methods(frame: pd.DataFrame) -> list[str]:
    return [str(m or "") for m in detail(frame, "method")]


# --- 1. the full lazy run: store up, store down -------------------------------------------------------------


def test_store_up_lazy_run_sends_no_discovery_request_to_the_registry(
    minbase_image: Image, store: str, roots: dict[str, Path], tmp_path: Path
) -> None:
    # both registry discoveries are on (v2, and v1 through the referrers API) and fallback too: none may run
    cfg = _config(tmp_path / "config.toml", store, fallback=True, soci_v1=True)
    run = _run_cli(minbase_image, cfg, tmp_path)
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    assert run.doc is not None and run.events is not None
    assert {lay["how"] for lay in run.doc["layers"]} == {"lazy"}, run.doc["layers"]
    assert (run.events["kind"] == "span_fetch").any()
    recorded = (tmp_path / "trace.csv").read_text()  # the recipe's startup ran to readiness in the lazy rootfs
    assert ",/app/hello.sh," in recorded and ",/usr/lib/os-release," in recorded, recorded[:1000]

    frame = run.events
    fetched = frame[frame["kind"] == "index_fetch"]
    assert list(detail(fetched, "via")) == ["hermes"], of_kind(fetched, "index_fetch").to_dict("records")
    store_index = str(detail(fetched, "digest").iloc[0])
    assert store_index != minbase_image.registry_index_digest
    reg = _registry_requests(frame, minbase_image.registry_host)
    assert len(reg), "no request reached the registry at all: the events do not name hosts"
    paths, methods = _paths(reg), _methods(reg)
    assert all(m in ("GET", "HEAD") for m in methods), methods
    assert not [p for p in paths if "/referrers/" in p], f"referrers API reached the registry: {paths}"
    assert not [p for p in paths if "/manifests/sha256-" in p], f"referrers tag reached the registry: {paths}"
    # resolving REF reads the tag and the platform manifest, once each; v2 discovery would read the
    # registry's SOCI index manifest (or a manifest again)
    manifests = [p for p in paths if "/manifests/" in p]
    assert len(manifests) == len(set(manifests)) and len(manifests) <= 2, manifests
    for digest in (minbase_image.registry_index_digest, store_index):
        assert not [p for p in paths if digest in p], f"{digest} was asked of the registry: {paths}"
    # what the registry served is the image itself: its manifests, config and layer bytes
    assert all("/manifests/" in p or "/blobs/" in p for p in paths), paths
    layer_reads = [r for r in detail(reg, "range") if r]
    assert layer_reads, "no ranged layer read: the run was not lazy"
    # the store's zTOCs are not named by the image: each layer is checked against its zTOC before it is served
    checks = frame[(frame["kind"] == "verify") & (detail(frame, "what") == "layer")]
    assert len(checks) == len(run.doc["layers"]) and checks["ok"].all(), checks.to_dict("records")
    assert checks["t_end"].max() <= frame[frame["kind"] == "ready"]["t_end"].min()


def test_store_down_with_fallback_goes_lazy_via_registry_discovery(
    minbase_image: Image, tmp_path: Path, roots: dict[str, Path]
) -> None:
    cfg = _config(tmp_path / "config.toml", _closed_port_url(), fallback=True)
    run = _run_cli(minbase_image, cfg, tmp_path, cmd=("/bin/sh", "-c", "cat /etc/os-release"))
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    assert run.doc is not None and run.events is not None
    assert {lay["how"] for lay in run.doc["layers"]} == {"lazy"}, run.doc["layers"]
    paths = _paths(_registry_requests(run.events, minbase_image.registry_host))
    fetched = run.events[run.events["kind"] == "index_fetch"]
    assert list(detail(fetched, "via")) != ["hermes"], of_kind(fetched, "index_fetch").to_dict("records")
    # v2 discovery found the registry's own index and read it from the registry
    assert [p for p in paths if minbase_image.registry_index_digest in p], f"no registry discovery: {paths}"
    assert "PRETTY_NAME" in run.proc.stdout or run.doc.get("bytes_read", 0) > 0


def test_store_down_without_fallback_is_no_index_and_pulls_eagerly(
    minbase_image: Image, tmp_path: Path, roots: dict[str, Path]
) -> None:
    cfg = _config(tmp_path / "config.toml", _closed_port_url(), fallback=False)
    run = _run_cli(minbase_image, cfg, tmp_path, cmd=("/bin/sh", "-c", "cat /etc/os-release"))
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    assert run.doc is not None and run.events is not None
    assert [lay["how"] for lay in run.doc["layers"]] == ["sequential", "sequential"], run.doc["layers"]
    assert not (run.events["kind"] == "span_fetch").any()
    paths = _paths(_registry_requests(run.events, minbase_image.registry_host))
    assert not [p for p in paths if "/referrers/" in p or "/manifests/sha256-" in p], paths
    assert len([p for p in paths if "/manifests/" in p]) <= 2, paths


def test_store_down_without_any_fallback_fails_with_one_clear_line(
    minbase_image: Image, tmp_path: Path, roots: dict[str, Path]
) -> None:
    cfg = _config(tmp_path / "config.toml", _closed_port_url(), fallback=False)
    run = _run_cli(minbase_image, cfg, tmp_path, "--no-fallback", cmd=("/bin/sh", "-c", "cat /etc/os-release"))
    assert run.proc.returncode != 0
    lines = [ln for ln in run.proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.proc.stderr[-2000:]
    print(f"\n{lines[0]}")
    assert "Hermes" in lines[0] and "Traceback" not in run.proc.stderr, lines
    assert run.doc is None, "a failed run printed its JSON"


# --- 2. bytes before the workload is done: trace-v1 against no profile ---------------------------------------
#
# Two stores of the same image: ``store`` (profile ``none``: a plain index, no prefetch artifact) and
# ``trace_store`` (``trace-v1`` from the committed startup trace). Separate stores because a store that
# has a trace-v1 artifact of an image serves it first (store/server.py), and the plain runs need the plain one.


@pytest.fixture(scope="module")
def trace_store(minbase_image: Image, roots: dict[str, Path]) -> Iterator[str]:
    from soci_lab.store import ArtifactStore, BuildSettings, request_build

    settings = BuildSettings(span_size=SPAN, min_layer_size=0, insecure=True)
    with ArtifactStore(db=roots["work"] / "hermes-trace.db", settings=settings) as st:
        state = request_build(st.url, minbase_image.ref, profile="trace-v1", trace=TRACE, wait=True, timeout=180)
        assert state["status"] == "Ready", state
        yield st.url


def _pull(image: Image, url: str, cfg, speed: float | None = None):  # type: ignore[no-untyped-def]
    from soci_lab import lab

    run = lab.pull(image.ref, "lazy", trace=TRACE, config=cfg, artifact_store=url, insecure=True, speed=speed)
    assert run.provenance["found_via"] == "hermes"
    assert run.provenance["replay"]["failed"] == 0, run.provenance["replay"]
    assert {lay["how"] for lay in run.provenance["layers"]} == {"lazy"}
    return run


def _window(run) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(workload start, workload done): the ``workload`` events' first t_start and last t_end."""
    w = run.events[run.events["kind"] == "workload"]
    assert len(w), "the run has no workload events"
    return float(w["t_start"].min()), float(w["t_end"].max())


def _net(run, t_from: float, t_to: float, *, store: bool | None = None) -> int:  # type: ignore[no-untyped-def]
    """Bytes of ok ``http_request`` events with t_from <= t_end <= t_to: registry and store alike, or only
    the store's (``store=True``, events with ``via == "hermes"``) or only the registry's (``store=False``)."""
    f = run.events
    http = f[(f["kind"] == "http_request") & f["ok"] & (f["t_end"] >= t_from) & (f["t_end"] <= t_to)]
    if store is not None:
        hermes = (detail(http, "via") == "hermes").fillna(False).astype(bool)
        http = http[hermes] if store else http[~hermes]
    return int(http["bytes"].sum())


def _spans(run, t_to: float) -> tuple[set[tuple[str, int]], int]:  # type: ignore[no-untyped-def]
    """The (layer, span) fetched for reads, prefetch or the background fetcher — not for the whole-layer
    check (``reason = verify``) — with t_end <= t_to, and their compressed bytes."""
    f = run.events
    fetched = f[(f["kind"] == "span_fetch") & f["ok"].astype(bool) & (f["t_end"] <= t_to)]
    fetched = fetched[(detail(fetched, "reason") != "verify").fillna(True).astype(bool)]
    spans = {(str(la), int(sp)) for la, sp in zip(fetched["layer"], fetched["span"], strict=True)}
    return spans, int(fetched["bytes"].sum())


def test_recorded_trace_profile_fetches_fewer_bytes_before_workload_done(
    minbase_image: Image, store: str, trace_store: str
) -> None:
    """The daemon as configured by default fetches in the background; the trace-v1 index turns that off for
    its layers (``background-fetch=disabled``) and prefetches exactly the traced spans, so before the
    workload is done it has fetched less than the plain index. Silence 0 and a 50 ms period, and the trace
    replayed at 1/25 of its speed (~2 s), make the background fetcher certain to run inside the window."""
    from soci_lab.config import Config

    def cfg() -> Config:
        c = Config()
        c.background_fetch.silence_period_msec = 0
        c.background_fetch.fetch_period_msec = 50
        c.lazy_layer_check = "background"  # upstream's timing (the store's zTOCs served at once): what is compared
        return c

    plain = _pull(minbase_image, store, cfg(), speed=0.04)
    traced = _pull(minbase_image, trace_store, cfg(), speed=0.04)
    plain_bytes = _net(plain, 0.0, _window(plain)[1])
    traced_bytes = _net(traced, 0.0, _window(traced)[1])
    print(f"\nbytes before workload done (background fetch on): no profile {plain_bytes}, trace-v1 {traced_bytes}")
    assert (plain.events["kind"] == "bg_fetch").any(), "the background fetcher never ran for the plain index"
    assert not (traced.events["kind"] == "bg_fetch").any(), "trace-v1 did not turn background fetch off"
    assert (traced.events["kind"] == "prefetch").any()
    assert 0 < traced_bytes < plain_bytes, (traced_bytes, plain_bytes)


def test_recorded_trace_profile_fetches_before_ready_not_during_the_workload(
    minbase_image: Image, store: str, trace_store: str
) -> None:
    """With background fetch disabled (stable counts) both runs fetch the same spans — the ones the trace
    reads — so the registry bytes of those spans before workload done are equal (the store serves trace-v1 a
    larger index: its prefetch artifacts); the profile moves them before the workload: the plain index
    fetches them on demand while the workload runs, trace-v1 has them already.

    Not counted: the whole-layer check's own traffic (``span_fetch`` with ``reason = verify``, and the bytes
    before span 0). It starts on a 0.25 s poll once every span of a layer has been fetched; in the plain run
    the small layer's only span is read during the workload, so its check (3,476 bytes) landed before or
    after "workload done" with the load of the machine — the 4,567,075 vs 4,570,551 of the whole-suite runs
    that once made this test fail."""
    from soci_lab.config import Config

    def cfg() -> Config:
        c = Config()
        c.background_fetch.disable = True
        c.lazy_layer_check = "background"  # upstream's timing (the store's zTOCs served at once): what is compared
        return c

    plain = _pull(minbase_image, store, cfg())
    traced = _pull(minbase_image, trace_store, cfg())
    (p_start, p_done), (t_start, t_done) = _window(plain), _window(traced)
    (plain_spans, plain_total), (traced_spans, traced_total) = _spans(plain, p_done), _spans(traced, t_done)
    assert _net(plain, 0.0, p_done, store=True) > 0  # the artifacts came from the store, and were counted
    assert _net(traced, 0.0, t_done, store=True) > _net(plain, 0.0, p_done, store=True)
    plain_during, traced_during = _net(plain, p_start, p_done), _net(traced, t_start, t_done)
    print(f"\nbackground fetch off: before workload done no profile {plain_total}, trace-v1 {traced_total}; "
          f"during the workload no profile {plain_during}, trace-v1 {traced_during}")
    assert not (plain.events["kind"] == "bg_fetch").any() and not (traced.events["kind"] == "bg_fetch").any()
    assert traced_spans <= plain_spans, sorted(traced_spans - plain_spans)
    assert traced_total <= plain_total, (traced_total, plain_total)
    assert plain_during > 0
    assert traced_during < plain_during // 10, (traced_during, plain_during)
