"""The import contract of the house (pyproject.toml ``[tool.importlinter]``; docs/architecture.md, "Rules of
the house") covers the whole package and holds. ``scripts/test`` runs ``lint-imports`` before pytest; these
tests keep the contract itself honest: a new top-level room (module or package under ``soci_lab/``) that the
layers do not name fails here, with its name, instead of escaping every rule."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import soci_lab

ROOT = Path(__file__).resolve().parents[2]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _layered_rooms(contract: dict, *, optional: bool = True) -> set[str]:
    """The rooms the layers name; ``(room)`` is an optional layer (a room that may not exist yet)."""
    names = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    return {n.strip("()") for n in names if optional or not n.startswith("(")}


def undeclared_rooms(rooms: set[str], contract: dict) -> set[str]:
    """The top-level rooms the layers contract does not name."""
    return rooms - _layered_rooms(contract)


def _rooms_on_disk() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(soci_lab.__path__)}


def _layers_contract() -> dict:
    (contract,) = [c for c in _contracts() if c["type"] == "layers"]
    return contract


def test_every_top_level_room_has_a_layer() -> None:
    contract = _layers_contract()
    assert contract["containers"] == ["soci_lab"]
    assert contract.get("exhaustive") is True  # lint-imports itself also refuses an undeclared room
    assert undeclared_rooms(_rooms_on_disk(), contract) == set()
    assert _layered_rooms(contract, optional=False) <= _rooms_on_disk(), "a layer names a room that is gone"


def test_a_new_room_without_a_layer_is_reported() -> None:
    assert undeclared_rooms(_rooms_on_disk() | {"newroom"}, _layers_contract()) == {"newroom"}


def test_the_simulator_contract_forbids_the_real_data_path() -> None:
    """sim/ sits below lazy, unpack, snapshot and artifacts in the layers; the forbidden contract adds the
    rooms below or beside it that it must not use either (remote, netlab, the local store, analysis)."""
    layers = [[n.strip(" ()") for n in layer.split("|")] for layer in _layers_contract()["layers"]]
    level = {name: i for i, layer in enumerate(layers) for name in layer}  # 0 is the top
    for room in ("lazy", "unpack", "snapshot", "artifacts", "workload", "store", "images", "datasets"):
        assert level[room] < level["sim"], room
    (forbidden,) = [c for c in _contracts() if c["type"] == "forbidden" and c["source_modules"] == ["soci_lab.sim"]]
    assert {"soci_lab.remote", "soci_lab.netlab", "soci_lab.analysis"} <= set(forbidden["forbidden_modules"])


def test_the_contract_holds() -> None:
    """The same check scripts/test runs, so a plain pytest run sees a broken contract too."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
