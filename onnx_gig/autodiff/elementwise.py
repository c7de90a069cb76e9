"""Element-wise math family: arithmetic with broadcasting, exp/log/sqrt/pow/abs, Cast and Where.

True gradients in every rule set (normalisation arithmetic and residual sums are not non-linear units);
a broadcast operand's gradient is summed back to its shape (GradContext.unbroadcast).
"""
from __future__ import annotations

import math

import numpy as np

from .common import constant_input
from .registry import GradContext, register

F = np.float32


# -- element-wise arithmetic with broadcasting -------------------------------------
@register("Add")
def add(ctx: GradContext):
    g, y = ctx.GO(0), ctx.O(0)
    return [ctx.unbroadcast(g, ctx.I(i), y) if ctx.needs(i) else None for i in range(2)]


@register("Sum")
def sum_(ctx: GradContext):
    g, y = ctx.GO(0), ctx.O(0)
    return [ctx.unbroadcast(g, t, y) if ctx.needs(i) else None for i, t in enumerate(ctx.node.inputs)]


@register("Sub")
def sub(ctx: GradContext):
    g, y = ctx.GO(0), ctx.O(0)
    return [ctx.unbroadcast(g, ctx.I(0), y) if ctx.needs(0) else None,
            ctx.unbroadcast(ctx.e.neg(g), ctx.I(1), y) if ctx.needs(1) else None]


@register("Mul")
def mul(ctx: GradContext):
    g, y, a, b = ctx.GO(0), ctx.O(0), ctx.I(0), ctx.I(1)
    return [ctx.unbroadcast(ctx.e.mul(g, b), a, y) if ctx.needs(0) else None,
            ctx.unbroadcast(ctx.e.mul(g, a), b, y) if ctx.needs(1) else None]


@register("Div")
def div(ctx: GradContext):
    g, y, a, b = ctx.GO(0), ctx.O(0), ctx.I(0), ctx.I(1)
    e = ctx.e
    return [ctx.unbroadcast(e.div(g, b), a, y) if ctx.needs(0) else None,
            ctx.unbroadcast(e.neg(e.div(e.mul(g, y), b)), b, y) if ctx.needs(1) else None]


@register("Neg")
def neg(ctx: GradContext):
    return [ctx.e.neg(ctx.GO(0))]


# -- element-wise math ------------------------------------------------------------------------------------
@register("Exp")
def exp(ctx: GradContext):
    return [ctx.e.mul(ctx.GO(0), ctx.O(0))]


@register("Erf")
def erf(ctx: GradContext):
    """d erf(x)/dx = 2/sqrt(pi) exp(-x^2) (exact GELU exports as x/2 (1 + erf(x/sqrt 2)))."""
    e, x = ctx.e, ctx.I(0)
    return [e.mul(ctx.GO(0), e.mul(e.exp(e.neg(e.mul(x, x))), F(2.0 / math.sqrt(math.pi))))]


@register("Log")
def log(ctx: GradContext):
    return [ctx.e.div(ctx.GO(0), ctx.I(0))]


@register("Sqrt")
def sqrt(ctx: GradContext):
    return [ctx.e.div(ctx.e.mul(ctx.GO(0), F(0.5)), ctx.O(0))]


@register("Reciprocal")
def reciprocal(ctx: GradContext):
    y = ctx.O(0)
    return [ctx.e.neg(ctx.e.mul(ctx.GO(0), ctx.e.mul(y, y)))]


@register("Abs")
def abs_(ctx: GradContext):
    return [ctx.e.mul(ctx.GO(0), ctx.e.op("Sign", [ctx.I(0)]))]


@register("Pow")
def pow_(ctx: GradContext):
    """x ** p with a constant exponent p."""
    p = constant_input(ctx, 1, "exponent")
    e, x, g = ctx.e, ctx.I(0), ctx.GO(0)
    p = p.astype(np.float64)
    if p.size == 1 and float(p.reshape(-1)[0]) == 2.0:
        d = e.mul(x, F(2))
    elif p.size == 1 and float(p.reshape(-1)[0]) == 1.0:
        return [g, None]
    else:
        d = e.mul(e.op("Pow", [x, e.const((p - 1).astype(np.float32))]), e.const(p.astype(np.float32)))
    return [ctx.unbroadcast(e.mul(g, d), x, ctx.O(0)), None]


@register("Cast", "CastLike")
def cast(ctx: GradContext):
    """Float -> float casts pass the gradient (cast back); casts to integers are not differentiable paths."""
    x = ctx.I(0)
    src = np.dtype(x.dtype) if x.dtype is not None else ctx.e.dtype
    if src.kind != "f":
        return [None] * len(ctx.node.inputs)
    g = ctx.GO(0)
    return [g if src == ctx.e.dtype else ctx.e.cast(g, src)] + [None] * (len(ctx.node.inputs) - 1)


@register("Mean")
def mean(ctx: GradContext):
    """The element-wise mean of n broadcast inputs: g / n to each."""
    g, y, n = ctx.GO(0), ctx.O(0), len(ctx.node.inputs)
    gn = ctx.e.mul(g, F(1.0 / n))
    return [ctx.unbroadcast(gn, t, y) if ctx.needs(i) else None for i, t in enumerate(ctx.node.inputs)]


@register("Sin")
def sin(ctx: GradContext):
    return [ctx.e.mul(ctx.GO(0), ctx.e.op("Cos", [ctx.I(0)]))]


@register("Cos")
def cos(ctx: GradContext):
    return [ctx.e.neg(ctx.e.mul(ctx.GO(0), ctx.e.op("Sin", [ctx.I(0)])))]


@register("Where")
def where(ctx: GradContext):
    if ctx.needs(0):
        raise ctx.fail("the condition is not differentiable")
    e, g, y = ctx.e, ctx.GO(0), ctx.O(0)
    zero = e.const(np.zeros((), e.dtype))
    ga = ctx.unbroadcast(e.op("Where", [ctx.I(0), g, zero]), ctx.I(1), y) if ctx.needs(1) else None
    gb = ctx.unbroadcast(e.op("Where", [ctx.I(0), zero, g]), ctx.I(2), y) if ctx.needs(2) else None
    return [None, ga, gb]
