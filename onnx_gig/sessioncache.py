"""A cache of onnxruntime's optimised CPU graph of a converted model: a new process starts without re-optimising.

Why: a model converted with row blocks (blocks.py) holds B copies of the forward and backward graph, and
onnxruntime's graph optimisation (fusions, the blocked NCHWc layout) then takes most of a session's start
(MobileNetV2 GNL-IG with 10 blocks: 0.34 s of 0.37 s; the saved optimised graph loads in 0.10 s). The first
session saves its optimised graph (``optimized_model_filepath``); later ones load that with optimisation
off. The optimised graph is specific to the onnxruntime version and the CPU (the blocked layout follows the
vector width), so the key holds both, with the model file's path, size and mtime and the session options.

Where: ``$ONNX_GIG_CACHE_DIR``, else ``$XDG_CACHE_HOME/onnx-gig/sessions``, else ``~/.cache/onnx-gig/sessions``;
the newest entries are kept, at most ``MAX_ENTRIES`` and ``MAX_BYTES`` (an entry is about twice its model:
the weights and their blocked copies). ``ONNX_GIG_SESSION_CACHE=0`` turns it off. Anything that goes wrong
with the cache (a read-only or foreign folder, a damaged entry, a model onnxruntime cannot save, such as one
with external data) falls back to an ordinary session, and a model that could not be saved is marked so
that later processes do not try again: the cache can only save time.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import onnxruntime as ort

MAX_ENTRIES = 8
MAX_BYTES = 2 << 30
MAX_MODEL_BYTES = 1 << 30  # the optimised copy must fit one protobuf (2 GB) beside its reordered weights


def enabled() -> bool:
    return os.environ.get("ONNX_GIG_SESSION_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("ONNX_GIG_CACHE_DIR"):
        return Path(os.environ["ONNX_GIG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnx-gig" / "sessions"


def _cpu_id() -> str:
    """The CPU's model name and feature flags (Linux), else the platform's description."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        picked = [l for l in lines if l.startswith(("model name", "flags", "Features"))]
        return "\n".join(dict.fromkeys(picked)) or platform.processor()
    except OSError:
        return platform.platform() + platform.processor()


def key(path: Path, options: dict[str, Any]) -> str:
    st = path.stat()
    parts = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ort": ort.__version__,
             "machine": platform.machine(), "cpu": _cpu_id(), "options": options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    """Keep the newest entries: at most MAX_ENTRIES of them and MAX_BYTES in all."""
    entries = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for k, entry in enumerate(entries):
        total += entry.stat().st_size
        if k >= MAX_ENTRIES or (k > 0 and total > MAX_BYTES):
            _unlink(entry)


def session(path: Path, options: Callable[[], ort.SessionOptions], providers: list, describe: dict[str, Any]
            ) -> ort.InferenceSession:
    """A CPU session for the model at ``path``: from the cached optimised graph when there is one.

    ``options()`` makes fresh session options; ``describe`` names what in them changes the optimised graph
    (it goes into the key). Errors of the model itself are raised as onnxruntime raises them.
    """
    if not enabled() or not path.is_file() or path.stat().st_size > MAX_MODEL_BYTES:
        return ort.InferenceSession(str(path), sess_options=options(), providers=providers)
    folder = cache_dir()
    try:
        entry = folder / f"{key(path, describe)}.onnx"
    except OSError:
        return ort.InferenceSession(str(path), sess_options=options(), providers=providers)
    skip = entry.with_suffix(".nocache")
    if skip.exists():  # onnxruntime could not save this model's optimised graph before
        return ort.InferenceSession(str(path), sess_options=options(), providers=providers)
    if entry.is_file():
        so = options()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            s = ort.InferenceSession(str(entry), sess_options=so, providers=providers)
        except Exception:  # damaged or foreign: rebuild it
            _unlink(entry)
        else:
            try:
                os.utime(entry)  # newest use first when pruning
            except OSError:
                pass
            return s
    tmp: Optional[Path] = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # per process and thread: sessions made side by side in one process must not write one file
        tmp = folder / f".{entry.stem}.{os.getpid()}.{threading.get_ident()}.tmp.onnx"
        so = options()
        so.optimized_model_filepath = str(tmp)
        s = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception:
        if tmp is not None:
            _unlink(tmp)
            if tmp.parent.is_dir():  # the folder is usable: it is the model that cannot be saved
                try:
                    skip.touch()
                except OSError:
                    pass
        return ort.InferenceSession(str(path), sess_options=options(), providers=providers)
    try:
        os.replace(tmp, entry)  # atomic: another process sees the whole entry or none
        _prune(folder)
    except OSError:
        _unlink(tmp)
    return s
