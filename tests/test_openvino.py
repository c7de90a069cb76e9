"""Portability: the converted model on OpenVINO, a second and independent runtime, against onnxruntime.

The unchanged file is read by OpenVINO directly (it then runs with the model's defaults: the predicted
class, the built-in steps and baseline); with its defaulted inputs promoted to real inputs, per-image targets,
other schedules and baselines are compared too. Agreement: max |a - b| / max |b| <= 1e-4 for the
attributions, per model and image batch. The models: the shipped MobileNetV2 and the small CNN with an
overlapping 3x3/s2 max-pool (tests/torch_nets.py), under each rule set.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from onnx_gig import GigModel, convert
from onnx_gig.imageio import Preprocess, load_input
from onnx_gig.serving.openvino_runtime import shared_conv_transpose_weights

TOL = 1e-4


def need(module: str):
    """An optional test dependency: skipped on a developer's machine without it; in CI (which installs the
    test extra) a missing package fails."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module", autouse=True)
def openvino():
    return need("openvino")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def assert_same(ov_ex, ort_ex, tol: float = TOL) -> None:
    np.testing.assert_array_equal(ov_ex.target, ort_ex.target)
    assert rel(ov_ex.scores, ort_ex.scores) < tol
    assert rel(ov_ex.target_score, ort_ex.target_score) < tol
    assert rel(ov_ex.baseline_score, ort_ex.baseline_score) < tol
    for name, v in ort_ex.outputs.items():
        assert rel(ov_ex.outputs[name], v) < tol, name
    err = rel(ov_ex.attributions, ort_ex.attributions)
    assert err < tol, f"OpenVINO and onnxruntime attributions differ by {err:.2e} (relative to the max)"


def test_demo_model_unchanged(demo_gig, demo_model):
    """MobileNetV2 as converted, read by OpenVINO from the file, on the shipped photo."""
    from onnx_gig.serving.openvino_runtime import OpenVinoGigModel

    gm = GigModel(demo_gig, device="cpu")
    x, _ = load_input(demo_model.parent / "images" / "chelsea.png", Preprocess.from_json(gm.preprocess_json),
                      gm.input_shape)
    ref = gm.explain(x)
    ov = OpenVinoGigModel(demo_gig, unchanged=True)
    assert ov.input_names == [gm.input_name]  # the defaults are constants there
    assert_same(ov.explain(x), ref)
    assert int(ref.target[0]) in {281, 282, 283, 284, 285}  # a domestic cat


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small CNN with an overlapping 3x3/stride-2 max-pool, converted with every rule set."""
    torch = pytest.importorskip("torch")
    from torch_nets import export, seeded_small_cnn

    folder = tmp_path_factory.mktemp("ov")
    src = folder / "net.onnx"
    src.write_bytes(export(seeded_small_cnn(), torch.zeros(1, 3, 20, 20)))
    return {m: convert(src, folder / f"net_{m}.onnx", method=m).path for m in ("gnl-ig", "ig", "gnl-ig-authors")}


@pytest.fixture(scope="module")
def images():
    return (np.random.default_rng(3).standard_normal((3, 3, 20, 20)) * 1.5).astype(np.float32)


@pytest.mark.parametrize("method", ["gnl-ig", "ig", "gnl-ig-authors"])
def test_overlapping_maxpool_model(small, images, method):
    from onnx_gig.serving.openvino_runtime import OpenVinoGigModel

    gm = GigModel(small[method], device="cpu")
    # the file as written, with the model's defaults
    assert_same(OpenVinoGigModel(small[method], unchanged=True).explain(images), gm.explain(images))
    # the whole contract: a target per image, another rule and step count, a baseline per image
    ov = OpenVinoGigModel(small[method])
    baseline = images * 0.25
    ref = gm.explain(images, baseline, [1, 4, 2], 12, "riemann_trapezoid")
    got = ov.explain(images, baseline, [1, 4, 2], 12, "riemann_trapezoid")
    np.testing.assert_array_equal(got.target, [1, 4, 2])
    assert_same(got, ref)
    # and in memory-bounded chunks (step chunks add up)
    ov.max_memory = ov.bytes_per_step * 5
    assert_same(ov.explain(images, baseline, [1, 4, 2], 12, "riemann_trapezoid"), ref)


def square_strided_net(torch):
    """A stride-2 conv with as many output as input channels: its backward may be a ConvTranspose that shares
    the square weight with the forward Conv, which OpenVINO computes wrongly."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            y = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    return Net().eval()


def test_square_strided_conv(tmp_path, images):
    torch = pytest.importorskip("torch")
    import onnx
    from torch_nets import export

    from onnx_gig.serving.openvino_runtime import OpenVinoGigModel

    src = tmp_path / "sq.onnx"
    src.write_bytes(export(square_strided_net(torch), torch.zeros(1, 3, 20, 20)))
    path = convert(src, tmp_path / "sq_gig.onnx", method="ig").path
    ref = GigModel(path, device="cpu").explain(images)
    # with the serving workaround (each ConvTranspose gets its own copy of its weight) OpenVINO agrees
    assert_same(OpenVinoGigModel(path).explain(images), ref)
    shared = shared_conv_transpose_weights(onnx.load(str(path), load_external_data=False))
    unchanged = OpenVinoGigModel(path, unchanged=True).explain(images)
    if shared and rel(unchanged.attributions, ref.attributions) > TOL:
        pytest.xfail(f"the converter shares {shared} between a Conv and a ConvTranspose, which OpenVINO computes "
                     "wrongly; the converter change is described in docs/serving.md")
    assert_same(unchanged, ref)
