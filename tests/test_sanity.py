"""The cascading-randomisation sanity check on a tiny ReLU/MaxPool CNN: real conversions, real sessions."""
from __future__ import annotations

import csv

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from onnx_gig.errors import InputError
from onnx_gig.sanity import (default_depths, parameterised_layers, parse_depths, randomise, sanity_check)
from test_eval import tiny_cnn, write_photos


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("sanity")
    return tiny_cnn(d / "tiny.onnx"), write_photos(d / "photos", 2, seed=5)


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_layers_in_order_and_cascading_randomisation(tiny):
    proto = onnx.load(str(tiny[0]))
    layers = parameterised_layers(proto)
    assert [(l.name, l.params) for l in layers] == [("conv1", ("w1", "b1")), ("conv2", ("w2", "b2")),
                                                     ("fc", ("wf", "bf"))]
    orig = weights(proto)
    assert all(np.array_equal(orig[k], v) for k, v in weights(randomise(proto, 0)).items())
    d1, d2 = weights(randomise(proto, 1, seed=7)), weights(randomise(proto, 2, seed=7))
    for k in ("wf", "bf"):  # the top layer: random, the same draw at every depth (cascading)
        assert not np.allclose(d1[k], orig[k]) and np.array_equal(d1[k], d2[k])
        assert d1[k].shape == orig[k].shape and d1[k].dtype == orig[k].dtype
    for k in ("w1", "b1", "w2", "b2"):
        assert np.array_equal(d1[k], orig[k])
    assert not np.allclose(d2["w2"], orig["w2"]) and np.array_equal(d2["w1"], orig["w1"])
    # same scale: normal with the original standard deviation
    big = weights(randomise(proto, 3, seed=1))["w2"]
    assert big.std() == pytest.approx(orig["w2"].std(), rel=0.25)
    assert not np.array_equal(weights(randomise(proto, 1, seed=8))["wf"], d1["wf"])
    with pytest.raises(InputError):
        randomise(proto, 4)


def test_depth_schedules():
    assert default_depths(3) == [0, 1, 2, 3]
    assert default_depths(53) == [0, 1, 2, 4, 8, 16, 32, 53]
    assert default_depths(53, max_points=4)[0] == 0 and default_depths(53, max_points=4)[-1] == 53
    assert parse_depths("1,all", 53) == [0, 1, 53]
    assert parse_depths([2, 0], 3) == [0, 2]
    with pytest.raises(InputError):
        parse_depths("1,99", 53)
    with pytest.raises(InputError):
        parse_depths("top", 53)


def test_sanity_table_has_one_row_per_depth_and_starts_at_one(tiny, tmp_path):
    model, photos = tiny
    methods = ["gradient", "guided_backprop", "ig", "gnl-ig"]
    r = sanity_check(model, photos, methods, tmp_path / "s", steps=4)
    assert r.depths == [0, 1, 2, 3]
    for kind in ("abs", "signed"):
        for m in methods:
            c = r.corr[kind][m]
            assert c.shape == (4, 2)
            np.testing.assert_allclose(c[0], 1.0)  # depth 0: the original model against itself
            assert np.all(c[1:] <= 1.0 + 1e-9)
    # randomising the whole network changes the gradient map
    assert r.corr["abs"]["gradient"][-1].mean() < 0.9
    table = r.table("abs")
    assert len(table.splitlines()) == 2 + 4
    assert "| 0 | `-` |" in table and "`fc`" in table and "`conv1`" in table
    rows = list(csv.DictReader((tmp_path / "s" / "sanity.csv").open()))
    assert len(rows) == 2 * 4 * len(methods)
    md = (tmp_path / "s" / "sanity.md").read_text()
    assert "Signed" in md and "gnl-ig" in md
    assert Image.open(tmp_path / "s" / "sanity.png").width > 400


def test_sanity_random_method_is_a_model_independent_control(tiny, tmp_path):
    model, photos = tiny
    r = sanity_check(model, photos[:1], "random", None, depths="all")
    np.testing.assert_allclose(r.corr["abs"]["random"], 1.0)  # the same map whatever the model: it fails
