"""The browser viewer, in a real headless Chromium against the real server (onnx-gig view) on localhost.

One server process (the CLI's ``view`` command, on a free port it picks itself) serves the shipped MobileNetV2,
a tiny CNN whose labels are HTML and a tiny CNN with a NaN weight (a model that fails). ``view`` opens the page through ``$BROWSER``, here a script that
records the URL. Debian's ``chromium`` (``/usr/bin/chromium``; .ci/run installs it) is driven by Playwright's
Python package; a missing browser or package fails these tests, it does not skip them.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from playwright.sync_api import sync_playwright

from conftest import stop_server
from onnx_gig import convert, explain

ROOT = Path(__file__).resolve().parents[1]
CHELSEA = ROOT / "models" / "images" / "chelsea.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
STEPS = 8
MAX_UPLOAD = 1 << 20  # the server's --max-upload here (chelsea.png is 216 KiB)
START_TIMEOUT = 120
WAIT_MS = 60_000  # one explanation in the page
HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'


def tiny_cnn(path: Path, broken: bool = False) -> Path:
    """A 3-class CNN on 32x32 photos; ``broken``: a NaN bias, so every run yields NaN (a model that fails)."""
    r = np.random.default_rng(3)
    inits = {"w1": r.normal(0, 0.4, (6, 3, 3, 3)), "b1": np.full(6, np.nan) if broken else r.normal(0, 0.1, 6),
             "wf": r.normal(0, 1.0, (3, 6)), "bf": r.normal(0, 0.1, 3)}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"onnx_gig.preprocess": json.dumps({"resize": 36, "crop": [32, 32]})})
    onnx.save(model, str(path))
    return path


def panels(png: bytes) -> list[np.ndarray]:
    """The figure's three panels (input, map, overlay), a band across their middle rows, as int arrays."""
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    h, w = im.shape[:2]
    gutter = 8  # heatmap.GUTTER
    pw = (w - 4 * gutter) // 3
    band = im[h // 2 - 40:h // 2 + 40]
    return [band[:, gutter + i * (pw + gutter):gutter + i * (pw + gutter) + pw] for i in range(3)]


def http(url: str, data: bytes | None = None, accept: str = "*/*") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def raw_post(url: str, content_length: int | None = None, chunks: list[bytes] = ()) -> tuple[int, dict]:
    """POST over a bare socket: only headers declaring ``content_length``, or a chunked body; (status, JSON).

    The server answers 413 without reading an oversized body, so a client still sending may see its pipe
    break; a bare socket sends what it can and then reads the answer.
    """
    u = urllib.parse.urlsplit(url)
    head = f"POST {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n"
    head += f"Content-Length: {content_length}\r\n" if content_length is not None else "Transfer-Encoding: chunked\r\n"
    with socket.create_connection((u.hostname, u.port), timeout=60) as sock:
        try:
            sock.sendall(head.encode() + b"\r\n")
            for c in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(c), c))
            if content_length is None:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.fixture(scope="module")
def server(demo_gig, tmp_path_factory):
    """``onnx-gig view`` with both models; yields (page URL, the URL its $BROWSER was asked to open)."""
    folder = tmp_path_factory.mktemp("viewer")
    tiny = convert(tiny_cnn(folder / "tiny.onnx"), folder / "tiny_gig.onnx",  # labels that are HTML
                   labels=[f"{HOSTILE} class {k} & <b>bold</b>" for k in range(3)]).path
    broken = convert(tiny_cnn(folder / "broken.onnx", broken=True), folder / "broken_gig.onnx").path
    opened = folder / "opened.txt"
    browser = folder / "browser"
    browser.write_text(f"#!{sys.executable}\nimport os, sys, pathlib\n"  # whole or absent: the test polls for it
                       f"pathlib.Path({str(opened)!r} + '.tmp').write_text(sys.argv[1])\n"
                       f"os.replace({str(opened)!r} + '.tmp', {str(opened)!r})\n")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    out, log = folder / "stdout.txt", folder / "server.log"
    cmd = [sys.executable, "-m", "onnx_gig.cli", "view", str(demo_gig), str(tiny), str(broken), "--name", "demo",
           "--name", "tiny", "--name", "broken", "--device", "cpu", "--max-upload", str(MAX_UPLOAD)]
    env = dict(os.environ, BROWSER=str(browser))
    with open(out, "wb") as o, open(log, "wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=folder, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not opened.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"onnx-gig view did not open its page (exit {proc.poll()}):\n"
                            f"{out.read_text(errors='replace')}\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        printed = re.search(r"onnx-gig view: (http://127\.0\.0\.1:\d+/)", out.read_text())
        assert printed, out.read_text()
        yield printed.group(1), opened.read_text()
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, server):
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(server[0])
    pg.wait_for_selector("body[data-ready=true]")
    yield pg
    pg.close()
    assert not errors, errors  # no script error on the page


def choose(pg, model: str, steps: int = STEPS) -> None:
    pg.select_option("#model", model)
    pg.fill("#steps", str(steps))
    pg.locator("#steps").blur()  # the input's change event, before any photo is there


def figure_png(card) -> bytes:
    src = card.locator(".figure").get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    return base64.b64decode(src.split(",", 1)[1])


def wait_done(card, previous_src: str | None = None) -> None:
    card.page.wait_for_function(
        "([c, s]) => c.dataset.state === 'done' && c.querySelector('.figure').getAttribute('src') !== s",
        arg=[card.element_handle(), previous_src], timeout=WAIT_MS)


def test_view_opens_the_page_it_prints(server):
    url, opened = server
    assert opened == url


def test_the_cat_explained_then_another_class(page, demo_gig):
    choose(page, "demo")
    page.set_input_files("#files", str(CHELSEA))
    card = page.locator(".card").first
    assert card.get_attribute("data-state") in ("busy", "done")  # the progress state shows at once
    wait_done(card)
    buttons = card.locator(".top button.class")
    assert buttons.count() == 5
    first = int(buttons.nth(0).get_attribute("data-class"))
    assert first in CAT_CLASSES and buttons.nth(0).get_attribute("aria-pressed") == "true"
    assert int(card.get_attribute("data-target")) == first
    photo, heat, over = panels(figure_png(card))
    assert heat.std() > 10 and heat.max() > 200, "the map panel is blank"
    assert np.abs(over - photo).mean() > 2, "the overlay shows no map"

    # the raw attributions the page offers for download are those of onnx_gig.explain on the same photo
    npy = card.locator("a", has_text=".npy")
    assert npy.get_attribute("download").endswith(f"_class{first}.npy")
    raw = bytes(page.evaluate("async (h) => Array.from(new Uint8Array(await (await fetch(h)).arrayBuffer()))",
                              npy.get_attribute("href")))
    attr = np.load(io.BytesIO(raw))
    ref = explain(demo_gig, CHELSEA, target=first, steps=STEPS, draw=False, device="cpu")
    assert attr.shape == ref.attributions.shape and attr.dtype == np.float32
    assert np.abs(attr - ref.attributions).max() <= 1e-5 * np.abs(ref.attributions).max()
    assert card.locator("a", has_text="PNG").get_attribute("download").endswith(".png")

    # click the second class: that class is explained and the figure changes
    second = int(buttons.nth(1).get_attribute("data-class"))
    before = card.locator(".figure").get_attribute("src")
    buttons.nth(1).click()
    wait_done(card, before)
    assert int(card.get_attribute("data-target")) == second != first
    assert card.locator(".top button.class[aria-pressed=true]").get_attribute("data-class") == str(second)
    changed = np.abs(panels(figure_png(card))[1] - heat).max(-1) > 0
    assert changed.mean() > 0.05, "the map did not change with the class"  # measured: 16 % of its pixels

    # opacity 0: the overlay is the photo itself (a redraw of the kept attributions)
    before = card.locator(".figure").get_attribute("src")
    page.eval_on_selector("#alpha", "e => { e.value = '0'; e.dispatchEvent(new Event('change')); }")
    wait_done(card, before)
    photo, _, over = panels(figure_png(card))
    assert np.array_equal(over, photo)
    assert "redrawn" in card.locator(".status").inner_text()

    # the signed map: a diverging colour map, red where the class score rises, blue where it falls
    before = card.locator(".figure").get_attribute("src")
    page.select_option("#sign", "all")
    wait_done(card, before)
    heat = panels(figure_png(card))[1]
    red, blue = heat[..., 0] - heat[..., 2], heat[..., 2] - heat[..., 0]
    assert (red > 60).mean() > 0.001 and (blue > 60).mean() > 0.001, "no signed colours in the map"


def failed_upload(page, model: str, path: Path):
    """Upload ``path`` to ``model`` on the page, wait for its card to fail; the card and its message."""
    choose(page, model)
    page.set_input_files("#files", str(path))
    card = page.locator(".card").first
    page.wait_for_function("c => c.dataset.state === 'error'", arg=card.element_handle(), timeout=WAIT_MS)
    return card, card.locator(".error").inner_text()


def test_readable_messages_for_a_text_file_and_a_failing_model(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    card, message = failed_upload(page, "demo", notes)
    assert message.startswith("notes.txt: ") and "not a readable image" in message, message
    assert card.locator(".figure").get_attribute("src") is None

    _, message = failed_upload(page, "broken", CHELSEA)
    assert message.startswith("chelsea.png: the model failed: ") and "NaN" in message, message


def test_labels_are_shown_as_text(page):
    choose(page, "tiny")
    page.set_input_files("#files", str(CHELSEA))
    card = page.locator(".card").first
    wait_done(card)
    labels = card.locator(".top .class-label").all_inner_texts()
    assert len(labels) == 3 and all(t.startswith(HOSTILE) and t.endswith("& <b>bold</b>") for t in labels), labels
    assert card.locator(".explained-label").inner_text().startswith(HOSTILE)
    assert page.locator("img[src=x], b").count() == 0  # nothing of the labels became markup
    assert page.evaluate("document.body.dataset.pwned") is None


def test_http_contract_of_the_page(server):
    url = server[0]
    status, _, body = http(url, accept="application/json")  # probes and JSON clients: KServe's answer
    assert status == 200 and json.loads(body) == {"status": "alive"}
    status, headers, body = http(url, accept="text/html,application/xhtml+xml")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert b"http" not in body.lower().replace(b"http-equiv", b"")  # nothing fetched from elsewhere
    for name in ("viewer.js", "viewer.css"):
        status, _, asset = http(url + "view/static/" + name)
        assert status == 200 and b"http://" not in asset and b"https://" not in asset
    api = url + "view/api/models/demo/explain"
    status, body = raw_post(api + "?steps=4", content_length=MAX_UPLOAD + 1)  # refused before reading
    assert status == 413 and "upload limit" in body["error"]
    status, body = raw_post(api + "?steps=4", chunks=[bytes(1 << 16)] * (MAX_UPLOAD >> 16) + [b"x"])  # while reading
    assert status == 413 and "upload limit" in body["error"]
    status, _, body = http(api + "?steps=0", CHELSEA.read_bytes())
    assert status == 400 and "steps" in json.loads(body)["error"]
    status, _, body = http(api + "?baseline=/etc/passwd", CHELSEA.read_bytes())
    assert status == 400 and "baseline" in json.loads(body)["error"]
    status, _, body = http(api + "?sign=up", CHELSEA.read_bytes())
    assert status == 400 and "sign" in json.loads(body)["error"]
    status, _, body = http(url + "view/api/models/nope/explain", CHELSEA.read_bytes())
    assert status == 404 and "nope" in json.loads(body)["error"]
