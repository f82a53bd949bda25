#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine (as root) for soci_lab: the system packages the tests and the
# data path need, a virtualenv in .venv, and the project installed into it with its extras.
# Idempotent: a second run only checks. Used by scripts/test, scripts/demo and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev gcc libfuse3-dev fuse3 pkg-config docker-registry skopeo umoci strace debootstrap
              attr curl gzip pigz zstd e2fsprogs chromium flatbuffers-compiler golang-go)
# tests/ztoc/go_ztoc_oracle (cgo): zlib headers and Debian's C++ FlatBuffers builder (no Go runtime is packaged)
APT_PACKAGES+=(g++ zlib1g-dev libflatbuffers-dev)
# containerd 1.6 + runc: tests/snapshotter runs real containers on the soci-lab snapshotter
APT_PACKAGES+=(containerd runc)
EXTRAS="${SOCI_LAB_EXTRAS:-fuse,test}"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages (${missing[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a system service on port 5000; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.soci-lab-installed
want="$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q -U pip >&2
  .venv/bin/pip install -q -e ".[$EXTRAS]" >&2
  echo "$want" > "$stamp"
fi
