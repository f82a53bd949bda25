"""The snapshot bookkeeping as a state machine (hypothesis) against a plain model of containerd's rules,
and the Walk filter syntax. No containerd here: these are the rules the gRPC tests and containerd rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from soci_lab.errors import InvalidInput
from soci_lab.snapshotter import SnapshotExists, SnapshotNotFound, SnapshotPrecondition, Snapshotter
from soci_lab.snapshotter.filters import matcher, parse_filter
from soci_lab.snapshotter.metastore import MetaStore, SnapshotInfo

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])


class SnapshotRules(RuleBasedStateMachine):
    """Every call either does what the model says or raises the error the model predicts."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.sn = Snapshotter(Path(self.tmp.name) / "root")
        self.model: dict[str, tuple[str, str]] = {}  # key -> (kind, parent)

    def teardown(self) -> None:
        self.sn.close()
        self.tmp.cleanup()

    def _expect_create(self, key: str, parent: str) -> type[Exception] | None:
        if key in self.model:
            return SnapshotExists
        if parent and parent not in self.model:
            return SnapshotNotFound
        if parent and self.model[parent][0] != "committed":
            return SnapshotPrecondition
        return None

    @rule(key=KEYS, parent=st.sampled_from(["", "a", "b", "c", "d", "e"]), view=st.booleans())
    def create(self, key: str, parent: str, view: bool) -> None:
        err = self._expect_create(key, parent)
        call = self.sn.view if view else self.sn.prepare
        if err is not None:
            with pytest.raises(err):
                call(key, parent)
            return
        mounts = call(key, parent)
        self.model[key] = ("view" if view else "active", parent)
        assert len(mounts) == 1
        m = mounts[0]
        depth = len(self.sn.store.chain(key))
        if depth == 0 or (view and depth == 1):
            assert m.type == "bind" and ("ro" in m.options) == (view or depth == 1)
        else:
            assert m.type == "overlay" and ("upperdir" in " ".join(m.options)) == (not view)

    @rule(name=KEYS, key=KEYS)
    def commit(self, name: str, key: str) -> None:
        if key not in self.model:
            err: type[Exception] | None = SnapshotNotFound
        elif self.model[key][0] != "active":
            err = SnapshotPrecondition
        elif name in self.model:
            err = SnapshotExists
        else:
            err = None
        if err is not None:
            with pytest.raises(err):
                self.sn.commit(name, key)
            return
        self.sn.commit(name, key)
        self.model[name] = ("committed", self.model.pop(key)[1])

    @rule(key=KEYS)
    def remove(self, key: str) -> None:
        if key not in self.model:
            with pytest.raises(SnapshotNotFound):
                self.sn.remove(key)
        elif any(parent == key for _, parent in self.model.values()):
            with pytest.raises(SnapshotPrecondition):
                self.sn.remove(key)
        else:
            self.sn.remove(key)
            del self.model[key]

    @invariant()
    def same_as_model(self) -> None:
        got = {i.key: (i.kind, i.parent) for i in self.sn.walk()}
        assert got == self.model
        # one directory per snapshot, none left over
        dirs = {p.name for p in (self.sn.root / "snapshots").iterdir()}
        assert dirs == {str(i.id) for i in self.sn.walk()}


TestSnapshotRules = SnapshotRules.TestCase
TestSnapshotRules.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def test_metadata_survives_reopening(tmp_path: Path):
    store = MetaStore(tmp_path / "m.db")
    store.create("k", "active", labels={"x": "1"})
    store.commit("n", "k", {"y": "2"}, size=10, inodes=2)
    store.close()
    again = MetaStore(tmp_path / "m.db")
    info = again.get("n")
    assert (info.kind, info.labels, info.size, info.inodes) == ("committed", {"y": "2"}, 10, 2)


def test_update_with_field_paths(tmp_path: Path):
    store = MetaStore(tmp_path / "m.db")
    store.create("k", "active", labels={"a": "1", "b": "2"})
    assert store.update("k", {"a": "9", "c": "3"}, ["labels.a", "labels.b"]).labels == {"a": "9"}
    assert store.update("k", {"z": "1"}).labels == {"z": "1"}
    with pytest.raises(InvalidInput, match="cannot update field 'parent'"):
        store.update("k", {}, ["parent"])
    with pytest.raises(InvalidInput, match="longer than 4096"):
        store.update("k", {"big": "x" * 5000})


def info(key: str, parent: str = "", kind: str = "committed", **labels: str) -> SnapshotInfo:
    return SnapshotInfo(key=key, kind=kind, parent=parent, labels=dict(labels))


def test_containerd_metadata_filter_for_a_remote_target():
    # the filter containerd 1.6's metadata snapshotter sends after a remote Prepare answered AlreadyExists
    f = 'labels."containerd.io/snapshot.ref"==sha256:abc,parent=="ns/3/sha256:def"'
    pred = parse_filter(f)
    good = SnapshotInfo(key="sha256:abc", kind="committed", parent="ns/3/sha256:def",
                        labels={"containerd.io/snapshot.ref": "sha256:abc"})
    assert pred(good)
    assert not pred(SnapshotInfo(key="x", kind="committed", parent="other", labels=good.labels))
    assert not pred(SnapshotInfo(key="x", kind="committed", parent=good.parent, labels={}))


def test_filters_any_of_all_of_and_operators():
    snaps = [info("a", kind="active", team="x"), info("b", parent="a", team="y"), info("c")]
    pick = lambda *fs: [s.key for s in snaps if matcher(list(fs))(s)]  # noqa: E731
    assert pick() == ["a", "b", "c"]
    assert pick("labels.team") == ["a", "b"]
    assert pick("kind==committed,labels.team!=x") == ["b", "c"]
    assert pick("name==a", "name==c") == ["a", "c"]
    assert pick("name~=^[bc]$") == ["b", "c"]


@pytest.mark.parametrize("bad", ["colour==red", "name==a,,", "name~=(", "==x"])
def test_bad_filters_name_what_is_wrong(bad: str):
    with pytest.raises(InvalidInput, match="snapshot filter"):
        matcher([bad])
