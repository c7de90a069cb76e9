"""onnx-gig serve: KServe's model server on 127.0.0.1, real HTTP requests, answers equal to local explain.

One server process (the real CLI) serves two models: the small CNN with an overlapping max-pool and the
shipped MobileNetV2. Requests carry several images, each with its own target; every answer is compared with
``onnx_gig.explain`` run locally on the same photo: max |a - b| / max |b| <= 1e-5 per image. The server is
stopped with SIGTERM (killed if it does not stop) and every wait is bounded.
"""
from __future__ import annotations

import base64
import contextlib
import importlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import stop_server
from onnx_gig import GigModel, convert, explain
from onnx_gig.imageio import Preprocess, load_input
from onnx_gig.serving.service import decode_tensor, encode_photo

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = [ROOT / "models" / "images" / n for n in ("chelsea.png", "coffee.png", "camera.png")]
TOL = 1e-5
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
START_TIMEOUT = 120  # seconds for the server to import, load both models and answer ready


def need_installed(module: str) -> None:
    """An optional test dependency, run in the server's process only: skipped on a developer's machine without
    it; in CI (which installs the test extra) a missing package fails. Not imported here: kserve's gRPC protos
    and tritonclient's share the names inference.* in protobuf's default pool, so one process cannot load both."""
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed; CI installs it with the test extra")
        pytest.skip(f"{module} is not installed (pip install 'onnx-gig[serve]')")


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def small_gig(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch_nets import export, seeded_small_cnn

    folder = tmp_path_factory.mktemp("kserve")
    src = folder / "small.onnx"
    src.write_bytes(export(seeded_small_cnn(), torch.zeros(1, 3, 24, 24)))
    return convert(src, folder / "small_gig.onnx").path


@contextlib.contextmanager
def running_server(args: list, log: Path) -> Iterator[str]:
    """``onnx-gig serve ARGS`` on 127.0.0.1 and a free port, its output in ``log``: its URL once it answers ready;
    stopped after."""
    port = free_port()
    cmd = [sys.executable, "-m", "onnx_gig.cli", "serve", *map(str, args), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if http("GET", url + "/v2/health/ready", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not get ready in {START_TIMEOUT} s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def server(small_gig, demo_gig, tmp_path_factory):
    need_installed("kserve")
    with running_server([small_gig, demo_gig, "--name", "small", "--name", "demo", "--device", "cpu"],
                        tmp_path_factory.mktemp("log") / "server.log") as url:
        yield url


def local(model: Path, photo: Path, target, **kw):
    return explain(model, photo, target=target, draw=False, device="cpu", **kw)


def test_v2_infer_batch_with_a_target_per_image(server, small_gig):
    """The v2 contract: three prepared images in one tensor, three targets (-1 = the predicted class)."""
    gm = GigModel(small_gig, device="cpu")
    pp = Preprocess.from_json(gm.preprocess_json)
    x = np.stack([load_input(p, pp, gm.input_shape)[0] for p in PHOTOS])
    targets = [2, -1, 5]
    body = {"inputs": [{"name": gm.input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()},
                       {"name": "target", "shape": [3], "datatype": "INT64", "data": targets}],
            "parameters": {"steps": 16, "rule": "riemann_trapezoid"}}
    status, r = http("POST", server + "/v2/models/small/infer", body)
    assert status == 200, r
    out = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r["outputs"]}
    assert list(out) == [o.name for o in gm.session.get_outputs()]  # every output, in the model's order
    assert r["outputs"][0]["datatype"] == "FP32" and r["outputs"][1]["datatype"] == "INT64"
    for i, (photo, t) in enumerate(zip(PHOTOS, targets)):
        ref = local(small_gig, photo, None if t < 0 else t, steps=16, rule="riemann_trapezoid")
        assert out["target_class"][i] == ref.target
        assert rel(out["attributions"][i].astype(np.float32), ref.attributions) <= TOL


def test_v2_infer_explicit_schedule_and_requested_outputs(server, small_gig):
    """alphas and step_weights as tensors (what a Triton client sends), only two outputs asked for."""
    from onnx_gig.quadrature import schedule

    gm = GigModel(small_gig, device="cpu")
    x = (np.random.default_rng(0).standard_normal((2, *gm.input_shape[1:])) * 1.5).astype(np.float32)
    a, w = schedule(10, "riemann_middle")
    body = {"inputs": [{"name": gm.input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()},
                       {"name": "alphas", "shape": [10], "datatype": "FP32", "data": a.tolist()},
                       {"name": "step_weights", "shape": [10], "datatype": "FP32", "data": w.tolist()},
                       {"name": "baseline", "shape": [1, 1, 1, 1], "datatype": "FP32", "data": [0.5]},
                       {"name": "target", "shape": [1], "datatype": "INT64", "data": [3]}],
            "outputs": [{"name": "attributions"}, {"name": "target_class"}]}
    status, r = http("POST", server + "/v2/models/small/infer", body)
    assert status == 200, r
    assert [o["name"] for o in r["outputs"]] == ["attributions", "target_class"]
    ref = gm.explain(x, 0.5, 3, 10, "riemann_middle")
    got = np.asarray(r["outputs"][0]["data"], np.float32).reshape(x.shape)
    assert rel(got, ref.attributions) <= TOL
    assert r["outputs"][1]["data"] == [3, 3]


def test_v1_explain_photos_each_with_its_target(server, small_gig):
    """v1 explain: three photos as base64, a target each; raw attributions and the heatmap figures back."""
    targets = [1, None, 4]
    instances = [dict(encode_photo(p), target=t, key=p.name) for p, t in zip(PHOTOS, targets)]
    params = {"steps": 12, "rule": "gausslegendre", "baseline": "blur", "heatmap": True}
    status, r = http("POST", server + "/v1/models/small:explain", {"instances": instances, "parameters": params})
    assert status == 200, r
    assert (r["steps"], r["rule"], r["baseline"]) == (12, "gausslegendre", "blur")
    for photo, t, e in zip(PHOTOS, targets, r["explanations"]):
        ref = local(small_gig, photo, t, steps=12, rule="gausslegendre", baseline="blur")
        assert e["key"] == photo.name and e["target"] == ref.target == (ref.target if t is None else t)
        assert rel(decode_tensor(e["attributions"]), ref.attributions) <= TOL
        assert abs(e["convergence_delta"] - ref.convergence_delta) <= 1e-4 * max(1.0, abs(ref.convergence_delta))
        assert [c["class"] for c in e["top"]] == [k for k, _, _ in ref.top]
        png = Image.open(io.BytesIO(base64.b64decode(e["heatmap_png"]["b64"])))
        assert png.format == "PNG" and png.width > 2 * png.height  # photo | map | overlay


def test_v1_explain_demo_model(server, demo_gig):
    """The shipped MobileNetV2: two photos, two classes, compared with local explain."""
    targets = [285, 967]  # Egyptian cat, espresso
    instances = [dict(encode_photo(p), target=t) for p, t in zip(PHOTOS[:2], targets)]
    status, r = http("POST", server + "/v1/models/demo:explain",
                     {"instances": instances, "parameters": {"steps": 6, "attributions": "b64"}})
    assert status == 200, r
    for photo, t, e in zip(PHOTOS, targets, r["explanations"]):
        ref = local(demo_gig, photo, t, steps=6)
        assert e["target"] == t and e["label"] == ref.target_label
        assert "heatmap_png" not in e
        assert rel(decode_tensor(e["attributions"]), ref.attributions) <= TOL


def test_v1_predict_metadata_config_and_errors(server, small_gig):
    status, r = http("POST", server + "/v1/models/demo:predict", {"instances": [encode_photo(PHOTOS[0])]})
    assert status == 200 and r["predictions"][0]["class"] in CAT_CLASSES
    status, meta = http("GET", server + "/v2/models/small")
    assert status == 200
    gm = GigModel(small_gig, device="cpu")
    assert [i["name"] for i in meta["inputs"]][0] == gm.input_name
    assert [o["name"] for o in meta["outputs"]] == [o.name for o in gm.session.get_outputs()]
    status, cfg = http("GET", server + "/v2/models/small/config")
    assert status == 200 and cfg["max_batch_size"] == 0
    assert cfg["parameters"]["onnx_gig.preprocess"]["string_value"] == gm.preprocess_json
    if importlib.util.find_spec("tritonclient") is not None:
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        json_format.ParseDict(cfg, model_config_pb2.ModelConfig())  # Triton's own schema
    # errors are one readable line, 400 for a bad request, 404 for an unknown model
    status, err = http("POST", server + "/v2/models/small/infer",
                       {"inputs": [{"name": "bogus", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert status == 400 and "bogus" in err
    status, err = http("POST", server + "/v1/models/small:explain",
                       {"instances": [dict(encode_photo(PHOTOS[0]), target=99)]})
    assert status == 400 and "target" in err
    status, err = http("POST", server + "/v1/models/small:explain",
                       {"instances": [encode_photo(PHOTOS[0])], "parameters": {"baseline": "/etc/passwd"}})
    assert status == 400 and "baseline" in err
    assert http("POST", server + "/v1/models/nope:explain", {"instances": []})[0] == 404


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_client_example_writes_the_heatmap(server, tmp_path, protocol):
    out = tmp_path / f"chelsea_{protocol}.png"
    cmd = [sys.executable, str(ROOT / "examples" / "client.py"), str(PHOTOS[0]), "--url", server, "--model", "demo",
           "--protocol", protocol, "--target", "281", "--steps", "4", "--out", str(out), "--timeout", "120"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "class 281 'tabby, tabby cat'" in done.stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 2 * im.height


def test_a_port_in_use_is_one_line_before_any_model_loads(tmp_path):
    """serve and view check the port first: exit 2 and one line, not uvicorn's log after the start-up."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for cmd in (["serve"], ["view", "--no-browser"]):
            done = subprocess.run([sys.executable, "-m", "onnx_gig.cli", *cmd, str(tmp_path / "none_gig.onnx"),
                                   "--port", str(port)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert done.returncode == 2, done.stderr
            line = done.stderr.strip()
            assert "\n" not in line and line.startswith(f"onnx-gig: error: cannot listen on 127.0.0.1 port {port}: ")
            assert line.endswith("; choose another --port"), line
    assert list(tmp_path.iterdir()) == []
