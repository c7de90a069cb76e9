"""The Python API, mirroring the CLI: ``convert`` a classifier, ``explain`` an image with it.

Data flows one way: model -> normalised graph -> backward graph -> IG graph -> session ->
attribution -> picture. Each step lives in its own module; this one only wires them.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # annotations only: explain runs without importing onnx
    import onnx

from .contract import META_PREFIX, pixel_dtype, probabilities, softmax  # noqa: F401 - softmax: the API as before
from .errors import GigError, InputError, ModelError, SizeRejected, first_line, whole_number
from .fileio import atomic_path, check_output
from .heatmap import DEFAULT_ALPHA, DEFAULT_CLIP, check_map_options, render_figure, save_png, saliency_map
from .imageio import (DYNAMIC_SHORT_SIDE, METADATA_KEY, Preprocess, as_pixels, guess_preprocess,  # noqa: F401
                      load_input, make_baseline, preprocess_from)
from .modelhead import check_external_refs, read_head
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS, MAX_STEPS, RULES, schedule
from .runtime import GigModel, check_budget, check_threads, ort_errors, parse_memory  # noqa: F401 - the API's checks
from .targets import class_index

LABELS_KEY = META_PREFIX + "labels"


def default_output(model: str | os.PathLike) -> Path:
    """models/net.onnx -> models/net_gig.onnx."""
    p = Path(model)
    return p.with_name(p.stem + "_gig.onnx")


def _preprocess_for(fg, given: Preprocess | dict | None) -> tuple[Optional[Preprocess], list[str]]:
    """The preprocessing to store (None: keep what the model carries) and notes on what was assumed.

    A dict holds the options the user gave (the CLI's --mean, --layout ...), laid over the defaults:
    ImageNet normalisation, resize 256, no crop; for a graph that normalises its own pixels, raw pixels.
    """
    pixels = fg.pixel_input is not None
    what = (f"input '{fg.pixel_input['name']}' takes {fg.pixel_input['dtype']} pixels and the graph normalises them "
            f"itself; attributions are with respect to its float pixels '{fg.input_name}' (0-255)") if pixels else ""
    if isinstance(given, Preprocess):
        return given, [what] if pixels else []
    if given is not None:
        base = as_pixels(Preprocess(layout=guess_preprocess(fg.input_shape).layout)) if pixels else Preprocess()
        fields = {k: getattr(base, k) for k in ("layout", "color", "resize", "crop", "scale", "mean", "std")}
        fields.update({k: v for k, v in given.items() if v is not None})
        return Preprocess(**fields), [what] if pixels else []
    if METADATA_KEY in fg.metadata:
        Preprocess.from_json(fg.metadata[METADATA_KEY])  # validate what the model carries
        return None, [what] if pixels else []
    guess = guess_preprocess(fg.input_shape, pixels)
    size = (f"crop {guess.crop[0]}x{guess.crop[1]}" if guess.crop else
            f"photos keep their aspect, short side at most {DYNAMIC_SHORT_SIDE} (dynamic height and width)")
    if pixels:
        return guess, [what + f"; explain feeds it photos as pixel values, {guess.layout}, {size}"]
    return guess, [f"the model carries no preprocessing; assuming ImageNet normalisation, {guess.layout}, "
                   f"{size} (set it with --mean/--std/--scale/--layout)"]


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


MAX_BLOCKS_ASKED = 64  # each block copies the whole graph: more only slows the session start


def convert(model: str | os.PathLike, output: str | os.PathLike | None = None, method: str = "gnl-ig",
            input_name: Optional[str] = None, output_name: Optional[str] = None,
            preprocess: Preprocess | dict | None = None, labels: Optional[Sequence[str]] = None,
            overwrite: bool = True, input_shape: Optional[Sequence[Optional[int]] | str] = None,
            fp16: bool = False, blocks: Optional[int] = None) -> ConvertResult:
    """Write the IG model of ``model`` (default: beside it, named *_gig.onnx); never overwrites the input.

    An existing output is replaced only when ``overwrite`` (the CLI passes ``--force``). ``preprocess`` is a
    full spec, or a dict of the fields to change from the defaults. ``input_shape`` (``[None, 3, 224, 224]``
    or ``"-1,3,224,224"``, in the input's own layout) pins dynamic sizes; the batch stays dynamic. ``fp16``
    builds the IG graph in float16 (for the CUDA provider); by default it is float32, float16 models included.
    ``blocks`` runs the integration rows as that many copies of the graph one after another (faster on CPU,
    less memory, a slower session start; default: by the model's activation size, see blocks.py).
    """
    from .autodiff import get_rule_set  # the graph builders: imported by convert only (explain starts faster)
    from .image_input import parse_input_shape
    from .integrate import build_ig_model
    from .loader import load_model, normalise
    from .precision import precision_note

    t0 = time.perf_counter()
    src = Path(model)
    out = Path(output) if output is not None else default_output(src)
    rules = get_rule_set(method)
    if blocks is not None and not (1 <= int(blocks) <= MAX_BLOCKS_ASKED):
        raise InputError(f"--blocks must be between 1 and {MAX_BLOCKS_ASKED}, got {blocks}")
    if src.is_file():  # a missing model is reported first, by load_model
        check_output(out, protect=(src,), overwrite=overwrite)
    proto = load_model(src)
    _refuse_converted(proto, src)
    if output_name is None:
        _refuse_ambiguous_outputs(proto)
    notes: list[str] = [n for n in [precision_note(proto)] if n]
    if isinstance(input_shape, str):
        input_shape = parse_input_shape(input_shape)
    fg = normalise(proto, input_name, output_name, input_shape)
    _check_supported(fg, rules)
    meta: dict[str, str] = {}
    pp, pp_notes = _preprocess_for(fg, preprocess)
    notes += pp_notes
    if pp is not None:
        meta[METADATA_KEY] = pp.to_json()
    if labels is not None:
        labels = list(labels)
        if fg.num_classes is not None and len(labels) != fg.num_classes:
            raise InputError(f"{len(labels)} labels given but the model has {fg.num_classes} classes")
        meta[LABELS_KEY] = json.dumps(labels)
    ig = build_ig_model(fg, rules, meta, fp16=fp16, blocks=None if blocks is None else int(blocks))
    made = next((int(p.value) for p in ig.metadata_props if p.key == META_PREFIX + "row_blocks"), 1)
    if blocks is not None and int(blocks) > 1 and made == 1:
        notes.append(f"--blocks {blocks} was not applied: the explained output's shape is unknown, so its rows "
                     f"cannot be sliced; the model runs its rows in one batch")
    save_model(ig, out, protect=(src,))
    return ConvertResult(out, rules.name, fg.input_name, fg.score_name, fg.num_classes,
                         time.perf_counter() - t0, notes)


def _refuse_converted(model: onnx.ModelProto, path: Path) -> None:
    meta = {p.key: p.value for p in model.metadata_props}
    if META_PREFIX + "method" in meta:
        raise ModelError(f"{path} is already an onnx-gig attribution model (method {meta[META_PREFIX + 'method']}); "
                         f"explain images with it (onnx-gig explain {path} IMAGE), or convert the original classifier")


def _refuse_ambiguous_outputs(model: onnx.ModelProto) -> None:
    """Several float outputs that are not one score tensor (behind Identity or a final Softmax): ask which."""
    import onnx

    graph = model.graph
    floats = [o for o in graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    producer = {o: n for n in graph.node for o in n.output}

    def scores_of(name: str) -> str:
        while name in producer and producer[name].op_type in ("Identity", "Softmax", "LogSoftmax"):
            name = producer[name].input[0]
        return name

    if len({scores_of(o.name) for o in floats}) > 1:
        def dims(o):
            return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in o.type.tensor_type.shape.dim]
        raise ModelError("the model has several float outputs that could be the class scores ("
                         + ", ".join(f"{o.name}{dims(o)}" for o in floats)
                         + "); choose the one to explain with --output-name NAME")


def _check_supported(fg, rules) -> None:
    """Name an op without a rule by its node in the user's model (before any graph is built)."""
    import onnx_graphsurgeon as gs

    from .autodiff import unsupported_ops
    from .autodiff.builder import unsupported_error

    g = gs.import_onnx(fg.model)
    g.toposort()
    tensors = g.tensors()
    missing = unsupported_ops(list(g.nodes), tensors[fg.input_name], [tensors[fg.score_name]], rules)
    if missing:
        raise unsupported_error(missing, rules, where=f" between input '{fg.input_name}' and output '{fg.score_name}'",
                                hint=". Explain an earlier output with --output-name, or add a rule "
                                     "(README, 'Adding an op')")


def save_model(model: onnx.ModelProto, path: Path, protect: Sequence[str | os.PathLike] = ()) -> None:
    """Write atomically; models past protobuf's 2 GB limit keep their weights in a .data file beside them."""
    import onnx

    with atomic_path(path, protect=protect) as tmp:
        try:  # one serialisation; asking ByteSize first would cost a second one
            onnx.save_model(model, str(tmp))
        except ValueError:  # onnx refuses protos past 2 GB before writing anything
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data")


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


def label_of(labels: Optional[Sequence[str]], k: int) -> str:
    return labels[k] if labels and 0 <= k < len(labels) else f"class {k}"


def top_classes(probs: np.ndarray, labels: Optional[Sequence[str]], k: int) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes as (class, label, probability), most probable first."""
    return [(int(c), label_of(labels, int(c)), float(probs[c])) for c in np.argsort(-probs)[:k]]


def run_explain(gm: GigModel, x: np.ndarray, b: np.ndarray, target: Optional[int] | np.ndarray, steps: int, rule: str,
                progress: bool = False):
    """``gm.explain`` (``target``: one class, one per image, or None) with onnxruntime's own failures as one
    readable :class:`ModelError`."""
    try:
        return gm.explain(x, b, target, steps, rule, progress=progress)
    except GigError:
        raise
    except ort_errors() as exc:
        first = first_line(exc)
        first = _ORIGINAL_NODE.sub("", first)  # the path copy's node is the classifier's own node
        if gm.dynamic_size and _SHAPE_TROUBLE.search(first):
            raise SizeRejected(f"onnxruntime failed while running {gm.path}: {first} (the input was "
                               f"{'x'.join(map(str, x.shape[-3:]))}; a model with dynamic sizes that needs particular "
                               "ones, such as a multiple of its stride, can be pinned to one with "
                               "'onnx-gig convert --input-shape')") from exc
        raise ModelError(f"onnxruntime failed while running {gm.path}: {first}") from exc


_ORIGINAL_NODE = re.compile(r"gig/(?:b\d+/gig/)?(?:path|baseline)/")
_SHAPE_TROUBLE = re.compile(r"broadcast|dimension|shape|axis|Invalid input", re.IGNORECASE)  # a size it rejects


def explain(model: str | os.PathLike | GigModel, image: str | os.PathLike, target: Optional[int | str] = None,
            steps: int = DEFAULT_STEPS, rule: str = DEFAULT_RULE, baseline: str | np.ndarray = "zeros",
            out: str | os.PathLike | None = None, save_npy: str | os.PathLike | None = None,
            device: str = "auto", max_memory: int | str | None = None, threads: Optional[int] = None,
            progress: bool = False, cmap: Optional[str] = None, top: int = 5, draw: bool = True,
            overwrite: bool = True, clip_percentile: float = DEFAULT_CLIP, sign: str = "absolute",
            alpha: float = DEFAULT_ALPHA) -> ExplainResult:
    """Explain one image (PNG/JPEG/.npy) with a converted model; write the figure (default <image>_gig.png).

    Cheap checks (options, output paths, the image) run before the onnxruntime session is made. An existing
    output is replaced only when ``overwrite`` (the CLI passes ``--force``); nothing is written when the
    attributions are not finite. ``clip_percentile``, ``sign``, ``alpha`` and ``cmap`` shape the drawn map
    (``heatmap.saliency_map``/``render_figure``); the attributions and the .npy are never clipped.
    """
    t0 = time.perf_counter()
    check_steps(steps, rule)
    check_map_options(clip_percentile, sign, alpha, cmap)
    if target is not None and not isinstance(target, str):  # a label is checked once the model's are read
        check_target(target)
    whole_number(top, "top")
    budget = check_budget(max_memory)
    check_threads(threads)

    model_path = model.path if isinstance(model, GigModel) else Path(model)
    figure = (Path(out) if out is not None else Path.cwd() / (Path(image).stem + "_gig.png")) if draw else None
    npy = Path(save_npy) if save_npy is not None else None
    given = not isinstance(baseline, (str, os.PathLike))  # an array in the model's input layout, as a .npy holds
    protect = [image, model_path] + ([baseline] if not given and Path(str(baseline)).is_file() else [])
    if figure is not None and npy is not None and os.path.abspath(figure) == os.path.abspath(npy):
        raise InputError(f"the figure and --save-npy both point at {figure}; give them different paths")
    for dest in (figure, npy):
        if dest is not None:
            check_output(dest, protect=protect, overwrite=overwrite)

    if isinstance(model, GigModel):
        gm, meta, input_shape = model, model.metadata, model.input_shape
    else:
        gm, (meta, input_shape) = None, _peek_gig_model(model_path)
    pp = preprocess_from(meta, input_shape)
    x, photo = load_input(image, pp, input_shape, pixels=pixel_dtype(meta))
    b = baseline if given else make_baseline(baseline, x, photo, pp)  # an array: GigModel checks it
    nc = meta.get(META_PREFIX + "num_classes", "")
    if isinstance(target, str):
        raw = meta.get(META_PREFIX + "labels")
        target = class_index(target, json.loads(raw) if raw else None, int(nc) if nc else None)
    if target is not None:
        check_target(target, int(nc) if nc else None)

    if gm is None:
        gm = GigModel(model_path, device=device, max_memory=budget, threads=threads)
    warn_if_tight(gm, x.size)
    ex = run_explain(gm, x, b, target, steps, rule, progress=progress)
    attr = ex.attributions[0]
    bad = int(np.size(attr) - np.count_nonzero(np.isfinite(attr)))
    if bad or not (np.isfinite(ex.target_score).all() and np.isfinite(ex.baseline_score).all()):
        raise ModelError(f"NaN or infinite values appeared in the attributions ({bad} of {attr.size}) or scores: the "
                         "model overflows float32 on this input; nothing was written (check the input's "
                         "preprocessing, or try another --baseline)")
    labels = gm.labels
    probs = probabilities(ex.scores[0], gm.probability)
    t = int(ex.target[0])
    result = ExplainResult(
        attributions=attr, saliency=saliency_map(attr, pp.layout, clip_percentile, sign), target=t,
        target_label=label_of(labels, t), top=top_classes(probs, labels, top),
        convergence_delta=float(ex.convergence_delta[0]), provider=gm.provider, method=gm.method,
        seconds=time.perf_counter() - t0)
    if npy is not None:
        result.npy = npy
        with atomic_path(npy, protect=protect) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, attr.astype(np.float32))
    if figure is not None:
        result.figure = figure
        title = figure_title(result.target_label, float(probs[t]), gm.method, steps, rule,
                             "array" if given else baseline, clip_percentile)
        save_png(render_figure(photo, result.saliency, title, cmap, sign, alpha), figure, protect=protect)
    return result


def warn_if_tight(gm: GigModel, pixels: Optional[int] = None, sessions: int = 1) -> None:
    """Warn (once per call) when the memory budget cannot hold even one integration step (of an image of
    ``pixels`` elements, for models with dynamic sizes); ``sessions`` side by side share the budget."""
    need = gm.step_bytes(pixels)
    if gm.max_memory < need:
        budget = _size(gm.max_memory) if sessions <= 1 else (
            f"{_size(gm.max_memory * sessions)} shared by {sessions} sessions: {_size(gm.max_memory)} each")
        warnings.warn(f"the memory budget ({budget}) is smaller than one integration step needs "
                      f"(about {_size(need)}); running one step at a time, which needs more than "
                      "the budget", stacklevel=3)


def figure_title(label: str, prob: float, method: str, steps: int, rule: str, baseline: str,
                 clip_percentile: float = DEFAULT_CLIP) -> str:
    """The figure's one-line caption: class, probability, how it was explained, how the map is scaled.

    A baseline file is named without its folder, so a long path does not push the rest off the figure.
    """
    clip = "" if clip_percentile >= 100 else f", map clipped at p{clip_percentile:g}"
    return f"{label} ({prob:.1%})  |  {method}, {steps} steps {rule}, baseline {Path(str(baseline)).name}{clip}"


def check_steps(steps: object, rule: str = DEFAULT_RULE) -> None:
    """A whole number of steps in 1..MAX_STEPS that ``rule`` accepts; refused before anything is allocated."""
    whole_number(steps, "--steps")
    if steps > MAX_STEPS:
        raise InputError(f"--steps {steps} is too many: at most {MAX_STEPS} (the default {DEFAULT_STEPS} is usually "
                         "enough; IG changes little past a few hundred)")
    if rule not in RULES:
        raise InputError(f"unknown integration rule '{rule}'; choose one of: {', '.join(RULES)}")
    schedule(min(int(steps), 2), rule)  # the rule's own minimum


def check_target(target: object, num_classes: Optional[int] = None) -> None:
    """A class index from 0 (below ``num_classes`` when the model's class count is known)."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise InputError(f"--target must be a class index, got {target!r}")
    if target < 0:
        raise InputError(f"--target {target} is negative: give a class index from 0, "
                         "or leave --target out to explain the predicted class")
    if num_classes is not None and target >= num_classes:
        raise InputError(f"--target {target} is out of range: the model has {num_classes} classes "
                         f"(0..{num_classes - 1})")


def _size(n: int) -> str:
    for unit, k in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= k:
            return f"{n / k:.3g}{unit}"
    return f"{n} bytes"


def _peek_gig_model(path: Path) -> tuple[dict[str, str], list]:
    """Metadata and image-input shape of a converted model, read without making a session (or importing onnx)."""
    head = read_head(path)
    check_external_refs(head.external, path)
    meta = head.metadata
    if META_PREFIX + "method" not in meta:
        raise ModelError(f"{path} is not an onnx-gig model; run 'onnx-gig convert {path}' first")
    name = meta.get(META_PREFIX + "input")
    if name in head.inputs:
        return meta, head.inputs[name]
    raise ModelError(f"{path}: input '{name}' named in the metadata is missing; convert the model again")


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
