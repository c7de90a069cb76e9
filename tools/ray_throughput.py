#!/usr/bin/env python3
"""Images per second of ``explain`` in one process and on a local Ray with 1..N actors (docs/scaling.md).

    python tools/ray_throughput.py                       # MobileNetV2 GNL-IG, 50 steps, 3 photos x 6, 1 and 2 actors
    python tools/ray_throughput.py --steps 16 --copies 4 --actors 1,2,4 --cpus 4 --repeats 3

The runs are interleaved (one process, one local Ray with ``--cpus`` CPUs, every configuration once per
repeat) so that other work on the machine hits them alike. Throughput is counted after the first result:
(images - 1) / (time after the first result); the time to the first result (Ray, the actors and their
sessions starting) is shown apart. Each actor gets cpus / actors onnxruntime threads.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx_gig import convert  # noqa: E402
from onnx_gig.batch import ExplainOptions, explain_many  # noqa: E402
from onnx_gig.distributed import explain_ray, ray_session  # noqa: E402
from onnx_gig.writer import ResultWriter  # noqa: E402


def one_process(model: Path, inputs: Path, out: Path, steps: int, threads: int) -> tuple[float, float]:
    """(seconds to the first result, images/s after it) of explain_many + ResultWriter, one image per batch."""
    t0 = time.perf_counter()
    first, n = None, 0
    with ResultWriter(out, options=ExplainOptions(steps=steps)) as w:
        for r in explain_many(model, [inputs], ExplainOptions(steps=steps), device="cpu", threads=threads,
                              batch_images=1):
            w.write(r)
            n += 1
            first = first if first is not None else time.perf_counter() - t0
    total = time.perf_counter() - t0
    return first, (n - 1) / (total - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "mobilenet_v2.onnx"), help="classifier to convert")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--copies", type=int, default=6, help="copies of each shipped photo (default 6: 18 images)")
    ap.add_argument("--actors", default="1,2", help="actor counts to run (default 1,2)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnx-gig-ray-") as tmp:
        d = Path(tmp)
        model = convert(a.model, d / "model_gig.onnx").path
        inputs = d / "in"
        inputs.mkdir()
        for k in range(a.copies):
            for p in sorted((ROOT / "models" / "images").glob("*.png")):
                shutil.copy(p, inputs / f"{p.stem}_{k}.png")
        n = len(list(inputs.iterdir()))
        runs: dict[str, list[tuple[float, float]]] = {}
        with ray_session("local", num_cpus=a.cpus):  # explain_ray uses this Ray and leaves it running
            for rep in range(a.repeats):
                out = d / "out"
                shutil.rmtree(out, ignore_errors=True)
                runs.setdefault(f"one process | 1 x {a.cpus}", []).append(one_process(model, inputs, out, a.steps,
                                                                                         a.cpus))
                for k in map(int, a.actors.split(",")):
                    shutil.rmtree(out, ignore_errors=True)
                    s = explain_ray(model, [inputs], ExplainOptions(steps=a.steps), out, actors=k, batch_images=1,
                                    device="cpu")
                    runs.setdefault(f"--ray | {s.actors} x {s.threads}", []).append((s.startup_seconds,
                                                                                    s.images_per_second))
                print(f"repeat {rep + 1}/{a.repeats} done", file=sys.stderr)
    print(f"{Path(a.model).stem} GNL-IG, {a.steps} steps, {n} images, one per task; median of {a.repeats}\n")
    print("| run | actors x threads | first result after | images/s after it |\n|---|---|---|---|")
    for name, v in runs.items():
        kind, plan = name.split(" | ")
        print(f"| {kind} | {plan} | {statistics.median(x[0] for x in v):.1f} s | "
              f"{statistics.median(x[1] for x in v):.2f} |")


if __name__ == "__main__":
    main()
