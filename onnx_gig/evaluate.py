"""``evaluate``: deletion and insertion areas of every method on every image, as tables and curves.

model -> converted graphs (cached) -> maps per method -> deletion/insertion curves (onnxruntime,
batched) -> results.md, results.csv, per_image.csv, curves.png. ``onnx-gig eval`` is this function.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .batch import collect_inputs
from .errors import InputError, ModelError, whole_number
from .heatmap import save_png
from .imageio import DYNAMIC_SHORT_SIDE, Preprocess, load_input, make_baseline
from .metrics import DEFAULT_BATCH, OnnxForward, blur, deletion, image_hw, insertion, read_onnx
from .methods import METHODS, converted, graphs_needed, parse_methods, saliency_maps
from .plots import Series, hstack, line_chart
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS
from .runtime import GigModel, parse_memory
from .targets import TargetTable, Targets, read_targets


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, folders (searched recursively) and globs as ``batch.collect_inputs``; any unmatched one is an error."""
    out, missing = collect_inputs(paths)
    if missing:
        raise InputError(f"{missing[0][0]}: {missing[0][1]}")
    if not out:
        raise InputError("no images to evaluate")
    return out


def check_method_options(steps: object, rule: str, seed: object, threads: object = None) -> None:
    """--steps (1..1000, as explain caps them), --rule, --seed and --threads of eval and sanity, before any work."""
    from .api import check_steps
    from .runtime import check_threads

    check_steps(steps, rule)
    whole_number(seed, "--seed", 0)  # numpy's generators take no negative seed
    check_threads(threads)


def check_eval_options(steps: object, rule: str, seed: object, threads: object, batch_size: object,
                       step: object = None, actors: object = None) -> None:
    """Every number eval takes, refused in one line before any work."""
    check_method_options(steps, rule, seed, threads)
    whole_number(batch_size, "--batch-size", 1)
    if step is not None:
        whole_number(step, "--step", 1)
    if actors is not None:
        whole_number(actors, "--actors", 1)


@dataclass
class EvalResult:
    """Curves and areas of every method on every image, and what produced them."""

    model: str
    images: list[str]
    methods: list[str]
    targets: np.ndarray  # [n_images] the class explained and scored: predicted on the clean image, or from --targets
    target_labels: list[str]
    clean_prob: np.ndarray  # [n_images] its probability (softmax, or sigmoid for such a head)
    x: dict[str, np.ndarray]  # kind -> fraction of pixels moved at each point
    curves: dict[str, dict[str, np.ndarray]]  # kind -> method -> [n_images, n_points]
    settings: dict
    seconds: dict[str, float] = field(default_factory=dict)  # method -> attribution time
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # method -> [n_images, H, W]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason) for inputs left out

    def areas(self, kind: str) -> dict[str, np.ndarray]:
        """method -> [n_images] trapezoid areas of the ``kind`` ('deletion' or 'insertion') curves."""
        x = self.x[kind]
        dx = np.diff(x)
        return {m: ((c[:, 1:] + c[:, :-1]) / 2 * dx).sum(1) for m, c in self.curves[kind].items()}

    def summary(self) -> list[dict]:
        """One row per method: mean and standard deviation (over images, ddof=1) of both areas."""
        dl, ins = self.areas("deletion"), self.areas("insertion")
        rows = []
        for m in self.methods:
            rows.append({"method": m, "n_images": len(self.images),
                         "deletion_mean": float(dl[m].mean()), "deletion_std": _std(dl[m]),
                         "insertion_mean": float(ins[m].mean()), "insertion_std": _std(ins[m]),
                         "attribution_seconds": round(self.seconds.get(m, 0.0), 3),  # all images together
                         "attribution_seconds_per_image": round(self.seconds.get(m, 0.0) / max(1, len(self.images)), 4)})
        return rows

    def to_csv(self) -> str:
        rows = self.summary()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) and not k.startswith("attribution_seconds") else v)
                        for k, v in r.items()})
        return buf.getvalue()

    def per_image_csv(self) -> str:
        dl, ins = self.areas("deletion"), self.areas("insertion")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "target", "label", "clean_prob", "method", "deletion", "insertion"])
        for i, img in enumerate(self.images):  # the path as collected, as explain's tables name images
            for m in self.methods:
                w.writerow([img, int(self.targets[i]), self.target_labels[i], f"{self.clean_prob[i]:.6f}", m,
                            f"{dl[m][i]:.6f}", f"{ins[m][i]:.6f}"])
        return buf.getvalue()

    def explained_class(self) -> str:
        """Which class each image is explained and scored for, in words."""
        return self.settings.get("targets_said") or "the class predicted on each clean image"

    def to_markdown(self, title: Optional[str] = None) -> str:
        s = self.settings
        lines = [f"# {title or 'Deletion and insertion: ' + Path(self.model).name}", "",
                 f"{len(self.images)} images; {self.explained_class()} is explained and scored "
                 f"(the probability the model's head gives it). {s['points']} points per curve, {s['step']} pixels per step; "
                 f"deletion to 0 in model-input space, insertion from an {s['blur']} Gaussian blur; "
                 f"IG and GNL-IG: {s['steps']} {s['rule']} steps from the {s['baseline']} baseline; "
                 "maps: |channel sum|.", "",
                 "| method | deletion area (lower is better) | insertion area (higher is better) | attribution s/image |",
                 "|---|---|---|---|"]
        for r in self.summary():
            lines.append(f"| {r['method']} | {r['deletion_mean']:.4f} ± {r['deletion_std']:.4f} | "
                         f"{r['insertion_mean']:.4f} ± {r['insertion_std']:.4f} | "
                         f"{r['attribution_seconds_per_image']:.2f} |")
        lines += ["", "Mean ± standard deviation over images."]
        return "\n".join(lines) + "\n"

    def figure(self, title: str = ""):
        """Mean deletion and insertion curves per method, side by side."""
        charts = []
        which = "labelled" if self.settings.get("targets_said") else "predicted"
        for kind, where, verb in (("deletion", "upper right", "deleted"), ("insertion", "lower right", "inserted")):
            area = {m: a.mean() for m, a in self.areas(kind).items()}
            series = [Series(f"{m} ({area[m]:.3f})", self.x[kind], self.curves[kind][m].mean(0)) for m in self.methods]
            charts.append(line_chart(series, title=f"{title}{kind} (mean of {len(self.images)} images)",
                                     xlabel=f"fraction of pixels {verb}",
                                     ylabel=f"probability of the {which} class", xlim=(0, 1), ylim=(0, 1),
                                     legend=where))
        return hstack(charts)

    def save(self, out_dir: str | os.PathLike, title: Optional[str] = None, save_maps: bool = False,
             protect: Sequence[str | os.PathLike] = ()) -> list[Path]:
        """Write OUTPUT_FILES (results.md, results.csv, per_image.csv, curves.npz, curves.png; and maps.npz) into
        ``out_dir``; never over a file of ``protect`` (the run's model and label file)."""
        from .fileio import atomic_path

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in (("results.md", self.to_markdown(title)), ("results.csv", self.to_csv()),
                           ("per_image.csv", self.per_image_csv())):
            with atomic_path(d / name, protect=protect) as tmp:
                tmp.write_text(text, encoding="utf-8", errors="backslashreplace")  # names that are not UTF-8
            written.append(d / name)
        arrays = {f"{k}_x": v for k, v in self.x.items()}
        arrays.update({f"{k}/{m}": c for k, per in self.curves.items() for m, c in per.items()})
        for name, data in (("curves.npz", arrays), ("maps.npz", self.maps if save_maps else None)):
            if data:
                with atomic_path(d / name, protect=protect) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez_compressed(f, **data)
                written.append(d / name)
        save_png(self.figure(f"{title}: " if title else ""), d / "curves.png", protect=protect)
        written.append(d / "curves.png")
        return written


def _std(a: np.ndarray) -> float:
    return float(a.std(ddof=1)) if a.size > 1 else 0.0


def load_batch(paths: Sequence[Path], pp: Preprocess, input_shape: Sequence) -> np.ndarray:
    """The images preprocessed as the model's metadata says, stacked into one batch."""
    return np.stack([load_input(p, pp, input_shape)[0] for p in paths])


# images a worker scores between checkpoints (as a Ray task does): memory stays bounded over a whole validation
# set, and Ctrl-C loses at most this many images' work (64 was minutes of six methods' maps)
OUTPUT_FILES = ("results.md", "results.csv", "per_image.csv", "curves.npz", "curves.png")  # EvalResult.save's
EVAL_CHUNK = 8


@dataclass
class EvalPart:
    """Targets, probabilities, curves (and maps) of a chunk of images, with their indices in the whole run."""

    indices: np.ndarray  # [n] positions in the run's image list
    targets: np.ndarray
    probs: np.ndarray
    curves: dict[str, dict[str, np.ndarray]]  # kind -> method -> [n, points]
    x: dict[str, np.ndarray]
    seconds: dict[str, float]
    maps: dict[str, np.ndarray]  # method -> [n, H, W] (empty unless kept)
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (index, path, reason): unreadable images
    hw: tuple[int, int] = (0, 0)
    provider: str = ""
    preprocess: str = "{}"  # the Preprocess JSON the worker used


class EvalWorker:
    """The per-image half of ``evaluate``: sessions made once, then maps and curves for any chunk of images.

    One process runs one worker over the images in chunks; ``--ray`` runs one per actor. Every number
    depends only on the image and its index, so the split does not change the results.
    """

    def __init__(self, graphs: dict[str, str | os.PathLike], methods: Sequence[str], *, step: Optional[int] = None,
                 batch_size: int = DEFAULT_BATCH, steps: int = DEFAULT_STEPS, rule: str = DEFAULT_RULE,
                 baseline: str = "zeros", seed: int = 0, device: str = "auto", max_memory: int | str | None = None,
                 threads: Optional[int] = None, keep_maps: bool = False, targets: Any = None) -> None:
        self.targets = targets  # Targets (targets.read_targets): each image's class; else the predicted one
        self.graphs = {g: GigModel(p, device=device, max_memory=max_memory, threads=threads) for g, p in graphs.items()}
        first = next(iter(self.graphs.values()))
        self.pp = first.preprocess
        # a model with dynamic sizes is scored at one square size, as the protocol does (RISE: 224 x 224): the
        # curves of a batch share one shape, and every image's areas count alike
        spatial = (2, 3) if self.pp.layout.upper() == "NCHW" else (1, 2)
        self.input_shape = [DYNAMIC_SHORT_SIDE if i in spatial and not isinstance(d, int) else d
                            for i, d in enumerate(first.input_shape)]
        self.provider = first.provider
        self.forward = OnnxForward(first.path, device=device, threads=threads)
        self.methods, self.step, self.batch_size = list(methods), step, batch_size
        self.steps, self.rule, self.baseline, self.seed, self.keep_maps = steps, rule, baseline, seed, keep_maps

    def run(self, items: Sequence[tuple[int, str | os.PathLike]], bar=None) -> EvalPart:
        """Maps and deletion/insertion curves of ``items`` ((index, path) pairs); unreadable images are left out."""
        from .batch import error_line
        from .contract import probabilities

        pp, bs = self.pp, self.batch_size
        xs, idx, errors = [], [], []
        wanted = []
        for i, path in items:
            try:
                if self.targets is not None:
                    t = self.targets.lookup(path)
                xs.append(load_input(path, pp, self.input_shape)[0])
                idx.append(int(i))
                if self.targets is not None:
                    wanted.append(t)
            except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the others
                errors.append((int(i), str(path), error_line(exc, str(path))))
        names = self.methods
        if bar is not None:
            bar.update(len(errors))
        if not xs:
            return EvalPart(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), {}, {}, {}, {}, errors)
        x = np.stack(xs)
        h, w = image_hw(x[0], pp.layout)
        scores = np.concatenate([self.forward(x[i:i + bs]) for i in range(0, len(x), bs)])
        targets = scores.argmax(1) if self.targets is None else np.asarray(wanted, np.int64)
        probs = probabilities(scores, self.forward.probability)
        base = (np.stack([make_baseline(self.baseline, xi, None, pp) for xi in x])
                if self.baseline != "zeros" else None)
        maps: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        for m in names:
            meth = METHODS[m]
            # one image per run for the integrated methods (and the random map, which depends on its index)
            group = 1 if meth.integrated or meth.graph is None else max(1, int(bs))
            t0 = time.perf_counter()
            parts = []
            for i in range(0, len(x), group):
                if bar is not None:
                    bar.set_description(f"maps: {m}")
                parts.append(saliency_maps(m, self.graphs.get(meth.graph or ""), x[i:i + group],
                                           targets[i:i + group], pp.layout, self.steps, self.rule,
                                           None if base is None else base[i:i + group], seed=self.seed,
                                           first_index=idx[i]))
            maps[m] = np.concatenate(parts)
            seconds[m] = time.perf_counter() - t0
        curves: dict[str, dict[str, list]] = {"deletion": {m: [] for m in names}, "insertion": {m: [] for m in names}}
        xs_: dict[str, np.ndarray] = {}
        if bar is not None:
            bar.set_description("deletion/insertion")
        for i in range(len(x)):
            blurred = blur(x[i], pp.layout)
            for m in names:
                kw = dict(step=self.step, target=int(targets[i]), batch_size=bs, layout=pp.layout)
                for c in (deletion(self.forward, x[i], maps[m][i], **kw),
                          insertion(self.forward, x[i], maps[m][i], blurred=blurred, **kw)):
                    curves[c.kind][m].append(c.y)
                    xs_[c.kind] = c.x
            if bar is not None:
                bar.update(1)
        return EvalPart(np.asarray(idx, np.int64), targets, probs[np.arange(len(targets)), targets],
                        {k: {m: np.stack(v) for m, v in per.items()} for k, per in curves.items()}, xs_, seconds,
                        maps if self.keep_maps else {}, errors, (h, w), self.provider, pp.to_json())


def evaluate(model: str | os.PathLike, images: Iterable[str | os.PathLike], methods: str | Sequence[str] | None = None,
             out_dir: str | os.PathLike | None = None, *, step: Optional[int] = None, batch_size: int = DEFAULT_BATCH,
             steps: int = DEFAULT_STEPS, rule: str = DEFAULT_RULE, baseline: str = "zeros", seed: int = 0,
             device: str = "auto", max_memory: int | str | None = None, threads: Optional[int] = None,
             cache_dir: str | os.PathLike | None = None, progress: bool = False, title: Optional[str] = None,
             save_maps: bool = False, ray: Optional[str] = None, actors: Optional[int] = None,
             resume: bool = False, targets: Any = None) -> EvalResult:
    """Deletion and insertion of every method on every image of a classifier ``model`` (the original .onnx).

    The converted models the methods need are written to ``cache_dir`` (default ``out_dir/converted``,
    else a temporary folder) and reused while the model and the converter are unchanged. Results are
    written to ``out_dir`` when given. Images are read and scored ``EVAL_CHUNK`` at a time; with ``ray``
    (``"local"`` or a cluster address) the chunks run on ``actors`` Ray actors instead
    (:func:`onnx_gig.distributed.evaluate_ray`). An image that cannot be read is
    left out and listed in ``failed`` with its reason, as is an argument that matches no file.

    With ``out_dir``, every chunk scored is saved in ``out_dir/parts`` until the results are written
    (evalparts.py); ``resume`` loads an interrupted run's chunks and scores only the images they lack.

    ``targets`` (a label file's path, or what ``targets.read_targets`` returns) explains and scores each
    image's class from the file instead of the class predicted on the clean image; an image it does not
    name is left out and listed in ``failed``.
    """
    import tempfile

    from tqdm import tqdm

    names = parse_methods(methods)
    check_eval_options(steps, rule, seed, threads, batch_size, step, actors)
    parse_memory(max_memory)  # a bad size is one line here, not one per image from every worker
    own = [Path(out_dir) / "curves.png"] if out_dir is not None else []  # never its own figure
    paths, missing = collect_inputs(images, exclude=own)
    if not paths:
        raise InputError("no images to evaluate" + "".join(f"; {n}: {why}" for n, why in missing))
    src = Path(model)
    if not src.is_file():
        raise InputError(f"model file not found: {src}")
    head = read_onnx(src, load_external_data=False)
    if any(p.key == "onnx_gig.method" for p in head.metadata_props):
        raise ModelError(f"{src} is already a converted model; pass the original classifier")
    label_file = targets.source if isinstance(targets, TargetTable) else targets
    keep = [src] + ([Path(label_file)] if isinstance(label_file, (str, os.PathLike)) and Path(label_file).is_file()
                    else [])
    if out_dir is not None:  # a label file kept beside the results is never one of them (nor the model)
        from .fileio import check_output

        for name in OUTPUT_FILES + ("maps.npz",):
            check_output(Path(out_dir) / name, protect=keep)
    table = _target_table(targets, head, paths)  # before any conversion: a bad file leaves nothing behind
    if ray is not None:
        from .distributed import import_ray

        import_ray()  # a missing extra is one line, before any conversion
    tmp = None
    if cache_dir is None:
        if out_dir is not None:
            cache_dir = Path(out_dir) / "converted"
        elif ray is None:
            tmp = tempfile.TemporaryDirectory(prefix="onnx-gig-eval-")
            cache_dir = tmp.name
        else:
            raise InputError("eval on Ray needs an output folder the workers can read (out_dir or cache_dir)")
    settings = {"step": step, "steps": steps, "rule": rule, "baseline": baseline, "batch_size": int(batch_size),
                "seed": seed}
    if table is not None:  # named by its contents; absent otherwise, so earlier runs still resume
        settings["targets"] = table.identity()
    store = _part_store(out_dir, src, paths, {**settings, "methods": names, "save_maps": bool(save_maps)}, resume)
    earlier = store.load() if store is not None and resume else []
    done = {i for p in earlier for i in p.indices.tolist()}
    items = [(i, p) for i, p in enumerate(map(str, paths)) if i not in done]
    try:
        files = {g: converted(src, g, cache_dir) for g in graphs_needed(names) or ["ig"]}
        meta = {p.key: p.value for p in read_onnx(next(iter(files.values())), load_external_data=False).metadata_props}
        labels = json.loads(meta["onnx_gig.labels"]) if meta.get("onnx_gig.labels") else None
        if table is not None:
            table.check(int(meta["onnx_gig.num_classes"]) if meta.get("onnx_gig.num_classes") else None)
        kwargs = dict(step=step, batch_size=batch_size, steps=steps, rule=rule, baseline=baseline, seed=seed,
                      device=device, max_memory=max_memory, threads=threads, keep_maps=save_maps, targets=table)
        if store is not None and items:
            store.start()
        save = store.save if store is not None else None
        parts = list(earlier)  # when the earlier run scored every image, only the tables are left to write
        if items and ray is not None:
            from .distributed import evaluate_ray

            parts += evaluate_ray(files, names, items, kwargs, address=ray, actors=actors, progress=progress,
                                  on_part=save)
        elif items:
            worker = EvalWorker(files, names, **kwargs)
            with tqdm(total=len(items), disable=not progress, unit="image", desc="maps") as bar:
                for i in range(0, len(items), EVAL_CHUNK):
                    parts.append(worker.run(items[i:i + EVAL_CHUNK], bar))
                    if save is not None:
                        save(parts[-1])
    finally:
        if tmp is not None:
            tmp.cleanup()
    shown = {**settings, "targets_said": table.said()} if table is not None else settings
    result = assemble(str(src), paths, missing, names, parts, labels, shown)
    if out_dir is not None:
        result.save(out_dir, title, save_maps, protect=keep)
    if store is not None:
        store.clear()
    return result


def _target_table(targets: Any, head: Any, paths: Sequence[Path]) -> Optional[Targets]:
    """The run's Targets, read with the classifier's labels (``head``: its ModelProto without weights) and
    checked against its class count where its output spells it, and against the images; or None."""
    if targets is None:
        return None
    raw = next((p.value for p in head.metadata_props if p.key == "onnx_gig.labels"), None)
    table = targets if isinstance(targets, Targets) else read_targets(targets, json.loads(raw) if raw else None)
    outs = head.graph.output
    dims = outs[0].type.tensor_type.shape.dim if len(outs) == 1 else []
    table.check(dims[-1].dim_value if len(dims) == 2 and dims[-1].dim_value > 0 else None)
    table.check_covers(paths)
    return table


def _part_store(out_dir, model: Path, paths: Sequence[Path], settings: dict, resume: bool):
    """The run's checkpoint folder (None without ``out_dir``), after refusing an earlier run's in the way."""
    from .evalparts import PartStore, fingerprint

    if out_dir is None:
        if resume:
            raise InputError("resuming an eval needs the output folder of the run to finish (out_dir)")
        return None
    store = PartStore(out_dir, fingerprint(model, paths, settings))
    store.refuse_unless(resume)
    return store


def assemble(model: str, paths: Sequence[Path], missing: Sequence[tuple[str, str]], names: list[str],
             parts: Sequence[EvalPart], labels: Optional[list[str]], settings: dict) -> EvalResult:
    """One EvalResult from the parts of a run, in image order, whatever order the parts came in.

    ``missing``: (argument, reason) for arguments that matched no file; they follow the unreadable images
    in ``failed``.
    """
    from .api import label_of

    failed = [(path, why) for _, path, why in sorted(e for p in parts for e in p.errors)] + list(missing)
    parts = [p for p in parts if len(p.indices)]
    if not parts:
        raise InputError("no readable images: " + "; ".join(f"{p}: {why}" for p, why in failed))
    order = np.argsort(np.concatenate([p.indices for p in parts]), kind="stable")
    cat = lambda arrays: np.concatenate(arrays)[order]  # noqa: E731
    targets = cat([p.targets for p in parts])
    kept = cat([p.indices for p in parts])
    first = parts[0]
    xs = first.x
    maps = {m: cat([p.maps[m] for p in parts]) for m in names if m in first.maps}
    seconds = {m: float(sum(p.seconds.get(m, 0.0) for p in parts)) for m in names}
    h, w = first.hw
    settings = {"step": int(settings.get("step") or w), "points": int(len(xs["deletion"])), "blur": "11x11 sigma-5",
                **{k: v for k, v in settings.items() if k != "step"}, "image_size": [h, w], "provider": first.provider,
                "preprocess": json.loads(first.preprocess)}
    return EvalResult(model=model, images=[str(paths[i]) for i in kept], methods=names, targets=targets,
                      target_labels=[label_of(labels, int(t)) for t in targets],
                      clean_prob=cat([p.probs for p in parts]),
                      x=xs, curves={k: {m: cat([p.curves[k][m] for p in parts]) for m in names} for k in xs},
                      settings=settings, seconds=seconds, maps=maps, failed=failed)


__all__ = ["EvalPart", "EvalResult", "EvalWorker", "assemble", "check_eval_options", "collect_images", "evaluate", "load_batch"]
