"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Cascading randomisation: the parameterised layers of the classifier (Conv, ConvTranspose, Gemm,
MatMul weights and biases, BatchNormalization parameters) are re-initialised from the top (the
logits layer) down, cumulatively; depth d means the d layers nearest the output are random.
Each randomised model is converted like the original and explained for the class the ORIGINAL
model predicts; the Spearman rank correlation between each map and the original model's map
says how much the map still looks the same. A method whose maps stay the same while the
model's knowledge is destroyed does not explain the model (guided backprop is the known case).

Re-initialisation, seeded per (seed, layer): weights, biases, BN scale, shift and mean are drawn
from N(0, std of the original tensor); BN variances are a random permutation of the originals
(they must stay positive). A constant tensor (std 0, e.g. a zero bias) is left as it is. The
layer order is the graph's node order, which ONNX requires to be topological.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import InputError, ModelError, whole_number
from .heatmap import save_png
from .methods import METHODS, attribute, converted, graphs_needed, maps_of, parse_methods, random_map
from .metrics import read_onnx, spearman
from .plots import Series, hstack, line_chart
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS
from .runtime import GigModel

PARAM_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization")
DEFAULT_METHODS = ("gradient", "input_x_gradient", "guided_backprop", "ig", "gnl-ig")
KINDS = ("abs", "signed")


@dataclass(frozen=True)
class Layer:
    """A node with trainable parameters: its name, op type and the initializers it owns."""

    name: str
    op_type: str
    params: tuple[str, ...]


def parameterised_layers(model: onnx.ModelProto) -> list[Layer]:
    """Layers with float initializer inputs, input side first; an initializer shared by several
    nodes belongs to the one nearest the output."""
    inits = {i.name: i for i in model.graph.initializer}
    owned: set[str] = set()
    layers: list[Layer] = []
    for k, node in reversed(list(enumerate(model.graph.node))):
        if node.op_type not in PARAM_OPS:
            continue
        params = tuple(n for n in node.input if n in inits and n not in owned
                       and numpy_helper.to_array(inits[n]).dtype.kind == "f")
        if params:
            owned.update(params)
            layers.append(Layer(node.name or f"{node.op_type}_{k}", node.op_type, params))
    return layers[::-1]


def randomise(model: onnx.ModelProto, depth: int, seed: int = 0,
              layers: Optional[Sequence[Layer]] = None) -> onnx.ModelProto:
    """A copy of ``model`` with its top ``depth`` parameterised layers re-initialised (cascading)."""
    layers = parameterised_layers(model) if layers is None else list(layers)
    if not 0 <= depth <= len(layers):
        raise InputError(f"depth {depth} is out of range: the model has {len(layers)} parameterised layers")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    for li in range(len(layers) - depth, len(layers)):
        layer = layers[li]
        for pi, name in enumerate(layer.params):
            old = numpy_helper.to_array(inits[name])
            new = _reinit(old, np.random.default_rng([int(seed), li, pi]),
                          layer.op_type == "BatchNormalization" and pi == 3)
            inits[name].CopyFrom(numpy_helper.from_array(new.astype(old.dtype), name))
    return out


def _reinit(a: np.ndarray, rng: np.random.Generator, variance: bool) -> np.ndarray:
    if variance:
        return rng.permutation(a.ravel()).reshape(a.shape)
    std = float(np.std(a, dtype=np.float64))
    return a.copy() if std == 0.0 else rng.normal(0.0, std, a.shape)


def default_depths(n_layers: int, max_points: int = 8) -> list[int]:
    """0, 1, 2, 4, 8, ... up to all layers; every depth when the model is that small."""
    if n_layers + 1 <= max_points:
        return list(range(n_layers + 1))
    d = [0] + [2 ** k for k in range(int(np.log2(max(1, n_layers))) + 1) if 2 ** k < n_layers] + [n_layers]
    if len(d) > max_points:  # keep the ends, thin the middle
        idx = np.unique(np.round(np.linspace(0, len(d) - 1, max_points)).astype(int))
        d = [d[i] for i in idx]
    return d


def parse_depths(text: str | Sequence[int] | None, n_layers: int, max_points: int = 8) -> list[int]:
    """'0,1,2,5,all' or a list -> sorted unique depths, 0 always included; None -> default_depths."""
    if text is None:
        return default_depths(n_layers, max_points)
    items = text.split(",") if isinstance(text, str) else list(text)
    if not any(str(item).strip() for item in items):  # '' would leave depth 0 alone: a table that checks nothing
        raise InputError("--depths is empty; give depths like 0,1,2,all, or leave it out for the default")
    out = {0}
    for item in items:
        s = str(item).strip().lower()
        if not s:
            continue
        try:
            d = n_layers if s == "all" else int(s)
        except ValueError:
            raise InputError(f"depths must be whole numbers or 'all', got '{item}'") from None
        if not 0 <= d <= n_layers:
            raise InputError(f"depth {d} is out of range: the model has {n_layers} parameterised layers")
        out.add(d)
    return sorted(out)


@dataclass
class SanityResult:
    """Spearman correlations between original and randomised maps, per method, depth and image."""

    model: str
    images: list[str]
    methods: list[str]
    layers: list[Layer]
    depths: list[int]
    targets: np.ndarray
    corr: dict[str, dict[str, np.ndarray]]  # kind ('abs' | 'signed') -> method -> [n_depths, n_images]
    settings: dict

    def deepest(self, depth: int) -> str:
        """Name of the deepest (nearest the input) layer randomised at ``depth``."""
        return "-" if depth == 0 else self.layers[len(self.layers) - depth].name

    def rows(self) -> list[dict]:
        out = []
        for kind in KINDS:
            for di, d in enumerate(self.depths):
                for m in self.methods:
                    c = self.corr[kind][m][di]
                    out.append({"kind": kind, "depth": d, "deepest_layer": self.deepest(d), "method": m,
                                "spearman_mean": float(np.nanmean(c)),
                                "spearman_std": float(np.nanstd(c, ddof=1)) if c.size > 1 else 0.0,
                                "n_images": int(np.isfinite(c).sum())})
        return out

    def to_csv(self) -> str:
        rows = self.rows()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def table(self, kind: str = "abs") -> str:
        """Markdown: one row per depth, one column per method (mean over images)."""
        head = "| depth | deepest layer randomised | " + " | ".join(self.methods) + " |"
        lines = [head, "|---|---|" + "---|" * len(self.methods)]
        for di, d in enumerate(self.depths):
            cells = [f"{np.nanmean(self.corr[kind][m][di]):.3f}" for m in self.methods]
            lines.append(f"| {d} | `{self.deepest(d)}` | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def notes(self) -> list[str]:
        """Lines that keep a table from being misread: the random map is 1.000 at every depth by construction."""
        if "random" not in self.methods:
            return []
        return ["random: a seeded map that ignores the model, the same at every depth, so its correlation is 1 "
                "by construction: a control for the table, not a method that passes the check"]

    def to_markdown(self, title: Optional[str] = None) -> str:
        s = self.settings
        notes = [f"Note - {n}" for n in self.notes()]
        return "\n".join([
            f"# {title or 'Sanity check (cascading randomisation): ' + Path(self.model).name}", "",
            f"{len(self.images)} images, {len(self.layers)} parameterised layers randomised cumulatively from the "
            f"top; depth = number of layers randomised. Spearman rank correlation between the original model's map "
            f"and the randomised model's map, mean over images (1 = unchanged). Class explained: the original "
            f"model's prediction. IG and GNL-IG: {s['steps']} {s['rule']} steps, zero baseline; seed {s['seed']}.",
            "", "## |channel sum| maps (the maps the metrics use)", "", self.table("abs"), "",
            "## Signed channel-sum maps", "", self.table("signed"), ""] + (notes + [""] if notes else []))

    def figure(self, title: str = ""):
        charts = []
        pos = list(range(len(self.depths)))
        ticks = [(p, str(d)) for p, d in zip(pos, self.depths)]
        lo = min([0.0] + [float(np.nanmin(np.nanmean(c, 1))) for per in self.corr.values() for c in per.values()])
        for kind, name in (("abs", "|channel sum| maps"), ("signed", "signed maps")):
            series = [Series(m, pos, np.nanmean(self.corr[kind][m], 1), markers=True) for m in self.methods]
            charts.append(line_chart(series, title=f"{title}{name}", xlabel="layers randomised from the top",
                                     ylabel="Spearman vs original map", xticks=ticks, xlim=(0, max(1, pos[-1])),
                                     ylim=(min(-0.1, lo - 0.05), 1.02), legend="none" if kind == "abs" else "right"))
        return hstack(charts)

    def save(self, out_dir: str | os.PathLike, title: Optional[str] = None) -> list[Path]:
        from .fileio import atomic_path

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in (("sanity.md", self.to_markdown(title)), ("sanity.csv", self.to_csv())):
            with atomic_path(d / name) as tmp:
                tmp.write_text(text, encoding="utf-8")
            written.append(d / name)
        save_png(self.figure(f"{title}: " if title else ""), d / "sanity.png")
        return written + [d / "sanity.png"]


def sanity_check(model: str | os.PathLike, images: Iterable[str | os.PathLike],
                 methods: str | Sequence[str] | None = DEFAULT_METHODS, out_dir: str | os.PathLike | None = None, *,
                 depths: str | Sequence[int] | None = None, max_depths: int = 8, steps: int = DEFAULT_STEPS,
                 rule: str = DEFAULT_RULE, seed: int = 0, device: str = "auto", max_memory: int | str | None = None,
                 threads: Optional[int] = None, cache_dir: str | os.PathLike | None = None, progress: bool = False,
                 title: Optional[str] = None) -> SanityResult:
    """Cascading randomisation of a classifier ``model`` (the original .onnx); writes sanity.md/.csv/.png to ``out_dir``."""
    from tqdm import tqdm

    from .evaluate import check_method_options, collect_images, load_batch

    names = parse_methods(methods)
    check_method_options(steps, rule, seed, threads)
    whole_number(max_depths, "--max-depths", 2)  # depth 0 and all layers at least
    paths = collect_images(images)
    src = Path(model)
    proto = read_onnx(src)
    layers = parameterised_layers(proto)
    if not layers:
        raise ModelError(f"{src} has no parameterised layers ({', '.join(PARAM_OPS)} with initializer weights)")
    ds = parse_depths(depths, len(layers), max_depths)
    graphs = graphs_needed(names) or ["ig"]

    with tempfile.TemporaryDirectory(prefix="onnx-gig-sanity-") as tmp:
        cache = Path(cache_dir) if cache_dir is not None else Path(out_dir or tmp) / "converted"
        bar = tqdm(total=len(ds) * len(names), disable=not progress, unit="map", desc="sanity")
        x = targets = pp = None
        original: dict[str, dict[str, np.ndarray]] = {}
        corr = {k: {m: np.full((len(ds), len(paths)), np.nan) for m in names} for k in KINDS}
        for di, d in enumerate(ds):
            if d == 0:
                files = {g: converted(src, g, cache) for g in graphs}
            else:
                rnd = Path(tmp) / f"depth{d}.onnx"
                onnx.save(randomise(proto, d, seed, layers), str(rnd))
                files = {g: converted(rnd, g, Path(tmp) / f"depth{d}") for g in graphs}
            gms = {g: GigModel(f, device=device, max_memory=max_memory, threads=threads) for g, f in files.items()}
            if x is None:
                first = gms[graphs[0]]
                pp = first.preprocess
                x = load_batch(paths, pp, first.input_shape)
                targets = first.explain(x, n_steps=1, method="riemann_right").target  # the original prediction
            for m in names:
                bar.set_description(f"sanity: depth {d}, {m}")
                g = METHODS[m].graph
                if g is None:
                    hw = x.shape[2:4] if pp.layout == "NCHW" else x.shape[1:3]
                    r = np.stack([random_map(tuple(hw), seed, i) for i in range(len(x))])
                    maps = {"abs": r, "signed": r}
                else:
                    n = 1 if METHODS[m].integrated else 64
                    attr = np.concatenate([attribute(m, gms[g], x[i:i + n], targets[i:i + n], steps, rule)
                                           for i in range(0, len(x), n)])
                    maps = {k: maps_of(attr, pp.layout, signed=(k == "signed")) for k in KINDS}
                if d == 0:
                    original[m] = maps
                for k in KINDS:
                    corr[k][m][di] = [spearman(a, b) for a, b in zip(original[m][k], maps[k])]
                bar.update(1)
            del gms
            if d > 0:  # free the disk as we go
                rnd.unlink()
                shutil.rmtree(Path(tmp) / f"depth{d}")
        bar.close()
    result = SanityResult(str(src), [str(p) for p in paths], names, layers, ds, np.asarray(targets), corr,
                          {"steps": steps, "rule": rule, "seed": seed, "max_depths": max_depths})
    if out_dir is not None:
        result.save(out_dir, title)
    return result


__all__ = ["DEFAULT_METHODS", "Layer", "SanityResult", "default_depths", "parameterised_layers", "parse_depths",
           "randomise", "sanity_check"]
