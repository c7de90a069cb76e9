"""The Python API, mirroring the CLI: ``convert`` a classifier, ``explain`` an image with it.

Data flows one way: model -> normalised graph -> backward graph -> IG graph -> session ->
attribution -> picture. Each step lives in its own module; this one only wires them.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx

from .autodiff import get_rule_set
from .errors import InputError, ModelError
from .fileio import atomic_path
from .heatmap import render_figure, save_png, saliency_map
from .imageio import METADATA_KEY, Preprocess, load_input, make_baseline
from .integrate import META_PREFIX, build_ig_model
from .loader import load_model, normalise
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS
from .runtime import GigModel

LABELS_KEY = META_PREFIX + "labels"
_TWO_GB = 2 ** 31 - 1


def default_output(model: str | os.PathLike) -> Path:
    """models/net.onnx -> models/net_gig.onnx."""
    p = Path(model)
    return p.with_name(p.stem + "_gig.onnx")


def guess_preprocess(input_shape: Sequence) -> Preprocess:
    """ImageNet normalisation in the layout the input shape suggests (used when the model carries none)."""
    dims = list(input_shape)
    nhwc = len(dims) == 4 and dims[-1] in (1, 3) and dims[1] not in (1, 3)
    hw = dims[1:3] if nhwc else dims[2:4]
    crop = tuple(int(d) for d in hw) if len(hw) == 2 and all(isinstance(d, int) for d in hw) else (224, 224)
    return Preprocess(layout="NHWC" if nhwc else "NCHW", crop=crop, resize=int(round(crop[0] * 256 / 224)))


@dataclass
class ConvertResult:
    """What ``convert`` wrote and how long it took."""

    path: Path
    method: str
    input_name: str
    score_name: str
    num_classes: Optional[int]
    seconds: float
    notes: list[str] = field(default_factory=list)


def convert(model: str | os.PathLike, output: str | os.PathLike | None = None, method: str = "gnl-ig",
            input_name: Optional[str] = None, output_name: Optional[str] = None,
            preprocess: Optional[Preprocess] = None, labels: Optional[Sequence[str]] = None) -> ConvertResult:
    """Write the IG model of ``model`` (default: beside it, named *_gig.onnx); never overwrites the input."""
    t0 = time.perf_counter()
    src = Path(model)
    out = Path(output) if output is not None else default_output(src)
    rules = get_rule_set(method)
    fg = normalise(load_model(src), input_name, output_name)
    notes: list[str] = []
    meta: dict[str, str] = {}
    if preprocess is not None:
        meta[METADATA_KEY] = preprocess.to_json()
    elif METADATA_KEY not in fg.metadata:
        guess = guess_preprocess(fg.input_shape)
        meta[METADATA_KEY] = guess.to_json()
        notes.append(f"the model carries no preprocessing; assuming ImageNet normalisation, {guess.layout}, "
                     f"crop {guess.crop[0]}x{guess.crop[1]} (set it with --mean/--std/--scale/--layout)")
    else:
        Preprocess.from_json(fg.metadata[METADATA_KEY])  # validate what the model carries
    if labels is not None:
        labels = list(labels)
        if fg.num_classes is not None and len(labels) != fg.num_classes:
            raise InputError(f"{len(labels)} labels given but the model has {fg.num_classes} classes")
        meta[LABELS_KEY] = json.dumps(labels)
    ig = build_ig_model(fg, rules, meta)
    save_model(ig, out, protect=(src,))
    return ConvertResult(out, rules.name, fg.input_name, fg.score_name, fg.num_classes,
                         time.perf_counter() - t0, notes)


def save_model(model: onnx.ModelProto, path: Path, protect: Sequence[str | os.PathLike] = ()) -> None:
    """Write atomically; models past protobuf's 2 GB limit keep their weights in a .data file beside them."""
    with atomic_path(path, protect=protect) as tmp:
        if model.ByteSize() > _TWO_GB:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data")
        else:
            onnx.save_model(model, str(tmp))


@dataclass
class ExplainResult:
    """One image's explanation: raw attributions, the map, the class and the top predictions."""

    attributions: np.ndarray
    saliency: np.ndarray
    target: int
    target_label: str
    top: list[tuple[int, str, float]]
    convergence_delta: float
    provider: str
    method: str
    seconds: float
    figure: Optional[Path] = None
    npy: Optional[Path] = None


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def label_of(labels: Optional[Sequence[str]], k: int) -> str:
    return labels[k] if labels and 0 <= k < len(labels) else f"class {k}"


def explain(model: str | os.PathLike | GigModel, image: str | os.PathLike, target: Optional[int] = None,
            steps: int = DEFAULT_STEPS, rule: str = DEFAULT_RULE, baseline: str = "zeros",
            out: str | os.PathLike | None = None, save_npy: str | os.PathLike | None = None,
            device: str = "auto", max_memory: int | str | None = None, threads: Optional[int] = None,
            progress: bool = False, cmap: str = "inferno", top: int = 5, draw: bool = True) -> ExplainResult:
    """Explain one image (PNG/JPEG/.npy) with a converted model; write the figure (default <image>_gig.png)."""
    t0 = time.perf_counter()
    gm = model if isinstance(model, GigModel) else GigModel(model, device=device, max_memory=max_memory, threads=threads)
    pp = Preprocess.from_json(gm.preprocess_json) if gm.preprocess_json else guess_preprocess(gm.input_shape)
    x, photo = load_input(image, pp, gm.input_shape)
    b = make_baseline(baseline, x, photo, pp)
    ex = gm.explain(x, b, target, steps, rule, progress=progress)
    attr = ex.attributions[0]
    labels = gm.labels
    probs = softmax(ex.scores[0].astype(np.float64))
    order = np.argsort(-probs)[:top]
    t = int(ex.target[0])
    result = ExplainResult(
        attributions=attr, saliency=saliency_map(attr, pp.layout), target=t, target_label=label_of(labels, t),
        top=[(int(k), label_of(labels, int(k)), float(probs[k])) for k in order],
        convergence_delta=float(ex.convergence_delta[0]), provider=gm.provider, method=gm.method,
        seconds=time.perf_counter() - t0)
    protect = (image, gm.path)
    if save_npy is not None:
        result.npy = Path(save_npy)
        with atomic_path(result.npy, protect=protect) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, attr.astype(np.float32))
    if draw:
        result.figure = Path(out) if out is not None else Path.cwd() / (Path(image).stem + "_gig.png")
        title = f"{result.target_label} ({probs[t]:.1%})  |  {gm.method}, {steps} steps {rule}, baseline {baseline}"
        save_png(render_figure(photo, result.saliency, title, cmap), result.figure, protect=protect)
    return result


def load_labels(path: str | os.PathLike) -> list[str]:
    """One class name per line (a .txt) or a JSON list."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read labels file {p}: {exc.strerror}") from None
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise InputError(f"labels file {p} is not valid JSON") from None
        if not isinstance(data, list):
            raise InputError(f"labels file {p} must hold a JSON list of names")
        return [str(s) for s in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


__all__ = ["convert", "explain", "ConvertResult", "ExplainResult", "GigModel", "load_labels", "ModelError"]
