#!/usr/bin/env python3
"""Generate soci_lab/snapshotter/_api/ (Python gRPC stubs) from containerd's own .proto files.

The .proto files come from Debian's ``golang-github-containerd-containerd-dev`` (the same version as the
``containerd`` package the tests run: 1.6.x in bookworm). ``apt-get download`` fetches it (no install
needed); ``--source DIR`` points at an unpacked tree instead. The gogoproto options in them only steer
Go code generation (wire format unchanged), so they are dropped before ``grpc_tools.protoc`` runs: the
generated messages and the service path ``/containerd.services.snapshots.v1.Snapshots/…`` are containerd's.

Usage: python scripts/gen_containerd_api.py [--source DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "golang-github-containerd-containerd-dev"
GO_ROOT = "usr/share/gocode/src/github.com/containerd/containerd"
#: containerd .proto (relative to its repository) → module name under soci_lab/snapshotter/_api
PROTOS = {
    "api/types/mount.proto": "mount",
    "api/services/snapshots/v1/snapshots.proto": "snapshots",
    # the client side of ``soci-lab image rpull``: content store, images, leases
    "api/types/descriptor.proto": "descriptor",
    "api/services/content/v1/content.proto": "content",
    "api/services/images/v1/images.proto": "images",
    "api/services/leases/v1/leases.proto": "leases",
}
OUT = Path(__file__).resolve().parent.parent / "soci_lab" / "snapshotter" / "_api"
API_PATH = "soci_lab/snapshotter/_api"


def unpacked_source(workdir: Path) -> Path:
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True)
    (deb,) = workdir.glob(f"{PACKAGE}_*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "x")], check=True)
    return workdir / "x" / GO_ROOT


def strip_gogo(text: str) -> str:
    """Drop the gogoproto import and options (Go-only; the wire format does not change)."""
    text = re.sub(r'^import weak "gogoproto/gogo.proto";\n', "", text, flags=re.M)
    text = re.sub(r"^\s*option \(gogoproto\.[^;]*;\n", "", text, flags=re.M)
    text = re.sub(r"\s*\[\(gogoproto\.[^\]]*\]", "", text)
    for src, name in PROTOS.items():
        text = text.replace(f'import "github.com/containerd/containerd/{src}";', f'import "{API_PATH}/{name}.proto";')
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="containerd source tree (default: the Debian package)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = args.source or unpacked_source(work)
        version = next(iter(sorted(work.glob(f"{PACKAGE}_*.deb"))), None)
        tree = work / "protos"
        (tree / API_PATH).mkdir(parents=True)
        for src, name in PROTOS.items():
            (tree / API_PATH / f"{name}.proto").write_text(strip_gogo((source / src).read_text()))
        OUT.mkdir(parents=True, exist_ok=True)
        import grpc_tools
        from grpc_tools import protoc

        include = str(Path(grpc_tools.__file__).parent / "_proto")
        files = [f"{API_PATH}/{name}.proto" for name in PROTOS.values()]
        rc = protoc.main(["protoc", f"-I{tree}", f"-I{include}", f"--python_out={OUT.parents[2]}",
                          f"--pyi_out={OUT.parents[2]}", f"--grpc_python_out={OUT.parents[2]}", *files])
        if rc != 0:
            return rc
        for name in PROTOS.values():
            shutil.copy(tree / API_PATH / f"{name}.proto", OUT / f"{name}.proto")
        if version is not None:
            (OUT / "VERSION").write_text(version.name.split("_")[1] + "\n")
    print(f"generated {', '.join(sorted(p.name for p in OUT.glob('*_pb2*.py')))} in {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
