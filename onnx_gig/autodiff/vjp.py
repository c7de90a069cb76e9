"""A stand-alone vector-Jacobian-product model: (x, cotangent) -> d<cotangent, f(x)>/dx.

Useful to check rules one op at a time and to inspect the guided gradient of any tensor.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .builder import build_gradient
from .emit import Emitter
from .registry import RuleSet


def vjp_model(model: onnx.ModelProto, rules: RuleSet, wrt: Optional[str] = None, of: Optional[str] = None) -> onnx.ModelProto:
    """Return a model with inputs (``wrt``, ``cotangent``) and outputs (``gradient``, ``of``).

    ``model`` must be shape-inferred (see :func:`onnx_gig.loader.normalise`); ``wrt`` and ``of``
    default to its first input and first output.
    """
    g = gs.import_onnx(model)
    g.toposort()
    tensors = g.tensors()
    x = tensors[wrt or g.inputs[0].name]
    y = tensors[of or g.outputs[0].name]
    nodes = list(g.nodes)
    e = Emitter(g, "vjp/")
    cot = gs.Variable("cotangent", dtype=np.float32, shape=y.shape)
    grad = build_gradient(nodes, {"y": (y, cot)}, x, rules, e)
    out = gs.Variable("gradient", dtype=np.float32, shape=x.shape)
    g.nodes.append(gs.Node("Identity", name="vjp/gradient", inputs=[grad], outputs=[out]))
    g.inputs = [x, cot]
    g.outputs = [out, y]
    g.cleanup().toposort()
    m = gs.export_onnx(g, do_type_check=False)
    m.ir_version = model.ir_version
    del m.opset_import[:]
    m.opset_import.extend(model.opset_import)
    return m
