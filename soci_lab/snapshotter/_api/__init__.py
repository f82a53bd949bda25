"""containerd's snapshots API (served by the daemon) and its content, images and leases APIs (used by
``rpull``) as generated Python gRPC stubs.

GENERATED CODE — do not edit by hand. Regenerate with ``python scripts/gen_containerd_api.py`` (needs the
``apigen`` extra). Source: containerd's ``api/types/{mount,descriptor}.proto`` and
``api/services/{snapshots,content,images,leases}/v1/*.proto`` from Debian's
golang-github-containerd-containerd-dev (version in ``VERSION``), with the Go-only gogoproto options
removed (the ``.proto`` copies here are what was compiled). Those files are Copyright The containerd Authors, licensed under the Apache License, Version 2.0
(see ``NOTICE``).
"""
