"""Load an ONNX classifier and normalise its forward graph for differentiation.

Normalising means: one opset (the one the rules are written for), initializers out of the
graph inputs, shape subgraphs folded to constants, a dynamic batch dimension (Reshape
targets that hard-code batch 1 included), full shape inference, and the image input and
class-score output identified (the scores before a final Softmax/LogSoftmax).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, shape_inference, version_converter

from .errors import ModelError

TARGET_OPSET = 17
BATCH = "N"
_SCORE_PRODUCERS = ("Softmax", "LogSoftmax")


@dataclass
class ForwardGraph:
    """A normalised classifier: the model plus the names the rest of the pipeline needs."""

    model: onnx.ModelProto
    input_name: str
    score_name: str
    output_names: list[str]
    input_shape: list
    num_classes: Optional[int]
    metadata: dict[str, str] = field(default_factory=dict)


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (external data beside it included); a bad file raises one readable line."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(f"cannot read {p} as an ONNX model ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no details"


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelError("the model imports no default-domain (ai.onnx) opset")


def _to_target_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    version = default_opset(model)
    if version == TARGET_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, TARGET_OPSET)
    except Exception as exc:
        if version > TARGET_OPSET:
            return model  # rules read both attribute and input forms of newer ops
        raise ModelError(f"cannot convert the model from opset {version} to {TARGET_OPSET}: {_first_line(exc)}") from None
    converted.ir_version = max(8, min(converted.ir_version, 10))
    return converted


def _dims(vi: onnx.ValueInfoProto) -> list:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _set_dim0(vi: onnx.ValueInfoProto, name: str) -> None:
    shape = vi.type.tensor_type.shape
    if len(shape.dim):
        shape.dim[0].Clear()
        shape.dim[0].dim_param = name


def _pick_input(graph: onnx.GraphProto, wanted: Optional[str]) -> onnx.ValueInfoProto:
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if wanted is not None:
        for i in inputs:
            if i.name == wanted:
                return i
        raise ModelError(f"the model has no input '{wanted}'; its inputs are: {', '.join(i.name for i in inputs)}")
    images = [i for i in inputs if i.type.tensor_type.elem_type == TensorProto.FLOAT and len(_dims(i)) >= 3]
    if len(inputs) == 1 and images:
        return inputs[0]
    if len(images) == 1 and len(inputs) == 1:
        return images[0]
    if not images:
        raise ModelError("found no float32 image input of rank 3 or more; inputs are: "
                         + ", ".join(f"{i.name}{_dims(i)}" for i in inputs))
    raise ModelError("the model has several inputs (" + ", ".join(i.name for i in inputs)
                     + "); a classifier with exactly one image input is expected")


def _pick_output(graph: onnx.GraphProto, wanted: Optional[str]) -> onnx.ValueInfoProto:
    if wanted is not None:
        for o in graph.output:
            if o.name == wanted:
                return o
        raise ModelError(f"the model has no output '{wanted}'; its outputs are: {', '.join(o.name for o in graph.output)}")
    floats = [o for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    if not floats:
        raise ModelError("the model has no float32 output to explain")
    return floats[0]


def _batch_dependent(graph: gs.Graph, input_name: str) -> set[str]:
    live = {input_name}
    for node in graph.nodes:
        if any(i.name in live for i in node.inputs):
            live.update(o.name for o in node.outputs)
    return live


def _free_batch_in_reshapes(graph: gs.Graph, input_name: str, batch: int) -> None:
    """Reshape targets that spell out the exported batch size (caffe2 and old exporters) copy it instead."""
    live = _batch_dependent(graph, input_name)
    for node in graph.nodes:
        if node.op != "Reshape" or node.inputs[0].name not in live or not isinstance(node.inputs[1], gs.Constant):
            continue
        if int(node.attrs.get("allowzero", 0)):
            continue
        target = np.array(node.inputs[1].values, dtype=np.int64)
        if target.ndim == 1 and target.size and target[0] == batch:
            target = target.copy()
            target[0] = 0  # 0 = copy the data's own first dim, the batch
            node.inputs[1] = gs.Constant(node.inputs[1].name + "_dynbatch", target)


def normalise(model: onnx.ModelProto, input_name: Optional[str] = None,
              output_name: Optional[str] = None) -> ForwardGraph:
    """Return the model as a :class:`ForwardGraph` ready for the backward builder."""
    metadata = {p.key: p.value for p in model.metadata_props}
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    kept = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(kept)
    model = _to_target_opset(model)
    graph = model.graph
    x_info = _pick_input(graph, input_name)
    y_info = _pick_output(graph, output_name)
    if x_info.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(f"input '{x_info.name}' is not float32; only float32 models are supported")
    in_dims = _dims(x_info)
    batch = in_dims[0] if in_dims else None
    output_names = [o.name for o in graph.output]

    # fold shape computations while shapes are still as exported
    try:
        g = gs.import_onnx(model)
        g.fold_constants(error_ok=True).cleanup().toposort()
    except Exception as exc:
        raise ModelError(f"cannot read the model graph: {_first_line(exc)}") from None
    if isinstance(batch, int):
        _free_batch_in_reshapes(g, x_info.name, batch)
    for t in g.tensors().values():
        if isinstance(t, gs.Variable) and t not in g.inputs and t not in g.outputs:
            t.shape = None  # stale shapes; re-inferred below with a symbolic batch
    for t in list(g.inputs) + list(g.outputs):
        if t.shape:
            t.shape = [BATCH] + list(t.shape[1:])
    model = gs.export_onnx(g)
    model.ir_version = max(8, min(model.ir_version, 10))  # what current runtimes (and Triton's) accept
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelError(f"shape inference failed: {_first_line(exc)}") from None

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    score = y_info.name
    while score in producer and producer[score].op_type in ("Identity",):
        score = producer[score].input[0]
    if score in producer and producer[score].op_type in _SCORE_PRODUCERS:
        score = producer[score].input[0]
    shapes = {vi.name: _dims(vi) for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
    score_dims = shapes.get(score, [])
    classes = score_dims[1:]
    num_classes = int(np.prod(classes)) if classes and all(isinstance(d, int) for d in classes) else None
    del model.metadata_props[:]
    return ForwardGraph(model=model, input_name=x_info.name, score_name=score, output_names=output_names,
                        input_shape=shapes.get(x_info.name, in_dims), num_classes=num_classes, metadata=metadata)
