"""``--ray``: explain and eval on a real local Ray cluster of two nodes (1 CPU each), against the one-process path.

The cluster is ``ray.cluster_utils.Cluster``: a head and a worker node, each its own raylet and object
store on this machine, torn down after the module. One test kills an actor's process mid-job.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image
from ray.cluster_utils import Cluster

from onnx_gig.batch import ExplainOptions, collect_inputs, explain_many
from onnx_gig.distributed import EvalActor, GigActor, explain_ray
from onnx_gig.evaluate import evaluate
from onnx_gig.writer import ResultWriter
from test_eval import tiny_cnn, write_photos

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "models" / "images").glob("*.png"))
STEPS = 4
ACTOR_TITLE = "MapWorker(MapBatches(GigActor))"  # the process title Ray gives a GigActor


@pytest.fixture(scope="module")
def cluster():
    # workers at normal priority, as onnx-gig's own local cluster runs them (Ray's default nice 15 starves them
    # behind any other work on a loaded CI machine)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": 80 << 20,
                                                      "_system_config": {"worker_niceness": 0}})
    try:
        c.add_node(num_cpus=1, object_store_memory=80 << 20)
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The shipped photos, one in a subfolder, and a corrupt file."""
    d = tmp_path_factory.mktemp("photos")
    for i, p in enumerate(PHOTOS):
        dest = d / ("sub" if i == 0 else "") / p.name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(p, dest)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return d


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_row(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        try:
            x, y = float(a[k]), float(b[k])
        except ValueError:
            assert a[k] == b[k], k
        else:
            assert x == pytest.approx(y, rel=1e-5, abs=1e-6), k


def test_same_files_as_one_process(cluster, demo_gig, folder, tmp_path):
    one, on_ray = tmp_path / "one", tmp_path / "ray"
    inputs = [str(folder)]
    files, _ = collect_inputs(inputs)
    with ResultWriter(one, npy=True, options=ExplainOptions(steps=STEPS), inputs=[str(f) for f in files],
                      model=demo_gig) as w:
        for r in explain_many(demo_gig, inputs, ExplainOptions(steps=STEPS), device="cpu"):
            w.write(r)
    s = explain_ray(demo_gig, inputs, ExplainOptions(steps=STEPS), on_ray, address=cluster.address, actors=2,
                    batch_images=2, npy=True, device="cpu")
    assert (s.inputs, s.explained, s.failed, s.actors, s.threads) == (len(PHOTOS) + 1, len(PHOTOS), 1, 2, 1)
    assert sorted(os.listdir(on_ray)) == sorted(os.listdir(one))
    ray_rows, one_rows = rows(on_ray), rows(one)
    assert [r["image"] for r in ray_rows] == [r["image"] for r in one_rows]
    for a, b in zip(ray_rows, one_rows):
        same_row(a, b)
    assert [r["image"] for r in ray_rows if r["error"]] == [str(folder / "broken.png")]
    for npy in one.glob("*.npy"):
        ref, got = np.load(npy), np.load(on_ray / npy.name)
        assert ref.shape == got.shape == (3, 224, 224)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
        assert np.abs(ref).max() > 1e-3  # not all zeros
    for png in one.glob("*_gig.png"):  # drawn by the actor, the same picture as the writer draws
        a = np.asarray(Image.open(png).convert("RGB"), np.int16)
        b = np.asarray(Image.open(on_ray / png.name).convert("RGB"), np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 2


def test_targets_file_on_ray_as_in_one_process(cluster, demo_gig, folder, tmp_path):
    """--targets on Ray: the actors explain each image's class from the file, as one process does."""
    names = sorted(p.name for p in PHOTOS)
    labels = tmp_path / "val.txt"
    labels.write_text("".join(f"{n} {100 + k}\n" for k, n in enumerate(names)))
    options = ExplainOptions(steps=STEPS, targets=str(labels))
    local = {Path(r.path).name: r for r in explain_many(demo_gig, [str(folder)], options, device="cpu") if r.ok}
    explain_ray(demo_gig, [str(folder)], options, tmp_path / "ray", address=cluster.address, actors=2,
                batch_images=1, npy=True, device="cpu")
    got = {Path(r["image"]).name: r for r in rows(tmp_path / "ray")}
    assert {n: int(got[n]["target"]) for n in names} == {n: 100 + k for k, n in enumerate(names)}
    assert got["broken.png"]["error"]  # unreadable: named, the others written
    for n in names:
        assert local[n].target == 100 + names.index(n)
        np.testing.assert_allclose(np.load(tmp_path / "ray" / (Path(n).stem + ".npy")), local[n].attributions,
                                   rtol=0, atol=1e-6)


def actor_pids() -> list[int]:
    """Processes whose title is a GigActor's (Ray sets it; the test finds them as ps would)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if ACTOR_TITLE in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_killed_worker_loses_and_duplicates_nothing(cluster, demo_gig, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    n = 12
    for i in range(n):
        shutil.copy(PHOTOS[i % len(PHOTOS)], src / f"img{i:02d}.png")
    out = tmp_path / "out"
    killed: dict = {}
    earlier = set(actor_pids())  # actors of an earlier job still exiting are not this job's

    finished = threading.Event()

    def kill_one_actor_mid_job():  # until the job ends, however slowly its actors start on a loaded machine
        while not finished.is_set():
            done = list(out.glob("*_gig.png")) if out.is_dir() else []
            pids = [p for p in actor_pids() if p not in earlier]
            if done and pids:
                killed["done_before"] = len(done)
                killed["pid"] = pids[0]
                os.kill(pids[0], signal.SIGKILL)
                return
            time.sleep(0.02)

    t = threading.Thread(target=kill_one_actor_mid_job, daemon=True)
    t.start()
    try:
        s = explain_ray(demo_gig, [src], ExplainOptions(steps=STEPS), out, address=cluster.address, actors=2,
                        batch_images=1, device="cpu")
    finally:
        finished.set()
    t.join(5)
    assert "pid" in killed and killed["done_before"] < n, killed  # killed while images were still to do
    assert s.explained == n and s.failed == 0
    table = rows(out)
    assert sorted(r["image"] for r in table) == sorted(str(p) for p in src.iterdir())
    assert all(not r["error"] for r in table)
    assert sorted(os.listdir(out)) == sorted([f"img{i:02d}_gig.png" for i in range(n)] + [
        "results.csv", "results.jsonl", "results.html", ".onnx-gig-run.jsonl"])
    record = [json.loads(line) for line in (out / ".onnx-gig-run.jsonl").read_text().splitlines()[1:]]
    assert sorted(e["stem"] for e in record) == [f"img{i:02d}" for i in range(n)]  # each image recorded once
    assert sum(s.workers.values()) == n


def test_class_folders_linked_into_a_pool_on_ray(cluster, demo_gig, tmp_path):
    """--targets DATASET on Ray with a class folder that is a link into a pool of photos and a linked photo:
    the rows keep the paths as given (absolute), so each image is in its class folder as in one process."""
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(PHOTOS[1], pool / "cat.png")
    shutil.copy(PHOTOS[2], pool / "cup.png")
    root = tmp_path / "ds"
    (root / "espresso").mkdir(parents=True)
    (root / "tabby").symlink_to(pool)
    (root / "espresso" / "cup.png").symlink_to(pool / "cup.png")
    options = ExplainOptions(steps=STEPS, targets=str(root))
    explain_ray(demo_gig, [str(root / "tabby" / "cat.png"), str(root / "espresso" / "cup.png")], options,
                tmp_path / "out", address=cluster.address, actors=1, device="cpu")
    got = {Path(r["image"]).name: (r["target"], r["error"]) for r in rows(tmp_path / "out")}
    assert got == {"cat.png": ("281", ""), "cup.png": ("967", "")}


def test_eval_on_ray_matches_one_process(cluster, tmp_path):
    model = tiny_cnn(tmp_path / "tiny.onnx")
    photos = write_photos(tmp_path / "photos", 5)
    (tmp_path / "photos" / "zz_broken.png").write_bytes(b"garbage")
    methods = "gradient,gnl-ig,random"
    local = evaluate(model, [photos[0].parent], methods, tmp_path / "local", steps=STEPS, step=8)
    dist = evaluate(model, [photos[0].parent], methods, tmp_path / "dist", steps=STEPS, step=8,
                    ray=cluster.address, actors=2)
    assert dist.images == local.images == [str(p) for p in photos]
    assert dist.failed == local.failed and [f for f, _ in dist.failed] == [str(tmp_path / "photos" / "zz_broken.png")]
    np.testing.assert_array_equal(dist.targets, local.targets)
    for kind in ("deletion", "insertion"):
        for m in dist.methods:
            np.testing.assert_allclose(dist.curves[kind][m], local.curves[kind][m], rtol=0, atol=1e-6)
    assert (tmp_path / "dist" / "per_image.csv").read_text() == (tmp_path / "local" / "per_image.csv").read_text()


def test_eval_targets_on_ray_match_one_process(cluster, tmp_path):
    """eval --targets on Ray: the table travels to the actors; classes, curves and the one left out as locally."""
    model = tiny_cnn(tmp_path / "tiny.onnx")
    photos = write_photos(tmp_path / "photos", 3)
    labels = tmp_path / "val.txt"
    labels.write_text("photo0.png cat\nphoto2.png 0\n")
    local = evaluate(model, photos, "gradient", tmp_path / "local", step=8, targets=labels)
    dist = evaluate(model, photos, "gradient", tmp_path / "dist", step=8, targets=labels, ray=cluster.address,
                    actors=2)
    assert list(dist.targets) == list(local.targets) == [2, 0]
    assert [Path(f).name for f, _ in dist.failed] == [Path(f).name for f, _ in local.failed] == ["photo1.png"]
    np.testing.assert_allclose(dist.curves["deletion"]["gradient"], local.curves["deletion"]["gradient"], atol=1e-6)


def test_an_actor_that_cannot_load_the_model_fails_each_image_in_one_line(tmp_path):
    """A worker that cannot see the model (no shared storage) reports it per image; no actor crash loop."""
    actor = GigActor(model=str(tmp_path / "elsewhere_gig.onnx"), options=ExplainOptions(steps=STEPS), device="cpu",
                     max_memory=None, threads=1, npy=False, figures=True)
    out = actor({"index": np.asarray([0, 1]), "path": np.asarray([str(p) for p in PHOTOS[:2]], dtype=object)})
    metas = [json.loads(m) for m in out["meta"]]
    assert out["index"].tolist() == [0, 1] and [m["path"] for m in metas] == [str(p) for p in PHOTOS[:2]]
    for m in metas:
        assert m["error"].startswith("on Ray node ") and "model file not found" in m["error"]
        assert "\n" not in m["error"] and m["target"] is None
    actor = EvalActor(graphs={"ig": str(tmp_path / "elsewhere_ig.onnx")}, methods=["ig"], kwargs={"device": "cpu"})
    part = pickle.loads(bytes(actor({"index": np.asarray([3]), "path": np.asarray([str(PHOTOS[0])], dtype=object)})
                              ["part"][0]))
    assert len(part.indices) == 0 and [e[:2] for e in part.errors] == [(3, str(PHOTOS[0]))]
    assert part.errors[0][2].startswith("on Ray node ") and "model file not found" in part.errors[0][2]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_ray_starts_a_local_ray(demo_gig, folder, tmp_path):
    out = tmp_path / "cli"
    p = run_cli("explain", demo_gig, folder, "--ray", "--actors", "1", "--steps", STEPS, "--out-dir", out, "--npy")
    assert p.returncode == 3, p.stderr  # SOME_FAILED: the broken file
    assert "broken.png" in p.stderr and "1 Ray actor x" in p.stdout and f"{len(PHOTOS)} explained" in p.stdout
    assert len(rows(out)) == len(PHOTOS) + 1
    assert len(list(out.glob("*_gig.png"))) == len(list(out.glob("*.npy"))) == len(PHOTOS)


def test_cli_eval_joins_a_cluster(cluster, tmp_path):
    model = tiny_cnn(tmp_path / "tiny.onnx")
    photos = write_photos(tmp_path / "photos" / "nested", 3)  # folders are searched recursively
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    p = run_cli("eval", model, tmp_path / "photos", "--methods", "gradient,random", "--step", "16", "--ray",
                cluster.address, "--actors", "2", "--out-dir", tmp_path / "ev")
    assert p.returncode == 3, p.stderr  # SOME_FAILED: one image left out
    assert "3 images (1 left out)" in p.stdout
    ours = [ln for ln in p.stderr.splitlines() if ln.startswith("onnx-gig:")]
    assert len(ours) == 1 and ours[0].startswith("onnx-gig: error: ") and "broken.jpg" in ours[0], p.stderr
    assert [r["method"] for r in rows(tmp_path / "ev")] == ["gradient", "random"]
    with open(tmp_path / "ev" / "per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    assert sorted({Path(r["image"]).name for r in per_image}) == sorted(p.name for p in photos)


def test_without_ray_one_line_says_how_to_install(demo_model, demo_gig, folder, tmp_path):
    blocker = tmp_path / "noray"
    blocker.mkdir()
    (blocker / "ray.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    for args in (("explain", demo_gig, folder, "--ray", "--out-dir", tmp_path / "o"),
                 ("eval", demo_model, folder, "--ray", "--out-dir", tmp_path / "e")):
        p = run_cli(*args, env=env)
        assert p.returncode == 2 and p.stderr.strip().splitlines() == [
            "onnx-gig: error: --ray needs Ray: pip install 'onnx-gig[ray]'"], p.stderr
        assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_a_run_interrupted_in_one_process_is_finished_on_ray(cluster, demo_gig, folder, tmp_path):
    """--resume reads the same run record in both modes: a job begun on one machine finishes on a cluster,
    running only what is left and keeping what was written."""
    out = tmp_path / "out"
    listing = collect_inputs([str(folder)])
    opts = ExplainOptions(steps=STEPS)
    with pytest.raises(KeyboardInterrupt):
        with ResultWriter(out, options=opts, inputs=[str(f) for f in listing.files], model=demo_gig) as w:
            for r in explain_many(demo_gig, listing, opts, device="cpu"):
                w.write(r)
                if r.ok:
                    raise KeyboardInterrupt  # as Ctrl-C after the first figure
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_gig.png")}
    assert len(before) == 1 and not (out / "results.csv").exists()
    s = explain_ray(demo_gig, [str(folder)], opts, out, address=cluster.address, actors=2, batch_images=1,
                    device="cpu", resume=True)
    assert (s.resumed, s.explained, s.failed) == (1, len(PHOTOS), 1)
    assert sum(s.workers.values()) == len(PHOTOS)  # the two photos left and the broken file, nothing twice
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before
    table = rows(out)
    assert [r["image"] for r in table] == [str(f) for f in listing.files]
    assert all((out / r["figure"]).is_file() for r in table if not r["error"])


def test_an_eval_interrupted_in_one_process_is_finished_on_ray(cluster, tmp_path, monkeypatch):
    import onnx_gig.evaluate as ev

    model = tiny_cnn(tmp_path / "tiny.onnx")
    photos = write_photos(tmp_path / "photos", 5)
    methods = "gradient,gnl-ig,random"
    local = evaluate(model, photos, methods, tmp_path / "local", steps=STEPS, step=8)
    monkeypatch.setattr(ev, "EVAL_CHUNK", 2)
    real_run, calls = ev.EvalWorker.run, []

    def stop_in_second_chunk(self, items, bar=None):
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, items, bar)

    monkeypatch.setattr(ev.EvalWorker, "run", stop_in_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, photos, methods, tmp_path / "mixed", steps=STEPS, step=8)
    monkeypatch.setattr(ev.EvalWorker, "run", real_run)
    done = evaluate(model, photos, methods, tmp_path / "mixed", steps=STEPS, step=8, ray=cluster.address, actors=2,
                    resume=True)
    assert done.images == local.images
    for kind in ("deletion", "insertion"):
        for m in done.methods:
            np.testing.assert_allclose(done.curves[kind][m], local.curves[kind][m], rtol=0, atol=1e-6)
    assert (tmp_path / "mixed" / "per_image.csv").read_text() == (tmp_path / "local" / "per_image.csv").read_text()
    assert not (tmp_path / "mixed" / "parts").exists()
