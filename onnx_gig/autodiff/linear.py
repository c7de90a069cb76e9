"""Linear family: convolutions and matrix products (Conv, Gemm, MatMul).

Only input gradients are built (weights are constants at attribution time): the transposed map. A Conv's
input gradient is a ConvTranspose with explicit pads and output_padding, or, for stride 1, a Conv with the
flipped, channel-swapped kernel (faster, and it keeps onnxruntime's blocked layout).
"""
from __future__ import annotations

import string

import numpy as np
import onnx_graphsurgeon as gs

from . import common
from .common import conv_geometry, transpose_padding
from .registry import GradContext, register


@register("Conv")
def conv(ctx: GradContext):
    if ctx.needs(1) or ctx.needs(2):
        raise ctx.fail("gradients with respect to convolution weights are not supported (weights must be constants)")
    x, w = ctx.I(0), ctx.I(1)
    kernel = [int(k) for k in ctx.shape(w)[2:]]
    group = int(ctx.attr("group", 1))
    if ctx.static_spatial(x) is None:
        return [_dynamic_conv_backward(ctx, w, kernel, group)]
    strides, dil, pads, out = conv_geometry(ctx, x, kernel)
    pads, opad = transpose_padding(ctx.spatial(x), out, kernel, strides, dil, pads)
    n = len(kernel)
    # the transposed convolution as a stride-1 Conv over g with the flipped, channel-swapped kernel:
    # pads (k-1)d - p (begin) and (k-1)d - p + output_padding (end); ~3x faster than ConvTranspose on
    # CPU for depthwise kernels, 1.4x for dense ones, and it keeps onnxruntime's blocked (NCHWc) layout
    back_pads = [(k - 1) * d - p for k, d, p in zip(kernel, dil, pads[:n])] + \
                [(k - 1) * d - p + o for k, d, p, o in zip(kernel, dil, pads[n:], opad)]
    # (strided convolutions keep ConvTranspose: zero insertion + Conv measured no faster, even depthwise)
    if common.FAST_PATHS and min(back_pads) >= 0 and all(s == 1 for s in strides):
        return [ctx.e.op("Conv", [ctx.GO(0), _backward_kernel(ctx, w, group, kernel)], {
            "strides": [1] * n, "dilations": dil, "pads": back_pads, "group": group, "kernel_shape": kernel})]
    if isinstance(w, gs.Constant) and ctx.shape(w)[0] == ctx.shape(w)[1] * group:
        # OpenVINO computes a ConvTranspose wrongly when it shares a square weight with a Conv: own copy
        w = ctx.e.const(np.array(w.values, copy=True), hint="convT_w")
    return [ctx.e.op("ConvTranspose", [ctx.GO(0), w], {
        "strides": strides, "dilations": dil, "pads": pads, "output_padding": opad,
        "group": group, "kernel_shape": kernel})]


def _dynamic_conv_backward(ctx: GradContext, w, kernel: list[int], group: int):
    """A Conv's input gradient when the image size is only known at run time.

    Stride 1 needs no size: output_padding is 0 and the pads are the forward ones, so it is the static
    rule's flipped-kernel Conv. Strided: the full transposed map cropped to the input (common.transposed_to_input).
    """
    n = len(kernel)
    strides, dil = common._ints(ctx, "strides", n, 1), common._ints(ctx, "dilations", n, 1)
    begin = common.runtime_begin_pads(ctx, ctx.I(0), kernel, strides, dil)
    if all(s == 1 for s in strides) and isinstance(begin, list):
        auto = common._auto_pad(ctx)
        end = [(k - 1) * d - b for k, d, b in zip(kernel, dil, begin)] if auto.startswith("SAME") else \
            ([0] * n if auto == "VALID" else common._ints(ctx, "pads", 2 * n, 0)[n:])
        back_pads = [(k - 1) * d - p for k, d, p in zip(kernel + kernel, dil + dil, begin + end)]
        if common.FAST_PATHS and min(back_pads) >= 0:
            return ctx.e.op("Conv", [ctx.GO(0), _backward_kernel(ctx, w, group, kernel)], {
                "strides": [1] * n, "dilations": dil, "pads": back_pads, "group": group, "kernel_shape": kernel})
    return common.transposed_to_input(ctx, ctx.GO(0), w, kernel, group)


def _backward_kernel(ctx: GradContext, w, group: int, kernel: list[int]):
    """W [Cout, Cin/G, k...] -> [Cin, Cout/G, k...]: per group in/out channels swapped, spatial axes reversed.

    Built with graph ops on W, which onnxruntime folds into one initializer when the session is made,
    so the file keeps a single copy of the weights.
    """
    e = ctx.e
    cout, cin_g = (int(d) for d in ctx.shape(w)[:2])
    cout_g, n = cout // group, len(kernel)
    if cin_g == 1 and cout_g == 1:  # depthwise with multiplier 1: the layout is already right
        wt = w
    elif group == 1:
        wt = e.transpose(w, [1, 0] + list(range(2, 2 + n)))
    else:
        wt = e.reshape(w, [group, cout_g, cin_g] + kernel)
        wt = e.transpose(wt, [0, 2, 1] + list(range(3, 3 + n)))
        wt = e.reshape(wt, [group * cin_g, cout_g] + kernel)
    axes = [2 + i for i, k in enumerate(kernel) if k > 1]
    if axes:
        wt = e.slice(wt, [-1] * len(axes), [np.iinfo(np.int64).min] * len(axes), axes, [-1] * len(axes))
    return wt


@register("Gemm")
def gemm(ctx: GradContext):
    e, g = ctx.e, ctx.GO(0)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    ga = gb = gc = None
    if ctx.needs(0):  # dA' = alpha * g @ B'^T
        ga = e.op("Gemm", [g, ctx.I(1)], {"alpha": alpha, "transB": 1 - tb})
        ga = e.transpose(ga, [1, 0]) if ta else ga
    if ctx.needs(1):  # dB' = alpha * A'^T @ g
        gb = e.op("Gemm", [ctx.I(0), g], {"alpha": alpha, "transA": 1 - ta})
        gb = e.transpose(gb, [1, 0]) if tb else gb
    if ctx.needs(2):
        gc = ctx.unbroadcast(e.mul(g, np.float32(beta)) if beta != 1.0 else g, ctx.I(2), ctx.O(0))
    return [ga, gb, gc]


def _swap_last(e, t, rank: int):
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return e.transpose(t, perm)


@register("MatMul")
def matmul(ctx: GradContext):
    a, b, y, g, e = ctx.I(0), ctx.I(1), ctx.O(0), ctx.GO(0), ctx.e
    ra, rb = len(ctx.shape(a)), len(ctx.shape(b))
    if ra < 2 or rb < 2:
        raise ctx.fail("MatMul with a 1-D operand is not supported")
    ga = ctx.unbroadcast(e.op("MatMul", [g, _swap_last(e, b, rb)]), a, y) if ctx.needs(0) else None
    gb = ctx.unbroadcast(e.op("MatMul", [_swap_last(e, a, ra), g]), b, y) if ctx.needs(1) else None
    return [ga, gb]


@register("ConvTranspose")
def conv_transpose(ctx: GradContext):
    """ConvTranspose is the adjoint of a Conv with the same weight: dx = Conv(g, W) with its strides,
    dilations and group, begin pad = the ConvTranspose's begin crop, end pad = whatever lands on x's size.

    Every attribute (pads, auto_pad, output_padding, output_shape) only moves where the transposed output is
    cropped; the begin crop is all the gradient needs (onnxruntime's placement: SAME_UPPER puts the smaller
    half first, SAME_LOWER and a bare output_shape the larger), the end follows from the static sizes.
    """
    if ctx.needs(1) or ctx.needs(2):
        raise ctx.fail("gradients with respect to transposed-convolution weights are not supported "
                       "(weights must be constants)")
    x, w, e = ctx.I(0), ctx.I(1), ctx.e
    spatial, out = ctx.spatial(x), ctx.spatial(ctx.O(0))
    n = len(spatial)
    kernel = [int(k) for k in (ctx.attr("kernel_shape") or ctx.shape(w)[2:])]
    strides = [int(s) for s in ctx.attr("strides", [1] * n)]
    dil = [int(d) for d in ctx.attr("dilations", [1] * n)]
    auto = ctx.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    full = [s * (h - 1) + (k - 1) * d + 1 for s, h, k, d in zip(strides, spatial, kernel, dil)]
    if auto in ("SAME_UPPER", "SAME_LOWER") or ctx.attr("output_shape") is not None:
        opad = [int(p) for p in ctx.attr("output_padding", [0] * n)]
        total = [f + p - o for f, p, o in zip(full, opad, out)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    elif auto == "VALID":
        begin = [0] * n
    else:
        begin = [int(p) for p in ctx.attr("pads", [0] * (2 * n))[:n]]
    end = [f - b - o for f, b, o in zip(full, begin, out)]  # so that Conv(g) has exactly x's spatial size
    g = ctx.GO(0)
    crop = [(i, max(0, -b), o - max(0, -en)) for i, (b, en, o) in enumerate(zip(begin, end, out)) if b < 0 or en < 0]
    if crop:  # output positions no input reaches (an output_shape larger than the full transposed output)
        g = e.slice(g, [c[1] for c in crop], [c[2] for c in crop], [2 + c[0] for c in crop])
    pads = [max(0, b) for b in begin] + [max(0, en) for en in end]
    group = int(ctx.attr("group", 1))
    w = common.unshared_weight(ctx, w, group, "conv_w")
    return [e.op("Conv", [g, w], {"strides": strides, "dilations": dil, "pads": pads,
                                  "group": group, "kernel_shape": kernel}), None, None][
        :len(ctx.node.inputs)]


# -- Einsum -------------------------------------------------------------------------------------------------------
def _einsum_terms(ctx: GradContext) -> tuple[list[str], str]:
    """The operands' and the output's subscripts, with '...' spelled out as unused letters (static ranks)."""
    eq = ctx.attr("equation")
    eq = (eq.decode() if isinstance(eq, bytes) else eq).replace(" ", "")
    lhs, out = eq.split("->") if "->" in eq else (eq, None)
    terms = lhs.split(",")
    free = [c for c in string.ascii_letters if c not in eq]
    dots = [len(ctx.shape(ctx.I(i))) - (len(t) - 3) if "..." in t else 0 for i, t in enumerate(terms)]
    ell = "".join(free[:max(dots, default=0)])  # the longest ellipsis; shorter ones right-aligned in it
    terms = [t.replace("...", ell[len(ell) - n:] if n else "") for t, n in zip(terms, dots)]
    if out is None:  # implicit output: the ellipsis, then every letter used once, sorted
        letters = "".join(terms)
        out = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    return terms, out


@register("Einsum")
def einsum(ctx: GradContext):
    """Einsum is linear in each operand: d/dA_k = einsum(g, the other operands -> A_k's subscripts).

    An index that appears only in A_k (summed there alone) is broadcast back with Expand; repeated indices
    in one operand (diagonals) and broadcast ellipsis dimensions are refused.
    """
    e = ctx.e
    terms, out = _einsum_terms(ctx)
    sizes: dict[str, object] = {}
    for i, term in enumerate(terms):
        for c, d in zip(term, ctx.shape(ctx.I(i))):
            if sizes.setdefault(c, d) != d and isinstance(d, (int, np.integer)) and isinstance(sizes[c], (int, np.integer)):
                raise ctx.fail(f"index '{c}' has sizes {sizes[c]} and {d}: broadcasting inside Einsum is not supported")
    grads = []
    for k, term in enumerate(terms):
        if not ctx.needs(k):
            grads.append(None)
            continue
        if len(set(term)) != len(term):
            raise ctx.fail(f"operand {k} repeats an index ('{term}'): diagonals are not supported")
        others = [t for i, t in enumerate(terms) if i != k]
        seen = set(out).union(*others) if others else set(out)
        kept = "".join(c for c in term if c in seen)
        eq = ",".join([out] + others) + "->" + kept
        g = e.op("Einsum", [ctx.GO(0)] + [ctx.I(i) for i in range(len(terms)) if i != k], {"equation": eq})
        if kept != term:  # indices summed in A_k alone: the gradient is constant along them
            shape = ctx.shape(ctx.I(k))
            lost = [i for i, c in enumerate(term) if c not in seen]
            if not all(isinstance(shape[i], (int, np.integer)) for i in lost):
                raise ctx.fail(f"needs static sizes on the indices summed in operand {k} alone, got {shape}")
            g = e.unsqueeze(g, lost)
            g = e.expand(g, [int(d) if i in lost else 1 for i, d in enumerate(shape)])
        grads.append(g)
    return grads
