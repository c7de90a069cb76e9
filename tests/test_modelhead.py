"""modelhead.read_head reads a model's metadata, inputs and external-data references from the protobuf wire
format without onnx: it must agree with onnx's own parse on real files, and refuse what onnx cannot read."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from onnx_gig.errors import ModelError
from onnx_gig.modelhead import read_head


def onnx_view(path):
    """What read_head should say, from onnx's full parse."""
    m = onnx.load(str(path), load_external_data=False)
    dims = {vi.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in vi.type.tensor_type.shape.dim] for vi in m.graph.input}
    ext = [(t.name, {e.key: e.value for e in t.external_data}) for t in m.graph.initializer
           if t.data_location == TensorProto.EXTERNAL]
    return {p.key: p.value for p in m.metadata_props}, dims, ext


def test_agrees_with_onnx_on_the_demo_model_and_its_conversion(demo_gig):
    for path in (MODELS / "mobilenet_v2.onnx", demo_gig):
        h = read_head(path)
        assert (h.metadata, h.inputs, h.external) == onnx_view(path)
        assert read_head(path, graph=False).metadata == h.metadata
    assert read_head(demo_gig).inputs["input"] == ["N", 3, 224, 224]


def test_a_file_that_cannot_be_mapped_is_read_instead(demo_gig, monkeypatch):
    """read_head maps the file (only the fields it walks are touched); where mmap fails it reads the bytes."""
    import mmap

    from onnx_gig import modelhead

    mapped = read_head(demo_gig)

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("no mmap here")

    monkeypatch.setattr(mmap, "mmap", refuse)
    read = read_head(demo_gig)
    assert calls, "read_head did not try to map the file"
    assert (read.metadata, read.inputs, read.external) == (mapped.metadata, mapped.inputs, mapped.external)


def test_the_map_is_closed_when_read_head_returns_or_refuses(demo_gig, tmp_path, monkeypatch):
    """No map outlives read_head, also when the file is cut short (a map left open locks the file on Windows)."""
    import mmap

    real, maps = mmap.mmap, []

    def spy(*args, **kwargs):
        maps.append(real(*args, **kwargs))
        return maps[-1]

    monkeypatch.setattr(mmap, "mmap", spy)
    read_head(demo_gig)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(demo_gig.read_bytes()[:5000])
    with pytest.raises(ModelError, match="cannot read .* as an ONNX model"):
        read_head(cut)
    assert len(maps) == 2 and all(m.closed for m in maps)


def test_agrees_on_external_data_unknown_and_negative_dims(tmp_path):
    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    odd = helper.make_tensor_value_info("odd", TensorProto.FLOAT, [None, -1, 7])  # unknown and negative dims
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x, odd], [y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(m, {"k": "v ü", "onnx_gig.method": "ig"})
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    h = read_head(path)
    assert (h.metadata, h.inputs, h.external) == onnx_view(path)
    assert h.external and h.external[0][0] == "w" and h.external[0][1]["location"] == "ext.onnx.data"
    assert h.inputs["odd"] == [None, -1, 7]


@pytest.mark.parametrize("cut", [1, 100, 5000, -3])
def test_truncated_or_foreign_files_are_one_line(tmp_path, cut):
    data = (MODELS / "mobilenet_v2.onnx").read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelError, match="(cannot read .* as an ONNX model|holds no ONNX graph)"):
        read_head(bad)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ModelError, match="(cannot read .* as an ONNX model|holds no ONNX graph)"):
        read_head(bad)
    with pytest.raises(ModelError, match="empty"):
        (tmp_path / "empty.onnx").write_bytes(b"")
        read_head(tmp_path / "empty.onnx")
    with pytest.raises(ModelError, match="not found"):
        read_head(tmp_path / "nope.onnx")
