"""``evaluate`` and ``onnx-gig eval`` on a tiny ReLU/MaxPool CNN built with onnx.helper: real files, real sessions."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnx_gig import GigModel, convert
from onnx_gig.evaluate import evaluate
from onnx_gig.methods import ALL, attribute, parse_methods
from onnx_gig.metrics import OnnxForward

SIZE = 16
PREPROCESS = {"layout": "NCHW", "color": "RGB", "resize": SIZE, "crop": [SIZE, SIZE], "scale": 1 / 255,
              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def tiny_cnn(path: Path, seed: int = 0) -> Path:
    """Conv3x3 -> Relu -> MaxPool2 -> Conv3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm (3 classes)."""
    r = np.random.default_rng(seed)
    inits = {"w1": r.normal(0, 0.4, (6, 3, 3, 3)), "b1": r.normal(0, 0.1, 6),
             "w2": r.normal(0, 0.3, (6, 6, 3, 3)), "b2": r.normal(0.1, 0.1, 6),
             "wf": r.normal(0, 1.0, (3, 6)), "bf": r.normal(0, 0.1, 3)}
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten", axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], "fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"onnx_gig.preprocess": json.dumps(PREPROCESS),
                                   "onnx_gig.labels": json.dumps(["ant", "bee", "cat"])})
    onnx.save(model, str(path))
    return path


def write_photos(folder: Path, n: int, seed: int = 1) -> list[Path]:
    r = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"photo{i}.png"
        Image.fromarray(r.integers(0, 256, (SIZE + 4, SIZE + 2, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return tiny_cnn(d / "tiny.onnx"), write_photos(d / "photos", 3)


def test_eval_writes_tables_and_curves_for_all_six_methods(tiny, tmp_path):
    model, photos = tiny
    out = tmp_path / "eval"
    r = evaluate(model, photos, None, out, steps=4, step=8)
    assert r.methods == list(ALL)
    for name in ("results.md", "results.csv", "per_image.csv", "curves.png", "curves.npz"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["method"] for row in rows] == list(ALL)
    for row in rows:
        for k in ("deletion_mean", "insertion_mean"):
            assert 0.0 <= float(row[k]) <= 1.0
        assert float(row["deletion_std"]) >= 0.0 and row["n_images"] == "3"
    md = (out / "results.md").read_text()
    assert all(f"| {m} |" in md for m in ALL) and "±" in md
    assert len(list(csv.DictReader((out / "per_image.csv").open()))) == 3 * len(ALL)
    png = Image.open(out / "curves.png")
    assert png.mode == "RGB" and png.width > 2 * png.height
    # 16x16 images, 8 pixels per step: 33 points; the curves start (deletion) / end (insertion) at the clean image
    assert r.settings["points"] == 33 and r.x["deletion"][-1] == 1.0
    for m in ALL:
        np.testing.assert_allclose(r.curves["deletion"][m][:, 0], r.clean_prob, rtol=1e-5)
        np.testing.assert_allclose(r.curves["insertion"][m][:, -1], r.clean_prob, rtol=1e-5)
    assert r.target_labels[0] in ("ant", "bee", "cat")
    # the areas are the trapezoid areas of the stored curves
    from onnx_gig.metrics import auc
    assert r.areas("deletion")["ig"][1] == pytest.approx(auc(r.curves["deletion"]["ig"][1], r.x["deletion"]))
    # converted models are cached: a second run converts nothing new
    cached = sorted((out / "converted").iterdir())
    assert len(cached) == 2
    mtimes = [p.stat().st_mtime_ns for p in cached]
    r2 = evaluate(model, photos, "gradient,gnl-ig", out, steps=4, step=8)
    assert [p.stat().st_mtime_ns for p in sorted((out / "converted").iterdir())] == mtimes
    np.testing.assert_allclose(r2.curves["deletion"]["gnl-ig"], r.curves["deletion"]["gnl-ig"], rtol=1e-6)


def test_methods_are_the_converted_graphs_run_as_claimed(tiny, tmp_path):
    model, _ = tiny
    ig = GigModel(convert(model, tmp_path / "ig.onnx", method="ig").path, device="cpu")
    gnl = GigModel(convert(model, tmp_path / "gnl.onnx", method="gnl-ig").path, device="cpu")
    x = np.random.default_rng(3).normal(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)
    t = np.asarray([0, 2])
    grad = attribute("gradient", ig, x, t)
    np.testing.assert_allclose(attribute("input_x_gradient", ig, x, t), x * grad, rtol=1e-4, atol=1e-6)
    # the gradient is the gradient: central differences of the logit on a few inputs
    f = OnnxForward(model)
    eps = 1e-2
    for idx in [(0, 0, 3, 4), (1, 2, 8, 8), (1, 1, 15, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (f(xp)[idx[0], t[idx[0]]] - f(xm)[idx[0], t[idx[0]]]) / (2 * eps)
        assert grad[idx] == pytest.approx(fd, rel=2e-2, abs=1e-4)
    # guided backprop is the guided gradient at x: x times it is one right-Riemann step of GNL-IG from zero
    gbp = attribute("guided_backprop", gnl, x, t)
    one_step = attribute("gnl-ig", gnl, x, t, steps=1, rule="riemann_right")
    np.testing.assert_allclose(x * gbp, one_step, rtol=1e-4, atol=1e-6)
    assert not np.allclose(gbp, grad)  # the guided rules change something on a ReLU/MaxPool net


def test_method_names_are_checked():
    assert parse_methods("ig, gnl-ig,ig") == ["ig", "gnl-ig"]
    from onnx_gig.errors import InputError
    with pytest.raises(InputError, match="smoothgrad"):
        parse_methods("ig,smoothgrad")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_help_names_the_commands():
    p = run_cli("eval", "--help")
    assert p.returncode == 0 and "--methods" in p.stdout and "--step" in p.stdout and "deletion" in p.stdout
    p = run_cli("sanity", "--help")
    assert p.returncode == 0 and "--depths" in p.stdout


def test_cli_eval_runs(tiny, tmp_path):
    model, photos = tiny
    p = run_cli("eval", model, photos[0].parent, "--methods", "gradient,random", "--step", "16",
                "--out-dir", tmp_path / "ev")
    assert p.returncode == 0, p.stderr
    assert "gradient" in p.stdout and "random" in p.stdout and "3 images" in p.stdout
    rows = list(csv.DictReader((tmp_path / "ev" / "results.csv").open()))
    assert [r["method"] for r in rows] == ["gradient", "random"]
    p = run_cli("eval", model, tmp_path / "missing.png", "--out-dir", tmp_path / "ev2")
    assert p.returncode == 2 and "missing.png" in p.stderr


def test_the_conversion_cache_key_covers_every_module_conversion_reads():
    """Converted models are cached under a hash of the converter's source (methods.CONVERTER_SOURCES and
    autodiff/): every package module that loader.py and integrate.py import, lazily or not, is in it, so no
    cached graph outlives a change to them (image_input.py and precision.py were not)."""
    import ast

    import onnx_gig
    from onnx_gig.methods import CONVERTER_SOURCES

    root = Path(onnx_gig.__file__).parent
    todo, seen = ["loader.py", "integrate.py"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                mod = (node.module or "").split(".")[0]
                for target in ([mod] if mod else [a.name for a in node.names]):
                    if target != "autodiff" and (root / f"{target}.py").is_file():
                        todo.append(f"{target}.py")
    missing = sorted(seen - set(CONVERTER_SOURCES))
    assert not missing, f"conversion reads {missing}, which the cache key does not hash"


def test_an_interrupted_eval_is_resumed_scoring_only_what_is_left(tiny, tmp_path, monkeypatch):
    """Chunks are saved as they finish; --resume scores only the rest and writes what one run would have."""
    import onnx_gig.evaluate as ev
    from onnx_gig.errors import InputError

    model, _ = tiny
    photos = write_photos(tmp_path / "photos", 5, seed=7)
    monkeypatch.setattr(ev, "EVAL_CHUNK", 2)  # 3 chunks: 2 + 2 + 1 images
    kw = dict(methods="gradient,gnl-ig,random", steps=4, step=8)
    ref = evaluate(model, photos, out_dir=tmp_path / "ref", **kw)
    assert not (tmp_path / "ref" / "parts").exists()  # removed once the results are written

    real_run, calls = ev.EvalWorker.run, []

    def run_then_stop(self, items, bar=None):
        calls.append([i for i, _ in items])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C in the third chunk
        return real_run(self, items, bar)

    monkeypatch.setattr(ev.EvalWorker, "run", run_then_stop)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, photos, out_dir=out, **kw)
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["part-00000000.npz", "part-00000002.npz", "run.json"]
    assert not (out / "results.csv").exists()
    with pytest.raises(InputError, match=r"holds 2 scored chunks of an interrupted eval: --resume finishes it"):
        evaluate(model, photos, out_dir=out, **kw)
    with pytest.raises(InputError, match=r"other settings \(steps: 4 then, 5 now\)"):
        evaluate(model, photos, out_dir=out, resume=True, **{**kw, "steps": 5})
    with pytest.raises(InputError, match=r"other settings \(image_list_sha256: "):
        evaluate(model, photos[:4], out_dir=out, resume=True, **kw)

    calls.clear()
    monkeypatch.setattr(ev.EvalWorker, "run", lambda self, items, bar=None: (calls.append([i for i, _ in items]),
                                                                             real_run(self, items, bar))[1])
    got = evaluate(model, photos, out_dir=out, resume=True, **kw)
    assert calls == [[4]]  # only the image no chunk had scored
    assert got.images == ref.images and list(got.targets) == list(ref.targets)
    for kind in ("deletion", "insertion"):
        for m in got.methods:
            np.testing.assert_allclose(got.curves[kind][m], ref.curves[kind][m], rtol=1e-6, atol=1e-7)
    assert not (out / "parts").exists()
    (out / "parts").mkdir()
    (out / "parts" / "part-00000000.npz").write_bytes(b"a chunk whose run.json is gone")
    evaluate(model, photos, out_dir=out, **kw)  # no run to resume or check it against: cleared, not mixed in
    assert not (out / "parts").exists()


def test_cli_eval_resume_finishes_an_interrupted_run(tiny, tmp_path, monkeypatch):
    import onnx_gig.evaluate as ev

    model, _ = tiny
    photos = write_photos(tmp_path / "photos", 3, seed=3)
    monkeypatch.setattr(ev, "EVAL_CHUNK", 2)
    real_run = ev.EvalWorker.run
    state = {"n": 0}

    def stop_in_second_chunk(self, items, bar=None):
        state["n"] += 1
        if state["n"] == 2:
            raise KeyboardInterrupt
        return real_run(self, items, bar)

    monkeypatch.setattr(ev.EvalWorker, "run", stop_in_second_chunk)
    out = tmp_path / "ev"
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, photos, "gradient,random", out, step=16)
    p = run_cli("eval", model, *photos, "--methods", "gradient,random", "--step", "16", "--out-dir", out)
    assert p.returncode == 2 and "--resume finishes it" in p.stderr
    p = run_cli("eval", model, *photos, "--methods", "gradient,random", "--step", "16", "--out-dir", out, "--resume")
    assert p.returncode == 0, p.stderr
    assert "3 images" in p.stdout and not (out / "parts").exists()
    assert len(list(csv.DictReader((out / "per_image.csv").open()))) == 3 * 2


def test_a_failed_eval_leaves_nothing_that_blocks_the_next(tiny, tmp_path):
    """Only scored images are checkpointed: a run that scored none fails the same way twice, not as 'resume'."""
    from onnx_gig.errors import InputError

    model, _ = tiny
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    for _ in range(2):
        with pytest.raises(InputError, match="no readable images"):
            evaluate(model, [bad], "gradient", tmp_path / "ev", step=16)


def test_eval_targets_scores_each_images_class_from_the_file(tiny, tmp_path):
    """--targets: each image's map and curves are for the file's class (a label or an index), its first
    deletion point that class's probability on the clean image; an image the file does not name is left out."""
    from onnx_gig.contract import probabilities
    from onnx_gig.imageio import Preprocess, load_input
    from onnx_gig.metrics import deletion

    model, photos = tiny
    labels = tmp_path / "val.txt"
    labels.write_text("photo0.png bee\nphoto1.png 2\n")
    out = tmp_path / "eval"
    r = evaluate(model, photos, "gradient,gnl-ig", out, steps=4, step=8, targets=labels, save_maps=True)
    assert list(r.targets) == [1, 2] and r.target_labels == ["bee", "cat"]
    assert [Path(p).name for p, _ in r.failed] == ["photo2.png"] and "no class for it" in r.failed[0][1]
    f = OnnxForward(model)
    pp = Preprocess.from_json(json.dumps(PREPROCESS))
    maps = np.load(out / "maps.npz")
    for k, (photo, t) in enumerate(zip(photos[:2], (1, 2))):
        x = load_input(photo, pp, [1, 3, SIZE, SIZE])[0]
        probs = probabilities(f(x[None]), f.probability)[0]
        assert r.clean_prob[k] == pytest.approx(float(probs[t]), rel=1e-5)
        again = deletion(f, x, maps["gnl-ig"][k], step=8, target=t)
        np.testing.assert_allclose(r.curves["deletion"]["gnl-ig"][k], again.y, rtol=1e-5, atol=1e-7)
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert {(Path(row["image"]).name, row["target"]) for row in rows} == {("photo0.png", "1"), ("photo1.png", "2")}
    p = subprocess.run([sys.executable, "-m", "onnx_gig.cli", "eval", str(model), *map(str, photos), "--methods",
                        "gradient", "--steps", "2", "--targets", str(labels), "--out-dir", str(tmp_path / "cli")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 3 and "photo2.png: no class for it" in p.stderr, p.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("photo0.png 7\n")
    with pytest.raises(Exception, match="class 7 is out of range"):
        evaluate(model, photos, "gradient", tmp_path / "e2", targets=bad)
    assert not (tmp_path / "e2").exists()  # refused before converting anything into it
    assert "the class val.txt gives each image is explained" in (out / "results.md").read_text()


def test_eval_targets_from_class_folders(tiny, tmp_path):
    """eval --targets on a dataset folder: each image scored for the class its folder names (ImageFolder layout)."""
    model, photos = tiny
    root = tmp_path / "val"
    for folder, photo in (("bee", photos[0]), ("2", photos[1]), ("ant", photos[2])):
        (root / folder).mkdir(parents=True)
        shutil.copy(photo, root / folder / photo.name)
    r = evaluate(model, [root], "gradient", tmp_path / "ev", step=8, targets=root)
    assert [(Path(i).parent.name, int(t)) for i, t in zip(r.images, r.targets)] == [("2", 2), ("ant", 0), ("bee", 1)]
    assert "3 images; the class its folder below val names is explained" in (tmp_path / "ev" / "results.md").read_text()
