"""Shared fixtures: a small PyTorch CNN exported to ONNX, and the shipped demo model converted once."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# sessions the tests open keep their optimised graphs here, not in the user's ~/.cache (sessioncache.py)
_SESSION_CACHE = tempfile.mkdtemp(prefix="onnx-gig-test-sessions-")
os.environ["ONNX_GIG_CACHE_DIR"] = _SESSION_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = MODELS / "mobilenet_v2.onnx"
    assert path.is_file(), "models/mobilenet_v2.onnx is missing; rebuild it with tools/build_mobilenet_v2.py"
    return path


@pytest.fixture(scope="session")
def demo_gig(tmp_path_factory, demo_model) -> Path:
    from onnx_gig import convert

    out = tmp_path_factory.mktemp("demo") / "mobilenet_v2_gig.onnx"
    convert(demo_model, out, method="gnl-ig")
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def stop_server(proc) -> None:
    """End a server subprocess a test started: SIGTERM, then SIGKILL if it has not stopped within 20 s."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def photo_folder(folder: Path, n: int, photo: str = "coffee.png") -> Path:
    """``folder`` made, holding ``n`` copies of a shipped photo named p00.png, p01.png..."""
    folder.mkdir(parents=True)
    for i in range(n):
        shutil.copy(MODELS / "images" / photo, folder / f"p{i:02d}.png")
    return folder


def interrupt_folder_run(args, out: Path, timeout: float = 120) -> str:
    """Run ``onnx-gig ARGS`` (a folder run into ``out``), Ctrl-C it once its first figure is written; its stderr.

    Asserts that it stopped as an interrupted run does (exit status 130)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not (out.is_dir() and any(n.endswith("_gig.png") for n in os.listdir(out))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 130, err
    return err


# --------------------------------------------------------------------------- robustness tally
# tests/test_bad_inputs.py and tests/test_properties.py count what they tried; the counts close the run.

_TALLY = pytest.StashKey[dict]()


def robustness_tally(config) -> dict:
    """The session's counters (name -> count), shown in the terminal summary."""
    from collections import Counter

    return config.stash.setdefault(_TALLY, Counter())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tally = config.stash.get(_TALLY, None)
    if tally:
        terminalreporter.write_sep("-", "robustness tally")
        for name, count in sorted(tally.items()):
            terminalreporter.write_line(f"{count:5d}  {name}")
