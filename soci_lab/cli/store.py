"""``soci-lab store``: the Hermes-compatible external artifact store (``serve``) and asking it to build.

``store serve --db FILE`` prints the store's URL as the first line of stdout, then serves until
SIGINT/SIGTERM (the four GET endpoints of hermes.md §2.2, plus ``POST /v1/builds``).

Who may build with the store's registry credentials: requests with the build token
(``--build-token-file``; clients: ``store build --token-file FILE`` or ``$SOCI_LAB_STORE_TOKEN``) or through
its unix socket (``--build-socket PATH``, ``store build --store unix:PATH``); other requests build
anonymously (public images only), or are refused (``--no-anonymous-builds``). See ``soci_lab.store.auth``.

``store build REF [--store URL]`` asks the store to build and keep artifacts for REF (Hermes builds only
from Kubernetes watchers; soci_lab's store has an HTTP build endpoint instead). Prints the build id and
status; with ``--wait`` follows the build to its end and prints the index digest (exit 1 when it failed).
``--json`` prints the build as one object (``id, image, platform, profile, accelerationKey, status,
imageDigestRef, indexDigest, error, cached, sameAs, deduplicated`` …). A full build queue is exit 1 with
one line ("the store's build queue is full …"), never a silent drop.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from . import UsageError, argtypes

DEFAULT_STORE_URL = "http://127.0.0.1:39091"
#: environment variable holding the store's build token for ``store build``
TOKEN_ENV = "SOCI_LAB_STORE_TOKEN"




def register(subparsers: Any) -> None:
    """Add the ``store`` command group."""
    group = subparsers.add_parser("store", help="the Hermes-compatible external artifact store")
    sub = group.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)

    s = sub.add_parser(
        "serve",
        help="serve SOCI artifacts kept in SQLite; prints the URL first",
        description="The Hermes-compatible external artifact store: /healthz, /v1/indexes/resolve, "
        "/v1/blobs/<digest>, /v1/artifacts, and POST /v1/builds. Prints its URL as the first line of stdout, "
        "then serves until SIGINT/SIGTERM.",
    )
    s.add_argument("--db", required=True, type=Path, metavar="FILE", help="the SQLite database (created if missing)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=argtypes.port, default=39091,
                   help="port (default 39091, Hermes's; 0 picks a free one)")
    s.add_argument("--platform", type=argtypes.platform_text, default="linux/amd64",
                   help="platform of requests that name none (default linux/amd64, as Hermes)")
    s.add_argument("--span-size", type=argtypes.nonnegative_size, default=4 << 20, metavar="S",
                   help="span size (default 4MiB)")
    s.add_argument("--min-layer-size", type=argtypes.nonnegative_size, default=10 << 20, metavar="S",
                   help="minimum layer size of the 'none' profile (default 10MiB; the profiles use 0)")
    s.add_argument("--max-concurrency", type=argtypes.positive_int, default=1, metavar="N",
                   help="builds at once (default 1)")
    s.add_argument("--queue-size", type=argtypes.positive_int, default=128, metavar="N",
                   help="builds that may wait (default 128)")
    s.add_argument("--build-timeout", type=argtypes.duration, default=3600.0, metavar="D",
                   help="per build (default 60m)")
    s.add_argument("--build-tool-identifier", default=None, metavar="TEXT",
                   help="stamped on every index (default 'Hermes Builder v0.1')")
    s.add_argument("--insecure", action="store_true", help="plain HTTP / no TLS verification for registries")
    s.add_argument("--creds", metavar="USER:PASS", help="registry credentials (else ~/.docker/config.json); "
                   "used only by builds with the build token or through the build socket")
    s.add_argument("--build-token-file", type=Path, metavar="FILE",
                   help="build token: requests with it (Authorization: Bearer) build with the store's credentials; "
                   "a missing FILE is created with a random token, mode 0600")
    s.add_argument("--build-socket", type=Path, metavar="PATH",
                   help="also listen on this unix socket (mode 0600); builds asked through it are trusted")
    s.add_argument("--no-anonymous-builds", action="store_true",
                   help="refuse builds without the token or socket (default: they build anonymously)")
    s.add_argument("--anonymous-registry", action="append", default=None, metavar="HOST[:PORT]",
                   help="a registry anonymous builds may read (repeatable); without it, a store not listening "
                        "only on loopback refuses anonymous builds of loopback, private and link-local addresses")
    s.set_defaults(handler=cmd_serve)

    b = sub.add_parser(
        "build",
        help="ask the store to build and keep artifacts for REF",
        description="Queue a build of REF in the store (POST /v1/builds) and print the build id and status.",
    )
    b.add_argument("ref", type=argtypes.reference_text, metavar="REF",
                   help="HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]")
    b.add_argument("--store", type=_store_address, default=DEFAULT_STORE_URL, metavar="URL",
                   help=f"the store's URL (default {DEFAULT_STORE_URL}), or unix:PATH for its build socket")
    b.add_argument("--token-file", type=Path, metavar="FILE",
                   help=f"the store's build token (else ${TOKEN_ENV}); without one the build is anonymous")
    b.add_argument("--platform", type=argtypes.platform_text, default=None,
                   help="os/arch[/variant] (default: the store's)")
    b.add_argument("--profile", choices=("startup-local-v1", "trace-v1", "none"), default=None,
                   help="startup profile (default startup-local-v1; trace-v1 needs --trace)")
    b.add_argument("--trace", type=lambda t: Path(argtypes.existing_file(t)), metavar="FILE",
                   help="recorded access trace for --profile trace-v1")
    b.add_argument("--sync-until", type=argtypes.duration, default=None, metavar="D",
                   help="trace-v1: spans first read after D are priority 1, 2, … (default: all priority 0)")
    b.add_argument("--wait", action="store_true", help="wait until the build is Ready or Failed")
    b.add_argument("--timeout", type=argtypes.duration, default=600.0, metavar="D", help="how long --wait waits")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=cmd_build)


def _store_address(text: str) -> str:
    """The store's ``http(s)://`` URL, or ``unix:PATH`` of its build socket."""
    if text.startswith("unix:") and len(text) > len("unix:"):
        return text
    return argtypes.url(text)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..netlab.serve import serve_until_signalled
    from ..store import ArtifactStore, BuildSettings
    from ..store.auth import load_or_create_token
    from ..store.builder import HERMES_BUILD_TOOL_IDENTIFIER

    token = load_or_create_token(args.build_token_file) if args.build_token_file else None
    if args.no_anonymous_builds and token is None and args.build_socket is None:
        raise UsageError("--no-anonymous-builds needs --build-token-file or --build-socket (else nobody may build)")

    settings = BuildSettings(span_size=args.span_size, min_layer_size=args.min_layer_size,
                             build_tool_identifier=args.build_tool_identifier or HERMES_BUILD_TOOL_IDENTIFIER,
                             insecure=args.insecure, creds=args.creds)
    store = ArtifactStore(args.db, host=args.host, port=args.port, platform=args.platform, settings=settings,
                          max_concurrency=args.max_concurrency, queue_size=args.queue_size,
                          build_timeout=args.build_timeout, build_token=token,
                          allow_anonymous_builds=not args.no_anonymous_builds, build_socket=args.build_socket,
                          anonymous_registries=args.anonymous_registry)
    return serve_until_signalled(store)


def cmd_build(args: argparse.Namespace) -> int:
    from ..store import request_build
    from ..store.auth import read_token
    from . import print_json

    profile = args.profile or ("trace-v1" if args.trace else None)
    if profile == "trace-v1" and args.trace is None:
        raise UsageError("--profile trace-v1 needs --trace FILE")
    token = read_token(args.token_file) if args.token_file else (os.environ.get(TOKEN_ENV) or None)
    state = request_build(args.store, args.ref, platform=args.platform, profile=profile, trace=args.trace,
                          sync_until_s=args.sync_until, wait=args.wait, timeout=args.timeout, token=token)
    if args.json:
        print_json(state)
    elif args.wait and state["status"] == "Ready":
        print(state["indexDigest"] or state["status"])
    else:
        print(f"{state['id']} {state['status']}" + (" (already asked for)" if state.get("deduplicated") else ""))
    if state["status"] == "Failed":
        print(f"soci-lab store: build of {args.ref} failed: {state['error']}", file=sys.stderr)
        return 1
    return 0
