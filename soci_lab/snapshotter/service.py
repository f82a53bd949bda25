"""The gRPC face: containerd's ``containerd.services.snapshots.v1.Snapshots`` service on a unix socket.

containerd loads it as a proxy plugin (``[proxy_plugins.soci-lab] type = "snapshot" address = SOCK``)
and forwards its snapshots API to it. The messages and the service are containerd's own, generated from
its ``.proto`` files (:mod:`soci_lab.snapshotter._api`); this module only maps them onto
:class:`~soci_lab.snapshotter.core.Snapshotter` and its errors onto gRPC status codes, which containerd's
``errdefs.FromGRPC`` turns back into ``ErrNotFound``, ``ErrAlreadyExists``, … .
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from ..errors import InvalidInput
from ._api import mount_pb2, snapshots_pb2, snapshots_pb2_grpc
from .core import Mount, Snapshotter
from .metastore import SnapshotExists, SnapshotInfo, SnapshotNotFound, SnapshotPrecondition

T = TypeVar("T")
_KIND = {"view": snapshots_pb2.VIEW, "active": snapshots_pb2.ACTIVE, "committed": snapshots_pb2.COMMITTED}
_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (SnapshotNotFound, grpc.StatusCode.NOT_FOUND),
    (SnapshotExists, grpc.StatusCode.ALREADY_EXISTS),
    (SnapshotPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
]


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def info_message(info: SnapshotInfo) -> snapshots_pb2.Info:
    return snapshots_pb2.Info(
        name=info.key, parent=info.parent, kind=_KIND[info.kind], labels=info.labels,
        created_at=_timestamp(info.created), updated_at=_timestamp(info.updated),
    )


def mount_messages(mounts: list[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, options=list(m.options)) for m in mounts]


class SnapshotsService(snapshots_pb2_grpc.SnapshotsServicer):
    """Each RPC calls the snapshotter; a known error becomes its status code, anything else INTERNAL."""

    def __init__(self, snapshotter: Snapshotter) -> None:
        self.sn = snapshotter

    def _call(self, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            for cls, code in _CODES:
                if isinstance(exc, cls):
                    context.abort(code, str(exc))
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            raise  # unreachable: abort raises

    def Prepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        mounts = self._call(context, lambda: self.sn.prepare(request.key, request.parent, dict(request.labels)))
        return snapshots_pb2.PrepareSnapshotResponse(mounts=mount_messages(mounts))

    def View(self, request: Any, context: grpc.ServicerContext) -> Any:
        mounts = self._call(context, lambda: self.sn.view(request.key, request.parent, dict(request.labels)))
        return snapshots_pb2.ViewSnapshotResponse(mounts=mount_messages(mounts))

    def Mounts(self, request: Any, context: grpc.ServicerContext) -> Any:
        mounts = self._call(context, lambda: self.sn.mounts(request.key))
        return snapshots_pb2.MountsResponse(mounts=mount_messages(mounts))

    def Commit(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._call(context, lambda: self.sn.commit(request.name, request.key, dict(request.labels)))
        return empty_pb2.Empty()

    def Remove(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._call(context, lambda: self.sn.remove(request.key))
        return empty_pb2.Empty()

    def Stat(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = self._call(context, lambda: self.sn.stat(request.key))
        return snapshots_pb2.StatSnapshotResponse(info=info_message(info))

    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        info = self._call(context, lambda: self.sn.update(request.info.name, dict(request.info.labels), paths))
        return snapshots_pb2.UpdateSnapshotResponse(info=info_message(info))

    def List(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        infos = self._call(context, lambda: self.sn.walk(list(request.filters)))
        for start in range(0, len(infos), 100):  # containerd batches its List replies alike
            yield snapshots_pb2.ListSnapshotsResponse(info=[info_message(i) for i in infos[start:start + 100]])

    def Usage(self, request: Any, context: grpc.ServicerContext) -> Any:
        size, inodes = self._call(context, lambda: self.sn.usage(request.key))
        return snapshots_pb2.UsageResponse(size=size, inodes=inodes)

    def Cleanup(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._call(context, self.sn.cleanup)
        return empty_pb2.Empty()


class SnapshotterServer:
    """The daemon: a gRPC server for ``snapshotter`` on unix socket ``address``; ``stop()`` ends it."""

    def __init__(self, snapshotter: Snapshotter, address: str | Path, *, workers: int = 8) -> None:
        self.snapshotter = snapshotter
        self.address = Path(address)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server(SnapshotsService(snapshotter), self._server)
        self._stopped = threading.Event()

    def start(self) -> SnapshotterServer:
        self.address.parent.mkdir(parents=True, exist_ok=True)
        if self.address.is_socket():
            self.address.unlink()  # a stale socket of a daemon that died
        if self._server.add_insecure_port(f"unix://{self.address}") == 0:
            raise InvalidInput(f"cannot listen on unix socket {self.address}")
        self._server.start()
        os.chmod(self.address, 0o600)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def stop(self, grace: float = 2.0) -> None:
        self._server.stop(grace).wait()
        self._stopped.set()
        with contextlib.suppress(FileNotFoundError):
            self.address.unlink()


def client(address: str | Path) -> snapshots_pb2_grpc.SnapshotsStub:
    """A stub talking to a snapshotter socket (tests, ``soci-lab snapshotter`` subcommands)."""
    return snapshots_pb2_grpc.SnapshotsStub(grpc.insecure_channel(f"unix://{address}"))
