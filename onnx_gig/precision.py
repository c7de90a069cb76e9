"""Float16 and quantized (QDQ) classifiers as float32 graphs, so the rules see one kind of model.

* **float16**: every float16 tensor, Cast target, attribute and value type becomes float32. Each float16
  weight is exactly representable in float32, so the float32 graph computes the model's function without
  its float16 rounding; the backward graph is then built in float32 (``convert(..., fp16=True)`` asks for a
  float16 IG graph instead).
* **QDQ** (onnxruntime.quantization.quantize_static's default format): the model is explained as its
  dequantized float graph. An activation QuantizeLinear -> DequantizeLinear pair rounds
  its input to the integer grid and saturates it to the type's range; it becomes its rounding-free float
  equivalent where that equivalent is a unit of the network, else the identity (DequantizeLinear of constant
  integer weights and biases becomes a float32 initializer):

  - range starting at 0 (zero point at the type's minimum) after a tensor that can be negative (a Conv's
    output; not the image input): ``Clip(x, 0, hi)``. onnxruntime's quantizer removes a ReLU/ReLU6 before
    such a pair and folds it into the range, so this Clip *is* the model's ReLU (guided as one by
    ``gnl-ig``). After a tensor that is non-negative anyway (a ReLU's, a max-pool's, a sum of such) the
    range starts at 0 because the data does: ``Identity``;
  - any other range: ``Identity``. A two-sided saturation at the calibrated range is not a unit of the
    network, and guiding it (as ``gnl-ig`` guides Clip) would block every negative gradient at every pair.

  Rounding is dropped everywhere: its derivative is zero almost everywhere, so integrated gradients of the
  rounded function would say nothing. Attributions therefore explain the float graph with the quantized
  weights, whose scores differ from the quantized model's by the activation rounding.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .modelfile import all_tensors

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
_TYPE_ATTRS = ("to", "dtype")  # Cast(to), EyeLike/RandomNormal*(dtype)


def _value_infos(graph: onnx.GraphProto):
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def float16_as_float32(model: onnx.ModelProto) -> bool:
    """Rewrite a float16 (or mixed float16) model as the same graph in float32, in place; True if it had any."""
    g = model.graph
    changed = False
    for t in all_tensors(g):  # sparse initializers' values included
        if t.data_type == F16:
            arr = numpy_helper.to_array(t).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
            changed = True
    for vi in _value_infos(g):
        if vi.type.tensor_type.elem_type == F16:
            vi.type.tensor_type.elem_type = F32
            changed = True
    for node in _nodes(g):
        for attr in node.attribute:
            if attr.name in _TYPE_ATTRS and attr.type == onnx.AttributeProto.INT and attr.i == F16:
                attr.i = F32
                changed = True
    return changed


def _constant(graph: onnx.GraphProto, name: str) -> Optional[np.ndarray]:
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute and node.attribute[0].HasField("t"):
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _float_range(graph: onnx.GraphProto, q: onnx.NodeProto) -> Optional[tuple[float, float]]:
    """The float range [lo, hi] a QuantizeLinear saturates to, when its scale and zero point are constant scalars."""
    scale = _constant(graph, q.input[1])
    zp = _constant(graph, q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
    if scale is None or zp is None or scale.size != 1 or zp.size != 1:
        return None
    info = np.iinfo(zp.dtype) if zp.dtype.kind in "iu" else None
    if info is None:
        return None  # float8 and other exotic types: no integer range
    s, z = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
    return (info.min - z) * s, (info.max - z) * s


# ops whose output is >= 0 whatever their input, and ops that keep a non-negative input non-negative
_NONNEG_ALWAYS = {"Relu", "Sigmoid", "Softmax", "Exp", "Abs", "HardSigmoid", "Softplus", "Sqrt"}
_NONNEG_MOVING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose",
                  "Identity", "Squeeze", "Unsqueeze", "Resize", "Upsample", "ReduceMean", "ReduceMax", "ReduceSum",
                  "Slice", "Split", "DepthToSpace", "SpaceToDepth", "Gather", "Expand", "Tile"}  # input 0 decides
_NONNEG_COMBINING = {"Concat", "Add", "Mul", "Div", "Sum", "Max", "Min"}  # every input decides


def _is_nonneg(graph: onnx.GraphProto, node: onnx.NodeProto, nonneg: set, inits: dict) -> bool:
    """Whether ``node``'s outputs are >= 0 for every input image, given the tensors known to be."""
    def ok(name: str) -> bool:
        if name in nonneg:
            return True
        if name in inits:
            return bool(np.all(numpy_helper.to_array(inits[name]) >= 0))
        return False

    if node.op_type in _NONNEG_ALWAYS:
        return True
    if node.op_type == "Clip":
        return _clip_low(graph, node) >= 0
    if node.op_type in ("Resize", "Upsample") and any(a.name == "mode" and a.s == b"cubic" for a in node.attribute):
        return False  # the cubic kernel's negative lobes overshoot below 0 at edges
    if node.op_type in _NONNEG_MOVING:
        return ok(node.input[0])
    if node.op_type in _NONNEG_COMBINING:
        return all(ok(i) for i in node.input if i)
    return False


def _fold_weight(graph: onnx.GraphProto, node: onnx.NodeProto, inits: dict) -> bool:
    """DequantizeLinear of constant (per-tensor or per-axis) integers -> a float32 initializer; False if it cannot."""
    if node.input[0] not in inits or node.input[1] not in inits:
        return False
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 and node.input[2] \
        and node.input[2] in inits else np.zeros_like(scale)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size", 0) or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
        return False
    if scale.size > 1:
        axis = int(attrs.get("axis", 1)) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    graph.initializer.append(numpy_helper.from_array(((q - zp) * scale).astype(np.float32), node.output[0]))
    return True


def dequantize_qdq(model: onnx.ModelProto) -> int:
    """Fold weight DequantizeLinear nodes into float initializers and replace each activation
    QuantizeLinear -> DequantizeLinear pair by Clip(x, 0, hi) or Identity, in place; returns the pairs replaced.

    A pair whose range starts at 0 becomes the Clip only where its input can be negative (a Conv's output):
    there it is the ReLU the quantizer removed. After a tensor that is non-negative anyway (a ReLU's or
    max-pool's output, a sum of such) the range starts at 0 because the data does, and it is an Identity.
    The QuantizeLinear nodes left without consumers are removed by the loader's cleanup.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    graph_inputs = {i.name for i in g.input}
    nonneg: set[str] = set()
    replaced, folded = 0, []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and _fold_weight(g, node, inits):
            folded.append(node)
            continue
        q = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            x, y = q.input[0], node.output[0]
            rng = _float_range(g, q)
            del node.input[:]
            del node.attribute[:]
            node.domain = ""
            if rng is not None and rng[0] == 0.0 and x not in graph_inputs and x not in nonneg:
                lo, hi = f"{y}__qdq_lo", f"{y}__qdq_hi"
                g.initializer.extend([numpy_helper.from_array(np.zeros((), np.float32), lo),
                                      numpy_helper.from_array(np.asarray(rng[1], np.float32), hi)])
                node.op_type = "Clip"
                node.input.extend([x, lo, hi])
                nonneg.add(y)
            else:
                node.op_type = "Identity"
                node.input.append(x)
                if x in nonneg:
                    nonneg.add(y)
            replaced += 1
            continue
        if _is_nonneg(g, node, nonneg, inits):
            nonneg.update(node.output)
    for node in folded:
        g.node.remove(node)
    return replaced


def _clip_low(graph: onnx.GraphProto, node: onnx.NodeProto) -> float:
    """A Clip's constant lower bound (-inf when absent or not constant)."""
    if len(node.input) > 1 and node.input[1]:
        v = _constant(graph, node.input[1])
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else -np.inf
    for a in node.attribute:
        if a.name == "min":
            return float(a.f)
    return -np.inf


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the graph holds QDQ nodes (the QOperator format, QLinearConv etc., is not supported)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def precision_note(model: onnx.ModelProto) -> Optional[str]:
    """One line for ``convert``'s notes when the model is float16 or QDQ-quantized (what is explained)."""
    g = model.graph
    if any(t.data_type == F16 for t in g.initializer) or any(
            vi.type.tensor_type.elem_type == F16 for vi in g.input):
        return "the model is float16: explaining it as its float32 graph (exact float16 weights, float32 arithmetic)"
    if is_quantized(model):
        return ("the model is QDQ-quantized: explaining its dequantized float graph (quantized weights; activation "
                "rounding dropped, ranges starting at 0 after a conv kept as the ReLU they replace)")
    return None
