"""Many images in one run (``explain_many``, ``ResultWriter``, ``onnx-gig explain DIR``, ``eval DIR``):
real folders with a corrupt file, repeated stems and .npy inputs, the shipped MobileNetV2, real sessions."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, interrupt_folder_run, photo_folder
from onnx_gig import ExplainOptions, GigModel, ResultWriter, collect_inputs, explain, explain_many
from onnx_gig.batch import batch_images_for, explain_arrays

STEPS = 4
PHOTOS = MODELS / "images"


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """photos/{a/cat.png, b/cat.png, b/deep/er/camera.png, broken.png, notes.txt, x.npy, .hidden.png}."""
    root = tmp_path_factory.mktemp("tree") / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b" / "deep" / "er").mkdir(parents=True)
    shutil.copy(PHOTOS / "chelsea.png", root / "a" / "cat.png")
    shutil.copy(PHOTOS / "coffee.png", root / "b" / "cat.png")
    shutil.copy(PHOTOS / "camera.png", root / "b" / "deep" / "er" / "camera.png")
    (root / "broken.png").write_bytes((PHOTOS / "coffee.png").read_bytes()[:400])  # a truncated PNG
    (root / "notes.txt").write_text("not an image\n")
    shutil.copy(PHOTOS / "camera.png", root / ".hidden.png")
    np.save(root / "x.npy", np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32))
    return root


ORDER = ["a/cat.png", "b/cat.png", "b/deep/er/camera.png", "broken.png", "x.npy"]


def test_collect_inputs_expands_folders_globs_and_names_what_matched_nothing(tree, tmp_path):
    files, missing = collect_inputs([tree])
    assert [f.relative_to(tree).as_posix() for f in files] == ORDER  # recursive, sorted, .txt and hidden skipped
    empty = tmp_path / "empty"
    empty.mkdir()
    files, missing = collect_inputs([tree / "x.npy", str(tree / "*" / "cat.png"), tree, tmp_path / "nope.png",
                                     str(tmp_path / "*.jpg"), empty])
    assert [f.relative_to(tree).as_posix() for f in files] == ["x.npy", "a/cat.png", "b/cat.png",
                                                               "b/deep/er/camera.png", "broken.png"]  # each once
    assert [(Path(n).name, why) for n, why in missing] == [
        ("nope.png", "no such file or folder"), ("*.jpg", "matches no image or .npy files"),
        ("empty", "no image or .npy files in this folder")]


def test_cli_folder_run_writes_figures_tables_and_npy_and_names_the_bad_file(tree, demo_gig, tmp_path):
    out = tmp_path / "out"
    p = run_cli("explain", demo_gig, tree, tmp_path / "gone.png", "--out-dir", out, "--npy", "--steps", STEPS)
    assert p.returncode == 3, p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 2 and "broken.png" in err[0] and "truncated" in err[0] and "gone.png" in err[1], p.stderr
    assert "4 explained, 2 failed" in p.stdout and str(out) in p.stdout
    assert sorted(os.listdir(out)) == sorted(["cat_gig.png", "cat-2_gig.png", "camera_gig.png", "x_gig.png",
                                              "cat.npy", "cat-2.npy", "camera.npy", "x.npy",
                                              "results.csv", "results.jsonl", "results.html",
                                              ".onnx-gig-run.jsonl"])  # no temp file
    rows = list(csv.DictReader((out / "results.csv").open()))
    jrows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).relative_to(tree).as_posix() for r in rows[:5]] == ORDER
    assert rows[5]["image"].endswith("gone.png") and rows[5]["error"] == "no such file or folder"
    assert [j["image"] for j in jrows] == [r["image"] for r in rows]
    for col in ("target", "label", "probability", "target_score", "baseline_score", "top1", "top5_label",
                "top5_prob", "completeness_gap", "error", "figure", "npy"):
        assert col in rows[0]
    assert rows[0]["label"] == "Egyptian cat" and rows[1]["label"] == "espresso"
    assert rows[0]["figure"] == "cat_gig.png" and rows[1]["figure"] == "cat-2_gig.png"  # repeated stem
    assert "truncated" in rows[3]["error"] and rows[3]["figure"] == "" and jrows[3]["target"] is None
    assert jrows[0]["completeness_gap"] is None  # gnl-ig: no completeness
    # the raw arrays are the single-image path's, unclipped
    for rel, npy in (("a/cat.png", "cat.npy"), ("b/cat.png", "cat-2.npy"), ("x.npy", "x.npy")):
        single = explain(demo_gig, tree / rel, steps=STEPS, draw=False)
        got = np.load(out / npy)
        assert got.dtype == np.float32 and got.shape == (3, 224, 224)
        np.testing.assert_allclose(got, single.attributions, rtol=1e-6, atol=1e-7)
        row = next(r for r in rows if r["npy"] == npy)
        assert int(row["target"]) == single.target
        assert float(row["probability"]) == pytest.approx(single.top[0][2], rel=1e-6)
    # a second run refuses to overwrite (one line, exit 2) and changes nothing; --force replaces
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    p = run_cli("explain", demo_gig, tree, "--out-dir", out, "--steps", STEPS)
    assert p.returncode == 2 and "holds an earlier run" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before


def test_explain_many_refuses_bad_options_before_any_session(tmp_path):
    from onnx_gig.errors import InputError

    for bad in (dict(steps=0), dict(sign="both"), dict(clip_percentile=0), dict(alpha=-1), dict(target=-3)):
        with pytest.raises(InputError):
            explain_many(tmp_path / "no-model.onnx", [PHOTOS], ExplainOptions(**bad))  # raises at the call
    with pytest.raises(InputError):
        explain_many(tmp_path / "no-model.onnx", [PHOTOS], batch_images=0)
    for bad in (dict(threads=0), dict(max_memory="0")):  # as explain() refuses them
        with pytest.raises(InputError, match=f"--{next(iter(bad)).replace('_', '-')}"):
            explain_many(tmp_path / "no-model.onnx", [PHOTOS], **bad)


def test_cli_refuses_single_image_outputs_with_several_inputs(demo_gig, tmp_path):
    p = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", PHOTOS / "coffee.png", "--out", tmp_path / "f.png")
    assert p.returncode == 2 and "--out-dir" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run_cli("explain", demo_gig, tmp_path / "nothing*.png")
    assert p.returncode == 2 and "no images found" in p.stderr
    assert os.listdir(tmp_path) == []


def _small_budget(gm: GigModel, rows: int) -> GigModel:
    """Lower the model's memory budget until one run holds ``rows`` rows (images x steps), rounded up to
    whole row blocks (a run holds one block's activations at a time: blocks.py)."""
    blocks = -(-rows // gm.row_blocks)
    gm.max_memory = gm.resident_bytes + blocks * gm.bytes_per_step  # what is resident, plus one block's rows
    assert gm.rows_per_run() == blocks * gm.row_blocks >= rows
    return gm


def test_explain_many_keeps_input_order_and_holds_one_batch_at_a_time(demo_gig, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["e.png", "d.png", "c.png", "b.png", "a.png"]
    for n, src in zip(names, ["chelsea", "coffee", "camera", "chelsea", "coffee"]):
        shutil.copy(PHOTOS / f"{src}.png", folder / n)
    gm = _small_budget(GigModel(demo_gig), 2 * STEPS)  # two images' steps per run (under the CPU run cap)
    assert gm.rows_per_run() < 3 * STEPS and batch_images_for(gm, STEPS) == 2
    given = [folder / n for n in names]
    it = explain_many(gm, given, ExplainOptions(steps=STEPS))
    first = next(it)
    (folder / "a.png").write_bytes(b"not a png any more")  # the last batch is not loaded yet
    results = [first] + list(it)
    assert [r.index for r in results] == list(range(5))
    assert [Path(r.path).name for r in results] == names
    assert [r.batch for r in results] == [0, 0, 1, 1, 2]
    assert [r.ok for r in results] == [True] * 4 + [False] and "not a readable image" in results[4].error
    for r in results[:4]:
        single = explain(demo_gig, r.path, steps=STEPS, draw=False)
        np.testing.assert_allclose(r.attributions, single.attributions, rtol=1e-6, atol=1e-7)
        assert r.target == single.target and r.top == single.top


def test_explain_arrays_isolates_a_bad_file_and_reports_ig_completeness(tmp_path, demo_model):
    from onnx_gig import convert

    ig = GigModel(convert(demo_model, tmp_path / "ig.onnx", method="ig").path)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    res = explain_arrays(ig, [(7, str(PHOTOS / "coffee.png")), (3, str(tmp_path / "bad.npy"))],
                         ExplainOptions(steps=STEPS, target=967))
    assert [r.index for r in res] == [7, 3] and res[0].ok and not res[1].ok and "\n" not in res[1].error
    assert "bad.npy" not in res[1].error and "not a readable .npy" in res[1].error  # the path is said once, by the row
    r = res[0]
    assert r.target == 967
    gap = r.attributions.sum() - (r.target_score - r.baseline_score)
    assert r.convergence_delta == pytest.approx(gap, rel=1e-4, abs=1e-4)
    assert r.row()["completeness_gap"] == r.convergence_delta


def test_a_baseline_is_the_runs_option_read_once_not_each_images_error(demo_gig, tmp_path):
    from onnx_gig.batch import baselines
    from onnx_gig.errors import InputError

    p = run_cli("explain", demo_gig, PHOTOS, "--out-dir", tmp_path / "out", "--baseline", tmp_path / "nope.npy")
    assert p.returncode == 2 and "nope.npy" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError):
        explain_many(demo_gig, [PHOTOS], ExplainOptions(baseline="blurr"))
    # a .npy baseline: one array for the batch, broadcast; the attributions are explain()'s with that file
    gm = GigModel(demo_gig)
    photos = [PHOTOS / "chelsea.png", PHOTOS / "coffee.png"]
    base = tmp_path / "base.npy"
    np.save(base, np.random.default_rng(1).normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32))
    xs = [np.zeros((3, 224, 224), np.float32)] * 2
    assert baselines(str(base), xs, [None, None], gm.preprocess).shape == (1, 3, 224, 224)
    assert baselines("blur", xs, [None, None], gm.preprocess).shape == (2, 3, 224, 224)  # per image
    for kind in (str(base), "blur"):
        got = list(explain_many(gm, photos, ExplainOptions(steps=STEPS, baseline=kind)))
        assert [r.ok for r in got] == [True, True]
        for r, photo in zip(got, photos):
            single = explain(demo_gig, photo, steps=STEPS, baseline=kind, draw=False)
            np.testing.assert_allclose(r.attributions, single.attributions, rtol=1e-5, atol=1e-6)
    # the broadcast baseline gives each image its own baseline score, as a stacked one does
    from onnx_gig.imageio import load_input

    pp = gm.preprocess
    x = np.stack([load_input(p, pp, gm.input_shape)[0] for p in photos])
    b = np.load(base)
    ex = gm.explain(x, np.concatenate([b, b]), None, STEPS)
    assert ex.baseline_score.shape == (2,)
    shared = list(explain_many(gm, photos, ExplainOptions(steps=STEPS, baseline=str(base))))
    np.testing.assert_allclose([r.baseline_score for r in shared], ex.baseline_score, rtol=1e-5)
    np.testing.assert_allclose([r.target_score for r in shared], ex.target_score, rtol=1e-5)


def test_writer_writes_each_index_once_in_index_order_and_nothing_partial(demo_gig, tmp_path):
    gm = GigModel(demo_gig)
    res = explain_arrays(gm, [(0, str(PHOTOS / "camera.png")), (1, str(PHOTOS / "chelsea.png")),
                              (2, str(tmp_path / "missing.png"))], ExplainOptions(steps=2))
    out = tmp_path / "out"
    with ResultWriter(out, options=ExplainOptions(steps=2)) as w:
        for r in [res[2], res[1], res[1], res[0], res[2]]:  # retried and out of order
            w.write(r)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [Path(r["image"]).name for r in rows] == ["camera.png", "chelsea.png", "missing.png"]
    assert sorted(os.listdir(out)) == ["camera_gig.png", "chelsea_gig.png", "results.csv", "results.html",
                                       "results.jsonl"]
    # interrupted: the figures already written are complete, no table and no temp file appear
    out2 = tmp_path / "out2"
    with pytest.raises(KeyboardInterrupt):
        with ResultWriter(out2, options=ExplainOptions(steps=2)) as w:
            w.write(res[0])
            raise KeyboardInterrupt
    assert os.listdir(out2) == ["camera_gig.png"]


def test_cli_eval_names_an_unreadable_file_and_scores_the_rest(tmp_path):
    from test_eval import tiny_cnn, write_photos

    model = tiny_cnn(tmp_path / "tiny.onnx")
    photos = write_photos(tmp_path / "photos" / "nested", 2)
    (photos[0].parent / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    p = run_cli("eval", model, tmp_path / "photos", "--methods", "gradient,random", "--step", "16",
                "--out-dir", tmp_path / "ev")
    assert p.returncode == 3, p.stderr
    assert [ln for ln in p.stderr.splitlines() if "broken.png" in ln] and "2 images (1 left out)" in p.stdout
    rows = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open()))
    assert {r["image"] for r in rows} == {str(p) for p in photos}  # the paths as collected, as explain names them


def test_cli_map_options(demo_gig, tmp_path):
    p = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", "--steps", 2, "--sign", "all", "--clip-percentile", 100,
                "--opacity", 0.8, "--out", tmp_path / "f.png", "--save-npy", tmp_path / "a.npy")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "f.png").is_file()
    raw = np.load(tmp_path / "a.npy")  # never clipped: the model's attributions as they came
    np.testing.assert_allclose(raw, explain(demo_gig, PHOTOS / "chelsea.png", steps=2, draw=False).attributions,
                               rtol=1e-6, atol=1e-7)
    for bad in (("--clip-percentile", "0"), ("--alpha", "2")):
        p = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", *bad, "--out", tmp_path / "g.png")
        assert p.returncode == 2 and bad[0] in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g.png").exists()


def test_ctrl_c_during_a_folder_run_leaves_complete_figures_and_no_partial_table(demo_gig, tmp_path):
    folder = photo_folder(tmp_path / "in", 12)
    out = tmp_path / "out"
    err = interrupt_folder_run(["explain", demo_gig, folder, "--out-dir", out, "--steps", "8", "--max-memory", "1G"],
                               out)
    assert "interrupted" in err
    names = [n for n in os.listdir(out) if n != ".onnx-gig-run.jsonl"]  # the run record: --resume goes on
    assert names and all(n.endswith("_gig.png") for n in names) and len(names) < 12  # no table, no temp file
    for n in names:
        from PIL import Image

        with Image.open(out / n) as im:
            im.load()  # every figure left is complete


def test_collected_inputs_keep_their_indices_when_a_file_goes_missing(demo_gig, tmp_path):
    """explain_many takes collect_inputs' listing as it is: a file deleted in between stays at its index."""
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(PHOTOS / "camera.png", d / name)
    inputs = collect_inputs([d, tmp_path / "nope.png"])
    (d / "b.png").unlink()
    res = list(explain_many(demo_gig, inputs, ExplainOptions(steps=2)))
    assert [(r.index, Path(r.path).name, r.ok) for r in res] == [
        (0, "a.png", True), (1, "b.png", False), (2, "c.png", True), (3, "nope.png", False)]
    assert res[3].error == "no such file or folder"


def test_sessions_side_by_side_give_the_same_results_in_order_and_bounded(demo_gig, tmp_path, monkeypatch):
    """--workers 2: two sessions attribute batches in parallel; results equal one session's, in input order,
    and no more than one batch per session is read ahead of the consumer."""
    from onnx_gig import batch as batch_mod

    d = tmp_path / "in"
    d.mkdir()
    names = ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
    for n, src in zip(names, ["chelsea", "coffee", "camera", "coffee", "chelsea", "camera"]):
        shutil.copy(PHOTOS / f"{src}.png", d / n)
    (d / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    one = list(explain_many(demo_gig, [d], ExplainOptions(steps=2), workers=1, threads=1, batch_images=1))

    loads, sessions = [], set()
    load, attribute = batch_mod.load_items, batch_mod.attribute_items

    def spy_load(gm, items, n=None):  # the real functions, counted
        loads.append(n)
        return load(gm, items, n)

    def spy_attribute(gm, loaded, options):
        sessions.add(id(gm))
        return attribute(gm, loaded, options)

    monkeypatch.setattr(batch_mod, "load_items", spy_load)
    monkeypatch.setattr(batch_mod, "attribute_items", spy_attribute)
    two, ahead = [], []
    for r in explain_many(demo_gig, [d], ExplainOptions(steps=2), workers=2, threads=1, batch_images=1):
        two.append(r)
        ahead.append(len(loads) - len(two))
    assert len(sessions) == 2
    assert [Path(r.path).name for r in two] == names and [r.ok for r in two] == [r.ok for r in one]
    assert not two[2].ok and "c.png" in two[2].path
    for a, b in zip(one, two):
        if a.ok:
            np.testing.assert_allclose(b.attributions, a.attributions, rtol=1e-5, atol=1e-7)
            assert (a.target, a.top) == (b.target, b.top)
    assert max(ahead) <= 2, ahead  # two sessions: at most two one-image batches read ahead


def test_cli_workers_option(demo_gig, tmp_path):
    p = run_cli("explain", demo_gig, PHOTOS, "--out-dir", tmp_path / "o", "--steps", "2", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert len(list(csv.DictReader((tmp_path / "o" / "results.csv").open()))) == 3
    p = run_cli("explain", demo_gig, PHOTOS, "--out-dir", tmp_path / "o2", "--workers", "0")
    assert p.returncode == 2 and "--workers" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_cli_workers_is_refused_where_it_would_be_ignored(tmp_path):
    """--workers 0 on one image, and --workers with --ray (actors are --actors), are one-line errors, not ignored."""
    model = tmp_path / "never_read_gig.onnx"
    for extra in (["--workers", "0"], ["--ray", "--workers", "2"]):
        p = run_cli("explain", model, PHOTOS / "chelsea.png", *extra)
        assert p.returncode == 2, (extra, p.stderr)
        assert "--workers" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_sessions_added_to_a_given_gigmodel_run_where_it_runs_and_share_the_cores(demo_gig):
    """explain_many(GigModel, workers=2): the second session follows the first's provider and, on CPU, gets its
    share of the cores rather than onnxruntime's default of all of them."""
    from onnx_gig.pool import open_sessions, usable_cores

    gm = GigModel(demo_gig, device="cpu", threads=1)
    gms = open_sessions(gm, "auto", None, None, 2)
    assert gms[0] is gm and len(gms) == 2
    assert gms[1].provider == gm.provider
    assert gms[1].session.get_session_options().intra_op_num_threads == max(1, usable_cores() // 2)
    assert open_sessions(gm, "auto", None, 3, 2)[1].session.get_session_options().intra_op_num_threads == 3


def test_sessions_side_by_side_count_the_process_memory_once(demo_gig):
    """Two sessions under a 1G budget: what is resident (the process, both sessions' weights) comes off the
    budget once and the rest is shared, (budget - resident) / 2 each; each used to subtract all of it from
    its half, budget / 2 - resident."""
    from onnx_gig.pool import open_sessions
    from onnx_gig.runtime import RESIDENT_MARGIN, _resident_bytes

    budget = 1 << 30
    two = open_sessions(str(demo_gig), "cpu", budget, None, 2)
    resident = _resident_bytes() + RESIDENT_MARGIN
    slack = 16 << 20  # the resident set may move a little between the sessions' measure and this one
    free = [g.max_memory - g.resident_bytes for g in two]
    assert all(f >= (budget - resident) // 2 - slack for f in free), (free, resident)
    assert sum(free) <= budget - resident + slack, (free, resident)
