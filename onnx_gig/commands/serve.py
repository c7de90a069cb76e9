"""onnx-gig serve: converted models behind KServe's Python model server (v2 infer, v1 explain)."""
from __future__ import annotations

import argparse
import sys

from ..errors import InputError

NAME = "serve"
HELP = "serve converted models over HTTP with KServe (v2 infer, v1 explain with heatmaps)"
DESCRIPTION = ("Start KServe's Python model server with one or more converted models. It answers the Open "
               "Inference Protocol (POST /v2/models/NAME/infer: the model's tensors in and out), the v1 explain "
               "call (POST /v1/models/NAME:explain: photos in, attributions and heatmap PNGs out), v1 predict, "
               "health and metrics; the same server runs in a KServe InferenceService (docs/serving.md). "
               "Needs: pip install 'onnx-gig[serve]'.")


def configure(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", nargs="+", help="one or more models written by 'onnx-gig convert'")
    s.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container or cluster)")
    s.add_argument("--name", action="append", help="model name in the URLs (default: the file name without "
                                                   ".onnx); once per model")
    s.add_argument("--grpc-port", type=int, help="also serve the v2 protocol over gRPC on this port (all addresses)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when it really loads, else CPU (default auto)")
    s.add_argument("--max-memory", help="memory budget for one run, e.g. 2G; integration steps run in chunks that fit")
    s.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")


def run(a: argparse.Namespace) -> int:
    for port in [a.port] + ([a.grpc_port] if a.grpc_port is not None else []):
        if not 0 < port < 65536:
            raise InputError(f"port {port} is out of range (1-65535)")
    try:
        from ..serving import kserve_server
    except ImportError as exc:
        raise InputError(f"onnx-gig serve needs KServe's model server ({exc.name or exc} is missing): "
                         "pip install 'onnx-gig[serve]'") from None
    models = kserve_server.build_models(a.model, a.name, a.device, a.max_memory, a.threads)
    for m in models:
        print(f"serving '{m.name}' ({m.service.gm.method}, {m.service.gm.provider}) from {m.service.path}",
              file=sys.stderr)
    print(f"listening on http://{a.host}:{a.port}  (POST /v2/models/NAME/infer, POST /v1/models/NAME:explain)",
          file=sys.stderr, flush=True)
    kserve_server.serve(models, a.host, a.port, a.grpc_port)
    return 0
