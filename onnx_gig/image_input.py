"""The image input: integer pixels explained from their float32 Cast, dims kept dynamic or pinned.

A classifier's image input may be float32 (explained as it is), or integer pixels (uint8 NHWC from
TensorFlow, Keras and mobile exports) that the graph casts to float32 and normalises itself: then the float
pixels after the Cast become the input, so attributions and baselines are in pixel units. Dims written as
-1 or left blank are named symbols; ``--input-shape`` pins dynamic ones to static sizes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import onnx
from onnx import TensorProto

from .errors import InputError, ModelError
from .loader import _dims, _elem_name

_INTEGERS = (TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT16, TensorProto.INT16, TensorProto.INT32,
             TensorProto.INT64, TensorProto.UINT32, TensorProto.UINT64)


def float_casts(graph: onnx.GraphProto, vi: onnx.ValueInfoProto) -> Optional[list[onnx.NodeProto]]:
    """The Cast-to-float32 nodes of an integer input whose other readers only take its Shape; else None."""
    if vi.type.tensor_type.elem_type not in _INTEGERS:
        return None
    readers = [n for n in graph.node if vi.name in n.input]
    casts = [n for n in readers if n.op_type == "Cast"
             and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)]
    if not casts or any(n.op_type != "Shape" for n in readers if n not in casts):
        return None
    return casts


def explain_after_cast(graph: onnx.GraphProto, vi: onnx.ValueInfoProto) -> tuple[onnx.ValueInfoProto, dict]:
    """Integer pixels cast to float32 in the graph: make the float pixels the graph input (named
    ``<input>_float``, same layout and dims); the Casts become Identities of it, Shape readers read it.

    Gradients, attributions and baselines then live in pixel units, and the graph's own preprocessing
    (``/255``, mean/std, transposes) is differentiated like any other op.
    """
    casts = float_casts(graph, vi)
    if casts is None:
        raise ModelError(f"input '{vi.name}' is {_elem_name(vi)}, not float32; onnx-gig explains float32 images, "
                         "or integer pixels the graph casts to float32 (and only reads the Shape of) first")
    taken = {n for node in graph.node for n in list(node.input) + list(node.output)} | {i.name for i in graph.input}
    name = vi.name + "_float"
    while name in taken:
        name += "_"
    new = onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, _dims(vi))
    for node in graph.node:
        if vi.name not in node.input:
            continue
        if node in casts:
            node.op_type = "Identity"
            del node.attribute[:]
        for k, i in enumerate(node.input):
            if i == vi.name:
                node.input[k] = name
    pos = [i.name for i in graph.input].index(vi.name)
    graph.input.remove(graph.input[pos])
    graph.input.insert(pos, new)
    return new, {"name": vi.name, "dtype": _elem_name(vi)}


def name_unknown_dims(graph: onnx.GraphProto) -> None:
    """Dims written as -1 (Paddle, some TF exports), and input dims left blank, become named symbols: the
    rules read an integer dim as a static size, and the image input's dims need names to be carried."""
    inputs = {vi.name for vi in graph.input}
    for vi in list(graph.input) + list(graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            blank = not (d.HasField("dim_value") or d.dim_param) and vi.name in inputs
            if (d.HasField("dim_value") and d.dim_value < 0) or blank:
                d.Clear()
                d.dim_param = f"{vi.name}_dim{i}"


def pin_input_shape(model: onnx.ModelProto, name: str, wanted: Sequence) -> None:
    """Give input ``name`` the static sizes in ``wanted`` (``None`` keeps a dim as it is; the batch always
    stays dynamic), then re-infer every shape so the shape subgraphs fold to constants."""
    vi = next(i for i in model.graph.input if i.name == name)
    have = _dims(vi)
    if len(wanted) != len(have):
        raise InputError(f"--input-shape has {len(wanted)} dims but input '{name}' has rank {len(have)} {have}; "
                         "give one size per dim in the input's own order, -1 to keep one dynamic")
    for i, (w, h) in enumerate(zip(wanted, have)):
        if i == 0 or w is None:
            continue
        if isinstance(h, int) and h != w:
            shown = ",".join("-1" if d is None else str(d) for d in wanted)
            raise InputError(f"--input-shape {shown} disagrees with input '{name}' {have} at dim {i}: "
                             "only dynamic dims can be pinned")
        d = vi.type.tensor_type.shape.dim[i]
        d.Clear()
        d.dim_value = int(w)
    del model.graph.value_info[:]


def parse_input_shape(text: str) -> list[Optional[int]]:
    """'1,3,224,224' or '-1,3,224,224' or 'N,224,224,3' -> sizes, None for a dim kept dynamic."""
    out: list[Optional[int]] = []
    for k, part in enumerate(str(text).replace("x", ",").split(",")):
        part = part.strip()
        if part in ("-1", "?", "N", "n", "batch") or (k == 0 and part.lstrip("-").isdigit()):
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise InputError(f"--input-shape {text!r}: each dim must be a positive size or -1 (keep it dynamic), "
                             "e.g. 1,3,224,224 or -1,224,224,3")
    return out
