"""What the exporters write, and what the loader makes of it.

EfficientNet-Lite0 (real ImageNet weights) from both PyTorch exporters gives the same attributions;
the dynamo file really is opset 20 / IR 10 with a .onnx.data file and ReduceMean pooling; shape
subgraphs are folded where shapes are static and passed through where the batch is symbolic; the
caffe2 quirks (initializers among the inputs, IR 3) and ceil_mode pools normalise as onnxruntime runs them.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper

import onnx_gig
from onnx_gig.loader import load_model, normalise
from onnx_gig.quadrature import schedule

import zoo_models as zm
from oracles import check_against_fd, f32, make_model

ort.set_default_logger_severity(3)


def run_ig(path, x, steps=8, target=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    alphas, weights = schedule(steps, "gausslegendre")
    feed = {s.get_inputs()[0].name: x, "alphas": alphas, "step_weights": weights}
    if target is not None:
        feed["target"] = np.asarray([target], np.int64)
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))


def test_efficientnet_lite0_from_both_exporters_agrees(tmp_path):
    legacy, dynamo = zm.efficientnet_file("legacy"), zm.efficientnet_file("dynamo")
    rng = np.random.default_rng(5)
    x = f32(rng.standard_normal((1, 3, 224, 224)))
    results = {}
    for kind, path in (("legacy", legacy), ("dynamo", dynamo)):
        out = tmp_path / f"{kind}_gig.onnx"
        r = onnx_gig.convert(path, out, method="gnl-ig")
        assert r.num_classes == 1000
        results[kind] = run_ig(out, x)
    a, b = results["legacy"], results["dynamo"]
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-4, atol=1e-4)
    assert a["target_class"][0] == b["target_class"][0]
    err = np.linalg.norm(a["attributions"] - b["attributions"]) / np.linalg.norm(b["attributions"])
    assert err < 1e-3, f"legacy vs dynamo attributions differ by {err:.2e} (relative L2)"
    assert np.all(np.isfinite(a["attributions"]))


def test_dynamo_file_is_what_the_issue_says():
    path = zm.efficientnet_file("dynamo")
    m = onnx.load(str(path), load_external_data=False)
    assert {o.domain or "ai.onnx": o.version for o in m.opset_import}["ai.onnx"] == 20 and m.ir_version == 10
    assert path.with_name(path.name + ".data").is_file()
    ops = {n.op_type for n in m.graph.node}
    assert "ReduceMean" in ops and "GlobalAveragePool" not in ops  # adaptive pooling as ReduceMean
    assert onnx.load(str(zm.efficientnet_file("legacy"))).opset_import[0].version == 17


def test_static_shape_subgraph_is_folded():
    """The legacy EfficientNet export computes its 'same' pads with Shape -> Gather -> ... -> Pad: all static."""
    m = load_model(zm.efficientnet_file("legacy"))
    assert {"Shape", "Gather", "Slice", "Concat"} <= {n.op_type for n in m.graph.node}
    fg = normalise(m)
    ops = [n.op_type for n in fg.model.graph.node]
    assert not {"ConstantOfShape", "Slice", "Cast"} & set(ops)
    inits = {t.name for t in fg.model.graph.initializer}
    pads = [n for n in fg.model.graph.node if n.op_type == "Pad"]
    assert len(pads) == 17 and all(n.input[1] in inits for n in pads)  # the pads are constants now
    assert ops.count("Shape") == 1  # what is left reads the symbolic batch size for the final flatten


def test_batch_shape_subgraph_passes_through(tmp_path):
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape on a symbolic batch stays, and the
    walker passes through it (integer tensors are not differentiated); the gradient is checked in test_zoo."""
    path = zm.export_torch(zm.make_export_net(), tmp_path / "net.onnx", (3, 32, 32))
    fg = normalise(load_model(path))
    ops = [n.op_type for n in fg.model.graph.node]
    assert "Shape" in ops and "Reshape" in ops
    onnx_gig.convert(path, tmp_path / "net_gig.onnx")


def test_hand_written_static_shape_chain_is_folded():
    rng = np.random.default_rng(0)
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "i"], ["c"], axis=0),  # the channel count: static
             h.make_node("Unsqueeze", ["c", "ax"], ["c1"]),
             h.make_node("Concat", ["zero", "c1", "m1"], ["target"], axis=0),
             h.make_node("Relu", ["x"], ["r"]),
             h.make_node("Reshape", ["r", "target"], ["y"])]
    inits = {"i": np.array(1, np.int64), "ax": np.array([0], np.int64), "zero": np.array([0], np.int64),
             "m1": np.array([-1], np.int64)}
    m = make_model(nodes, (1, 3, 4, 4), inits)
    fg = normalise(m, input_name="x")
    assert [n.op_type for n in fg.model.graph.node] == ["Relu", "Reshape"]
    check_against_fd(m, f32(rng.choice([-1, 1], (1, 3, 4, 4)) * rng.uniform(0.05, 1, (1, 3, 4, 4))))


def test_caffe2_quirks_normalise():
    """IR 3, initializers listed as inputs (some unused), Reshape to batch 1, Softmax on [N, 1000, 1, 1]."""
    m = zm.seeded_light("squeezenet")
    assert m.ir_version == 3 and len(m.graph.input) > 1
    fg = normalise(m)
    assert [i.name for i in fg.model.graph.input] == ["data_0"]
    assert fg.num_classes == 1000 and fg.input_shape[0] == "N"
    m = zm.seeded_light("bvlc_alexnet")
    fg = normalise(m)
    reshape = next(n for n in fg.model.graph.node if n.op_type == "Reshape")
    target = next(t for t in fg.model.graph.initializer if t.name == reshape.input[1])
    assert numpy_helper.to_array(target)[0] == 0  # batch copied, not 1


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 1, 2], ceil_mode=1)),  # one axis at the edge
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 1, 0, 1], ceil_mode=1, count_include_pad=1)),
])
def test_ceil_mode_pool_shapes_match_the_runtime(op, attrs):
    rng = np.random.default_rng(1)
    m = make_model([h.make_node(op, ["x"], ["y"], **attrs)], (1, 2, 5, 6))
    fg = normalise(m, input_name="x")
    x = f32(rng.permutation(60).reshape(1, 2, 5, 6) * 0.05)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    got = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    declared = [d.dim_value for d in fg.model.graph.output[0].type.tensor_type.shape.dim[1:]]
    assert declared == list(got.shape[1:])
    sess = ort.InferenceSession(fg.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    again = sess.run(None, {"x": x})
    np.testing.assert_array_equal(again[0], got)  # the normalised pool computes exactly the same
    check_against_fd(m, x, eps=1e-3)


def test_names_with_colons_and_slashes(tmp_path):
    path = zm.export_torch(zm.make_export_net(), tmp_path / "n.onnx", (3, 32, 32), input_name="in:0/x",
                           output_name="out/y:0")
    r = onnx_gig.convert(path, tmp_path / "n_gig.onnx", method="gnl-ig")
    assert r.input_name == "in:0/x" and r.score_name == "out/y:0"
    out = run_ig(tmp_path / "n_gig.onnx", f32(np.random.default_rng(0).standard_normal((2, 3, 32, 32))))
    assert out["attributions"].shape == (2, 3, 32, 32) and "out/y:0" in out


def test_opset_variants_keep_their_graph():
    """Models from opsets 7-21 normalise to opset 17 (or keep a newer one) and compute the same scores."""
    base = zm.opset7_model()
    x = f32(np.random.default_rng(2).standard_normal((2, 3, 16, 16)))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    want = None
    for opset in (7, 11, 13, 18, 21):
        m = zm.at_opset(base, opset)
        fg = normalise(m)
        sess = ort.InferenceSession(fg.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": x})[0]
        want = y if want is None else want
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
        assert fg.num_classes == 5 and fg.score_name == "logits"


def test_unnamed_nodes_get_names():
    m = make_model([h.make_node("Relu", ["x"], ["r"]), h.make_node("Relu", ["r"], ["y"])], (1, 2, 3))
    fg = normalise(m, input_name="x")
    names = [n.name for n in fg.model.graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_big_weights_survive_normalising():
    """Version conversion and shape inference run on a skeleton; the weights come back untouched."""
    rng = np.random.default_rng(3)
    w = f32(rng.standard_normal((16, 3, 3, 3)))
    m = make_model([h.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])], (1, 3, 8, 8), {"w": w})
    m.opset_import[0].version = 11
    fg = normalise(m, input_name="x")
    got = next(t for t in fg.model.graph.initializer if t.name == "w")
    np.testing.assert_array_equal(numpy_helper.to_array(got), w)
    assert fg.model.opset_import[0].version == 17


def test_onnx_model_with_float_data_weights():
    """Weights stored as float_data (not raw_data) are kept too."""
    w = f32(np.arange(16 * 3 * 9).reshape(16, 3, 3, 3) * 1e-3)
    t = h.make_tensor("w", TensorProto.FLOAT, w.shape, w.reshape(-1).tolist())
    m = make_model([h.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])], (1, 3, 8, 8))
    m.graph.initializer.append(t)
    fg = normalise(m, input_name="x")
    got = next(t for t in fg.model.graph.initializer if t.name == "w")
    np.testing.assert_array_equal(numpy_helper.to_array(got), w)
