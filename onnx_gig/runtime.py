"""Run a converted (IG) model with onnxruntime: provider choice, memory-bounded chunks, results.

The CUDA provider is used when it really loads (checked with ``get_providers()`` after the
session is made), else the CPU. Integration steps run in chunks whose partial sums add up,
sized so that one run stays under a memory budget.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .errors import InputError, ModelError
from .integrate import META_PREFIX, OUTPUTS
from .quadrature import DEFAULT_RULE, DEFAULT_STEPS, schedule

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def default_max_memory() -> int:
    """A memory budget in bytes for one run: 40 % of available RAM, at most 4 GiB, at least 256 MiB."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 4 << 30
    return int(min(4 << 30, max(256 << 20, 0.4 * avail)))


def parse_memory(text: str | int | None) -> Optional[int]:
    """'2G', '512M', '1.5GB' or a byte count -> bytes."""
    if text is None or isinstance(text, int):
        return text
    t = text.strip().upper().rstrip("B").rstrip("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(float(t))
    except ValueError:
        raise InputError(f"cannot read memory size '{text}'; use e.g. 2G or 512M") from None


def cuda_usable() -> bool:
    """Whether trying the CUDA provider makes sense (built in, and an NVIDIA driver is present)."""
    if CUDA not in ort.get_available_providers():
        return False
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists() or os.name == "nt"


def session_options(threads: Optional[int] = None) -> ort.SessionOptions:
    """Options valid for both CPU and CUDA providers: full graph optimisation, quiet logs."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # the step/baseline/target defaults are overridable initializers by design
    so.enable_mem_pattern = False  # large first-run buffers otherwise; chunking bounds memory instead
    if threads:
        so.intra_op_num_threads = int(threads)
    return so


def make_session(model: str | os.PathLike | bytes, device: str = "auto",
                 threads: Optional[int] = None) -> ort.InferenceSession:
    """An InferenceSession on CUDA when asked/available and it loads, else on CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device '{device}'; choose auto, cpu or cuda")
    providers = [CPU]
    if device == "cuda" or (device == "auto" and cuda_usable()):
        providers = [CUDA, CPU]
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=session_options(threads), providers=providers)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime cannot load the model: {first}") from None


@dataclass
class Explanation:
    """Attributions for a batch, with the class explained and the model's own outputs."""

    attributions: np.ndarray
    target: np.ndarray
    target_score: np.ndarray
    baseline_score: np.ndarray
    scores: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def convergence_delta(self) -> np.ndarray:
        """sum(attributions) - (F(x) - F(b)) per image: quadrature error for plain IG."""
        n = self.attributions.shape[0]
        return self.attributions.reshape(n, -1).sum(1) - (self.target_score - self.baseline_score)


class GigModel:
    """A converted model ready to attribute: ``attribute()`` takes Captum's argument names."""

    def __init__(self, path: str | os.PathLike, device: str = "auto", max_memory: int | str | None = None,
                 threads: Optional[int] = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        try:
            meta_model = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:
            raise ModelError(f"cannot read {self.path} as an ONNX model ({type(exc).__name__})") from None
        self.metadata = {p.key: p.value for p in meta_model.metadata_props}
        if META_PREFIX + "method" not in self.metadata:
            raise ModelError(f"{self.path} is not an onnx-gig model; run 'onnx-gig convert {self.path}' first")
        self.method = self.metadata[META_PREFIX + "method"]
        self.input_name = self.metadata[META_PREFIX + "input"]
        self.model_outputs: list[str] = json.loads(self.metadata.get(META_PREFIX + "model_outputs", "[]"))
        nc = self.metadata.get(META_PREFIX + "num_classes", "")
        self.num_classes: Optional[int] = int(nc) if nc else None
        self.bytes_per_step = max(1, int(self.metadata.get(META_PREFIX + "bytes_per_step", "0") or 0))
        self.max_memory = parse_memory(max_memory) or default_max_memory()
        self.session = make_session(self.path, device, threads)
        self.provider = self.session.get_providers()[0]
        inp = {i.name: i for i in self.session.get_inputs()}
        if self.input_name not in inp:
            raise ModelError(f"{self.path}: input '{self.input_name}' named in the metadata is missing")
        self.input_shape = list(inp[self.input_name].shape)
        self._output_names = [o.name for o in self.session.get_outputs()]

    # -- metadata helpers ----------------------------------------------------------
    @property
    def labels(self) -> Optional[list[str]]:
        raw = self.metadata.get(META_PREFIX + "labels")
        return json.loads(raw) if raw else None

    @property
    def preprocess_json(self) -> Optional[str]:
        return self.metadata.get(META_PREFIX + "preprocess")

    def steps_per_chunk(self, n_images: int, n_steps: int, internal_batch_size: Optional[int] = None) -> int:
        """How many steps of ``n_images`` images fit in one run under the memory budget."""
        rows = internal_batch_size or max(1, self.max_memory // self.bytes_per_step)
        return int(max(1, min(n_steps, rows // max(1, n_images))))

    # -- running ------------------------------------------------------------------
    def _check_inputs(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs)
        if x.dtype.kind not in "fiu":
            raise InputError(f"inputs must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if x.ndim == len(self.input_shape) - 1:
            x = x[None]
        if x.ndim != len(self.input_shape):
            raise InputError(f"inputs have shape {list(x.shape)}; the model expects {self.input_shape}")
        for got, want in zip(x.shape[1:], self.input_shape[1:]):
            if isinstance(want, int) and got != want:
                raise InputError(f"inputs have shape {list(x.shape)}; the model expects {self.input_shape}")
        if not np.isfinite(x).all():
            raise InputError("inputs contain NaN or infinity")
        return x

    def _targets(self, target: Any, n: int) -> np.ndarray:
        if target is None:
            return np.asarray([-1], np.int64)
        t = np.atleast_1d(np.asarray(target))
        if t.dtype.kind not in "iu" or t.ndim != 1 or t.size not in (1, n):
            raise InputError(f"target must be one class index or one per image, got {target!r}")
        if self.num_classes is not None and ((t < 0) | (t >= self.num_classes)).any():
            raise InputError(f"target {target!r} is out of range: the model has {self.num_classes} classes (0..{self.num_classes - 1})")
        return t.astype(np.int64)

    def _baselines(self, baselines: Any, x: np.ndarray) -> np.ndarray:
        if baselines is None:
            return np.zeros([1] * x.ndim, np.float32)
        if np.isscalar(baselines):
            return np.full([1] * x.ndim, baselines, np.float32)
        b = np.asarray(baselines, np.float32)
        if b.ndim == x.ndim - 1:
            b = b[None]
        try:
            np.broadcast_shapes(b.shape, x.shape)
            if np.broadcast_shapes(b.shape, x.shape) != x.shape:
                raise ValueError
        except ValueError:
            raise InputError(f"baseline shape {list(b.shape)} does not fit inputs of shape {list(x.shape)}") from None
        if not np.isfinite(b).all():
            raise InputError("baseline contains NaN or infinity")
        return b

    def explain(self, inputs: np.ndarray, baselines: Any = None, target: Any = None, n_steps: int = DEFAULT_STEPS,
                method: str = DEFAULT_RULE, internal_batch_size: Optional[int] = None,
                progress: bool = False) -> Explanation:
        """Attributions of ``inputs`` (a batch, or one tensor without the batch dim) with everything around them."""
        x = self._check_inputs(inputs)
        b = self._baselines(baselines, x)
        t = self._targets(target, x.shape[0])
        alphas, weights = schedule(n_steps, method)
        n = x.shape[0]
        per = self.steps_per_chunk(1, n_steps, internal_batch_size)
        group = max(1, min(n, (internal_batch_size or self.max_memory // self.bytes_per_step) // max(1, min(per, n_steps))))
        per = self.steps_per_chunk(group, n_steps, internal_batch_size)
        chunks = [(i, j, s) for i in range(0, n, group) for s in range(0, n_steps, per) for j in [min(n, i + group)]]
        bar = _progress(len(chunks), progress, f"{self.method} {n_steps} steps")
        attr = np.zeros_like(x)
        extra: dict[str, list[np.ndarray]] = {}
        for i, j, s in chunks:
            feed = {
                self.input_name: x[i:j],
                "baseline": b if b.shape[0] == 1 else b[i:j],
                "alphas": alphas[s:s + per],
                "step_weights": weights[s:s + per],
                "target": t if t.size == 1 else t[i:j],
            }
            res = dict(zip(self._output_names, self.session.run(None, feed)))
            attr[i:j] += res["attributions"]
            if s == 0:
                for k, v in res.items():
                    if k != "attributions":
                        extra.setdefault(k, []).append(v)
            bar.update(1)
        bar.close()
        joined = {k: np.concatenate(v, 0) for k, v in extra.items()}
        return Explanation(attributions=attr, target=joined["target_class"], target_score=joined["target_score"],
                           baseline_score=joined["baseline_score"], scores=joined["scores"],
                           outputs={k: v for k, v in joined.items() if k not in OUTPUTS})

    def attribute(self, inputs: np.ndarray, baselines: Any = None, target: Any = None, n_steps: int = DEFAULT_STEPS,
                  method: str = DEFAULT_RULE, internal_batch_size: Optional[int] = None,
                  return_convergence_delta: bool = False) -> Any:
        """Captum-style: the attributions, and the convergence delta when asked."""
        ex = self.explain(inputs, baselines, target, n_steps, method, internal_batch_size)
        return (ex.attributions, ex.convergence_delta) if return_convergence_delta else ex.attributions


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled or total <= 1, desc=desc, unit="chunk", leave=False)
