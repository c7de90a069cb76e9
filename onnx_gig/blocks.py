"""Row blocks: the path copy and its backward graph run as B copies, one after another, over slices of the rows.

Why: in one batch of images x steps rows (50 for one image) every early activation is a tensor of hundreds
of MB, so each op reads and writes main memory, and every activation stays alive until the backward pass
reaches it. B copies over rows/B rows each keep consecutive ops' tensors in the cache and hold one block's
activations at a time. Each row is computed exactly as in one batch, so the attributions are bit-identical.
Measured (MobileNetV2 GNL-IG, 1 image x 50 steps, plain 2-thread onnxruntime session on a 2-core EPYC):
1 block 0.64 s and 3.0 GB peak RSS, 5 blocks 0.55 s / 1.3 GB, 10 blocks 0.51 s / 0.8 GB; session
creation grows with the node count (0.08, 0.19, 0.37 s), hence the cap.

The copies are plain nodes in the main graph, not a Loop: onnxruntime optimises a Loop body without its
blocked (NCHWc) convolutions when the weights live outside the body.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .autodiff.emit import Emitter
from .quadrature import DEFAULT_STEPS

# one block's share of one image's default steps, in memory_per_row's estimate: ImageNet CNNs (MobileNetV2
# 3.1 GB, ResNet-50 4.3 GB for 50 rows) take MAX_BLOCKS; a net whose rows are cache-sized already takes one
BLOCK_BYTES = 320 << 20
MAX_BLOCKS = 10          # session creation grows with the copies (each is the whole forward and backward graph)
BATCH = "gig_rows_per_block"  # the symbolic batch of every copy (one size for all of them)


def auto_blocks(bytes_per_row: int, rows: int = DEFAULT_STEPS) -> int:
    """How many blocks one image's default steps take: enough for ``BLOCK_BYTES`` each, at most ``MAX_BLOCKS``.

    A small model (a test net, a 32x32 classifier) stays one block: its rows are cache-sized already.
    """
    if bytes_per_row <= 0:
        return 1
    return int(max(1, min(MAX_BLOCKS, rows, -(-rows * bytes_per_row // BLOCK_BYTES))))


def dependent_nodes(nodes: list[gs.Node], sources: set[str]) -> list[gs.Node]:
    """The nodes of ``nodes`` (in order) that read one of ``sources`` directly or through another such node."""
    live, out = set(sources), []
    for n in nodes:
        if any(i.name in live for i in n.inputs):
            out.append(n)
            live.update(o.name for o in n.outputs)
    return out


@dataclass(frozen=True)
class StraightPath:
    """The rows' straight path: row k * N + n of ``rows`` is ``start[n] + alphas[k] * delta[n]``."""

    rows: gs.Tensor    # [N * K, ...] the path points as one batch (what the single-block graph reads)
    start: gs.Tensor   # [N, ...] the baselines, one per image
    delta: gs.Tensor   # [N, ...] input minus baseline
    alphas: gs.Tensor  # [K] path positions


def split_rows(e: Emitter, path: StraightPath, seed: gs.Tensor, grad: gs.Tensor, nodes: list[gs.Node],
               blocks: int, clone) -> tuple[gs.Tensor, int]:
    """Replace the nodes between (``path.rows``, ``seed``) and ``grad`` by ``blocks`` copies over row slices.

    ``seed`` [R, ...] is the cotangent of the score, ``grad`` [R, ...] d(score . seed)/d(rows). Rows are
    padded to a multiple of ``blocks`` with copies of the last row seeded with zeros (at most ``blocks`` - 1,
    cut off again), so no copy ever sees an empty batch. ``clone(nodes, src, dst, prefix, batch, also,
    old_batch)`` is integrate's node copier. Returns the tensor that replaces ``grad`` and the number of
    blocks (1: the graph is left as it was, as for a seed of unknown rank).

    Each block gathers its own rows, start[n] + alpha[k] * delta[n] (the same floats as the one-batch
    path), instead of slicing them out of all R rows made at once and padded: those two passes over an
    images x steps tensor were 2.5 % of MobileNetV2's GNL-IG run. No row reads another image's data.
    """
    rows = path.rows
    g = e.graph
    moved = dependent_nodes(nodes, {rows.name, seed.name})
    produced = {o.name for n in moved for o in n.outputs}
    if blocks <= 1 or seed.shape is None or not rows.shape or grad.name not in produced:
        return grad, 1
    ids = {id(n) for n in moved}
    g.nodes = [n for n in g.nodes if id(n) not in ids]

    def i64(v):
        return e.const(np.asarray(v, np.int64))

    def scalar(t):
        return e.op("Squeeze", [t, i64([0])])

    images = e.shape(path.delta, 0, 1)
    total = e.mul(images, e.shape(path.alphas, 0, 1))  # R, from shapes only: the R rows are never made at once
    per = e.div(e.add(total, i64([blocks - 1])), i64([blocks]))  # ceil(R / blocks)
    padded = e.mul(per, i64([blocks]))
    pad = e.sub(padded, total)                                    # 0 <= pad < blocks
    # row r of the padded batch is row min(r, R - 1): step r // N of image r % N
    r = e.op("Range", [i64(0), scalar(padded), i64(1)])
    rc = e.op("Min", [r, e.sub(total, i64([1]))])
    step_of = e.div(rc, scalar(images))
    image_of = e.sub(rc, e.mul(step_of, scalar(images)))
    ones = [1] * (len(rows.shape) - 1)

    srank = len(seed.shape)
    zero = e.const(np.zeros([1] * srank, e.dtype))
    seed_p = e.concat([seed, e.expand(zero, e.concat([pad, e.shape(seed, start=1)], 0))], 0)
    grads = []
    for j in range(blocks):
        lo, hi = e.mul(per, i64([j])), e.mul(per, i64([j + 1]))
        at = e.op("Slice", [image_of, lo, hi, i64([0])])
        alpha = e.reshape(e.op("Gather", [path.alphas, e.op("Slice", [step_of, lo, hi, i64([0])])]), [-1] + ones)
        part = e.op("Add", [e.op("Gather", [path.start, at]), e.mul(alpha, e.op("Gather", [path.delta, at]))],
                    dtype=rows.dtype, shape=[BATCH] + list(rows.shape[1:]))
        part_seed = e.op("Slice", [seed_p, lo, hi, i64([0])], dtype=seed.dtype, shape=[BATCH] + list(seed.shape[1:]))
        copies, mapping = clone(moved, rows, part, f"gig/b{j}/", BATCH, {seed.name: part_seed}, rows.shape[0])
        g.nodes.extend(copies)
        grads.append(mapping[grad.name])
    return e.op("Slice", [e.concat(grads, 0), i64([0]), total, i64([0])], dtype=grad.dtype, shape=grad.shape), blocks
