"""The dataset recipes: real images built from Debian packages, layered as real images are.

Every recipe starts from a ``debootstrap --variant=minbase`` rootfs (the **base** layer) and adds steps,
each one layer, as Dockerfile ``RUN``/``COPY`` lines would: a **runtime** (the interpreter or server from
Debian packages) and an **application** (its libraries, code and configuration). Each recipe says how the
container starts (``cmd``, ``user``, ``env``) and when startup is over (``readiness``, see
:class:`soci_lab.workload.Readiness`). Services run in the foreground and print a line when ready; the
Python and shell workloads, like workers waiting for jobs, then wait — so a recorder can still see their
mapped pages at readiness.

``minbase`` is the small one (base + a script layer that also slims the docs, so it has whiteouts): the
test suite builds it for real.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DatasetError


@dataclass(frozen=True)
class Step:
    """One layer over the previous: packages to install, then files to write, then shell commands."""

    name: str
    packages: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)  #: absolute path → text (mode 0755 if it starts "#!")
    commands: tuple[str, ...] = ()
    created_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "packages": list(self.packages), "files": dict(sorted(self.files.items())),
                "commands": list(self.commands), "created_by": self.created_by}


@dataclass(frozen=True)
class Recipe:
    """A dataset image: base (debootstrap), then ``steps``; how it starts and when it is ready."""

    name: str
    description: str
    steps: tuple[Step, ...]
    cmd: tuple[str, ...]
    readiness: str
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    timeout_s: float = 120.0
    variant: str = "minbase"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "variant": self.variant,
            "steps": [s.to_json() for s in self.steps],
            "cmd": list(self.cmd),
            "readiness": self.readiness,
            "user": self.user,
            "env": dict(sorted(self.env.items())),
            "cwd": self.cwd,
            "timeout_s": self.timeout_s,
        }

    def digest(self) -> str:
        """sha256 of the recipe's canonical JSON (part of the cache key)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    @property
    def layer_names(self) -> tuple[str, ...]:
        return ("base", *(s.name for s in self.steps))


_HELLO_SH = """#!/bin/sh
# minbase startup: read the system identity and the shell's locale files, report, then wait like a service
. /etc/os-release
echo "hello from $PRETTY_NAME, $(ls /usr/bin | wc -l) programs"
echo ready
sleep infinity
"""

_PANDAS_MAIN = """#!/usr/bin/python3
# A data worker: load its reference table with pandas, aggregate it, report ready, wait for jobs.
import sys
import time

import numpy as np
import pandas as pd

frame = pd.read_csv("/app/data.csv")
frame["total"] = frame["qty"] * frame["price"]
summary = frame.groupby("region")["total"].agg(["sum", "mean"])
print(f"loaded {len(frame)} rows, {len(summary)} regions, numpy {np.__version__}, pandas {pd.__version__}")
print("ready", flush=True)
sys.stdout.flush()
while True:
    time.sleep(3600)
"""


def _pandas_data(rows: int = 2000) -> str:
    regions = ("north", "south", "east", "west")
    lines = ["id,region,qty,price"]
    for i in range(rows):
        lines.append(f"{i},{regions[i % 4]},{(i * 7) % 13 + 1},{(i * 31) % 997 / 10:.2f}")
    return "\n".join(lines) + "\n"


_NODE_SERVER = """// A small HTTP service: require the core modules a web app uses, listen on a free loopback port.
'use strict';
const http = require('http');
const os = require('os');
const zlib = require('zlib');
const crypto = require('crypto');
const server = http.createServer((req, res) => {
  const body = zlib.gzipSync(JSON.stringify({ host: os.hostname(), id: crypto.randomUUID() }));
  res.writeHead(200, { 'content-encoding': 'gzip', 'content-type': 'application/json' });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
"""

_PG_START = """#!/bin/sh
# Start the cluster the package created, in the foreground, UNIX socket only (no TCP port to collide on).
set -e
v=$(ls /usr/lib/postgresql | sort -n | tail -1)
exec /usr/lib/postgresql/$v/bin/postgres -D /var/lib/postgresql/$v/main \\
  -c config_file=/etc/postgresql/$v/main/postgresql.conf -c listen_addresses= -c ssl=off
"""

_DOC_SLIM = ("rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/*",)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="minbase",
            description="Debian minbase + a shell script layer that also drops the docs (whiteouts)",
            steps=(
                Step("application", files={"/app/hello.sh": _HELLO_SH}, commands=_DOC_SLIM,
                     created_by="COPY hello.sh /app/ && RUN rm -rf /usr/share/doc/* /usr/share/man/*"),
            ),
            cmd=("/bin/sh", "/app/hello.sh"),
            readiness="line:^ready$",
            timeout_s=30,
        ),
        Recipe(
            name="python-pandas",
            description="Python 3 runtime; application layer with pandas (python3-pandas) and a data worker",
            steps=(
                Step("runtime", packages=("python3",), created_by="RUN apt-get install python3"),
                Step("application", packages=("python3-pandas",),
                     files={"/app/main.py": _PANDAS_MAIN, "/app/data.csv": _pandas_data()},
                     created_by="RUN apt-get install python3-pandas && COPY main.py data.csv /app/"),
            ),
            cmd=("/usr/bin/python3", "/app/main.py"),
            readiness="line:^ready$",
            env={"PYTHONDONTWRITEBYTECODE": "1"},
            timeout_s=120,
        ),
        Recipe(
            name="nodejs",
            description="Node.js runtime (Debian nodejs); application layer with an HTTP server",
            steps=(
                Step("runtime", packages=("nodejs",), created_by="RUN apt-get install nodejs"),
                Step("application", files={"/app/server.js": _NODE_SERVER}, commands=_DOC_SLIM,
                     created_by="COPY server.js /app/ && RUN rm -rf /usr/share/doc/*"),
            ),
            cmd=("/usr/bin/node", "/app/server.js"),
            readiness="line:^listening on \\d+",
            timeout_s=120,
        ),
        Recipe(
            name="postgresql",
            description="PostgreSQL server (Debian postgresql, cluster created by the package); start script",
            steps=(
                Step("runtime", packages=("postgresql",), created_by="RUN apt-get install postgresql"),
                Step("application", files={"/app/start-postgres.sh": _PG_START}, commands=_DOC_SLIM,
                     created_by="COPY start-postgres.sh /app/ && RUN rm -rf /usr/share/doc/*"),
            ),
            cmd=("/app/start-postgres.sh",),
            readiness="line:database system is ready to accept connections",
            user="postgres",
            timeout_s=180,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; :class:`DatasetError` listing the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(RECIPES))}") from None
