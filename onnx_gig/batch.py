"""Many images, one process: expand paths, explain images x steps in memory-bounded batches, in input order.

paths -> ``collect_inputs`` (files, folders searched recursively, globs) -> batches of images ->
``explain_arrays`` (one ``GigModel.explain`` call per batch; a bad file is a result with an error, never
an exception for the batch) -> ``ImageResult`` per image, in input order. ``explain_many`` is the
iterator the CLI uses; ``writer.ResultWriter`` turns the results into figures and tables. A Ray actor
calls ``explain_arrays`` on its share of the items.
"""
from __future__ import annotations

import glob
import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import numpy as np

from .errors import GigError, InputError, SizeRejected, whole_number
from .heatmap import DEFAULT_ALPHA, DEFAULT_CLIP, check_map_options
from .imageio import BASELINE_KINDS, IMAGE_SUFFIXES, Preprocess, load_input, make_baseline
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS
from .runtime import GigModel, check_budget, check_threads
from .targets import Targets, class_index, read_targets

BOTH_TARGETS = "--target explains one class in every image, --targets one class per image: give one"
MAX_BATCH_IMAGES = 64  # images in flight at most by default: the progress bar moves, results stream out
_GLOB_CHARS = "*?["


def _wanted(name: str) -> bool:
    """An image or .npy file name a folder walk takes: by suffix, hidden names skipped."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")


def _realpath(p: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(p))


def _folder_files(folder: Path, exclude: frozenset[str] = frozenset(),
                  unreadable: Optional[list[tuple[str, str]]] = None) -> list[Path]:
    """Image and .npy files under ``folder`` at any depth, sorted by relative path.

    Hidden files and folders are skipped, and so is every file in ``exclude`` (real paths: the files a run wrote
    into its output folder). Symlinked folders are followed, each real folder once (a
    link loop ends there). Files are taken by name, not opened or stat'ed here: one that cannot be read is
    named when it is read. A folder that cannot be listed is added to ``unreadable`` as (path, reason).
    """
    found = []
    seen = {_realpath(folder)}

    def onerror(exc: OSError) -> None:
        if unreadable is not None:
            unreadable.append((str(exc.filename or folder), f"cannot read this folder: {exc.strerror or exc}"))

    for root, dirs, files in os.walk(folder, onerror=onerror, followlinks=True):
        keep = []
        for d in sorted(dirs):
            real = _realpath(os.path.join(root, d))
            if not d.startswith(".") and real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        found += [Path(root) / f for f in files
                  if _wanted(f) and _realpath(os.path.join(root, f)) not in exclude]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


class Inputs(NamedTuple):
    """What ``collect_inputs`` found: the files in order, and ``(argument, reason)`` for each that matched nothing."""

    files: list[Path]
    missing: list[tuple[str, str]]


def collect_inputs(paths: str | os.PathLike | Sequence[str | os.PathLike],
                   exclude: Sequence[str | os.PathLike] = ()) -> Inputs:
    """Expand files, folders (recursive; image files and .npy only) and globs, in argument order.

    Returns the files (each once, first occurrence kept) and ``(argument, reason)`` for every argument
    that matched nothing, and for every folder inside one that could not be read. A file named explicitly
    is kept whatever its suffix (reading it may then fail). Folders and globs leave out the files ``exclude``
    names (those a run wrote into its output folder, so a re-run does not explain its own figures).
    One path may be given as a plain string or path. An ``Inputs`` can be passed on to ``explain_many``
    as is, so the indices the caller saw stay the same.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    skip = frozenset(_realpath(e) for e in exclude)
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = _realpath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for arg in paths:
        p, text = Path(arg), os.fspath(arg)
        if p.is_dir():
            unreadable: list[tuple[str, str]] = []
            found = _folder_files(p, skip, unreadable)
            if not found and not unreadable:
                missing.append((text, "no image or .npy files in this folder"))
            missing += unreadable
            for f in found:
                add(f)
        elif p.is_file():
            add(p)
        elif any(c in text for c in _GLOB_CHARS):
            found = _glob_files(text, skip)
            if not found:
                missing.append((text, "matches no image or .npy files"))
            for f in found:
                add(f)
        else:
            missing.append((text, "no such file or folder"))
    return Inputs(files, missing)


def _glob_files(pattern: str, skip: frozenset[str]) -> list[Path]:
    """The image and .npy files a glob names (hidden ones too, if the pattern asks for them) and those in the
    folders it names; a file reached by several paths (a `**` through a symlink loop) by its shortest one."""
    shortest: dict[str, Path] = {}
    for hit in sorted(glob.glob(pattern, recursive=True)):
        h = Path(hit)
        for f in (_folder_files(h, skip) if h.is_dir() else [h]):
            real = _realpath(f)
            if f.suffix.lower() not in IMAGE_SUFFIXES or real in skip:
                continue
            if real not in shortest or len(f.parts) < len(shortest[real].parts):
                shortest[real] = f
    return sorted(shortest.values(), key=lambda f: os.fspath(f))


@dataclass
class ExplainOptions:
    """Everything one image's explanation needs besides the model: the integration and the figure."""

    target: Optional[int | str] = None  # one class for every image: an index or one of the model's labels
    targets: Optional[Targets | str | os.PathLike] = None  # one class per image: a file, or what read_targets made
    steps: int = DEFAULT_STEPS
    rule: str = DEFAULT_RULE
    baseline: str = "zeros"
    top: int = 5
    clip_percentile: float = DEFAULT_CLIP
    sign: str = "absolute"
    cmap: Optional[str] = None
    alpha: float = DEFAULT_ALPHA

    def check(self, num_classes: Optional[int] = None) -> None:
        """Refuse bad options in one line before any work (the same checks as ``explain``)."""
        from .api import check_steps, check_target

        check_steps(self.steps, self.rule)
        if self.target is not None and not isinstance(self.target, str):  # a label: checked once resolved
            check_target(self.target, num_classes)
        if self.targets is not None:
            if self.target is not None:
                raise InputError(BOTH_TARGETS)
            if isinstance(self.targets, Targets):
                self.targets.check(num_classes)
            elif not isinstance(self.targets, (str, os.PathLike)):
                raise InputError(f"targets is a file's path or what onnx_gig.targets.read_targets returns, got "
                                 f"{type(self.targets).__name__}")
        if str(self.baseline).strip().lower() not in BASELINE_KINDS and not Path(str(self.baseline)).is_file():
            raise InputError(f"--baseline {self.baseline}: neither one of {', '.join(BASELINE_KINDS)} nor a .npy "
                             "file here")
        whole_number(self.top, "top")
        check_map_options(self.clip_percentile, self.sign, self.alpha, self.cmap)


@dataclass
class ImageResult:
    """One input's outcome: the attributions and predictions, or a one-line ``error`` (None when it worked)."""

    index: int
    path: str
    error: Optional[str] = None
    attributions: Optional[np.ndarray] = None  # raw, model layout, no batch dim, float32, never clipped
    target: Optional[int] = None
    label: Optional[str] = None
    probability: Optional[float] = None  # probability of the explained class (softmax, or sigmoid for such a head)
    target_score: Optional[float] = None
    baseline_score: Optional[float] = None
    top: list[tuple[int, str, float]] = field(default_factory=list)
    convergence_delta: Optional[float] = None  # for ig: the completeness gap sum(attr) - (F(x) - F(b))
    photo: Any = None  # the PIL image the model saw (None for .npy inputs that are not drawable)
    method: Optional[str] = None
    layout: str = "NCHW"
    batch: Optional[int] = None  # which batch of the run it was explained in (None: never ran)

    @property
    def ok(self) -> bool:
        return self.error is None

    def row(self, top: int = 5) -> dict:
        """The CSV/JSONL row: image, class explained, scores, the top ``top`` classes, completeness gap, error."""
        r: dict[str, Any] = {"image": self.path, "target": self.target, "label": self.label,
                             "probability": self.probability, "target_score": self.target_score,
                             "baseline_score": self.baseline_score}
        for k in range(top):
            c, name, p = self.top[k] if k < len(self.top) else (None, None, None)
            r[f"top{k + 1}"], r[f"top{k + 1}_label"], r[f"top{k + 1}_prob"] = c, name, p
        r["completeness_gap"] = self.convergence_delta
        r["error"] = self.error
        return r


def error_line(exc: BaseException, path: str) -> str:
    """An error as one line without the path prefix that load_image (or load_input's .npy reader) puts in front."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for prefix in (f"{path}: ", f"{Path(path)}: ", f"input {path}: ", f"input {Path(path)}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text if isinstance(exc, GigError) else f"{type(exc).__name__}: {text}"


def explain_arrays(gm: GigModel, items: list[tuple[int, str]], options: ExplainOptions,
                   batch: Optional[int] = None) -> list[ImageResult]:
    """Explain ``items`` ((index, path) pairs) with one ``gm.explain`` call over all readable ones.

    A file that cannot be read (or whose attributions come out non-finite) gives a result with ``error``;
    images x steps run in ``gm``'s memory-bounded chunks. Results come back in the items' order. A model
    with dynamic height and width keeps each photo's aspect, so its images run in one call per size.
    """
    results, loaded = load_items(gm, items, batch)
    attribute_items(gm, loaded, options)
    return results


def load_items(gm: GigModel, items: list[tuple[int, str]], batch: Optional[int] = None
               ) -> tuple[list[ImageResult], list[tuple[ImageResult, np.ndarray]]]:
    """Read ``items`` as ``gm`` wants them: every result (unreadable files with ``error``), and (result, array)
    for the readable ones. Runs in one thread (its warning filter is process-wide)."""
    pp = gm.preprocess
    results = [ImageResult(index=int(i), path=str(p), method=gm.method, layout=pp.layout, batch=batch)
               for i, p in items]
    loaded = []
    for r in results:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "only 20x20 pixels": one image among many, not worth a line
                x, r.photo = load_input(r.path, pp, gm.input_shape, pixels=gm.pixel_dtype)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the others
            r.error = error_line(exc, r.path)
            continue
        loaded.append((r, x))
    return results, loaded


def attribute_items(gm: GigModel, loaded: list[tuple[ImageResult, np.ndarray]], options: ExplainOptions) -> None:
    """Fill the results of ``load_items`` in: one ``gm.explain`` call per image size (a model with dynamic
    height and width keeps each photo's aspect); non-finite attributions become an error."""
    from .api import label_of, run_explain, top_classes
    from .contract import probabilities

    pp = gm.preprocess
    labels = gm.labels
    by_size: dict[tuple, list[tuple[ImageResult, np.ndarray]]] = {}
    wanted: dict[int, int] = {}  # --targets: each image's class
    for r, x in loaded:
        if options.targets is not None:
            try:
                wanted[id(r)] = options.targets.lookup(r.path)
            except InputError as exc:
                r.error, r.photo = str(exc), None
                continue
        by_size.setdefault(x.shape, []).append((r, x))
    for group in by_size.values():
        xs, photos = [x for _, x in group], [r.photo for r, _ in group]
        target = options.target if options.targets is None else np.asarray([wanted[id(r)] for r, _ in group])
        try:
            ex = run_explain(gm, np.stack(xs), baselines(options.baseline, xs, photos, pp),
                             target, options.steps, options.rule)
        except SizeRejected as exc:  # a model with dynamic sizes may reject some sizes only: those images fail
            for r, _ in group:
                r.error, r.photo = str(exc), None
            continue
        deltas = ex.convergence_delta
        for k, (r, _) in enumerate(group):
            attr = ex.attributions[k]
            scores = (ex.target_score[k], ex.baseline_score[k])
            if not (np.isfinite(attr).all() and np.isfinite(scores).all()):
                r.error = "NaN or infinite values in the attributions or scores (the model overflows float32 on it)"
                r.photo = None
                continue
            probs = probabilities(ex.scores[k], gm.probability)
            t = int(ex.target[k])
            r.attributions = attr.astype(np.float32, copy=False)
            r.target, r.label, r.probability = t, label_of(labels, t), float(probs[t])
            r.target_score, r.baseline_score = float(scores[0]), float(scores[1])
            r.top = top_classes(probs, labels, options.top)
            r.convergence_delta = float(deltas[k]) if gm.method == "ig" else None


def with_classes(options: ExplainOptions, model: str | os.PathLike | GigModel) -> ExplainOptions:
    """``options`` with classes given by name resolved by ``model``'s labels: a ``target`` label and a
    ``targets`` file named by path (read here)."""
    if options.target is not None and options.targets is not None:  # before reading either: the real problem
        raise InputError(BOTH_TARGETS)
    named_target = isinstance(options.target, str)
    if not named_target and not isinstance(options.targets, (str, os.PathLike)):
        return options
    labels, classes = (model.labels, model.num_classes) if isinstance(model, GigModel) else model_classes(model)
    if named_target:
        options = replace(options, target=class_index(options.target, labels, classes))
    if isinstance(options.targets, (str, os.PathLike)):
        options = replace(options, targets=read_targets(options.targets, labels))
    return options


def model_classes(model: str | os.PathLike) -> tuple[Optional[list[str]], Optional[int]]:
    """The class labels a converted model carries and its class count (read from its head, no session made);
    None for what it does not say."""
    from .api import _peek_gig_model
    from .contract import META_PREFIX

    meta = _peek_gig_model(Path(model))[0]
    raw, count = meta.get(META_PREFIX + "labels"), meta.get(META_PREFIX + "num_classes")
    return (json.loads(raw) if raw else None), (int(count) if count else None)


def _shared_baseline(kind: str) -> bool:
    """Whether ``kind`` is one baseline for every image: zeros, black, white or a .npy file (not blur)."""
    key = str(kind).strip().lower()
    return key in ("zeros", "black", "white") or (key not in BASELINE_KINDS and Path(str(kind)).is_file())


def baselines(kind: str, xs: Sequence[np.ndarray], photos: Sequence[Any], pp: Preprocess) -> np.ndarray:
    """The batch's baselines: one made (a .npy read) once and broadcast, or one per image for ``blur``.

    A baseline that cannot be made is the run's problem, not one image's: its InputError goes to the caller.
    """
    if _shared_baseline(kind):
        return make_baseline(kind, xs[0], photos[0], pp)[None]
    return np.stack([make_baseline(kind, x, p, pp) for x, p in zip(xs, photos)])


def batch_images_for(gm: GigModel, steps: int) -> int:
    """Images per batch: as many whole images' steps as one run holds under the memory budget (1..64)."""
    return int(max(1, min(MAX_BATCH_IMAGES, gm.rows_per_run() // max(1, int(steps)))))


def explain_many(model: str | os.PathLike | GigModel, paths: Sequence[str | os.PathLike] | Inputs,
                 options: Optional[ExplainOptions] = None, *, batch_images: Optional[int] = None,
                 device: str = "auto", max_memory: int | str | None = None, threads: Optional[int] = None,
                 workers: Optional[int] = None, progress: bool = False) -> Iterator[ImageResult]:
    """Explain many images, files, folders or globs in one process; yield one result per input, in order.

    ``workers`` sessions run batches side by side, each with ``threads`` threads (default on CPU: about the
    square root of the cores, the cores shared out; one on CUDA or for a given GigModel; see pool.py); each
    holds one batch of images at a time (``batch_images``, default from its share of the memory budget), so
    memory stays bounded however many paths are given. Arguments that match nothing come last, as results
    with an error. Options and the model are checked before anything runs; a model or option problem
    raises a :class:`GigError`, a bad image never does. ``paths`` may be what ``collect_inputs`` returned,
    taken as it is (the result indices are then exactly that listing's). A ``targets`` file that names none
    of the images found is refused for paths; a listing may be what is left of a run (``--resume``), whose
    images without a class are failures, so for a listing each such image is a failed result.
    """
    options = with_classes(options or ExplainOptions(), model)
    options.check()
    listed = isinstance(paths, Inputs)  # the caller's listing, perhaps what is left of a run (--resume)
    files, missing = paths if listed else collect_inputs(paths)
    if not files and not missing:
        raise InputError("no images given")
    if options.targets is not None and not listed:
        options.targets.check_covers(files)  # the wrong file: refused, not a failure per image
    if batch_images is not None:
        whole_number(batch_images, "batch_images")
    budget = check_budget(max_memory)
    check_threads(threads)
    if workers is not None:
        whole_number(workers, "--workers")
    return _iterate(model, files, missing, options, batch_images, device, budget, threads, workers, progress)


def _iterate(model, files, missing, options, batch_images, device, budget, threads, workers,
             progress) -> Iterator[ImageResult]:
    """The generator behind explain_many (its checks run at call time, this at the first next())."""
    from tqdm import tqdm

    from .pool import open_sessions, run_batches

    gms = open_sessions(model, device, budget, threads, workers) if files else []
    if gms:
        from .api import warn_if_tight

        options.check(gms[0].num_classes)
        warn_if_tight(gms[0], sessions=len(gms))
    size = batch_images or (batch_images_for(gms[0], options.steps) if gms else 1)
    total = len(files) + len(missing)
    bar = tqdm(total=total, disable=not progress or total <= 1, unit="image", desc="explain")
    try:
        batches = ((n, [(i, str(files[i])) for i in range(start, min(len(files), start + size))])
                   for n, start in enumerate(range(0, len(files), size)))
        for results in run_batches(gms, batches, options):
            for r in results:
                bar.update(1)
                yield r
        for k, (arg, reason) in enumerate(missing):
            bar.update(1)
            yield ImageResult(index=len(files) + k, path=arg, error=reason)
    finally:
        bar.close()


__all__ = ["ExplainOptions", "ImageResult", "IMAGE_SUFFIXES", "Inputs", "attribute_items", "baselines",
           "batch_images_for", "collect_inputs", "explain_arrays", "explain_many", "load_items"]
