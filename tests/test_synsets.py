"""ImageNet's own label files: classes named by WordNet ID (``n02123045``), in LOC_val_solution.csv and in
``val/<synset>/`` class folders.

Oracles: the shipped label list (models/imagenet_classes.txt, written from torchvision's weights) for the
synsets' order, ImageNet's published IDs of a few classes, and the one-image path with ``--target K``.
"""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS
from onnx_gig import explain
from onnx_gig.errors import InputError
from onnx_gig.synsets import imagenet_labels, synsets
from onnx_gig.targets import class_index, read_targets

PHOTOS = MODELS / "images"
LABELS = (MODELS / "imagenet_classes.txt").read_text().splitlines()
STEPS = 2
# ImageNet's IDs of a few classes, with their indices in torchvision's numbering
KNOWN = {"n01440764": 0, "n02123045": 281, "n02123159": 282, "n02124075": 285, "n07920052": 967, "n15075141": 999}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_the_shipped_synsets_are_imagenets_1000_in_order():
    ids = [w for w, _ in synsets()]
    assert len(ids) == 1000 == len(set(ids)) and ids == sorted(ids)
    assert {w: ids.index(w) for w in KNOWN} == KNOWN
    first_names = [label.split(",")[0].strip().lower() for label in LABELS]
    assert all(first_names[k] in lemmas for k, (_, lemmas) in enumerate(synsets()))  # each agrees with its label
    assert imagenet_labels(LABELS)
    assert not imagenet_labels(LABELS[1:] + LABELS[:1]) and not imagenet_labels(LABELS[:999])  # another order


@pytest.mark.parametrize("labels", [LABELS, [f"{w} {x}" for (w, _), x in zip(synsets(), LABELS)], None])
def test_a_synset_is_its_index_for_an_imagenet_model(labels):
    """The model's labels as torchvision's names, as Caffe's synset_words.txt, or none at all."""
    for wnid, k in KNOWN.items():
        assert class_index(wnid, labels, 1000) == k


def test_a_synset_is_refused_where_the_model_is_not_imagenets(tmp_path):
    with pytest.raises(InputError, match="the model's 10 labels are not ImageNet-1k's"):
        class_index("n02123045", LABELS[:10])
    with pytest.raises(InputError, match="the model has 10 classes, not 1000"):
        class_index("n02123045", None, 10)
    with pytest.raises(InputError, match="not one of ImageNet-1k's 1000 classes"):
        class_index("n00000001", LABELS)
    f = tmp_path / "val.txt"
    f.write_text("a.png n02123045\n")
    table = read_targets(f, None)  # no labels: the class count decides, once it is known
    table.check(1000)
    with pytest.raises(InputError, match="names classes by ImageNet-1k WordNet IDs .* the model has 10 classes"):
        table.check(10)
    with pytest.raises(InputError, match="the model says neither its labels nor its class count"):
        class_index("n02123159", None)  # --target: nothing would confirm it later
    subset = [w for w, _ in synsets()][::5]  # a 200-class model labelled by synsets: its own labels win
    assert class_index(subset[1], subset) == 1 and class_index(subset[7], subset) == 7
    with pytest.raises(InputError, match="the model's 200 labels are not ImageNet-1k's"):
        class_index("n01443537", subset)  # ImageNet's class 1, which this model has not
    f.write_text("ImageId,PredictionString\na,%s 1 2 3 4\n" % subset[7])  # LOC's boxes after its own synset
    assert read_targets(f, subset).lookup("a.png") == 7


def test_loc_val_solution_csv_as_imagenet_ships_it(demo_gig, tmp_path):
    """ImageId,PredictionString: no suffix on the image, the class then its boxes, one or more of them."""
    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(PHOTOS / "chelsea.png", val / "ILSVRC2012_val_00000001.png")
    shutil.copy(PHOTOS / "coffee.png", val / "ILSVRC2012_val_00000002.png")
    solution = tmp_path / "LOC_val_solution.csv"
    solution.write_text("ImageId,PredictionString\n"
                        "ILSVRC2012_val_00000002,n07920052 12 30 200 210 \n"
                        "ILSVRC2012_val_00000001,n02123159 1 2 100 120 n02123159 90 8 220 222 \n"
                        "ILSVRC2012_val_00009999,n01440764 1 1 5 5 \n")
    out = tmp_path / "out"
    p = run_cli("explain", demo_gig, val, "--targets", solution, "--out-dir", out, "--steps", STEPS, "--npy")
    assert p.returncode == 0, p.stderr
    with open(out / "results.csv", newline="") as f:
        got = {Path(r["image"]).stem: r for r in csv.DictReader(f)}
    assert {k: r["target"] for k, r in got.items()} == {"ILSVRC2012_val_00000001": "282", "ILSVRC2012_val_00000002": "967"}
    one = explain(demo_gig, val / "ILSVRC2012_val_00000001.png", target=282, steps=STEPS, out=tmp_path / "one.png",
                  device="cpu")
    np.testing.assert_allclose(np.load(out / "ILSVRC2012_val_00000001.npy"), one.attributions, rtol=1e-5, atol=1e-7)


def test_synset_class_folders_and_target_by_synset(demo_gig, tmp_path):
    root = tmp_path / "val"
    for wnid, photo in (("n02123045", "chelsea"), ("n07920052", "coffee")):
        (root / wnid).mkdir(parents=True)
        shutil.copy(PHOTOS / f"{photo}.png", root / wnid / f"{photo}.png")
    (root / "n99999999").mkdir()  # no ImageNet class: its image fails, naming why
    shutil.copy(PHOTOS / "camera.png", root / "n99999999" / "camera.png")
    out = tmp_path / "out"
    p = run_cli("explain", demo_gig, root, "--targets", root, "--out-dir", out, "--steps", STEPS, "--no-figures")
    assert p.returncode == 3 and "camera.png: its folder 'n99999999'" in p.stderr, p.stderr
    assert "not one of ImageNet-1k's 1000 classes" in p.stderr
    with open(out / "results.csv", newline="") as f:
        got = {Path(r["image"]).name: r["target"] for r in csv.DictReader(f)}
    assert got == {"chelsea.png": "281", "coffee.png": "967", "camera.png": ""}
    one = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", "--target", "n02123159", "--steps", STEPS,
                  "--out", tmp_path / "one.png", "--save-npy", tmp_path / "one.npy")
    by_index = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", "--target", "282", "--steps", STEPS,
                       "--out", tmp_path / "two.png", "--save-npy", tmp_path / "two.npy")
    assert one.returncode == 0 == by_index.returncode, one.stderr + by_index.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy"))
