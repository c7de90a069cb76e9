"""Load an ONNX classifier and normalise its forward graph for differentiation.

Normalising means: one opset (the one the rules are written for), initializers out of the
graph inputs, shape subgraphs folded to constants, a dynamic batch dimension (Reshape
targets that hard-code batch 1 included), full shape inference, and the image input and
class-score output identified (the scores before a final Softmax/LogSoftmax).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, shape_inference, version_converter

from .errors import ModelError
from .modelfile import check_external_data, load_model, read_model_proto  # noqa: F401 - the loader API as before
from .modelfile import first_line as _first_line

TARGET_OPSET = 17
BATCH = "N"
_PROBABILITY_OPS = {"Softmax": "softmax", "LogSoftmax": "softmax", "Sigmoid": "sigmoid"}


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
    pixel_input: Optional[dict] = None  # {"name", "dtype"} of the integer input the explained floats are cast from
    probability: str = "softmax"  # how the explained scores become probabilities: softmax or sigmoid (contract.py)

    @property
    def dynamic_dims(self) -> list[int]:
        """Indices of the image input's dims other than the batch that are not static."""
        return [i for i, d in enumerate(self.input_shape) if i > 0 and not isinstance(d, int)]


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
    _drop_stale_attributes(converted.graph, TARGET_OPSET)
    return converted


def _drop_stale_attributes(graph: onnx.GraphProto, opset: int) -> None:
    """Down-conversion leaves newer attributes behind (ReduceMean 18 -> 13 keeps noop_with_empty_axes);
    drop those the target opset's schema lacks when they hold their default, harmless value; a reduction
    with no axes and noop_with_empty_axes=1 becomes the Identity it is."""
    defaults = {"noop_with_empty_axes": 0}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            known = set(onnx.defs.get_schema(node.op_type, opset).attributes)
        except Exception:  # noqa: BLE001 - unknown op: leave it to the rules to refuse
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if "noop_with_empty_axes" not in known and attrs.get("noop_with_empty_axes") == 1 \
                and not attrs.get("axes") and len(node.input) < 2:
            node.op_type = "Identity"  # no axes and noop: the input passes unchanged, as opset 17 can only say so
            del node.attribute[:]
            continue
        stale = [a for a in node.attribute if a.name not in known and a.name in defaults
                 and onnx.helper.get_attribute_value(a) == defaults[a.name]]
        for a in stale:
            node.attribute.remove(a)


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
    from .image_input import float_casts

    images = [i for i in inputs if len(_dims(i)) >= 3 and (i.type.tensor_type.elem_type == TensorProto.FLOAT
                                                          or float_casts(graph, i) is not None)]
    if len(inputs) == 1 and images:
        return inputs[0]
    if len(images) == 1 and len(inputs) == 1:
        return images[0]
    if not images:
        raise ModelError("found no float32 image input of rank 3 or more (inputs: "
                         + (", ".join(f"{i.name}{_dims(i)} {_elem_name(i)}" for i in inputs) or "none")
                         + "); onnx-gig explains classifiers that take a float32 image tensor, or integer pixels "
                           "cast to float32 by the graph's first node: export the model with one")
    raise ModelError("the model has several inputs (" + ", ".join(f"{i.name}{_dims(i)}" for i in inputs)
                     + "); name the image input with --input NAME")


def _elem_name(vi: onnx.ValueInfoProto) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
    except Exception:  # noqa: BLE001 - undefined or non-tensor type
        return "non-tensor"


def _pick_output(graph: onnx.GraphProto, wanted: Optional[str]) -> onnx.ValueInfoProto:
    if wanted is not None:
        for o in graph.output:
            if o.name == wanted:
                return o
        raise ModelError(f"the model has no output '{wanted}'; its outputs are: {', '.join(o.name for o in graph.output)}")
    floats = [o for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    if not floats:
        raise ModelError("the model has no float32 output to explain (outputs: "
                         + (", ".join(f"{o.name} {_elem_name(o)}" for o in graph.output) or "none") + ")")
    return floats[0]


def _batch_dependent(graph: gs.Graph, input_name: str) -> set[str]:
    live = {input_name}
    for node in graph.nodes:
        if any(i.name in live for i in node.inputs):
            live.update(o.name for o in node.outputs)
    return live


@contextlib.contextmanager
def _quiet_graphsurgeon():
    from onnx_graphsurgeon.logger import G_LOGGER

    before = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR
    try:
        yield
    finally:
        G_LOGGER.severity = before


def _name_nodes(graph: gs.Graph) -> None:
    """Give unnamed nodes unique names (old exporters leave them empty; errors and copies need them)."""
    taken = {n.name for n in graph.nodes if n.name}
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in taken and sum(1 for m in graph.nodes if m.name == node.name) > 1:
            name, k = f"{node.op}_{i}", 0
            while name in taken:
                k += 1
                name = f"{node.op}_{i}_{k}"
            node.name = name
            taken.add(name)


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


_RESHAPES = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


def explained_scores(graph: onnx.GraphProto, output: str) -> tuple[str, str]:
    """(tensor to explain, how its scores become probabilities) for a classifier whose scores are ``output``.

    A head that turns logits into probabilities is looked through to the logits, as Captum users explain
    them: a final Softmax/LogSoftmax ('softmax') or Sigmoid (a multi-label or binary head: 'sigmoid'), past
    reshapes (opset < 13 Softmax on a 4-D tensor converts to Flatten -> Softmax -> Reshape), a positive
    constant scale (percentages: 100 * Softmax) and the Log of Log(Softmax). Any other output is explained
    as it is and taken for logits ('softmax').
    """
    producer = {o: n for n in graph.node for o in n.output}
    name = output
    while name in producer and producer[name].op_type == "Identity":
        name = producer[name].input[0]
    probe = name
    while probe in producer:
        node = producer[probe]
        if node.op_type in _RESHAPES:
            probe = node.input[0]
        elif node.op_type in ("Mul", "Div") and (data := _positive_scale(node, graph)) is not None:
            probe = node.input[data]
        elif node.op_type == "Log" and node.input[0] in producer and producer[node.input[0]].op_type == "Softmax":
            probe = node.input[0]
        else:
            break
    if probe in producer and producer[probe].op_type in _PROBABILITY_OPS:
        return producer[probe].input[0], _PROBABILITY_OPS[producer[probe].op_type]
    return name, "softmax"


def _scalar(graph: onnx.GraphProto, name: str) -> Optional[float]:
    """The value of ``name`` when it is a one-element numeric constant (an initializer or a Constant node)."""
    from onnx import numpy_helper

    tensor = next((t for t in graph.initializer if t.name == name), None)
    if tensor is None:
        node = next((n for n in graph.node if n.op_type == "Constant" and name in n.output), None)
        attr = next(iter(node.attribute), None) if node is not None else None
        if attr is None:
            return None
        if attr.name in ("value_float", "value_int"):
            return float(attr.f if attr.name == "value_float" else attr.i)
        if attr.name != "value":
            return None
        tensor = attr.t
    if int(np.prod(tensor.dims)) != 1:
        return None
    value = numpy_helper.to_array(tensor).reshape(-1)[0]
    return float(value) if np.issubdtype(np.asarray(value).dtype, np.number) else None


def _positive_scale(node: onnx.NodeProto, graph: onnx.GraphProto) -> Optional[int]:
    """For Mul/Div by a positive constant scalar: the index of the other (data) input; else None."""
    if len(node.input) != 2:
        return None
    for k in ((0, 1) if node.op_type == "Mul" else (1,)):
        c = _scalar(graph, node.input[k])
        if c is not None and np.isfinite(c) and c > 0 and _scalar(graph, node.input[1 - k]) is None:
            return 1 - k
    return None


_POOLS = ("MaxPool", "AveragePool")


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference, with ceil_mode pools made to agree with onnxruntime first.

    Before opset 22 ONNX keeps a ceil_mode window that would start inside the end pad (5x5 input, k 2,
    s 2, pads 1: 4x4) while onnxruntime and torch drop it (3x3). Such a pool gets the end pad that ends
    at its last real window instead: that is smaller than the old one, so every window, its maximum and
    its divisor (count_include_pad too) stay as onnxruntime computed them, and both now say 3x3.
    """
    def run(m: onnx.ModelProto) -> onnx.ModelProto:
        try:
            return shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
        except Exception as exc:
            raise ModelError(f"shape inference failed: {_first_line(exc)}") from None

    full, model = model, _skeleton(model)
    inferred = run(model)
    pools = [n for n in model.graph.node if n.op_type in _POOLS
             and any(a.name == "ceil_mode" and a.i for a in n.attribute)]
    for _ in range(len(pools)):  # a pool's input size may depend on an earlier pool's fix
        shapes = {vi.name: _dims(vi) for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
                  + list(inferred.graph.output)}
        changed = False
        for n in pools:
            fix = _runtime_pool_pads(n, shapes.get(n.input[0], []))
            out_dims = shapes.get(n.output[0], [])
            if fix is None or len(out_dims) < 3 or list(out_dims[2:]) == fix[1]:
                continue
            pads = fix[0]
            kept = [a for a in n.attribute if a.name not in ("pads", "auto_pad")]
            del n.attribute[:]
            n.attribute.extend(kept + [onnx.helper.make_attribute("pads", pads)])
            changed = True
        if not changed:
            break
        inferred = run(model)
    return _graft(full, inferred)


_SKELETON_BYTES = 4096


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with stubs (name, type, dims; no data) for its large initializers.

    Version conversion and shape inference pass the whole model through serialisation (seconds for
    VGG's 550 MB) but read only small tensors (shapes, axes, scales); ``_graft`` puts their result back
    around the original weights without copying them.
    """
    sk = onnx.ModelProto()
    sk.ir_version = model.ir_version
    sk.opset_import.extend(model.opset_import)
    sk.functions.extend(model.functions)
    g, src = sk.graph, model.graph
    g.name = src.name
    for part in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, part).extend(getattr(src, part))
    for t in src.initializer:
        if _nbytes(t) > _SKELETON_BYTES:
            g.initializer.append(TensorProto(name=t.name, data_type=t.data_type, dims=t.dims))
        else:
            g.initializer.append(t)
    return sk


def _nbytes(t: TensorProto) -> int:
    """A tensor's data size from its type and dims (reading the data itself would copy it)."""
    try:
        item = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # noqa: BLE001 - strings and undefined types stay in the skeleton
        return 0
    return int(np.prod(t.dims, dtype=np.int64)) * item


def _has_data(t: TensorProto) -> bool:
    return (int(np.prod(t.dims)) == 0 or t.data_location == TensorProto.EXTERNAL or bool(
        t.raw_data or t.float_data or t.int32_data or t.int64_data or t.double_data or t.uint64_data
        or t.string_data))


def _graft(model: onnx.ModelProto, result: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the graph structure of ``result`` (a processed skeleton of it) and its own weights."""
    big = {t.name for t in model.graph.initializer if _nbytes(t) > _SKELETON_BYTES}
    stubs = [t for t in result.graph.initializer if t.name in big]
    for t in result.graph.initializer:  # a step that computed a new tensor from a stub would have no data
        if t.name not in big and not _has_data(t):
            raise ModelError(f"internal error: tensor '{t.name}' lost its data while normalising the model")
    g, r = model.graph, result.graph
    for part in ("node", "input", "output", "value_info", "sparse_initializer"):
        del getattr(g, part)[:]
        getattr(g, part).extend(getattr(r, part))
    kept_names = {t.name for t in stubs}
    for i in reversed(range(len(g.initializer))):  # drop the small ones (and weights the step removed)
        if g.initializer[i].name not in kept_names:
            del g.initializer[i]
    g.initializer.extend(t for t in r.initializer if t.name not in big)
    model.ir_version = result.ir_version
    del model.opset_import[:]
    model.opset_import.extend(result.opset_import)
    del model.functions[:]
    model.functions.extend(result.functions)
    return model


def _runtime_pool_pads(node: onnx.NodeProto, in_dims: list) -> Optional[tuple[list[int], list[int]]]:
    """(explicit pads ending at the last window onnxruntime computes, its output size) for a ceil_mode pool;
    None when the input size is unknown or the end pad would turn negative (kernel smaller than stride)."""
    spatial = list(in_dims[2:])
    if not spatial or not all(isinstance(d, int) and d > 0 for d in spatial):
        return None
    from .autodiff.common import conv_geometry  # the rules' own pool arithmetic, so both agree

    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in a.items()}
    kernel = [int(k) for k in a.get("kernel_shape", [])]
    if len(kernel) != len(spatial):
        return None

    class _View:  # what conv_geometry reads from a rule context
        @staticmethod
        def attr(name, default=None):
            return a.get(name, default)

        @staticmethod
        def spatial(_x):
            return spatial

    strides, dil, pads, out = conv_geometry(_View(), None, kernel)
    n = len(spatial)
    ends = list(pads[n:])
    for i, (o, s, k, d, h, pb, pe) in enumerate(zip(out, strides, kernel, dil, spatial, pads[:n], pads[n:])):
        last_end = (o - 1) * s + (k - 1) * d + 1 - h - pb  # where the last window ends, past the input
        if -(-(h + pb + pe - (k - 1) * d - 1) // s) + 1 != o:  # ONNX's (pre-22) ceil size differs here
            if not 0 <= last_end <= pe:
                return None
            ends[i] = last_end
    return pads[:n] + ends, out


def _as_float32(model: onnx.ModelProto) -> None:
    """Float16 and QDQ-quantized models become their float32 graphs (precision.py says how)."""
    from .precision import dequantize_qdq, float16_as_float32

    float16_as_float32(model)
    dequantize_qdq(model)


def normalise(model: onnx.ModelProto, input_name: Optional[str] = None, output_name: Optional[str] = None,
              input_shape: Optional[Sequence[Optional[int]]] = None) -> ForwardGraph:
    """Return the model as a :class:`ForwardGraph` ready for the backward builder.

    ``input_shape`` pins the image input's dynamic sizes (``None`` entries stay dynamic; the batch always
    does). An integer image input cast to float32 is replaced by the float pixels (see ``explain_after_cast``).
    """
    metadata = {p.key: p.value for p in model.metadata_props}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the caller's model stays untouched (4x cheaper than a serialise + parse round trip)
    model = copy
    _as_float32(model)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    kept = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)  # IR 3 (caffe2 zoo) needs initializers among the inputs
    model = _graft(model, _to_target_opset(_skeleton(model)))
    graph = model.graph
    from .image_input import explain_after_cast, name_unknown_dims, pin_input_shape

    name_unknown_dims(graph)
    x_info = _pick_input(graph, input_name)
    y_info = _pick_output(graph, output_name)
    pixel_input = None
    if x_info.type.tensor_type.elem_type != TensorProto.FLOAT:
        x_info, pixel_input = explain_after_cast(graph, x_info)
    in_dims = _dims(x_info)
    if input_shape is not None:
        pin_input_shape(model, x_info.name, input_shape)
        model = infer_shapes(model)
        x_info = next(i for i in model.graph.input if i.name == x_info.name)
    batch = in_dims[0] if in_dims else None
    output_names = [o.name for o in graph.output]

    # fold shape computations while shapes are still as exported
    try:
        g = gs.import_onnx(model)
        with _quiet_graphsurgeon():  # its notes on large folded weights are not the user's business
            g.fold_constants(error_ok=True).cleanup().toposort()
        _name_nodes(g)
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
    model = infer_shapes(model)

    graph = model.graph
    score, probability = explained_scores(graph, y_info.name)
    shapes = {vi.name: _dims(vi) for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
    score_dims = shapes.get(score, [])
    classes = score_dims[1:]
    num_classes = int(np.prod(classes)) if classes and all(isinstance(d, int) for d in classes) else None
    del model.metadata_props[:]
    return ForwardGraph(model=model, input_name=x_info.name, score_name=score, output_names=output_names,
                        input_shape=shapes.get(x_info.name, in_dims), num_classes=num_classes, metadata=metadata,
                        pixel_input=pixel_input, probability=probability)
