"""The IG graph: one ONNX model mapping a batch of images to attributions.

Every image times every integration step runs as one batch through a copy of the forward
graph and its backward graph. The schedule, baseline and target are model inputs with
defaults, so a server can send only the image. Contract (also in the README):

inputs   <image input> [N, ...]           the model's own image input, unchanged (sizes dynamic if they were;
                                          an integer input's float32 Cast output, named <input>_float)
         baseline      broadcastable to the image, default zeros (model-input space)
         alphas        [K] path positions, default 50 Gauss-Legendre nodes
         step_weights  [K] quadrature weights, default the Gauss-Legendre weights
         target        [1] or [N] int64 class to explain, default -1 = the predicted class
outputs  attributions  [N, ...] (x - b) * sum_k w_k grad_k: sums of chunks add up
         target_class  [N] int64, target_score [N], baseline_score [N] (pre-softmax scores)
         scores        [N, classes] the explained (pre-softmax) scores of the image
         <the model's own outputs for the image, unchanged>
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from . import __version__
from .autodiff import RuleSet, build_gradient
from .autodiff.emit import Emitter
from .blocks import StraightPath, auto_blocks, split_rows
from .contract import INPUTS, META_PREFIX, OUTPUTS  # noqa: F401 (re-exported: the contract's names)
from .errors import GigError, ModelError
from .image_input import pin_input_shape
from .loader import ForwardGraph, _dims, _skeleton, infer_shapes
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS, schedule

F32 = np.dtype(np.float32)


def _clone(nodes: list[gs.Node], src: gs.Tensor, dst: gs.Tensor, prefix: str, batch: str,
           also: Optional[dict] = None, old_batch: Optional[str] = None) -> tuple[list[gs.Node], dict]:
    """Copy the nodes that depend on ``src`` so they read ``dst``; constants and the rest are shared.

    ``also`` maps more tensor names to their replacements. The copies' outputs take the symbolic batch
    ``batch``: in place of the dim named ``old_batch`` where given, else of any symbolic first dim.
    """
    mapping: dict[str, gs.Tensor] = {src.name: dst, **(also or {})}
    copies = []
    for node in nodes:
        if not any(i.name in mapping for i in node.inputs):
            continue
        outs = []
        for o in node.outputs:
            shape = None if o.shape is None else [
                batch if (d == old_batch if old_batch is not None else (k == 0 and isinstance(d, str))) else d
                for k, d in enumerate(o.shape)]
            v = gs.Variable(prefix + o.name, dtype=o.dtype, shape=shape) if o.name else gs.Variable.empty()
            mapping[o.name] = v
            outs.append(v)
        copies.append(gs.Node(node.op, name=prefix + (node.name or node.op), attrs=dict(node.attrs),
                              inputs=[mapping.get(i.name, i) if i.name else i for i in node.inputs], outputs=outs,
                              domain=node.domain))
    return copies, mapping


def _rest_shape(e: Emitter, x: gs.Tensor) -> object:
    """[-1, d1, d2, ...] for the image (static dims as constants, else read from the tensor)."""
    rest = list(x.shape[1:]) if x.shape else None
    if rest is not None and all(isinstance(d, int) for d in rest):
        return e.const(np.asarray([-1] + rest, np.int64))
    return e.concat([e.const(np.asarray([-1], np.int64)), e.shape(x, start=1)], axis=0)


def _activation_bytes_per_row(nodes: list[gs.Node]) -> int:
    """Bytes of float activations one batch row of the forward graph holds (a memory estimate)."""
    total = 0
    for node in nodes:
        for o in node.outputs:
            if o.shape and o.dtype is not None and np.dtype(o.dtype).kind == "f":
                dims = [d for d in o.shape[1:]]
                if all(isinstance(d, int) for d in dims):
                    total += int(np.prod(dims)) * np.dtype(o.dtype).itemsize
    return total


def _row_bytes(t: gs.Tensor) -> int:
    """Bytes one batch row of a float tensor with static non-batch dims takes (0 if unknown)."""
    if not t.shape or t.dtype is None or np.dtype(t.dtype).kind != "f":
        return 0
    dims = list(t.shape[1:])
    return int(np.prod(dims)) * np.dtype(t.dtype).itemsize if all(isinstance(d, int) for d in dims) else 0


def memory_per_row(path: list[gs.Node], backward: list[gs.Node], row_bytes=_row_bytes) -> int:
    """Estimated peak bytes one batch row (one image at one step) adds to a run.

    What stays alive until the backward pass reads it (the forward tensors that backward nodes take:
    activation outputs for the masks, max-pool inputs) plus a working set of three of the largest
    tensors; both doubled for the runtime's padding, blocked layouts and allocator. Calibrated against
    peak RSS on CPU (MobileNetV2, ResNet-50, VGG-16: measured 45, 64 and 129 MB per row; this gives
    63, 87 and 140 MB).
    """
    produced = {o.name: row_bytes(o) for n in path for o in n.outputs}
    saved = {i.name for n in backward for i in n.inputs if i.name in produced}
    largest = max(produced.values(), default=0)
    return 2 * sum(produced[k] for k in saved) + 3 * largest


NOMINAL_SIZE = 224  # the size a dynamic image dim takes in the memory estimate (runtime.py rescales it)


def nominal_row_bytes(fg: ForwardGraph, prefix: str):
    """``_row_bytes`` at a nominal image size, for a forward graph with dynamic image dims.

    Every dynamic dim of the image input but the batch takes ``NOMINAL_SIZE`` and shapes are inferred on a
    weightless copy; returns (tensor -> bytes of one row, for tensors named ``prefix`` + forward name,
    and the image's element count per row at that size). The runtime scales the estimate by the ratio of
    the real image's element count to this one.
    """
    sk = _skeleton(fg.model)
    pin_input_shape(sk, fg.input_name, [None] + [None if isinstance(d, int) else NOMINAL_SIZE
                                                 for d in fg.input_shape[1:]])
    try:
        sk = infer_shapes(sk)
    except GigError:  # no estimate at the nominal size: the caller falls back to the static tensors'
        return _row_bytes, 0
    sizes: dict[str, int] = {}
    for vi in list(sk.graph.value_info) + list(sk.graph.output):
        dims, kind = _dims(vi)[1:], vi.type.tensor_type.elem_type
        if all(isinstance(d, int) for d in dims) and kind in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                                                onnx.TensorProto.FLOAT16):
            item = onnx.helper.tensor_dtype_to_np_dtype(kind).itemsize
            sizes[prefix + vi.name] = int(np.prod(dims, dtype=np.int64)) * item
    pixels = int(np.prod([d if isinstance(d, int) else NOMINAL_SIZE for d in fg.input_shape[1:]], dtype=np.int64))
    return (lambda t: sizes.get(t.name, 0)), pixels


def user_error(exc: GigError, fg: ForwardGraph, prefixes: tuple[str, ...]) -> GigError:
    """A rule's error reworded for the user's model: node and tensor names without the copies' prefixes,
    and, where the rule wanted sizes the input leaves dynamic, the way out (--input-shape)."""
    text = str(exc)
    for p in prefixes:
        text = text.replace(p, "")
    text = text.replace("'NK'", "'N'")  # the path copy's batch (images x steps) is the user's batch
    if fg.dynamic_dims and "static" in text:
        example = ",".join(["1"] + [str(d) if isinstance(d, int) else str(NOMINAL_SIZE) for d in fg.input_shape[1:]])
        shown = "[" + ", ".join(str(d) if d is not None else "?" for d in fg.input_shape) + "]"
        text += (f"; input '{fg.input_name}' has dynamic sizes {shown}: pin them when converting, "
                 f"e.g. --input-shape {example}")
    return type(exc)(text)


# ops onnxruntime's NCHWc transformer keeps in the blocked layout when their inputs are blocked
_BLOCKED_UNARY = ("Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid")
_BLOCKED_BINARY = ("Add", "Sum", "Mul")


def keep_blocked_layout(backward: list[gs.Node], e: Emitter) -> int:
    """Feed every mask multiply blocked (NCHWc) operands; return how many identity convolutions it took.

    onnxruntime runs convolutions in a blocked layout and keeps a Relu/Add/Mul there only when all its
    inputs are blocked; one plain input (the Expand of a global-pool gradient, a ConvTranspose output)
    otherwise turns every mask multiply and every skip-connection sum downstream back to plain layout,
    with a reorder around each convolution (ResNet-50: 40 reorders). A 1x1 depthwise Conv with unit
    weights (exact: x * 1) in front of such an operand makes it blocked, and the Relu that follows fuses
    into it. Masks carry their channel count (``blocked_mask_channels``, set in autodiff/masks.py); so do
    the guided Clip's penalties, whose Add (then fused into the anchor with the Relu) is treated alike.
    """
    blocked: dict[int, bool] = {}
    producer: dict[int, gs.Node] = {}

    def is_blocked(t: gs.Tensor) -> bool:
        return isinstance(t, gs.Variable) and blocked.get(id(t), False)

    inserted = 0
    for node in backward:
        masks = [t for t in node.inputs if hasattr(t, "blocked_mask_channels")]
        if node.op in ("Mul", "Add") and len(masks) == 1 and masks[0].blocked_mask_channels % 16 == 0:
            k = 1 - node.inputs.index(masks[0])
            other = node.inputs[k]
            if not is_blocked(other):
                relu = producer.get(id(other))
                target, holder, slot = (relu.inputs[0], relu, 0) if relu is not None and relu.op == "Relu" \
                    else (other, node, k)
                c = masks[0].blocked_mask_channels
                anchor = e.op("Conv", [target, e.const(np.ones([c, 1, 1, 1], F32))], {"group": c, "kernel_shape": [1, 1]})
                anchor_node = e.graph.nodes.pop()  # keep topological order: right before its consumer
                e.graph.nodes.insert(e.graph.nodes.index(holder), anchor_node)
                holder.inputs[slot] = anchor
                blocked[id(anchor)] = True
                if holder is not node:
                    blocked[id(holder.outputs[0])] = True
                inserted += 1
        if node.op == "Conv":
            ok = True
        elif node.op in _BLOCKED_UNARY:
            ok = is_blocked(node.inputs[0])
        elif node.op in _BLOCKED_BINARY:
            ok = all(is_blocked(t) for t in node.inputs)
        else:
            ok = False
        for o in node.outputs:
            blocked[id(o)] = ok
            producer[id(o)] = node
    return inserted


def build_ig_model(fg: ForwardGraph, rules: RuleSet, metadata: Optional[dict[str, str]] = None,
                   fp16: bool = False, blocks: Optional[int] = None) -> onnx.ModelProto:
    """Wrap the forward graph, a path copy with its backward graph, and a baseline copy into one model.

    ``blocks`` runs the path copy and its backward graph as that many copies over slices of the rows
    (blocks.py; default: by the model's activation size, 1 for small models and for ``fp16``). ``fp16``
    returns the float16 graph (inputs and outputs stay float32; for the CUDA provider): its ReLU/Clip
    masks are built with comparisons, since the scaled-step masks need float32's range.
    """
    g = gs.import_onnx(fg.model)
    g.toposort()
    tensors = g.tensors()
    taken = set(tensors)
    clash = [n for n in INPUTS + OUTPUTS if n in taken]
    if clash:
        raise ModelError(f"the model already uses the tensor name(s) {', '.join(clash)}, which onnx-gig reserves")
    x, score = tensors[fg.input_name], tensors[fg.score_name]
    forward = list(g.nodes)
    rank = len(x.shape) if x.shape else None
    if not rank:
        raise ModelError(f"the rank of input '{x.name}' is unknown")
    e = Emitter(g, "gig/")
    e.arith_masks = not fp16  # read by the mask helpers in autodiff/masks.py

    baseline = gs.Variable("baseline", dtype=F32, shape=[f"baseline_d{i}" for i in range(rank)])
    alphas = gs.Variable("alphas", dtype=F32, shape=["K"])
    weights = gs.Variable("step_weights", dtype=F32, shape=["K"])
    target = gs.Variable("target", dtype=np.int64, shape=["T"])
    g.inputs = [x, baseline, alphas, weights, target]

    # which class: the given one, or the prediction where target < 0
    flat = e.reshape(score, [0, -1])
    pred = e.op("ArgMax", [flat], {"axis": 1, "keepdims": 0})
    t_in = e.expand(target, e.shape(pred))
    target_class = gs.Variable("target_class", dtype=np.int64, shape=["N"])
    g.nodes.append(gs.Node("Where", name="gig/target_class", inputs=[e.less(t_in, np.int64(0)), pred, t_in],
                           outputs=[target_class]))
    t_col = e.unsqueeze(target_class, [1])

    def gather_score(scores_flat, name: str) -> gs.Variable:
        out = gs.Variable(name, dtype=F32, shape=["N"])
        picked = e.op("GatherElements", [scores_flat, t_col], {"axis": 1})
        g.nodes.append(gs.Node("Reshape", name=f"gig/{name}", inputs=[picked, e.const(np.asarray([-1], np.int64))],
                               outputs=[out]))
        return out

    target_score = gather_score(flat, "target_score")
    scores = gs.Variable("scores", dtype=F32, shape=["N", fg.num_classes or "classes"])
    g.nodes.append(gs.Node("Identity", name="gig/scores", inputs=[flat], outputs=[scores]))

    # the straight path b + alpha (x - b), steps times images flattened into one batch, step-major (row
    # k * N + n): the sum over steps is then a ReduceSum over the leading axis, which onnxruntime runs about
    # 8x faster than over the middle axis of [1, K, ...] for one image (0.5 against 4.1 ms for MobileNetV2;
    # for several images 0.1-0.25 ms per image slower: docs/benchmark.md, Speed V)
    bx = e.expand(baseline, e.shape(x))
    diff = e.sub(x, bx)
    a = e.reshape(alphas, [-1, 1] + [1] * (rank - 1))
    path = e.add(e.unsqueeze(bx, [0]), e.mul(a, e.unsqueeze(diff, [0])))
    path_flat = e.op("Reshape", [path, _rest_shape(e, x)], dtype=F32, shape=["NK"] + list(x.shape[1:]))

    base_nodes, base_map = _clone(forward, x, bx, "gig/baseline/", "N")
    g.nodes.extend(base_nodes)
    baseline_score = gather_score(e.reshape(base_map[score.name], [0, -1]), "baseline_score")

    path_nodes, path_map = _clone(forward, x, path_flat, "gig/path/", "NK")
    g.nodes.extend(path_nodes)
    score_p = path_map[score.name]

    # seed: one-hot of the target, scaled by each step's quadrature weight
    depth = e.shape(flat, 1, 2)
    onehot = e.op("OneHot", [target_class, depth, e.const(np.asarray([0, 1], F32))], {"axis": -1})
    seed = e.mul(e.unsqueeze(onehot, [0]), e.reshape(weights, [-1, 1, 1]))  # [K, N, classes], as the rows
    n_rows = e.mul(e.shape(x, 0, 1), e.shape(alphas))  # N * K from shapes: not from the path copy's score, so
    # row blocks (blocks.py) can slice the seed before that copy runs, nor from the rows, which they never make
    seed = e.reshape(seed, e.concat([n_rows, e.shape(score, start=1)], axis=0))
    # declare the seed's shape: its symbolic batch (NK) then flows through the whole backward graph, so
    # onnxruntime can prove forward and backward tensors have one shape and keep both in its NCHWc layout
    seed.dtype, seed.shape = F32, list(score_p.shape) if score_p.shape is not None else None
    first_backward = len(g.nodes)
    try:
        grad = build_gradient(path_nodes, {"score": (score_p, seed)}, path_flat, rules, e)
    except GigError as exc:
        raise user_error(exc, fg, ("gig/path/", "gig/baseline/")) from None
    backward = list(g.nodes[first_backward:])
    nominal_pixels = 0
    if fg.dynamic_dims:
        row_bytes, nominal_pixels = nominal_row_bytes(fg, "gig/path/")
        bytes_per_row = memory_per_row(path_nodes, backward, row_bytes)
    else:
        bytes_per_row = memory_per_row(path_nodes, backward)
    if not fp16:
        keep_blocked_layout(backward, e)
    if blocks is None:  # the float16 graph is for GPUs, where one large batch beats small blocks
        blocks = 1 if fp16 else auto_blocks(bytes_per_row)
    grad, blocks = split_rows(e, StraightPath(path_flat, bx, diff, alphas), seed, grad,
                              path_nodes + list(g.nodes[first_backward:]), blocks, _clone)

    k_n_rest = e.concat([e.const(np.asarray([-1], np.int64)), e.shape(x)], axis=0)
    summed = e.op("ReduceSum", [e.op("Reshape", [grad, k_n_rest]), e.const(np.asarray([0], np.int64))],
                  {"keepdims": 0})
    attributions = gs.Variable("attributions", dtype=F32, shape=list(x.shape))
    g.nodes.append(gs.Node("Mul", name="gig/attributions", inputs=[summed, diff], outputs=[attributions]))

    model_outputs = [tensors[n] for n in fg.output_names]
    g.outputs = [attributions, target_class, target_score, baseline_score, scores] + model_outputs
    g.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(g, do_type_check=False)
    model.ir_version = fg.model.ir_version
    del model.opset_import[:]
    model.opset_import.extend(fg.model.opset_import)

    default_alphas, default_weights = schedule(DEFAULT_STEPS, DEFAULT_RULE)
    defaults = {
        "baseline": np.zeros([1] * rank, F32),
        "alphas": default_alphas,
        "step_weights": default_weights,
        "target": np.asarray([-1], np.int64),
    }
    for name, value in defaults.items():
        model.graph.initializer.append(numpy_helper.from_array(value, name))

    meta = dict(fg.metadata)
    meta.update(metadata or {})
    meta.update({
        META_PREFIX + "version": __version__,
        META_PREFIX + "method": rules.name,
        META_PREFIX + "input": fg.input_name,
        META_PREFIX + "score": fg.score_name,
        META_PREFIX + "model_outputs": json.dumps(fg.output_names),
        META_PREFIX + "num_classes": str(fg.num_classes or ""),
        META_PREFIX + "probability": fg.probability,
        META_PREFIX + "bytes_per_step": str(bytes_per_row or 3 * _activation_bytes_per_row(forward)),
        META_PREFIX + "row_blocks": str(blocks),
        **({META_PREFIX + "bytes_per_step_pixels": str(nominal_pixels)} if nominal_pixels else {}),
        **({META_PREFIX + "pixel_input": json.dumps(fg.pixel_input)} if fg.pixel_input else {}),
        META_PREFIX + "defaults": json.dumps({"steps": DEFAULT_STEPS, "rule": DEFAULT_RULE, "baseline": "zeros"}),
    })
    onnx.helper.set_model_props(model, meta)
    model.producer_name = "onnx-gig"
    model.producer_version = __version__
    return to_float16(model) if fp16 else model


def _toposort(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` so that every input is produced before it is read (stable otherwise)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, order = [copy_node(n) for n in graph.node], []
    while pending:
        rest = [n for n in pending if not all(i in known for i in n.input)]
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ModelError(f"the graph has a cycle or an undefined input at node '{rest[0].name}'")
        for n in ready:
            order.append(n)
            known.update(n.output)
        pending = rest
    del graph.node[:]
    graph.node.extend(order)


def copy_node(n: onnx.NodeProto) -> onnx.NodeProto:
    c = onnx.NodeProto()
    c.CopyFrom(n)
    return c


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float16 version of an IG model: every float tensor inside in float16, inputs and outputs float32.

    Uses onnxruntime's own converter (``onnxruntime.transformers.float16``, shipped in the onnxruntime
    wheels this package already depends on; the same code as onnxconverter-common, so no extra
    dependency). The defaults of the overridable inputs stay float32, as their inputs do. Meant for the
    CUDA provider: onnxruntime's CPU provider lacks float16 kernels for most ops.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    inputs = {i.name for i in model.graph.input}
    defaults = {t.name: onnx.TensorProto() for t in model.graph.initializer if t.name in inputs}
    for t in model.graph.initializer:
        if t.name in defaults:
            defaults[t.name].CopyFrom(t)
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    _toposort(half.graph)  # the converter appends its input Casts at the end
    for t in half.graph.initializer:
        if t.name in defaults:
            t.CopyFrom(defaults[t.name])
    props = {p.key: p.value for p in half.metadata_props}  # bytes_per_step stays: a safe upper bound
    props[META_PREFIX + "dtype"] = "float16"
    del half.metadata_props[:]
    onnx.helper.set_model_props(half, props)
    return half
