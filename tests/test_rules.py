"""Every plain (``ig``) rule against central finite differences of onnxruntime forward passes.

Each test builds a one-op (or few-op) model with onnx.helper at opset 17, builds its VJP
model with the ``ig`` rule set, and compares the gradient of sum(cotangent * y) with
finite differences of the original model. Non-smooth ops get inputs away from their
kinks and ties so the finite differences are exact up to float32 rounding.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from onnx import helper as h

from onnx_gig.autodiff import get_rule_set
from onnx_gig.errors import UnsupportedOpError
from onnx_gig.loader import normalise

from oracles import (X, Y, away_from, away_from_zero, build_vjp, check_against_fd, distinct, f32, make_model,
                      single_op)


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the test's key (stable across runs, unlike hash())."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def randn(rng, *shape, scale=1.0):
    return f32(rng.standard_normal(shape) * scale)


# -- Conv ------------------------------------------------------------------------------
# (id, x shape, weight shape, attrs, bias)
CONV_CASES = [
    ("s1_pad1", (1, 3, 7, 7), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1]), False),
    ("s2_pad1", (1, 3, 8, 8), (4, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]), False),
    ("s2_pad0_odd", (1, 2, 9, 9), (3, 2, 3, 3), dict(strides=[2, 2]), False),
    ("s3_nondivisible", (1, 2, 10, 8), (3, 2, 3, 3), dict(strides=[3, 3]), False),
    ("s3_k2_pad1", (1, 2, 9, 7), (2, 2, 2, 2), dict(strides=[3, 3], pads=[1, 1, 1, 1]), False),
    ("strides_2x1", (1, 2, 8, 7), (3, 2, 3, 3), dict(strides=[2, 1], pads=[1, 0, 1, 0]), False),
    ("asym_pads", (1, 2, 7, 8), (3, 2, 3, 3), dict(pads=[0, 2, 1, 0]), False),
    ("asym_pads_s2", (1, 2, 8, 7), (3, 2, 3, 3), dict(strides=[2, 2], pads=[2, 0, 0, 1]), False),
    ("same_upper_s1_k2", (1, 2, 6, 7), (3, 2, 2, 2), dict(auto_pad="SAME_UPPER"), False),
    ("same_upper_s2_k3", (1, 2, 7, 8), (3, 2, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2]), False),
    ("same_lower_s2_k4", (1, 2, 7, 8), (3, 2, 4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 2]), False),
    ("same_lower_s1_k2", (1, 2, 6, 5), (3, 2, 2, 2), dict(auto_pad="SAME_LOWER"), False),
    ("same_upper_s3", (1, 2, 8, 10), (2, 2, 3, 3), dict(auto_pad="SAME_UPPER", strides=[3, 3]), False),
    ("valid_s2", (1, 2, 8, 9), (3, 2, 3, 3), dict(auto_pad="VALID", strides=[2, 2]), False),
    ("dilation2_pad2", (1, 2, 8, 8), (3, 2, 3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2]), False),
    ("dilation_2x3_s2", (1, 2, 11, 12), (3, 2, 3, 2), dict(dilations=[2, 3], strides=[2, 2], pads=[1, 0, 0, 1]), False),
    ("group2", (1, 4, 6, 6), (6, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), False),
    ("group2_s2", (1, 4, 7, 7), (4, 2, 3, 3), dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1]), True),
    ("depthwise_m1", (1, 3, 7, 7), (3, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1]), False),
    ("depthwise_m1_s2", (1, 3, 8, 8), (3, 1, 3, 3), dict(group=3, strides=[2, 2], pads=[1, 1, 1, 1]), True),
    ("depthwise_m2", (1, 3, 6, 6), (6, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1]), False),
    ("depthwise_m2_s2_same", (1, 2, 7, 7), (4, 1, 3, 3), dict(group=2, strides=[2, 2], auto_pad="SAME_UPPER"), True),
    ("1x1", (1, 4, 5, 5), (3, 4, 1, 1), {}, False),
    ("1x1_s2", (1, 4, 7, 6), (3, 4, 1, 1), dict(strides=[2, 2]), True),
    ("rect_3x1", (1, 2, 7, 6), (3, 2, 3, 1), dict(pads=[1, 0, 1, 0]), False),
    ("rect_1x5_s2", (1, 2, 6, 9), (3, 2, 1, 5), dict(strides=[1, 2], pads=[0, 2, 0, 1]), False),
    ("rect_2x3", (1, 2, 6, 7), (2, 2, 2, 3), dict(strides=[2, 1]), False),
    ("bias", (1, 3, 6, 6), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1]), True),
    ("batch2_bias_s2", (2, 2, 7, 7), (3, 2, 3, 3), dict(strides=[2, 2], pads=[0, 1, 1, 0]), True),
]


def check_conv_like(op: str, tag: str, case, out_channels: int) -> None:
    """A Conv/ConvTranspose case (name, input shape, weight shape, attributes, bias?) against finite differences."""
    name, xs, ws, attrs, bias = case
    rng = rng_for(tag, name)
    inits = {"W": randn(rng, *ws, scale=0.5)}
    inputs = [X, "W"]
    if bias:
        inits["B"] = randn(rng, out_channels)
        inputs.append("B")
    m = single_op(op, xs, inputs, inits, kernel_shape=list(ws[2:]), **attrs)
    check_against_fd(m, randn(rng, *xs))


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv(case):
    check_conv_like("Conv", "conv", case, out_channels=case[2][0])


# -- Gemm / MatMul ------------------------------------------------------------------------
GEMM_CASES = [
    # id, x shape, B shape, attrs, C shape (None = no C)
    ("plain", (2, 5), (5, 4), {}, None),
    ("transB", (2, 5), (4, 5), dict(transB=1), None),
    ("alpha_beta_C1d", (2, 5), (5, 4), dict(alpha=0.7, beta=1.3), (4,)),
    ("transB_C_row", (3, 5), (4, 5), dict(transB=1, alpha=1.5, beta=0.5), (1, 4)),
    ("C_scalar", (2, 5), (5, 3), dict(beta=2.0), ()),
    ("transA", (5, 2), (5, 4), dict(transA=1, alpha=0.5), (4,)),
    ("transA_transB", (5, 3), (4, 5), dict(transA=1, transB=1, beta=0.25), (1, 4)),
]


@pytest.mark.parametrize("case", GEMM_CASES, ids=[c[0] for c in GEMM_CASES])
def test_gemm(case):
    name, xs, bs, attrs, cs = case
    rng = rng_for("gemm", name)
    inits = {"B": randn(rng, *bs)}
    inputs = [X, "B"]
    if cs is not None:
        inits["C"] = randn(rng, *cs)
        inputs.append("C")
    m = single_op("Gemm", xs, inputs, inits, **attrs)
    # with transA the first dim of x is not the batch: run each perturbation on its own
    check_against_fd(m, randn(rng, *xs), batched=not attrs.get("transA"))


def test_gemm_c_depends_on_x():
    """C is x itself (Gemm(x, W, x)): the C gradient (times beta) adds to the A gradient."""
    rng = rng_for("gemm_c")
    m = single_op("Gemm", (2, 4), [X, "W", X], {"W": randn(rng, 4, 4)}, alpha=0.8, beta=0.5)
    check_against_fd(m, randn(rng, 2, 4))


MATMUL_CASES = [
    ("2d_weight", (2, 5), (5, 3), False),
    ("3d_x_2d_weight", (1, 3, 5), (5, 4), False),
    ("4d_x_2d_weight", (1, 2, 3, 5), (5, 4), False),
    ("3d_x_3d_weight", (1, 3, 5), (1, 5, 4), False),
    ("4d_x_3d_weight", (1, 2, 3, 4), (2, 4, 3), False),
    ("weight_first_3d", (1, 3, 5), (4, 3), True),
]


@pytest.mark.parametrize("case", MATMUL_CASES, ids=[c[0] for c in MATMUL_CASES])
def test_matmul(case):
    name, xs, ws, weight_first = case
    rng = rng_for("matmul", name)
    inputs = ["W", X] if weight_first else [X, "W"]
    m = single_op("MatMul", xs, inputs, {"W": randn(rng, *ws)})
    check_against_fd(m, randn(rng, *xs))


def test_matmul_both_operands_from_x():
    """y = x @ x^T (batched): both operand gradients, plus fan-out through Transpose."""
    rng = rng_for("mm_xx")
    nodes = [h.make_node("Transpose", [X], ["xt"], perm=[0, 2, 1]),
             h.make_node("MatMul", [X, "xt"], [Y])]
    check_against_fd(make_model(nodes, (1, 3, 4)), randn(rng, 1, 3, 4))


def test_matmul_4d_both_from_x():
    rng = rng_for("mm_xx4")
    nodes = [h.make_node("Transpose", [X], ["xt"], perm=[0, 1, 3, 2]),
             h.make_node("Relu", ["xt"], ["r"]),
             h.make_node("MatMul", ["r", X], [Y])]
    check_against_fd(make_model(nodes, (1, 2, 3, 3)), away_from_zero(rng, (1, 2, 3, 3)))


# -- element-wise arithmetic with broadcasting ------------------------------------------------
XS = (1, 3, 4, 5)
BCAST_CASES = [
    # id, op, x shape, const shape, const first
    ("add_C11", "Add", XS, (3, 1, 1), False),
    ("add_1C11_first", "Add", XS, (1, 3, 1, 1), True),
    ("add_scalar", "Add", XS, (), False),
    ("add_full", "Add", XS, (1, 3, 4, 5), False),
    ("add_x_small", "Add", (1, 3, 1, 1), (1, 3, 4, 5), False),
    ("add_x_row", "Add", (1, 1, 4, 1), (3, 1, 5), True),
    ("sub_C11", "Sub", XS, (3, 1, 1), False),
    ("sub_from_const", "Sub", XS, (1, 3, 1, 1), True),
    ("sub_scalar_first", "Sub", XS, (), True),
    ("sub_x_small_first", "Sub", (1, 3, 1, 5), (3, 4, 1), True),
    ("mul_C11", "Mul", XS, (3, 1, 1), False),
    ("mul_scalar_first", "Mul", XS, (), True),
    ("mul_x_small", "Mul", (1, 1, 4, 5), (1, 3, 1, 1), False),
    ("mul_lastdim", "Mul", XS, (5,), False),
    ("div_by_1C11", "Div", XS, (1, 3, 1, 1), False),
    ("div_by_scalar", "Div", XS, (), False),
    ("div_const_by_x", "Div", XS, (3, 1, 1), True),
    ("div_x_small_by_full", "Div", (1, 3, 1, 1), (3, 4, 5), False),
    ("div_const_by_x_small", "Div", (1, 1, 4, 5), (1, 3, 1, 1), True),
]


@pytest.mark.parametrize("case", BCAST_CASES, ids=[c[0] for c in BCAST_CASES])
def test_elementwise_broadcast(case):
    name, op, xs, cs, const_first = case
    rng = rng_for("bcast", name)
    c = randn(rng, *cs)
    x = randn(rng, *xs)
    if op == "Div":  # keep divisors away from zero (|v| in [0.5, 1.5])
        if const_first:
            x = away_from_zero(rng, xs, 0.5, 1.5)
        else:
            c = away_from_zero(rng, cs, 0.5, 1.5)
    inputs = ["C", X] if const_first else [X, "C"]
    m = single_op(op, xs, inputs, {"C": c})
    check_against_fd(m, x, eps=1e-2 if op != "Div" or not const_first else 3e-3)


def test_mul_x_x():
    rng = rng_for("mulxx")
    check_against_fd(make_model([h.make_node("Mul", [X, X], [Y])], XS), randn(rng, *XS))


def test_x_over_one_plus_x_squared():
    """y = x / (1 + x*x): Mul(x, x), Add with a scalar, Div with both operands depending on x."""
    rng = rng_for("rational")
    nodes = [h.make_node("Mul", [X, X], ["xx"]),
             h.make_node("Add", ["one", "xx"], ["den"]),
             h.make_node("Div", [X, "den"], [Y])]
    m = make_model(nodes, XS, {"one": f32(1.0)})
    check_against_fd(m, randn(rng, *XS), eps=3e-3)


def test_dependent_broadcast_operands():
    """Both operands depend on x and one is broadcast: x * GAP(x) + ReduceMean_C(x) - x / (2 + x^2)."""
    rng = rng_for("depbcast")
    nodes = [h.make_node("GlobalAveragePool", [X], ["gap"]),
             h.make_node("Mul", [X, "gap"], ["a"]),
             h.make_node("ReduceMean", [X], ["rm"], axes=[1], keepdims=1),
             h.make_node("Add", ["rm", "a"], ["b"]),
             h.make_node("Mul", [X, X], ["xx"]),
             h.make_node("Add", ["xx", "two"], ["den"]),
             h.make_node("Div", ["rm", "den"], ["q"]),  # [N,1,H,W] / [N,C,H,W]
             h.make_node("Sub", ["b", "q"], [Y])]
    m = make_model(nodes, XS, {"two": f32([2.0])})
    check_against_fd(m, randn(rng, *XS), eps=3e-3)


def test_sum_and_neg():
    rng = rng_for("sumneg")
    nodes = [h.make_node("Neg", [X], ["nx"]),
             h.make_node("Relu", [X], ["r"]),
             h.make_node("Sum", ["nx", "C", "r"], [Y])]
    m = make_model(nodes, XS, {"C": randn(rng, 3, 1, 1)})
    check_against_fd(m, away_from_zero(rng, XS))


# -- BatchNorm, activations ------------------------------------------------------------------------
def test_batchnorm_inference():
    rng = rng_for("bn")
    c = 4
    inits = {"s": randn(rng, c), "b": randn(rng, c), "mean": randn(rng, c), "var": f32(rng.uniform(0.2, 2.0, c))}
    m = single_op("BatchNormalization", (2, c, 3, 5), [X, "s", "b", "mean", "var"], inits, epsilon=1e-3)
    check_against_fd(m, randn(rng, 2, c, 3, 5))


def test_batchnorm_2d_input():
    rng = rng_for("bn2")
    c = 5
    inits = {"s": randn(rng, c), "b": randn(rng, c), "mean": randn(rng, c), "var": f32(rng.uniform(0.2, 2.0, c))}
    m = single_op("BatchNormalization", (3, c), [X, "s", "b", "mean", "var"], inits)
    check_against_fd(m, randn(rng, 3, c))


def test_relu():
    rng = rng_for("relu")
    grad, _ = check_against_fd(single_op("Relu", XS), away_from_zero(rng, XS))
    assert np.count_nonzero(grad == 0) > 0  # the mask really cuts


@pytest.mark.parametrize("variant", ["relu6", "max_only", "min_only", "bounds_-1_2"])
def test_clip(variant):
    rng = rng_for("clip", variant)
    lo, hi = {"relu6": (0.0, 6.0), "max_only": (None, 1.0), "min_only": (-0.5, None), "bounds_-1_2": (-1.0, 2.0)}[variant]
    inits, inputs = {}, [X, "", ""]
    if lo is not None:
        inits["lo"] = f32(lo)
        inputs[1] = "lo"
    if hi is not None:
        inits["hi"] = f32(hi)
        inputs[2] = "hi"
    while inputs[-1] == "":
        inputs.pop()
    kinks = [k for k in (lo, hi) if k is not None]
    a, b = (lo if lo is not None else hi - 3) - 2, (hi if hi is not None else lo + 3) + 2
    x = away_from(rng, XS, a, b, kinks)
    grad, _ = check_against_fd(single_op("Clip", XS, inputs, inits), x)
    assert 0 < np.count_nonzero(grad) < grad.size


def test_leaky_relu():
    rng = rng_for("leaky")
    check_against_fd(single_op("LeakyRelu", XS, alpha=0.1), away_from_zero(rng, XS))


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_smooth_activation(op):
    rng = rng_for(op)
    check_against_fd(single_op(op, XS), randn(rng, *XS, scale=1.5), eps=3e-3)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [((2, 7), -1), ((2, 7), 1), ((1, 3, 2, 4), 1), ((1, 3, 2, 4), -1)])
def test_softmax(op, shape, axis):
    rng = rng_for(op, shape, axis)
    check_against_fd(single_op(op, shape, axis=axis), randn(rng, *shape, scale=1.5), eps=3e-3)


# -- pooling -------------------------------------------------------------------------------------
# ONNX shape inference before opset 22 keeps a ceil_mode window that starts in the end pad (5x5, k2, s2,
# pads 1: it says 4x4) while onnxruntime, onnx.reference and torch drop it (3x3). The loader gives such a
# pool the end pad that ends at its last real window (same windows, maxima and divisors), so ONNX's
# inference, onnxruntime and the rules all say 3x3.


def case_ids(cases):
    return [c.id if hasattr(c, "id") else c[0] for c in cases]


MAXPOOL_CASES = [
    ("2x2_s2", (1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("2x2_s2_odd", (2, 2, 7, 5), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("3x3_s2_pad1", (1, 2, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("3x3_s2_ceil", (1, 2, 8, 8), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("3x3_s2_pad1_ceil", (1, 2, 8, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("3x3_s1_pad1", (1, 2, 5, 5), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    ("2x2_dil2", (1, 2, 7, 7), dict(kernel_shape=[2, 2], dilations=[2, 2])),
    ("3x3_dil2_s2_pad", (1, 2, 9, 9), dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2])),
    ("asym_pads", (1, 2, 6, 7), dict(kernel_shape=[3, 2], strides=[2, 2], pads=[0, 1, 1, 0])),
    ("same_upper", (1, 2, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("2x2_s2_pad1_ceil_edge", (1, 2, 5, 5), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
]


@pytest.mark.parametrize("case", MAXPOOL_CASES, ids=case_ids(MAXPOOL_CASES))
def test_maxpool(case):
    name, xs, attrs = case
    rng = rng_for("maxpool", name)
    check_against_fd(single_op("MaxPool", xs, **attrs), distinct(rng, xs, gap=0.05))


AVGPOOL_CASES = [
    ("2x2_s2", (1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("3x3_s2_pad1_cip0", (1, 2, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("3x3_s2_pad1_cip1", (1, 2, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("3x3_s2_ceil_cip0", (1, 2, 8, 8), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("3x3_s2_ceil_cip1", (1, 2, 8, 8), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1)),
    ("3x3_s2_pad1_ceil_cip1", (1, 2, 8, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                                                count_include_pad=1)),
    ("asym_pads_cip0", (1, 2, 6, 7), dict(kernel_shape=[3, 2], strides=[1, 2], pads=[0, 1, 2, 0])),
    ("asym_pads_cip1", (1, 2, 6, 7), dict(kernel_shape=[3, 2], strides=[1, 2], pads=[0, 1, 2, 0], count_include_pad=1)),
    ("3x3_s1_pad1", (2, 3, 5, 5), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    ("same_upper", (1, 2, 7, 6), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    # ceil_mode where the last window would start inside the end pad: it is dropped
    ("2x2_s2_pad1_ceil_edge_cip0", (1, 2, 5, 5), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
                                                      ceil_mode=1)),
    ("2x2_s2_pad1_ceil_edge_cip1", (1, 2, 5, 5), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
                                                      ceil_mode=1, count_include_pad=1)),
]


@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=case_ids(AVGPOOL_CASES))
def test_averagepool(case):
    name, xs, attrs = case
    rng = rng_for("avgpool", name)
    check_against_fd(single_op("AveragePool", xs, **attrs), randn(rng, *xs))


def test_global_average_pool():
    rng = rng_for("gap")
    check_against_fd(single_op("GlobalAveragePool", (2, 3, 4, 5)), randn(rng, 2, 3, 4, 5))


@pytest.mark.parametrize("axes", [[2, 3], [1], [-1]])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean(axes, keepdims):
    rng = rng_for("rmean", axes, keepdims)
    m = single_op("ReduceMean", (2, 3, 4, 5), axes=axes, keepdims=keepdims)
    check_against_fd(m, randn(rng, 2, 3, 4, 5))


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_sum(keepdims):
    rng = rng_for("rsum", keepdims)
    m = single_op("ReduceSum", (1, 3, 4, 5), [X, "axes"], {"axes": np.array([1, 3], np.int64)}, keepdims=keepdims)
    check_against_fd(m, randn(rng, 1, 3, 4, 5))


# -- shape ops --------------------------------------------------------------------------------
def test_flatten():
    rng = rng_for("flatten")
    check_against_fd(single_op("Flatten", (2, 3, 2, 4), axis=1), randn(rng, 2, 3, 2, 4))


@pytest.mark.parametrize("target", [[0, -1], [0, 4, -1], [-1, 6], [0, 2, 3, 2, 2]])
def test_reshape(target):
    rng = rng_for("reshape", target)
    m = single_op("Reshape", (1, 3, 2, 4), [X, "shape"], {"shape": np.array(target, np.int64)})
    check_against_fd(m, randn(rng, 1, 3, 2, 4))


def test_reshape_hard_coded_batch_one():
    """An old-exporter Reshape to [1, 24] on a batch-1 input; the normaliser frees the batch dim."""
    rng = rng_for("reshape1")
    nodes = [h.make_node("Relu", [X], ["r"]), h.make_node("Reshape", ["r", "shape"], [Y])]
    m = make_model(nodes, (1, 3, 2, 4), {"shape": np.array([1, 24], np.int64)}, batch=1)
    check_against_fd(m, away_from_zero(rng, (1, 3, 2, 4)), batched=False)


def test_squeeze_unsqueeze():
    rng = rng_for("squeeze")
    nodes = [h.make_node("Unsqueeze", [X, "ax"], ["u"]),
             h.make_node("Relu", ["u"], ["r"]),
             h.make_node("Squeeze", ["r", "ax"], [Y])]
    m = make_model(nodes, (1, 3, 4), {"ax": np.array([2], np.int64)})
    check_against_fd(m, away_from_zero(rng, (1, 3, 4)))


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], None])
def test_transpose(perm):
    rng = rng_for("transpose", perm)
    attrs = {} if perm is None else dict(perm=perm)
    # the default perm reverses the axes, so the batch is no longer first: no batched FD then
    check_against_fd(single_op("Transpose", (1, 2, 3, 4), **attrs), randn(rng, 1, 2, 3, 4), batched=perm is not None)


def test_concat_two_inputs_one_constant():
    rng = rng_for("concat2")
    m = single_op("Concat", (1, 2, 3, 4), [X, "C"], {"C": randn(rng, 1, 3, 3, 4)}, axis=1)
    # the constant has batch 1, so a batched FD would not broadcast: run perturbations one by one
    check_against_fd(m, randn(rng, 1, 2, 3, 4), batched=False)


def test_concat_three_inputs():
    """Concat(const, x, Relu(x)) along the last axis: two of three inputs depend on x (fan-out)."""
    rng = rng_for("concat3")
    nodes = [h.make_node("Relu", [X], ["r"]), h.make_node("Concat", ["C", X, "r"], [Y], axis=-1)]
    m = make_model(nodes, (1, 2, 3, 4), {"C": randn(rng, 1, 2, 3, 2)})
    check_against_fd(m, away_from_zero(rng, (1, 2, 3, 4)), batched=False)


def test_concat_batched_channels():
    rng = rng_for("concat3b")
    nodes = [h.make_node("Mul", [X, "k"], ["a"]),
             h.make_node("Relu", [X], ["r"]),
             h.make_node("Concat", ["r", "a", X], [Y], axis=1)]
    m = make_model(nodes, (2, 2, 3, 3), {"k": f32(-1.5)})
    check_against_fd(m, away_from_zero(rng, (2, 2, 3, 3)))


def test_concat_of_a_class_token_expanded_at_run_time():
    """cat([cls.expand(N, -1, -1), tokens], 1) as the legacy exporter writes it (the Expand shape comes from
    Shape(x)): shape inference leaves the token counts unknown, so the rule slices at run-time offsets."""
    rng = rng_for("concat_cls")
    nodes = [h.make_node("Shape", [X], ["s"]), h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "ax0"], ["n1"]), h.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
             h.make_node("Equal", ["target", "minus1"], ["keep"]),  # expand's -1: keep the size
             h.make_node("Where", ["keep", "ones", "target"], ["shape"]),
             h.make_node("Expand", ["cls", "shape"], ["c"]), h.make_node("Mul", [X, "k"], ["t"]),
             h.make_node("Concat", ["c", "t", X], ["cat"], axis=1), h.make_node("Relu", ["cat"], [Y])]
    inits = {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64), "rest": np.array([-1, -1], np.int64),
             "minus1": np.array([-1, -1, -1], np.int64), "ones": np.array([1, 1, 1], np.int64),
             "cls": randn(rng, 1, 1, 4), "k": f32(-1.5)}
    m = make_model(nodes, (2, 3, 4), inits)
    fg = normalise(m)
    dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in fg.model.graph.value_info}
    assert not isinstance(dims["c"][1], int) or dims["c"][1] == 0, dims["c"]  # unknown to shape inference
    check_against_fd(m, away_from_zero(rng, (2, 3, 4)))


@pytest.mark.parametrize("pads", [[0, 0, 1, 2, 0, 0, 2, 0], [0, 1, 0, 3, 0, 0, 1, 1]])
def test_pad_constant(pads):
    rng = rng_for("pad", pads)
    m = single_op("Pad", (1, 2, 3, 4), [X, "pads", "cv"], {"pads": np.array(pads, np.int64), "cv": f32(0.5)},
                  mode="constant")
    check_against_fd(m, randn(rng, 1, 2, 3, 4))


def test_pad_negative_crops():
    rng = rng_for("padneg")
    pads = [0, 0, -1, 2, 0, 0, 1, -2]
    m = single_op("Pad", (1, 2, 4, 5), [X, "pads"], {"pads": np.array(pads, np.int64)}, mode="constant")
    check_against_fd(m, randn(rng, 1, 2, 4, 5))


def test_identity():
    rng = rng_for("identity")
    check_against_fd(single_op("Identity", XS), randn(rng, *XS))


def test_dropout_inference():
    rng = rng_for("dropout")
    nodes = [h.make_node("Dropout", [X, "ratio"], [Y]), ]
    check_against_fd(make_model(nodes, XS, {"ratio": f32(0.5)}), randn(rng, *XS))


def test_dropout_with_mask_output():
    rng = rng_for("dropout2")
    nodes = [h.make_node("Dropout", [X], ["d", "mask"]), h.make_node("Relu", ["d"], [Y])]
    check_against_fd(make_model(nodes, XS), away_from_zero(rng, XS))


# -- the builder ---------------------------------------------------------------------------------
def test_fan_out_sums_gradients():
    """y = Relu(x) + Conv(x): the gradients of both branches add up at x."""
    rng = rng_for("fanout")
    nodes = [h.make_node("Relu", [X], ["r"]),
             h.make_node("Conv", [X, "W"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             h.make_node("Add", ["r", "c"], [Y])]
    m = make_model(nodes, (1, 3, 5, 5), {"W": randn(rng, 3, 3, 3, 3, scale=0.5)})
    check_against_fd(m, away_from_zero(rng, (1, 3, 5, 5)))


def test_residual_chain():
    """Conv -> BN -> Relu -> Conv, plus a skip from x, then GAP -> Flatten -> Gemm: a ResNet block."""
    rng = rng_for("residual")
    c = 3
    inits = {"W1": randn(rng, c, c, 3, 3, scale=0.4), "W2": randn(rng, c, c, 3, 3, scale=0.4),
             "s": randn(rng, c), "b": randn(rng, c), "mu": randn(rng, c), "var": f32(rng.uniform(0.5, 2, c)),
             "Wf": randn(rng, 4, c), "bf": randn(rng, 4)}
    nodes = [h.make_node("Conv", [X, "W1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             h.make_node("BatchNormalization", ["c1", "s", "b", "mu", "var"], ["bn"]),
             h.make_node("Relu", ["bn"], ["r"]),
             h.make_node("Conv", ["r", "W2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             h.make_node("Add", ["c2", X], ["sum"]),
             h.make_node("GlobalAveragePool", ["sum"], ["gap"]),
             h.make_node("Flatten", ["gap"], ["flat"]),
             h.make_node("Gemm", ["flat", "Wf", "bf"], [Y], transB=1)]
    m = make_model(nodes, (1, c, 5, 5), inits)
    # Relu kinks inside the graph: FD is exact unless a pre-activation lies within eps of 0; use a small eps
    check_against_fd(m, randn(rng, 1, c, 5, 5), eps=1e-3, rtol=2e-3, atol_rel=2e-3)


def test_unused_branch_with_unsupported_op():
    """A second output computed by an op with no rule (Round) is off the explained path: no error."""
    rng = rng_for("unused")
    nodes = [h.make_node("Relu", [X], [Y]),
             h.make_node("Round", [X], ["side"], name="side_round"),
             h.make_node("Sigmoid", ["side"], ["side_out"])]
    m = make_model(nodes, XS, outputs=(Y, "side_out"))
    check_against_fd(m, away_from_zero(rng, XS))


def test_off_path_shape_ops():
    """Shape -> Gather -> Unsqueeze -> Concat feeds a Reshape target: integer ops are not differentiated."""
    rng = rng_for("offpath")
    nodes = [h.make_node("Shape", [X], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             h.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             h.make_node("Relu", [X], ["r"]),
             h.make_node("Reshape", ["r", "target"], ["flat"]),
             h.make_node("Gemm", ["flat", "W"], [Y])]
    inits = {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
             "W": randn(rng, 24, 3)}
    m = make_model(nodes, (1, 2, 3, 4), inits)
    vm = build_vjp(m)
    assert "Shape" in {n.op_type for n in vm.graph.node}  # the dynamic shape path survived normalising
    check_against_fd(m, away_from_zero(rng, (1, 2, 3, 4)))


def test_constant_branch_not_differentiated():
    """An op without a rule on a branch that does not depend on x (Round of a constant) is fine."""
    rng = rng_for("constbranch")
    nodes = [h.make_node("Round", ["C"], ["ec"], name="const_round"),
             h.make_node("Mul", [X, "ec"], [Y])]
    m = make_model(nodes, XS, {"C": randn(rng, 3, 1, 1)})
    check_against_fd(m, randn(rng, *XS))


@pytest.mark.parametrize("op,attrs", [("Round", {}), ("Mod", {"fmod": 1})])
def test_unsupported_op_on_path_raises(op, attrs):
    rng = rng_for("unsupported", op)
    inputs = ["r"] if op == "Round" else ["r", "C"]
    nodes = [h.make_node("Relu", [X], ["r"]),
             h.make_node(op, inputs, ["u"], name="my_bad_node", **attrs),
             h.make_node("Conv", ["u", "W"], [Y], kernel_shape=[1, 1])]
    m = make_model(nodes, (1, 3, 4, 4), {"C": f32(0.7), "W": randn(rng, 2, 3, 1, 1)})
    with pytest.raises(UnsupportedOpError) as info:
        build_vjp(m)
    msg = str(info.value)
    assert f"'{op}'" in msg
    assert "my_bad_node" in msg
    assert "supported ops" in msg
    for known in get_rule_set("ig").ops():
        assert known in msg


# -- the ops of modern classifiers (issue 12) ----------------------------------------------------------------
def test_erf():
    rng = rng_for("erf")
    check_against_fd(single_op("Erf", XS), randn(rng, *XS, scale=1.5), eps=1e-3, rtol=2e-3, atol_rel=2e-3)


def test_exact_gelu_as_torch_exports_it():
    """x * (1 + erf(x / sqrt 2)) * 0.5: the Div -> Erf -> Add -> Mul -> Mul chain of torch.onnx.export."""
    rng = rng_for("gelu_chain")
    nodes = [h.make_node("Div", [X, "r2"], ["d"]), h.make_node("Erf", ["d"], ["e"]),
             h.make_node("Add", ["e", "one"], ["a"]), h.make_node("Mul", [X, "a"], ["m"]),
             h.make_node("Mul", ["m", "half"], [Y])]
    m = make_model(nodes, XS, {"r2": f32(np.sqrt(2.0)), "one": f32(1.0), "half": f32(0.5)})
    check_against_fd(m, randn(rng, *XS, scale=1.5), eps=1e-3, rtol=2e-3, atol_rel=2e-3)


# (id, x shape, weight shape [Cin, Cout/G, k...], attrs, bias)
CONVT_CASES = [
    ("s1", (1, 3, 5, 5), (3, 2, 3, 3), {}, False),
    ("s2_pad1", (1, 3, 4, 4), (3, 4, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]), True),
    ("s2_outpad1", (1, 2, 4, 5), (2, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), False),
    ("s3_asym_pads_outpad2", (1, 2, 3, 4), (2, 2, 3, 2), dict(strides=[3, 2], pads=[0, 1, 2, 0],
                                                               output_padding=[2, 1]), False),
    ("outpad_past_end_pad", (1, 2, 4, 4), (2, 2, 3, 3), dict(strides=[3, 3], output_padding=[2, 1]), False),
    ("dilation2", (1, 2, 5, 4), (2, 3, 3, 3), dict(dilations=[2, 2], pads=[1, 2, 1, 0]), False),
    ("dil_s2", (1, 2, 4, 4), (2, 2, 2, 3), dict(dilations=[2, 1], strides=[2, 2], output_padding=[1, 0]), True),
    ("group2", (1, 4, 4, 4), (4, 3, 3, 3), dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1]), False),
    ("depthwise", (1, 3, 5, 5), (3, 1, 3, 3), dict(group=3, strides=[2, 2], pads=[1, 1, 1, 1]), False),
    ("same_upper_s2", (1, 2, 3, 4), (2, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2]), False),
    ("same_lower_s2", (1, 2, 3, 4), (2, 3, 3, 3), dict(auto_pad="SAME_LOWER", strides=[2, 2]), False),
    ("same_upper_k4", (1, 2, 3, 3), (2, 2, 4, 4), dict(auto_pad="SAME_UPPER", strides=[2, 2]), False),
    ("valid_s2", (1, 2, 3, 4), (2, 2, 3, 3), dict(auto_pad="VALID", strides=[2, 2]), False),
    ("output_shape", (1, 2, 3, 3), (2, 2, 3, 3), dict(strides=[2, 2], output_shape=[6, 5]), False),
    ("output_shape_outpad", (1, 2, 3, 3), (2, 2, 3, 3), dict(strides=[2, 2], output_shape=[8, 7], output_padding=[1, 1]),
     False),
    ("1d", (1, 2, 6), (2, 3, 4), dict(strides=[2], pads=[1, 2]), False),
    ("pixel_upsample_k2s2", (2, 4, 3, 3), (4, 2, 2, 2), dict(strides=[2, 2]), True),
]


@pytest.mark.parametrize("case", CONVT_CASES, ids=[c[0] for c in CONVT_CASES])
def test_conv_transpose(case):
    check_conv_like("ConvTranspose", "convT", case, out_channels=case[2][1] * case[3].get("group", 1))


@pytest.mark.parametrize("op,mode,shape", [("DepthToSpace", "DCR", (2, 8, 2, 3)), ("DepthToSpace", "CRD", (1, 12, 3, 2)),
                                           ("SpaceToDepth", None, (2, 3, 4, 6))])
def test_depth_space(op, mode, shape):
    rng = rng_for("d2s", op, mode)
    attrs = dict(blocksize=2) if mode is None else dict(blocksize=2, mode=mode)
    check_against_fd(single_op(op, shape, **attrs), randn(rng, *shape))


@pytest.mark.parametrize("opset,scale_len", [(18, "groups"), (21, "channels")])
def test_group_normalization(opset, scale_len):
    rng = rng_for("gn", opset)
    shape, groups = (2, 6, 3, 4), 3
    n = groups if scale_len == "groups" else shape[1]
    inits = {"s": f32(rng.uniform(0.5, 1.5, n)), "b": randn(rng, n)}
    m = single_op("GroupNormalization", shape, [X, "s", "b"], inits, opset=opset, num_groups=groups, epsilon=1e-3)
    check_against_fd(m, randn(rng, *shape), eps=2e-3, rtol=2e-3, atol_rel=2e-3)


def test_group_norm_as_torch_decomposes_it():
    """torch.onnx.export (opset 17): Reshape -> InstanceNormalization -> Reshape -> Mul -> Add."""
    rng = rng_for("gn_decomposed")
    nodes = [h.make_node("Reshape", [X, "gshape"], ["r"]),
             h.make_node("InstanceNormalization", ["r", "ones", "zeros"], ["inorm"], epsilon=1e-5),
             h.make_node("Reshape", ["inorm", "xshape"], ["back"]),
             h.make_node("Mul", ["back", "gamma"], ["m"]), h.make_node("Add", ["m", "beta"], [Y])]
    inits = {"gshape": np.array([0, 2, -1], np.int64), "ones": f32(np.ones(2)), "zeros": f32(np.zeros(2)),
             "xshape": np.array([0, 6, 3, 4], np.int64), "gamma": f32(rng.uniform(0.5, 1.5, (6, 1, 1))),
             "beta": randn(rng, 6, 1, 1)}
    check_against_fd(make_model(nodes, (2, 6, 3, 4), inits), randn(rng, 2, 6, 3, 4), eps=2e-3, rtol=2e-3,
                     atol_rel=2e-3)


@pytest.mark.parametrize("reps", [[1, 2, 1, 3], [1, 1, 2, 1], [2, 1, 1, 1]])
def test_tile(reps):
    rng = rng_for("tile", reps)
    m = single_op("Tile", (1, 2, 3, 2), [X, "r"], {"r": np.array(reps, np.int64)})
    check_against_fd(m, randn(rng, 1, 2, 3, 2), batched=reps[0] == 1)


@pytest.mark.parametrize("axis", [1, -1])
def test_gather_elements(axis):
    rng = rng_for("gather_el", axis)
    shape = (2, 3, 4)
    idx = rng.integers(-shape[axis], shape[axis], size=(2, 3, 5) if axis == -1 else (2, 5, 4))
    m = single_op("GatherElements", shape, [X, "i"], {"i": idx.astype(np.int64)}, axis=axis)
    check_against_fd(m, randn(rng, *shape), batched=False)  # the indices fix the batch size


@pytest.mark.parametrize("op", ["ScatterElements", "ScatterND"])
@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter(op, reduction):
    """y = scatter(x, indices, -1.5 * x[:, :, :2]): both data and updates depend on x."""
    rng = rng_for("scatter", op, reduction)
    shape = (2, 3, 4)
    if op == "ScatterElements":  # distinct positions per row, so 'none' is well defined
        idx = np.stack([rng.permutation(4)[:2] for _ in range(6)]).reshape(2, 3, 2)
        attrs = dict(axis=2)
    else:  # indices [2, 3, 2]: (n, c) pairs, each updated with a row of 2
        idx = np.array([[[0, 2], [1, 0], [1, 1]], [[0, 0], [1, 2], [0, 1]]])
        attrs = {}
    nodes = [h.make_node("Slice", [X, "s0", "s1", "ax"], ["sl"]), h.make_node("Mul", ["sl", "k"], ["upd"]),
             h.make_node("Pad", ["upd", "pads"], ["upd4"]) if op == "ScatterND" else h.make_node("Identity", ["upd"],
                                                                                                   ["upd4"]),
             h.make_node(op, [X, "i", "upd4"], [Y], reduction=reduction, **attrs)]
    inits = {"s0": np.array([0], np.int64), "s1": np.array([2], np.int64), "ax": np.array([2], np.int64),
             "i": idx.astype(np.int64), "k": f32(-1.5), "pads": np.array([0, 0, 0, 0, 0, 2], np.int64)}
    m = make_model(nodes, shape, inits)
    check_against_fd(m, randn(rng, *shape), batched=False)


@pytest.mark.parametrize("equation,shapes", [
    ("bij,bjk->bik", ((2, 3, 4), (2, 4, 5))),
    ("bhqd,bhkd->bhqk", ((1, 2, 3, 4), (1, 2, 5, 4))),
    ("bhqk,bhkd->bhqd", ((1, 2, 3, 5), (1, 2, 5, 4))),
    ("nchw->nhwc", ((1, 2, 3, 4),)),
    ("bij->bj", ((2, 3, 4),)),
    ("...ij,jk->...ik", ((1, 2, 3, 4), (4, 5))),
    ("bi,bi->b", ((2, 5), (2, 5))),
    ("ij,jk", ((2, 3), (3, 4))),  # implicit output: ik
])
def test_einsum(equation, shapes):
    """The first operand is x; the second a constant, or x itself when the shapes agree (both operands differentiated)."""
    rng = rng_for("einsum", equation)
    same = len(shapes) == 2 and shapes[0] == shapes[1]
    inputs = [X] + ([X] if same else ["B"] if len(shapes) == 2 else [])
    inits = {"B": randn(rng, *shapes[1])} if len(shapes) == 2 and not same else {}
    m = single_op("Einsum", shapes[0], inputs, inits, equation=equation)
    check_against_fd(m, randn(rng, *shapes[0]), batched=shapes[0][0] == 1 or "B" not in inits)


@pytest.mark.parametrize("op,attrs,opset", [
    ("LpPool", dict(kernel_shape=[2, 2], strides=[2, 2], p=2), 17),
    ("LpPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], p=3), 17),
    ("LpPool", dict(kernel_shape=[2, 2], p=1), 17),
    ("LpPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, dilations=[1, 1], p=2), 18),
    ("GlobalLpPool", dict(p=2), 17), ("GlobalLpPool", dict(p=3), 17),
])
def test_lp_pool(op, attrs, opset):
    rng = rng_for("lppool", op, str(attrs))
    m = single_op(op, (2, 2, 6, 6), opset=opset, **attrs)
    check_against_fd(m, away_from_zero(rng, (2, 2, 6, 6), 0.2, 1.5), eps=1e-3, rtol=2e-3, atol_rel=2e-3)


@pytest.mark.parametrize("p,axis", [(2, 1), (2, -1), (1, 1)])
def test_lp_normalization(p, axis):
    rng = rng_for("lpnorm", p, axis)
    check_against_fd(single_op("LpNormalization", XS, p=p, axis=axis), away_from_zero(rng, XS, 0.2, 1.5), eps=1e-3,
                     rtol=2e-3, atol_rel=2e-3)


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd"])
@pytest.mark.parametrize("axes,keepdims", [([2, 3], 1), ([1], 0)])
def test_smooth_reductions(op, axes, keepdims):
    rng = rng_for("reduce", op, axes, keepdims)
    m = single_op(op, XS, [X, "axes"], {"axes": np.array(axes, np.int64)}, opset=18, keepdims=keepdims)
    x = away_from_zero(rng, XS, 0.5, 1.5)
    check_against_fd(m, x, eps=1e-3, rtol=2e-3, atol_rel=2e-3)


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(exclusive, reverse):
    rng = rng_for("cumsum", exclusive, reverse)
    m = single_op("CumSum", XS, [X, "axis"], {"axis": np.array(2, np.int64)}, exclusive=exclusive, reverse=reverse)
    check_against_fd(m, randn(rng, *XS))


@pytest.mark.parametrize("upper,k", [(1, 0), (0, 1), (1, -1)])
def test_trilu(upper, k):
    rng = rng_for("trilu", upper, k)
    m = single_op("Trilu", (2, 3, 4, 5), [X, "k"], {"k": np.array(k, np.int64)}, upper=upper)
    check_against_fd(m, randn(rng, 2, 3, 4, 5))


@pytest.mark.parametrize("largest,axis", [(1, -1), (0, 1)])
def test_topk_values(largest, axis):
    rng = rng_for("topk", largest, axis)
    nodes = [h.make_node("TopK", [X, "k"], [Y, "idx"], axis=axis, largest=largest)]
    m = make_model(nodes, (2, 5, 6), {"k": np.array([3], np.int64)})
    check_against_fd(m, distinct(rng, (2, 5, 6), gap=0.1))


CUBIC_CASES = [
    ("up2_half_pixel", (1, 2, 3, 4), [1, 1, 2, 2], {}),
    ("up2.5_a-0.5_align", (1, 1, 4, 3), [1, 1, 2.5, 2], dict(cubic_coeff_a=-0.5, coordinate_transformation_mode="align_corners")),
    ("up2_exclude_outside", (2, 2, 3, 3), [1, 1, 2, 2], dict(exclude_outside=1)),
    ("down_pytorch_half_pixel", (1, 2, 8, 6), [1, 1, 0.5, 0.5], dict(coordinate_transformation_mode="pytorch_half_pixel")),
    ("up3_asymmetric", (1, 1, 3, 4), [1, 1, 3, 3], dict(coordinate_transformation_mode="asymmetric")),
]


@pytest.mark.parametrize("case", CUBIC_CASES, ids=[c[0] for c in CUBIC_CASES])
def test_cubic_resize(case):
    name, shape, scales, attrs = case
    rng = rng_for("cubic", name)
    m = single_op("Resize", shape, [X, "", "scales"], {"scales": f32(scales)}, mode="cubic", **attrs)
    check_against_fd(m, randn(rng, *shape))


@pytest.mark.parametrize("scales", [[1, 1, 2, 1.5], [1, 1, 0.5, 0.75]])
def test_resize_tf_half_pixel_for_nn(scales):
    """coordinate_transformation_mode tf_half_pixel_for_nn (opset 11-12, TensorFlow's nearest resize): the source
    index is (i + 0.5) / scale; it used to end in a bare ValueError."""
    rng = rng_for("tf_half_pixel_for_nn", scales)
    m = single_op("Resize", (1, 2, 4, 4), [X, "roi", "scales"], {"roi": f32([]), "scales": f32(scales)}, opset=11,
                  mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn")
    check_against_fd(m, randn(rng, 1, 2, 4, 4))


def test_resize_crop_is_refused_by_name():
    m = single_op("Resize", (1, 2, 4, 4), [X, "roi", "scales"], {"roi": f32([0, 0, 0, 0, 1, 1, 1, 1]),
                  "scales": f32([1, 1, 2, 2])}, opset=11, mode="linear",
                  coordinate_transformation_mode="tf_crop_and_resize")
    with pytest.raises(UnsupportedOpError, match="Resize node 'the_resize'.*tf_crop_and_resize"):
        build_vjp(m)


ANTIALIAS_CASES = [
    ("linear_down_half", (1, 2, 8, 8), [1, 1, 0.5, 0.5], dict(mode="linear")),
    ("linear_down_0.375", (1, 1, 8, 9), [1, 1, 0.375, 0.5], dict(mode="linear")),
    ("cubic_down_half_a-0.5", (1, 2, 8, 8), [1, 1, 0.5, 0.5], dict(mode="cubic", cubic_coeff_a=-0.5)),
    ("cubic_down_pytorch", (1, 1, 9, 7), [1, 1, 0.4, 0.6], dict(mode="cubic",
                                                               coordinate_transformation_mode="pytorch_half_pixel")),
    ("linear_up_2", (1, 1, 3, 4), [1, 1, 2, 2], dict(mode="linear")),
    ("cubic_down_exclude_outside", (1, 2, 8, 6), [1, 1, 0.5, 0.5], dict(mode="cubic", exclude_outside=1)),
]


@pytest.mark.parametrize("case", ANTIALIAS_CASES, ids=[c[0] for c in ANTIALIAS_CASES])
def test_antialiased_resize(case):
    """Resize with antialias=1 (opset 18; torch's interpolate(antialias=True))."""
    name, shape, scales, attrs = case
    rng = rng_for("antialias", name)
    m = single_op("Resize", shape, [X, "", "scales"], {"scales": f32(scales)}, opset=18, antialias=1, **attrs)
    check_against_fd(m, randn(rng, *shape))


def test_cast_like_mean_sin_cos():
    rng = rng_for("castlike")
    nodes = [h.make_node("CastLike", [X, "like"], ["c"]), h.make_node("Sin", ["c"], ["s"]),
             h.make_node("Cos", [X], ["k"]), h.make_node("Mean", ["s", "k", "b"], [Y])]
    m = make_model(nodes, XS, {"like": f32(0), "b": randn(rng, 3, 1, 1)})
    check_against_fd(m, randn(rng, *XS, scale=2.0), eps=1e-3, rtol=2e-3, atol_rel=2e-3)


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_log_sum(keepdims):
    rng = rng_for("logsum", keepdims)
    m = single_op("ReduceLogSum", XS, [X, "axes"], {"axes": np.array([1, 3], np.int64)}, opset=18, keepdims=keepdims)
    check_against_fd(m, f32(rng.uniform(0.5, 2.0, XS)), eps=1e-3, rtol=2e-3, atol_rel=2e-3)


def test_mean_variance_normalization():
    rng = rng_for("mvn")
    m = single_op("MeanVarianceNormalization", XS, axes=[2, 3])
    check_against_fd(m, randn(rng, *XS), eps=2e-3, rtol=2e-3, atol_rel=2e-3)


def test_gather_nd():
    rng = rng_for("gathernd")
    idx = np.array([[[0, 1], [1, 2], [0, 1]], [[1, 0], [0, 0], [1, 1]]], np.int64)  # [2, 3, 2]: repeats add
    m = single_op("GatherND", (2, 3, 4), [X, "i"], {"i": idx})
    check_against_fd(m, randn(rng, 2, 3, 4), batched=False)


def test_einsum_broadcast_is_refused_by_name():
    """Ellipsis dimensions that broadcast (2 against 1) would need a sum the rule does not build: refused."""
    m = single_op("Einsum", (1, 2, 3, 4), [X, "B"], {"B": f32(np.ones((1, 1, 4, 5)))}, equation="...ij,...jk->...ik")
    with pytest.raises(UnsupportedOpError, match="broadcasting inside Einsum"):
        build_vjp(m)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("method", ["ig", "gnl-ig-all"])
def test_reduction_with_noop_with_empty_axes_passes_the_gradient(op, method):
    """No axes and noop_with_empty_axes=1 (opset 18): the input passes unchanged, and so does the gradient, with
    or without an empty axes input. (Down-converted to opset 17 the attribute used to stay behind on ReduceMean
    and ReduceMax, an invalid graph onnxruntime refused.)"""
    from oracles import vjp

    rng = rng_for("noop", op, method)
    x, g = randn(rng, *XS), randn(rng, *XS)
    for inputs, inits in (([X], {}), ([X, "axes"], {"axes": np.zeros(0, np.int64)})):
        m = single_op(op, XS, inputs, inits, opset=18, noop_with_empty_axes=1)
        got, y = vjp(m, x, g, method)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_allclose(got, g, rtol=1e-6, atol=1e-7)
