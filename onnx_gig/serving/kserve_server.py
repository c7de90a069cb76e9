"""``onnx-gig serve``: converted models behind KServe's Python model server.

One ``kserve.Model`` per converted model, wrapping :class:`~onnx_gig.serving.service.GigService`:

- ``POST /v2/models/NAME/infer``: the Open Inference Protocol, the model's contract tensor for tensor
  (JSON or the binary-data extension);
- ``POST /v1/models/NAME:explain``: photos or tensors in, attributions (and the heatmap PNG) out;
- ``POST /v1/models/NAME:predict``: the top classes;
- ``GET /v2/models/NAME``: v2 metadata; ``GET /v2/models/NAME/config``: Triton's model configuration in
  JSON (with the preprocessing and labels as parameters), so one client serves both servers;
- health, readiness and Prometheus metrics as KServe provides them;
- ``GET /`` in a browser: the viewer page (web.py), which explains uploaded photos through
  ``POST /view/api/models/NAME/explain``.

The same code runs in a KServe InferenceService (docs/serving.md has the manifest). Inference runs in a
worker thread, so health checks answer while a request computes.
"""
from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import GigError, InputError
from .service import GigService
from .viewer import MAX_UPLOAD, Viewer
from .web import add_viewer_routes

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve.model_server parses sys.argv when imported
try:
    import kserve
    from kserve import model_server as _model_server
    from kserve.errors import InvalidInput, ModelNotFound
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
        except GigError as exc:
            raise InvalidInput(str(exc)) from None

    async def predict(self, payload: Any, headers: Optional[dict] = None,
                      response_headers: Optional[dict] = None) -> Any:
        if isinstance(payload, InferRequest):
            inputs = {}
            for inp in payload.inputs:
                if inp.name in inputs:
                    raise InvalidInput(f"input '{inp.name}' is given twice")
                try:
                    inputs[inp.name] = inp.as_numpy()
                except (ValueError, TypeError) as exc:
                    raise InvalidInput(f"input '{inp.name}': {exc}") from None
            out = await self._call(self.service.infer, inputs, payload.parameters)
            specs = {o.name: o for o in self.service.signature.outputs}
            outputs = [InferOutput(name=name, shape=list(v.shape), datatype=specs[name].datatype,
                                   data=np.ascontiguousarray(v)) for name, v in out.items()]
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=outputs, use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)
        return await self._call(self.service.predict_instances, payload)

    async def explain(self, payload: Any, headers: Optional[dict] = None) -> Any:
        if isinstance(payload, InferRequest):
            raise InvalidInput("explain takes the v1 body {\"instances\": [...]}; use /v2/models/NAME/infer for tensors")
        return await self._call(self.service.explain_instances, payload)


class _ModelServer(kserve.ModelServer):
    """KServe's ModelServer listening on ``host`` (KServe itself always binds 0.0.0.0)."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        self._gig_host = host
        super().__init__(**kwargs)

    def setup_event_loop(self) -> None:  # called after the REST server is made, before it serves
        rest = getattr(self, "_rest_server", None)
        if rest is not None and hasattr(rest, "config"):
            rest.config.host = self._gig_host
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
    server.start(models)
