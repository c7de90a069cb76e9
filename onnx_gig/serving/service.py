"""Requests to explanations, independent of the server framework (kserve_server.py wraps it).

Two request forms:

- ``infer``: the Open Inference Protocol (v2). Tensors named as the model's inputs (the image, and
  optionally ``baseline``, ``alphas``, ``step_weights``, ``target``) in, the model's outputs out: the same
  contract as the ONNX file and as Triton serves it. Without ``alphas``, the request parameters ``steps``
  and ``rule`` choose the schedule (default: the model's own); other parameter names are refused, as in v1.
- ``explain_instances``: the v1 ``:explain`` body, ``{"instances": [...], "parameters": {...}}``, where an
  instance is an encoded photo (``{"image_bytes": {"b64": ...}}``) or a preprocessed tensor, with an
  optional ``target`` (negative = the predicted class); a parameter set to null takes its default. Photos of
  different sizes (a model with dynamic height and width) run as one batch per size. The photo is prepared
  exactly as ``onnx-gig explain`` prepares a file; the answer holds the raw attributions, the class, the top
  predictions and, on request, the heatmap figure as PNG.

Every run goes through the converted model's contract on onnxruntime, in memory-bounded chunks of
integration steps whose partial sums add up; one request runs at a time per model (the memory budget is
per run).
"""
from __future__ import annotations

import base64
import binascii
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..api import figure_title, label_of, top_classes
from ..contract import probabilities
from ..errors import GigError, InputError, whole_number
from ..heatmap import CMAPS, png_bytes, render_figure, saliency_map
from ..imageio import BASELINE_KINDS, load_input, make_baseline
from ..quadrature import DEFAULT_RULE, DEFAULT_STEPS, MAX_STEPS, RULES, schedule
from ..runtime import QUIET_RUN, GigModel
from .signature import Signature, read_signature
from .triton import config_dict, config_json, default_name

# the inputs a request may set (the ones a converted model has): the image, then these
HANDLED_INPUTS = ("baseline", "alphas", "step_weights", "target", "attributions_in")
MAX_IMAGES = 64  # images in one request
ATTRIBUTION_FORMATS = ("list", "b64", "none")
V1_PARAMETERS = ("steps", "rule", "baseline", "target", "heatmap", "attributions", "top", "cmap")
V2_PARAMETERS = ("steps", "rule")  # the schedule, when no alphas/step_weights are sent
# parameters of the protocol, not of the model: the binary extension's (read by KServe) and those Triton's
# clients send with a request's options (timeout, priority, sequences), accepted and left to the server
PROTOCOL_PARAMETERS = ("binary_data_output", "timeout", "priority", "sequence_id", "sequence_start", "sequence_end")


def _plain(value: Any) -> Any:
    """Request parameters as plain Python values (REST dicts, pydantic models or gRPC InferParameter)."""
    if value is None:
        return None
    if hasattr(value, "WhichOneof"):  # grpc InferParameter
        kind = value.WhichOneof("parameter_choice")
        return getattr(value, kind) if kind else None
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def top_json(probs: np.ndarray, labels: Optional[Sequence[str]], k: int) -> list[dict]:
    """The ``k`` most probable classes as JSON objects: class, label, probability."""
    return [{"class": c, "label": name, "probability": p} for c, name, p in top_classes(probs, labels, k)]


class GigService:
    """One converted model behind a server: the v2 contract, v1 explain/predict, and Triton's config."""

    def __init__(self, path: str | os.PathLike, name: Optional[str] = None, device: str = "auto",
                 max_memory: int | str | None = None, threads: Optional[int] = None) -> None:
        self.path = Path(path)
        self.signature: Signature = read_signature(self.path)
        self.name = name or default_name(self.path)
        self.gm = GigModel(self.path, device=device, max_memory=max_memory, threads=threads)
        self.pixels = self.gm.pixel_dtype  # integer .npy instances accepted as is
        self.preprocess = self.gm.preprocess
        self.labels = self.signature.labels
        self.num_classes = self.signature.num_classes
        self.default_steps = self.signature.default_steps or DEFAULT_STEPS
        self._output_names = [o.name for o in self.gm.session.get_outputs()]
        self._lock = threading.Lock()

    # -- description ------------------------------------------------------------------
    def input_metadata(self) -> list[dict]:
        return [t.metadata() for t in self.signature.inputs]

    def output_metadata(self) -> list[dict]:
        return [t.metadata() for t in self.signature.outputs]

    def config(self) -> dict:
        """Triton's model configuration for this model (max_batch_size 0: the whole contract), as JSON."""
        return config_json(config_dict(self.signature, self.name, 0, "auto"))

    # -- running ----------------------------------------------------------------------
    def run_contract(self, x: np.ndarray, baseline: np.ndarray, alphas: np.ndarray, weights: np.ndarray,
                     target: np.ndarray) -> dict[str, np.ndarray]:
        """The model on a batch: images and steps in chunks under the memory budget; outputs by name."""
        n, k = x.shape[0], alphas.shape[0]
        rows = max(1, self.gm.max_memory // self.gm.step_bytes(int(np.prod(x.shape[1:]))))
        per = max(1, min(k, rows))
        group = max(1, min(n, rows // per))
        attr = np.zeros_like(x)
        extra: dict[str, list[np.ndarray]] = {}
        with self._lock:
            for i in range(0, n, group):
                j = min(n, i + group)
                for s in range(0, k, per):
                    feed = {self.gm.input_name: x[i:j], "baseline": baseline if baseline.shape[0] == 1 else baseline[i:j],
                            "alphas": alphas[s:s + per], "step_weights": weights[s:s + per],
                            "target": target if target.size == 1 else target[i:j]}
                    res = dict(zip(self._output_names, self.gm.session.run(None, feed, QUIET_RUN)))
                    attr[i:j] += res["attributions"]
                    if s == 0:
                        for name, v in res.items():
                            if name != "attributions":
                                extra.setdefault(name, []).append(v)
        out = {name: np.concatenate(v, 0) for name, v in extra.items()}
        out["attributions"] = attr
        return {name: out[name] for name in self._output_names}

    def _check_image(self, x: np.ndarray, what: str) -> np.ndarray:
        shape = self.gm.input_shape
        if x.dtype.kind not in "fiu":
            raise InputError(f"{what} must be numeric, got {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != len(shape) or any(isinstance(w, int) and w > 0 and g != w for g, w in zip(x.shape[1:], shape[1:])):
            raise InputError(f"{what} has shape {list(x.shape)}; the model expects {shape} (batch first)")
        if not 1 <= x.shape[0] <= MAX_IMAGES:
            raise InputError(f"{what} holds {x.shape[0]} images; send 1 to {MAX_IMAGES} per request")
        if not np.isfinite(x).all():
            raise InputError(f"{what} contains NaN or infinity")
        return x

    def _target(self, t: Any) -> int:
        """One v1 class index: 0 to classes - 1, or any negative number for the predicted class (as v2's)."""
        top = (self.num_classes or 10 ** 9) - 1
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t > top:
            raise InputError(f"target must be a whole number up to {top} (negative = the predicted class), got {t!r}")
        return max(int(t), -1)

    def run_instances(self, xs: Sequence[np.ndarray], baselines: Optional[Sequence[np.ndarray]], alphas: np.ndarray,
                      weights: np.ndarray, targets: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """run_contract over images of any sizes: one run per size (a model with dynamic height and width keeps
        each photo's aspect, as batch.attribute_items does); each image's outputs, in the order given."""
        by_size: dict[tuple, list[int]] = {}
        for i, x in enumerate(xs):
            by_size.setdefault(x.shape, []).append(i)
        per: list[dict[str, np.ndarray]] = [{} for _ in xs]
        for idx in by_size.values():
            x = np.stack([xs[i] for i in idx])
            b = np.zeros([1] * x.ndim, np.float32) if baselines is None else np.stack([baselines[i] for i in idx])
            t = np.asarray([targets[i] for i in idx], np.int64)
            out = self.run_contract(x, b.astype(np.float32), alphas, weights, t)
            for k, i in enumerate(idx):
                per[i] = {name: v[k] for name, v in out.items()}
        return per

    def _check_target(self, t: Any, n: int) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t))
        if t.dtype.kind not in "iu" or t.ndim != 1 or t.size not in (1, n):
            raise InputError(f"target must hold one class index or one per image ({n}), got shape {list(t.shape)}")
        if self.num_classes is not None and (t >= self.num_classes).any():
            raise InputError(f"target {t.tolist()} is out of range: the model has {self.num_classes} classes "
                             f"(0..{self.num_classes - 1}; negative = the predicted class)")
        return t.astype(np.int64)

    def _schedule(self, steps: Any, rule: Any) -> tuple[np.ndarray, np.ndarray]:
        steps = self.default_steps if steps is None else whole_number(steps, "steps", 1, MAX_STEPS)
        rule = DEFAULT_RULE if rule is None else rule
        if rule not in RULES:
            raise InputError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
        return schedule(steps, rule)

    # -- Open Inference Protocol (v2) -----------------------------------------------------
    def infer(self, inputs: Mapping[str, np.ndarray], parameters: Any = None) -> dict[str, np.ndarray]:
        """The v2 infer call: the model's inputs by name in, all its outputs by name out."""
        params = _plain(parameters) or {}
        if not isinstance(params, Mapping):
            raise InputError('"parameters" must be a JSON object')
        unknown = sorted(set(params) - set(V2_PARAMETERS) - set(PROTOCOL_PARAMETERS))
        if unknown:
            raise InputError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(V2_PARAMETERS)}")
        image = self.gm.input_name
        known = {image, *self.signature.optional_inputs} & {image, *HANDLED_INPUTS}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(unknown)}; the model takes {', '.join(sorted(known))}")
        if image not in inputs:
            raise InputError(f"the image input '{image}' is required")
        x = self._check_image(np.asarray(inputs[image]), f"input '{image}'")
        n = x.shape[0]
        b = np.asarray(inputs.get("baseline", np.zeros([1] * x.ndim, np.float32)))
        with np.errstate(over="ignore", invalid="ignore"):  # finite in float32, the type the model runs in
            finite = b.dtype.kind == "f" and bool(np.isfinite(b.astype(np.float32)).all())
        if not finite or b.ndim != x.ndim:
            raise InputError(f"baseline must be a finite float tensor of rank {x.ndim}, broadcastable to the image")
        try:
            if np.broadcast_shapes(b.shape, x.shape) != x.shape:
                raise ValueError
        except ValueError:
            raise InputError(f"baseline shape {list(b.shape)} does not broadcast to the image {list(x.shape)}") from None
        b = np.ascontiguousarray(b, dtype=np.float32)
        if b.shape[0] not in (1, n):
            raise InputError(f"baseline has {b.shape[0]} images for {n}")
        t = self._check_target(inputs.get("target", np.asarray([-1], np.int64)), n)
        if ("alphas" in inputs) != ("step_weights" in inputs):
            raise InputError("send alphas and step_weights together, or neither (then the parameters steps and rule apply)")
        if "alphas" in inputs:
            alphas = np.asarray(inputs["alphas"])
            weights = np.asarray(inputs["step_weights"])
            if alphas.ndim != 1 or alphas.shape != weights.shape or not 1 <= alphas.size <= MAX_STEPS \
                    or alphas.dtype.kind != "f" or weights.dtype.kind != "f":
                raise InputError(f"alphas and step_weights must be float vectors of one length (1 to {MAX_STEPS})")
            with np.errstate(over="ignore", invalid="ignore"):
                alphas, weights = alphas.astype(np.float32), weights.astype(np.float32)
            if not (np.isfinite(alphas).all() and np.isfinite(weights).all()):  # 1e39 is infinity in float32
                raise InputError("alphas and step_weights must be finite float32 numbers "
                                 "(no NaN, infinity or beyond 3.4e38)")
        else:
            alphas, weights = self._schedule(params.get("steps"), params.get("rule"))
        out = self.run_contract(x, b, alphas, weights, t)
        if "attributions_in" in inputs:  # what the graph adds once per run, added once per request here
            acc = np.asarray(inputs["attributions_in"])
            try:
                out["attributions"] = (out["attributions"] + acc.astype(np.float32)).astype(np.float32)
            except ValueError:
                raise InputError(f"attributions_in shape {list(acc.shape)} does not broadcast to the image") from None
            if out["attributions"].shape != x.shape:
                raise InputError(f"attributions_in shape {list(acc.shape)} does not broadcast to the image")
        return out

    def predict_instances(self, body: Any) -> dict:
        """The v1 predict call: the top classes of each instance (one cheap step, no integration)."""
        instances, params = self._instances(body)
        top = whole_number(params.get("top", 5), "top", 1, self.num_classes or 10 ** 6)
        outs = self.run_instances([inst[0] for inst in instances], None, np.ones(1, np.float32),
                                  np.zeros(1, np.float32), [-1] * len(instances))
        preds = []
        for (_, _, _, key), out in zip(instances, outs):
            ranked = top_json(probabilities(out["scores"], self.gm.probability), self.labels, top)
            p = {"class": ranked[0]["class"], "label": ranked[0]["label"], "top": ranked}
            if key is not None:
                p["key"] = key
            preds.append(p)
        return {"predictions": preds}

    # -- v1 explain ----------------------------------------------------------------------
    def explain_instances(self, body: Any) -> dict:
        """The v1 explain call: attributions for each instance, and the heatmap figure when asked."""
        instances, params = self._instances(body)
        steps = self.default_steps if params.get("steps") is None else whole_number(params["steps"], "steps", 1, MAX_STEPS)
        rule = params.get("rule", DEFAULT_RULE)  # absent or null: the default (_instances drops nulls)
        alphas, weights = self._schedule(steps, rule)
        kind = params.get("baseline", "zeros")
        if kind not in BASELINE_KINDS:  # never a server-side file path
            raise InputError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINE_KINDS)}")
        fmt = params.get("attributions", "list")
        if fmt not in ATTRIBUTION_FORMATS:
            raise InputError(f"attributions must be one of {', '.join(ATTRIBUTION_FORMATS)}, got {fmt!r}")
        heatmap = params.get("heatmap", False)
        if not isinstance(heatmap, bool):
            raise InputError(f"heatmap must be true or false, got {heatmap!r}")
        cmap = params.get("cmap", "inferno")
        if cmap not in CMAPS:
            raise InputError(f"unknown cmap {cmap!r}; choose one of {', '.join(CMAPS)}")
        top = whole_number(params.get("top", 5), "top", 1, self.num_classes or 10 ** 6)
        default_target = params.get("target")
        targets = []
        for _, _, t, _ in instances:
            t = default_target if t is None else t
            targets.append(-1 if t is None else self._target(t))
        xs = [inst[0] for inst in instances]
        bs = [make_baseline(kind, inst[0], inst[1], self.preprocess) for inst in instances]
        outs = self.run_instances(xs, bs, alphas, weights, targets)
        results = []
        for (_, photo, _, key), out in zip(instances, outs):
            attr = out["attributions"]
            t = int(out["target_class"])
            probs = probabilities(out["scores"], self.gm.probability)
            r: dict[str, Any] = {
                "target": t, "label": label_of(self.labels, t), "probability": float(probs[t]),
                "target_score": float(out["target_score"]), "baseline_score": float(out["baseline_score"]),
                "convergence_delta": float(attr.sum(dtype=np.float64) - (out["target_score"] - out["baseline_score"])),
                "top": top_json(probs, self.labels, top),
            }
            if key is not None:
                r["key"] = key
            if fmt == "list":
                r["attributions"] = {"shape": list(attr.shape), "datatype": "FP32",
                                     "data": attr.astype(np.float64).ravel().tolist()}
            elif fmt == "b64":
                r["attributions"] = {"shape": list(attr.shape), "datatype": "FP32",
                                     "b64": base64.b64encode(attr.astype("<f4").tobytes()).decode("ascii")}
            if heatmap:
                if not np.isfinite(attr).all():
                    raise GigError("NaN or infinite attributions; no heatmap can be drawn")
                # the map is clipped at heatmap.DEFAULT_CLIP, and figure_title says so, like the CLI's figure
                title = figure_title(r["label"], float(probs[t]), self.gm.method, len(alphas), rule, kind)
                fig = render_figure(photo, saliency_map(attr, self.preprocess.layout), title, cmap)
                r["heatmap_png"] = {"b64": base64.b64encode(png_bytes(fig)).decode("ascii")}
            results.append(r)
        return {"model_name": self.name, "method": self.gm.method, "steps": int(len(alphas)), "rule": rule,
                "baseline": kind, "explanations": results}

    def _instances(self, body: Any) -> tuple[list[tuple[np.ndarray, Any, Any, Any]], dict]:
        """[(tensor without batch dim, photo or None, target or None, key or None)], parameters."""
        if not isinstance(body, Mapping) or not isinstance(body.get("instances"), list):
            raise InputError('the body must be a JSON object with a list "instances"')
        params = body.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise InputError('"parameters" must be a JSON object')
        unknown = sorted(set(params) - set(V1_PARAMETERS))
        if unknown:
            raise InputError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(V1_PARAMETERS)}")
        params = {k: v for k, v in params.items() if v is not None}  # null: the parameter's default
        items = body["instances"]
        if not 1 <= len(items) <= MAX_IMAGES:
            raise InputError(f"send 1 to {MAX_IMAGES} instances per request, got {len(items)}")
        return [self._instance(item, i) for i, item in enumerate(items)], params

    def _instance(self, item: Any, i: int) -> tuple[np.ndarray, Any, Any, Any]:
        target = key = None
        if isinstance(item, Mapping):
            target, key = item.get("target"), item.get("key")
            extra = sorted(set(item) - {"image_bytes", "b64", "tensor", "target", "key"})
            if extra:
                raise InputError(f"instance {i}: unknown field(s) {', '.join(extra)}")
            if "image_bytes" in item or "b64" in item:
                photo_field = item["image_bytes"] if "image_bytes" in item else item
                if not isinstance(photo_field, Mapping) or "b64" not in photo_field:
                    raise InputError(f'instance {i}: image_bytes must be {{"b64": "<the photo as base64>"}}')
                x, photo = self._decode_photo(photo_field["b64"], i)
                return x, photo, target, key
            if "tensor" not in item:
                raise InputError(f'instance {i}: give "image_bytes": {{"b64": ...}} or "tensor": [...]')
            item = item["tensor"]
        try:
            x = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"instance {i}: not a photo and not a numeric tensor") from None
        if x.ndim == len(self.gm.input_shape) and x.shape[0] == 1:
            x = x[0]
        return self._check_image(x[None], f"instance {i}")[0], None, target, key

    def _decode_photo(self, encoded: Any, i: int) -> tuple[np.ndarray, Any]:
        if not isinstance(encoded, str):
            raise InputError(f"instance {i}: b64 must be a base64 string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"instance {i}: b64 is not valid base64") from None
        return self.photo_input(data, f"instance {i}")

    def photo_input(self, data: bytes, what: str = "the photo") -> tuple[np.ndarray, Any]:
        """An encoded photo's bytes as a model input (no batch dim) and the photo the model saw.

        A bad photo is an InputError prefixed with ``what`` (when given)."""
        # through a file, so the photo is read and prepared by exactly the code 'onnx-gig explain' runs
        fd, tmp = tempfile.mkstemp(suffix=".img")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                x, photo = load_input(tmp, self.preprocess, self.gm.input_shape, pixels=self.pixels)
            except InputError as exc:
                message = str(exc).replace(tmp + ": ", "").replace(tmp, "the photo")
                raise InputError(f"{what}: {message}" if what else message) from None
        finally:
            os.unlink(tmp)
        return x, photo


def encode_photo(path: str | os.PathLike) -> dict:
    """A v1 instance for a photo file: {"image_bytes": {"b64": ...}}."""
    return {"image_bytes": {"b64": base64.b64encode(Path(path).read_bytes()).decode("ascii")}}


def decode_tensor(entry: Mapping) -> np.ndarray:
    """Attributions from a v1 explanation (either encoding) as a float32 array."""
    shape = [int(d) for d in entry["shape"]]
    if "b64" in entry:
        return np.frombuffer(base64.b64decode(entry["b64"]), dtype="<f4").reshape(shape).astype(np.float32)
    return np.asarray(entry["data"], dtype=np.float32).reshape(shape)


__all__ = ["GigService", "encode_photo", "decode_tensor", "top_json"]
