"""Every link a reader can follow resolves: Markdown links and images in the repository's Markdown pages
and notebooks (the file exists; a ``#section`` names a heading of it), the repository paths they name in
backticks (``docs/…``, ``notebooks/…``, ``scripts/…`` …), and the ``docs/*.md`` pages the code cites.
External URLs are not fetched (CI has no network): only their form is left alone.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
TOP_DIRS = ("docs", "notebooks", "scripts", "soci_lab", "tests", "benchmarks", "datasets")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
TICKED_PATH = re.compile(r"`((?:" + "|".join(TOP_DIRS) + r")/[^`\s]*)`")
PLACEHOLDER = re.compile(r"[*<>{}…]|(^|/)[A-Z][A-Z_]*(/|\.|$)")


def tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, check=False)
    files = [REPO / line for line in out.stdout.splitlines() if line]
    return files or sorted(REPO.glob(f"**/{pattern.lstrip('*')}"))


def markdown_texts() -> list[tuple[str, Path, str]]:
    """(name, the directory links are relative to, text) of every page and notebook markdown cell."""
    texts = [(str(p.relative_to(REPO)), p.parent, p.read_text()) for p in tracked("*.md")]
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                texts.append((f"{nb_path.relative_to(REPO)} cell {i}", nb_path.parent, cell.source))
    return texts


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    if path.suffix != ".md":
        return set()
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+?)\s*#*$", path.read_text(), re.M)}


def without_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def broken_links(name: str, base: Path, text: str) -> list[str]:
    problems = []
    for target in LINK.findall(without_code_blocks(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: …
            continue
        file_part, _, anchor = target.partition("#")
        dest = (base / file_part).resolve() if file_part else None
        if dest is not None and not dest.exists():
            problems.append(f"{name}: link to {target}: no such file")
        elif anchor and dest is not None and dest.suffix == ".md" and slug(anchor) not in anchors(dest):
            problems.append(f"{name}: link to {target}: no such section")
    for path in TICKED_PATH.findall(text):
        path = path.rstrip(".,:;)")
        if PLACEHOLDER.search(path) or (REPO / path).exists():
            continue
        problems.append(f"{name}: names `{path}`, which does not exist")
    return problems


def test_every_link_and_named_path_in_pages_and_notebooks_resolves() -> None:
    problems = [p for name, base, text in markdown_texts() for p in broken_links(name, base, text)]
    assert problems == [], "\n".join(problems)


def test_every_docs_page_the_code_cites_exists() -> None:
    cited: dict[str, set[str]] = {}
    for path in [*tracked("*.py"), *tracked("*.ipynb")]:
        if path.is_file() and path != Path(__file__).resolve():  # this file names broken pages on purpose
            for page in re.findall(r"\bdocs/[\w.-]+\.md\b", path.read_text(errors="replace")):
                cited.setdefault(page, set()).add(str(path.relative_to(REPO)))
    missing = {page: sorted(where) for page, where in cited.items() if not (REPO / page).is_file()}
    assert missing == {}, missing
    # the code cites the Hermes reference by section (hermes.md §2.4 …): the project's page has them all
    sections = {m for m in re.findall(r"^#+\s+([\d.]+)\s", (REPO / "docs" / "hermes.md").read_text(), re.M)}
    for path in tracked("*.py"):
        for section in re.findall(r"\bhermes\.md §(\d+(?:\.\d+)?)", path.read_text(errors="replace")):
            assert section.rstrip(".") + "." in sections or section in sections, (path, section)


@pytest.mark.parametrize(
    ("text", "broken"),
    [
        ("see [the CLI](docs/cli.md) and [x](docs/nope.md)", ["docs/nope.md"]),
        ("[arch](docs/architecture.md#no-such-heading)", ["no-such-heading"]),
        ("Hermes (see `docs/hermes-nope.md`)", ["docs/hermes-nope.md"]),
        ("[web](https://example.org/x) and `datasets/NAME/startup.json`", []),
    ],
)
def test_the_checker_finds_what_is_broken(text: str, broken: list[str]) -> None:
    found = broken_links("t", REPO, text)
    assert len(found) == len(broken) and all(b in f for b, f in zip(broken, found, strict=True)), found
