"""tools/benchmark.py's honesty checks: a busy or drifting machine never yields a table that looks clean.

Only the decision logic and the one-line refusals are exercised here (seconds, no torch); the timings
themselves are the tool's job on a quiet machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def args(**kw):
    base = dict(max_load=0.5, max_drift=0.15, quick=False)
    base.update(kw)
    return argparse.Namespace(**base)


def test_quiet_run_passes(bench):
    r = bench.reliability(args(), 0.2, 0.4, 0.280, 0.300)
    assert r["reasons"] == [] and r["line"].startswith("Quietness check passed")
    assert abs(r["drift"] - 0.02 / 0.28) < 1e-12


@pytest.mark.parametrize("load,start,end,why", [
    (0.9, 0.28, 0.28, "load average 0.90"),
    (0.1, 0.28, 0.75, "moved by 168%"),
    (0.1, 0.75, 0.28, "moved by 168%"),
    (0.1, None, 0.28, "could not be timed"),
])
def test_busy_or_drifting_machine_is_unreliable(bench, load, start, end, why):
    r = bench.reliability(args(), load, load, start, end)
    assert r["line"].startswith("**UNRELIABLE**") and why in r["line"], r["line"]


def test_thresholds_are_options(bench):
    assert bench.reliability(args(max_load=4.0, max_drift=0.5), 3.0, 3.0, 0.28, 0.40)["reasons"] == []


def test_cuda_without_a_gpu_is_one_line():
    from onnx_gig.runtime import cuda_usable

    if cuda_usable():
        pytest.skip("a CUDA device is present: the one-line refusal is for machines without one")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--device", "cuda", "--quick"],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("benchmark: --device cuda needs"), res.stderr
