"""End to end on a small exported PyTorch CNN: onnx-gig against Captum on torch autograd.

Plain IG is compared with Captum's IntegratedGradients on the same weights; GNL-IG with
Captum on the same network whose ReLU, ReLU6 and max-pool are guided autograd Functions
(tests/torch_nets.py), for every quadrature rule.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from captum.attr import IntegratedGradients

from onnx_gig import GigModel, convert
from onnx_gig.quadrature import RULES, schedule
from torch_nets import export, seeded_small_cnn

METHODS = [("ig", "plain"), ("gnl-ig", "guided"), ("gnl-ig-authors", "authors")]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    model = seeded_small_cnn()
    folder = tmp_path_factory.mktemp("net")
    src = folder / "net.onnx"
    src.write_bytes(export(model, torch.zeros(1, 3, 20, 20)))
    paths = {m: convert(src, folder / f"net_{m}.onnx", method=m).path for m, _ in METHODS}
    return model, paths


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(1)) * 1.5


def captum_ig(model, mode, x, baseline, target, steps, rule):
    model.mode = mode
    try:
        attr, delta = IntegratedGradients(model).attribute(
            x, baselines=baseline, target=target, n_steps=steps, method=rule, return_convergence_delta=True)
    finally:
        model.mode = "plain"
    return attr.detach().numpy(), delta.detach().numpy()


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("method,mode", METHODS)
def test_matches_captum_for_every_rule(net, images, method, mode, rule):
    model, paths = net
    steps = 24
    ex = GigModel(paths[method], device="cpu").explain(images.numpy(), n_steps=steps, method=rule)
    with torch.no_grad():
        predicted = model(images).argmax(1).numpy()
    np.testing.assert_array_equal(ex.target, predicted)
    ref, _ = captum_ig(model, mode, images, images * 0, torch.as_tensor(ex.target), steps, rule)
    assert rel_err(ex.attributions, ref) < 1e-4


def test_guided_differs_from_plain(net, images):
    """The guided rules change the answer on this net (so the comparisons above can fail)."""
    _, paths = net
    plain = GigModel(paths["ig"], device="cpu").attribute(images.numpy(), n_steps=16)
    guided = GigModel(paths["gnl-ig"], device="cpu").attribute(images.numpy(), n_steps=16)
    authors = GigModel(paths["gnl-ig-authors"], device="cpu").attribute(images.numpy(), n_steps=16)
    assert rel_err(guided, plain) > 1e-2
    assert rel_err(authors, guided) > 1e-4  # overlapping 3x3/s2 pools: the authors' mask is not exact


def test_completeness_for_plain_ig(net, images):
    model, paths = net
    gm = GigModel(paths["ig"], device="cpu")
    ex = gm.explain(images.numpy(), n_steps=50)
    with torch.no_grad():
        logits = model(images).numpy()
        base = model(images * 0).numpy()
    rows = np.arange(len(ex.target))
    np.testing.assert_allclose(ex.target_score, logits[rows, ex.target], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ex.baseline_score, base[rows, ex.target], rtol=1e-5, atol=1e-5)
    gap = ex.target_score - ex.baseline_score
    sums = ex.attributions.reshape(len(rows), -1).sum(1)
    assert np.all(np.abs(sums - gap) <= 0.02 * np.abs(gap) + 1e-4)
    _, delta = captum_ig(model, "plain", images, images * 0, torch.as_tensor(ex.target), 50, "gausslegendre")
    np.testing.assert_allclose(ex.convergence_delta, delta, atol=2e-4 * np.abs(gap).max())


@pytest.mark.parametrize("method,mode", METHODS[:2])
def test_explicit_target_and_baseline(net, images, method, mode):
    model, paths = net
    target = np.array([2, 0, 5])
    baseline = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(7)) * 0.3
    ours = GigModel(paths[method], device="cpu").attribute(
        images.numpy(), baselines=baseline.numpy(), target=target, n_steps=12, method="riemann_middle")
    ref, _ = captum_ig(model, mode, images, baseline.expand_as(images), torch.as_tensor(target), 12, "riemann_middle")
    assert rel_err(ours, ref) < 1e-4


def test_chunks_add_up(net, images):
    """Steps and images split into chunks give the one-run answer."""
    _, paths = net
    gm = GigModel(paths["gnl-ig"], device="cpu")
    whole = gm.attribute(images.numpy(), n_steps=30)
    for ibs in (1, 7, 40):
        chunked = gm.attribute(images.numpy(), n_steps=30, internal_batch_size=ibs)
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())
    tiny_budget = GigModel(paths["gnl-ig"], device="cpu", max_memory=gm.bytes_per_step * 4)
    assert tiny_budget.steps_per_chunk(3, 30) == 1
    np.testing.assert_allclose(tiny_budget.attribute(images.numpy(), n_steps=30), whole,
                               rtol=1e-5, atol=1e-6 * np.abs(whole).max())


def test_server_sends_only_the_image(net, images):
    """Defaults live in the graph: image in, attributions of the predicted class (50 Gauss-Legendre steps) out."""
    model, paths = net
    sess = ort.InferenceSession(str(paths["gnl-ig"]), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {"image": images.numpy()})))
    assert {"attributions", "target_class", "target_score", "baseline_score", "scores", "logits"} <= set(names)
    with torch.no_grad():
        np.testing.assert_allclose(out["logits"], model(images).numpy(), rtol=1e-4, atol=1e-5)
    ref, _ = captum_ig(model, "guided", images, images * 0, torch.as_tensor(out["target_class"]), 50, "gausslegendre")
    assert rel_err(out["attributions"], ref) < 1e-4
    assert [i.name for i in sess.get_inputs()] == ["image"]  # the only required input
    assert {i.name for i in sess.get_overridable_initializers()} == {"baseline", "alphas", "step_weights", "target"}
    alphas, weights = schedule(50, "gausslegendre")
    explicit = sess.run(["attributions"], {"image": images.numpy(), "alphas": alphas, "step_weights": weights,
                                           "baseline": np.zeros((1, 3, 20, 20), np.float32),
                                           "target": out["target_class"]})[0]
    np.testing.assert_allclose(explicit, out["attributions"], rtol=1e-6, atol=1e-7)


def test_single_step_riemann_right_is_the_gradient(net, images):
    """One riemann_right step: attributions = (x - 0) * gradient at x (input x gradient)."""
    model, paths = net
    x = images.clone().requires_grad_()
    out = model(x)
    t = out.argmax(1)
    (grad,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), x)
    ours = GigModel(paths["ig"], device="cpu").attribute(images.numpy(), n_steps=1, method="riemann_right")
    assert rel_err(ours, (grad * images).numpy()) < 1e-5
