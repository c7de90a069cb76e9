"""Row blocks (blocks.py): B copies over slices of the rows compute the very same attributions, and the
session cache (sessioncache.py) that keeps their start fast."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx_gig import convert
from onnx_gig.blocks import MAX_BLOCKS, auto_blocks
from onnx_gig.contract import META_PREFIX
from onnx_gig.runtime import GigModel


def _meta(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    from torch_nets import export, seeded_small_cnn
    import torch

    folder = tmp_path_factory.mktemp("blocks")
    src = folder / "net.onnx"
    src.write_bytes(export(seeded_small_cnn(), torch.zeros(1, 3, 20, 20)))
    return src


def _run_all(path, feeds):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _assert_same_outputs(ref, got):
    """Every row runs exactly as in one batch: every output is bit-identical."""
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)


@pytest.mark.parametrize("method", ["gnl-ig", "ig", "gnl-ig-authors"])
def test_blocks_give_bit_identical_outputs(small_net, tmp_path, method):
    one = convert(small_net, tmp_path / "one.onnx", method=method, blocks=1).path
    x = np.random.default_rng(3).standard_normal((3, 3, 20, 20)).astype(np.float32)
    assert _meta(one)[META_PREFIX + "row_blocks"] == "1"
    for b in (2, 4, 7):
        many = convert(small_net, tmp_path / f"b{b}.onnx", method=method, blocks=b).path
        assert _meta(many)[META_PREFIX + "row_blocks"] == str(b)
        # default schedule (3 x 50 rows), a schedule that pads the last block (3 x 7 = 21 rows), fewer rows
        # than blocks (1 x 1), explicit targets and a baseline
        cases = [{"image": x},
                 {"image": x, "alphas": np.linspace(0.05, 1, 7, dtype=np.float32),
                  "step_weights": np.full(7, 1 / 7, np.float32), "target": np.array([1, 0, 2]),
                  "baseline": np.full((1, 3, 1, 1), 0.25, np.float32)},
                 {"image": x[:1], "alphas": np.array([0.5], np.float32), "step_weights": np.array([1.0], np.float32)},
                 # a baseline per image, 5 steps (blocks cut across images)
                 {"image": x, "alphas": np.linspace(0.1, 0.9, 5, dtype=np.float32),
                  "step_weights": np.full(5, 0.2, np.float32), "baseline": -x[::-1].copy()}]
        for feeds in cases:
            _assert_same_outputs(_run_all(one, feeds), _run_all(many, feeds))


def test_an_image_that_overflows_leaves_the_others_finite(small_net, tmp_path):
    """Blocks mix images in one batch; an image whose gradients overflow float32 must not turn the others'
    sums to NaN (batch.py reports such an image as its own error and keeps the rest). A sum over a block's
    rows by a matrix product would (0 * inf): the blocks gather rows and reduce per image instead."""
    one = convert(small_net, tmp_path / "one.onnx", blocks=1).path
    four = convert(small_net, tmp_path / "four.onnx", blocks=4).path  # 21 rows in blocks of 6: across images
    x = np.random.default_rng(4).standard_normal((3, 3, 20, 20)).astype(np.float32)
    x[1] *= np.float32(3e37)  # finite, but the net overflows on it
    feeds = {"image": x, "alphas": np.linspace(0.1, 1, 7, dtype=np.float32),
             "step_weights": np.full(7, 1 / 7, np.float32)}
    ref, got = _run_all(one, feeds)[0], _run_all(four, feeds)[0]
    finite = np.isfinite(ref).reshape(3, -1).all(axis=1)
    assert finite.tolist() == [True, False, True]  # the case is real: the net does overflow on image 1
    assert np.isfinite(got).reshape(3, -1).all(axis=1).tolist() == finite.tolist()
    for k in (0, 2):
        np.testing.assert_array_equal(got[k], ref[k])


def test_blocks_are_copies_that_onnxruntime_runs_one_after_another(small_net, tmp_path):
    """Each block is a whole copy of the path forward and backward graph; none of them reads another."""
    path = convert(small_net, tmp_path / "b3.onnx", blocks=3).path
    model = onnx.load(str(path))
    convs = {j: sum(1 for n in model.graph.node if n.op_type == "Conv" and n.name.startswith(f"gig/b{j}/"))
             for j in range(4)}
    assert convs[0] == convs[1] == convs[2] > 0 and convs[3] == 0
    produced = {o: n.name for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.name.startswith("gig/b1/"):
            assert not any(produced.get(i, "").startswith(("gig/b0/", "gig/b2/")) for i in n.input), n.name


def test_auto_blocks_follow_the_activation_size(small_net, tmp_path, demo_model):
    assert auto_blocks(0) == 1 and auto_blocks(1 << 20) == 1
    assert auto_blocks(60 << 20) == MAX_BLOCKS and 1 < auto_blocks(16 << 20) < MAX_BLOCKS
    small = convert(small_net, tmp_path / "auto.onnx").path
    assert _meta(small)[META_PREFIX + "row_blocks"] == "1"  # a 20x20 net: its rows are cache-sized already
    big = convert(demo_model, tmp_path / "mnv2.onnx").path
    meta = _meta(big)
    assert int(meta[META_PREFIX + "row_blocks"]) == auto_blocks(int(meta[META_PREFIX + "bytes_per_step"])) > 1


def test_runs_hold_whole_blocks(small_net, tmp_path):
    gm = GigModel(convert(small_net, tmp_path / "b5.onnx", blocks=5).path, device="cpu")
    assert gm.row_blocks == 5
    for steps, rows in [(50, 30), (50, 12), (20, 10), (7, 5), (50, 200), (50, 1), (50, 7)]:
        plan = gm.plan(1, steps, rows)
        sizes = [e - s for _, _, s, e in plan.chunks]
        # a given batch is rounded up to whole blocks: one block holds ceil(rows / 5) rows, as asked
        assert sum(sizes) == steps and max(sizes) <= 5 * -(-rows // 5)
        if steps % 5 == 0:
            assert all(n % 5 == 0 for n in sizes), (steps, rows, sizes)
    assert gm.rows_per_run() % 5 == 0  # the memory budget counts one block's rows


def test_convert_refuses_a_bad_block_count(small_net, tmp_path):
    out = tmp_path / "bad.onnx"
    r = subprocess.run([sys.executable, "-m", "onnx_gig.cli", "convert", str(small_net), "-o", str(out), "--blocks", "0"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--blocks must be between 1 and" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


# -- the session cache -------------------------------------------------------------------------------
def test_session_cache_saves_once_loads_after_and_survives_damage(small_net, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ONNX_GIG_CACHE_DIR", str(cache))
    path = convert(small_net, tmp_path / "b3.onnx", blocks=3).path
    x = np.random.default_rng(4).standard_normal((2, 3, 20, 20)).astype(np.float32)
    first = GigModel(path, device="cpu").explain(x, n_steps=9)
    entries = list(cache.glob("*.onnx"))
    assert len(entries) == 1 and not list(cache.glob(".*tmp*"))
    saved = onnx.load(str(entries[0]))  # onnxruntime's optimised graph, a valid model
    assert {i.name for i in saved.graph.input} >= {"image", "alphas", "step_weights", "target", "baseline"}

    again = GigModel(path, device="cpu").explain(x, n_steps=9, target=[0, 1])
    ref = GigModel(path, device="cpu").explain(x, n_steps=9, target=[0, 1])
    np.testing.assert_array_equal(again.attributions, ref.attributions)
    np.testing.assert_array_equal(GigModel(path, device="cpu").explain(x, n_steps=9).attributions, first.attributions)

    entries[0].write_bytes(b"not a model")  # a damaged entry is rebuilt, never an error
    got = GigModel(path, device="cpu").explain(x, n_steps=9)
    np.testing.assert_array_equal(got.attributions, first.attributions)
    assert onnx.load(str(entries[0])).graph.node

    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))  # a changed model: new key
    GigModel(path, device="cpu")
    assert len(list(cache.glob("*.onnx"))) == 2


def test_session_cache_with_sessions_made_side_by_side_in_one_process(small_net, tmp_path, monkeypatch):
    """Threads of one process that make the first sessions of a model at once (a threaded server): one whole
    entry is left, no temporary file, and every session attributes alike."""
    from concurrent.futures import ThreadPoolExecutor

    cache = tmp_path / "cache"
    monkeypatch.setenv("ONNX_GIG_CACHE_DIR", str(cache))
    path = convert(small_net, tmp_path / "b4.onnx", blocks=4).path
    x = np.random.default_rng(5).standard_normal((1, 3, 20, 20)).astype(np.float32)
    with ThreadPoolExecutor(4) as pool:
        gms = list(pool.map(lambda _: GigModel(path, device="cpu", threads=1), range(4)))
    entries = list(cache.glob("*.onnx"))
    assert len(entries) == 1 and not list(cache.glob(".*tmp*"))
    assert onnx.load(str(entries[0])).graph.node
    ref = gms[0].explain(x, n_steps=7).attributions
    for gm in gms[1:] + [GigModel(path, device="cpu")]:
        np.testing.assert_array_equal(gm.explain(x, n_steps=7).attributions, ref)


def test_session_cache_in_a_folder_it_cannot_write_or_a_model_it_cannot_save(small_net, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ONNX_GIG_CACHE_DIR", str(cache))
    path = convert(small_net, tmp_path / "b2.onnx", blocks=2).path
    x = np.random.default_rng(6).standard_normal((1, 3, 20, 20)).astype(np.float32)
    ref = GigModel(path, device="cpu").explain(x, n_steps=4).attributions
    entry = next(cache.glob("*.onnx"))
    if os.geteuid() != 0:  # root writes anywhere: a read-only entry only stops other users
        cache.chmod(0o500)
        entry.chmod(0o400)
        try:
            np.testing.assert_array_equal(GigModel(path, device="cpu").explain(x, n_steps=4).attributions, ref)
        finally:
            cache.chmod(0o700)
    entry.unlink()
    (cache / (entry.stem + ".nocache")).touch()  # what a failed save leaves: later processes do not retry
    np.testing.assert_array_equal(GigModel(path, device="cpu").explain(x, n_steps=4).attributions, ref)
    assert not list(cache.glob("*.onnx"))


def test_session_cache_off_and_unwritable(small_net, tmp_path, monkeypatch):
    path = convert(small_net, tmp_path / "b2.onnx", blocks=2).path
    x = np.random.default_rng(5).standard_normal((1, 3, 20, 20)).astype(np.float32)
    monkeypatch.setenv("ONNX_GIG_CACHE_DIR", str(tmp_path / "off"))
    monkeypatch.setenv("ONNX_GIG_SESSION_CACHE", "0")
    ref = GigModel(path, device="cpu").explain(x, n_steps=5).attributions
    assert not (tmp_path / "off").exists()
    monkeypatch.delenv("ONNX_GIG_SESSION_CACHE")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("ONNX_GIG_CACHE_DIR", str(blocker / "sessions"))
    np.testing.assert_array_equal(GigModel(path, device="cpu").explain(x, n_steps=5).attributions, ref)


def test_blocks_at_run_time_image_sizes(tmp_path):
    """A model with dynamic height and width: the blocks slice rows whatever the image's size."""
    import torch
    from torch_nets import export_dynamic, seeded_mobilenet_v3

    src = tmp_path / "mnv3.onnx"
    src.write_bytes(export_dynamic(seeded_mobilenet_v3(), torch.zeros(1, 3, 64, 64), {0: "batch", 2: "height", 3: "width"}))
    one = convert(src, tmp_path / "one.onnx", method="gnl-ig", blocks=1).path
    three = convert(src, tmp_path / "three.onnx", method="gnl-ig", blocks=3).path
    for hw in [(48, 64), (37, 41)]:
        x = np.random.default_rng(hw[0]).standard_normal((2, 3) + hw).astype(np.float32)
        feeds = {"input": x, "alphas": np.linspace(0.1, 1, 8, dtype=np.float32),
                 "step_weights": np.full(8, 0.125, np.float32)}
        name = ort.InferenceSession(str(one), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        feeds = {name: feeds.pop("input"), **feeds}
        _assert_same_outputs(_run_all(one, feeds), _run_all(three, feeds))


def test_float16_graphs_default_to_one_block_and_take_blocks_when_asked(small_net, tmp_path):
    half = convert(small_net, tmp_path / "h.onnx", fp16=True).path
    assert _meta(half)[META_PREFIX + "row_blocks"] == "1"
    two = convert(small_net, tmp_path / "h2.onnx", fp16=True, blocks=2).path
    assert _meta(two)[META_PREFIX + "row_blocks"] == "2"
    onnx.checker.check_model(onnx.load(str(two)), full_check=True)
