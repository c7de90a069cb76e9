"""Resize family: nearest, linear and cubic Resize/Upsample with static sizes, as interpolation matrices.

Resize is linear in its input: along each resized axis out = M @ in with M built here exactly as ONNX
computes it, so the gradient is g @ M along that axis (common.scatter_along).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .common import constant_params, scatter_along, static
from .registry import GradContext, register


def _source_coordinate(mode: str, i: np.ndarray, scale: float, in_size: int, out_size: int) -> np.ndarray:
    """The input coordinate of each output index, in float32 as onnxruntime computes it: a nearest pick
    (floor, rounding) of a coordinate a float64 computation puts just below an integer would differ."""
    i, scale = np.asarray(i, np.float32), np.float32(scale)
    n, m = np.float32(in_size), np.float32(out_size)
    half, one, zero = np.float32(0.5), np.float32(1), np.zeros_like(i)  # float32 constants under numpy 1 and 2
    if mode == "asymmetric":
        x = i / scale
    elif mode == "tf_half_pixel_for_nn":  # opset 11-12 (TensorFlow's nearest resize)
        x = (i + half) / scale
    elif mode == "half_pixel":
        x = (i + half) / scale - half
    elif mode == "pytorch_half_pixel":
        x = (i + half) / scale - half if out_size > 1 else zero
    elif mode == "align_corners":
        x = i * (n - one) / (m - one) if out_size > 1 else zero
    elif mode == "half_pixel_symmetric":
        adj = m / (scale * n)
        off = n * half * (one - adj)
        x = off + (i + half) / scale - half
    else:
        raise ValueError(mode)
    return x.astype(np.float64)


_CTMS = ("asymmetric", "tf_half_pixel_for_nn", "half_pixel", "pytorch_half_pixel", "align_corners",
         "half_pixel_symmetric")


def _nearest(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    return np.ceil(x - 0.5)  # round_prefer_floor (the default)


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 around a point t in [0, 1) past the floor."""
    def w(d):
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    return np.stack([w(t + 1), w(t), w(1 - t), w(2 - t)], axis=1)


def resize_matrix(in_size: int, out_size: int, scale: float, mode: str, ctm: str, nearest_mode: str,
                  cubic_a: float = -0.75, exclude_outside: bool = False) -> np.ndarray:
    """[out, in] weights with out = M @ in along one axis, as ONNX Resize computes it (no antialias).

    Cubic: Keys' kernel with ``cubic_a``; taps outside the input repeat the edge, or with ``exclude_outside``
    get weight 0 and the rest are renormalised.
    """
    i = np.arange(out_size, dtype=np.float64)
    xs = _source_coordinate(ctm, i, scale, in_size, out_size)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if mode == "nearest":
        j = np.clip(_nearest(xs, nearest_mode).astype(np.int64), 0, in_size - 1)
        m[rows, j] = 1
    elif mode == "cubic":
        j0 = np.floor(xs).astype(np.int64)
        w = _cubic_weights(xs - j0, cubic_a)
        taps = j0[:, None] + np.arange(-1, 3)[None, :]
        if exclude_outside:
            w = np.where((taps >= 0) & (taps < in_size), w, 0.0)
            w = w / w.sum(1, keepdims=True)
        np.add.at(m, (np.repeat(rows, 4), np.clip(taps, 0, in_size - 1).reshape(-1)), w.reshape(-1))
    else:  # linear
        xs = np.clip(xs, 0, in_size - 1)
        j0 = np.floor(xs).astype(np.int64)
        j1 = np.minimum(j0 + 1, in_size - 1)
        w1 = xs - j0
        np.add.at(m, (rows, j0), 1 - w1)
        np.add.at(m, (rows, j1), w1)
    return m.astype(np.float32)


def antialias_matrix(in_size: int, out_size: int, scale: float, mode: str, ctm: str, cubic_a: float,
                     exclude_outside: bool = False) -> np.ndarray:
    """[out, in] weights of an antialiased linear/cubic Resize as onnxruntime computes it: the filter stretched
    by 1/scale when shrinking and normalised to sum 1; taps past the edge repeat the edge value, or with
    ``exclude_outside`` are dropped and the rest renormalised."""
    shrink = 1.0 / scale
    half = (1.0 if mode == "linear" else 2.0) * max(shrink, 1.0)
    stretch = 1.0 / shrink if shrink >= 1.0 else 1.0
    m = np.zeros((out_size, in_size), np.float64)
    centers = _source_coordinate(ctm, np.arange(out_size, dtype=np.float64), scale, in_size, out_size) + 0.5
    for i, c in enumerate(centers):
        taps = np.arange(int(np.floor(c - half + 0.5)), int(np.floor(c + half + 0.5)))
        d = np.abs((taps - c + 0.5) * stretch)
        if mode == "linear":
            w = np.maximum(0.0, 1.0 - d)
        else:
            w = np.where(d < 1, ((cubic_a + 2) * d - (cubic_a + 3)) * d * d + 1,
                         np.where(d < 2, ((cubic_a * d - 5 * cubic_a) * d + 8 * cubic_a) * d - 4 * cubic_a, 0.0))
        if exclude_outside:
            w = np.where((taps >= 0) & (taps < in_size), w, 0.0)
        if w.sum() != 0:
            np.add.at(m[i], np.clip(taps, 0, in_size - 1), w / w.sum())
    return m.astype(np.float32)


@register("Resize", "Upsample")
def resize(ctx: GradContext):
    constant_params(ctx, "scales and sizes")
    x, y = ctx.I(0), ctx.O(0)
    sx, sy = ctx.shape(x), ctx.shape(y)
    rank = len(sx)
    mode = ctx.attr("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel" if ctx.node.op == "Resize" else "asymmetric")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor" if ctx.node.op == "Resize" else "floor")
    nearest_mode = nearest_mode.decode() if isinstance(nearest_mode, bytes) else nearest_mode
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    antialias = bool(int(ctx.attr("antialias", 0))) and mode != "nearest"
    if mode not in ("nearest", "linear", "cubic") or ctm not in _CTMS \
            or ctx.attr("axes") is not None or policy != "stretch":
        raise ctx.fail(f"only nearest/linear/cubic resizing without crop or axes is supported (mode '{mode}', "
                       f"coordinate_transformation_mode '{ctm}')")
    scales = None
    if ctx.node.op == "Resize" and ctx.has_input(2):
        scales = ctx.const_value(2)
    elif ctx.node.op == "Upsample":
        scales = ctx.const_value(1) if ctx.has_input(1) else np.asarray(ctx.attr("scales"), np.float32)
    if scales is not None and scales.size == 0:
        scales = None
    g = ctx.GO(0)
    for a in range(rank):
        if (scales is not None and float(scales[a]) == 1.0) or (scales is None and sx[a] == sy[a]) \
                or (scales is None and a == 0 and not static(sx[a])):
            continue
        if a >= 2 and not (static(sx[a]) and static(sy[a])) and not antialias and mode != "cubic" \
                and ctm in _RUNTIME_CTMS:
            g = scatter_along(ctx, g, a, rank, _runtime_matrix(ctx, a, None if scales is None else float(scales[a]),
                                                                mode, ctm, nearest_mode))
            continue
        if a < 2 or not (static(sx[a]) and static(sy[a])):
            raise ctx.fail(f"needs static spatial sizes and no resizing of batch or channels, got {sx} -> {sy}")
        scale = float(scales[a]) if scales is not None else int(sy[a]) / int(sx[a])
        cubic_a = float(ctx.attr("cubic_coeff_a", -0.75))
        exclude = bool(int(ctx.attr("exclude_outside", 0)))
        m = antialias_matrix(int(sx[a]), int(sy[a]), scale, mode, ctm, cubic_a, exclude) if antialias else \
            resize_matrix(int(sx[a]), int(sy[a]), scale, mode, ctm, nearest_mode, cubic_a, exclude)
        g = scatter_along(ctx, g, a, rank, m)
    return [g] + [None] * (len(ctx.node.inputs) - 1)


# -- sizes known only at run time -----------------------------------------------------------------------------
F = np.float32
_RUNTIME_CTMS = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners")
_ROUNDING = {"round_prefer_floor": lambda e, v: e.op("Ceil", [e.sub(v, F(0.5))]),
             "round_prefer_ceil": lambda e, v: e.op("Floor", [e.add(v, F(0.5))]),
             "floor": lambda e, v: e.op("Floor", [v]), "ceil": lambda e, v: e.op("Ceil", [v])}


def _runtime_matrix(ctx: GradContext, axis: int, scale, mode: str, ctm: str, nearest_mode: str):
    """``resize_matrix`` for nearest/linear resizing along ``axis`` when a size is known only at run time:
    the same source coordinates and taps, computed from Shape(x) and Shape(y), as OneHot rows ([out, in])."""
    e = ctx.e

    def scalar(v):  # a 0-D constant (Emitter.const makes 1-D ones; Range wants scalars)
        return gs.Constant(e.name("scalar"), np.asarray(v))

    n_int = e.op("Gather", [e.shape(ctx.I(0)), scalar(np.int64(axis))], {"axis": 0})
    m_int = e.op("Gather", [e.shape(ctx.O(0)), scalar(np.int64(axis))], {"axis": 0})
    n, m = e.cast(n_int), e.cast(m_int)
    i = e.cast(e.op("Range", [scalar(np.int64(0)), m_int, scalar(np.int64(1))]))
    s = e.div(m, n) if scale is None else e.const(F(scale))
    if ctm == "asymmetric":
        xs = e.div(i, s)
    elif ctm == "align_corners":  # i (n - 1) / (m - 1), 0 when m == 1
        xs = e.div(e.mul(i, e.sub(n, F(1))), e.op("Max", [e.sub(m, F(1)), e.const(F(1))]))
    else:
        xs = e.sub(e.div(e.add(i, F(0.5)), s), F(0.5))
        if ctm == "pytorch_half_pixel":
            xs = e.op("Where", [e.greater(m, F(1)), xs, e.const(F(0))])
    last = e.sub(n, F(1))
    one_hot = lambda j: e.op("OneHot", [e.cast(j, np.int64), n_int, e.const(np.asarray([0, 1], F))], {"axis": -1})  # noqa: E731
    if mode == "nearest":
        return one_hot(e.op("Clip", [_ROUNDING[nearest_mode](e, xs), e.const(F(0)), last]))
    xs = e.op("Clip", [xs, e.const(F(0)), last])
    j0 = e.op("Floor", [xs])
    w1 = e.unsqueeze(e.sub(xs, j0), [1])
    j1 = e.op("Min", [e.add(j0, F(1)), last])
    return e.add(e.mul(one_hot(j0), e.sub(F(1), w1)), e.mul(one_hot(j1), w1))
