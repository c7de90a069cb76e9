"""Run a converted (IG) model with onnxruntime: provider choice, memory-bounded chunks, results.

The CUDA provider is used when it really loads (checked with ``get_providers()`` after the
session is made), else the CPU. Integration steps run in chunks whose partial sums add up,
sized so that one run stays under a memory budget.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import onnxruntime as ort

from .errors import InputError, ModelError, first_line, whole_number
from .contract import META_PREFIX, OUTPUTS, pixel_dtype, probability_kind
from .modelhead import read_head
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


# what a run allocates beyond the activations bytes_per_step counts (runtime buffers, the first run's
# kernels' workspace), kept free on top of what is resident when the session exists
RESIDENT_MARGIN = 128 << 20

# On CPU one run holds at most this many bytes of activations (rows x bytes_per_step), whatever the budget:
# the first run of a session page-faults every byte it allocates, while per-row speed is flat from about
# 8 rows up. MobileNetV2 GNL-IG, 1-thread CPU seconds, first call / warm: 50 rows (1.6 GB RSS) 1.66 / 1.12;
# 13 rows 1.13-1.53 / 0.93-1.0; 8 rows (0.38 GB RSS) 0.97 / 0.9-1.0.
CPU_RUN_BYTES = 512 << 20

# image-sized float tensors per row that a blocked model's run holds outside its blocks (blocks.py): the path
# rows, their padded copy, the block slices, the blocks' gradients and their concatenation
OUTSIDE_BLOCK_COPIES = 6


def _resident_bytes() -> int:
    """Current resident set size of this process (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


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


def check_threads(threads: object) -> None:
    """``--threads``: None (all cores) or a positive whole number (0 would silently mean all cores)."""
    if threads is not None:
        whole_number(threads, "--threads")


def check_budget(max_memory: int | str | None) -> Optional[int]:
    """``--max-memory`` in bytes (None: the default budget); refuses zero or a negative size in one line."""
    budget = parse_memory(max_memory)
    if budget is not None and budget <= 0:
        raise InputError(f"--max-memory must be a positive size such as 2G or 512M, got {max_memory!r}")
    return budget


def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (they derive from Exception, not RuntimeError)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return ()
    names = ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph", "NotImplemented", "EPFail",
             "EngineError", "NoSuchFile", "NoModel", "InvalidProtobuf", "ModelLoaded", "NotFound")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))


# a run that fails raises, and the caller words the error in one line: onnxruntime's own error log of it would
# print a second, multi-line, coloured copy first
QUIET_RUN = ort.RunOptions()
QUIET_RUN.log_severity_level = 4


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
    # worker threads sleep instead of spinning between kernels: the same speed on an idle machine, and
    # far less lost to a busy one (MobileNetV2 GNL-IG on 2 cores with one taken by another job: 2.7 s
    # spinning, 2.0 s not)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = int(threads)
    return so


def _describe(so: ort.SessionOptions) -> dict[str, Any]:
    """What in ``so`` can change the optimised graph or how it runs (the session cache's key)."""
    return {"level": int(so.graph_optimization_level), "mem_pattern": so.enable_mem_pattern,
            "arena": so.enable_cpu_mem_arena, "threads": so.intra_op_num_threads,
            "inter": so.inter_op_num_threads, "mode": int(so.execution_mode),
            "spinning": so.get_session_config_entry("session.intra_op.allow_spinning")}


def make_session(model: str | os.PathLike | bytes, device: str = "auto",
                 threads: Optional[int] = None, cache: bool = False) -> ort.InferenceSession:
    """An InferenceSession on CUDA when asked/available and it loads, else on CPU.

    ``cache`` keeps a CPU session's optimised graph for the next process (sessioncache.py): for models
    whose graph optimisation is a large part of the start (row blocks).

    A CUDA provider that was asked for (``device="cuda"``, or ``auto`` with an NVIDIA driver present)
    but does not load is reported on stderr in one line, with onnxruntime's reason, and the session
    runs on CPU.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device '{device}'; choose auto, cpu or cuda")
    want_cuda = device == "cuda" or (device == "auto" and cuda_usable())
    providers: list[Any] = [(CUDA, cuda_provider_options()), CPU] if want_cuda else [CPU]
    src = model if isinstance(model, bytes) else str(model)
    text: Any = lambda: ""  # noqa: E731
    try:
        with _capture_stderr(want_cuda) as text:
            if cache and not want_cuda and not isinstance(model, bytes):
                from . import sessioncache

                options = lambda: session_options(threads)  # noqa: E731 (fresh options per try)
                sess = sessioncache.session(Path(src), options, providers, _describe(options()))
            else:
                sess = ort.InferenceSession(src, sess_options=session_options(threads), providers=providers)
    except Exception as exc:
        sys.stderr.write(text())
        first = first_line(exc)
        raise ModelError(f"onnxruntime cannot load the model: {first}") from None
    captured = text()
    if want_cuda and sess.get_providers()[0] != CUDA:
        print(f"onnx-gig: the CUDA provider did not load ({_cuda_failure_reason(captured)}); running on CPU",
              file=sys.stderr)
        captured = "\n".join(l for l in captured.splitlines() if not _is_provider_noise(l))
    if captured.strip():
        sys.stderr.write(captured if captured.endswith("\n") else captured + "\n")
    return sess


def cuda_provider_options() -> dict[str, str]:
    """CUDA provider options: device 0, exhaustive cuDNN search (chunks repeat one shape), copies in one stream."""
    return {"device_id": os.environ.get("ONNX_GIG_CUDA_DEVICE", "0"), "cudnn_conv_algo_search": "EXHAUSTIVE",
            "do_copy_in_default_stream": "1", "arena_extend_strategy": "kSameAsRequested"}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _is_provider_noise(line: str) -> bool:
    return any(k in line for k in ("provider_bridge_ort", "CreateExecutionProviderFactoryInstance",
                                   "libonnxruntime_providers_cuda", "CUDAExecutionProvider")) or not _ANSI.sub("", line).strip()


def _cuda_failure_reason(log: str) -> str:
    """A short reason from onnxruntime's own messages (the library that failed, or its requirements line)."""
    text = _ANSI.sub("", log)
    m = re.search(r"with error: ([^\n]+)", text)
    if m:
        return m.group(1).strip()[:200]
    m = re.search(r"(Require [^\n.]+)", text)
    if m:
        return m.group(1).strip()[:200]
    return "no CUDA device or libraries usable; onnxruntime gave no reason"


@contextmanager
def _capture_stderr(enabled: bool) -> Iterator:
    """Collect what native code writes to fd 2 (onnxruntime's provider errors) while the block runs."""
    if not enabled:
        yield lambda: ""
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lambda: ""
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        out: list[str] = []
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: "".join(out)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


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
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"a model path is a str or os.PathLike, got {type(path).__name__}")
        check_threads(threads)
        budget = check_budget(max_memory)
        self.path = Path(path)
        self.metadata = read_head(self.path, graph=False).metadata  # no onnx import, no weights parsed
        if META_PREFIX + "method" not in self.metadata:
            raise ModelError(f"{self.path} is not an onnx-gig model; run 'onnx-gig convert {self.path}' first")
        self.method = self.metadata[META_PREFIX + "method"]
        self.input_name = self.metadata[META_PREFIX + "input"]
        self.model_outputs: list[str] = json.loads(self.metadata.get(META_PREFIX + "model_outputs", "[]"))
        self.probability = probability_kind(self.metadata)  # how scores become probabilities (softmax, sigmoid)
        nc = self.metadata.get(META_PREFIX + "num_classes", "")
        self.num_classes: Optional[int] = int(nc) if nc else None
        self.bytes_per_step = max(1, int(self.metadata.get(META_PREFIX + "bytes_per_step", "0") or 0))
        # a dynamic-size model's estimate holds for an image of this many elements (integrate.NOMINAL_SIZE)
        self.nominal_pixels = int(self.metadata.get(META_PREFIX + "bytes_per_step_pixels", "0") or 0)
        # the graph runs a run's rows as this many blocks one after another (blocks.py): a run of R rows
        # holds about ceil(R / row_blocks) rows' activations at a time
        self.row_blocks = max(1, int(self.metadata.get(META_PREFIX + "row_blocks", "1") or 1))
        self.max_memory = budget or default_max_memory()
        self.session = make_session(self.path, device, threads, cache=self.row_blocks > 1)
        self.provider = self.session.get_providers()[0]
        self._device_id = int(cuda_provider_options()["device_id"]) if self.provider == CUDA else 0
        # IO binding on CUDA: inputs uploaded once, attributions accumulated on the device
        self.io_binding = self.provider == CUDA
        self._adder: Optional[ort.InferenceSession] = None
        self._resident_base = _resident_bytes() + RESIDENT_MARGIN if self.provider == CPU else 0
        inp = {i.name: i for i in self.session.get_inputs()}
        self._input_names = set(inp)
        if self.input_name not in inp:
            raise ModelError(f"{self.path}: input '{self.input_name}' named in the metadata is missing")
        self.input_shape = list(inp[self.input_name].shape)
        self._output_names = [o.name for o in self.session.get_outputs()]

    @property
    def dynamic_size(self) -> bool:
        """Whether the image input has a dynamic size (a dim other than the batch not fixed in the graph)."""
        return any(not isinstance(d, int) for d in list(self.input_shape)[1:])

    # -- metadata helpers ----------------------------------------------------------
    @property
    def pixel_dtype(self) -> Optional[str]:
        """The integer dtype of the model's pixel input ('uint8') when its graph casts and normalises pixels."""
        return pixel_dtype(self.metadata)

    @property
    def preprocess(self) -> Any:
        """The ``imageio.Preprocess`` the model carries (a guess from its input shape when it carries none)."""
        from .imageio import preprocess_from

        return preprocess_from(self.metadata, self.input_shape)

    @property
    def labels(self) -> Optional[list[str]]:
        raw = self.metadata.get(META_PREFIX + "labels")
        return json.loads(raw) if raw else None

    @property
    def preprocess_json(self) -> Optional[str]:
        return self.metadata.get(META_PREFIX + "preprocess")

    @property
    def resident_bytes(self) -> int:
        """What the budget counts as taken before any run: this process's resident set when the session was
        made, plus a margin (0 on CUDA, whose budget is the device's)."""
        return self._resident_base

    def share_resident(self, resident: int) -> None:
        """Count ``resident`` bytes instead (sessions side by side split what the process holds: pool.py)."""
        self._resident_base = max(0, int(resident))

    def step_bytes(self, pixels: Optional[int] = None) -> int:
        """``bytes_per_step`` for one image of ``pixels`` elements: activations grow with the image's area,
        so a dynamic-size model's estimate (made at a nominal size) is scaled by the ratio."""
        if not self.nominal_pixels or not pixels:
            return self.bytes_per_step
        return max(1, int(self.bytes_per_step * (int(pixels) / self.nominal_pixels)))

    def rows_per_run(self, pixels: Optional[int] = None) -> int:
        """Batch rows (images x steps) one run may hold under the memory budget.

        The budget covers the whole process: what is resident once the session exists (weights, their
        reordered copies, the runtime) is measured and taken off, and the rest is divided by the
        model's ``bytes_per_step`` (activation memory of one row, calibrated against peak RSS). On CPU a
        run holds at most ``CPU_RUN_BYTES``: bigger runs are no faster and make the first call slow. A
        blocked model (blocks.py) holds one block's rows of activations at a time, plus a few image-sized
        tensors per row of the whole run (the path rows, their padded copy and slices, the gradients), so
        it takes up to ``row_blocks`` times the rows.
        """
        free = self.max_memory - self._resident_base
        if self.provider == CPU:
            free = min(free, CPU_RUN_BYTES)
        b = self.row_blocks
        if b <= 1:
            return int(max(1, free // self.step_bytes(pixels)))
        image = 4 * int(pixels or np.prod([d if isinstance(d, int) else 0 for d in self.input_shape[1:]]) or 0)
        per_row = self.step_bytes(pixels) + b * OUTSIDE_BLOCK_COPIES * image
        return int(max(1, free // per_row) * b)

    def plan(self, n_images: int, n_steps: int, internal_batch_size: Optional[int] = None,
             pixels: Optional[int] = None) -> "ChunkPlan":
        """How ``n_images`` x ``n_steps`` rows split into runs: whole images' steps first, balanced chunks."""
        b = self.row_blocks
        rows = int(internal_batch_size) if internal_batch_size else self.rows_per_run(pixels)
        if internal_batch_size:  # a blocked run holds one block's rows at a time: rounded up to whole blocks,
            rows = b * -(-rows // b)  # the same memory, and no block padded to fill it
        per = max(1, min(n_steps, rows))
        group = max(1, min(n_images, rows // per))
        if per < n_steps and per >= b:  # whole blocks per run, balanced (only the last pads, when B does not
            units, unit_max = -(-n_steps // b), per // b  # divide the steps)
            per = b * -(-units // -(-units // unit_max))
        else:
            per = -(-n_steps // -(-n_steps // per))  # the same number of chunks, sizes balanced
        chunks = [(i, min(n_images, i + group), s, min(n_steps, s + per))
                  for i in range(0, n_images, group) for s in range(0, n_steps, per)]
        return ChunkPlan(group, per, chunks)

    def steps_per_chunk(self, n_images: int, n_steps: int, internal_batch_size: Optional[int] = None) -> int:
        """How many steps of ``n_images`` images fit in one run under the memory budget."""
        rows = internal_batch_size or self.rows_per_run()
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
        if x.shape[0] == 0:
            raise InputError("inputs hold no images (an empty batch)")
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
        if isinstance(baselines, str):
            raise InputError(f"baselines must be a number or an array, got {baselines!r} (named baselines such as "
                             "'blur' are made from the photo: onnx_gig.explain(..., baseline=...) or "
                             "onnx_gig.imageio.make_baseline)")
        b = np.asarray(baselines)
        if b.dtype.kind not in "fiub":
            raise InputError(f"baselines must be a number or an array of numbers, got dtype {b.dtype}")
        with np.errstate(over="ignore"):  # 1e39 becomes inf, refused below in one line
            b = b.astype(np.float32)
        if b.ndim == 0:
            b = b.reshape([1] * x.ndim)
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
        if internal_batch_size is not None:
            whole_number(internal_batch_size, "internal_batch_size")
        alphas, weights = schedule(n_steps, method)
        plan = self.plan(x.shape[0], n_steps, internal_batch_size, pixels=int(np.prod(x.shape[1:])))
        bar = _progress(len(plan.chunks), progress, f"{self.method} {n_steps} steps")
        run = self._run_bound if self.io_binding else self._run_feeds
        attr, extra = run(x, b, t, alphas.astype(np.float32), weights.astype(np.float32), plan, bar)
        bar.close()
        joined = {k: np.concatenate(v, 0) for k, v in extra.items()}
        return Explanation(attributions=attr, target=joined["target_class"], target_score=joined["target_score"],
                           baseline_score=joined["baseline_score"], scores=joined["scores"],
                           outputs={k: v for k, v in joined.items() if k not in OUTPUTS})

    def _feed(self, x, b, t, i: int, j: int) -> dict[str, np.ndarray]:
        return {self.input_name: x[i:j], "baseline": b if b.shape[0] == 1 else b[i:j],
                "target": t if t.size == 1 else t[i:j]}

    def _run_feeds(self, x, b, t, alphas, weights, plan, bar) -> tuple[np.ndarray, dict]:
        """CPU: numpy feeds (onnxruntime reads them in place); partial sums add up on the host."""
        attr = np.zeros_like(x)
        extra: dict[str, list[np.ndarray]] = {}
        for i, j, s, e in plan.chunks:
            feed = {**self._feed(x, b, t, i, j), "alphas": alphas[s:e], "step_weights": weights[s:e]}
            first = s == 0
            names = self._output_names if first else ["attributions"]
            res = dict(zip(names, self.session.run(names, feed, QUIET_RUN)))
            attr[i:j] += res["attributions"]
            if first:
                for k, v in res.items():
                    if k != "attributions":
                        extra.setdefault(k, []).append(v)
            bar.update(1)
        return attr, extra

    def _run_bound(self, x, b, t, alphas, weights, plan, bar) -> tuple[np.ndarray, dict]:
        """IO binding (the CUDA path): each image group's inputs go to the device once, each step chunk
        writes its attributions into a device buffer that a one-node Add session folds into the running
        sum on the device, and only the group's final sum and the first chunk's small outputs come back."""
        dev, dev_id = ("cuda", self._device_id) if self.provider == CUDA else ("cpu", 0)

        def put(a: np.ndarray) -> Any:
            return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), dev, dev_id)

        def empty(shape) -> Any:
            return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, dev, dev_id)

        attr = np.zeros_like(x)
        extra: dict[str, list[np.ndarray]] = {}
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i, j, s, e in plan.chunks:
            groups.setdefault((i, j), []).append((s, e))
        for (i, j), steps in groups.items():
            fixed = {k: put(v) for k, v in self._feed(x, b, t, i, j).items()}
            shape = x[i:j].shape
            part = empty(shape)
            sums = [empty(shape) for _ in range(2)] if len(steps) > 1 else []
            total = part
            for k, (s, e) in enumerate(steps):
                io = self.session.io_binding()
                for name, v in fixed.items():
                    io.bind_ortvalue_input(name, v)
                io.bind_ortvalue_input("alphas", put(alphas[s:e]))
                io.bind_ortvalue_input("step_weights", put(weights[s:e]))
                io.bind_ortvalue_output("attributions", part if k else (sums[0] if sums else part))
                others = [n for n in self._output_names if n != "attributions"] if k == 0 else []
                for name in others:
                    io.bind_output(name, "cpu")
                io.synchronize_inputs()
                self.session.run_with_iobinding(io, QUIET_RUN)
                io.synchronize_outputs()
                if others:
                    for name, v in zip(others, io.get_outputs()[1:]):
                        extra.setdefault(name, []).append(v.numpy())
                if k:  # running sum: sums[(k-1) % 2] + part -> sums[k % 2], on the device
                    total = self._accumulate(sums[(k - 1) % 2], part, sums[k % 2])
                elif sums:
                    total = sums[0]
                bar.update(1)
            attr[i:j] = total.numpy()
        return attr, extra

    def _accumulate(self, a: Any, b: Any, out: Any) -> Any:
        """out = a + b for device-resident OrtValues (a one-node session on the same provider)."""
        if self._adder is None:
            import onnx

            f32 = onnx.TensorProto.FLOAT
            graph = onnx.helper.make_graph(
                [onnx.helper.make_node("Add", ["a", "b"], ["sum"])], "accumulate",
                [onnx.helper.make_tensor_value_info(n, f32, None) for n in ("a", "b")],
                [onnx.helper.make_tensor_value_info("sum", f32, None)])
            m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
            m.ir_version = 8
            providers = [(CUDA, cuda_provider_options()), CPU] if self.provider == CUDA else [CPU]
            self._adder = ort.InferenceSession(m.SerializeToString(), session_options(1), providers=providers)
        io = self._adder.io_binding()
        io.bind_ortvalue_input("a", a)
        io.bind_ortvalue_input("b", b)
        io.bind_ortvalue_output("sum", out)
        self._adder.run_with_iobinding(io)
        return out

    def attribute(self, inputs: np.ndarray, baselines: Any = None, target: Any = None, n_steps: int = DEFAULT_STEPS,
                  method: str = DEFAULT_RULE, internal_batch_size: Optional[int] = None,
                  return_convergence_delta: bool = False) -> Any:
        """Captum-style: the attributions, and the convergence delta when asked. One-input tuples, as Captum
        writes them (``(x,)``, ``baselines=(0.0,)``), are taken as that input."""
        inputs, baselines = (v[0] if isinstance(v, tuple) and len(v) == 1 else v for v in (inputs, baselines))
        ex = self.explain(inputs, baselines, target, n_steps, method, internal_batch_size)
        return (ex.attributions, ex.convergence_delta) if return_convergence_delta else ex.attributions


@dataclass
class ChunkPlan:
    """Runs of one explanation: ``images`` x ``steps`` rows each; chunks are (i, j, s, e) index ranges."""

    images: int
    steps: int
    chunks: list[tuple[int, int, int, int]]

    @property
    def rows(self) -> int:
        return self.images * self.steps


class _NoProgress:
    """The progress bar when none is shown (tqdm's import and its multiprocessing lock cost a cold start ~0.1 s)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled or total <= 1:
        return _NoProgress()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="chunk", leave=False)
