"""Deletion and insertion on hand-computable cases: real onnxruntime sessions on ONNX files built by hand."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_gig.errors import InputError
from onnx_gig.metrics import (OnnxForward, auc, blur, deletion, insertion, pixel_order, rankdata, spearman,
                              step_counts)

H = W = 4
K, C1 = 10.0, 5.0  # class-0 logit = K * (mean of the region over pixels and channels); class-1 logit = C1
REGION = [0, 1, 2, 3]  # the first image row, as flat pixel indices


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def gemm_weights() -> tuple[np.ndarray, np.ndarray]:
    w = np.zeros((3 * H * W, 2), np.float32)
    for c in range(3):
        w[[c * H * W + p for p in REGION], 0] = K / (3 * len(REGION))
    return w, np.asarray([0.0, C1], np.float32)


@pytest.fixture(scope="module")
def region_model(tmp_path_factory):
    """Flatten -> Gemm: softmax p0 = sigmoid(K * m - C1), m = mean of the region (all channels)."""
    w, b = gemm_weights()
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "w", "b"], ["logits"])],
        "region", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("metrics") / "region.onnx"
    onnx.save(model, str(path))
    return path


def perfect_map() -> np.ndarray:
    m = np.zeros((H, W), np.float32)
    m.ravel()[REGION] = 1.0
    return m


def test_deletion_of_the_region_first_gives_the_closed_form_curve(region_model):
    x = np.ones((3, H, W), np.float32)
    c = deletion(OnnxForward(region_model), x, perfect_map(), step=1)
    # after i pixels deleted the region mean is max(0, 4 - i) / 4
    want = [sigmoid(K * max(0, 4 - i) / 4 - C1) for i in range(17)]
    np.testing.assert_allclose(c.y, want, rtol=1e-5)
    np.testing.assert_allclose(c.x, np.arange(17) / 16)
    s5, s25, sm25, sm5 = sigmoid(5), sigmoid(2.5), sigmoid(-2.5), sigmoid(-5)
    area = ((s5 + s25) / 2 + (s25 + 0.5) / 2 + (0.5 + sm25) / 2 + (sm25 + sm5) / 2 + 12 * sm5) / 16
    assert c.area == pytest.approx(area, rel=1e-5)
    assert c.target == 0


def test_default_step_is_one_row(region_model):
    x = np.ones((3, H, W), np.float32)
    c = deletion(OnnxForward(region_model), x, perfect_map())
    np.testing.assert_allclose(c.x, [0, 0.25, 0.5, 0.75, 1.0])
    # the whole region goes in the first step: sigmoid(5), then sigmoid(-5) four times
    assert c.area == pytest.approx(0.25 * (0.5 + 3 * sigmoid(-5)), rel=1e-5)


def test_step_option_and_a_partial_last_step(region_model):
    x = np.ones((3, H, W), np.float32)
    c = deletion(OnnxForward(region_model), x, perfect_map(), step=3)
    np.testing.assert_allclose(c.x * 16, [0, 3, 6, 9, 12, 15, 16])
    np.testing.assert_array_equal(step_counts(16, 3), [0, 3, 6, 9, 12, 15, 16])
    np.testing.assert_array_equal(step_counts(16, 16), [0, 16])
    with pytest.raises(InputError):
        step_counts(16, 0)


def naive_curve(x, start, end, saliency, step, target):
    """One image at a time, with the model written in numpy: the reference for the batched code."""
    w, b = gemm_weights()
    order = np.argsort(-saliency.ravel(), kind="stable")
    ys = []
    for n in [min(i * step, H * W) for i in range(math.ceil(H * W / step) + 1)]:
        img = start.copy().reshape(3, -1)
        img[:, order[:n]] = end.reshape(3, -1)[:, order[:n]]
        z = img.reshape(1, -1).astype(np.float64) @ w + b
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        ys.append(p[0, target])
    return np.asarray(ys)


@pytest.mark.parametrize("step", [1, 4, 5])
def test_deletion_and_insertion_match_a_naive_reference(region_model, rng, step):
    x = rng.uniform(-1, 2, (3, H, W)).astype(np.float32)
    sal = rng.random((H, W)).astype(np.float32)
    f = OnnxForward(region_model)
    d = deletion(f, x, sal, step=step, target=0)
    np.testing.assert_allclose(d.y, naive_curve(x, x, np.zeros_like(x), sal, step, 0), rtol=1e-5, atol=1e-7)
    i = insertion(f, x, sal, step=step, target=0)
    np.testing.assert_allclose(i.y, naive_curve(x, blur(x), x, sal, step, 0), rtol=1e-5, atol=1e-7)
    assert i.y[-1] == pytest.approx(d.y[0], rel=1e-6)  # both end/start at the clean image


def test_blur_is_rise_11x11_sigma_5(rng):
    from onnx_gig.imageio import gaussian_blur

    x = rng.random((3, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(blur(x), gaussian_blur(x, "NCHW", 11, 5.0))


def test_a_perfect_map_beats_random_maps(region_model, rng):
    x = np.full((3, H, W), 0.2, np.float32)
    x[:, 0, :] = 1.0  # the region is bright: the model is sure of class 0
    f = OnnxForward(region_model)
    good_d = deletion(f, x, perfect_map()).area
    good_i = insertion(f, x, perfect_map()).area
    for _ in range(5):
        sal = rng.random((H, W))
        sal.ravel()[REGION] *= 0.5  # never the perfect order
        assert good_d < deletion(f, x, sal).area
        assert good_i > insertion(f, x, sal).area


def test_batch_size_does_not_change_results_and_bounds_the_passes(region_model, rng):
    x = rng.uniform(-1, 2, (3, H, W)).astype(np.float32)
    sal = rng.random((H, W))
    curves = {}
    for bs in (1, 5, 64):
        f = OnnxForward(region_model)
        curves[bs] = deletion(f, x, sal, step=1, batch_size=bs)
        assert f.calls == math.ceil(17 / bs)  # never one pass per step beyond the batch size
    for bs in (1, 5):
        np.testing.assert_allclose(curves[bs].y, curves[64].y, rtol=1e-6, atol=1e-9)
        assert curves[bs].area == pytest.approx(curves[64].area, rel=1e-6)


def test_any_forward_callable_and_probabilities(rng):
    """Maps and models made elsewhere: a plain numpy forward returning probabilities."""
    w, b = gemm_weights()

    def probs(batch):
        z = batch.reshape(len(batch), -1).astype(np.float64) @ w + b
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    x = rng.uniform(-1, 2, (3, H, W)).astype(np.float32)
    sal = rng.random((H, W))
    c = deletion(probs, x, sal, step=2, softmax=False, target=0)
    np.testing.assert_allclose(c.y, naive_curve(x, x, np.zeros_like(x), sal, 2, 0), rtol=1e-9)
    # NHWC and a plain [H, W] input take the same path
    c2 = deletion(lambda bt: probs(np.moveaxis(bt, -1, 1)), np.moveaxis(x, 0, -1), sal, step=2, softmax=False,
                  target=0, layout="NHWC")
    np.testing.assert_allclose(c2.y, c.y, rtol=1e-12)


def test_bad_maps_are_refused(region_model):
    f = OnnxForward(region_model)
    x = np.ones((3, H, W), np.float32)
    with pytest.raises(InputError):
        deletion(f, x, np.ones((H, W + 1)))
    with pytest.raises(InputError):
        deletion(f, x, np.full((H, W), np.nan))
    with pytest.raises(InputError):
        deletion(f, x, np.ones((H, W)), batch_size=0)


def test_pixel_order_is_descending_and_stable():
    np.testing.assert_array_equal(pixel_order(np.array([[0.1, 0.9], [0.9, 0.0]])), [1, 2, 0, 3])


def test_trapezoid_area_of_known_curves():
    assert auc([1, 0]) == pytest.approx(0.5)
    assert auc(np.linspace(0, 1, 11)) == pytest.approx(0.5)
    assert auc([0, 0.25, 1]) == pytest.approx(0.375)  # x^2 on 3 points: 0.5*(0+0.25)/2 + 0.5*(0.25+1)/2
    assert auc([1, 1], [0, 0.5]) == pytest.approx(0.5)
    with pytest.raises(InputError):
        auc([1])


def test_spearman_and_ranks_match_scipy(rng):
    stats = pytest.importorskip("scipy.stats")
    a = rng.integers(0, 5, 200).astype(float)  # many ties
    b = a + rng.integers(0, 3, 200)
    np.testing.assert_allclose(rankdata(a), stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    c, d = rng.random((7, 9)), rng.random((7, 9))
    assert spearman(c, d) == pytest.approx(stats.spearmanr(c.ravel(), d.ravel()).statistic, abs=1e-12)
    assert spearman(c, c) == pytest.approx(1.0)
    assert spearman(c, -c) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.ones(5), np.arange(5)))
