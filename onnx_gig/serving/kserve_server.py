"""``onnx-gig serve``: converted models behind KServe's Python model server.

One ``kserve.Model`` per converted model, wrapping :class:`~onnx_gig.serving.service.GigService`:

- ``POST /v2/models/NAME/infer``: the Open Inference Protocol, the model's contract tensor for tensor
  (JSON or the binary-data extension);
- ``POST /v1/models/NAME:explain``: photos or tensors in, attributions (and the heatmap PNG) out;
- ``POST /v1/models/NAME:predict``: the top classes;
- ``GET /v2/models/NAME``: v2 metadata; ``GET /v2/models/NAME/config``: Triton's model configuration in
  JSON (with the preprocessing and labels as parameters), so one client serves both servers;
- health, readiness and Prometheus metrics as KServe provides them, plus HEAD and OPTIONS on the health routes
  (load balancers probe with HEAD); a bad request is a 400 with one line, logged in one line (no traceback);
- ``GET /`` in a browser: the viewer page (web.py), which explains uploaded photos through
  ``POST /view/api/models/NAME/explain``.

The same code runs in a KServe InferenceService (docs/serving.md has the manifest). Inference runs in a
worker thread, so health checks answer while a request computes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import GigError, InputError
from .service import GigService
from .triton import check_name
from .viewer import MAX_UPLOAD, Viewer
from .web import add_viewer_routes

HEALTH_ROUTES = ("/v2/health/live", "/v2/health/ready")

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve.model_server parses sys.argv when imported
try:
    import kserve
    from kserve import model_server as _model_server
    from kserve.errors import InferenceError, InvalidInput, ModelNotFound
    from kserve import errors as _kserve_errors
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
finally:
    sys.argv = _argv


class GigKServeModel(kserve.Model):
    """A converted model as a KServe model."""

    def __init__(self, service: GigService) -> None:
        super().__init__(service.name)
        self.service = service

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return self.service.input_metadata()

    def get_output_types(self) -> list[dict]:
        return self.service.output_metadata()

    async def _call(self, fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except InputError as exc:  # the request's fault: 400
            raise InvalidInput(str(exc)) from None
        except GigError as exc:  # the model's (NaN attributions, a failed run): 500, logged as KServe logs errors
            raise InferenceError(str(exc)) from None

    async def predict(self, payload: Any, headers: Optional[dict] = None,
                      response_headers: Optional[dict] = None) -> Any:
        if isinstance(payload, InferRequest):
            inputs = {}
            for inp in payload.inputs:
                if inp.name in inputs:
                    raise InvalidInput(f"input '{inp.name}' is given twice")
                try:
                    inputs[inp.name] = inp.as_numpy()
                except OverflowError:  # e.g. INT64 data of 2**70
                    raise InvalidInput(f"input '{inp.name}': a value is out of range for {inp.datatype}") from None
                except (ValueError, TypeError) as exc:
                    raise InvalidInput(f"input '{inp.name}': {exc}") from None
            out = await self._call(self.service.infer, inputs, payload.parameters)
            specs = {o.name: o for o in self.service.signature.outputs}
            outputs = [InferOutput(name=name, shape=list(v.shape), datatype=specs[name].datatype,
                                   data=np.ascontiguousarray(v)) for name, v in out.items()]
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=outputs, use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)
        return await self._call(self.service.predict_instances, _v1_body(payload, headers))

    async def explain(self, payload: Any, headers: Optional[dict] = None) -> Any:
        if isinstance(payload, InferRequest):
            raise InvalidInput("explain takes the v1 body {\"instances\": [...]}; use /v2/models/NAME/infer for tensors")
        return await self._call(self.service.explain_instances, _v1_body(payload, headers))


def _v1_body(payload: Any, headers: Optional[dict]) -> Any:
    """A v1 body as JSON. KServe passes the raw bytes on when the Content-Type is not exactly a JSON type: parse
    them when it is JSON with parameters (``application/json; charset=utf-8``), else say the type is wrong."""
    if not isinstance(payload, (bytes, bytearray, str)):
        return payload
    ctype = {str(k).lower(): v for k, v in (headers or {}).items()}.get("content-type", "")
    media = ctype.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise InvalidInput(f"the body must be JSON sent with Content-Type: application/json, not {ctype or 'no type'}")
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


async def _client_error(request: Any, exc: Exception) -> Any:
    """A 4xx (bad request, unknown model): one line back and one INFO line in the log, no traceback (KServe logs
    every one at ERROR with its traceback)."""
    from fastapi.responses import JSONResponse

    status = 404 if isinstance(exc, ModelNotFound) else 400
    message = _one_line(exc)
    logging.getLogger("kserve").info("%s %s: %d %s", request.method, request.url.path, status, message)
    return JSONResponse({"error": message}, status_code=status)


def _raised_decoding(exc: BaseException) -> bool:
    """Whether ``exc`` came from KServe decoding the request body (a v2 binary request whose
    binary_data_size does not fit its shape, a header without inputs), before any model code ran."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__", "").startswith("kserve.protocol") and \
                frame.f_code.co_name in ("decode", "decode_inference_request", "from_bytes"):
            return True
        tb = tb.tb_next
    return False


async def _decoding_error(request: Any, exc: Exception) -> Any:
    """ValueError, TypeError, KeyError: a 400 when KServe's request decoding raised it; else KServe's 500."""
    if _raised_decoding(exc):
        return await _client_error(request, InvalidInput(
            f"the request cannot be decoded ({type(exc).__name__}: {_one_line(exc)}); check the inputs' shape, "
            "datatype and binary_data_size"))
    handler = getattr(_kserve_errors, "generic_exception_handler", None)
    if handler is not None:
        return await handler(request, exc)
    from fastapi.responses import JSONResponse  # a KServe without it: the same 500, logged with its traceback

    logging.getLogger("kserve").exception("%s %s: 500", request.method, request.url.path)
    return JSONResponse({"error": f"{type(exc).__name__} : {_one_line(exc)}"}, status_code=500)


def _add_exception_handlers(app: Any) -> None:
    """After KServe set its own: 4xx in one line (no traceback in the log), decoding errors as 400."""
    for kind in (InvalidInput, ModelNotFound):
        app.add_exception_handler(kind, _client_error)
    for kind in (ValueError, TypeError, KeyError):
        app.add_exception_handler(kind, _decoding_error)


def _add_health_routes(dataplane: Any) -> None:
    """HEAD (what load balancers probe with) and OPTIONS on the health routes, which KServe serves for GET only."""
    from fastapi.responses import Response

    app = _model_server.app

    async def live() -> Response:
        return Response(status_code=200 if (await dataplane.live()).get("status") == "alive" else 503)

    async def ready() -> Response:
        return Response(status_code=200 if await dataplane.ready() else 503)

    async def options() -> Response:
        return Response(status_code=204, headers={"Allow": "GET, HEAD, OPTIONS"})

    for path, head in zip(HEALTH_ROUTES, (live, ready)):
        for endpoint, method in ((head, "HEAD"), (options, "OPTIONS")):
            if not any(getattr(r, "path", "") == path and method in (getattr(r, "methods", None) or ())
                       for r in app.routes):  # a second server in one process
                app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)


class _ModelServer(kserve.ModelServer):
    """KServe's ModelServer listening on ``host`` (KServe itself always binds 0.0.0.0)."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        self._gig_host = host
        super().__init__(**kwargs)

    def setup_event_loop(self) -> None:  # called after the REST server is made, before it serves
        rest = getattr(self, "_rest_server", None)
        if rest is not None and hasattr(rest, "config"):
            rest.config.host = self._gig_host
        if rest is not None and hasattr(rest, "create_application"):  # it adds KServe's routes and handlers
            create = rest.create_application

            def create_application() -> None:
                create()
                _add_exception_handlers(_model_server.app)

            rest.create_application = create_application
        super().setup_event_loop()


def _add_config_route(models: dict[str, GigKServeModel]) -> None:
    app = _model_server.app

    async def model_config(model_name: str) -> dict:
        if model_name not in models:
            raise ModelNotFound(model_name)
        return models[model_name].service.config()

    if not any(getattr(r, "path", "") == "/v2/models/{model_name}/config" for r in app.routes):
        app.add_api_route("/v2/models/{model_name}/config", model_config, methods=["GET"])


def build_models(paths: Sequence[str | os.PathLike], names: Optional[Sequence[str]] = None, device: str = "auto",
                 max_memory: int | str | None = None, threads: Optional[int] = None) -> list[GigKServeModel]:
    names = list(names or [])
    if names and len(names) != len(paths):
        raise InputError(f"{len(names)} names for {len(paths)} models; give one --name per model, or none")
    for name in names:  # before any model loads
        check_name(name, "a served model's name: it is one segment of the URLs /v2/models/NAME/..., so no '/' or '\\', "
                         "not empty, '.' or '..'")
    models = [GigKServeModel(GigService(p, names[i] if names else None, device, max_memory, threads))
              for i, p in enumerate(paths)]
    seen: set[str] = set()
    for m in models:
        if m.name in seen:
            raise InputError(f"two models are named '{m.name}'; give each a --name")
        seen.add(m.name)
        m.load()
    return models


def serve(models: list[GigKServeModel], host: str = "127.0.0.1", port: int = 8080,
          grpc_port: Optional[int] = None, max_upload: int = MAX_UPLOAD) -> None:
    """Serve until interrupted (SIGINT/SIGTERM), with the browser viewer at ``/``."""
    _add_config_route({m.name: m for m in models})
    add_viewer_routes(_model_server.app, Viewer([m.service for m in models], max_upload))
    server = _ModelServer(host, http_port=port, grpc_port=grpc_port or 8081, enable_grpc=grpc_port is not None,
                          workers=1, enable_docs_url=False)
    _add_health_routes(server.dataplane)
    server.start(models)
