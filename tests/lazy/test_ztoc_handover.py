"""A layer server serves the zTOC its spec carries parsed, without parsing the FlatBuffer again (issue 18:
a lazy mount parsed every zTOC twice, once in discovery and once in each server).

The end-to-end test gives a real forked server a spec whose FlatBuffer bytes are garbage but whose parsed
zTOC is right: it can only serve the layer from the parsed one."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile

import pytest

from soci_lab.events import EventRecorder
from soci_lab.lazy.layer import open_layer
from soci_lab.lazy.mount import LazyLayerSpec, ServeOptions, mount_layer
from soci_lab.ztoc import Ztoc
from soci_lab.ztoc import ztoc as ztoc_module

SPAN = 64 << 10


def test_from_layer_file_carries_its_parsed_ztoc(layer_files) -> None:  # type: ignore[no-untyped-def]
    path, _raw = layer_files
    spec = LazyLayerSpec.from_layer_file(path, span_size=SPAN)
    assert isinstance(spec.parsed_ztoc, Ztoc)
    assert spec.parsed_ztoc.to_bytes() == spec.ztoc
    assert "parsed_ztoc" not in repr(spec)


def test_open_layer_does_not_parse_a_parsed_ztoc(layer_files, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path, _raw = layer_files
    spec = LazyLayerSpec.from_layer_file(path, span_size=SPAN)
    parses: list[int] = []
    real = ztoc_module.ztoc_from_flatbuffer
    monkeypatch.setattr(ztoc_module, "ztoc_from_flatbuffer", lambda data: parses.append(len(data)) or real(data))
    layer = open_layer(spec, ServeOptions(background=False), EventRecorder(strategy="lazy"))
    assert layer.ztoc is spec.parsed_ztoc and parses == []
    # without a parsed one, the bytes are parsed (once)
    layer = open_layer(dataclasses.replace(spec, parsed_ztoc=None), ServeOptions(), EventRecorder(strategy="lazy"))
    assert len(parses) == 1 and layer.ztoc.to_bytes() == spec.ztoc


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse")
def test_forked_server_serves_the_handed_over_ztoc(layer_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, raw = layer_files
    spec = LazyLayerSpec.from_layer_file(path, span_size=SPAN)
    spec = dataclasses.replace(spec, ztoc=b"not a zTOC: parsing this would fail the mount")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        want = tf.extractfile("etc/os-release").read()  # type: ignore[union-attr]
    with mount_layer(spec, mnt, ServeOptions(background=False)):
        assert (mnt / "etc/os-release").read_bytes() == want
