"""A parsed zTOC pickles as it is (issue 18): a lazy mount hands each layer server the zTOC its discovery
parsed, in the spec file, instead of the server parsing the FlatBuffer a second time. What is unpickled must
be the same zTOC: the same FlatBuffer, spans and TOC, for every compression."""

from __future__ import annotations

import pickle

from hypothesis import given
from test_ztoc_properties import SETTINGS, build_or_skip
from ztoc_trees import layers

from soci_lab.ztoc import Ztoc


@SETTINGS
@given(layer=layers())
def test_parsed_ztoc_round_trips_through_pickle(layer) -> None:  # type: ignore[no-untyped-def]
    kind, blob, raw, _ = layer
    built = build_or_skip(kind, blob, raw)
    if built is None:
        return
    data = built.to_bytes()
    parsed = Ztoc.from_bytes(data)  # its checkpoints are a view into ``data``
    parsed.spans()  # and its checkpoints parsed: neither may stop the pickle
    back = pickle.loads(pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL))
    back.validate()
    assert back.to_bytes() == data
    assert back.spans() == parsed.spans()
    assert back.toc == parsed.toc
    assert [e.tar_header_offset for e in back.toc] == [e.tar_header_offset for e in parsed.toc]
    # the parsed original is left as it was
    assert parsed.to_bytes() == data
