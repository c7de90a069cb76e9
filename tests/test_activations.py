"""The activation families and the other new op rules.

Plain rules (``ig``) against central finite differences of onnxruntime forward passes; guided rules
(``gnl-ig-all``) against relu(g) * relu(f'(x)) with f' from torch autograd of torch's own functions;
the x * Sigmoid(x) (SiLU) and x * HardSigmoid(x) (HardSwish) patterns as one unit; a squeeze-excitation
gate against torch autograd with a guided sigmoid; max-type selections routing relu(g) to the arg-max.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper

from onnx_gig.autodiff import get_rule_set, pooling
from onnx_gig.autodiff.activations import DERIVATIVES
from onnx_gig.autodiff.rulesets import PAPER_SET

from oracles import X, Y, assert_close, away_from, away_from_zero, check_against_fd, f32, vjp

ALL, GUIDED, PLAIN = "gnl-ig-all", "gnl-ig", "ig"
XS = (2, 3, 4, 5)


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def model_at(opset: int, nodes, x_shape=XS, inits=None):
    """Like oracles.make_model, at another opset (Mish needs 18, Gelu 20)."""
    graph = h.make_graph(list(nodes), "t", [h.make_tensor_value_info(X, TensorProto.FLOAT, ["N"] + list(x_shape[1:]))],
                         [h.make_tensor_value_info(Y, TensorProto.FLOAT, None)],
                         initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 17 else 10
    return m


def one(op, opset=17, inputs=(X,), inits=None, x_shape=XS, **attrs):
    return model_at(opset, [h.make_node(op, list(inputs), [Y], name=f"the_{op.lower()}", **attrs)], x_shape, inits)


# -- every element-wise unit: (op, attrs, opset, extra inputs, torch function, input sampler) ---------------
def _prelu_slope():
    return f32(np.array([0.25, -0.5, 1.5]).reshape(3, 1, 1))


UNITS = {
    "LeakyRelu": (dict(alpha=0.1), 17, {}, lambda t: F.leaky_relu(t, 0.1), "kink0"),
    "PRelu": ({}, 17, {"slope": _prelu_slope()}, lambda t: F.prelu(t, torch.tensor([0.25, -0.5, 1.5], dtype=t.dtype)),
              "kink0"),
    "ThresholdedRelu": (dict(alpha=0.5), 17, {}, lambda t: t * (t > 0.5), "kink_half"),
    "HardSigmoid": (dict(alpha=0.2, beta=0.5), 17, {}, lambda t: (0.2 * t + 0.5).clamp(0, 1), "hardsig"),
    "HardSigmoid_falling": (dict(alpha=-0.2, beta=0.5), 17, {}, lambda t: (0.5 - 0.2 * t).clamp(0, 1), "hardsig"),
    "HardSwish": ({}, 17, {}, F.hardswish, "hardswish"),
    "Sigmoid": ({}, 17, {}, torch.sigmoid, "smooth"),
    "Tanh": ({}, 17, {}, torch.tanh, "smooth"),
    "Elu": (dict(alpha=0.7), 17, {}, lambda t: F.elu(t, 0.7), "kink0"),
    "Selu": ({}, 17, {}, F.selu, "kink0"),
    "Celu": (dict(alpha=1.3), 17, {}, lambda t: F.celu(t, 1.3), "kink0"),
    "Softplus": ({}, 17, {}, F.softplus, "smooth"),
    "Softsign": ({}, 17, {}, F.softsign, "kink0"),
    "Mish": ({}, 18, {}, F.mish, "smooth"),
    "Gelu": ({}, 20, {}, F.gelu, "smooth"),
    "Gelu_tanh": (dict(approximate="tanh"), 20, {}, lambda t: F.gelu(t, approximate="tanh"), "smooth"),
    "Erf": ({}, 17, {}, torch.erf, "smooth"),
}


def sample(rng, kind, shape=XS):
    if kind == "kink0":
        return away_from_zero(rng, shape, 0.05, 2.5)
    if kind == "kink_half":
        return away_from(rng, shape, -1.5, 2.5, [0.5])
    if kind == "hardsig":
        return away_from(rng, shape, -4.5, 4.5, [-2.5, 2.5])
    if kind == "hardswish":
        return away_from(rng, shape, -5.0, 5.0, [-3.0, 3.0])
    return f32(rng.standard_normal(shape) * 2.0)


def unit_model(name):
    attrs, opset, extra, _, _ = UNITS[name]
    op = name.split("_")[0]
    return one(op, opset, [X] + list(extra), extra, **attrs)


def torch_derivative(fn, x):
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    (d,) = torch.autograd.grad(fn(xt).sum(), xt)
    return d.numpy()


def mixed(rng, shape):
    g = f32(rng.standard_normal(shape))
    g[g == 0] = 0.5
    return g


@pytest.mark.parametrize("name", sorted(UNITS))
def test_plain_unit_against_finite_differences(name):
    rng = rng_for("plain", name)
    x = sample(rng, UNITS[name][4])
    check_against_fd(unit_model(name), x, eps=2e-3, rtol=2e-3, atol_rel=2e-3)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_guided_unit_is_relu_g_times_relu_slope(name):
    rng = rng_for("guided", name)
    _, _, _, fn, kind = UNITS[name]
    x, m = sample(rng, kind), unit_model(name)
    g = mixed(rng, XS)
    d = torch_derivative(fn, x)
    got, y = vjp(m, x, g, ALL)
    np.testing.assert_allclose(y, fn(torch.from_numpy(x.astype(np.float64))).numpy(), rtol=1e-5, atol=1e-5)
    assert_close(got, np.maximum(g, 0) * np.maximum(d, 0), rtol=1e-4, atol_rel=1e-5, what=f"guided {name}")
    assert np.all(got >= 0)
    plain, _ = vjp(m, x, g, PLAIN)
    assert_close(plain, g * d, rtol=1e-4, atol_rel=1e-5, what=f"plain {name}")
    paper, _ = vjp(m, x, g, GUIDED)  # the paper's set leaves every unit but ReLU/ReLU6 alone
    np.testing.assert_array_equal(paper, plain)
    assert not np.allclose(got, plain)


def test_rule_sets():
    plain, paper, every = get_rule_set(PLAIN), get_rule_set(GUIDED), get_rule_set(ALL)
    assert paper.overridden() == sorted(PAPER_SET)
    for op in list(DERIVATIVES) + ["GlobalMaxPool", "ReduceMax", "ReduceMin", "Max", "Min", "Mul", "TopK"]:
        assert every.lookup(op) is not plain.lookup(op), op
    for op in PAPER_SET:  # the paper's rules are shared, not re-implemented; gnl-ig-all guides every ReduceMax
        assert every.lookup(op) is (pooling.guided_reduce_max if op == "ReduceMax" else paper.lookup(op)), op
    for op in ("Conv", "Gemm", "BatchNormalization", "LRN", "Softmax", "AveragePool", "Add", "Exp", "Sqrt"):
        assert every.lookup(op) is plain.lookup(op), op
    assert every.ops() == plain.ops() == paper.ops()
    assert "gnl-ig-all" in get_rule_set(ALL).name


# -- x * s(x): SiLU / Swish and HardSwish written as a product ----------------------------------------------------
@pytest.mark.parametrize("gate,fn", [("Sigmoid", F.silu),
                                     ("HardSigmoid", lambda t: t * (t / 6 + 0.5).clamp(0, 1))])
@pytest.mark.parametrize("order", ["x_first", "gate_first"])
def test_self_gated_unit(gate, fn, order):
    rng = rng_for("selfgate", gate, order)
    attrs = dict(alpha=1 / 6, beta=0.5) if gate == "HardSigmoid" else {}
    mul_in = ["x", "s"] if order == "x_first" else ["s", "x"]
    nodes = [h.make_node(gate, [X], ["s"], **attrs), h.make_node("Mul", mul_in, [Y], name="the_mul")]
    m = model_at(17, nodes)
    x = away_from(rng, XS, -5, 5, [-3.0, 3.0]) if gate == "HardSigmoid" else f32(rng.standard_normal(XS) * 3)
    check_against_fd(m, x, eps=2e-3, rtol=2e-3, atol_rel=2e-3)
    g = mixed(rng, XS)
    d = torch_derivative(fn, x)
    got, _ = vjp(m, x, g, ALL)
    assert_close(got, np.maximum(g, 0) * np.maximum(d, 0), rtol=1e-4, atol_rel=1e-5, what=f"guided x*{gate}(x)")
    assert np.any(d < 0)  # the unit is not monotone: its decreasing part is blocked


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_as_torch_exports_it_at_opset_17(tmp_path, approximate):
    """torch.onnx.export at opset 17 writes GELU as x * s(x) (Erf, or Tanh of a cubic): gnl-ig-all guides it as
    one unit, exactly like the Gelu op (opset 20); the paper's set keeps its true gradient."""
    class Gelu(torch.nn.Module):
        def forward(self, t):
            return F.gelu(t, approximate=approximate)

    path = tmp_path / "gelu.onnx"
    torch.onnx.export(Gelu(), (torch.zeros(1, *XS[1:]),), str(path), dynamo=False, opset_version=17,
                      input_names=[X], output_names=[Y], dynamic_axes={X: {0: "N"}})
    m = onnx.load(str(path))
    assert "Gelu" not in {n.op_type for n in m.graph.node} and "Mul" in {n.op_type for n in m.graph.node}
    rng = rng_for("gelu17", approximate)
    x, g = f32(rng.standard_normal(XS) * 2), mixed(rng, XS)
    d = torch_derivative(lambda t: F.gelu(t, approximate=approximate), x)
    got, _ = vjp(m, x, g, ALL)
    assert_close(got, np.maximum(g, 0) * np.maximum(d, 0), rtol=1e-4, atol_rel=1e-5, what="guided decomposed GELU")
    for method in (PLAIN, GUIDED):
        plain, _ = vjp(m, x, g, method)
        assert_close(plain, g * d, rtol=1e-4, atol_rel=1e-5, what=f"{method} decomposed GELU")
    op, _ = vjp(unit_model("Gelu" if approximate == "none" else "Gelu_tanh"), x, g, ALL)
    assert_close(got, op, rtol=1e-4, atol_rel=1e-5, what="decomposed vs Gelu op")


def test_topk_values_guided():
    """gnl-ig-all routes relu(g) of TopK's values to the selected elements; the plain rule routes g."""
    rng = rng_for("topk_guided")
    shape = (2, 3, 7)
    x = f32(rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 0.2)
    m = model_at(17, [h.make_node("TopK", [X, "k"], [Y, "i"], axis=-1)], shape, {"k": np.array([3], np.int64)})
    g = mixed(rng, (2, 3, 3))
    idx = np.argsort(-x, axis=-1)[..., :3]
    for method, gg in ((PLAIN, g), (ALL, np.maximum(g, 0))):
        want = np.zeros(shape, np.float32)
        np.put_along_axis(want, idx, gg, -1)
        got, _ = vjp(m, x, g, method)
        assert_close(got, want, rtol=1e-6, atol_rel=1e-6, what=f"TopK {method}")


class GuidedSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        y = torch.sigmoid(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g.clamp(min=0) * y * (1 - y)


def test_squeeze_excitation_gate():
    """y = x * Sigmoid(W GAP(x) + b): the Mul keeps the product rule, the gate's Sigmoid is guided."""
    rng = rng_for("se")
    c = 4
    w, b = f32(rng.standard_normal((c, c, 1, 1))), f32(rng.standard_normal(c))
    nodes = [h.make_node("GlobalAveragePool", [X], ["p"]),
             h.make_node("Conv", ["p", "w", "b"], ["z"], kernel_shape=[1, 1]),
             h.make_node("Sigmoid", ["z"], ["s"]),
             h.make_node("Mul", [X, "s"], [Y])]
    m = model_at(17, nodes, (2, c, 3, 3), {"w": w, "b": b})
    x = f32(rng.standard_normal((2, c, 3, 3)) * 2)
    g = mixed(rng, (2, c, 3, 3))
    results = {}
    for method, sig in ((PLAIN, torch.sigmoid), (ALL, GuidedSigmoid.apply)):
        xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        z = F.conv2d(xt.mean((2, 3), keepdim=True), torch.from_numpy(w).double(), torch.from_numpy(b).double())
        y = xt * sig(z)
        (want,) = torch.autograd.grad(y, xt, torch.from_numpy(g.astype(np.float64)))
        got, _ = vjp(m, x, g, method)
        assert_close(got, want.numpy(), rtol=1e-4, atol_rel=1e-5, what=f"SE gate {method}")
        results[method] = got
    assert not np.allclose(results[PLAIN], results[ALL])


# -- max-type selections -------------------------------------------------------------------------------------
def test_global_max_pool():
    rng = rng_for("gmp")
    shape = (2, 3, 4, 5)
    x = f32(rng.permutation(np.prod(shape)).reshape(shape) * 0.01)
    m = one("GlobalMaxPool", x_shape=shape)
    check_against_fd(m, x, eps=1e-3)
    g = mixed(rng, (2, 3, 1, 1))
    got, _ = vjp(m, x, g, ALL)
    flat = x.reshape(2, 3, -1)
    want = np.zeros_like(flat)
    np.put_along_axis(want, flat.argmax(-1)[..., None], np.maximum(g.reshape(2, 3, 1), 0), -1)
    assert_close(got, want.reshape(shape), rtol=1e-6, atol_rel=1e-6)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("opset", [17, 18])
def test_reduce_max_min(op, keepdims, opset):
    rng = rng_for("rmax", op, keepdims, opset)
    x = f32(rng.permutation(np.prod(XS)).reshape(XS) * 0.01 - 0.5)
    if opset == 17:
        m = one(op, 17, keepdims=keepdims, axes=[2, 3])
    else:
        m = one(op, 18, [X, "axes"], {"axes": np.array([-1, 2], np.int64)}, keepdims=keepdims)
    check_against_fd(m, x, eps=1e-3)


def test_reduce_max_ties_share():
    x = f32(np.array([[1.0, 3.0, 3.0, 0.5]]))
    m = one("ReduceMax", 17, x_shape=(1, 4), axes=[1], keepdims=0)
    got, _ = vjp(m, x, f32([2.0]), PLAIN)
    np.testing.assert_allclose(got, [[0, 1, 1, 0]])
    got, _ = vjp(m, x, f32([-2.0]), ALL)
    np.testing.assert_allclose(got, [[0, 0, 0, 0]])


def _argmax_route(x: np.ndarray, g: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """g routed to the max over ``axes`` (keepdims shapes; distinct values, so no ties)."""
    return np.where(x == x.max(axis=axes, keepdims=True), g, 0.0)


@pytest.mark.parametrize("spelling", ["GlobalMaxPool", "ReduceMax_nchw", "ReduceMax_nhwc", "ReduceMax_opset18",
                                      "ReduceMax_flat"])
def test_gnl_ig_guides_max_pooling_in_every_spelling(spelling):
    """A global max-pool is guided by the paper's set however it was exported (torch amax: ReduceMax over H, W;
    Keras/TF: GlobalMaxPool or ReduceMax over the NHWC spatial axes), as MaxPool over the whole map is."""
    rng = rng_for("gmp-spelling", spelling)
    x = f32(rng.permutation(np.prod(XS)).reshape(XS) * 0.01 - 0.5)
    axes = (1, 2) if spelling.endswith("nhwc") else (2, 3)
    if spelling == "GlobalMaxPool":
        m = one("GlobalMaxPool")
    elif spelling == "ReduceMax_opset18":
        m = one("ReduceMax", 18, [X, "axes"], {"axes": np.array([-2, -1], np.int64)}, keepdims=1)
    else:  # "flat": keepdims=0, as torch's amax((2, 3)) writes it
        m = one("ReduceMax", 17, keepdims=int(not spelling.endswith("flat")), axes=list(axes))
    g = mixed(rng, tuple(1 if i in axes else d for i, d in enumerate(XS)))
    assert (g < 0).any() and (g > 0).any()
    if spelling.endswith("flat"):
        guided, _ = vjp(m, x, g.reshape(XS[0], XS[1]), GUIDED)
        np.testing.assert_allclose(guided, _argmax_route(x, np.maximum(g, 0), axes), rtol=1e-6, atol=1e-7)
        return
    guided, _ = vjp(m, x, g, GUIDED)
    np.testing.assert_allclose(guided, _argmax_route(x, np.maximum(g, 0), axes), rtol=1e-6, atol=1e-7)
    plain, _ = vjp(m, x, g, PLAIN)
    np.testing.assert_allclose(plain, _argmax_route(x, g, axes), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("axes,shape", [([3], XS), ([1], XS), ([1, 2, 3], XS), ([1], (2, 6))])
def test_gnl_ig_leaves_other_max_reductions_plain(axes, shape):
    """A ReduceMax that is not a spatial max-pool (over channels, one spatial axis, everything, or the last axis
    of a 2-D tensor, as a numerically stable softmax writes it) keeps its true gradient in the paper's set;
    gnl-ig-all guides it."""
    rng = rng_for("rmax-plain", tuple(axes), shape)
    x = f32(rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 0.5)
    m = one("ReduceMax", 17, x_shape=shape, keepdims=1, axes=axes)
    g = mixed(rng, tuple(1 if i in axes else d for i, d in enumerate(shape)))
    plain, _ = vjp(m, x, g, PLAIN)
    np.testing.assert_array_equal(vjp(m, x, g, GUIDED)[0], plain)
    np.testing.assert_allclose(vjp(m, x, g, ALL)[0], _argmax_route(x, np.maximum(g, 0), tuple(axes)),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["relu_as_max", "relu6_as_min_max", "two_tensors", "three_inputs"])
def test_max_min_elementwise(case):
    rng = rng_for("maxmin", case)
    x = away_from(rng, XS, -2, 8, [0.0, 6.0])
    g = mixed(rng, XS)
    if case == "relu_as_max":
        m = model_at(17, [h.make_node("Max", [X, "zero"], [Y])], XS, {"zero": f32(0)})
        mask = x > 0
    elif case == "relu6_as_min_max":
        m = model_at(17, [h.make_node("Max", [X, "zero"], ["r"]), h.make_node("Min", ["r", "six"], [Y])], XS,
                     {"zero": f32(0), "six": f32(6)})
        mask = (x > 0) & (x < 6)
    elif case == "two_tensors":  # max(x, -x) = |x|
        m = model_at(17, [h.make_node("Neg", [X], ["n"]), h.make_node("Max", [X, "n"], [Y])])
        mask = np.sign(x)
    else:  # max(x, 2x, c) with a per-channel constant
        c = f32(rng.uniform(-1, 3, (3, 1, 1)))
        m = model_at(17, [h.make_node("Mul", [X, "two"], ["d"]), h.make_node("Max", [X, "d", "c"], [Y])], XS,
                     {"two": f32(2), "c": c})
        mask = np.where((2 * x >= x) & (2 * x >= c), 2.0, np.where(x >= c, 1.0, 0.0))
    check_against_fd(m, x, eps=1e-3)
    plain, _ = vjp(m, x, g, PLAIN)
    assert_close(plain, g * mask, rtol=1e-6, atol_rel=1e-6)
    got, _ = vjp(m, x, g, ALL)
    if case in ("relu_as_max", "relu6_as_min_max"):
        assert_close(got, np.maximum(g, 0) * mask, rtol=1e-6, atol_rel=1e-6, what="Max/Min as guided ReLU/ReLU6")


# -- LRN, slicing, gathering, resizing, normalisation, math ------------------------------------------------------------
@pytest.mark.parametrize("size", [3, 5])
def test_lrn(size):
    rng = rng_for("lrn", size)
    shape = (2, 7, 3, 3)
    m = one("LRN", x_shape=shape, size=size, alpha=0.3, beta=0.75, bias=1.5)
    check_against_fd(m, f32(rng.standard_normal(shape) * 2), eps=2e-3, rtol=2e-3, atol_rel=2e-3)


@pytest.mark.parametrize("opset,unused", [(17, False), (17, True), (18, False)])
def test_split(opset, unused):
    rng = rng_for("split", opset, unused)
    if opset == 17:
        split = h.make_node("Split", [X, "sizes"], ["a", "b", "c"], axis=1)
        inits = {"sizes": np.array([1, 3, 2], np.int64)}
    else:
        split = h.make_node("Split", [X], ["a", "b", "c"], axis=1, num_outputs=3)
        inits = {}
    tail = [h.make_node("Relu", ["a"], ["ra"]), h.make_node("Mul", ["c", "k"], ["mc"])]
    outs = ["ra", "mc"] if unused else ["ra", "b", "mc"]
    tail.append(h.make_node("Concat", outs, [Y], axis=1))
    inits["k"] = f32(-2.0)
    m = model_at(opset, [split] + tail, (2, 6, 3, 3), inits)
    check_against_fd(m, away_from_zero(rng, (2, 6, 3, 3)))


SLICES = [  # starts, ends, axes, steps
    ([1], [3], [1], [1]),
    ([0, 1], [-1, 100], [2, 3], [1, 2]),
    ([-1], [-100], [3], [-1]),
    ([4, 0], [0, 3], [3, 1], [-2, 2]),
]


@pytest.mark.parametrize("case", range(len(SLICES)))
def test_slice(case):
    rng = rng_for("slice", case)
    starts, ends, axes, steps = SLICES[case]
    inits = {"s": np.array(starts, np.int64), "e": np.array(ends, np.int64), "a": np.array(axes, np.int64),
             "t": np.array(steps, np.int64)}
    m = one("Slice", 17, [X, "s", "e", "a", "t"], inits, x_shape=(2, 3, 4, 6))
    check_against_fd(m, f32(rng.standard_normal((2, 3, 4, 6))))


@pytest.mark.parametrize("indices,axis", [(np.array(1), 1), (np.array([2, 0, 2]), 1), (np.array([[0, 3], [-1, 1]]), 3),
                                          (np.array([1, 1]), -2)])
def test_gather(indices, axis):
    rng = rng_for("gather", indices.tolist(), axis)
    m = one("Gather", 17, [X, "i"], {"i": indices.astype(np.int64)}, x_shape=(2, 3, 4, 5), axis=axis)
    check_against_fd(m, f32(rng.standard_normal((2, 3, 4, 5))))


RESIZES = [
    ("nearest_x2_asym_floor", (2, 2, 3, 4), [1, 1, 2, 2],
     dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
    ("nearest_x3_half_pixel", (1, 2, 3, 3), [1, 1, 3, 3], dict(mode="nearest")),
    ("nearest_1.5", (1, 2, 4, 4), [1, 1, 1.5, 1.5], dict(mode="nearest", coordinate_transformation_mode="asymmetric")),
    # scales 0.6 and 0.45 put source coordinates on integers in float32 (onnxruntime) but just below in float64
    ("nearest_floor_down_half_pixel", (1, 2, 7, 9), [1, 1, 0.6, 0.45], dict(mode="nearest", nearest_mode="floor")),
    ("nearest_floor_down_asym", (1, 2, 7, 9), [1, 1, 0.6, 0.45],
     dict(mode="nearest", nearest_mode="floor", coordinate_transformation_mode="asymmetric")),
    ("linear_half_pixel", (2, 2, 3, 4), [1, 1, 2, 2], dict(mode="linear")),
    ("linear_align_corners", (1, 2, 3, 4), [1, 1, 2.5, 2],
     dict(mode="linear", coordinate_transformation_mode="align_corners")),
    ("linear_pytorch_down", (1, 2, 6, 6), [1, 1, 0.5, 0.5], dict(mode="linear",
                                                                 coordinate_transformation_mode="pytorch_half_pixel")),
]


@pytest.mark.parametrize("case", RESIZES, ids=[c[0] for c in RESIZES])
def test_resize(case):
    name, shape, scales, attrs = case
    rng = rng_for("resize", name)
    m = one("Resize", 17, [X, "", "scales"], {"scales": f32(scales)}, x_shape=shape, **attrs)
    check_against_fd(m, f32(rng.standard_normal(shape)))


def test_layer_and_instance_norm():
    rng = rng_for("norms")
    shape = (2, 3, 4, 5)
    ln = one("LayerNormalization", 17, [X, "s", "b"], {"s": f32(rng.uniform(0.5, 1.5, (4, 5))),
                                                        "b": f32(rng.standard_normal((4, 5)))}, x_shape=shape, axis=2)
    check_against_fd(ln, f32(rng.standard_normal(shape)), eps=2e-3, rtol=2e-3, atol_rel=2e-3)
    inn = one("InstanceNormalization", 17, [X, "s", "b"], {"s": f32(rng.uniform(0.5, 1.5, 3)),
                                                           "b": f32(rng.standard_normal(3))}, x_shape=shape)
    check_against_fd(inn, f32(rng.standard_normal(shape)), eps=2e-3, rtol=2e-3, atol_rel=2e-3)


@pytest.mark.parametrize("op,inputs,inits,lo,hi", [
    ("Exp", [X], {}, -2, 2), ("Log", [X], {}, 0.5, 3), ("Sqrt", [X], {}, 0.5, 3), ("Reciprocal", [X], {}, 0.5, 3),
    ("Abs", [X], {}, -2, 2), ("Pow", [X, "p"], {"p": f32(2.0)}, -2, 2), ("Pow", [X, "p"], {"p": f32(3.0)}, -2, 2),
    ("Pow", [X, "p"], {"p": f32(0.5)}, 0.5, 3), ("Expand", [X, "sh"], {"sh": np.array([3, 1, 5], np.int64)}, -2, 2),
    ("Cast", [X], {}, -2, 2),
])
def test_math(op, inputs, inits, lo, hi):
    rng = rng_for("math", op, str(inits))
    attrs = {"to": TensorProto.FLOAT} if op == "Cast" else {}
    shape = (2, 1, 4, 1) if op == "Expand" else XS
    m = one(op, 17, inputs, inits, x_shape=shape, **attrs)
    x = away_from(rng, shape, lo, hi, [0.0] if op == "Abs" else [])
    check_against_fd(m, x, eps=1e-3, rtol=2e-3, atol_rel=2e-3, batched=op != "Expand")


def test_where_routes_by_condition():
    rng = rng_for("where")
    cond = rng.uniform(size=(1,) + XS[1:]) > 0.5  # broadcast over the batch
    m = model_at(17, [h.make_node("Mul", [X, "k"], ["b"]), h.make_node("Where", ["c", X, "b"], [Y])], XS,
                 {"c": cond, "k": f32(-3.0)})
    check_against_fd(m, f32(rng.standard_normal(XS)))


def test_softmax_on_4d_from_opset_9():
    """opset 9 Softmax over a [N, C, 1, 1] tensor (squeezenet) converts to Flatten -> Softmax -> Reshape."""
    from onnx_gig.loader import normalise

    nodes = [h.make_node("Conv", [X, "w"], ["c"], kernel_shape=[1, 1]),
             h.make_node("GlobalAveragePool", ["c"], ["p"]), h.make_node("Softmax", ["p"], [Y])]
    m = model_at(9, nodes, (1, 3, 4, 4), {"w": f32(np.ones((5, 3, 1, 1)))})
    fg = normalise(m)
    assert fg.score_name != Y and fg.num_classes == 5  # the scores before the softmax are explained


def test_unit_rules_cover_the_issue_families():
    families = {"Relu", "Clip", "LeakyRelu", "PRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "Elu", "Selu",
                "Softplus", "LRN", "Softmax", "Mul"}
    every = get_rule_set(ALL)
    assert families <= set(every.ops())
    assert math.isclose(0.5, 0.5)
