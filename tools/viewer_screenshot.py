"""Screenshot of the browser viewer for the README (docs/viewer.png), taken the way a person uses it.

    python tools/viewer_screenshot.py                 # -> docs/viewer.png
    python tools/viewer_screenshot.py --out shot.png --steps 16

Converts the shipped MobileNetV2 into a temporary folder, starts ``onnx-gig view --no-browser`` on it,
drops the cat and the coffee photos into the page in Debian's headless chromium (driven by Playwright's
Python package, as tests/test_viewer.py does) and captures the page once both are explained.
Needs: pip install '.[serve]' playwright; apt-get install chromium.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = [ROOT / "models" / "images" / n for n in ("coffee.png", "chelsea.png")]  # the cat ends up on top
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "viewer.png"), help="PNG to write (default docs/viewer.png)")
    ap.add_argument("--steps", type=int, default=50, help="integration steps in the page (default 50)")
    ap.add_argument("--width", type=int, default=1280, help="browser window width in CSS pixels (default 1280)")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (default /usr/bin/chromium)")
    a = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from onnx_gig import convert

    with tempfile.TemporaryDirectory() as tmp:
        model = convert(ROOT / "models" / "mobilenet_v2.onnx", Path(tmp) / "mobilenet_v2_gig.onnx").path
        out_txt = Path(tmp) / "stdout.txt"
        with open(out_txt, "wb") as o:
            proc = subprocess.Popen([sys.executable, "-m", "onnx_gig.cli", "view", str(model), "--no-browser"],
                                    stdout=o, stderr=subprocess.DEVNULL, cwd=tmp)
        try:
            deadline = time.monotonic() + 120
            while not (m := re.search(r"onnx-gig view: (\S+)", out_txt.read_text())):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("onnx-gig view did not start")
                time.sleep(0.2)
            url = m.group(1)
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"), executable_path=a.chromium, headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": a.width, "height": 800}, device_scale_factor=1)
                page = ctx.new_page()
                for _ in range(100):  # the server answers health before the page route is needed; retry briefly
                    try:
                        page.goto(url)
                        break
                    except Exception:  # noqa: BLE001 - connection refused while uvicorn starts
                        time.sleep(0.3)
                page.wait_for_selector("body[data-ready=true]")
                page.fill("#steps", str(a.steps))
                page.locator("#steps").blur()
                page.set_input_files("#files", [str(p) for p in PHOTOS])
                page.wait_for_function("() => document.querySelectorAll('.card[data-state=done]').length === 2",
                                       timeout=300_000)
                page.mouse.move(0, 0)
                page.screenshot(path=a.out, full_page=True)
                ctx.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
