"""The guided rule sets (``gnl-ig``, ``gnl-ig-authors``) against references written here.

Single ops are compared with numpy formulas (guided ReLU / ReLU6 masks, an explicit-loop
max-pool that scatters relu(g) to each window's arg-max); the authors' max-pool variant
with the ordinary max-pool gradient times [g > 0] upsampled by torch's nearest
interpolation; a small Conv -> Relu -> MaxPool -> Conv -> Clip chain with torch autograd
through custom guided Functions. Cotangents have mixed signs so the positive-only
masking matters, and each test also checks that guided and plain results differ.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper as h

from onnx_gig.autodiff import get_rule_set

from torch_nets import GuidedReLU, GuidedReLU6, ScatterGuidedMaxPool
from oracles import (X, assert_close, distinct, f32, forward, make_model, maxpool_argmax, maxpool_scatter, session,
                     single_op, vjp)

GUIDED, AUTHORS, PLAIN = "gnl-ig", "gnl-ig-authors", "ig"


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def mixed_cotangent(rng, shape) -> np.ndarray:
    """Standard normal with both signs present (and no exact zeros)."""
    g = f32(rng.standard_normal(shape))
    g[g == 0] = 0.5
    flat = g.reshape(-1)
    flat[0], flat[-1] = abs(flat[0]) + 0.1, -abs(flat[-1]) - 0.1
    return g


def exact_close(got, want, what=""):
    assert_close(got, np.asarray(want, np.float64).astype(np.float32), rtol=1e-6, atol_rel=1e-6, what=what)


# -- the rule sets share everything they do not override ---------------------------------------
def test_rule_sets_share_non_overridden_rules():
    plain, guided, authors = get_rule_set(PLAIN), get_rule_set(GUIDED), get_rule_set(AUTHORS)
    paper = ["Clip", "GlobalMaxPool", "MaxPool", "ReduceMax", "Relu"]  # ReLU, ReLU6 and max-pooling's spellings
    assert guided.overridden() == paper
    assert authors.overridden() == ["MaxPool"]
    assert guided.ops() == plain.ops() == authors.ops()
    for op in plain.ops():
        if op not in paper:
            assert guided.lookup(op) is plain.lookup(op), op
            assert authors.lookup(op) is plain.lookup(op), op
    for op in paper:
        assert guided.lookup(op) is not plain.lookup(op), op
    assert authors.lookup("Relu") is guided.lookup("Relu")
    assert authors.lookup("Clip") is guided.lookup("Clip")
    assert authors.lookup("MaxPool") is not guided.lookup("MaxPool")
    assert get_rule_set(GUIDED).lookup("Conv") is get_rule_set(PLAIN).lookup("Conv")


# -- guided ReLU and ReLU6 ---------------------------------------------------------------------
SHAPE = (2, 3, 4, 5)


def test_guided_relu():
    rng = rng_for("relu")
    x = f32(rng.standard_normal(SHAPE))
    x.reshape(-1)[:4] = 0.0  # exact zeros: the mask is strict, [x > 0]
    g = mixed_cotangent(rng, SHAPE)
    m = single_op("Relu", SHAPE)
    guided, _ = vjp(m, x, g, GUIDED)
    exact_close(guided, g * (x > 0) * (g > 0), "guided ReLU")
    authors, _ = vjp(m, x, g, AUTHORS)
    exact_close(authors, guided, "authors' ReLU is the guided one")
    plain, _ = vjp(m, x, g, PLAIN)
    exact_close(plain, g * (x > 0), "plain ReLU")
    assert np.any((x > 0) & (g < 0)) and not np.allclose(guided, plain)


@pytest.mark.parametrize("form", ["inputs", "max_only"])
def test_guided_relu6(form):
    rng = rng_for("relu6", form)
    x = f32(rng.uniform(-3, 9, SHAPE))
    flat = x.reshape(-1)
    flat[:3], flat[3:6] = 0.0, 6.0  # on the bounds: both masks are strict
    g = mixed_cotangent(rng, SHAPE)
    if form == "inputs":
        m = single_op("Clip", SHAPE, [X, "lo", "hi"], {"lo": f32(0.0), "hi": f32(6.0)})
        mask = (x > 0) & (x < 6)
    else:
        m = single_op("Clip", SHAPE, [X, "", "hi"], {"hi": f32(6.0)})
        mask = x < 6
    guided, _ = vjp(m, x, g, GUIDED)
    exact_close(guided, g * mask * (g > 0), "guided ReLU6")
    authors, _ = vjp(m, x, g, AUTHORS)
    exact_close(authors, guided, "authors' ReLU6 is the guided one")
    plain, _ = vjp(m, x, g, PLAIN)
    exact_close(plain, g * mask, "plain ReLU6")
    assert not np.allclose(guided, plain)


# -- max-pool: exact guided rule and the authors' variant ------------------------------------------
# id, x shape, kernel, strides, pads (t, l, b, r), dilations, ceil_mode, overlapping windows
POOL_CASES = [
    ("2x2_s2", (2, 3, 6, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0, False),
    ("3x3_s2_pad1", (1, 3, 7, 7), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, True),
    ("3x3_s2_ceil", (1, 2, 8, 8), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1, True),
    ("3x3_s2_pad1_ceil", (2, 2, 8, 6), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, True),
    ("3x3_s1_pad1", (1, 2, 5, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0, True),
    ("3x3_s2_asym", (1, 2, 8, 7), (3, 3), (2, 2), (0, 1, 1, 0), (1, 1), 0, True),
    ("2x2_dil2", (1, 2, 7, 7), (2, 2), (1, 1), (0, 0, 0, 0), (2, 2), 0, True),
]


def pool_model(xs, kernel, strides, pads, dil, ceil):
    return single_op("MaxPool", xs, kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                     dilations=list(dil), ceil_mode=ceil)


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_guided_maxpool_exact(case):
    name, xs, kernel, strides, pads, dil, ceil, overlapping = case
    rng = rng_for("pool", name)
    x = distinct(rng, xs, gap=0.01)
    m = pool_model(xs, kernel, strides, pads, dil, ceil)
    y_ref, arg = maxpool_argmax(x, kernel, strides, pads, dil, bool(ceil))
    np.testing.assert_array_equal(forward(m, x), y_ref)  # the loop reference is the runtime's max-pool
    g = mixed_cotangent(rng, y_ref.shape)

    guided, _ = vjp(m, x, g, GUIDED)
    want = maxpool_scatter(np.maximum(g, 0), arg, xs)
    exact_close(guided, want, "exact guided max-pool")

    plain, _ = vjp(m, x, g, PLAIN)
    exact_close(plain, maxpool_scatter(g, arg, xs), "plain max-pool")
    assert not np.allclose(guided, plain)
    assert np.all(guided >= 0)


def authors_reference(x, g, kernel, strides, pads, dil, ceil) -> np.ndarray:
    """Ordinary max-pool gradient times [g > 0] nearest-upsampled to the input size (torch interpolate)."""
    _, arg = maxpool_argmax(x, kernel, strides, pads, dil, bool(ceil))
    ordinary = maxpool_scatter(g, arg, x.shape)
    up = F.interpolate(torch.from_numpy((g > 0).astype(np.float32)), size=x.shape[2:], mode="nearest").numpy()
    return ordinary * up


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_authors_maxpool(case):
    name, xs, kernel, strides, pads, dil, ceil, overlapping = case
    rng = rng_for("authors", name)
    x = distinct(rng, xs, gap=0.01)
    m = pool_model(xs, kernel, strides, pads, dil, ceil)
    g = mixed_cotangent(rng, forward(m, x).shape)
    authors, _ = vjp(m, x, g, AUTHORS)
    exact_close(authors, authors_reference(x, g, kernel, strides, pads, dil, ceil), "authors' max-pool")
    guided, _ = vjp(m, x, g, GUIDED)
    if overlapping:
        assert not np.allclose(authors, guided), "the authors' variant should differ from the exact rule here"
    else:  # non-overlapping 2x2/s2 pools: the two forms agree (the variant is exact there)
        exact_close(authors, guided, "authors' = exact on non-overlapping pools")


# -- a small chain against torch autograd with custom guided Functions -------------------------------
class AuthorsMaxPool(torch.autograd.Function):
    """The authors' variant: ordinary max-pool gradient times nearest-upsampled [g > 0]."""

    @staticmethod
    def forward(ctx, x, k, s, p, ceil):
        with torch.enable_grad():
            xd = x.detach().requires_grad_()
            y = F.max_pool2d(xd, k, s, p, ceil_mode=ceil)
        ctx.saved = (xd, y)
        return y.detach()

    @staticmethod
    def backward(ctx, g):
        xd, y = ctx.saved
        (ordinary,) = torch.autograd.grad(y, xd, g)
        up = F.interpolate((g > 0).to(g.dtype), size=xd.shape[2:], mode="nearest")
        return ordinary * up, None, None, None, None


# id, input size, pool kernel, stride, pad, ceil_mode
CHAIN_POOLS = [("pool2x2", 8, 2, 2, 0, False), ("pool3x3_s2_pad1", 9, 3, 2, 1, False), ("pool3x3_s2_ceil", 10, 3, 2, 0, True)]


def chain(rng, size, k, s, p, ceil):
    """Weights and the ONNX model of Conv -> Relu -> MaxPool -> Conv -> Clip(0, 6)."""
    w1, b1 = f32(rng.standard_normal((4, 3, 3, 3)) * 0.5), f32(rng.standard_normal(4) * 0.3 + 0.3)
    w2, b2 = f32(rng.standard_normal((3, 4, 3, 3)) * 0.6), f32(rng.uniform(1.5, 3.5, 3))
    nodes = [h.make_node("Conv", [X, "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                         ceil_mode=int(ceil)),
             h.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             h.make_node("Clip", ["c2", "lo", "hi"], ["y"])]
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "lo": f32(0.0), "hi": f32(6.0)}
    return make_model(nodes, (2, 3, size, size), inits), (w1, b1, w2, b2)


def torch_chain_grad(x, g, weights, k, s, p, ceil, method):
    w1, b1, w2, b2 = (torch.from_numpy(w) for w in weights)
    xt = torch.from_numpy(x).requires_grad_()
    c1 = F.conv2d(xt, w1, b1, padding=1)
    if method == PLAIN:
        p1 = F.max_pool2d(F.relu(c1), k, s, p, ceil_mode=ceil)
        y = F.hardtanh(F.conv2d(p1, w2, b2, padding=1), 0.0, 6.0)
    else:
        pool = ScatterGuidedMaxPool if method == GUIDED else AuthorsMaxPool
        p1 = pool.apply(GuidedReLU.apply(c1), k, s, p, ceil)
        y = GuidedReLU6.apply(F.conv2d(p1, w2, b2, padding=1))
    (grad,) = torch.autograd.grad(y, xt, torch.from_numpy(g))
    return grad.numpy(), y.detach().numpy()


@pytest.mark.parametrize("pool", CHAIN_POOLS, ids=[c[0] for c in CHAIN_POOLS])
def test_chain_against_torch(pool):
    name, size, k, s, p, ceil = pool
    rng = rng_for("chain", name)
    m, weights = chain(rng, size, k, s, p, ceil)
    x = f32(rng.standard_normal((2, 3, size, size)))
    y = forward(m, x)
    assert 0.1 < np.mean((y > 0) & (y < 6)) < 0.9  # both clip bounds are active somewhere
    g = mixed_cotangent(rng, y.shape)
    results = {}
    for method in (PLAIN, GUIDED, AUTHORS):
        got, y_onnx = vjp(m, x, g, method)
        want, y_torch = torch_chain_grad(x, g, weights, k, s, p, ceil, method)
        np.testing.assert_allclose(y_onnx, y_torch, rtol=1e-5, atol=1e-5)
        assert_close(got, want, rtol=1e-4, atol_rel=1e-5, what=f"{method} chain vs torch autograd")
        results[method] = got
    assert not np.allclose(results[GUIDED], results[PLAIN], rtol=1e-3, atol=1e-4)
    if k > s:  # overlapping windows: the authors' variant is only an approximation
        assert not np.allclose(results[GUIDED], results[AUTHORS], rtol=1e-3, atol=1e-4)
    else:
        assert_close(results[AUTHORS], results[GUIDED], rtol=1e-6, atol_rel=1e-6)


# -- one function, one attribution: a global max-pool in each spelling, end to end --------------------------------
@pytest.mark.parametrize("method", [GUIDED, AUTHORS])
def test_global_max_pool_spellings_agree_end_to_end(tmp_path, method):
    """Conv -> global max-pool -> Gemm written as MaxPool over the whole map, GlobalMaxPool and ReduceMax (torch's
    amax) compute one function; converted, their GNL-IG attributions agree, and differ from IG (the head's
    weights have both signs, so the guided rule blocks some pooled gradients)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    import onnx_gig
    from onnx_gig.quadrature import schedule

    rng = rng_for("gmp-e2e")
    w1, wf = f32(rng.standard_normal((8, 3, 3, 3)) * 0.5), f32(rng.standard_normal((5, 8)))
    x = f32(rng.standard_normal((2, 3, 16, 16)))
    pools = {"MaxPool": h.make_node("MaxPool", ["c"], ["p"], kernel_shape=[16, 16]),
             "GlobalMaxPool": h.make_node("GlobalMaxPool", ["c"], ["p"]),
             "ReduceMax": h.make_node("ReduceMax", ["c"], ["p"], axes=[2, 3], keepdims=1)}
    alphas, weights = schedule(20)
    got = {}
    for name, pool in pools.items():
        nodes = [h.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), pool,
                 h.make_node("Flatten", ["p"], ["f"]), h.make_node("Gemm", ["f", "wf"], ["logits"], transB=1)]
        graph = h.make_graph(nodes, name, [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                             [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
                             initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(wf, "wf")])
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
        model.ir_version = 7
        onnx.save(model, tmp_path / f"{name}.onnx")
        for m in (method, PLAIN):
            out = tmp_path / f"{name}_{m}.onnx"
            onnx_gig.convert(tmp_path / f"{name}.onnx", out, method=m)
            feeds = {"x": x, "alphas": alphas, "step_weights": weights, "target": np.array([0, 3], np.int64)}
            got[name, m] = session(onnx.load(out)).run(["attributions"], feeds)[0]
    ref = got["MaxPool", method]
    for name in ("GlobalMaxPool", "ReduceMax"):
        assert_close(got[name, method], ref, rtol=1e-5, atol_rel=1e-6, what=f"{name} vs MaxPool")
        np.testing.assert_allclose(got[name, PLAIN], got["MaxPool", PLAIN], rtol=1e-5, atol=1e-6)
    assert not np.allclose(ref, got["MaxPool", PLAIN], rtol=1e-3, atol=1e-4 * np.abs(ref).max())
