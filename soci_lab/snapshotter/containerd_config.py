"""A containerd 1.6 ``config.toml`` that loads soci-lab as its snapshotter (a proxy plugin), with every path of
containerd's own (root, state, sockets) under one directory: what a test fixture or a benchmark needs to run
a private containerd beside the host's, and a starting point for a user's own configuration."""

from __future__ import annotations

from pathlib import Path

_TEMPLATE = """version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
[metrics]
  address = ""
[proxy_plugins.soci-lab]
  type = "snapshot"
  address = "{snapshotter}"
"""


def containerd_config(base: str | Path, snapshotter_socket: str | Path) -> str:
    """The config text: containerd's root, state and sockets under ``base``; the ``soci-lab`` snapshotter at
    ``snapshotter_socket`` (``soci-lab snapshotter serve --address``); the CRI plugin off."""
    return _TEMPLATE.format(base=base, snapshotter=snapshotter_socket)
