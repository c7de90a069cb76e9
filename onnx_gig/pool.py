"""Several onnxruntime sessions side by side in one process, for folder runs on CPU.

onnxruntime's intra-op threads scale sub-linearly on the small per-step tensors of a CNN, so N sessions
with cores / N threads each explain more images per second than one session with every core: on a 2-core
CPU two 1-thread sessions attributed MobileNetV2 images 15-25 % faster than one 2-thread session, and a
whole folder run with its figures went from 0.62 to 0.57 s per image (Ray actors: docs/scaling.md).
Images are read in the calling thread (PIL and the warning filter are shared); each session runs one
batch at a time in a worker thread (onnxruntime releases the GIL), so at most one batch per session is
in memory, and results come back in input order.
"""
from __future__ import annotations

import math
import os
import queue
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator, Optional

from .runtime import CUDA, GigModel, cuda_usable, default_max_memory


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_workers(device: str, threads: Optional[int], workers: Optional[int]) -> tuple[int, Optional[int]]:
    """(sessions, threads each): one session on CUDA; on CPU about sqrt(cores) sessions sharing the cores."""
    if device == "cuda" or (device == "auto" and cuda_usable()):
        return (workers or 1), threads
    cores = usable_cores()
    if workers is None:
        workers = max(1, cores // threads) if threads else max(1, math.ceil(math.sqrt(cores)))
    return workers, (threads or max(1, cores // workers))


def open_sessions(model, device: str, budget: Optional[int], threads: Optional[int],
                  workers: Optional[int]) -> list[GigModel]:
    """The sessions of a folder run; a given GigModel is used as it is (alone, unless ``workers`` asks for more).

    Sessions added to a given GigModel run where it runs (not wherever ``device`` would pick) and, on CPU,
    share the cores out unless ``threads`` says otherwise (onnxruntime's default would give each all cores).
    """
    if isinstance(model, GigModel):
        extra = max(0, (workers or 1) - 1)
        on_cuda = model.provider == CUDA
        each = threads or (None if on_cuda else max(1, usable_cores() // (extra + 1)))
        return [model] + [GigModel(model.path, device="cuda" if on_cuda else "cpu", max_memory=model.max_memory,
                                   threads=each) for _ in range(extra)]
    n, each = plan_workers(device, threads, workers)
    share = (budget or default_max_memory()) // n  # the budget covers the process: each session gets its share
    gms = [GigModel(model, device=device, max_memory=share, threads=each) for _ in range(n)]
    # each session measured the whole process as resident (the last one: every session's weights); counted
    # once per session, n sessions left (budget - n x resident) / n each for activations, not (budget - resident) / n
    for gm in gms:
        gm.share_resident(gms[-1].resident_bytes // n)
    return gms


def run_batches(gms: list[GigModel], batches: Iterable[tuple[int, list[tuple[int, str]]]],
                options) -> Iterator[list]:
    """Each batch's results, in batch order: read here, attributed on whichever session is free."""
    from .batch import attribute_items, load_items

    if len(gms) <= 1:
        for n, items in batches:
            results, loaded = load_items(gms[0], items, n)
            attribute_items(gms[0], loaded, options)
            yield results
        return
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for gm in gms:
        idle.put(gm)

    def attribute(loaded) -> None:
        gm = idle.get()
        try:
            attribute_items(gm, loaded, options)
        finally:
            idle.put(gm)

    pool = ThreadPoolExecutor(len(gms), thread_name_prefix="onnx-gig-session")
    pending: deque[tuple[list, Future]] = deque()
    try:
        for n, items in batches:
            results, loaded = load_items(gms[0], items, n)
            pending.append((results, pool.submit(attribute, loaded)))
            if len(pending) >= len(gms):
                results, done = pending.popleft()
                done.result()
                yield results
        while pending:
            results, done = pending.popleft()
            done.result()
            yield results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
