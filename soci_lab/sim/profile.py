"""A host profile: what this host costs, fitted apart from any image, to predict any image on any network.

``soci-lab calibrate`` (:mod:`soci_lab.calsuite`) pulls a suite of synthetic images for real, on loopback
and through the shaping proxy at a few shaped networks, and fits (:func:`~soci_lab.sim.calibrate.fit`):

- the **host** — per-byte inflate, apply and hash, per-entry costs, FUSE per-request costs, process and
  server start-up — from every run of the suite (the host is the same whatever the network);
- the **link model** — what a named network (a rate and a round-trip time) becomes on this host: the
  registry's and client's own first-byte cost (the loopback fit: ``overhead_s``, ``fast_overhead_s``),
  the fraction of the named rate one pull gets (``efficiency``, from the shaped networks' sustained
  rates), the shaper's token bucket as seconds of its rate (``burst_s``) and what the shaped networks'
  first byte added beyond their named latency (``extra_latency_s``).

A prediction then takes the image's own metadata (its :class:`~soci_lab.sim.ImageModel`: layers, spans,
entries, compression), the trace, and the network the user names (:class:`NamedNetwork`: ``loopback``,
``1Gbit``, ``100Mbit+20ms``) — never the calibration images' network fits. :meth:`HostProfile.params`
gives the :class:`~soci_lab.sim.SimParams`.

The file is JSON, versioned (:data:`PROFILE_FORMAT`); each parameter is listed under ``parameters`` with
its value, its uncertainty (a standard error in the parameter's unit; null where unknown), the samples it
was fitted from and the warning where the suite could not identify it (its value is then the simulator's
default, said so). The fit itself is kept whole (``calibration``) so that nothing is recomputed on load.
A file that is not a profile, of another version, or malformed raises one :class:`SimulationError` line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import SimulationError
from ..units import parse_duration, parse_rate
from .calibrate import FORMAT as CALIBRATION_FORMAT
from .calibrate import HOST_KEYS, Calibration
from .network import NetworkParams
from .world import LazyParams, SimParams

#: what :meth:`HostProfile.save` writes (a file of another version is refused with what to do)
PROFILE_FORMAT = "soci_lab.host-profile/1"
_FORMAT_RE = re.compile(r"soci_lab\.host-profile/(\d+)")

#: the calibration's sample count behind each parameter (``Calibration.samples`` keys)
SAMPLE_KEYS: dict[str, str] = {
    "apply_per_file_s": "apply", "apply_per_byte_s": "apply", "worker_apply_per_file_s": "worker_apply",
    "worker_apply_per_byte_s": "worker_apply", "mount_s": "mount", "mount_first_s": "mount_first",
    "mount_cpu_s": "mount_cpu", "mount_cpu_per_entry": "mount_cpu", "ztoc_parse_per_entry": "ztoc_parse",
    "overlay_mount_s": "overlay_mount", "start_s": "start", "fuse_op_s": "fuse_read", "fuse_read_rate": "fuse_read",
    "header_verify_s": "fuse_read", "fuse_meta_s": "fuse_meta", "syscall_s": "syscall", "span_cache_rate": "span_cache",
    "apply_worker_s": "apply_worker", "pull_finish_s": "pull_finish", "apply_worker_exit_s": "apply_worker_exit",
    "apply_per_layer_s": "apply", "worker_apply_per_layer_s": "worker_apply",
}  # fmt: skip
#: the host parameters a profile lists, beside the per-algorithm rates
HOST_PARAMETERS = ("apply_per_file_s", "apply_per_byte_s", "worker_apply_per_file_s", "worker_apply_per_byte_s",
                   *HOST_KEYS, "apply_per_layer_s", "worker_apply_per_layer_s")  # fmt: skip


#: the loopback fit's network parameters behind the link model's (their errors and warnings carry over)
LOOPBACK_FITS = {"first_byte_s": "link.overhead_s", "fast_first_byte_s": "link.fast_overhead_s",
                 "bandwidth": "link.loopback_bandwidth", "conn_cap": "link.loopback_conn_cap"}  # fmt: skip


@dataclass(frozen=True)
class NamedNetwork:
    """A network as a user names it: ``loopback``, or a rate with an optional round-trip time
    (``100Mbit+20ms``, ``1Gbit``); ``rate`` None is loopback (the registry on this host, unshaped)."""

    name: str
    rate: float | None = None
    rtt: float = 0.0

    @classmethod
    def parse(cls, text: str) -> NamedNetwork:
        """``loopback``, ``RATE`` or ``RATE+RTT`` (an :class:`~soci_lab.errors.InvalidInput` otherwise)."""
        text = text.strip()
        if text == "loopback":
            return cls("loopback")
        rate, _, rtt = text.partition("+")
        return cls(text, parse_rate(rate), parse_duration(rtt) if rtt else 0.0)


@dataclass
class LinkModel:
    """How a named network behaves on this host (module docstring); None: not measured, the simulator's
    default stands (and the profile's warnings say so)."""

    #: loopback: the unshaped link's rate and one connection's cap (bytes/s)
    loopback_bandwidth: float | None = None
    loopback_conn_cap: float | None = None
    #: loopback first byte, httpx's and the lean path's: the registry's and the client's own cost (seconds)
    overhead_s: float | None = None
    fast_overhead_s: float | None = None
    #: the shaped networks' sustained rate over their named rate (median)
    efficiency: float | None = None
    #: a shaper's token bucket, in seconds of its rate (median; 0: none found)
    burst_s: float | None = None
    #: a shaped network's first byte beyond its named latency and the loopback overhead (median, seconds)
    extra_latency_s: float | None = None
    #: per shaped network: its name and what its own fit found (``bandwidth``, ``first_byte_s``, ``burst``)
    shaped: list[dict[str, Any]] = field(default_factory=list)

    def network(self, net: NamedNetwork, base: NetworkParams | None = None) -> NetworkParams:
        """The simulator's network for ``net``: its rate (times ``efficiency``) and RTT as named, this host's
        own first-byte costs on top."""
        p = base or NetworkParams()
        over = self.overhead_s if self.overhead_s is not None else p.request_overhead
        fast = self.fast_overhead_s
        if net.rate is None:
            p = replace(p, rtt=0.0, request_overhead=over, fast_request_overhead=fast, burst=0.0)
            if self.loopback_bandwidth:
                p = replace(p, bandwidth=self.loopback_bandwidth)
            return replace(p, conn_cap=self.loopback_conn_cap)
        bw = net.rate * (self.efficiency or 1.0)
        extra = self.extra_latency_s or 0.0
        cap = self.loopback_conn_cap if self.loopback_conn_cap and self.loopback_conn_cap < bw else None
        return replace(p, bandwidth=bw, rtt=net.rtt, request_overhead=over + extra,
                       fast_request_overhead=None if fast is None else fast + extra,
                       burst=(self.burst_s or 0.0) * bw, conn_cap=cap)  # fmt: skip


def fit_link(loopback: Calibration, shaped: list[tuple[NamedNetwork, Calibration]]) -> tuple[LinkModel, dict[str, str]]:
    """The link model from the loopback runs' fit and each shaped network's fit; and a warning per part
    the fits could not give (that part keeps the simulator's default)."""
    warnings: dict[str, str] = {}
    net = loopback.network
    link = LinkModel(loopback_bandwidth=net.bandwidth, loopback_conn_cap=net.conn_cap, overhead_s=net.first_byte_s,
                     fast_overhead_s=net.fast_first_byte_s)  # fmt: skip
    for src, dst in LOOPBACK_FITS.items():  # what the loopback fit refused, said under the link's name
        if src in loopback.warnings:
            warnings[dst] = f"loopback {src}: {loopback.warnings[src]}"
    if net.first_byte_s is None and "link.overhead_s" not in warnings:
        warnings["link.overhead_s"] = "the loopback runs gave no first-byte time: the default request overhead is used"
    effs: list[float] = []
    bursts: list[float] = []
    extras: list[float] = []
    for named, cal in shaped:
        n = cal.network
        link.shaped.append({"network": named.name, "rate": named.rate, "rtt": named.rtt, "bandwidth": n.bandwidth,
                            "first_byte_s": n.first_byte_s, "burst": n.burst})  # fmt: skip
        if n.bandwidth and named.rate:
            effs.append(min(n.bandwidth, named.rate * 1.5) / named.rate)
            bursts.append((n.burst or 0.0) / n.bandwidth)
        if n.first_byte_s is not None and net.first_byte_s is not None:
            extras.append(n.first_byte_s - named.rtt - net.first_byte_s)
    if effs:
        link.efficiency = _median(effs)
        link.burst_s = _median(bursts)
    else:
        warnings["link.efficiency"] = "no shaped network's bandwidth was fitted: a named rate is taken as it is"
    if extras:
        link.extra_latency_s = max(0.0, _median(extras))
    return link, warnings


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


@dataclass
class HostProfile:
    """This host's costs (``calibration``: the host part fitted from the whole suite) and its link model;
    what the suite was (``suite``: its images, networks, modes, runs) and where it ran (``machine``)."""

    calibration: Calibration
    link: LinkModel = field(default_factory=LinkModel)
    suite: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    #: the link model's warnings (the calibration's own are in ``calibration.warnings``)
    link_warnings: dict[str, str] = field(default_factory=dict)

    @property
    def warnings(self) -> dict[str, str]:
        """Every parameter the suite could not identify, and what stands in for it."""
        return {**self.calibration.warnings, **self.link_warnings}

    @property
    def images(self) -> list[str]:
        """The names of the suite's images (a held-out image must be none of them)."""
        return [str(i.get("name")) for i in self.suite.get("images", [])]

    @property
    def image_digests(self) -> set[str]:
        """The manifest digests of the suite's images."""
        return {str(i["digest"]) for i in self.suite.get("images", []) if i.get("digest")}

    def params(self, network: NamedNetwork | str, base: SimParams | None = None) -> SimParams:
        """The simulator's parameters for ``network`` on this host: the host fitted from the suite, the
        network as named (:meth:`LinkModel.network`). ``base`` defaults to the real snapshotter's layout
        (every layer prepared at once: ``LazyParams(concurrent_mounts=True)``)."""
        net = NamedNetwork.parse(network) if isinstance(network, str) else network
        base = base or SimParams(lazy=LazyParams(concurrent_mounts=True))
        host = self.calibration.host.apply(base.host)
        return replace(base, host=host, network=self.link.network(net, base.network))

    def parameters(self) -> dict[str, dict[str, Any]]:
        """Each parameter: ``value`` (None where not identified), ``uncertainty`` (standard error; None where
        unknown), ``samples`` and ``warning`` (None where it was fitted)."""
        cal = self.calibration
        out: dict[str, dict[str, Any]] = {}

        def put(name: str, value: Any, samples_key: str | None) -> None:
            se = cal.uncertainty.get(name)
            out[name] = {"value": value, "uncertainty": None if se is None or se != se else float(se),
                         "samples": cal.samples.get(samples_key) if samples_key else None,
                         "warning": cal.warnings.get(name)}  # fmt: skip

        for name in HOST_PARAMETERS:
            put(name, getattr(cal.host, name), SAMPLE_KEYS.get(name))
        for kind in ("decompress_rate", "layer_decompress_rate"):
            for algo, rate in getattr(cal.host, kind).items():
                prefix = "decompress" if kind == "decompress_rate" else "layer_decompress"
                put(f"{kind}.{algo}", rate, f"{prefix}_{algo}")
        n_shaped = len(self.link.shaped)
        link = self.link
        for name, value, n in (
            ("link.overhead_s", link.overhead_s, cal.samples.get("http_isolated")),
            ("link.fast_overhead_s", link.fast_overhead_s, cal.samples.get("http_isolated_fast")),
            ("link.loopback_bandwidth", link.loopback_bandwidth, cal.samples.get("http")),
            ("link.loopback_conn_cap", link.loopback_conn_cap, cal.samples.get("http_sustained")),
            ("link.efficiency", link.efficiency, n_shaped),
            ("link.burst_s", link.burst_s, n_shaped),
            ("link.extra_latency_s", link.extra_latency_s, n_shaped),
        ):
            se = _spread(link, name)
            src = next((k for k, v in LOOPBACK_FITS.items() if v == name), None)
            if src is not None:  # the loopback fit's own error (the profile's calibration carries its network)
                raw = cal.uncertainty.get(src)
                se = None if raw is None or raw != raw else float(raw)
            out[name] = {"value": value, "uncertainty": se, "samples": n,
                         "warning": self.link_warnings.get(name)}  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready profile (:data:`PROFILE_FORMAT`)."""
        from dataclasses import asdict

        return {
            "format": PROFILE_FORMAT,
            "machine": self.machine,
            "suite": self.suite,
            "parameters": self.parameters(),
            "warnings": self.warnings,
            "link": asdict(self.link),
            "link_warnings": self.link_warnings,
            "calibration": self.calibration.to_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON (parent folders created; written to a temporary file and renamed, so a
        reader never sees half a profile)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HostProfile:
        """Read a profile written by :meth:`save`; one :class:`SimulationError` line for anything else."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SimulationError(f"{path}: no host profile there (make one with: soci-lab calibrate)") from None
        except (OSError, ValueError) as exc:
            raise SimulationError(f"{path}: cannot read a host profile: {str(exc).splitlines()[0]}") from None
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt != PROFILE_FORMAT:
            m = _FORMAT_RE.fullmatch(fmt) if isinstance(fmt, str) else None
            if m:
                raise SimulationError(f"{path}: host profile version {m.group(1)}, this soci_lab reads "
                                      f"{PROFILE_FORMAT}: run soci-lab calibrate again")  # fmt: skip
            raise SimulationError(f"{path}: not a soci_lab host profile ({PROFILE_FORMAT})")
        try:
            cal_data = data["calibration"]
            if not isinstance(cal_data, dict) or cal_data.get("format") != CALIBRATION_FORMAT:
                raise TypeError(f"'calibration' is not a {CALIBRATION_FORMAT} object")
            cal_data = dict(cal_data)
            cal_data.pop("format")
            network, host = cal_data.pop("network", {}), cal_data.pop("host", {})
            from .calibrate import HostFit, NetworkFit

            cal = Calibration(network=NetworkFit(**network), host=HostFit(**host), **cal_data)
            cal.uncertainty = {k: (math.nan if v is None else float(v)) for k, v in cal.uncertainty.items()}
            link = LinkModel(**data.get("link", {}))
            for key in ("suite", "machine", "link_warnings"):
                if not isinstance(data.get(key, {}), dict):
                    raise TypeError(f"'{key}' must be an object")
            return cls(calibration=cal, link=link, suite=data.get("suite", {}), machine=data.get("machine", {}),
                       link_warnings=data.get("link_warnings", {}))  # fmt: skip
        except KeyError as exc:
            raise SimulationError(f"{path}: malformed host profile: no {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise SimulationError(f"{path}: malformed host profile: {str(exc).splitlines()[0]}") from None


def _spread(link: LinkModel, name: str) -> float | None:
    """The standard error of a link parameter that is a median over the shaped networks (None for fewer
    than two)."""
    values: list[float] = []
    for s in link.shaped:
        rate, bw = s.get("rate"), s.get("bandwidth")
        if name == "link.efficiency" and rate and bw:
            values.append(bw / rate)
        elif name == "link.burst_s" and bw:
            values.append((s.get("burst") or 0.0) / bw)
        elif name == "link.extra_latency_s" and s.get("first_byte_s") is not None and link.overhead_s is not None:
            values.append(s["first_byte_s"] - s["rtt"] - link.overhead_s)
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def default_path() -> Path:
    """Where ``soci-lab calibrate`` saves the profile and ``compare --sim`` looks for it:
    ``$SOCI_LAB_HOST_PROFILE``, else ``$XDG_STATE_HOME/soci-lab/host-profile.json``, else
    ``~/.local/state/soci-lab/host-profile.json``."""
    import os

    explicit = os.environ.get("SOCI_LAB_HOST_PROFILE")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "soci-lab" / "host-profile.json"
