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
from typing import Iterable, Optional, Sequence

import numpy as np

from .batch import collect_inputs
from .errors import InputError, ModelError
from .heatmap import save_png
from .imageio import Preprocess, load_input, make_baseline
from .metrics import DEFAULT_BATCH, OnnxForward, blur, deletion, image_hw, insertion, read_onnx
from .methods import METHODS, converted, graphs_needed, parse_methods, saliency_maps
from .plots import Series, hstack, line_chart
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS
from .runtime import GigModel


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, folders (searched recursively) and globs as ``batch.collect_inputs``; any unmatched one is an error."""
    out, missing = collect_inputs(list(paths))
    if missing:
        raise InputError(f"{missing[0][0]}: {missing[0][1]}")
    if not out:
        raise InputError("no images to evaluate")
    return out


def load_good(paths: Sequence[Path], pp: Preprocess,
              input_shape: Sequence) -> tuple[np.ndarray, list[Path], list[tuple[str, str]]]:
    """The readable images as one batch, their paths, and (path, one-line reason) for each unreadable one."""
    from .batch import error_line

    xs, good, failed = [], [], []
    for p in paths:
        try:
            xs.append(load_input(p, pp, input_shape)[0])
            good.append(p)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the others
            failed.append((str(p), error_line(exc, str(p))))
    if not good:
        raise InputError("no readable images: " + "; ".join(f"{p}: {why}" for p, why in failed))
    return np.stack(xs), good, failed


@dataclass
class EvalResult:
    """Curves and areas of every method on every image, and what produced them."""

    model: str
    images: list[str]
    methods: list[str]
    targets: np.ndarray  # [n_images] the class predicted on the clean image (explained and scored)
    target_labels: list[str]
    clean_prob: np.ndarray  # [n_images] its softmax probability
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
                         "attribution_seconds": round(self.seconds.get(m, 0.0), 3)})
        return rows

    def to_csv(self) -> str:
        rows = self.summary()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) and k != "attribution_seconds" else v)
                        for k, v in r.items()})
        return buf.getvalue()

    def per_image_csv(self) -> str:
        dl, ins = self.areas("deletion"), self.areas("insertion")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "target", "label", "clean_prob", "method", "deletion", "insertion"])
        names = [Path(p).name for p in self.images]
        shown = names if len(set(names)) == len(names) else self.images
        for i, img in enumerate(shown):
            for m in self.methods:
                w.writerow([img, int(self.targets[i]), self.target_labels[i], f"{self.clean_prob[i]:.6f}", m,
                            f"{dl[m][i]:.6f}", f"{ins[m][i]:.6f}"])
        return buf.getvalue()

    def to_markdown(self, title: Optional[str] = None) -> str:
        s = self.settings
        lines = [f"# {title or 'Deletion and insertion: ' + Path(self.model).name}", "",
                 f"{len(self.images)} images; the class predicted on each clean image is explained and scored "
                 f"(softmax probability). {s['points']} points per curve, {s['step']} pixels per step; "
                 f"deletion to 0 in model-input space, insertion from an {s['blur']} Gaussian blur; "
                 f"IG and GNL-IG: {s['steps']} {s['rule']} steps from the {s['baseline']} baseline; "
                 "maps: |channel sum|.", "",
                 "| method | deletion area (lower is better) | insertion area (higher is better) | attribution s/image |",
                 "|---|---|---|---|"]
        for r in self.summary():
            lines.append(f"| {r['method']} | {r['deletion_mean']:.4f} ± {r['deletion_std']:.4f} | "
                         f"{r['insertion_mean']:.4f} ± {r['insertion_std']:.4f} | "
                         f"{r['attribution_seconds'] / max(1, len(self.images)):.2f} |")
        lines += ["", "Mean ± standard deviation over images."]
        return "\n".join(lines) + "\n"

    def figure(self, title: str = ""):
        """Mean deletion and insertion curves per method, side by side."""
        charts = []
        for kind, where, verb in (("deletion", "upper right", "deleted"), ("insertion", "lower right", "inserted")):
            area = {m: a.mean() for m, a in self.areas(kind).items()}
            series = [Series(f"{m} ({area[m]:.3f})", self.x[kind], self.curves[kind][m].mean(0)) for m in self.methods]
            charts.append(line_chart(series, title=f"{title}{kind} (mean of {len(self.images)} images)",
                                     xlabel=f"fraction of pixels {verb}",
                                     ylabel="probability of the predicted class", xlim=(0, 1), ylim=(0, 1),
                                     legend=where))
        return hstack(charts)

    def save(self, out_dir: str | os.PathLike, title: Optional[str] = None, save_maps: bool = False) -> list[Path]:
        """Write results.md, results.csv, per_image.csv, curves.npz, curves.png (and maps.npz) into ``out_dir``."""
        from .fileio import atomic_path

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in (("results.md", self.to_markdown(title)), ("results.csv", self.to_csv()),
                           ("per_image.csv", self.per_image_csv())):
            with atomic_path(d / name) as tmp:
                tmp.write_text(text, encoding="utf-8")
            written.append(d / name)
        arrays = {f"{k}_x": v for k, v in self.x.items()}
        arrays.update({f"{k}/{m}": c for k, per in self.curves.items() for m, c in per.items()})
        for name, data in (("curves.npz", arrays), ("maps.npz", self.maps if save_maps else None)):
            if data:
                with atomic_path(d / name) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez_compressed(f, **data)
                written.append(d / name)
        save_png(self.figure(f"{title}: " if title else ""), d / "curves.png")
        written.append(d / "curves.png")
        return written


def _std(a: np.ndarray) -> float:
    return float(a.std(ddof=1)) if a.size > 1 else 0.0


def load_batch(paths: Sequence[Path], pp: Preprocess, input_shape: Sequence) -> np.ndarray:
    """The images preprocessed as the model's metadata says, stacked into one batch."""
    return np.stack([load_input(p, pp, input_shape)[0] for p in paths])


def evaluate(model: str | os.PathLike, images: Iterable[str | os.PathLike], methods: str | Sequence[str] | None = None,
             out_dir: str | os.PathLike | None = None, *, step: Optional[int] = None, batch_size: int = DEFAULT_BATCH,
             steps: int = DEFAULT_STEPS, rule: str = DEFAULT_RULE, baseline: str = "zeros", seed: int = 0,
             device: str = "auto", max_memory: int | str | None = None, threads: Optional[int] = None,
             cache_dir: str | os.PathLike | None = None, progress: bool = False, title: Optional[str] = None,
             save_maps: bool = False) -> EvalResult:
    """Deletion and insertion of every method on every image of a classifier ``model`` (the original .onnx).

    The converted models the methods need are written to ``cache_dir`` (default ``out_dir/converted``,
    else a temporary folder) and reused while the model and the converter are unchanged. Results are
    written to ``out_dir`` when given.
    """
    import tempfile

    from tqdm import tqdm

    from .api import guess_preprocess, label_of, softmax

    names = parse_methods(methods)
    paths, failed = collect_inputs(list(images))
    if not paths:
        raise InputError("no images to evaluate" + "".join(f"; {n}: {why}" for n, why in failed))
    src = Path(model)
    if not src.is_file():
        raise InputError(f"model file not found: {src}")
    if any(p.key == "onnx_gig.method" for p in read_onnx(src, load_external_data=False).metadata_props):
        raise ModelError(f"{src} is already a converted model; pass the original classifier")
    tmp = None
    if cache_dir is None:
        if out_dir is not None:
            cache_dir = Path(out_dir) / "converted"
        else:
            tmp = tempfile.TemporaryDirectory(prefix="onnx-gig-eval-")
            cache_dir = tmp.name
    try:
        graphs = {g: GigModel(converted(src, g, cache_dir), device=device, max_memory=max_memory, threads=threads)
                  for g in graphs_needed(names) or ["ig"]}
        first = next(iter(graphs.values()))
        pp = Preprocess.from_json(first.preprocess_json) if first.preprocess_json else guess_preprocess(first.input_shape)
        forward = OnnxForward(first.path, device=device, threads=threads)
        x, paths, unreadable = load_good(paths, pp, first.input_shape)
        failed = unreadable + failed
        h, w = image_hw(x[0], pp.layout)
        scores = np.concatenate([forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        targets = scores.argmax(1)
        probs = softmax(scores.astype(np.float64))
        base = np.stack([make_baseline(baseline, xi, None, pp) for xi in x]) if baseline != "zeros" else None

        bar = tqdm(total=2 * len(names) * len(paths), disable=not progress, unit="map", desc="maps")
        maps: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        for m in names:
            meth = METHODS[m]
            group = 1 if meth.integrated else max(1, int(batch_size))
            t0 = time.perf_counter()
            parts = []
            for i in range(0, len(x), group):
                bar.set_description(f"maps: {m}")
                parts.append(saliency_maps(m, graphs.get(meth.graph or ""), x[i:i + group], targets[i:i + group],
                                           pp.layout, steps, rule, None if base is None else base[i:i + group],
                                           seed=seed, first_index=i))
                bar.update(len(parts[-1]))
            maps[m] = np.concatenate(parts)
            seconds[m] = time.perf_counter() - t0

        curves: dict[str, dict[str, list]] = {"deletion": {m: [] for m in names}, "insertion": {m: [] for m in names}}
        xs: dict[str, np.ndarray] = {}
        bar.set_description("deletion/insertion")
        for i in range(len(x)):
            blurred = blur(x[i], pp.layout)
            for m in names:
                t = int(targets[i])
                kw = dict(step=step, target=t, batch_size=batch_size, layout=pp.layout)
                for c in (deletion(forward, x[i], maps[m][i], **kw),
                          insertion(forward, x[i], maps[m][i], blurred=blurred, **kw)):
                    curves[c.kind][m].append(c.y)
                    xs[c.kind] = c.x
                bar.update(1)
        bar.close()
        labels = first.labels
        settings = {"step": int(step or w), "points": int(len(xs["deletion"])), "blur": "11x11 sigma-5",
                    "steps": steps, "rule": rule, "baseline": baseline, "batch_size": int(batch_size),
                    "seed": seed, "image_size": [h, w], "provider": first.provider,
                    "preprocess": json.loads(pp.to_json())}
        result = EvalResult(model=str(src), images=[str(p) for p in paths], methods=names, targets=targets,
                            target_labels=[label_of(labels, int(t)) for t in targets],
                            clean_prob=probs[np.arange(len(targets)), targets], x=xs,
                            curves={k: {m: np.stack(v) for m, v in per.items()} for k, per in curves.items()},
                            settings=settings, seconds=seconds, maps=maps, failed=failed)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if out_dir is not None:
        result.save(out_dir, title, save_maps)
    return result


__all__ = ["EvalResult", "collect_images", "evaluate", "load_batch", "load_good"]
