"""Shared helpers for the rule tests: tiny ONNX models, onnxruntime runs, finite-difference oracles.

The oracle for a plain rule is a central finite difference of f(x) = sum(cotangent * y(x))
computed with onnxruntime forward passes of the *original* model. Every perturbed input
x +/- eps * e_i goes into one batch (the batch dimension is symbolic), so the whole
finite-difference gradient of a small tensor costs one run.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper

from onnx_gig.autodiff import get_rule_set, vjp_model
from onnx_gig.loader import normalise

OPSET = 17
X = "x"
Y = "y"


# -- building models ----------------------------------------------------------------
def make_model(nodes: Sequence[onnx.NodeProto], x_shape: Sequence, inits: Optional[Mapping[str, np.ndarray]] = None,
               outputs: Iterable[str] = (Y,), batch: object = "N", opset: int = OPSET) -> onnx.ModelProto:
    """A float32 model with one input ``x`` (first dim ``batch``: symbolic by default) and untyped-shape outputs."""
    dims = [batch] + [int(d) for d in x_shape[1:]]
    graph = h.make_graph(
        list(nodes), "t",
        [h.make_tensor_value_info(X, TensorProto.FLOAT, dims)],
        [h.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 17 else 10
    return m


def single_op(op: str, x_shape: Sequence, inputs: Sequence[str] = (X,), inits: Optional[Mapping] = None,
              batch: object = "N", opset: int = OPSET, **attrs) -> onnx.ModelProto:
    """A model made of one ``op`` node whose inputs are ``x`` and named initializers (``""`` = omitted)."""
    node = h.make_node(op, list(inputs), [Y], name=f"the_{op.lower()}", **attrs)
    return make_model([node], x_shape, inits, batch=batch, opset=opset)


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


# -- running -------------------------------------------------------------------------
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])


def forward(model: onnx.ModelProto, x: np.ndarray, output: str = Y) -> np.ndarray:
    return session(model).run([output], {X: f32(x)})[0]


def build_vjp(model: onnx.ModelProto, method: str = "ig") -> onnx.ModelProto:
    """The stand-alone VJP model of ``model`` (normalised first) under rule set ``method``."""
    fg = normalise(model, input_name=X, output_name=model.graph.output[0].name)
    return vjp_model(fg.model, get_rule_set(method), of=fg.output_names[0])


def vjp(model: onnx.ModelProto, x: np.ndarray, cot: np.ndarray, method: str = "ig") -> tuple[np.ndarray, np.ndarray]:
    """(gradient of sum(cot * y) w.r.t. x, y) from the rule set's backward graph run in onnxruntime."""
    vm = build_vjp(model, method)
    out_name = vm.graph.output[1].name
    grad, y = session(vm).run(["gradient", out_name], {X: f32(x), "cotangent": f32(cot)})
    return grad, y


def fd_gradient(model: onnx.ModelProto, x: np.ndarray, cot: np.ndarray, eps: float = 1e-2,
                batched: bool = True) -> np.ndarray:
    """Central finite differences of sum(cot * y) w.r.t. ``x``, computed in float64 from float32 runs.

    ``batched``: stack all 2*x.size perturbed copies of ``x`` along the batch axis and run once
    (valid when batch items are independent and the output keeps the batch first); otherwise
    run each perturbation on its own.
    """
    x = f32(x)
    n = x.size
    pert = np.repeat(x.reshape(1, -1), 2 * n, axis=0)
    idx = np.arange(n)
    pert[2 * idx, idx] += np.float32(eps)
    pert[2 * idx + 1, idx] -= np.float32(eps)
    steps = (pert[2 * idx, idx].astype(np.float64) - pert[2 * idx + 1, idx].astype(np.float64))  # the real 2*eps
    pert = pert.reshape((2 * n,) + x.shape)
    sess = session(model)
    cot64 = np.asarray(cot, np.float64)
    if batched:
        y = sess.run([Y], {X: pert.reshape((2 * n * x.shape[0],) + x.shape[1:])})[0]
        y = y.reshape((2 * n,) + cot64.shape).astype(np.float64)
    else:
        y = np.stack([sess.run([Y], {X: p})[0] for p in pert]).astype(np.float64)
    f = (y * cot64).reshape(2 * n, -1).sum(1)
    return ((f[0::2] - f[1::2]) / steps).reshape(x.shape)


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-3, atol_rel: float = 1e-3, what: str = "") -> None:
    """allclose with an absolute tolerance scaled by the reference's largest magnitude (float32 rounding)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol_rel * max(scale, 1e-6), err_msg=what)


def check_against_fd(model: onnx.ModelProto, x: np.ndarray, eps: float = 1e-2, seed: int = 0, batched: bool = True,
                     rtol: float = 1e-3, atol_rel: float = 1e-3, method: str = "ig") -> tuple[np.ndarray, np.ndarray]:
    """Check the rule set's VJP of ``model`` at ``x`` against finite differences; return (vjp, fd)."""
    x = f32(x)
    y_ref = forward(model, x)
    cot = np.random.default_rng(seed + 1000).standard_normal(y_ref.shape).astype(np.float32)
    grad, y = vjp(model, x, cot, method)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6, err_msg="the VJP model's forward output")
    fd = fd_gradient(model, x, cot, eps, batched)
    assert np.max(np.abs(fd)) > 1e-3, "degenerate test: the finite-difference gradient is zero"
    assert_close(grad, fd, rtol, atol_rel, what="VJP vs finite differences")
    return grad, fd


# -- inputs that keep finite differences away from kinks and ties -----------------------
def away_from_zero(rng: np.random.Generator, shape, lo: float = 0.05, hi: float = 1.5) -> np.ndarray:
    """Mixed-sign values with |v| in [lo, hi]."""
    return f32(rng.choice([-1.0, 1.0], size=shape) * rng.uniform(lo, hi, size=shape))


def distinct(rng: np.random.Generator, shape, gap: float = 0.05) -> np.ndarray:
    """Values all distinct, pairwise separated by at least ``gap`` (max-pool without ties), mixed sign."""
    n = int(np.prod(shape))
    return f32((rng.permutation(n) - n / 2.0 + 0.5) * gap).reshape(shape)


def away_from(rng: np.random.Generator, shape, lo: float, hi: float, kinks: Sequence[float], margin: float = 0.05):
    """Uniform values in [lo, hi] at least ``margin`` from every kink."""
    v = rng.uniform(lo, hi, size=shape)
    for k in kinks:
        near = np.abs(v - k) < margin
        v[near] = k + np.where(v[near] >= k, margin, -margin) * 2
    return f32(v)


# -- independent max-pool reference (numpy loops) ------------------------------------------
def pool_out_size(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil_mode: bool) -> int:
    span = size + pb + pe - ((k - 1) * d + 1)
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= size + pb:
        o -= 1
    return o


def maxpool_argmax(x: np.ndarray, kernel, strides, pads, dilations=(1, 1), ceil_mode: bool = False):
    """Max-pool forward by explicit loops: returns (y, arg) with arg[n, c, oh, ow] = (i, j) of the window's max."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    pt, pl, pb, pr = pads
    OH = pool_out_size(H, kh, sh, dh, pt, pb, ceil_mode)
    OW = pool_out_size(W, kw, sw, dw, pl, pr, ceil_mode)
    y = np.empty((N, C, OH, OW), x.dtype)
    arg = np.empty((N, C, OH, OW, 2), np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, where = -np.inf, None
                    for a in range(kh):
                        i = oh * sh - pt + a * dh
                        if not 0 <= i < H:
                            continue
                        for b in range(kw):
                            j = ow * sw - pl + b * dw
                            if 0 <= j < W and x[n, c, i, j] > best:
                                best, where = x[n, c, i, j], (i, j)
                    y[n, c, oh, ow] = best
                    arg[n, c, oh, ow] = where
    return y, arg


def maxpool_scatter(g: np.ndarray, arg: np.ndarray, x_shape) -> np.ndarray:
    """Send each g[n, c, oh, ow] to its window's arg-max, adding where windows share one (float64)."""
    out = np.zeros(x_shape, np.float64)
    N, C, OH, OW = g.shape
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    i, j = arg[n, c, oh, ow]
                    out[n, c, i, j] += g[n, c, oh, ow]
    return out
