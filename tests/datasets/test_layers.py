"""The layer split on synthetic trees: added/changed/deleted entries land in the right layers with the
right whiteouts, and applying the layers in order rebuilds every snapshot (also for random edits)."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from soci_lab.datasets import diff_snapshots, snapshot_tree, split_into_layers
from soci_lab.datasets.layers import WHITEOUT_PREFIX


def files_in(layer: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(layer):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), layer))
    return out


def apply_layer(layer: Path, target: Path) -> None:
    """What an unpacker does with a layer directory: whiteouts delete, everything else overwrites."""
    for dirpath, dirnames, filenames in os.walk(layer):
        rel = os.path.relpath(dirpath, layer)
        dest_dir = target / rel if rel != "." else target
        for name in sorted(dirnames + filenames):
            src = Path(dirpath, name)
            dest = dest_dir / name
            if name.startswith(WHITEOUT_PREFIX):
                victim = dest_dir / name[len(WHITEOUT_PREFIX):]
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                elif victim.exists() or victim.is_symlink():
                    victim.unlink()
                continue
            st_ = src.lstat()
            if (dest.exists() or dest.is_symlink()) and not (stat.S_ISDIR(st_.st_mode) and dest.is_dir()
                                                             and not dest.is_symlink()):
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            if stat.S_ISDIR(st_.st_mode):
                dest.mkdir(exist_ok=True)
            elif stat.S_ISLNK(st_.st_mode):
                os.symlink(os.readlink(src), dest)
            else:
                shutil.copyfile(src, dest)
            os.chown(dest, st_.st_uid, st_.st_gid, follow_symlinks=False)
            if not stat.S_ISLNK(st_.st_mode):
                os.chmod(dest, stat.S_IMODE(st_.st_mode))
    for dirpath, _dirs, filenames in os.walk(layer, topdown=False):  # mtimes last, deepest first
        rel = os.path.relpath(dirpath, layer)
        for name in [*filenames, "."]:
            if name.startswith(WHITEOUT_PREFIX):
                continue
            src = Path(dirpath, name)
            dest = (target / rel / name) if rel != "." else target / name
            if src.is_symlink():
                continue
            st_ = src.lstat()
            os.utime(dest, ns=(st_.st_atime_ns, st_.st_mtime_ns), follow_symlinks=False)


def content_view(root: Path) -> dict[str, tuple]:
    """Path → (kind, mode, uid, size, content or target) — what must survive the layer round trip."""
    out = {}
    for rel, meta in snapshot_tree(root, exclude=()).items():
        p = root / rel
        data = p.read_bytes() if meta.kind == "f" else meta.target
        mode = meta.mode if meta.kind != "l" else 0
        out[rel] = (meta.kind, mode, meta.uid, meta.size, data)
    return out


def base_step(r: Path) -> None:
    (r / "etc").mkdir(parents=True)
    (r / "usr/share/doc/pkg").mkdir(parents=True)
    (r / "usr/bin").mkdir(parents=True)
    (r / "dev").mkdir()
    (r / "dev/null-ish").write_text("device contents never go into a layer")
    (r / "etc/keep").write_text("unchanged\n")
    (r / "etc/config").write_text("v1\n")
    (r / "etc/mode").write_text("chmod me\n")
    (r / "etc/old").write_text("deleted in step 2\n")
    (r / "usr/share/doc/pkg/README").write_text("doc\n")
    (r / "usr/share/doc/pkg/LICENSE").write_text("lic\n")
    (r / "usr/bin/tool").write_bytes(b"\x7fELF" + bytes(1000))
    (r / "usr/bin/su").write_bytes(b"setuid")
    os.chown(r / "usr/bin/su", 0, 42)
    os.chmod(r / "usr/bin/su", 0o4755)
    os.link(r / "usr/bin/tool", r / "usr/bin/tool-alias")
    os.symlink("tool", r / "usr/bin/link")
    (r / "etc/becomes-dir").write_text("a file first\n")


def runtime_step(r: Path) -> None:
    (r / "etc/config").write_text("v2, longer\n")  # changed content (size and mtime)
    os.chmod(r / "etc/mode", 0o600)  # changed metadata only
    (r / "etc/old").unlink()  # deleted file → whiteout
    shutil.rmtree(r / "usr/share/doc/pkg")  # deleted dir → ONE whiteout, not one per child
    (r / "opt/app").mkdir(parents=True)  # added dir with content
    (r / "opt/app/main.py").write_text("print('hi')\n")
    os.unlink(r / "usr/bin/link")
    os.symlink("tool-alias", r / "usr/bin/link")  # symlink retargeted
    (r / "etc/becomes-dir").unlink()
    (r / "etc/becomes-dir").mkdir()  # type change: file → dir
    (r / "etc/becomes-dir/inner").write_text("x\n")


def app_step(r: Path) -> None:
    (r / "opt/app/main.py").unlink()
    (r / "opt/app/main.py").write_text("print('hello')\n")


def test_layers_hold_what_each_step_did(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    steps: list[tuple[str, Callable[[Path], object]]] = [("base", base_step), ("runtime", runtime_step),
                                                           ("application", app_step)]
    layers = split_into_layers(root, steps, tmp_path / "layers")
    assert [lay.name for lay in layers] == ["base", "runtime", "application"]
    base, runtime, app = (Path(lay.path) for lay in layers)
    assert base.name == "00-base" and app.name == "02-application"

    assert "etc/keep" in files_in(base) and "usr/share/doc/pkg/README" in files_in(base)
    assert "dev" in files_in(base) and "dev/null-ish" not in files_in(base)  # /dev kept empty
    assert os.stat(base / "usr/bin/tool").st_ino == os.stat(base / "usr/bin/tool-alias").st_ino  # hard link kept
    su = os.stat(base / "usr/bin/su")
    assert (stat.S_IMODE(su.st_mode), su.st_gid) == (0o4755, 42)  # setuid survives the owner change

    got = files_in(runtime)
    assert {"etc/config", "etc/mode", "opt", "opt/app", "opt/app/main.py", "usr/bin/link",
            "etc/becomes-dir", "etc/becomes-dir/inner"} <= got
    assert "etc/keep" not in got and "usr/bin/tool" not in got  # unchanged: not carried
    whiteouts = {p for p in got if os.path.basename(p).startswith(WHITEOUT_PREFIX)}
    assert whiteouts == {"etc/.wh.old", "usr/share/doc/.wh.pkg"}
    assert (runtime / "etc/config").read_text() == "v2, longer\n"
    assert stat.S_IMODE((runtime / "etc/mode").stat().st_mode) == 0o600
    assert os.readlink(runtime / "usr/bin/link") == "tool-alias"
    assert (runtime / "etc").is_dir() and "usr/share/doc" in got  # parents of carried entries
    assert (layers[1].added, layers[1].deleted) == (4, 2)

    got = files_in(app)
    assert {"opt", "opt/app", "opt/app/main.py"} <= got
    assert not any(os.path.basename(p).startswith(WHITEOUT_PREFIX) for p in got)
    assert "etc/config" not in got

    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    for lay in (base, runtime, app):
        apply_layer(lay, rebuilt)
    expected = {k: v for k, v in content_view(root).items() if not k.startswith("dev/")}
    assert content_view(rebuilt) == expected


def test_diff_rules_directly() -> None:
    from soci_lab.datasets.layers import EntryMeta

    d = EntryMeta("d", 0o755, 0, 0, 0, 1)
    f = EntryMeta("f", 0o644, 0, 0, 3, 1)
    old = {"a": d, "a/x": f, "a/sub": d, "a/sub/y": f, "b": f, "c": d, "c/z": f}
    new = {"a": d, "a/x": f, "b": d, "c": d}  # a/sub removed, b: file→dir, c/z removed
    diff = diff_snapshots(old, new)
    assert diff.deleted == ["a/sub", "c/z"]  # a/sub/y covered by a/sub's whiteout
    assert diff.whiteouts() == ["a/.wh.sub", "c/.wh.z"]
    assert diff.changed == ["b"] and diff.added == []
    assert diff_snapshots({}, {"top": f}).carried == ["top"]
    assert diff_snapshots({"top": f}, {}).whiteouts() == [".wh.top"]


# --- random edits: the layers always rebuild the snapshots -------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from(["write", "append", "delete", "mkdir", "rmtree", "chmod", "symlink"]),
              st.sampled_from(["a", "b", "d1", "d1/c", "d1/d2", "d1/d2/e", "d3"])),
    min_size=1, max_size=8,
)


def apply_op(root: Path, op: str, rel: str) -> None:
    p = root / rel
    parent_ok = p.parent.is_dir() and not p.parent.is_symlink()
    exists = p.exists() or p.is_symlink()
    if op in ("write", "append", "symlink", "mkdir") and not parent_ok:
        return
    if op == "write" and not p.is_dir():
        if p.is_symlink():
            p.unlink()
        p.write_text(f"{rel} written\n")
    elif op == "append" and p.is_file() and not p.is_symlink():
        with open(p, "a") as f:
            f.write("more\n")
    elif op == "delete" and exists and not p.is_dir():
        p.unlink()
    elif op == "mkdir" and not exists:
        p.mkdir()
    elif op == "rmtree" and p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif op == "chmod" and p.is_file() and not p.is_symlink():
        os.chmod(p, 0o600 if stat.S_IMODE(p.stat().st_mode) != 0o600 else 0o644)
    elif op == "symlink" and not exists:
        os.symlink("target-" + rel.replace("/", "-"), p)


@settings(max_examples=40, deadline=None)
@given(st.lists(ops, min_size=1, max_size=4))
def test_layers_rebuild_every_snapshot(tmp_path_factory, steps_ops) -> None:
    work = tmp_path_factory.mktemp("prop")
    root = work / "rootfs"
    root.mkdir()
    views = []

    def make(step_ops):
        def run(r: Path) -> None:
            for op, rel in step_ops:
                apply_op(r, op, rel)
            views.append(content_view(r))
        return run

    layers = split_into_layers(root, [(f"s{i}", make(o)) for i, o in enumerate(steps_ops)], work / "layers",
                               exclude=())
    rebuilt = work / "rebuilt"
    rebuilt.mkdir()
    for lay, view in zip(layers, views, strict=True):
        apply_layer(Path(lay.path), rebuilt)
        assert content_view(rebuilt) == view
