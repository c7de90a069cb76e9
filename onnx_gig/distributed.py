"""The same jobs on Ray: ``explain`` and ``eval`` over a Ray Data dataset, one onnxruntime session per actor.

paths -> ``ray.data.from_items`` ({"index", "path"} rows) -> ``map_batches(GigActor, ActorPoolStrategy)``:
each actor makes ONE ``GigModel`` and runs :func:`onnx_gig.batch.explain_arrays` on its batches, drawing
the figures itself (PNG bytes), so the driver only writes files -> the driver streams the results into
:class:`onnx_gig.writer.ResultWriter`, which writes exactly what the one-process path writes.

Actors read the images (and the model) by path, so on a cluster every path must be visible to every
worker (shared storage: NFS, a PersistentVolume, a baked-in image); only paths, never pixels, pass
through the driver. Ray Data restarts a killed actor and retries its tasks (``max_restarts`` and
``max_task_retries`` default to -1 for actor pools); the writer keeps one result per index, so every
input is written exactly once.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .errors import GigError, InputError, first_line, whole_number
from .heatmap import png_bytes
from .journal import recorded_outputs
from .writer import OUTPUTS, ResultWriter, draw_figure

RAY_MISSING = "--ray needs Ray: pip install 'onnx-gig[ray]'"
CPU_THREADS_PER_ACTOR = 4  # default split of a machine's cores on CPU: one actor per 4 cores


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line GigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise GigError(RAY_MISSING) from None
    return ray


CONNECT_TIMEOUT_S = 10  # a host:port that answers no TCP connect within this is unreachable


def check_reachable(address: str) -> None:
    """A one-line GigError unless the ``host:port`` of a cluster address resolves and accepts a TCP connection.

    Ray retries an unreachable GCS for many minutes; this fails within ``CONNECT_TIMEOUT_S`` instead.
    "auto" and ``ray://`` client addresses, and any address not of the host:port form, are left to Ray.
    """
    import socket

    host, sep, port = address.strip().rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [IPv6]:port
    if not 0 < int(port) < 65536:
        raise GigError(f"cannot connect to the Ray cluster at {address} (port {port} is not between 1 and 65535)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except socket.gaierror:
        why = f"host {host!r} not found"
    except ConnectionRefusedError:
        why = f"nothing accepts connections on port {port} of {host}"
    except (socket.timeout, TimeoutError):
        why = f"no answer from {host} port {port} within {CONNECT_TIMEOUT_S} s"
    except (OSError, ValueError) as exc:  # an unreachable network, a host name with a NUL...
        why = " ".join(str(exc).split()) or type(exc).__name__
    else:
        return
    raise GigError(f"cannot connect to the Ray cluster at {address} ({why})")


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` (``None``/"local": start a local Ray); disconnect after.

    A Ray already initialised in this process (a test, a notebook) is used as it is and left running.
    The local Ray is quiet: no dashboard, no worker logs on the driver, no Ray Data progress bars; its
    workers run at normal priority (Ray nices them to 15 by default), as the one-process path does.
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        kw = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            if address in (None, "", "local"):
                ray.init(address="local", num_cpus=num_cpus, _system_config={"worker_niceness": 0}, **kw)
            else:
                check_reachable(address)
                ray.init(address=address, **kw)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            ray.shutdown()  # whatever a failed start left running (a no-op when nothing started)
            first = first_line(exc)
            raise GigError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    log, ctx = logging.getLogger("ray.data"), ray.data.DataContext.get_current()
    saved = log.level, ctx.enable_progress_bars
    log.setLevel(logging.ERROR)  # not "Starting execution of Dataset ..." per run
    ctx.enable_progress_bars = False  # the driver draws one bar over images
    try:
        yield ray
    finally:
        log.setLevel(saved[0])
        ctx.enable_progress_bars = saved[1]
        if started:
            ray.shutdown()


@dataclass
class ActorPlan:
    """How many actors, each with how many onnxruntime threads (its ``num_cpus``) and GPUs."""

    actors: int
    threads: int
    gpus: int  # per actor: 1 with CUDA, else 0
    device: str  # what each actor's session asks for


def plan_actors(ray: Any, actors: Optional[int], threads: Optional[int], device: str) -> ActorPlan:
    """One actor per GPU when CUDA is used, else one per 4 cores; threads per actor = cores / actors.

    Each actor reserves ``threads`` CPUs, so Ray never runs more onnxruntime threads than cores.
    """
    for name, v in (("--actors", actors), ("--threads", threads)):
        if v is not None:
            whole_number(v, name)
    res = ray.cluster_resources()
    cpus, gpus = max(1, int(res.get("CPU", 1))), int(res.get("GPU", 0))
    node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [cpus])
    use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise InputError("--device cuda: the Ray cluster has no GPUs; use --device cpu or auto")
    n = actors or (gpus if use_gpu else max(1, cpus // CPU_THREADS_PER_ACTOR))
    t = threads or max(1, min(node_cpus, cpus // n))
    return ActorPlan(n, min(t, max(1, node_cpus)), 1 if use_gpu else 0, "auto" if use_gpu else "cpu")


def _actor_map(ray: Any, actor: type, kwargs: dict, rows: list[dict], plan: ActorPlan, batch: int) -> Any:
    """``rows`` through ``actor`` on an actor pool, in blocks sized so that every actor gets work.

    Batches shrink for small jobs (two per actor at least); blocks hold at most 64 rows (what a retry after
    a lost actor redoes) and come at least 4 per actor when there are rows enough.
    """
    n = len(rows)
    batch = max(1, min(batch, -(-n // (2 * plan.actors))))
    per = max(batch, min(64, -(-n // (4 * plan.actors))))
    # a dataset keeps the context it was made in: with a 1-byte target block size every batch's output is a
    # block of its own, so results (and the progress bar) stream per batch rather than per block of rows
    ctx = ray.data.DataContext.get_current()
    saved, ctx.target_max_block_size = ctx.target_max_block_size, 1
    try:
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-n // per)))
    finally:
        ctx.target_max_block_size = saved
    return ds.map_batches(actor, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=plan.actors),
                          batch_size=batch, num_cpus=plan.threads, num_gpus=plan.gpus or None, batch_format="numpy")


# --------------------------------------------------------------------------- explain


class GigActor:
    """One Ray actor: one GigModel (one onnxruntime session), explaining and drawing batches of images."""

    def __init__(self, model: str, options: Any, device: str, max_memory: Any, threads: int, npy: bool,
                 figures: bool) -> None:
        from .runtime import GigModel

        self.gm, self.error = None, None
        try:  # e.g. a model path this node cannot see: every image says so instead of an actor crash loop
            self.gm = GigModel(model, device=device, max_memory=max_memory, threads=threads)
        except GigError as exc:
            self.error = _on_this_node(exc)
        self.options, self.npy, self.figures = options, npy, figures

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .batch import ImageResult, explain_arrays

        items = list(zip(batch["index"].tolist(), batch["path"].tolist()))
        results = (explain_arrays(self.gm, items, self.options) if self.gm is not None
                   else [ImageResult(index=i, path=p, error=self.error) for i, p in items])
        pngs = []
        for r in results:
            png = b""
            if self.figures and r.ok and r.attributions is not None:
                png = png_bytes(draw_figure(r, self.options))  # the one-process writer's picture
            pngs.append(png)
        out = {"index": np.asarray([r.index for r in results], np.int64),
               "meta": np.asarray([_meta(r) for r in results], dtype=object),
               "figure": np.asarray(pngs, dtype=object), "pid": np.full(len(results), os.getpid(), np.int64)}
        if self.npy:
            shape = next((r.attributions.shape for r in results if r.attributions is not None), (0,))
            out["attributions"] = np.stack([r.attributions if r.attributions is not None
                                            else np.zeros(shape, np.float32) for r in results])
        return out


_FIELDS = ("path", "error", "target", "label", "probability", "target_score", "baseline_score", "top",
           "convergence_delta", "method", "layout")


def _meta(r: Any) -> str:
    """The result's small fields as JSON (one string column; Arrow needs no schema for it)."""
    import json

    return json.dumps({k: getattr(r, k) for k in _FIELDS})


def _on_this_node(exc: BaseException) -> str:
    """An actor's start-up error as one line naming its node (a path one worker cannot see, say)."""
    import socket

    return f"on Ray node {socket.gethostname()}: {' '.join(str(exc).split())}"


class _PNG(bytes):
    """An already encoded PNG that ``save_png`` can write like a PIL image."""

    def save(self, fp: Any, format: str = "PNG", **_: Any) -> None:  # noqa: A002 - PIL's name; encoded already
        Path(fp).write_bytes(self)


class RayResultWriter(ResultWriter):
    """A ResultWriter whose figures were drawn by the actors: it writes their PNG bytes (``png``) as they are."""

    png: bytes = b""

    def figure(self, result: Any) -> Any:
        return _PNG(self.png) if self.png else super().figure(result)


@dataclass
class RaySummary:
    """What a Ray run did: inputs, results written, failures, the actor plan, time."""

    inputs: int
    explained: int  # the earlier run's included (``resumed``)
    failed: int
    duplicates: int  # results Ray delivered twice (a retried task) and the writer kept once
    actors: int
    threads: int
    gpus_per_actor: int
    seconds: float  # wall time of the whole call
    startup_seconds: float  # until the first result: Ray start or connection, actors and their sessions
    failures: list
    tables: list
    workers: dict  # actor process id -> images it handled, failed ones included (a restarted actor is a new process)
    resumed: int = 0  # images an earlier run had explained (--resume): not run again

    @property
    def images_per_second(self) -> float:
        """Throughput once the actors run: images after the first over the time after it."""
        span = self.seconds - self.startup_seconds
        ran = self.explained - self.resumed  # the earlier run's images took none of this run's time
        return (ran - 1) / span if ran > 1 and span > 0 else 0.0


def explain_ray(model: str | os.PathLike, paths: Sequence[str | os.PathLike] | Any, options: Any = None,
                out_dir: str | os.PathLike = ".", *, address: Optional[str] = None, actors: Optional[int] = None,
                batch_images: int = 4, device: str = "auto", max_memory: int | str | None = None,
                threads: Optional[int] = None, npy: bool = False, figures: bool = True, overwrite: bool = False,
                resume: bool = False, progress: bool = False, protect: Sequence[str | os.PathLike] = (),
                report: Optional[Callable[[Any], None]] = None) -> RaySummary:
    """Explain files, folders and globs on Ray actors and write ``out_dir`` as ``explain_many`` + ResultWriter do.

    ``address``: ``None`` or "local" starts a local Ray; else a cluster address ("auto", "ray://host:10001");
    a Ray already initialised in this process is used as it is.
    ``batch_images`` images go to an actor per task. Paths (model and images) must be readable by every worker.
    ``report`` is called with each result as it is written (the CLI names failures with it); ``protect``
    lists files no output may overwrite. ``resume``: finish an earlier run into ``out_dir`` (ResultWriter).
    """
    from tqdm import tqdm

    from .api import _peek_gig_model
    from .runtime import check_budget, check_threads
    from .batch import ExplainOptions, ImageResult, Inputs, collect_inputs, with_classes

    import_ray()  # before any work: a missing extra is one line
    options = options or ExplainOptions()
    options.check()
    whole_number(batch_images, "batch_images")
    files, missing = paths if isinstance(paths, Inputs) else collect_inputs(paths, exclude=recorded_outputs(out_dir))
    if not files:
        raise InputError("no images found: " + "; ".join(f"{n}: {why}" for n, why in missing))
    options = with_classes(options, model)
    if options.targets is not None:
        options.targets.check_covers(files)
    budget = check_budget(max_memory)
    check_threads(threads)
    model_path = Path(model).resolve()
    meta, _ = _peek_gig_model(model_path)
    nc = meta.get("onnx_gig.num_classes", "")
    options.check(int(nc) if nc else None)
    names = [str(f) for f in files] + [n for n, _ in missing]
    writer = RayResultWriter(out_dir, figures=figures, npy=npy, overwrite=overwrite, options=options,
                             inputs=names, protect=[model_path, *protect], model=model_path, resume=resume)
    _, todo = writer.pending(Inputs(files, missing))
    t0 = time.perf_counter()
    seen: set[int] = set()
    workers: dict[int, int] = {}
    duplicates = 0
    first: Optional[float] = None
    if not todo:  # everything was done by the earlier run: no cluster to start, only the tables to write
        with writer:
            for k, (arg, reason) in enumerate(missing):
                r = ImageResult(index=len(files) + k, path=arg, error=reason)
                writer.write(r)
                if report is not None:
                    report(r)
        return RaySummary(len(names), writer.explained, len(writer.failures), 0, 0, 0, 0, time.perf_counter() - t0,
                          0.0, list(writer.failures), [Path(out_dir) / n for n in OUTPUTS],
                          {}, writer.resumed)
    with ray_session(address) as ray, writer:
        plan = plan_actors(ray, actors, threads, device)
        # absolute for workers elsewhere, links kept: a class folder (--targets) may be a link into a pool
        rows = [{"index": i, "path": os.path.abspath(files[i])} for i in todo]
        out = _actor_map(ray, GigActor, dict(model=str(model_path), options=options, device=plan.device,
                                             max_memory=budget, threads=plan.threads, npy=npy, figures=figures),
                         rows, plan, batch_images)
        bar = tqdm(total=len(todo) + len(missing), disable=not progress, unit="image",
                   desc=f"explain on {plan.actors} actors")
        with bar:
            for b in out.iter_batches(batch_size=None, batch_format="numpy"):
                for k, index in enumerate(b["index"].tolist()):
                    if index in seen:
                        duplicates += 1
                        continue
                    seen.add(index)
                    first = first if first is not None else time.perf_counter() - t0
                    pid = int(b["pid"][k])
                    workers[pid] = workers.get(pid, 0) + 1
                    r = ImageResult(index=index, **{**_fields(b["meta"][k]), "path": names[index]})
                    if r.ok:
                        r.attributions = b["attributions"][k] if npy else np.zeros(0, np.float32)
                    writer.png = bytes(b["figure"][k])
                    writer.write(r)
                    bar.update(1)
                    if report is not None:
                        report(r)
            for k, (arg, reason) in enumerate(missing):
                r = ImageResult(index=len(files) + k, path=arg, error=reason)
                writer.write(r)
                bar.update(1)
                if report is not None:
                    report(r)
        if len(seen) != len(todo):
            raise GigError(f"Ray returned {len(seen)} of {len(todo)} images; nothing was tabled (--resume goes on "
                           "from the figures written)")
    return RaySummary(len(names), writer.explained, len(writer.failures), duplicates, plan.actors, plan.threads,
                      plan.gpus, time.perf_counter() - t0, first or 0.0, list(writer.failures),
                      [Path(out_dir) / n for n in OUTPUTS], workers, writer.resumed)


def _fields(meta: str) -> dict:
    import json

    d = json.loads(meta)
    d["top"] = [tuple(t) for t in d["top"]]
    return d


# --------------------------------------------------------------------------- eval


class EvalActor:
    """One Ray actor holding an EvalWorker (the methods' sessions and the forward pass), scoring chunks."""

    def __init__(self, graphs: dict, methods: list, kwargs: dict) -> None:
        from .evaluate import EvalWorker

        self.worker, self.error = None, None
        try:
            self.worker = EvalWorker(graphs, methods, **kwargs)
        except GigError as exc:
            self.error = _on_this_node(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pickle

        from .evaluate import EvalPart

        items = list(zip(batch["index"].tolist(), batch["path"].tolist()))
        none = np.zeros(0, np.int64)
        part = (self.worker.run(items) if self.worker is not None else
                EvalPart(indices=none, targets=none, probs=np.zeros(0), curves={}, x={}, seconds={}, maps={},
                         errors=[(i, p, self.error) for i, p in items]))
        # one row per chunk: the part pickled (curves of every method, a few KB per image)
        return {"part": np.asarray([pickle.dumps(part)], dtype=object)}


def evaluate_ray(graphs: dict[str, Path], methods: list[str], items: list[tuple[int, str]], kwargs: dict, *,
                 address: Optional[str] = None, actors: Optional[int] = None, chunk: int = 8,
                 progress: bool = False, on_part: Optional[Callable[[Any], None]] = None) -> list:
    """``evaluate``'s per-image work on Ray actors: chunks of ``chunk`` images, one EvalWorker per actor.

    Returns the EvalParts in arrival order (``evaluate.assemble`` orders them); a chunk Ray delivers twice
    after a retry is kept once. ``on_part`` sees each chunk as it arrives (``evaluate`` saves it to resume).
    """
    import pickle

    from tqdm import tqdm

    graphs = {g: str(Path(p).resolve()) for g, p in graphs.items()}
    rows = [{"index": i, "path": os.path.abspath(p)} for i, p in items]  # links kept, as explain_ray's
    given = dict(items)
    parts: dict[int, Any] = {}
    with ray_session(address) as ray:
        plan = plan_actors(ray, actors, kwargs.get("threads"), kwargs.get("device", "auto"))
        kw = {**kwargs, "threads": plan.threads, "device": plan.device}
        out = _actor_map(ray, EvalActor, dict(graphs=graphs, methods=list(methods), kwargs=kw), rows, plan, chunk)
        with tqdm(total=len(rows), disable=not progress, unit="image", desc=f"eval on {plan.actors} actors") as bar:
            for b in out.iter_batches(batch_size=None, batch_format="numpy"):
                for blob in b["part"]:
                    part = pickle.loads(bytes(blob))
                    part.errors = [(i, given[i], why) for i, _, why in part.errors]  # the paths as given
                    key = min([*part.indices.tolist(), *(e[0] for e in part.errors)])
                    if key not in parts:
                        parts[key] = part
                        bar.update(len(part.indices) + len(part.errors))
                        if on_part is not None:
                            on_part(part)
    got = sorted([*(i for p in parts.values() for i in p.indices.tolist()),
                  *(e[0] for p in parts.values() for e in p.errors)])
    if got != sorted(given):  # every image exactly once, not just as many results as images
        raise GigError(f"Ray returned {len(set(got))} of {len(rows)} images"
                       + (f" ({len(got) - len(set(got))} twice)" if len(got) != len(set(got)) else ""))
    return list(parts.values())


__all__ = ["ActorPlan", "EvalActor", "GigActor", "RayResultWriter", "RaySummary", "evaluate_ray", "explain_ray",
           "import_ray", "plan_actors", "ray_session"]
