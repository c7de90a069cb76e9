"""Graph-building helpers: emit ONNX nodes into an onnx-graphsurgeon graph with short calls.

Rules read like the math they implement (``e.mul(g, e.cast(e.greater(x, 0)))``) because
every helper returns the new output variable and accepts numpy values as constants.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx_graphsurgeon as gs

Tensor = gs.Tensor
Operand = "gs.Tensor | np.ndarray | float | int | Sequence[int]"


class Emitter:
    """Appends nodes to ``graph``; every tensor and node it creates gets ``prefix`` and a counter."""

    def __init__(self, graph: gs.Graph, prefix: str, dtype: np.dtype = np.dtype(np.float32)) -> None:
        self.graph = graph
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self._count = 0

    # -- naming and constants -------------------------------------------------
    def name(self, hint: str) -> str:
        """Return a fresh tensor/node name under this emitter's prefix."""
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: Any, dtype: Any = None, hint: str = "c") -> gs.Constant:
        """Wrap a Python/numpy value as an initializer (float values take the graph's dtype)."""
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        return gs.Constant(self.name(hint), np.ascontiguousarray(arr))

    def _in(self, x: Any) -> Tensor:
        return x if isinstance(x, gs.Tensor) else self.const(x)

    # -- generic op -----------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[Any], attrs: dict | None = None, n_out: int = 1,
           dtype: Any = None, shape: Any = None) -> Any:
        """Emit one node; return its output variable (or a list when ``n_out`` > 1).

        ``None`` inputs stay as empty optional inputs.
        """
        ins = [gs.Variable.empty() if i is None else self._in(i) for i in inputs]
        outs = [gs.Variable(self.name(op_type.lower()), dtype=dtype, shape=shape) for _ in range(n_out)]
        node = gs.Node(op_type, name=self.name(op_type), attrs=dict(attrs or {}), inputs=ins, outputs=outs)
        self.graph.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    # -- sugar for the ops the rules use most ---------------------------------
    def add(self, a, b): return self.op("Add", [a, b])
    def sub(self, a, b): return self.op("Sub", [a, b])
    def mul(self, a, b): return self.op("Mul", [a, b])
    def div(self, a, b): return self.op("Div", [a, b])
    def neg(self, a): return self.op("Neg", [a])
    def relu(self, a): return self.op("Relu", [a])
    def exp(self, a): return self.op("Exp", [a])
    def sqrt(self, a): return self.op("Sqrt", [a])
    def greater(self, a, b): return self.op("Greater", [a, b])
    def less(self, a, b): return self.op("Less", [a, b])
    def shape(self, a, start: int | None = None, end: int | None = None):
        attrs = {}
        if start is not None:
            attrs["start"] = start
        if end is not None:
            attrs["end"] = end
        return self.op("Shape", [a], attrs)

    def cast(self, a, to: Any = None):
        """Cast to ``to`` (default: the graph's float dtype)."""
        from onnx import helper
        to = np.dtype(to or self.dtype)
        return self.op("Cast", [a], {"to": helper.np_dtype_to_tensor_dtype(to)})

    def mask(self, cond):
        """Turn a boolean tensor into a 0/1 float mask."""
        return self.cast(cond)

    def reshape(self, a, shape):
        return self.op("Reshape", [a, self.const(np.asarray(shape, np.int64)) if not isinstance(shape, gs.Tensor) else shape])

    def transpose(self, a, perm: Sequence[int]):
        return self.op("Transpose", [a], {"perm": list(perm)})

    def unsqueeze(self, a, axes: Sequence[int]):
        return self.op("Unsqueeze", [a, self.const(np.asarray(axes, np.int64))])

    def reduce_sum(self, a, axes: Sequence[int], keepdims: bool = True):
        return self.op("ReduceSum", [a, self.const(np.asarray(axes, np.int64))], {"keepdims": int(keepdims)})

    def expand(self, a, shape):
        return self.op("Expand", [a, shape if isinstance(shape, gs.Tensor) else self.const(np.asarray(shape, np.int64))])

    def slice(self, a, starts, ends, axes, steps=None):
        ins = [a, self.const(np.asarray(starts, np.int64)), self.const(np.asarray(ends, np.int64)),
               self.const(np.asarray(axes, np.int64))]
        if steps is not None:
            ins.append(self.const(np.asarray(steps, np.int64)))
        return self.op("Slice", ins)

    def concat(self, items, axis: int):
        return self.op("Concat", list(items), {"axis": axis})

    def sum(self, items: Sequence[Tensor]):
        """Sum of one or more tensors of one shape (fan-out accumulation)."""
        items = list(items)
        if len(items) == 1:
            return items[0]
        if len(items) == 2:
            return self.add(items[0], items[1])
        return self.op("Sum", items)
