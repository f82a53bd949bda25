"""Startup profiles: which spans of an image the store's prefetch artifacts name, and how urgently.

Two profiles, each a :class:`Profile` the builder (:mod:`.builder`) applies to the zTOCs it made:

``startup-local-v1`` (:class:`StartupLocalProfile`) — Hermes's static heuristic (hermes.md §3.2). Path
patterns — a fixed base list (loader cache, passwd/group/hosts/resolv.conf, CA certificates, time zone,
``bin/sh``, ``bash``, ``usr/bin/env``, the dynamic loader and core libraries under the lib64/multiarch
dirs) followed by paths derived from the image config (the Entrypoint's or Cmd's program, resolved against
``PATH``; the command of a ``sh -c "…"`` form; app roots from the command's location and ``WorkingDir``,
each expanded to its ``bin/``, ``config/``, ``lib/*.so*``, ``*.jar`` … suffixes). For each pattern in
order, matching regular files, top layer first: a small file (at most :data:`SMALL_FILE_SPANS` spans) is
all priority 0 (fetched before the mount is ready); a large file gives its first span at priority 0 and the
rest, up to 64 spans, at priority 1 (in the background); an archive (``.jar``, ``.zip``, ``.jmod``,
``.jimage``, ``.jsa``, ``*/lib/modules``) its head and tail edge spans (8; 1 for ``.jar``) at priority 0 —
a zip's central directory is at its end — then fill at priority 1. At most 240 spans per image. Knobs:
min layer size 0 (a zTOC for every layer), skip file verification; index annotations
``hermes.cloudpilot.ai/background-fetch=disabled``, ``…/prefetch-profile=startup-local-v1``,
``…/skip-file-verification=true``; every prefetch descriptor carries the profile and
``hermes.cloudpilot.ai/prefetch-paths`` (the JSON list of patterns). Its acceleration key
(``startup-local-v1:<16 hex>``) hashes only the knobs, never the image paths, so a server computes it from
nothing but the profile — as Hermes does.

Two documented departures from Hermes: a shell run on a script (``sh /app/run.sh``, no ``-c``) adds the
script; the command's own directory is an app root only when it is not a system bin directory (``/bin``,
``/usr/bin`` …), which would otherwise put every program of the image in the profile.

``trace-v1`` (:class:`TraceProfile`) — new here; Hermes records nothing. Built from a **recorded** access
trace (``t_s,op,path,offset,size``, :mod:`soci_lab.workload.trace`): exactly the spans its ``read`` rows
touch (each read clipped to its file, the file resolved in the merged image view), prioritised by the time
each span was first read. Priority classes follow the daemon's rule for a profile (hermes.md §3.1: priority
0 is fetched before the mount is ready, priority > 0 is dropped): spans first read up to ``sync_until_s``
seconds into the trace are priority 0 — by default the whole trace, since every span in it was needed
before the workload was done; spans first read later get 1, 2, … in the order of their first access.
Within an artifact the ranges are listed in that order too (priority, then first access, then span id),
so a prefetcher taking them in order fetches spans as the workload wanted them. Annotations:
``background-fetch=disabled`` and ``prefetch-profile=trace-v1`` (file verification stays on). Its key is
``trace-v1:<16 hex>`` of the knobs (``sync_until_s`` included) and the trace's reads.

``none`` (:class:`NoProfile`) — a plain index under the store's own minimum layer size, key ``""`` (Hermes's
"default, non-accelerated artifact").
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..oci import ImageConfig
from ..ztoc import PrefetchArtifact, PrefetchSpan, Ztoc
from .view import FileRef, ImageView, clean_path

ANNOTATION_BACKGROUND_FETCH = "hermes.cloudpilot.ai/background-fetch"
BACKGROUND_FETCH_ENABLED = "enabled"
BACKGROUND_FETCH_DISABLED = "disabled"
ANNOTATION_PREFETCH_PROFILE = "hermes.cloudpilot.ai/prefetch-profile"
ANNOTATION_SKIP_FILE_VERIFICATION = "hermes.cloudpilot.ai/skip-file-verification"
ANNOTATION_PREFETCH_PATHS = "hermes.cloudpilot.ai/prefetch-paths"

STARTUP_LOCAL_V1 = "startup-local-v1"
TRACE_V1 = "trace-v1"
NONE = "none"
PROFILES = (STARTUP_LOCAL_V1, TRACE_V1, NONE)

#: a file of at most this many spans is "small": all of it is fetched before the mount is ready
SMALL_FILE_SPANS = 2
SYNC, ASYNC = 0, 1
ARCHIVE_SUFFIXES = (".jar", ".zip", ".jmod", ".jimage", ".jsa")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELLS = frozenset({"sh", "bash", "dash", "ash"})
SYSTEM_BIN_DIRS = frozenset({"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin"})

_LIB_DIRS = ("lib", "lib64", "usr/lib64", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu",
             "lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")
_LIBS = ("ld-linux*", "libc.so*", "libm.so*", "libpthread.so*", "libdl.so*", "libz.so*", "libzstd.so*",
         "libgcc_s.so*", "libstdc++.so*", "libnss_*.so*", "libresolv.so*")
#: Hermes's ``genericStartupPrefetchPaths``, as this project reconstructs it from hermes.md §3.2
BASE_PATTERNS: tuple[str, ...] = (
    "etc/ld.so.cache", "etc/nsswitch.conf", "etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf",
    "etc/localtime", "etc/ssl/certs/ca-certificates.crt", "etc/pki/tls/certs/ca-bundle.crt", "etc/ssl/cert.pem",
    "usr/share/zoneinfo/UTC", "usr/share/zoneinfo/Etc/UTC", "bin/sh", "bin/bash", "usr/bin/env",
    *(f"{d}/{lib}" for d in _LIB_DIRS for lib in _LIBS),
)  # fmt: skip
#: what each app root expands to
APP_ROOT_SUFFIXES: tuple[str, ...] = (
    "bin/", "sbin/", "config/", "conf/", "etc/", "lib/*.so*", "lib/*.jar", "lib/modules", "lib/security/",
    "plugins/*/*.jar", "modules/*/*.jar", "extensions/*/*.jar", "*.jar", "*/lib/modules", "*/lib/security/",
)  # fmt: skip


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*``/``?`` match within one path component; a trailing ``/`` means everything below the directory."""
    below = pattern.endswith("/")
    body = clean_path(pattern)
    out = []
    for ch in body:
        out.append("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + ("/.+" if below else ""))


def is_archive(path: str) -> bool:
    """Whether a file is read like a zip (its index at its end): jars, zips, jmods, jimages, jsa, lib/modules."""
    return path.endswith(ARCHIVE_SUFFIXES) or path.endswith("/lib/modules")


def match_pattern(view: ImageView, pattern: str) -> list[FileRef]:
    """The regular files with data that ``pattern`` names in ``view``: top layer first, then by path.

    The directories before the first wildcard are resolved through symbolic links first (``lib64/ld-linux*``
    finds ``usr/lib64/ld-linux-x86-64.so.2`` in a usr-merged image); a literal pattern is resolved whole.
    """
    clean = clean_path(pattern)
    if not clean:
        return []
    parts = clean.split("/")
    fixed = []
    for p in parts:
        if "*" in p or "?" in p:
            break
        fixed.append(p)
    if len(fixed) == len(parts) and not pattern.endswith("/"):
        ref = view.resolve(clean)
        return [ref] if ref is not None and ref.is_data_file else []
    head = view.resolve_dir("/".join(fixed)) if fixed else ""
    if head is None:
        return []
    rest = "/".join(parts[len(fixed):])
    regex = _pattern_regex(posixpath.join(head, rest) + ("/" if pattern.endswith("/") else "") if rest else
                           head + "/")
    found: dict[str, FileRef] = {}
    for name in view.names():
        if regex.fullmatch(name):
            ref = view.resolve(name)
            if ref is not None and ref.is_data_file:
                found.setdefault(ref.path, ref)
    return sorted(found.values(), key=lambda r: (-view.order[r.layer], r.path))


def _merge(priorities: dict[int, int]) -> list[PrefetchSpan]:
    """Span id → priority as ranges of consecutive spans with one priority, sorted by start."""
    out: list[list[int]] = []
    for span in sorted(priorities):
        prio = priorities[span]
        if out and out[-1][1] == span - 1 and out[-1][2] == prio:
            out[-1][1] = span
        else:
            out.append([span, span, prio])
    return [PrefetchSpan(a, b, p) for a, b, p in out]


@dataclass(frozen=True)
class ProfileResult:
    """What a profile adds to an index: per layer its prefetch artifact and the descriptor's annotations."""

    artifacts: dict[str, PrefetchArtifact]
    descriptor_annotations: dict[str, dict[str, str]]
    #: which file each layer's spans came from (for reports and tests): layer → [paths]
    files: dict[str, list[str]] = field(default_factory=dict)


class Profile:
    """Base of the profiles: a name, build knobs, an acceleration key, annotations and the span choice."""

    name: str = NONE
    #: a zTOC for every layer at least this big; None → the store's own minimum
    min_layer_size: int | None = None

    def key_fields(self) -> dict[str, Any]:
        """What the acceleration key hashes (never image paths)."""
        return {}

    def key(self) -> str:
        """``"<profile>:" + first 8 bytes (hex) of sha256(JSON of the knobs)``; ``""`` for no profile."""
        if self.name == NONE:
            return ""
        doc = json.dumps(self.key_fields(), sort_keys=True, separators=(",", ":")).encode()
        return f"{self.name}:{hashlib.sha256(doc).hexdigest()[:16]}"

    def index_annotations(self) -> dict[str, str]:
        """Annotations the profile puts on the SOCI index manifest."""
        return {}

    def select(self, layers: Sequence[tuple[str, Ztoc]], config: ImageConfig | None) -> ProfileResult:
        """Prefetch artifacts for ``layers`` (``(layer digest, zTOC)``, bottom first) of an image."""
        return ProfileResult({}, {})


class NoProfile(Profile):
    """No prefetch artifacts, no Hermes annotations: the default artifact (key ``""``)."""


@dataclass
class StartupLocalProfile(Profile):
    """Hermes's ``startup-local-v1`` (see the module docstring); ``extra_patterns`` go after the base list."""

    max_spans: int = 240
    max_spans_per_file: int = 64
    archive_edge_spans: int = 8
    skip_file_verification: bool = True
    extra_patterns: tuple[str, ...] = ()
    name: str = STARTUP_LOCAL_V1
    min_layer_size: int | None = 0

    def key_fields(self) -> dict[str, Any]:
        return {"profile": self.name, "maxSpans": self.max_spans, "maxSpansPerFile": self.max_spans_per_file,
                "archiveEdgeSpans": self.archive_edge_spans, "skipFileVerification": self.skip_file_verification,
                "minLayerSize": self.min_layer_size}

    def index_annotations(self) -> dict[str, str]:
        return {ANNOTATION_BACKGROUND_FETCH: BACKGROUND_FETCH_DISABLED, ANNOTATION_PREFETCH_PROFILE: self.name,
                ANNOTATION_SKIP_FILE_VERIFICATION: "true" if self.skip_file_verification else "false"}

    def patterns(self, config: ImageConfig | None) -> list[str]:
        """Base patterns, then the image config's (``WithImageConfig``), then ``extra_patterns``; no repeats."""
        out = list(BASE_PATTERNS) + (config_patterns(config) if config is not None else []) + list(self.extra_patterns)
        return list(dict.fromkeys(out))

    def _file_spans(self, ref: FileRef) -> dict[int, int]:
        rng = ref.span_range()
        if rng is None:
            return {}
        first, last = rng
        count = last - first + 1
        spans: dict[int, int] = {}
        if is_archive(ref.path):
            edge = 1 if ref.path.endswith(".jar") else self.archive_edge_spans
            for s in [*range(first, min(last, first + edge - 1) + 1), *range(max(first, last - edge + 1), last + 1)]:
                spans[s] = SYNC
            for s in range(first, last + 1):
                if len(spans) >= self.max_spans_per_file:
                    break
                spans.setdefault(s, ASYNC)
        elif count <= SMALL_FILE_SPANS:
            spans = dict.fromkeys(range(first, last + 1), SYNC)
        else:
            for s in range(first, min(last, first + self.max_spans_per_file - 1) + 1):
                spans[s] = SYNC if s == first else ASYNC
        return spans

    def select(self, layers: Sequence[tuple[str, Ztoc]], config: ImageConfig | None) -> ProfileResult:
        view = ImageView(layers)
        patterns = self.patterns(config)
        chosen: dict[str, dict[int, int]] = {}
        files: dict[str, list[str]] = {}
        seen_files: set[tuple[str, str]] = set()
        total = 0
        for pattern in patterns:
            for ref in match_pattern(view, pattern):
                if (ref.layer, ref.path) in seen_files:
                    continue
                seen_files.add((ref.layer, ref.path))
                layer = chosen.setdefault(ref.layer, {})
                for span, prio in self._file_spans(ref).items():
                    if span in layer:
                        layer[span] = min(layer[span], prio)
                        continue
                    if total >= self.max_spans:
                        break
                    layer[span] = prio
                    total += 1
                files.setdefault(ref.layer, []).append("/" + ref.path)
                if total >= self.max_spans:
                    break
            if total >= self.max_spans:
                break
        paths = json.dumps(patterns, separators=(",", ":"))
        arts = {d: PrefetchArtifact(_merge(spans)) for d, spans in chosen.items() if spans}
        ann = {d: {ANNOTATION_PREFETCH_PROFILE: self.name, ANNOTATION_PREFETCH_PATHS: paths} for d in arts}
        return ProfileResult(arts, ann, {d: files.get(d, []) for d in arts})


def _env_path(env: Iterable[str]) -> str:
    for item in env:
        if item.startswith("PATH="):
            return item[5:]
    return DEFAULT_PATH


def _command(config: ImageConfig) -> tuple[list[str], list[str]]:
    """The program(s) the image starts with: (paths, bare names to look up in PATH)."""
    rt = config.config
    argv = [str(a) for a in (rt.get("Entrypoint") or rt.get("Cmd") or []) if isinstance(a, str)]
    if not argv:
        return [], []
    if rt.get("Entrypoint") and rt.get("Cmd"):
        argv += [str(a) for a in rt["Cmd"] if isinstance(a, str)]
    programs = [argv[0]]
    if posixpath.basename(argv[0]) in SHELLS and len(argv) > 1:
        if argv[1] == "-c" and len(argv) > 2 and argv[2].split():
            programs.append(argv[2].split()[0])
        elif not argv[1].startswith("-"):
            programs.append(argv[1])  # a script run by the shell (not in Hermes)
    paths = [p for p in programs if "/" in p]
    bare = [p for p in programs if "/" not in p]
    return paths, bare


def app_roots(program: str) -> list[str]:
    """App roots a program's location implies (``usr/share/<x>``, ``opt/<x>``, ``usr/local/<x>``, ``app``,
    ``workspace``, and its own directory unless that is a system bin directory)."""
    p = clean_path(program)
    parts = p.split("/")
    roots = []
    if len(parts) > 2 and parts[0] == "usr" and parts[1] in ("share", "local"):
        roots.append("/".join(parts[:3]))
    if len(parts) > 1 and parts[0] == "opt":
        roots.append("/".join(parts[:2]))
    if parts[0] in ("app", "workspace") and len(parts) > 1:
        roots.append(parts[0])
    d = posixpath.dirname(p)
    if d and d not in SYSTEM_BIN_DIRS:
        roots.append(d)
    return roots


def config_patterns(config: ImageConfig) -> list[str]:
    """Path patterns derived from an image config (Hermes's ``WithImageConfig``)."""
    paths, bare = _command(config)
    search = [d for d in _env_path(config.config.get("Env") or []).split(":") if d]
    programs = [clean_path(p) for p in paths] + [clean_path(posixpath.join(d, b)) for b in bare for d in search]
    roots: list[str] = []
    for prog in programs:
        roots.extend(app_roots(prog))
    workdir = config.config.get("WorkingDir")
    if isinstance(workdir, str) and clean_path(workdir):
        roots.append(clean_path(workdir))
    out = list(programs)
    for root in dict.fromkeys(roots):
        out.extend(f"{root}/{suffix}" for suffix in APP_ROOT_SUFFIXES)
    return out


@dataclass(frozen=True)
class TraceRead:
    """One ``read`` of a recorded trace: when, which path, which bytes."""

    t_s: float
    path: str
    offset: int
    size: int


def trace_reads(trace: Any) -> list[TraceRead]:
    """The non-empty reads of a trace: a :class:`soci_lab.workload.trace.Trace`, a path to a trace CSV, or
    the CSV text itself (anything with a newline)."""
    from ..workload.trace import Trace, load_trace, parse_trace

    if isinstance(trace, str) and "\n" in trace:
        rows = parse_trace(trace)
    elif isinstance(trace, Trace):
        rows = trace
    else:
        rows = load_trace(trace)
    return [TraceRead(r.t_s, r.path, r.offset, r.size) for r in rows if r.op == "read" and r.size > 0]


@dataclass
class TraceProfile(Profile):
    """Prefetch exactly the spans a recorded trace read, prioritised by first access time (module docstring).

    ``sync_until_s``: spans first read up to this many seconds into the trace are priority 0 (all of them
    when None, the default); spans first read later get 1, 2, … by the order of their first access.
    """

    reads: list[TraceRead] = field(default_factory=list)
    sync_until_s: float | None = None
    name: str = TRACE_V1
    min_layer_size: int | None = 0

    @classmethod
    def from_trace(cls, trace: Any, sync_until_s: float | None = None) -> TraceProfile:
        """From a ``Trace``, a trace file path or trace CSV text."""
        reads = trace_reads(trace)
        if not reads:
            raise InvalidInput("the trace has no reads: a trace profile would prefetch nothing")
        if sync_until_s is not None and sync_until_s < 0:
            raise InvalidInput("sync_until_s must not be negative")
        return cls(reads, sync_until_s)

    def key_fields(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for r in self.reads:
            h.update(f"{r.t_s!r},{r.path},{r.offset},{r.size}\n".encode("utf-8", "surrogateescape"))
        return {"profile": self.name, "minLayerSize": self.min_layer_size, "syncUntil": self.sync_until_s,
                "reads": h.hexdigest()}

    def index_annotations(self) -> dict[str, str]:
        return {ANNOTATION_BACKGROUND_FETCH: BACKGROUND_FETCH_DISABLED, ANNOTATION_PREFETCH_PROFILE: self.name}

    def first_access(self, view: ImageView) -> tuple[dict[str, dict[int, float]], dict[str, dict[str, None]]]:
        """Per layer, every span the reads touch → the time it was first read; and the files read per layer."""
        first: dict[str, dict[int, float]] = {}
        files: dict[str, dict[str, None]] = {}
        for r in sorted(self.reads, key=lambda r: r.t_s):
            ref = view.resolve(r.path)
            if ref is None or ref.entry.type != "reg":
                continue
            rng = ref.span_range(r.offset, r.size)
            if rng is None:
                continue
            layer = first.setdefault(ref.layer, {})
            for span in range(rng[0], rng[1] + 1):
                layer.setdefault(span, r.t_s)
            files.setdefault(ref.layer, {})["/" + ref.path] = None
        return first, files

    def select(self, layers: Sequence[tuple[str, Ztoc]], config: ImageConfig | None) -> ProfileResult:
        first, files = self.first_access(ImageView(layers))
        cut = self.sync_until_s
        later = sorted({t for spans in first.values() for t in spans.values() if cut is not None and t > cut})
        rank = {t: i + 1 for i, t in enumerate(later)}
        arts: dict[str, PrefetchArtifact] = {}
        for d, spans in first.items():
            prio = {s: rank.get(t, 0) for s, t in spans.items()}
            ranges = _merge(prio)  # in the order a prefetcher should take them: priority, then first access
            ranges.sort(key=lambda r: (r.priority, min(spans[s] for s in range(r.start_span, r.end_span + 1)),
                                       r.start_span))
            arts[d] = PrefetchArtifact(ranges)
        ann = {d: {ANNOTATION_PREFETCH_PROFILE: self.name,
                   ANNOTATION_PREFETCH_PATHS: json.dumps(list(files[d]), separators=(",", ":"))} for d in arts}
        return ProfileResult(arts, ann, {d: list(files[d]) for d in arts})


def make_profile(name: str, trace: Any = None, sync_until_s: float | None = None) -> Profile:
    """The profile called ``name`` (``startup-local-v1``, ``trace-v1`` with ``trace`` and optionally
    ``sync_until_s``, or ``none``)."""
    if name == STARTUP_LOCAL_V1:
        return StartupLocalProfile()
    if name == TRACE_V1:
        if trace is None:
            raise InvalidInput("the trace-v1 profile needs a recorded trace")
        return TraceProfile.from_trace(trace, sync_until_s)
    if name == NONE:
        return NoProfile()
    raise InvalidInput(f"unknown profile {name!r} (one of {', '.join(PROFILES)})")


def default_acceleration_key() -> str:
    """The key the resolve endpoint looks for first: ``startup-local-v1``'s, as Hermes's latest does."""
    return StartupLocalProfile().key()


__all__ = [
    "ANNOTATION_BACKGROUND_FETCH",
    "ANNOTATION_PREFETCH_PATHS",
    "ANNOTATION_PREFETCH_PROFILE",
    "ANNOTATION_SKIP_FILE_VERIFICATION",
    "BASE_PATTERNS",
    "PROFILES",
    "STARTUP_LOCAL_V1",
    "TRACE_V1",
    "NoProfile",
    "Profile",
    "ProfileResult",
    "StartupLocalProfile",
    "TraceProfile",
    "TraceRead",
    "app_roots",
    "config_patterns",
    "default_acceleration_key",
    "is_archive",
    "make_profile",
    "match_pattern",
    "trace_reads",
]
