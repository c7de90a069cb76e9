"""Faithfulness metrics: deletion and insertion (RISE, Petsiuk et al. 2018) for any saliency map.

A map orders the pixels, most salient first. Deletion moves them one step at a time from the
image to zeros in model-input space (all channels at once); insertion moves them from a blurred
copy (11x11 Gaussian, sigma 5) back to the image. The score after each step is the
probability of the class predicted on the clean image (softmax of the scores; sigmoid for a converted
model whose head is one); the area under the curve (trapezoid
rule, x = fraction of pixels moved, in [0, 1]) is the metric: lower is better for deletion,
higher for insertion.

Every perturbed image of a curve goes through the model in batches (``batch_size`` images per
run, 64 by default), never one forward pass per step. The map can come from anywhere: the
metrics only need a ``forward`` callable mapping a batch to class scores, such as
:class:`OnnxForward`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import onnx

from .contract import probabilities
from .errors import InputError, ModelError, first_line, whole_number
from .imageio import gaussian_blur

Forward = Callable[[np.ndarray], np.ndarray]
"""A batch of model inputs ``[B, ...]`` -> class scores ``[B, classes]`` (logits unless ``softmax=False``)."""

DEFAULT_BATCH = 64
BLUR_KSIZE = 11
BLUR_SIGMA = 5.0


# --------------------------------------------------------------------------- the forward function


class OnnxForward:
    """Class scores from onnxruntime: ``OnnxForward(path)(batch) -> [B, classes]``.

    For a model written by ``onnx-gig convert`` the session runs only the forward part of the
    graph up to its ``scores`` output (the explained, pre-softmax scores), pruned out of the
    converted model: the same numbers the attributions explain, at the cost of a plain forward
    pass. (Feeding the converted model zero integration steps does not work: its path batch
    would be empty.) For any other classifier it runs ``output`` (default: the first output).
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, output: Optional[str] = None,
                 device: str = "auto", threads: Optional[int] = None) -> None:
        from .contract import META_PREFIX, probability_kind
        from .runtime import QUIET_RUN, make_session, ort_errors

        proto = model if isinstance(model, onnx.ModelProto) else read_onnx(model)
        meta = {p.key: p.value for p in proto.metadata_props}
        if META_PREFIX + "method" in meta:
            self.input_name = meta[META_PREFIX + "input"]
            self.output_name = output or "scores"
        else:
            inits = {i.name for i in proto.graph.initializer}
            inputs = [i.name for i in proto.graph.input if i.name not in inits]
            if len(inputs) != 1:
                raise ModelError(f"the model has {len(inputs)} inputs; OnnxForward needs exactly one")
            self.input_name = inputs[0]
            self.output_name = output or proto.graph.output[0].name
        self.metadata = meta
        self.probability = probability_kind(meta)  # softmax, or sigmoid for a converted sigmoid head
        pruned = forward_only(proto, self.input_name, self.output_name)
        self.session = make_session(pruned.SerializeToString(), device, threads)
        self._quiet, self._ort_errors = QUIET_RUN, ort_errors()  # a failed run: one line, no runtime log
        self.calls = 0  # forward passes run so far (the tests count them)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)},
                                      self._quiet)
        except self._ort_errors as exc:
            first = first_line(exc)
            raise ModelError(f"onnxruntime failed on a batch of {list(np.shape(batch))}: {first}") from None
        return out.reshape(out.shape[0], -1)


def read_onnx(path: str | os.PathLike, load_external_data: bool = True) -> onnx.ModelProto:
    """``onnx.load`` with a one-line ModelError for a missing or unreadable file."""
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is one readable line
        raise ModelError(f"cannot read {path} as an ONNX model ({type(exc).__name__})") from None


def forward_only(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """The part of ``model`` that computes ``output_name`` from ``input_name``; everything else removed."""
    import onnx_graphsurgeon as gs

    g = gs.import_onnx(model)
    tensors = g.tensors()
    if output_name not in tensors:
        raise ModelError(f"the model has no tensor named '{output_name}'")
    g.inputs = [tensors[input_name]]
    g.outputs = [tensors[output_name]]
    g.cleanup(remove_unused_graph_inputs=True).toposort()
    out = gs.export_onnx(g, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    return out


# --------------------------------------------------------------------------- curves


@dataclass
class Curve:
    """One deletion or insertion curve: ``y[i]`` is the class probability after ``x[i]`` of the pixels moved."""

    kind: str
    x: np.ndarray
    y: np.ndarray
    target: int

    @property
    def area(self) -> float:
        return auc(self.y, self.x)


def auc(y: Sequence[float], x: Optional[Sequence[float]] = None) -> float:
    """Trapezoid area under ``y``; ``x`` defaults to evenly spaced points on [0, 1]."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise InputError(f"a curve needs at least 2 points, got shape {list(y.shape)}")
    x = np.linspace(0.0, 1.0, y.size) if x is None else np.asarray(x, dtype=np.float64)
    if x.shape != y.shape:
        raise InputError(f"x has shape {list(x.shape)} but y has {list(y.shape)}")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def pixel_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most salient first; ties keep raster order (a stable sort)."""
    m = np.asarray(saliency, dtype=np.float64)
    if m.ndim != 2:
        raise InputError(f"a saliency map must be [H, W], got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise InputError("the saliency map contains NaN or infinity")
    return np.argsort(-m.ravel(), kind="stable")


def step_counts(n_pixels: int, step: int) -> np.ndarray:
    """Pixels moved at each point of a curve: 0, step, 2 step, ..., n_pixels (ceil(n/step) + 1 points)."""
    if isinstance(step, bool) or int(step) != step or step < 1:
        raise InputError(f"the step must be a positive number of pixels, got {step!r}")
    n_steps = math.ceil(n_pixels / int(step))
    return np.minimum(np.arange(n_steps + 1, dtype=np.int64) * int(step), n_pixels)


def image_hw(x: np.ndarray, layout: str) -> tuple[int, int]:
    """(H, W) of one model input without batch dim: [C, H, W] (NCHW), [H, W, C] (NHWC) or [H, W]."""
    if x.ndim == 2:
        return int(x.shape[0]), int(x.shape[1])
    if x.ndim != 3:
        raise InputError(f"expected one image [C,H,W], [H,W,C] or [H,W] without batch dim, got shape {list(x.shape)}")
    return (int(x.shape[1]), int(x.shape[2])) if layout.upper() == "NCHW" else (int(x.shape[0]), int(x.shape[1]))


def perturbation_curve(forward: Forward, start: np.ndarray, end: np.ndarray, saliency: np.ndarray, *,
                       kind: str = "deletion", step: Optional[int] = None, target: Optional[int] = None,
                       clean: str = "start", batch_size: int = DEFAULT_BATCH, layout: str = "NCHW",
                       softmax: bool = True) -> Curve:
    """Scores along the path that replaces ``start``'s pixels by ``end``'s in descending map order.

    ``step`` pixels move per point (default: one image row, W). ``target`` defaults to the class
    predicted on the clean image, which is ``start`` (deletion) or ``end`` (insertion) as ``clean``
    says; both are points of the curve, so this costs no extra pass.
    """
    start = np.asarray(start, dtype=np.float32)
    end = np.broadcast_to(np.asarray(end, dtype=np.float32), start.shape)
    h, w = image_hw(start, layout)
    order = pixel_order(saliency)
    if order.size != h * w:
        raise InputError(f"the map is {list(np.shape(saliency))} but the image is {h}x{w}")
    whole_number(batch_size, "batch size")
    counts = step_counts(h * w, w if step is None else step)
    rank = np.empty(h * w, np.int64)
    rank[order] = np.arange(h * w)
    probs: list[np.ndarray] = []
    for i in range(0, counts.size, int(batch_size)):
        moved = (rank[None, :] < counts[i:i + int(batch_size), None]).reshape(-1, h, w)
        if start.ndim == 3:
            moved = moved[:, None] if layout.upper() == "NCHW" else moved[..., None]
        scores = np.asarray(forward(np.where(moved, end[None], start[None])), dtype=np.float64)
        probs.append(probabilities(scores, getattr(forward, "probability", "softmax")) if softmax else scores)
    p = np.concatenate(probs, 0)
    if target is None:
        target = int(np.argmax(p[0 if clean == "start" else -1]))
    if not 0 <= int(target) < p.shape[1]:
        raise InputError(f"target {target} is out of range for {p.shape[1]} classes")
    return Curve(kind, counts / float(h * w), p[:, int(target)], int(target))


def deletion(forward: Forward, x: np.ndarray, saliency: np.ndarray, *, step: Optional[int] = None,
             target: Optional[int] = None, batch_size: int = DEFAULT_BATCH, layout: str = "NCHW",
             softmax: bool = True) -> Curve:
    """Deletion curve of one image ``x`` (no batch dim): salient pixels set to 0 first. Lower area = better map."""
    x = np.asarray(x, dtype=np.float32)
    return perturbation_curve(forward, x, np.zeros_like(x), saliency, kind="deletion", step=step, target=target,
                              clean="start", batch_size=batch_size, layout=layout, softmax=softmax)


def insertion(forward: Forward, x: np.ndarray, saliency: np.ndarray, *, blurred: Optional[np.ndarray] = None,
              step: Optional[int] = None, target: Optional[int] = None, batch_size: int = DEFAULT_BATCH,
              layout: str = "NCHW", softmax: bool = True) -> Curve:
    """Insertion curve: from a blurred copy (11x11, sigma 5), salient pixels restored first. Higher area = better."""
    x = np.asarray(x, dtype=np.float32)
    start = blur(x, layout) if blurred is None else np.asarray(blurred, dtype=np.float32)
    return perturbation_curve(forward, start, x, saliency, kind="insertion", step=step, target=target,
                              clean="end", batch_size=batch_size, layout=layout, softmax=softmax)


def blur(x: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """The insertion start: RISE's Gaussian blur (11x11, sigma 5) of one input in model-input space."""
    if x.ndim == 2:
        return gaussian_blur(x[None], "NCHW", BLUR_KSIZE, BLUR_SIGMA)[0]
    return gaussian_blur(x, layout, BLUR_KSIZE, BLUR_SIGMA)


# --------------------------------------------------------------------------- rank correlation


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened array, ties given their average rank (scipy's 'average' method)."""
    a = np.ravel(np.asarray(a))
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]]
    dense = np.empty(a.size, np.int64)
    dense[order] = np.cumsum(new)
    bounds = np.r_[np.flatnonzero(new), a.size]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally sized arrays (Pearson of average ranks); NaN if one is constant."""
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    if a.shape != b.shape:
        raise InputError(f"cannot correlate arrays of {a.size} and {b.size} values")
    ra, rb = rankdata(a) - (a.size + 1) / 2.0, rankdata(b) - (b.size + 1) / 2.0
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


__all__ = ["Curve", "Forward", "OnnxForward", "auc", "blur", "deletion", "forward_only", "insertion",
           "perturbation_curve", "pixel_order", "rankdata", "read_onnx", "spearman", "step_counts"]
