"""The Python API's arguments: what Captum users pass works, what cannot work is one GigError before any run.

Real sessions on the shipped MobileNetV2: ``GigModel.attribute`` with Captum's one-input tuples, an array as
``explain``'s baseline; refusals for an empty batch, named or non-finite baselines, bad batch sizes, too many
steps, and bad constructor arguments.
"""
from __future__ import annotations

import numpy as np
import pytest

import onnx_gig
from conftest import MODELS
from onnx_gig.errors import GigError


@pytest.fixture(scope="module")
def gm(demo_gig):
    return onnx_gig.GigModel(demo_gig, device="cpu")


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)


def test_captum_one_input_tuples_are_that_input(gm, batch):
    plain = gm.attribute(batch[:1], baselines=0.5, n_steps=4)
    np.testing.assert_array_equal(gm.attribute((batch[:1],), baselines=(0.5,), n_steps=4), plain)


@pytest.mark.parametrize("kind", ["ndarray", "scalar", "list"])
def test_an_array_baseline_for_explain_is_used_as_given(demo_gig, tmp_path, kind):
    photo = MODELS / "images" / "chelsea.png"
    zeros = onnx_gig.explain(demo_gig, photo, steps=4, draw=False, device="cpu")
    given = {"ndarray": np.zeros((3, 224, 224), np.float32), "scalar": 0.0, "list": [[[0.0]], [[0.0]], [[0.0]]]}[kind]
    array = onnx_gig.explain(demo_gig, photo, steps=4, baseline=given, out=tmp_path / "fig.png", device="cpu")
    np.testing.assert_array_equal(array.attributions, zeros.attributions)  # "zeros" is zeros in model space
    assert (tmp_path / "fig.png").is_file()


@pytest.mark.parametrize("kwargs,says", [
    ({"inputs": "empty"}, "empty batch"),
    ({"baselines": "blur"}, "number or an array"),
    ({"baselines": float("nan")}, "NaN or infinity"),
    ({"baselines": np.inf}, "NaN or infinity"),
    ({"baselines": np.array(["a"])}, "array of numbers"),
    ({"internal_batch_size": 0}, "internal_batch_size"),
    ({"internal_batch_size": -1}, "internal_batch_size"),
    ({"internal_batch_size": 3.5}, "internal_batch_size"),
    ({"n_steps": 1001}, "at most 1000"),
])
def test_attribute_refuses_in_one_line(gm, batch, kwargs, says):
    kwargs = dict(kwargs)
    x = batch[:0] if kwargs.pop("inputs", None) == "empty" else batch
    with pytest.raises(GigError, match=says) as e:
        gm.attribute(x, **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs,says", [({"path": 123}, "str or os.PathLike"),
                                         ({"max_memory": -1}, "--max-memory"), ({"threads": -3}, "--threads")])
def test_gigmodel_refuses_bad_arguments_before_reading_the_model(tmp_path, kwargs, says):
    kwargs = {"path": tmp_path / "not_there.onnx", **kwargs}  # a missing model would be the error otherwise
    with pytest.raises(GigError, match=says):
        onnx_gig.GigModel(**kwargs)


def test_explain_refuses_a_top_of_zero(demo_gig):
    with pytest.raises(GigError, match="top must be"):
        onnx_gig.explain(demo_gig, MODELS / "images" / "chelsea.png", top=0, draw=False)
