"""DIR/results.html, a folder run's page, opened from disk in a real headless Chromium (Debian's, via Playwright).

The page of a real run (real figures, a broken file, a file name that is markup) and pages rendered from many
rows: every row a card, every figure loaded, filtering, sorting, the failed-only switch, paging, and no name
or label ever run as markup.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from conftest import MODELS
from onnx_gig.gallery import PER_PAGE, render_page

PHOTOS = MODELS / "images"
CHROMIUM = "/usr/bin/chromium"
HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_function("document.getElementById('info').textContent.length > 0")
    return page, errors


def names(page) -> list[str]:
    return page.locator("figure.card .name").all_text_contents()


def test_a_real_runs_page_shows_every_image_and_failure(demo_gig, tmp_path, browser):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTOS / "chelsea.png", folder / "cat.png")
    shutil.copy(PHOTOS / "coffee.png", folder / "cup.png")
    shutil.copy(PHOTOS / "camera.png", folder / f"{HOSTILE}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "onnx_gig.cli", "explain", str(demo_gig), str(folder), "--out-dir",
                        str(out), "--steps", "2"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 3 and "results.html" in p.stdout, p.stderr
    page, errors = open_page(browser, out / "results.html")
    assert sorted(names(page)) == sorted(["cat.png", "cup.png", f"{HOSTILE}.png", "broken.png"])
    loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert loaded == [True, True, True], loaded  # the three figures, the hostile name's included
    assert page.evaluate("document.body.dataset.pwned") is None and page.locator("main img[src='x']").count() == 0
    failed = page.locator("figure.card.failed")
    assert failed.count() == 1 and "broken.png" in failed.inner_text() and failed.locator(".why").inner_text()
    page.fill("#q", "espresso")  # a class label
    assert names(page) == ["cup.png"]
    page.fill("#q", "")
    page.check("#failed")
    assert names(page) == ["broken.png"]
    page.uncheck("#failed")
    rows = {Path(r["image"]).name: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    page.select_option("#sort", "prob-desc")
    by_prob = sorted((n for n in rows if not rows[n]["error"]), key=lambda n: -rows[n]["probability"])
    assert names(page) == by_prob + ["broken.png"]
    assert errors == [], errors
    page.close()


def test_many_rows_page_and_no_label_is_markup(tmp_path, browser):
    rows = [{"image": f"/data/val/img{i:04d}.png", "target": i % 7, "label": HOSTILE if i == 5 else f"class {i % 7}",
             "probability": (i % 10) / 10, "top1": i % 7, "top1_label": HOSTILE, "top1_prob": 0.5,
             "error": None if i % 50 else "cannot be read: not an image", "figure": None}
            for i in range(2 * PER_PAGE + 10)]
    rows[3]["probability"] = float("nan")  # a NaN in a row must not break the page (JSON has no NaN)
    (tmp_path / "results.html").write_text(render_page(rows, f"title {HOSTILE}", f"sub {HOSTILE}"), encoding="utf-8")
    page, errors = open_page(browser, tmp_path / "results.html")
    assert page.locator("figure.card").count() == PER_PAGE
    assert page.inner_text("#page") == "page 1 of 3" and page.is_disabled("#prev")
    page.click("#next")
    page.click("#next")
    assert page.locator("figure.card").count() == 10 and page.is_disabled("#next")
    assert names(page)[0] == f"img{2 * PER_PAGE:04d}.png"
    page.fill("#q", "img0005")
    assert names(page) == ["img0005.png"] and HOSTILE in page.inner_text("figure.card")
    assert page.inner_text("h1") == f"title {HOSTILE}"
    assert page.evaluate("document.body.dataset.pwned") is None and page.locator("img").count() == 0
    page.fill("#q", "no such image")
    assert page.locator("figure.card").count() == 0 and page.is_visible("#none")
    page.fill("#q", "val")  # the folder every image shares is not searched: it would match them all
    assert page.locator("figure.card").count() == 0
    assert errors == [], errors
    page.close()


def test_class_order_is_numeric_failures_last_and_the_page_fits_a_phone(tmp_path, browser):
    rows = [{"image": f"/d/sub{i % 2}/p{i}.png", "target": t, "label": f"class {t}", "probability": 0.5,
             "error": None, "figure": None} for i, t in enumerate((10, 2, 1))]
    rows.insert(0, {"image": "/d/sub0/broken.png", "target": None, "label": None, "probability": None,
                    "error": "cannot be read", "figure": None})
    (tmp_path / "results.html").write_text(render_page(rows, "t"), encoding="utf-8")
    page, errors = open_page(browser, tmp_path / "results.html")
    page.select_option("#sort", "class")
    assert names(page) == ["p2.png", "p1.png", "p0.png", "broken.png"]  # class 1, 2, 10, then the failure
    page.fill("#q", "sub1")  # a folder below the shared one is searched
    assert names(page) == ["p1.png"]
    page.set_viewport_size({"width": 375, "height": 700})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert errors == [], errors
    page.close()
