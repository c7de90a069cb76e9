"""DIR/results.html, a folder run's page, opened from disk in a real headless Chromium (Debian's, via Playwright).

The page of a real run (real figures, a broken file, a file name that is markup) and pages rendered from many
rows: every row a card, every figure loaded, filtering, sorting, the failed-only switch, paging, and no name
or label ever run as markup.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

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
    shutil.copy(PHOTOS / "camera.png", os.path.join(os.fsencode(folder), b"caf\xe9 #1.png"))  # not UTF-8
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "onnx_gig.cli", "explain", str(demo_gig), str(folder), "--out-dir",
                        str(out), "--steps", "2", "--npy"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 3 and "results.html" in p.stdout, p.stderr
    page, errors = open_page(browser, out / "results.html")
    assert sorted(names(page)) == sorted(["cat.png", "cup.png", f"{HOSTILE}.png", "caf\\xe9 #1.png", "broken.png"])
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    loaded = page.evaluate("Array.from(document.images).map(i => i.naturalWidth > 0)")
    assert loaded == [True] * 4, loaded  # the four figures, the hostile and the non-UTF-8 names' included
    npy = page.locator("figure.card .files a")
    hrefs = [unquote_to_bytes(npy.nth(k).get_attribute("href")) for k in range(npy.count())]
    assert len(hrefs) == 4 and all(os.path.isfile(os.path.join(os.fsencode(out), h)) for h in hrefs), hrefs
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
    shown = [os.fsencode(n).decode("utf-8", "backslashreplace") for n in by_prob]  # a name not UTF-8 as \\xe9
    assert names(page) == shown + ["broken.png"]
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
    assert (page.input_value("#pageno"), page.inner_text("#pages")) == ("1", "of 3") and page.is_disabled("#prev")
    page.focus("#next")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "grid"  # reading goes on at the new page's first card
    page.click("#last")
    assert page.locator("figure.card").count() == 10 and page.is_disabled("#next") and page.is_disabled("#last")
    assert names(page)[0] == f"img{2 * PER_PAGE:04d}.png" and page.input_value("#pageno") == "3"
    page.fill("#pageno", "2")
    page.press("#pageno", "Enter")
    assert names(page)[0] == f"img{PER_PAGE:04d}.png"
    page.click("#first")
    assert names(page)[0] == "img0000.png" and page.is_disabled("#first")
    page.fill("#q", "img0005")
    assert names(page) == ["img0005.png"] and HOSTILE in page.inner_text("figure.card")
    assert page.inner_text("h1") == f"title {HOSTILE}"
    assert page.evaluate("document.body.dataset.pwned") is None and page.locator("img").count() == 0
    page.fill("#q", "no such image")
    assert page.locator("figure.card").count() == 0 and page.inner_text("#none") == "nothing matches the filter"
    page.fill("#q", "val")  # the folder every image shares is not searched: it would match them all
    assert page.locator("figure.card").count() == 0
    assert errors == [], errors
    page.close()


def test_class_order_is_numeric_failures_last_and_the_page_fits_a_phone(tmp_path, browser):
    rows = [{"image": f"/d/sub{i % 2}/p{i}.png", "target": t, "label": f"class {t}", "probability": 0.5,
             "error": None, "figure": None} for i, t in enumerate((10, 2, 1))]
    rows.insert(0, {"image": "/d/sub0/broken.png", "target": None, "label": None, "probability": None,
                    "error": "cannot be read", "figure": None})
    rows.append({"image": "/d/sub1/back\\slash.png", "target": 3, "label": "class 3", "probability": 0.5,
                 "error": None, "figure": None})  # a backslash is a name's character on POSIX, no separator
    long = "resnet50_imagenet_finetuned_on_a_private_dataset_checkpoint_epoch_0042_val_acc_0.9321_gig.onnx"
    (tmp_path / "results.html").write_text(render_page(rows, long, "the class " + long + " gives"), encoding="utf-8")
    page, errors = open_page(browser, tmp_path / "results.html")
    page.select_option("#sort", "class")  # class 1, 2, 3, 10, then the failure; paths below the shared folder
    assert names(page) == ["sub0/p2.png", "sub1/p1.png", "sub1/back\\slash.png", "sub0/p0.png", "sub0/broken.png"]
    page.fill("#q", "sub1/p")  # a folder below the shared one is searched
    assert names(page) == ["sub1/p1.png"]
    page.fill("#q", "")
    page.check("#failed")
    page.uncheck("#failed")
    assert page.evaluate("getComputedStyle(document.getElementById('top')).position") == "sticky"
    page.set_viewport_size({"width": 375, "height": 700})  # a phone: the page fits, the header does not cover it
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.evaluate("getComputedStyle(document.getElementById('top')).position") == "static"
    assert errors == [], errors
    page.close()


def test_an_empty_run_and_no_failures_say_so(tmp_path, browser):
    (tmp_path / "empty.html").write_text(render_page([], "t"), encoding="utf-8")
    page, errors = open_page(browser, tmp_path / "empty.html")
    assert page.inner_text("#none") == "no images in this run" and page.is_disabled("#next")
    row = {"image": "/d/a.png", "target": 1, "label": "one", "probability": 0.5, "error": None, "figure": None}
    (tmp_path / "ok.html").write_text(render_page([row], "t"), encoding="utf-8")
    page2, errors2 = open_page(browser, tmp_path / "ok.html")
    assert names(page2) == ["a.png"]  # one image: its name, not its whole path
    page2.check("#failed")
    assert page2.inner_text("#none") == "no image failed"
    assert errors == [] == errors2, errors + errors2
    page.close()
    page2.close()
