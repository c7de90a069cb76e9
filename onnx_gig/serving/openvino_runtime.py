"""A converted model on OpenVINO: the second, independent runtime.

OpenVINO reads the ``.onnx`` file directly. What differs from onnxruntime (measured with openvino 2026.4;
shared/reference/onnx-backward-facts.md):

- Inputs that are also initializers (``baseline``, ``alphas``, ``step_weights``, ``target``, ...) become
  constants: the unchanged model has one input, the image, and always runs with its defaults (the
  predicted class, the built-in steps and baseline). ``overridable=True`` removes those four initializers
  from a copy handed to OpenVINO, so they become real inputs (fed with their defaults when not given).
- A Conv and a ConvTranspose reading one square weight tensor (in-channels == out-channels) make the
  ConvTranspose wrong. ``unshare_conv_weights`` gives each such ConvTranspose its own copy. It changes
  nothing once the converter writes that copy itself (see docs/serving.md, "Converter changes").
- Tensors may be renamed: inputs and outputs are fed and read by position, in the ONNX graph's order.
- On CPUs with bfloat16 support OpenVINO's CPU plugin computes in bfloat16 by default; the model is
  compiled with ``INFERENCE_PRECISION_HINT=f32``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx

from ..errors import InputError, ModelError, first_line
from ..quadrature import DEFAULT_RULE, DEFAULT_STEPS, schedule
from ..runtime import Explanation, default_max_memory, parse_memory
from .signature import read_signature

COPY_SUFFIX = "/openvino_copy"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise ModelError("OpenVINO is not installed; pip install 'onnx-gig[openvino]'") from None
    return openvino


def shared_conv_transpose_weights(model: onnx.ModelProto) -> list[str]:
    """Initializers read by a ConvTranspose (as its weight) and also by another node."""
    inits = {t.name for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    return sorted({n.input[1] for n in model.graph.node
                   if n.op_type == "ConvTranspose" and len(n.input) > 1 and n.input[1] in inits
                   and readers.get(n.input[1], 0) > 1})


def unshare_conv_weights(model: onnx.ModelProto) -> list[str]:
    """Give every ConvTranspose whose weight initializer other nodes also read its own copy; in place."""
    shared = set(shared_conv_transpose_weights(model))
    if not shared:
        return []
    inits = {t.name: t for t in model.graph.initializer}
    copies: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "ConvTranspose" and len(node.input) > 1 and node.input[1] in shared:
            w = node.input[1]
            if w not in copies:
                t = onnx.TensorProto()
                t.CopyFrom(inits[w])
                t.name = w + COPY_SUFFIX
                model.graph.initializer.append(t)
                copies[w] = t.name
            node.input[1] = copies[w]
    return sorted(copies)


def promote_defaults(model: onnx.ModelProto) -> list[str]:
    """Remove the initializers that give graph inputs their defaults (OpenVINO then keeps them as inputs)."""
    inputs = {i.name for i in model.graph.input}
    keep = [t for t in model.graph.initializer if t.name not in inputs]
    removed = [t.name for t in model.graph.initializer if t.name in inputs]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return removed


class OpenVinoGigModel:
    """Run a converted model with OpenVINO; ``explain`` mirrors :meth:`onnx_gig.GigModel.explain`.

    ``unchanged=True`` hands OpenVINO the file exactly as written (only the image can be given);
    otherwise a copy with the two workarounds above is compiled (``fixes`` lists what they changed).
    """

    def __init__(self, path: str | os.PathLike, device: str = "CPU", unchanged: bool = False,
                 overridable: bool = True, max_memory: int | str | None = None, threads: Optional[int] = None):
        ov = import_openvino()
        self.path = Path(path)
        self.signature = read_signature(self.path)
        self.input_name = self.signature.image.name
        self.input_shape = list(self.signature.image.shape)
        self.num_classes = self.signature.num_classes
        self.method = self.signature.method
        self.bytes_per_step = self.signature.bytes_per_step
        self.max_memory = parse_memory(max_memory) or default_max_memory()
        self.unchanged = unchanged
        self.fixes: list[str] = []
        core = ov.Core()
        if unchanged:
            ov_model = core.read_model(str(self.path))
            self.input_names = [self.input_name]
        else:
            proto = onnx.load(str(self.path))  # with its external data
            self.fixes += [f"copied weight '{w}' for its ConvTranspose" for w in unshare_conv_weights(proto)]
            if overridable:
                promote_defaults(proto)
            self.input_names = [i.name for i in proto.graph.input if i.name not in
                                {t.name for t in proto.graph.initializer}]
            try:
                data = proto.SerializeToString()
            except ValueError:
                raise ModelError(f"{self.path} is over 2 GB; run it unchanged on OpenVINO (unchanged=True)") from None
            ov_model = core.read_model(data, b"")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(ov_model, device, config)
        except RuntimeError as exc:
            first = first_line(exc)
            raise ModelError(f"OpenVINO cannot compile {self.path}: {first}") from None
        if len(self.compiled.inputs) != len(self.input_names):
            raise ModelError(f"OpenVINO sees {len(self.compiled.inputs)} inputs in {self.path}, expected "
                             f"{len(self.input_names)} ({', '.join(self.input_names)})")
        self.output_names = [o.name for o in self.signature.outputs]
        if len(self.compiled.outputs) != len(self.output_names):
            raise ModelError(f"OpenVINO sees {len(self.compiled.outputs)} outputs in {self.path}, expected "
                             f"{len(self.output_names)}")
        self.request = self.compiled.create_infer_request()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run; inputs by name (fed by position), outputs named as in the ONNX graph."""
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise InputError(f"OpenVINO was given {', '.join(unknown)}, which this compiled model does not take "
                             + ("(the unchanged model takes only the image)" if self.unchanged else ""))
        defaults = self.signature.defaults
        values = []
        for name in self.input_names:
            if name in feeds:
                values.append(np.ascontiguousarray(feeds[name]))
            elif name in defaults:
                values.append(defaults[name])
            else:
                raise InputError(f"input '{name}' is required")
        result = self.request.infer(values)
        return {name: np.array(result[out]) for name, out in zip(self.output_names, self.compiled.outputs)}

    def explain(self, inputs: np.ndarray, baselines: Any = None, target: Any = None,
                n_steps: int = DEFAULT_STEPS, method: str = DEFAULT_RULE) -> Explanation:
        """Attributions for a batch (or one image without the batch dim), in memory-bounded chunks."""
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim == len(self.input_shape) - 1:
            x = x[None]
        if x.ndim != len(self.input_shape) or any(w not in (-1, g) for g, w in zip(x.shape[1:], self.input_shape[1:])):
            raise InputError(f"inputs have shape {list(x.shape)}; the model expects {self.input_shape}")
        n = x.shape[0]
        if self.unchanged:
            if baselines is not None or target is not None or (n_steps, method) != (DEFAULT_STEPS, DEFAULT_RULE):
                raise InputError("the unchanged model on OpenVINO runs with its built-in defaults only "
                                 "(predicted class, default steps and baseline); use unchanged=False to set them")
            steps = max(1, self.signature.default_steps)
            group = max(1, self.max_memory // (self.bytes_per_step * steps))
            parts = [self.run({self.input_name: x[i:i + group]}) for i in range(0, n, group)]
            joined = {k: np.concatenate([p[k] for p in parts], 0) for k in self.output_names}
            return _explanation(joined)
        b = np.asarray(0.0 if baselines is None else baselines, np.float32)
        if b.ndim == 0:
            b = np.full([1] * x.ndim, b, np.float32)
        elif b.ndim == x.ndim - 1:
            b = b[None]
        if b.ndim != x.ndim or b.shape[0] not in (1, n):
            raise InputError(f"baseline shape {list(b.shape)} does not fit inputs of shape {list(x.shape)}")
        t = np.asarray([-1] if target is None else np.atleast_1d(target), dtype=np.int64)
        if t.ndim != 1 or t.size not in (1, n):
            raise InputError(f"target must be one class index or one per image, got {target!r}")
        alphas, weights = schedule(n_steps, method)
        rows = max(1, self.max_memory // self.bytes_per_step)
        group = max(1, min(n, rows // max(1, n_steps)))
        per = max(1, min(n_steps, rows // group))
        attr = np.zeros_like(x)
        extra: dict[str, list[np.ndarray]] = {}
        for i in range(0, n, group):
            j = min(n, i + group)
            for s in range(0, n_steps, per):
                res = self.run({self.input_name: x[i:j], "baseline": b if b.shape[0] == 1 else b[i:j],
                                "alphas": alphas[s:s + per], "step_weights": weights[s:s + per],
                                "target": t if t.size == 1 else t[i:j]})
                attr[i:j] += res["attributions"]
                if s == 0:
                    for k, v in res.items():
                        if k != "attributions":
                            extra.setdefault(k, []).append(v)
        joined = {k: np.concatenate(v, 0) for k, v in extra.items()}
        joined["attributions"] = attr
        return _explanation(joined)


def _explanation(out: dict[str, np.ndarray]) -> Explanation:
    from ..contract import OUTPUTS

    return Explanation(attributions=out["attributions"], target=out["target_class"],
                       target_score=out["target_score"], baseline_score=out["baseline_score"], scores=out["scores"],
                       outputs={k: v for k, v in out.items() if k not in OUTPUTS})
