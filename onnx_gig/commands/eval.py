"""onnx-gig eval: deletion and insertion areas of several attribution methods on your model and images."""
from __future__ import annotations

import argparse
import sys

from ..methods import ALL, METHODS
from ..quadrature import DEFAULT_RULE, DEFAULT_STEPS, RULES
from ._common import add_ray_options, add_run_options, check_ray_options
from .explain import SOME_FAILED

NAME = "eval"
HELP = "measure faithfulness: deletion and insertion areas per method (RISE protocol)"
DESCRIPTION = ("Convert the classifier as the methods need (cached in OUT_DIR/converted), compute every method's "
               "map on every image, and score the maps by deletion (pixels set to 0 in model-input space, most "
               "salient first; lower area is better) and insertion (from an 11x11 sigma-5 blur back to the image; "
               "higher is better), with the probability of the class predicted on the clean image. Writes "
               "results.md, results.csv (mean and std per method), per_image.csv, curves.npz and curves.png. "
               "Methods: " + "; ".join(f"{m}: {METHODS[m].description}" for m in ALL) + ". Exit status: 0; 3 when "
               "some inputs could not be read (each named on one line of stderr; the others are scored); 2 bad "
               "options or model, or no readable image.")


def add_method_options(p: argparse.ArgumentParser, default: str) -> None:
    """--methods, --steps, --rule, --seed: shared by eval and sanity."""
    p.add_argument("--methods", default=default, help=f"comma-separated, from {','.join(ALL)} (default {default})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"integration steps of ig and gnl-ig (default {DEFAULT_STEPS})")
    p.add_argument("--rule", default=DEFAULT_RULE, choices=RULES, help=f"their quadrature rule (default {DEFAULT_RULE})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random map / random weights (default 0)")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the classifier .onnx (not a converted model); preprocessing from its metadata")
    p.add_argument("images", nargs="+", help="photos (PNG/JPEG/...), .npy tensors, folders of them (searched "
                                             "recursively), or globs")
    add_method_options(p, ",".join(ALL))
    p.add_argument("--out-dir", default="eval", help="where the tables, curves and converted models go (default eval)")
    p.add_argument("--step", type=int, help="pixels moved per step (default: one image row, i.e. the width)")
    p.add_argument("--batch-size", type=int, default=64, help="perturbed images per onnxruntime run (default 64)")
    p.add_argument("--baseline", default="zeros", help="IG/GNL-IG baseline: zeros (default), black, white, blur")
    p.add_argument("--title", help="title for the table and figure")
    p.add_argument("--save-maps", action="store_true", help="also write every map to OUT_DIR/maps.npz")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted eval into the same --out-dir: the chunks it scored (saved in "
                        "OUT_DIR/parts until the results are written) are kept and only the rest is scored; the "
                        "model, images and options must be the same")
    add_run_options(p)
    add_ray_options(p, "every image's maps and curves run on Ray actors (chunks of images per actor); OUT_DIR "
                       "(the converted models) and the images must be readable by every worker")


def run(a: argparse.Namespace) -> int:
    from ..evaluate import evaluate

    check_ray_options(a)
    r = evaluate(a.model, a.images, a.methods, a.out_dir, step=a.step, batch_size=a.batch_size, steps=a.steps,
                 rule=a.rule, baseline=a.baseline, seed=a.seed, device=a.device, max_memory=a.max_memory,
                 threads=a.threads, progress=sys.stderr.isatty(), title=a.title, save_maps=a.save_maps,
                 ray=a.ray, actors=a.actors, resume=a.resume)
    print(f"{'method':<18} {'deletion (lower better)':>24} {'insertion (higher better)':>26}")
    for row in r.summary():
        print(f"{row['method']:<18} {row['deletion_mean']:>15.4f} ± {row['deletion_std']:.4f} "
              f"{row['insertion_mean']:>17.4f} ± {row['insertion_std']:.4f}")
    for path, why in r.failed:
        print(f"onnx-gig: error: {path}: {why}", file=sys.stderr)
    print(f"{len(r.images)} images" + (f" ({len(r.failed)} left out)" if r.failed else "")
          + f"; wrote {a.out_dir}/results.md, results.csv, per_image.csv, curves.png")
    return SOME_FAILED if r.failed else 0
