"""Classifier heads that turn logits into probabilities: what is explained, and the probabilities reported.

A final Softmax (bare, as Log(Softmax), or scaled to percentages) or Sigmoid is looked through to the logits;
``explain``, folder runs and ``eval``'s curves report the probabilities the model's own head computes: the
softmax of the logits, or each class's sigmoid for a multi-label head. Checked against the original model
run by onnxruntime on the same input, and completeness of plain IG on the logit.
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
from onnx_gig.batch import ExplainOptions, explain_many
from onnx_gig.metrics import OnnxForward, deletion

CLASSES = 5


def head_model(tail: str) -> onnx.ModelProto:
    """Conv -> Relu -> global average pool -> Gemm (the logits ``z``), then the head ``tail``."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32)
    wf = (rng.standard_normal((CLASSES, 8)) * 2.0).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
             h.make_node("Relu", ["c"], ["r"]), h.make_node("GlobalAveragePool", ["r"], ["p"]),
             h.make_node("Flatten", ["p"], ["f"]), h.make_node("Gemm", ["f", "wf"], ["z"], transB=1)]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(wf, "wf")]
    if tail == "logits":
        nodes.append(h.make_node("Identity", ["z"], ["out"]))
    elif tail == "sigmoid":
        nodes.append(h.make_node("Sigmoid", ["z"], ["out"]))
    elif tail == "softmax":
        nodes.append(h.make_node("Softmax", ["z"], ["out"], axis=1))
    elif tail == "percent":
        nodes += [h.make_node("Softmax", ["z"], ["sm"], axis=1), h.make_node("Mul", ["hundred", "sm"], ["out"])]
        inits.append(numpy_helper.from_array(np.array(100, np.float32), "hundred"))
    elif tail == "log_softmax":
        nodes += [h.make_node("Softmax", ["z"], ["sm"], axis=1), h.make_node("Log", ["sm"], ["out"])]
    elif tail == "negative_scale":  # not a probability head: explained as it is
        nodes += [h.make_node("Softmax", ["z"], ["sm"], axis=1), h.make_node("Mul", ["sm", "minus"], ["out"])]
        inits.append(numpy_helper.from_array(np.array(-1, np.float32), "minus"))
    graph = h.make_graph(nodes, tail, [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                         [h.make_tensor_value_info("out", TensorProto.FLOAT, ["N", CLASSES])], initializer=inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 7
    return m


def expected_probabilities(tail: str, out: np.ndarray) -> np.ndarray:
    """The class probabilities the original model's own output stands for."""
    out = out.astype(np.float64)
    if tail == "percent":
        return out / 100
    if tail == "log_softmax":
        return np.exp(out)
    if tail in ("sigmoid", "softmax"):
        return out
    e = np.exp(out - out.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heads")
    x = np.random.default_rng(1).standard_normal((3, 32, 32)).astype(np.float32)
    np.save(folder / "x.npy", x)
    made = {}
    for tail in ("logits", "sigmoid", "softmax", "percent", "log_softmax", "negative_scale"):
        onnx.save(head_model(tail), folder / f"{tail}.onnx")
        out = ort.InferenceSession(str(folder / f"{tail}.onnx"), providers=["CPUExecutionProvider"]).run(
            None, {"x": x[None]})[0][0]
        made[tail] = (onnx_gig.convert(folder / f"{tail}.onnx", folder / f"{tail}_ig.onnx", method="ig").path, out)
    return folder, made


@pytest.mark.parametrize("tail,kind,logits", [("logits", "softmax", True), ("sigmoid", "sigmoid", True),
                                              ("softmax", "softmax", True), ("percent", "softmax", True),
                                              ("log_softmax", "softmax", True),
                                              ("negative_scale", "softmax", False)])
def test_head_is_looked_through_and_probabilities_are_the_models(converted, tail, kind, logits):
    folder, made = converted
    path, out = made[tail]
    gm = onnx_gig.GigModel(path, device="cpu")
    assert gm.probability == kind
    assert gm.metadata["onnx_gig.score"] == ("z" if logits else "out")
    r = onnx_gig.explain(gm, folder / "x.npy", steps=64, draw=False)
    want = expected_probabilities(tail, out)
    if logits:  # the model's own probabilities, whatever its head
        assert r.target == int(np.argmax(want))
        for k, _, p in r.top:
            assert p == pytest.approx(want[k], rel=1e-5, abs=1e-7), (k, r.top)
        if kind == "softmax":
            assert sum(p for _, _, p in r.top) == pytest.approx(1.0, rel=1e-5)
    # plain IG explains the logit: its attributions add up to the logit's change (completeness)
    assert abs(r.convergence_delta) < 1e-3


def test_sigmoid_probabilities_are_independent(converted):
    """A multi-label head's probabilities do not sum to one and are not renormalised."""
    folder, made = converted
    path, out = made["sigmoid"]
    r = onnx_gig.explain(path, folder / "x.npy", steps=8, draw=False, device="cpu")
    assert sum(p for _, _, p in r.top) > 1.2  # the head's weights make several classes likely
    np.testing.assert_allclose(sorted(p for _, _, p in r.top), sorted(out.astype(np.float64)), rtol=1e-5, atol=1e-7)


def test_folder_rows_and_eval_curves_use_the_head(converted):
    folder, made = converted
    path, out = made["sigmoid"]
    (row,) = list(explain_many(path, [folder / "x.npy"], ExplainOptions(steps=8), device="cpu"))
    assert row.ok and row.probability == pytest.approx(float(out.max()), rel=1e-5)
    fwd = OnnxForward(path, device="cpu")
    assert fwd.probability == "sigmoid"
    x = np.load(folder / "x.npy")
    curve = deletion(fwd, x, np.abs(x).sum(0), step=256)
    assert curve.target == int(np.argmax(out))
    assert curve.y[0] == pytest.approx(float(out.max()), rel=1e-5)  # the clean image's own sigmoid probability


def test_a_binary_sigmoid_head_reports_its_one_probability(tmp_path):
    """One logit and a Sigmoid (a binary classifier): the logit is explained, its sigmoid is the probability."""
    rng = np.random.default_rng(3)
    nodes = [h.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
             h.make_node("Relu", ["c"], ["r"]), h.make_node("GlobalAveragePool", ["r"], ["p"]),
             h.make_node("Flatten", ["p"], ["f"]), h.make_node("Gemm", ["f", "wf"], ["z"], transB=1),
             h.make_node("Sigmoid", ["z"], ["out"])]
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((1, 8)).astype(np.float32), "wf")]
    graph = h.make_graph(nodes, "binary", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                         [h.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1])], initializer=inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, tmp_path / "binary.onnx")
    x = np.random.default_rng(4).standard_normal((3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (p,) = ort.InferenceSession(str(tmp_path / "binary.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[None]})[0][0]
    path = onnx_gig.convert(tmp_path / "binary.onnx", tmp_path / "binary_ig.onnx", method="ig").path
    r = onnx_gig.explain(path, tmp_path / "x.npy", steps=64, draw=False, device="cpu")
    assert r.target == 0 and [k for k, _, _ in r.top] == [0]
    assert r.top[0][2] == pytest.approx(float(p), rel=1e-5)
    assert abs(r.convergence_delta) < 1e-3  # the attributions add up to the logit's change
