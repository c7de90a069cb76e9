"""Resize family: nearest and linear Resize/Upsample with static sizes, as interpolation matrices.

Resize is linear in its input: along each resized axis out = M @ in with M built here exactly as ONNX
computes it, so the gradient is g @ M along that axis (common.scatter_along).
"""
from __future__ import annotations

import numpy as np

from .common import constant_params, scatter_along, static
from .registry import GradContext, register


def _source_coordinate(mode: str, i: np.ndarray, scale: float, in_size: int, out_size: int) -> np.ndarray:
    if mode == "asymmetric":
        return i / scale
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(i, dtype=np.float64)
    if mode == "align_corners":
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(i, dtype=np.float64)
    if mode == "half_pixel_symmetric":
        adj = out_size / (scale * in_size)
        center = in_size / 2
        off = center * (1 - adj)
        return off + (i + 0.5) / scale - 0.5
    raise ValueError(mode)


def _nearest(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    return np.ceil(x - 0.5)  # round_prefer_floor (the default)


def resize_matrix(in_size: int, out_size: int, scale: float, mode: str, ctm: str, nearest_mode: str) -> np.ndarray:
    """[out, in] weights with out = M @ in along one axis, as ONNX Resize computes it (no antialias)."""
    i = np.arange(out_size, dtype=np.float64)
    xs = _source_coordinate(ctm, i, scale, in_size, out_size)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if mode == "nearest":
        j = np.clip(_nearest(xs, nearest_mode).astype(np.int64), 0, in_size - 1)
        m[rows, j] = 1
    else:  # linear
        xs = np.clip(xs, 0, in_size - 1)
        j0 = np.floor(xs).astype(np.int64)
        j1 = np.minimum(j0 + 1, in_size - 1)
        w1 = xs - j0
        np.add.at(m, (rows, j0), 1 - w1)
        np.add.at(m, (rows, j1), w1)
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
    if mode not in ("nearest", "linear") or int(ctx.attr("antialias", 0)) or ctm == "tf_crop_and_resize" \
            or ctx.attr("axes") is not None or policy != "stretch":
        raise ctx.fail(f"only nearest/linear resizing without antialias, crop or axes is supported (mode '{mode}', "
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
        if a < 2 or not (static(sx[a]) and static(sy[a])):
            raise ctx.fail(f"needs static spatial sizes and no resizing of batch or channels, got {sx} -> {sy}")
        scale = float(scales[a]) if scales is not None else int(sy[a]) / int(sx[a])
        m = resize_matrix(int(sx[a]), int(sy[a]), scale, mode, ctm, nearest_mode)
        g = scatter_along(ctx, g, a, rank, m)
    return [g] + [None] * (len(ctx.node.inputs) - 1)
