"""containerd's snapshots API (``containerd.services.snapshots.v1``) as generated Python gRPC stubs.

GENERATED CODE — do not edit by hand. Regenerate with ``python scripts/gen_containerd_api.py`` (needs the
``apigen`` extra). Source: containerd's ``api/types/mount.proto`` and
``api/services/snapshots/v1/snapshots.proto`` from Debian's golang-github-containerd-containerd-dev (version
in ``VERSION``), with the Go-only gogoproto options removed (the ``.proto`` copies here are what was
compiled). Those files are Copyright The containerd Authors, licensed under the Apache License, Version 2.0
(see ``NOTICE``).
"""
