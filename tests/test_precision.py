"""Float16 and QDQ-quantized classifiers convert and are explained as their float32 graphs.

The oracle is float64 torch autograd of the same PyTorch module with the weights the model really holds:
rounded to float16 for the float16 model, dequantized (by onnxruntime, from the QDQ file) for the quantized
one. Every method is checked; the converted gradient is read as in test_zoo (one step at alpha 1).
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper as h
from onnx import numpy_helper

import onnx_gig
from onnx_gig.loader import normalise

from torch_nets import GuidedReLU, GuidedReLU6, ScatterGuidedMaxPool

ort.set_default_logger_severity(3)
ONE = np.ones(1, np.float32)
SHAPE = (1, 3, 16, 16)


class SmallNet(nn.Module):
    """Conv-ReLU, max-pool, a grouped conv with a residual, a strided conv with ReLU6, global pooling, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.c3, self.fc = nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.Linear(12, 5)
        self.guided = False

    def forward(self, x):
        relu = GuidedReLU.apply if self.guided else F.relu
        relu6 = GuidedReLU6.apply if self.guided else F.relu6
        y = relu(self.c1(x))
        y = ScatterGuidedMaxPool.apply(y, 2, 2, 0, False) if self.guided else F.max_pool2d(y, 2)
        y = relu(self.c2(y)) + y
        y = relu6(self.c3(y))
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    torch.manual_seed(0)
    net = SmallNet().eval()
    path = tmp_path_factory.mktemp("precision") / "f32.onnx"
    torch.onnx.export(net, torch.randn(*SHAPE), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return net, path


def image(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def converted_gradients(path, tmp_path, target: int = 3) -> dict:
    x, grads = image(), {}
    for method in ("ig", "gnl-ig", "gnl-ig-all"):
        out = tmp_path / f"{path.stem}_{method}.onnx"
        r = onnx_gig.convert(path, out, method=method)
        s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [i.type for i in s.get_inputs()][0] == "tensor(float)"  # the attribution model takes float32
        grads[method] = s.run(["attributions"], {r.input_name: x, "baseline": x - 1, "alphas": ONE,
                                                 "step_weights": ONE, "target": np.array([target])})[0]
    return grads


def reference(net: SmallNet, weights: dict, guided: bool, target: int = 3) -> np.ndarray:
    ref = copy.deepcopy(net).double()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(weights[name], np.float64)))
    ref.guided = guided
    xt = torch.from_numpy(image().astype(np.float64)).requires_grad_()
    (g,) = torch.autograd.grad(ref(xt)[0, target], xt)
    return g.numpy()


def check(grads: dict, net: SmallNet, weights: dict) -> None:
    for method, g in grads.items():
        want = reference(net, weights, guided=method != "ig")  # ReLU, ReLU6, max-pool: all sets guide the same
        err = np.linalg.norm(g - want) / np.linalg.norm(want)
        assert err < 1e-4, f"{method}: relative error {err:.2e} against float64 autograd"
    assert not np.allclose(grads["ig"], grads["gnl-ig"])


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_float16_model(float_model, tmp_path, keep_io_types):
    """A float16 model (float16 input, or float32 input cast inside) is explained in float32 with its float16
    weights; the converted model takes float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    net, path = float_model
    half = convert_float_to_float16(onnx.load(str(path)), keep_io_types=keep_io_types)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    half_path = tmp_path / "f16.onnx"
    onnx.save(half, str(half_path))
    weights = {n: p.detach().numpy().astype(np.float16).astype(np.float32) for n, p in net.named_parameters()}
    check(converted_gradients(half_path, tmp_path), net, weights)


def test_float16_backward_on_request(float_model, tmp_path):
    """fp16=True builds the attribution graph in float16 (its inputs and outputs stay float32)."""
    net, path = float_model
    out = onnx_gig.convert(path, tmp_path / "h.onnx", fp16=True).path
    m = onnx.load(str(out))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    plain = onnx.load(str(onnx_gig.convert(path, tmp_path / "f.onnx").path))
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in plain.graph.initializer)


@pytest.fixture(scope="module")
def qdq_model(float_model, tmp_path_factory):
    """onnxruntime's quantize_static (QDQ, uint8 activations, int8 weights) calibrated on random images that
    include the test image, so the calibrated ranges hold every activation the test produces."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    _, path = float_model
    rng = np.random.default_rng(0)
    batches = [image()] + [(rng.standard_normal(SHAPE) * 1.5).astype(np.float32) for _ in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"x": b} for b in batches])

        def get_next(self):
            return next(self.data, None)

    out = tmp_path_factory.mktemp("qdq") / "qdq.onnx"
    quantize_static(str(path), str(out), Reader())
    return out


def dequantized_weights(path) -> dict:
    """The float weights the QDQ file holds, dequantized by onnxruntime (every DequantizeLinear of an
    initializer), keyed by the torch parameter name the exporter gave them."""
    m = onnx.load(str(path))
    inits = {t.name for t in m.graph.initializer}
    dqs = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    g = h.make_graph(dqs, "dq", [], [h.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None) for n in dqs],
                     initializer=list(m.graph.initializer))
    sm = h.make_model(g, opset_imports=list(m.opset_import))
    sm.ir_version = m.ir_version
    values = ort.InferenceSession(sm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    return {n.input[0].replace("_quantized", ""): v for n, v in zip(dqs, values)}


def test_qdq_model(float_model, qdq_model, tmp_path):
    net, _ = float_model
    m = onnx.load(str(qdq_model))
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "Relu" not in ops and "Clip" not in ops  # the quantizer folded them
    weights = dequantized_weights(qdq_model)
    assert set(weights) >= {n for n, _ in net.named_parameters()}
    check(converted_gradients(qdq_model, tmp_path), net, weights)

    # the normalised graph: no Q/DQ left, and a Clip exactly where the model had its three ReLU/ReLU6
    norm = normalise(m).model
    kinds = [n.op_type for n in norm.graph.node]
    assert "QuantizeLinear" not in kinds and "DequantizeLinear" not in kinds
    assert kinds.count("Clip") == 3 and "Relu" not in kinds


def test_qdq_scores_stay_close_to_the_quantized_model(qdq_model, tmp_path):
    """The explained float graph is the quantized model without its activation rounding: close scores."""
    out = onnx_gig.convert(qdq_model, tmp_path / "q.onnx", method="ig").path
    x = image()
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    scores = s.run(["scores"], {"x": x, "baseline": x, "alphas": ONE, "step_weights": ONE,
                                "target": np.array([0])})[0]
    q = ort.InferenceSession(str(qdq_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.max(np.abs(scores - q)) < 0.05 * np.max(np.abs(q)) + 1e-3
    assert not np.array_equal(scores, q)  # rounding is really gone


def test_activation_pair_after_a_nonnegative_tensor_is_identity():
    """Q/DQ with a range starting at 0 after a Relu (kept) is an Identity; after a Conv it is the ReLU."""
    from onnx_gig.precision import dequantize_qdq

    s, z = numpy_helper.from_array(np.float32(0.02), "s"), numpy_helper.from_array(np.uint8(0), "z")
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             h.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]), h.make_node("Relu", ["cd"], ["r"]),
             h.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
             h.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"])]
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 2, 2])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=[s, z, w])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    assert dequantize_qdq(m) == 2
    by_out = {n.output[0]: n.op_type for n in m.graph.node}
    assert by_out["cd"] == "Clip" and by_out["y"] == "Identity"


@pytest.mark.parametrize("mode,unit", [("nearest", "Identity"), ("linear", "Identity"), ("cubic", "Clip")])
def test_qdq_range_from_zero_after_an_upsampled_relu(mode, unit):
    """Relu -> Resize -> Q/DQ with a range starting at 0: nearest and linear resizing keep the ReLU's output
    non-negative, so the pair is the identity; a cubic one overshoots below 0 at edges, so the range really
    clips and the pair stays a Clip (it was taken for an identity)."""
    from onnx_gig.precision import dequantize_qdq

    nodes = [h.make_node("Relu", ["x"], ["r"]),
             h.make_node("Resize", ["r", "", "scales"], ["up"], mode=mode),
             h.make_node("QuantizeLinear", ["up", "s", "z"], ["q"]),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    inits = [numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.asarray(0.02, np.float32), "s"),
             numpy_helper.from_array(np.asarray(0, np.uint8), "z")]
    graph = h.make_graph(nodes, "qdq", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializer=inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1:3, 1:3] = 4.0  # a bright square on black: cubic upsampling dips below 0 around it
    head = h.make_model(h.make_graph(nodes[:2], "up", graph.input, [
        h.make_tensor_value_info("up", onnx.TensorProto.FLOAT, None)], initializer=inits[:1]),
        opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    up = ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (up.min() < 0) == (mode == "cubic")
    assert dequantize_qdq(m) == 1
    assert next(n for n in m.graph.node if n.name == "dq").op_type == unit
