"""onnx-gig view: the serve command on this machine, with its page opened in the default browser."""
from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path

from .serve import add_server_options, listen_port, start

NAME = "view"
HELP = "open converted models in the browser: drop photos, see what the model looked at"
DESCRIPTION = ("Start the same server as 'onnx-gig serve' (on 127.0.0.1 and a free port unless told otherwise) "
               "and open its page in the default browser: pick a model, drop or choose photos, see each one's "
               "figure (photo, map, overlay) and top-5 classes, click a class to explain it, change the steps, "
               "baseline, clip percentile and overlay opacity, download the PNG and the raw attributions (.npy). "
               "Prints the page's URL; Ctrl-C stops the server. A missing NAME_gig.onnx is first converted from "
               "NAME.onnx beside it (gnl-ig), as 'onnx-gig demo' does. Needs: pip install 'onnx-gig[serve]'.")
READY_TIMEOUT = 300  # seconds to wait for the server before giving up on opening the browser


def configure(s: argparse.ArgumentParser) -> None:
    add_server_options(s, "HTTP port (default 0: a free one)", 0)
    s.add_argument("--no-browser", action="store_true",
                   help="do not open a browser (headless machines); just print the URL and serve")


def page_url(host: str, port: int) -> str:
    """The URL a browser on this machine opens (a wildcard address is reached through loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


def _open_when_ready(url: str) -> None:
    """Wait until the server answers, then open the page (or say how to, when there is no browser)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    else:
        return
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        print(f"onnx-gig: no browser found here; open {url} yourself", file=sys.stderr, flush=True)


def convert_missing(models: list[str]) -> None:
    """A missing NAME_gig.onnx whose classifier NAME.onnx lies beside it is converted first (gnl-ig), as the
    demo does, so a fresh clone can view models/mobilenet_v2_gig.onnx at once."""
    for model in models:
        path = Path(model)
        source = path.with_name(path.name[:-len("_gig.onnx")] + ".onnx")
        if path.name.endswith("_gig.onnx") and not path.exists() and source.is_file():
            from ..api import convert

            print(f"onnx-gig view: {path} does not exist yet; converting {source} (gnl-ig) first", file=sys.stderr,
                  flush=True)
            convert(source, path, overwrite=False)


def run(a: argparse.Namespace) -> int:
    convert_missing(a.model)
    port = a.port or listen_port(a.host, 0)
    url = page_url(a.host, port)

    def announce() -> None:
        print(f"onnx-gig view: {url}  (Ctrl-C to stop)", flush=True)
        if not a.no_browser:
            threading.Thread(target=_open_when_ready, args=(url,), daemon=True).start()

    return start(a, port, on_listening=announce)
