"""The command synopses of docs/cli.md, read from the page and turned into command lines a test can run.

A synopsis such as ``soci-lab compare REF --out DIR [--modes lazy,parallel,sequential] [--sim]
[--trace FILE \\| -- CMD [ARG…]]`` is read as the page writes it: ``[…]`` is optional, ``a|b`` inside a
word or ``… | …`` inside brackets are alternatives, ``…`` repeats what precedes it, UPPERCASE words are
placeholders. :func:`expand` gives the words of one reading (every optional group in, the ``k``-th
alternative of each choice) and :func:`units` groups them into options (a flag and its value),
positionals and the command after ``--``, so a test can reorder options and positionals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

Node = list  # a sequence of words (str) and groups


@dataclass(frozen=True)
class Group:
    """``[a | b]``: optional alternatives, each a sequence."""

    alternatives: tuple[list, ...]


def synopses(doc: Path = DOC) -> list[str]:
    """Every synopsis in the command tables of docs/cli.md (first cell, in backticks, starting ``soci-lab``)."""
    out = []
    for line in doc.read_text().splitlines():
        m = re.match(r"\|\s*`(soci-lab [^`]+)`\s*\|", line)
        if m:
            out.append(m.group(1).replace("\\|", "|"))
    return out


def _tokens(text: str) -> list[str]:
    return re.findall(r"\[|\]|[^\s\[\]]+", text)


def parse(text: str) -> Node:
    """The synopsis as a tree of words and :class:`Group`s."""
    toks = _tokens(text)
    pos = 0

    def seq(closing: bool) -> list[list]:
        nonlocal pos
        alts: list[list] = [[]]
        while pos < len(toks):
            t = toks[pos]
            pos += 1
            if t == "[":
                alts[-1].append(Group(tuple(seq(True))))
            elif t == "]":
                if not closing:
                    raise ValueError(f"unbalanced ] in {text!r}")
                return alts
            elif t == "|" and closing:
                alts.append([])
            else:
                alts[-1].append(t)
        if closing:
            raise ValueError(f"unbalanced [ in {text!r}")
        return alts

    return seq(False)[0]


def choices(node: Node) -> int:
    """The most alternatives any group of the synopsis offers."""
    most = 1
    for item in node:
        if isinstance(item, Group):
            most = max(most, len(item.alternatives), *(choices(a) for a in item.alternatives))
    return most


def expand(node: Node, k: int = 0, optional: bool = True) -> list[str]:
    """The words of one reading: optional groups in (or out), the ``k``-th alternative where there is one."""
    words: list[str] = []
    for item in node:
        if isinstance(item, Group):
            if optional:
                alt = item.alternatives[min(k, len(item.alternatives) - 1)]
                words += expand(alt, k, optional)
            continue
        if item == "…":  # the previous word (or flag and value) once more
            continue
        if item.endswith("…"):
            item = item[:-1]
        words.append(item.split("|")[0])
    return words


def is_placeholder(word: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Z_]*", word))


@dataclass
class Unit:
    kind: str  # "opt", "pos" or "cmd"
    words: list[str]


def units(words: list[str]) -> list[Unit]:
    """Options (flag and value), positionals and the command after ``--``, in the synopsis's order."""
    out: list[Unit] = []
    i = 2  # "soci-lab" and the command
    while words[i - 1] in ("registry", "netlab", "image", "index", "store", "dataset") and i < len(words):
        i += 1  # a group's subcommand
    head = words[:i]
    out.append(Unit("head", head))
    while i < len(words):
        w = words[i]
        if w == "--":
            out.append(Unit("cmd", words[i:]))
            break
        if w.startswith("--"):
            if i + 1 < len(words) and not words[i + 1].startswith("-"):
                out.append(Unit("opt", [w, words[i + 1]]))
                i += 2
                continue
            out.append(Unit("opt", [w]))
        else:
            out.append(Unit("pos", [w]))
        i += 1
    return out


def orders(us: list[Unit]) -> dict[str, list[Unit]]:
    """The synopsis's own order, every option before the positionals, and every option after them."""
    head = [u for u in us if u.kind == "head"]
    opts = [u for u in us if u.kind == "opt"]
    pos = [u for u in us if u.kind == "pos"]
    cmd = [u for u in us if u.kind == "cmd"]
    return {"as written": us, "options first": head + opts + pos + cmd, "options last": head + pos + opts + cmd}
