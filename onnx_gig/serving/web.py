"""The browser viewer's HTTP routes on KServe's FastAPI app (viewer.py holds the logic, static/ the page).

- ``GET /``: the page for a browser (``Accept: text/html``); for anything else KServe's own answer,
  ``{"status": "alive"}``, so liveness probes and JSON clients see no change;
- ``GET /view``: the page, whatever the Accept header (``/view/`` redirects to it, relatively, so a path
  prefix in front of the server is kept); ``GET /view/static/FILE``: its script and style;
- ``GET /view/api/models``: the served models and the options the page offers;
- ``POST /view/api/models/NAME/explain?steps=..&baseline=..&target=..&clip=..&alpha=..``: the photo's
  bytes as the body (at most ``max_upload`` bytes: 413 beyond), JSON back; errors are ``{"error": line}``
  with 400 (bad photo or option), 404 (unknown model), 413 (too large) or 500 (the model failed).

Every answer of the page carries a Content-Security-Policy that allows only this server's own scripts,
styles and images (no inline script, nothing from elsewhere), so even a label that slipped past the page's
escaping could not run.
"""
from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from fastapi import Request  # KServe's web framework (onnx-gig[serve]); module level for FastAPI's annotations
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ..errors import GigError, InputError
from .viewer import Viewer

STATIC = {"index.html": "text/html; charset=utf-8", "viewer.js": "text/javascript; charset=utf-8",
          "viewer.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
log = logging.getLogger(__name__)


def static_bytes(name: str) -> bytes:
    """One of the page's files, read from the installed package."""
    return resources.files("onnx_gig.serving").joinpath("static", name).read_bytes()


def wants_html(accept: str) -> bool:
    """Whether an Accept header asks for a page: text/html listed, with a q-value above 0 and at least that of
    JSON (browsers list text/html first; curl and probes send */* or JSON)."""
    html_q = json_q = 0.0
    for part in (accept or "").lower().split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "text/html":
            html_q = max(html_q, q)
        elif media == "application/json" or media.endswith("+json"):
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


def add_viewer_routes(app: Any, viewer: Viewer) -> None:
    """Register the page and its API on ``app`` (before KServe adds its own ``/``, so ours answers first)."""
    def page() -> Response:
        return Response(static_bytes("index.html"), media_type=STATIC["index.html"], headers=SECURITY_HEADERS)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)

    async def root(request: Request) -> Response:
        if wants_html(request.headers.get("accept", "")):
            return page()
        return JSONResponse({"status": "alive"})

    async def view() -> Response:
        return page()

    async def view_slash() -> Response:
        return RedirectResponse("../view", status_code=307)  # relative: keeps a path prefix (a proxy's) in front

    async def static(name: str) -> Response:
        if name not in STATIC:
            return error(404, f"no file {name!r} here")
        return Response(static_bytes(name), media_type=STATIC[name], headers=SECURITY_HEADERS)

    async def models() -> JSONResponse:
        return JSONResponse(viewer.models(), headers=SECURITY_HEADERS)

    async def explain(model_name: str, request: Request) -> Response:
        if model_name not in viewer.services:
            return error(404, f"no model named {model_name!r}; served: {', '.join(viewer.services)}")
        limit = viewer.max_upload
        too_big = f"the photo is larger than this server's upload limit of {limit / (1 << 20):.3g} MiB"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return error(413, too_big)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                return error(413, too_big)
        query = dict(request.query_params)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, viewer.explain, model_name, bytes(data), query)
        except InputError as exc:
            return error(400, str(exc))
        except GigError as exc:
            return error(500, f"the model failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - one readable line for the page, the traceback in the log
            log.exception("viewer explain failed")
            return error(500, f"the model failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        return JSONResponse(answer, headers=SECURITY_HEADERS)

    ours = lambda r: getattr(getattr(r, "endpoint", None), "__module__", "") == __name__  # noqa: E731
    app.router.routes[:] = [r for r in app.router.routes if not ours(r)]  # a second server in one process
    get = ["GET", "HEAD"]
    for path, endpoint, methods in (("/", root, get), ("/view", view, get), ("/view/", view_slash, get),
                                    ("/view/static/{name}", static, get), ("/view/api/models", models, get),
                                    ("/view/api/models/{model_name}/explain", explain, ["POST"])):
        app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)
    app.router.routes.sort(key=lambda r: not ours(r))  # first: Starlette answers with the first match

__all__ = ["add_viewer_routes", "static_bytes", "wants_html", "STATIC"]
