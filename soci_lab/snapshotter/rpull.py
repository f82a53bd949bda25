"""``soci-lab image rpull``: pull an image into containerd with its layers mounted by the soci-lab snapshotter.

As upstream's ``soci image rpull`` (and stargz's ``ctr-remote images rpull``): containerd 1.6's own
``ctr images pull`` passes a snapshotter only ``containerd.io/snapshot.ref``, so it cannot ask for a
remote layer. This client talks to containerd's API (stubs generated from its .proto files):

1. resolve REF in the registry (:mod:`soci_lab.remote`): manifest and config, verified;
2. under a lease, write the manifest and config into containerd's content store, labelled so that
   containerd's garbage collector keeps the config (from the manifest) and the snapshot chain (from the
   config: ``containerd.io/gc.ref.snapshot.<snapshotter>``);
3. prepare each layer through containerd's snapshots service with the remote-snapshotter labels
   (:mod:`.remote`); the snapshotter mounts the layer and answers AlreadyExists, so no layer blob is
   downloaded by containerd;
4. create (or update) the image record, pointing at the manifest, and end the lease.

Afterwards ``ctr run --snapshotter soci-lab REF ID CMD`` finds the image unpacked and runs on the lazily
mounted rootfs. A layer the snapshotter did not mount (Prepare succeeded: it fell back) is removed again
and the pull fails with one line naming it: this client does not unpack layers itself.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from .._sync import run_sync
from ..errors import SociLabError
from ..events import EventRecorder
from ._api import (
    content_pb2,
    content_pb2_grpc,
    descriptor_pb2,
    images_pb2,
    images_pb2_grpc,
    leases_pb2,
    leases_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from .remote import LABEL_IMAGE_REF, LABEL_INDEX, LABEL_LAYER, LABEL_MANIFEST, LABEL_TARGET


class RpullError(SociLabError):
    """containerd refused a step of rpull (the message names the step)."""


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: ``chain[0] = diff[0]``, ``chain[i] = sha256(chain[i-1] + " " + diff[i])``."""
    out: list[str] = []
    for diff in diff_ids:
        if not out:
            out.append(diff)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest())
    return out


@dataclass
class RpullResult:
    ref: str
    manifest_digest: str
    chain_ids: list[str]
    layers_mounted: int = 0
    layers_present: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


async def _resolve(ref: str, insecure: bool, events: EventRecorder) -> tuple[Any, bytes, bytes]:
    from ..oci.reference import Reference
    from ..remote import RegistryClient

    reference = Reference.parse(ref)
    async with RegistryClient(reference, insecure=insecure, events=events) as client:
        image = await client.resolve_image(reference)
        fetched = await client.get_manifest(reference.repository, str(image.manifest_descriptor.digest))
        config = await client.get_blob(reference.repository, image.manifest.config)
    return image, fetched.data, config


def _write_content(stub: Any, md: list[tuple[str, str]], digest: str, data: bytes, labels: dict[str, str]) -> None:
    req = content_pb2.WriteContentRequest(
        action=content_pb2.COMMIT, ref=f"soci-lab-rpull-{digest}", total=len(data), expected=digest, offset=0,
        data=data, labels=labels,
    )
    try:
        for _ in stub.Write(iter([req]), metadata=md):
            pass
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise RpullError(f"content write {digest}: {exc.details()}") from None
        # already there (an earlier pull): make sure it carries our gc labels
        info = content_pb2.Info(digest=digest, labels=labels)
        from google.protobuf import field_mask_pb2

        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        stub.Update(content_pb2.UpdateRequest(info=info, update_mask=mask), metadata=md)


def rpull(
    address: str | Path,
    ref: str,
    *,
    namespace: str = "default",
    snapshotter: str = "soci-lab",
    insecure: bool = False,
    index_digest: str | None = None,
    events: EventRecorder | None = None,
) -> RpullResult:
    """Pull REF into the containerd at ``address`` with lazily mounted layers (see the module docstring)."""
    events = events if events is not None else EventRecorder(strategy="lazy")
    t0 = events.now()
    # run_sync: from a notebook cell (a loop already running in this thread) too
    image, manifest_bytes, config_bytes = run_sync(_resolve, ref, insecure, events)
    mdesc = image.manifest_descriptor
    manifest_digest = str(mdesc.digest)
    layers = [str(d.digest) for d in image.layers]
    chains = chain_ids([str(d) for d in image.config.diff_ids])
    if len(chains) != len(layers):
        raise RpullError(f"{ref}: {len(layers)} layers but {len(chains)} diff_ids in the config")
    channel = grpc.insecure_channel(f"unix://{address}")
    md: list[tuple[str, str]] = [("containerd-namespace", namespace)]
    result = RpullResult(ref, manifest_digest, chains)
    leases = leases_pb2_grpc.LeasesStub(channel)
    try:
        expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        lease = leases.Create(leases_pb2.CreateRequest(
            id=f"soci-lab-rpull-{uuid.uuid4().hex[:12]}", labels={"containerd.io/gc.expire": expire}), metadata=md)
    except grpc.RpcError as exc:
        raise RpullError(f"containerd at {address}: {exc.details() or exc.code().name}") from None
    lmd = [*md, ("containerd-lease", lease.lease.id)]
    try:
        content = content_pb2_grpc.ContentStub(channel)
        config_digest = str(image.manifest.config.digest)
        mlabels = {"containerd.io/gc.ref.content.config": config_digest}
        mlabels.update({f"containerd.io/gc.ref.content.l.{i}": d for i, d in enumerate(layers)})
        _write_content(content, lmd, config_digest, config_bytes,
                       {f"containerd.io/gc.ref.snapshot.{snapshotter}": chains[-1]})
        _write_content(content, lmd, manifest_digest, manifest_bytes, mlabels)
        snaps = snapshots_pb2_grpc.SnapshotsStub(channel)
        parent = ""
        for layer, chain in zip(layers, chains, strict=True):
            tl = events.now()
            try:
                snaps.Stat(snapshots_pb2.StatSnapshotRequest(snapshotter=snapshotter, key=chain), metadata=lmd)
                result.layers_present += 1
                parent = chain
                continue
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise RpullError(f"stat snapshot {chain}: {exc.details()}") from None
            labels = {LABEL_TARGET: chain, LABEL_IMAGE_REF: ref, LABEL_LAYER: layer, LABEL_MANIFEST: manifest_digest}
            if index_digest:
                labels[LABEL_INDEX] = index_digest
            key = f"extract-{uuid.uuid4().hex[:16]} {chain}"
            try:
                snaps.Prepare(snapshots_pb2.PrepareSnapshotRequest(
                    snapshotter=snapshotter, key=key, parent=parent, labels=labels), metadata=lmd)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise RpullError(f"prepare layer {layer}: {exc.details()}") from None
            else:
                snaps.Remove(snapshots_pb2.RemoveSnapshotRequest(snapshotter=snapshotter, key=key), metadata=lmd)
                raise RpullError(f"layer {layer} was not mounted by snapshotter {snapshotter!r} (see its events); "
                                 "rpull does not unpack layers itself")
            result.layers_mounted += 1
            events.emit("mount", tl, layer=layer, path=chain, op="rpull")
            parent = chain
        images = images_pb2_grpc.ImagesStub(channel)
        target = descriptor_pb2.Descriptor(media_type=mdesc.media_type, digest=manifest_digest, size=mdesc.size)
        img = images_pb2.Image(name=ref, target=target)
        try:
            images.Create(images_pb2.CreateImageRequest(image=img), metadata=lmd)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise RpullError(f"create image {ref}: {exc.details()}") from None
            images.Update(images_pb2.UpdateImageRequest(image=img), metadata=lmd)
    except grpc.RpcError as exc:  # any other refusal: one line naming it
        raise RpullError(f"containerd at {address}: {exc.details() or exc.code().name}") from None
    finally:
        try:
            leases.Delete(leases_pb2.DeleteRequest(id=lease.lease.id), metadata=md)
        finally:
            channel.close()
    result.seconds = events.now() - t0
    events.emit("ready", t0, path=ref, op="rpull", layers=len(layers))
    return result
