"""onnx-gig serve at its edges: photos of several shapes in one request, malformed requests, names, parameters,
the log of client errors, health probes with HEAD, the page's redirect and slider range.

One real server (the CLI) on 127.0.0.1 serves a small CNN exported with dynamic batch, height and width, so
photos keep their aspect; every request is real HTTP. Bad requests must get 400 with one line in ``error``;
attributions are compared with ``onnx_gig.explain`` run locally (max |a - b| / max |b| <= 1e-5).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from onnx_gig import convert, explain
from onnx_gig.quadrature import DEFAULT_RULE
from onnx_gig.serving.service import decode_tensor, encode_photo
from test_kserve import PHOTOS, ROOT, TOL, free_port, http, need_installed, rel, running_server

CAT, CAMERA = PHOTOS[0], PHOTOS[2]  # 451 x 300 and 512 x 512: two shapes for a model that keeps the aspect
TENSOR = {"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.25] * 192}


def send(method: str, url: str, data: bytes | None = None, headers: dict | None = None,
         timeout: float = 120) -> tuple[int, dict, bytes]:
    """Any request as bytes: the status, the headers (lower-case names) and the body."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers to check, not to follow."""

    def redirect_request(self, *args, **kwargs):
        return None


def bad(status_and_body: tuple[int, object], *words: str) -> str:
    """The one-line error of a 400 answer, checked to name ``words``."""
    status, body = status_and_body
    assert status == 400, (status, body)
    line = json.loads(body)["error"]
    assert "\n" not in line and all(w in line for w in words), line
    return line


@pytest.fixture(scope="module")
def dynamic_gig(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch_nets import export_dynamic, seeded_small_cnn

    folder = tmp_path_factory.mktemp("edges")
    src = folder / "dyn.onnx"
    src.write_bytes(export_dynamic(seeded_small_cnn(), torch.zeros(1, 3, 24, 24), {0: "N", 2: "H", 3: "W"}))
    return convert(src, folder / "dyn_gig.onnx").path


@pytest.fixture(scope="module")
def served(dynamic_gig, tmp_path_factory):
    """(base URL, server log path) of ``onnx-gig serve`` with the dynamic model named 'dyn'."""
    need_installed("kserve")
    log = tmp_path_factory.mktemp("log") / "server.log"
    with running_server([dynamic_gig, "--name", "dyn", "--device", "cpu"], log) as url:
        yield url, log


# -- 1. photos of different shapes in one request ------------------------------------------------------------------

def test_v1_explain_and_predict_photos_of_different_shapes(served, dynamic_gig):
    """A model with dynamic height and width keeps each photo's aspect: two shapes in one request are run as two
    groups and answered in the request's order, each equal to local explain."""
    url, _ = served
    photos = [CAT, CAMERA, CAT]
    instances = [dict(encode_photo(p), key=str(i)) for i, p in enumerate(photos)]
    status, r = http("POST", url + "/v1/models/dyn:explain", {"instances": instances, "parameters": {"steps": 2}})
    assert status == 200, r
    shapes = [decode_tensor(e["attributions"]).shape for e in r["explanations"]]
    assert shapes[0] == shapes[2] != shapes[1], shapes
    for i, (photo, e) in enumerate(zip(photos, r["explanations"])):
        ref = explain(dynamic_gig, photo, steps=2, draw=False, device="cpu")
        assert e["key"] == str(i) and e["target"] == ref.target
        assert decode_tensor(e["attributions"]).shape == ref.attributions.shape
        assert rel(decode_tensor(e["attributions"]), ref.attributions) <= TOL
    status, p = http("POST", url + "/v1/models/dyn:predict", {"instances": instances})
    assert status == 200, p
    assert [q["class"] for q in p["predictions"]] == [e["target"] for e in r["explanations"]]
    assert [q["key"] for q in p["predictions"]] == ["0", "1", "2"]


# -- 2. malformed requests are 400, not 500 ------------------------------------------------------------------------

def test_malformed_requests_are_400_with_one_line(served):
    url, _ = served
    bad(http("POST", url + "/v1/models/dyn:explain", {"instances": [{"image_bytes": {}}]}), "instance 0", "b64")
    bad(http("POST", url + "/v1/models/dyn:explain", {"instances": [{"image_bytes": "abc"}]}), "instance 0", "b64")
    target = {"name": "target", "shape": [1], "datatype": "INT64", "data": [2 ** 70]}
    bad(http("POST", url + "/v2/models/dyn/infer", {"inputs": [TENSOR, target]}), "target", "INT64")
    # the binary extension: binary_data_size (100 bytes) does not fit the shape (768 bytes), decoded by KServe
    header = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 100}}]}).encode()
    answer = send("POST", url + "/v2/models/dyn/infer", header + bytes(100),
                  {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    bad(answer[::2], "cannot be decoded", "binary_data_size")
    # the same with the right size is answered
    good = np.full(192, 0.25, "<f4").tobytes()
    header = header.replace(b'"binary_data_size": 100', b'"binary_data_size": 768')
    status, _, body = send("POST", url + "/v2/models/dyn/infer", header + good,
                           {"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(len(header))})
    assert status == 200, body


# -- 3. names that are no URL path segment -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a/b", "..", ""])
def test_a_name_that_cannot_be_in_a_url_is_refused_at_startup(dynamic_gig, name):
    need_installed("kserve")
    done = subprocess.run([sys.executable, "-m", "onnx_gig.cli", "serve", str(dynamic_gig), "--name", name,
                           "--port", str(free_port())], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"onnx-gig: error: '{name}' cannot be a served model's name"), line


# -- 4. v2: non-finite schedules, unknown parameters ---------------------------------------------------------------

@pytest.mark.parametrize("which", ["alphas", "step_weights"])
@pytest.mark.parametrize("value", ["NaN", 1e39])
def test_v2_non_finite_schedule_is_400(served, which, value):
    url, _ = served
    inputs = {"alphas": [0.5], "step_weights": [1.0]}
    inputs[which] = [value]
    body = {"inputs": [TENSOR] + [{"name": k, "shape": [1], "datatype": "FP32", "data": v} for k, v in inputs.items()]}
    data = json.dumps(body).replace('"NaN"', "NaN").encode()  # JSON with NaN, as Python's json writes it
    status, _, answer = send("POST", url + "/v2/models/dyn/infer", data, {"Content-Type": "application/json"})
    bad((status, answer), "alphas and step_weights", "finite")


def test_v2_unknown_parameters_are_400_known_ones_work(served):
    url, _ = served
    bad(http("POST", url + "/v2/models/dyn/infer", {"inputs": [TENSOR], "parameters": {"stepz": 4}}),
        "unknown parameter", "stepz", "steps, rule")
    status, r = http("POST", url + "/v2/models/dyn/infer",
                     {"inputs": [TENSOR], "parameters": {"steps": 3, "rule": "riemann_trapezoid"}})
    assert status == 200, r


# -- 5. v1: negative targets, null parameters, content types -------------------------------------------------------

def test_v1_negative_target_null_parameters_and_content_type(served):
    url, _ = served
    one = encode_photo(CAT)
    status, plain = http("POST", url + "/v1/models/dyn:explain", {"instances": [one], "parameters": {"steps": 2}})
    assert status == 200, plain
    predicted = plain["explanations"][0]["target"]
    for t in (-1, -7):  # any negative: the predicted class, as v2 and the page
        status, r = http("POST", url + "/v1/models/dyn:explain",
                         {"instances": [dict(one, target=t)], "parameters": {"steps": 2, "target": 0}})
        assert status == 200, r
        assert r["explanations"][0]["target"] == predicted
    bad(http("POST", url + "/v1/models/dyn:explain", {"instances": [dict(one, target=6)]}), "target", "negative")
    params = {"steps": 2, "rule": None, "baseline": None, "cmap": None, "target": None, "heatmap": True}
    status, r = http("POST", url + "/v1/models/dyn:explain", {"instances": [one], "parameters": params})
    assert status == 200, r
    assert (r["rule"], r["baseline"]) == (DEFAULT_RULE, "zeros")  # what ran, not null
    assert "heatmap_png" in r["explanations"][0]
    body = json.dumps({"instances": [one]}).encode()
    answer = send("POST", url + "/v1/models/dyn:explain", body, {"Content-Type": "text/plain"})
    bad(answer[::2], "Content-Type", "application/json", "text/plain")
    status, _, answer = send("POST", url + "/v1/models/dyn:predict", body,
                             {"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, answer


# -- 6. client errors are one log line, no traceback ---------------------------------------------------------------

def test_client_errors_are_one_info_line_in_the_log(served):
    url, log = served
    marker = "marker_param_1b2c"
    bad(http("POST", url + "/v1/models/dyn:explain", {"instances": [encode_photo(CAT)], "parameters": {marker: 1}}),
        marker)
    assert http("POST", url + "/v1/models/nope:explain", {"instances": []})[0] == 404
    deadline = time.monotonic() + 10
    while marker not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if marker in line]
    assert len(lines) == 1 and " INFO " in lines[0] and "400" in lines[0], lines
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


# -- 7. HEAD and OPTIONS on the health routes ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/health/live", "/"])
def test_health_answers_head_and_options(served, path):
    url, _ = served
    status, _, body = send("HEAD", url + path)
    assert status == 200 and body == b""
    if path != "/":
        status, headers, _ = send("OPTIONS", url + path)
        assert status == 204 and "HEAD" in headers["allow"], (status, headers)


# -- 8, 9. the page: a relative redirect, q-values, the clip slider's range ----------------------------------------

def test_page_redirect_accept_q_values_and_clip_range(served):
    url, _ = served
    status, headers, _ = send("GET", url + "/view/")
    assert status in (307, 308) and headers["location"] == "../view"  # relative: a path prefix is kept
    status, headers, _ = send("GET", url + "/", headers={"Accept": "application/json, text/html;q=0.1"})
    assert status == 200 and headers["content-type"].startswith("application/json")
    status, headers, _ = send("GET", url + "/", headers={"Accept": "text/html,*/*;q=0.8"})
    assert status == 200 and headers["content-type"].startswith("text/html")
    status, r = http("GET", url + "/view/api/models")
    low, high = r["clip_range"]
    status, _, page = send("GET", url + "/view")
    assert f'id="clip" min="{low:g}" max="{high:g}"'.encode() in page
    photo = CAT.read_bytes()
    status, _, answer = send("POST", url + f"/view/api/models/dyn/explain?steps=2&clip={low:g}", photo)
    assert status == 200, answer
    status, _, answer = send("POST", url + f"/view/api/models/dyn/explain?steps=2&clip={low - 1:g}", photo)
    bad((status, answer), "clip")
