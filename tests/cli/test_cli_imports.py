"""Every package that soci_lab imports directly is declared in pyproject.toml (issue 16, point 8): a
dependency that only arrives through another one (h11 through httpx, numpy through pandas) can vanish
when that one changes."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    """Declared distribution (normalised) → where (``dependencies`` or the extra's name)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out: dict[str, str] = {}
    groups = {"dependencies": project.get("dependencies", []), **project.get("optional-dependencies", {})}
    for group, reqs in groups.items():
        for req in reqs:
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
            assert name, req
            out.setdefault(_norm(name.group(0)), group)
    return out


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Top-level names of every absolute import in the package → the files importing them."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        if "fbs_generated" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    declared = _declared()
    dists = packages_distributions()
    undeclared = {}
    for top, files in imported_modules(ROOT / "soci_lab").items():
        if top in sys.stdlib_module_names or top in ("soci_lab", "__future__"):
            continue
        candidates = {_norm(d) for d in dists.get(top, [top])}
        if not candidates & set(declared):
            undeclared[top] = sorted(files)[:3]
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_walk_sees_what_it_should() -> None:
    found = imported_modules(ROOT / "soci_lab")
    assert {"httpx", "anyio", "pandas", "simpy", "zstandard"} <= set(found)
