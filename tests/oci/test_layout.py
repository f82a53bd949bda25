import json
import subprocess
import threading

import pytest

from soci_lab.errors import ContentNotFound, DigestMismatch, InvalidLayout, SizeMismatch
from soci_lab.oci import Descriptor, Digest, Manifest, OCILayout
from soci_lab.oci import mediatypes as mt


def test_layout_files_are_what_the_spec_says(tmp_path):
    lay = OCILayout(tmp_path / "l")
    assert json.loads((tmp_path / "l/oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((tmp_path / "l/index.json").read_text())["manifests"] == []
    d = lay.write_blob(b"hello")
    assert (tmp_path / "l/blobs/sha256" / d.hex).read_bytes() == b"hello"


def test_wrong_bytes_never_become_visible(tmp_path):
    lay = OCILayout(tmp_path)
    d = Digest.from_bytes(b"good")
    with pytest.raises(DigestMismatch):
        lay.write_blob(b"evil", d)
    assert not lay.has(d)
    with pytest.raises(SizeMismatch), lay.writer(d, 4) as w:
        w.write(b"goo")
    assert not lay.has(d)
    assert list((tmp_path / ".ingest").iterdir()) == []  # nothing half-written left behind


def test_a_writer_that_raises_leaves_nothing(tmp_path):
    lay = OCILayout(tmp_path)
    d = Digest.from_bytes(b"abc")
    with pytest.raises(RuntimeError), lay.writer(d) as w:
        w.write(b"ab")
        raise RuntimeError("network went away")
    assert not lay.has(d) and list((tmp_path / ".ingest").iterdir()) == []


def test_two_writers_of_the_same_blob(tmp_path):
    lay = OCILayout(tmp_path)
    data = bytes(range(256)) * 4096
    d = Digest.from_bytes(data)
    errors = []

    def write():
        try:
            with lay.writer(d, len(data)) as w:
                for i in range(0, len(data), 4096):
                    w.write(data[i : i + 4096])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert lay.read_blob(d) == data


def test_tags_and_concurrent_index_updates(tmp_path):
    lay = OCILayout(tmp_path)
    cfg = lay.write_blob(b"{}")
    descs = []
    for i in range(20):
        layer = lay.write_blob(f"layer{i}".encode())
        m = Manifest(mt.OCI_MANIFEST, Descriptor(mt.OCI_CONFIG, cfg, 2),
                     (Descriptor(mt.OCI_LAYER_TAR, layer, len(f"layer{i}")),))
        descs.append(m)
    threads = [threading.Thread(target=lay.put_document, args=(m, f"t{i}")) for i, m in enumerate(descs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(lay.tags()) == sorted(f"t{i}" for i in range(20))
    assert lay.resolve("t3").digest == descs[3].digest
    lay.put_document(descs[5], "t3")  # re-tag replaces
    assert lay.resolve("t3").digest == descs[5].digest and lay.tags().count("t3") == 1
    with pytest.raises(ContentNotFound, match="nope"):
        lay.resolve("nope")


def test_corrupted_store_is_detected(tmp_path):
    lay = OCILayout(tmp_path)
    d = lay.write_blob(b"content")
    lay.blob_path(d).write_bytes(b"tampered")
    with pytest.raises(DigestMismatch, match="corrupted"):
        lay.read_blob(d)


def test_not_a_layout(tmp_path):
    with pytest.raises(InvalidLayout, match="not an OCI image layout"):
        OCILayout(tmp_path, create=False)
    (tmp_path / "oci-layout").write_text("garbage")
    with pytest.raises(InvalidLayout):
        OCILayout(tmp_path)


def test_umoci_reads_our_layout(tmp_path):
    """A tool nobody here wrote accepts the layout soci_lab writes (and we read what it writes)."""
    lay_dir = tmp_path / "lay"
    subprocess.run(["umoci", "init", "--layout", str(lay_dir)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{lay_dir}:base"], check=True)
    lay = OCILayout(lay_dir, create=False)
    desc = lay.resolve("base")
    manifest = Manifest.from_bytes(lay.read_blob(desc.digest), desc.media_type)
    lay.put_document(manifest, "copy")
    out = subprocess.run(["umoci", "ls", "--layout", str(lay_dir)], check=True, capture_output=True, text=True)
    assert sorted(out.stdout.split()) == ["base", "copy"]
