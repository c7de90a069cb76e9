"""onnx-gig explain: attribute images with a converted model and draw the heatmaps (one, or a folder's worth)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..heatmap import CMAPS, DEFAULT_ALPHA, DEFAULT_CLIP, SIGNS
from ._common import (add_attribution_options, add_ray_options, add_run_options, check_ray_options,
                      print_explanation)

NAME = "explain"
HELP = "attribute images with a converted model and draw the heatmaps"
SOME_FAILED = 3  # exit status when some inputs could not be explained (the others were written)
DESCRIPTION = (
    "Run the attribution model on images and write a figure per image (photo | map | overlay). One image: "
    "the figure (IMAGE_gig.png in the current folder, or --out) and the top-5 classes on stdout. Several "
    "inputs, folders (searched recursively for images and .npy files), globs, or --out-dir: one process for "
    "all (--workers sessions side by side), images x steps batched under --max-memory, and DIR/<stem>_gig.png "
    "per image (names made unique), "
    "DIR/results.csv and DIR/results.jsonl (one row per input: class, probability, scores, top-5, error), "
    "DIR/results.html (every figure with its class at a glance, sorted and filtered in the browser), "
    "with --npy DIR/<stem>.npy. Preprocessing and labels come from the model file. Exit status: 0 all "
    f"explained; {SOME_FAILED} some inputs could not be read (each named on one line of stderr; the others "
    "are written); 2 bad options or model, or no input found; 130 interrupted (no partial file is left: "
    "the figures written are complete, and --resume finishes the run).")


def configure(e: argparse.ArgumentParser) -> None:
    e.add_argument("model", help="a model written by 'onnx-gig convert'")
    e.add_argument("inputs", nargs="+", metavar="PATH",
                   help="PNG/JPEG of any size and mode, a .npy holding one preprocessed tensor, a folder (searched "
                        "recursively; hidden files skipped, and the --out-dir), or a glob")
    add_attribution_options(e)
    e.add_argument("--out", help="one image: the figure to write (default: IMAGE_gig.png in the current folder)")
    e.add_argument("--save-npy", help="one image: also write the raw attributions (float32, model layout, "
                                      "no batch dim)")
    e.add_argument("--out-dir", metavar="DIR", help="write figures and results.csv/.jsonl here (default with several "
                                                    "inputs: the current folder)")
    e.add_argument("--targets", metavar="FILE|FOLDER",
                   help="explain each image's class as FILE gives it (a dataset's labels: 'name class' lines as "
                        "ImageNet's val.txt, a CSV/TSV with image and label columns, or a JSON object; a class is "
                        "an index, one of the model's labels, or an ImageNet WordNet ID; images are matched by path, file name or stem), or "
                        "as the FOLDER's subfolders name it (the ImageFolder layout). In a folder run, images "
                        "without a class fail (exit 3)")
    e.add_argument("--npy", action="store_true", help="with several inputs or --out-dir: also write each image's raw "
                                                      "attributions as DIR/<stem>.npy")
    e.add_argument("--no-figures", dest="figures", action="store_false",
                   help="several inputs or --out-dir: write no figures, only the tables (and --npy files): a "
                        "dataset's attributions without a picture per image")
    g = e.add_argument_group("the map (the raw attributions and .npy files are never clipped)")
    g.add_argument("--clip-percentile", type=float, default=DEFAULT_CLIP, metavar="P",
                   help=f"scale the map by its P-th percentile and clip above it (default {DEFAULT_CLIP:g}, as PAIR "
                        "saliency; 100 = the authors' |sum|/max)")
    g.add_argument("--sign", default="absolute", choices=SIGNS,
                   help="absolute: |channel sum| (default); positive / negative: one sign's part; all: signed, "
                        "with a diverging colour map")
    g.add_argument("--alpha", "--opacity", dest="alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                   help=f"overlay opacity where the map is 1, falling to 0 where it is 0 (default {DEFAULT_ALPHA:g})")
    g.add_argument("--cmap", choices=CMAPS, help="colour map (default inferno; rdbu for --sign all)")
    e.add_argument("-f", "--force", action="store_true", help="overwrite figures, .npy files and tables that exist")
    e.add_argument("--resume", action="store_true",
                   help="several inputs: finish an interrupted run into the same --out-dir, or add images that "
                        "appeared since, skipping those already explained (DIR/.onnx-gig-run.jsonl records them; "
                        "the model and options must be the same). Without an earlier run, a fresh one")
    add_run_options(e, "all cores; with several inputs, each of the --workers sessions gets its share")
    e.add_argument("--workers", type=int, metavar="N",
                   help="several inputs: onnxruntime sessions explaining batches side by side, the cores shared "
                        "out (default on CPU: about the square root of the cores, e.g. 2 sessions x 1 thread on 2 "
                        "cores, about 8 %% faster than 1 x 2 there, or cores / --threads when that is given; 1 on CUDA)")
    add_ray_options(e, "folder mode on Ray Data, each actor holding one session and drawing its images' figures; "
                       "the same files are written. The model and the images must be readable by every worker")


def _many(a: argparse.Namespace) -> bool:
    """Folder mode: several inputs, a folder or glob, --out-dir, --npy or --resume; else the one-image path of
    old (with --targets too: the image's class is looked up in the file)."""
    one = len(a.inputs) == 1 and not os.path.isdir(a.inputs[0]) and (os.path.exists(a.inputs[0])
                                                                    or not any(c in a.inputs[0] for c in "*?["))
    return not one or a.out_dir is not None or a.npy or a.ray is not None or a.resume


def run(a: argparse.Namespace) -> int:
    check_ray_options(a)
    if a.workers is not None:  # a one-image run has one session, a Ray run --actors: refuse, never ignore
        from ..errors import InputError, whole_number

        whole_number(a.workers, "--workers")
        if a.ray is not None:
            raise InputError("--workers sets the sessions of a one-process run; with --ray, --actors sets the Ray "
                             "actors")
    if _many(a):
        return run_many(a)
    if not a.figures:
        from ..errors import InputError

        raise InputError("--no-figures is for folder runs (several inputs, or --out-dir DIR): one image's figure is "
                         "its explanation; --save-npy writes its attributions as well")
    from ..api import explain

    target = a.target
    if a.targets is not None:  # one image: its class from the file, then as --target
        from ..errors import InputError

        from ..api import _peek_gig_model
        from ..contract import META_PREFIX

        options = options_of(a)
        nc = _peek_gig_model(Path(a.model))[0].get(META_PREFIX + "num_classes")
        options.check(int(nc) if nc else None)  # the file's classes against the model's, as a folder run does
        try:
            target = options.targets.lookup(a.inputs[0])
        except InputError as exc:
            raise InputError(f"{a.inputs[0]}: {exc}") from None
        from ..fileio import check_output

        for dest in (a.out, a.save_npy):  # the label file is an input too: never an output
            if dest and os.path.isfile(a.targets):
                check_output(dest, protect=(a.targets,))
    r = explain(a.model, a.inputs[0], target=target, steps=a.steps, rule=a.rule, baseline=a.baseline, out=a.out,
                save_npy=a.save_npy, device=a.device, max_memory=a.max_memory, threads=a.threads,
                progress=sys.stderr.isatty(), cmap=a.cmap, overwrite=a.force, clip_percentile=a.clip_percentile,
                sign=a.sign, alpha=a.alpha)
    print_explanation(r, a.inputs[0])
    return 0


def options_of(a: argparse.Namespace):
    """The CLI's options as the API's ExplainOptions (class names resolved by the model's labels, --targets read)."""
    from ..batch import ExplainOptions, with_classes

    return with_classes(ExplainOptions(target=a.target, targets=a.targets, steps=a.steps, rule=a.rule,
                                       baseline=a.baseline, clip_percentile=a.clip_percentile, sign=a.sign,
                                       cmap=a.cmap, alpha=a.alpha), a.model)


def results_of(a: argparse.Namespace, inputs, options):
    """The results, in the order of ``inputs`` (what collect_inputs found)."""
    from ..batch import explain_many

    return explain_many(a.model, inputs, options, device=a.device, max_memory=a.max_memory, threads=a.threads,
                        workers=a.workers,
                        progress=sys.stderr.isatty())


def run_many(a: argparse.Namespace) -> int:
    """Explain every input into DIR, name each failure on one stderr line, exit SOME_FAILED if any failed."""
    from ..batch import collect_inputs
    from ..errors import InputError
    from ..journal import recorded_outputs
    from ..writer import ResultWriter

    if a.out is not None or a.save_npy is not None:
        raise InputError("--out and --save-npy name one image's outputs; with several inputs use --out-dir DIR "
                         "(and --npy for the raw attributions)")
    out_dir = a.out_dir or "."
    inputs = collect_inputs(a.inputs, exclude=recorded_outputs(out_dir))  # never the figures it wrote
    files, missing = inputs
    if not files:
        raise InputError("no images found: " + "; ".join(f"{n}: {why}" for n, why in missing))
    options = options_of(a)
    options.check()
    if options.targets is not None:
        options.targets.check_covers(files)
    protect = [a.model] + ([a.baseline] if os.path.isfile(a.baseline) else []) + \
        ([a.targets] if a.targets is not None else [])
    if a.ray is not None:
        return run_ray(a, inputs, options, out_dir, protect)
    with ResultWriter(out_dir, figures=a.figures, npy=a.npy, overwrite=a.force, options=options,
                      inputs=[str(f) for f in files] + [n for n, _ in missing], protect=protect, model=a.model,
                      resume=a.resume) as w:
        left, todo = w.pending(inputs)
        if todo or left.missing:
            for r in results_of(a, left, options):
                r = w.reindex(r)
                w.write(r)
                report_failure(r)
    failed = len(w.failures)
    print(f"{w.explained} explained{_earlier(w.resumed)}, {failed} failed; wrote {_files(w.explained - w.resumed, a)}"
          f"{_written(out_dir)}")
    return SOME_FAILED if failed else 0


def _earlier(resumed: int) -> str:
    return f" ({resumed} of them by the earlier run)" if resumed else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _written(out_dir: str) -> str:
    return f"results.csv, results.jsonl and results.html (open it in a browser) in {out_dir}"


def _files(n: int, a: argparse.Namespace) -> str:
    """What a run wrote per image, for its summary line: '3 figures and .npy files, ' (empty without either)."""
    parts = ([_count(n, "figure")] if a.figures else []) + ([".npy files" if a.figures else _count(n, ".npy file")]
                                                            if a.npy else [])
    return " and ".join(parts) + ", " if parts else ""


def report_failure(r) -> None:
    """One stderr line per input that could not be explained (above the progress bar)."""
    from tqdm import tqdm

    if r.error:
        tqdm.write(f"onnx-gig: error: {r.path}: {r.error}", file=sys.stderr)


def run_ray(a: argparse.Namespace, inputs, options, out_dir: str, protect: list) -> int:
    """--ray: the same folder mode on Ray actors (onnx_gig.distributed.explain_ray), over the same listing."""
    from ..distributed import explain_ray

    s = explain_ray(a.model, inputs, options, out_dir, address=a.ray, actors=a.actors, device=a.device,
                    max_memory=a.max_memory, threads=a.threads, npy=a.npy, figures=a.figures, overwrite=a.force,
                    resume=a.resume,
                    progress=sys.stderr.isatty(), protect=protect, report=report_failure)
    if not s.actors:  # --resume found nothing left to run: no Ray was started
        print(f"{s.explained} explained{_earlier(s.resumed)}, {s.failed} failed; nothing left to run; wrote "
              f"{_written(out_dir)}")
        return SOME_FAILED if s.failed else 0
    ran = s.explained + s.failed - s.resumed
    rate = f", then {s.images_per_second:.2f} images/s" if ran > 1 else ""  # no rate from one image
    print(f"{s.explained} explained{_earlier(s.resumed)}, {s.failed} failed on {_count(s.actors, 'Ray actor')} x "
          f"{s.threads} threads in {s.seconds:.1f} s ({s.startup_seconds:.1f} s to the first result{rate}); wrote "
          f"{_files(s.explained - s.resumed, a)}{_written(out_dir)}")
    return SOME_FAILED if s.failed else 0
